//! HTTP handlers of the inventory service.
//!
//! `/api/stock/...` is public (the gateway routes it); `/internal/...` is for the order service's
//! checkout saga and is not routed by the gateway.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use shop_contracts::inventory::{INSUFFICIENT_STOCK, RESERVATIONS_PATH};
use shop_kit::{ApiResult, Caller, FieldError, Json, Path, Problem};
use utoipa::OpenApi;
use uuid::Uuid;

use crate::Settings;
use crate::domain::{
    self, Reservation, ReservationStatus, ReserveItem, ReserveRequest, ReservedItem, SetStock,
    StockLevel, StockRecord,
};
use crate::storage::{ReserveOutcome, Store, Transition};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Settings,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop inventory service",
        description = "Stock per product, and reservations for checkout. `/api/stock` is public \
            (through the gateway); `/internal/reservations` is the order service's: a reservation \
            holds every item or none, is idempotent per order id, expires unless committed, and \
            is committed or released exactly once."
    ),
    paths(get_stock, set_stock, reserve, get_reservation, commit, release),
    components(schemas(
        StockLevel,
        StockRecord,
        SetStock,
        ReserveRequest,
        ReserveItem,
        Reservation,
        ReservedItem,
        ReservationStatus,
        Problem,
        FieldError
    ))
)]
pub struct ApiDoc;

/// Both routers: what the gateway may route and what only the shop's services call.
pub fn router(state: AppState) -> Router {
    public(state.clone()).merge(internal(state))
}

/// Routed by the gateway: stock levels, and restocking by admins.
pub fn public(state: AppState) -> Router {
    Router::new()
        .route("/api/stock/{product_id}", get(get_stock).put(set_stock))
        .with_state(state)
}

/// Not routed by the gateway: the order service's reservations.
pub fn internal(state: AppState) -> Router {
    Router::new()
        .route(RESERVATIONS_PATH, post(reserve))
        .route("/internal/reservations/{order_id}", get(get_reservation))
        .route("/internal/reservations/{order_id}/commit", post(commit))
        .route("/internal/reservations/{order_id}/release", post(release))
        .with_state(state)
}

/// Units of a product that can be bought now (0 for a product never stocked).
#[utoipa::path(get, path = "/api/stock/{product_id}", params(("product_id" = Uuid, Path)), responses(
    (status = 200, body = StockLevel), (status = 404, body = Problem, description = "Not a UUID.")))]
async fn get_stock(
    State(state): State<AppState>,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<StockLevel>> {
    let product_id = product_id.to_string();
    Ok(Json(StockLevel {
        available: state.store.available(&product_id).await?,
        product_id,
    }))
}

/// Set the units on hand (admin): a restock or a correction. Held units stay held, so it cannot go
/// below what live reservations hold.
#[utoipa::path(put, path = "/api/stock/{product_id}", params(("product_id" = Uuid, Path)), request_body = SetStock,
    security(("identity" = [])), responses(
    (status = 200, body = StockRecord), (status = 403, body = Problem, description = "Not an admin."),
    (status = 409, body = Problem, description = "Live reservations hold more than `on_hand`.")))]
async fn set_stock(
    State(state): State<AppState>,
    caller: Caller,
    Path(product_id): Path<Uuid>,
    Json(body): Json<SetStock>,
) -> ApiResult<Json<StockRecord>> {
    caller.require_admin()?;
    domain::validate_on_hand(body.on_hand)?;
    let product_id = product_id.to_string();
    match state.store.set_on_hand(&product_id, body.on_hand).await? {
        Some(record) => Ok(Json(record)),
        None => Err(Problem::typed(
            StatusCode::CONFLICT,
            "stock-held",
            format!(
                "live reservations hold more than {} units of {product_id}; release them first",
                body.on_hand
            ),
        )),
    }
}

/// Hold stock for an order: every item or none. A retry with the same order id and items returns
/// the existing reservation (200) and changes nothing.
#[utoipa::path(post, path = "/internal/reservations", request_body = ReserveRequest, responses(
    (status = 201, body = Reservation, description = "held"),
    (status = 200, body = Reservation, description = "this order's existing reservation"),
    (status = 409, body = Problem, description = "short of stock (`errors` has one entry per short item, naming the product), or the order id is taken by other items")))]
async fn reserve(
    State(state): State<AppState>,
    Json(body): Json<ReserveRequest>,
) -> ApiResult<(StatusCode, Json<Reservation>)> {
    domain::validate_reserve(&body)?;
    let items = domain::normalised_items(&body.items);
    let ttl = body.ttl_seconds.map_or(state.settings.default_ttl, |s| {
        std::time::Duration::from_secs(s as u64)
    });
    let order_id = body.order_id.to_string();
    match state
        .store
        .reserve(&order_id, &items, ttl, state.settings.low_stock_threshold)
        .await?
    {
        ReserveOutcome::Created(r) => Ok((StatusCode::CREATED, Json(r))),
        ReserveOutcome::Existing(r) if r.items == items => Ok((StatusCode::OK, Json(r))),
        ReserveOutcome::Existing(_) => Err(Problem::typed(
            StatusCode::CONFLICT,
            "reservation-mismatch",
            format!("order {order_id} already has a reservation for other items"),
        )),
        ReserveOutcome::Short(short) => {
            let detail = short
                .iter()
                .map(|s| {
                    format!(
                        "{} (requested {}, available {})",
                        s.product_id, s.requested, s.available
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            // Field names point into the request as sent (the store sees the items sorted).
            let errors = short
                .iter()
                .map(|s| FieldError {
                    field: body
                        .items
                        .iter()
                        .position(|i| i.product_id.to_string() == s.product_id)
                        .map_or_else(|| "items".to_owned(), |i| format!("items[{i}].quantity")),
                    message: format!(
                        "product {}: requested {}, available {}",
                        s.product_id, s.requested, s.available
                    ),
                })
                .collect();
            Err(Problem::typed(
                StatusCode::CONFLICT,
                INSUFFICIENT_STOCK,
                format!("not enough stock, nothing was held: {detail}"),
            )
            .with_errors(errors))
        }
    }
}

/// An order's reservation, as it stands (for the saga resuming after a crash).
#[utoipa::path(get, path = "/internal/reservations/{order_id}", params(("order_id" = Uuid, Path)), responses(
    (status = 200, body = Reservation)))]
async fn get_reservation(
    State(state): State<AppState>,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Reservation>> {
    state
        .store
        .reservation(&order_id.to_string())
        .await?
        .map(Json)
        .ok_or_else(|| no_reservation(order_id))
}

/// The order is paid: the held units leave the warehouse. Idempotent; a released or expired
/// reservation cannot be committed (409).
#[utoipa::path(post, path = "/internal/reservations/{order_id}/commit", params(("order_id" = Uuid, Path)), responses(
    (status = 200, body = Reservation),
    (status = 409, body = Problem, description = "released or expired")))]
async fn commit(
    State(state): State<AppState>,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Reservation>> {
    match state.store.commit(&order_id.to_string()).await? {
        Transition::Done(r) => Ok(Json(r)),
        Transition::Unchanged(r) if r.status == ReservationStatus::Committed => Ok(Json(r)),
        Transition::Unchanged(r) => Err(Problem::typed(
            StatusCode::CONFLICT,
            "reservation-not-held",
            format!(
                "the reservation for order {order_id} is {} and cannot be committed",
                r.status.as_str()
            ),
        )),
        Transition::NotFound => Err(no_reservation(order_id)),
    }
}

/// Give the held units back (a compensation). Idempotent, also for a reservation that already
/// expired; a committed one cannot be released (409).
#[utoipa::path(post, path = "/internal/reservations/{order_id}/release", params(("order_id" = Uuid, Path)), responses(
    (status = 200, body = Reservation),
    (status = 409, body = Problem, description = "already committed")))]
async fn release(
    State(state): State<AppState>,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Reservation>> {
    match state.store.release(&order_id.to_string()).await? {
        Transition::Done(r) => Ok(Json(r)),
        Transition::Unchanged(r) if r.status == ReservationStatus::Committed => {
            Err(Problem::typed(
                StatusCode::CONFLICT,
                "reservation-committed",
                format!("the reservation for order {order_id} is committed and cannot be released"),
            ))
        }
        Transition::Unchanged(r) => Ok(Json(r)),
        Transition::NotFound => Err(no_reservation(order_id)),
    }
}

fn no_reservation(order_id: Uuid) -> Problem {
    Problem::not_found(format!("there is no reservation for order {order_id}"))
}
