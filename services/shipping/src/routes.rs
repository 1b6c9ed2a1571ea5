//! HTTP handlers of the shipping service.
//!
//! `/api/shipments/...` is public (the gateway routes it); `/internal/...` is for the order
//! service's checkout saga and the carrier integration, and is not routed by the gateway.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use shop_contracts::shipping::{QUOTES_PATH, SHIPMENTS_PATH};
use shop_kit::{ApiResult, Caller, FieldError, Json, Money, Path, Problem};
use utoipa::OpenApi;

use crate::domain::{
    self, Address, CreateShipment, HistoryEntry, Item, Quote, QuoteRequest, ServiceLevel, Shipment,
    ShipmentStatus, StatusEvent, TrackedAddress, Tracking, Viewer,
};
use crate::storage::{CreateOutcome, Store, Transition};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop shipping service",
        description = "Shipping quotes and shipments. `/api/shipments/{tracking_number}` is public \
            (through the gateway): anyone with the unguessable tracking number sees the status, \
            history, item count and the city, postal code and country; the recipient's name and \
            street only the shipment's customer (and admins) see. `/internal/...` is the order \
            service's: quotes from a deterministic rate table, shipments idempotent per order id, \
            status events along a transition table."
    ),
    paths(track, quote, create, get_shipment, add_event),
    components(schemas(
        Tracking,
        TrackedAddress,
        HistoryEntry,
        QuoteRequest,
        Quote,
        Money,
        ServiceLevel,
        Item,
        Address,
        CreateShipment,
        Shipment,
        ShipmentStatus,
        StatusEvent,
        Problem,
        FieldError
    ))
)]
pub struct ApiDoc;

/// Both routers: what the gateway may route and what only the shop's services call.
pub fn router(state: AppState) -> Router {
    public(state.clone()).merge(internal(state))
}

/// Routed by the gateway: tracking by number, open to anyone who has it.
pub fn public(state: AppState) -> Router {
    Router::new()
        .route("/api/shipments/{tracking_number}", get(track))
        .with_state(state)
}

/// Not routed by the gateway: the order service's quotes and shipments, the carrier's events.
pub fn internal(state: AppState) -> Router {
    Router::new()
        .route(QUOTES_PATH, post(quote))
        .route(SHIPMENTS_PATH, post(create))
        .route("/internal/shipments/{tracking_number}", get(get_shipment))
        .route(
            "/internal/shipments/{tracking_number}/events",
            post(add_event),
        )
        .with_state(state)
}

/// Track a shipment. Signing in is optional: the shipment's customer (and admins) see the full
/// address, anyone else the city, postal code and country only.
#[utoipa::path(get, path = "/api/shipments/{tracking_number}", params(("tracking_number" = String, Path)),
    security((), ("identity" = [])), responses(
    (status = 200, body = Tracking),
    (status = 401, body = Problem, description = "A malformed caller identity."),
    (status = 404, body = Problem, description = "No such shipment, or not a tracking number.")))]
async fn track(
    State(state): State<AppState>,
    caller: Result<Caller, Problem>,
    headers: axum::http::HeaderMap,
    Path(tracking_number): Path<String>,
) -> ApiResult<Json<Tracking>> {
    let caller = match caller {
        Ok(caller) => Some(caller),
        // Present but malformed is an error; absent is an anonymous visitor.
        Err(problem) if headers.contains_key(shop_kit::context::USER_ID_HEADER) => {
            return Err(problem);
        }
        Err(_) => None,
    };
    let shipment = find(&state, &tracking_number).await?;
    let viewer = match caller {
        None => Viewer::Anonymous,
        Some(c) if c.user_id.to_string() == shipment.user_id => Viewer::Owner,
        Some(c) if c.is_admin() => Viewer::Admin,
        Some(_) => Viewer::Other,
    };
    Ok(Json(domain::tracking(&shipment, viewer)))
}

/// Price shipping for items to an address with the rate table: by zone (domestic, EU, rest of
/// the world), a base plus every started kilogram. The same request always gets the same quote.
#[utoipa::path(post, path = "/internal/quotes", request_body = QuoteRequest, responses((status = 200, body = Quote)))]
async fn quote(Json(body): Json<QuoteRequest>) -> ApiResult<Json<Quote>> {
    domain::validate_quote_request(&body)?;
    Ok(Json(domain::quote(
        &body.items,
        &body.address.country,
        &body.currency,
    )))
}

/// Create the order's shipment: a tracking number, status `label_created`, and a
/// `shipment.created` event. A retry with the same body returns the same shipment (200); the same
/// order id with another body is a 409.
#[utoipa::path(post, path = "/internal/shipments", request_body = CreateShipment, responses(
    (status = 201, body = Shipment, description = "created"),
    (status = 200, body = Shipment, description = "this order's existing shipment"),
    (status = 409, body = Problem, description = "the order already has a shipment with another body, or the quote is not what the rate table gives now (`quote-mismatch`: quote again)")))]
async fn create(
    State(state): State<AppState>,
    Json(body): Json<CreateShipment>,
) -> ApiResult<(StatusCode, Json<Shipment>)> {
    domain::validate_create(&body)?;
    match state.store.create(&body).await? {
        CreateOutcome::Created(s) => Ok((StatusCode::CREATED, Json(s))),
        CreateOutcome::Existing {
            shipment,
            same: true,
        } => Ok((StatusCode::OK, Json(shipment))),
        CreateOutcome::Existing { .. } => Err(Problem::typed(
            StatusCode::CONFLICT,
            "shipment-mismatch",
            format!(
                "order {} already has a shipment with other items, address or quote",
                body.order_id
            ),
        )),
    }
}

/// A shipment with everything (for the saga resuming after a crash, and support).
#[utoipa::path(get, path = "/internal/shipments/{tracking_number}", params(("tracking_number" = String, Path)), responses(
    (status = 200, body = Shipment)))]
async fn get_shipment(
    State(state): State<AppState>,
    Path(tracking_number): Path<String>,
) -> ApiResult<Json<Shipment>> {
    find(&state, &tracking_number).await.map(Json)
}

/// Record a status change (from the carrier). Allowed: label_created → in_transit →
/// out_for_delivery → delivered; out_for_delivery → in_transit (a failed attempt); label_created →
/// cancelled; in_transit, out_for_delivery or delivered → returned. The current status again is a
/// no-op (200); anything else is a 409.
#[utoipa::path(post, path = "/internal/shipments/{tracking_number}/events", params(("tracking_number" = String, Path)),
    request_body = StatusEvent, responses(
    (status = 200, body = Shipment),
    (status = 409, body = Problem, description = "not allowed from the current status")))]
async fn add_event(
    State(state): State<AppState>,
    Path(tracking_number): Path<String>,
    Json(body): Json<StatusEvent>,
) -> ApiResult<Json<Shipment>> {
    check_format(&tracking_number)?;
    match state
        .store
        .transition(&tracking_number, body.status)
        .await?
    {
        Transition::Done(s) | Transition::Unchanged(s) => Ok(Json(s)),
        Transition::NotAllowed(s) => Err(Problem::typed(
            StatusCode::CONFLICT,
            "status-transition",
            format!(
                "shipment {tracking_number} is {} and cannot become {}; allowed next: {}",
                s.status.as_str(),
                body.status.as_str(),
                match s.status.next() {
                    [] => "none (final)".to_owned(),
                    next => next
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            ),
        )),
        Transition::NotFound => Err(no_shipment(&tracking_number)),
    }
}

fn check_format(tracking_number: &str) -> ApiResult<()> {
    if domain::is_tracking_number(tracking_number) {
        Ok(())
    } else {
        // As the kit does for malformed ids: no such resource, with a hint at the shape.
        Err(Problem::not_found(
            "tracking_number: not a tracking number (they look like SHP-XXXX-XXXX-XXXX-XXXX)",
        ))
    }
}

async fn find(state: &AppState, tracking_number: &str) -> ApiResult<Shipment> {
    check_format(tracking_number)?;
    state
        .store
        .shipment(tracking_number)
        .await?
        .ok_or_else(|| no_shipment(tracking_number))
}

fn no_shipment(tracking_number: &str) -> Problem {
    Problem::not_found(format!("there is no shipment {tracking_number}"))
}
