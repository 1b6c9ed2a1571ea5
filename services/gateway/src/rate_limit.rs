//! Per-client rate limiting, as a layer in front of the proxied routes: a client over its quota is
//! answered here and never reaches route matching, token verification or an upstream.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use governor::DefaultKeyedRateLimiter;
use shop_kit::Problem;

/// One token bucket per client address.
pub type ClientLimiter = DefaultKeyedRateLimiter<IpAddr>;

/// `routes` with every request counted against its client's bucket in `limiter`.
pub fn per_client<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    limiter: Arc<ClientLimiter>,
) -> Router<S> {
    routes.route_layer(middleware::from_fn_with_state(limiter, admit))
}

async fn admit(
    State(limiter): State<Arc<ClientLimiter>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if limiter.check_key(&peer.ip()).is_ok() {
        return next.run(request).await;
    }
    let mut response =
        Problem::too_many_requests("too many requests from this client; slow down").into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
