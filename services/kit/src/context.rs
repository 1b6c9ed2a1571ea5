//! Request context that crosses service boundaries: the request id and the caller's identity.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use uuid::Uuid;

use crate::problem::Problem;
use crate::propagation::{self, TraceContext};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Set by the gateway after it verified the access token; stripped from what clients send.
pub const USER_ID_HEADER: &str = "x-shop-user-id";
pub const USER_ROLES_HEADER: &str = "x-shop-user-roles";

/// What a request carries into the calls and events it causes.
#[derive(Clone)]
struct RequestContext {
    id: Option<String>,
    /// The incoming trace context, kept only when this process does not export spans (then it
    /// is forwarded as it came; otherwise the current span's context is sent).
    trace: Option<TraceContext>,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// The id of the request being handled, for outbound calls to carry along.
pub fn current_request_id() -> Option<String> {
    CONTEXT.try_with(|c| c.id.clone()).ok().flatten()
}

/// The trace context the request came with, when this process does not export spans.
pub(crate) fn current_trace() -> Option<TraceContext> {
    CONTEXT.try_with(|c| c.trace.clone()).ok().flatten()
}

/// Makes the request id (and, without an exporter, the incoming trace context) visible to
/// everything the handler calls (see [`current_request_id`]).
pub async fn scope_request_id(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let trace = if propagation::exporting() {
        None
    } else {
        TraceContext::from_headers(headers)
    };
    if id.is_none() && trace.is_none() {
        return next.run(request).await;
    }
    CONTEXT
        .scope(RequestContext { id, trace }, next.run(request))
        .await
}

/// `work` with the current request's context and span, for a task spawned on its behalf (a
/// saga that outlives the request's deadline): its calls carry the request id and the trace.
pub fn carry<F: Future>(work: F) -> impl Future<Output = F::Output> {
    use tracing::Instrument;
    let context = CONTEXT.try_with(Clone::clone).ok();
    let work = work.instrument(tracing::Span::current());
    async move {
        match context {
            Some(context) => CONTEXT.scope(context, work).await,
            None => work.await,
        }
    }
}

/// The signed-in caller, as vouched for by the gateway. Rejects anonymous requests with 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub roles: Vec<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    pub fn require_admin(&self) -> Result<(), Problem> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Problem::forbidden("this action needs the admin role"))
        }
    }

    fn from_parts(parts: &Parts) -> Result<Option<Self>, Problem> {
        let Some(raw) = parts.headers.get(USER_ID_HEADER) else {
            return Ok(None);
        };
        let user_id = raw
            .to_str()
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| Problem::unauthorized("the caller identity is malformed"))?;
        let roles = parts
            .headers
            .get(USER_ROLES_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.split(',')
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Self { user_id, roles }))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_parts(parts)?
            .ok_or_else(|| Problem::unauthorized("sign in first: this needs a Bearer access token"))
    }
}

/// A fresh time-ordered id for a new entity.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}
