//! HTTP handlers of the notification service.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use shop_kit::page::Cursor;
use shop_kit::{ApiResult, Caller, Json, Problem, Query};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::domain::{self, Channel, Notification};
use crate::storage::{Store, Whose};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page (any other value is a 400).
    pub cursor: Option<String>,
    /// Admins only: another user's messages. Not together with `audience=admins` (a 400).
    pub user_id: Option<Uuid>,
    /// `user` (the default); admins only: `admins` lists the messages to the administrators
    /// (low stock).
    #[param(pattern = "^(user|admins)$")]
    pub audience: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationPage {
    /// Newest first.
    pub items: Vec<Notification>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop notification service",
        description = "The messages the shop sends its customers (order received, confirmed, \
            failed, shipped; welcome), recorded from the events and sent by a pluggable sender."
    ),
    paths(list_notifications),
    components(schemas(NotificationPage, Notification, Channel, Problem))
)]
pub struct ApiDoc;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/notifications", get(list_notifications))
        .with_state(state)
}

/// The caller's messages, newest first. Admins may read another user's (`user_id`) or the
/// administrators' own (`audience=admins`).
#[utoipa::path(get, path = "/api/notifications", params(ListParams), security(("identity" = [])), responses(
    (status = 200, body = NotificationPage),
    (status = 403, body = Problem, description = "Another user's messages, or the administrators', for a caller who is not an admin.")))]
async fn list_notifications(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<NotificationPage>> {
    let limit = params.limit.unwrap_or(domain::DEFAULT_LIMIT);
    if !(1..=domain::MAX_LIMIT).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be 1 to {}",
            domain::MAX_LIMIT
        )));
    }
    let whose = match (params.audience.as_deref(), params.user_id) {
        (Some("admins"), None) => {
            caller.require_admin()?;
            Whose::Admins
        }
        (Some("admins"), Some(_)) => {
            return Err(Problem::bad_request(
                "pass either user_id or audience=admins, not both",
            ));
        }
        (Some(other), _) if other != "user" => {
            return Err(Problem::bad_request(
                "audience must be user (the default) or admins",
            ));
        }
        (_, Some(user_id)) if user_id != caller.user_id => {
            caller.require_admin()?;
            Whose::User(user_id)
        }
        _ => Whose::User(caller.user_id),
    };
    let cursor = params.cursor.as_deref().map(Cursor::decode).transpose()?;
    let page = state.store.list(&whose, cursor.as_ref(), limit).await?;
    Ok(Json(NotificationPage {
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}
