//! HTTP handlers of the order service (all public, through the gateway).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use shop_kit::idempotency;
use shop_kit::page::Cursor;
use shop_kit::problem::PROBLEM_JSON;
use shop_kit::{ApiResult, Caller, FieldError, Json, Money, Path, Problem, Query};
use utoipa::{IntoParams, OpenApi};
use uuid::Uuid;

use crate::domain::{
    self, CardSummary, CheckoutRequest, Order, OrderItem, OrderPage, OrderProblem, OrderStatus,
    PaymentDetails, Step, StepEntry,
};
use crate::saga::Saga;
use crate::storage::{NewOrder, SagaState};

/// What a 503 tells the client to wait before a new checkout.
const RETRY_AFTER_SECS: &str = "5";
/// How often a duplicate request looks at the order again while its saga runs.
const REPLAY_POLL: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct AppState {
    pub saga: Arc<Saga>,
    pub deadline: Duration,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop order service",
        description = "Checkout of the caller's cart as a saga: reserve stock → quote shipping → \
            charge → commit the stock → create the shipment → CONFIRMED; any failure releases the \
            stock and refunds a charge → FAILED with a reason_code. `POST /api/orders` requires an \
            `Idempotency-Key` (1 to 255 visible ASCII characters, per user): the same key and body \
            return the same order and answer, also to concurrent duplicates; the same key with \
            another body is 422. Answers: 201 CONFIRMED; 402 card_declined / insufficient_funds; \
            409 out_of_stock (`errors` names the short items); 503 payment_unavailable / \
            upstream_unavailable with Retry-After (check out again with a new key); 202 when the \
            saga has not finished within the checkout deadline (it finishes in the background: \
            poll `GET /api/orders/{id}`). Failure bodies carry `order_id` and `reason_code`. \
            The card number and CVC are never stored: only brand and last four digits."
    ),
    paths(checkout, list_orders, get_order),
    components(schemas(
        CheckoutRequest,
        PaymentDetails,
        shop_contracts::shipping::Address,
        Order,
        OrderItem,
        OrderPage,
        OrderStatus,
        Step,
        StepEntry,
        CardSummary,
        OrderProblem,
        Money,
        Problem,
        FieldError
    ))
)]
pub struct ApiDoc;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/orders", get(list_orders).post(checkout))
        .route("/api/orders/{order_id}", get(get_order))
        .with_state(state)
}

/// Check out the caller's cart. Every line is priced from the catalog as it is now; the card is
/// checked locally first. Bad input creates nothing.
#[utoipa::path(post, path = "/api/orders", request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, pattern = "^[\\x21-\\x7e]{1,255}$", description = "1 to 255 visible ASCII characters; reuse it to retry")),
    security(("identity" = [])),
    responses(
        (status = 201, body = Order, description = "CONFIRMED"),
        (status = 202, body = Order, description = "still running; it finishes in the background"),
        (status = 400, body = Problem, description = "a malformed Idempotency-Key"),
        (status = 402, body = OrderProblem, description = "card_declined or insufficient_funds: FAILED"),
        (status = 409, body = Problem, description = "out_of_stock: FAILED; `errors` names the short items. Or an empty cart (`empty-cart`), a product in it no longer sold (`unknown-product`), or this key's checkout still running"),
        (status = 422, body = Problem, description = "invalid address or card, or the key used for another request"),
        (status = 428, body = Problem, description = "no Idempotency-Key"),
        (status = 502, body = Problem, description = "a service answered something unreadable"),
        (status = 503, body = OrderProblem, description = "payment or another service unavailable: FAILED, nothing reserved or charged; Retry-After"),
        (status = 504, body = Problem, description = "a service did not answer in time")))]
async fn checkout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<CheckoutRequest>,
) -> ApiResult<Response> {
    let key = idempotency::required_key(&headers, "checkout")?;
    domain::validate_checkout(&body, shop_contracts::payment::this_month())?;
    let hash = domain::request_fingerprint(&body);
    let user_id = caller.user_id.to_string();
    let store = &state.saga.store;
    // A retry finds its order before anything else: after success the cart is empty.
    if let Some(existing) = store.by_key(&user_id, &key).await? {
        return replay(&state, existing, &hash).await;
    }
    let items = state.saga.priced_cart(&caller).await?;
    let subtotal = domain::check_lines(&items)?;
    if !shop_contracts::shipping::CURRENCIES.contains(&subtotal.currency.as_str()) {
        return Err(Problem::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "currency-not-shipped",
            format!(
                "the cart is priced in {}, which shipping cannot quote",
                subtotal.currency
            ),
        ));
    }
    let order_id = Uuid::now_v7().to_string();
    let runner = Uuid::new_v4().to_string();
    let card = shop_contracts::payment::summary(&body.payment.card_number.0);
    let placed = store
        .insert(NewOrder {
            id: &order_id,
            user_id: &user_id,
            idem_key: &key,
            request_hash: &hash,
            runner: &runner,
            items: &items,
            subtotal: &subtotal,
            address: &body.shipping_address,
            card: &card,
        })
        .await?;
    let Some(placed) = placed else {
        // A concurrent duplicate inserted first: answer what it answers.
        let existing = store
            .by_key(&user_id, &key)
            .await?
            .ok_or_else(|| Problem::internal("an order claimed by key vanished"))?;
        return replay(&state, existing, &hash).await;
    };
    if state.saga.crash_point(Step::Placed) {
        return Ok(answer(placed));
    }
    let saga = state.saga.clone();
    let payment = body.payment;
    let run_id = order_id.clone();
    // Its own task: when the deadline passes, the saga goes on and the caller gets a 202. It
    // keeps the request's context: its steps are spans of the checkout's trace.
    let run = tokio::spawn(shop_kit::context::carry(async move {
        saga.run_from(Some(placed), &run_id, &runner, Some(&payment))
            .await
    }));
    // A saga that finished answers with the row its last write returned; otherwise the order
    // as stored now.
    if let Ok(Ok((_, Some(finished)))) = tokio::time::timeout(state.deadline, run).await {
        return Ok(answer(finished));
    }
    let now = store
        .state(&order_id)
        .await?
        .ok_or_else(|| Problem::internal("a new order vanished"))?;
    Ok(answer(now))
}

/// The answer for a key already used: the same order, once its saga has an outcome (or the
/// deadline passed).
async fn replay(state: &AppState, existing: SagaState, hash: &str) -> ApiResult<Response> {
    if existing.request_hash != hash {
        return Err(Problem::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different checkout; use a new key for a new checkout",
        ));
    }
    let deadline = tokio::time::Instant::now() + state.deadline;
    let mut current = existing;
    while !has_outcome(&current) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(REPLAY_POLL).await;
        current = state
            .saga
            .store
            .state(&current.order.id)
            .await?
            .ok_or_else(|| Problem::internal("an order vanished"))?;
    }
    Ok(answer(current))
}

fn has_outcome(state: &SagaState) -> bool {
    matches!(
        state.order.step,
        Step::Confirmed | Step::Failed | Step::Compensating
    )
}

/// An order's answer to its checkout: 201 confirmed, the failure's problem (once compensation
/// has started, the outcome is known), or 202 while it runs.
fn answer(state: SagaState) -> Response {
    let location = HeaderValue::from_str(&format!("/api/orders/{}", state.order.id)).ok();
    let mut response = match state.order.step {
        Step::Confirmed => (StatusCode::CREATED, axum::Json(state.order)).into_response(),
        Step::Failed | Step::Compensating => {
            let problem = domain::failure_problem(&state.order, state.reason_errors);
            let status = problem.problem.status_code();
            let mut response = (status, axum::Json(problem)).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
            if status == StatusCode::SERVICE_UNAVAILABLE {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            response
        }
        _ => (StatusCode::ACCEPTED, axum::Json(state.order)).into_response(),
    };
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page (any other value is a 400).
    pub cursor: Option<String>,
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/orders", params(ListParams), security(("identity" = [])), responses(
    (status = 200, body = OrderPage)))]
async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<OrderPage>> {
    let limit = params.limit.unwrap_or(20);
    shop_kit::Validator::new()
        .check((1..=100).contains(&limit), "limit", "must be 1 to 100")
        .finish()?;
    let cursor = params.cursor.as_deref().map(Cursor::decode).transpose()?;
    let (items, next) = state
        .saga
        .store
        .list(&caller.user_id.to_string(), cursor.as_ref(), limit)
        .await?;
    Ok(Json(OrderPage {
        items,
        next_cursor: next.map(|c| c.encode()),
    }))
}

/// One order: its owner's, or any for an admin. Anyone else gets 404, as for a missing order.
#[utoipa::path(get, path = "/api/orders/{order_id}", params(("order_id" = Uuid, Path)), security(("identity" = [])), responses(
    (status = 200, body = Order),
    (status = 404, body = Problem, description = "No such order, or another customer's.")))]
async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<Order>> {
    let order = state.saga.store.state(&order_id.to_string()).await?;
    match order {
        Some(s) if s.order.user_id == caller.user_id.to_string() || caller.is_admin() => {
            Ok(Json(s.order))
        }
        _ => Err(Problem::not_found(format!("there is no order {order_id}"))),
    }
}
