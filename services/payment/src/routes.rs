//! HTTP handlers of the payment service. Everything is under `/internal/`: the order service's
//! checkout saga calls it; the gateway routes nothing here.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use shop_kit::idempotency;
use shop_kit::problem::PROBLEM_JSON;
use shop_kit::{ApiResult, FieldError, Json, Money, Path, Problem, Query, now_rfc3339};
use utoipa::{Modify, OpenApi};
use uuid::Uuid;

use crate::domain::{
    self, CardSummary, ChargeCreated, ChargeDetails, ChargeList, ChargeQuery, ChargeRequest,
    ChargeStatus, Declined, PaymentProblem, RefundCreated, RefundRequest, Transaction,
};
use crate::storage::{Claim, NewCharge, RefundOutcome, Store, StoredResponse};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop payment service",
        description = "Charges against a built-in card processor simulation, refunds, and the \
            record of every transaction; internal (the order service's checkout saga), not routed \
            by the gateway. Any Luhn-valid number succeeds but the test cards listed at the end. \
            Writes require an `Idempotency-Key` header (1 to 255 visible ASCII characters, scoped \
            per endpoint): the \
            same key and body return the first response byte for byte, also to concurrent \
            duplicates; the same key with another body is 422. No card number or CVC is stored, \
            logged or returned: only brand and last four digits."
    ),
    modifiers(&TestCards),
    paths(create_charge, refund, get_charge, list_charges),
    components(schemas(
        ChargeRequest,
        domain::Card,
        RefundRequest,
        ChargeCreated,
        RefundCreated,
        ChargeDetails,
        ChargeList,
        ChargeStatus,
        CardSummary,
        Transaction,
        PaymentProblem,
        Declined,
        Money,
        Problem,
        FieldError
    ))
)]
pub struct ApiDoc;

/// Appends the test cards to the API's description, from the one list of them.
struct TestCards;

impl Modify for TestCards {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use shop_contracts::test_cards::{DECLINED, INSUFFICIENT_FUNDS, SUCCEEDS};
        let cards = format!(
            " Test cards: {SUCCEEDS} succeeds, {DECLINED} is declined (402, code card_declined), \
             {INSUFFICIENT_FUNDS} has insufficient funds (402, code insufficient_funds)."
        );
        openapi
            .info
            .description
            .get_or_insert_default()
            .push_str(&cards);
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/internal/charges", post(create_charge).get(list_charges))
        .route("/internal/charges/{charge_id}", get(get_charge))
        .route("/internal/charges/{charge_id}/refunds", post(refund))
        .with_state(state)
}

/// Charge a card for an order. A declined card or insufficient funds is recorded as a failed
/// charge and answered 402 with a `code`; a replay of the same key and body answers the same.
#[utoipa::path(post, path = "/internal/charges", request_body = ChargeRequest,
    params(("Idempotency-Key" = String, Header, pattern = "^[\\x21-\\x7e]{1,255}$", description = "1 to 255 visible ASCII characters")),
    responses(
        (status = 201, body = ChargeCreated),
        (status = 402, body = PaymentProblem, description = "declined: `code` is card_declined or insufficient_funds"),
        (status = 400, body = Problem, description = "a malformed Idempotency-Key"),
        (status = 409, body = Problem, description = "a request with this key is still in progress"),
        (status = 422, body = Problem, description = "invalid request, or the key was used for another request"),
        (status = 428, body = Problem, description = "no Idempotency-Key")))]
async fn create_charge(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<ChargeRequest>,
) -> ApiResult<Response> {
    let key = idempotency::required_key(&headers, "payment attempt")?;
    domain::validate_charge(&body, domain::this_month())?;
    let scope = "charges";
    let token = match claimed(&state, scope, &key, &domain::charge_fingerprint(&body)).await? {
        Ok(token) => token,
        Err(replay) => return Ok(replay),
    };
    let charge_id = Uuid::now_v7().to_string();
    let order_id = body.order_id.to_string();
    let card = domain::summary(&body.card.number.0);
    let created_at = now_rfc3339();
    let decision = domain::simulate(&body.card.number.0);
    let (status, failure_code, outcome, response) = match decision {
        Ok(()) => (
            ChargeStatus::Succeeded,
            None,
            "succeeded",
            stored(
                StatusCode::CREATED,
                &ChargeCreated {
                    charge_id: charge_id.clone(),
                    order_id: order_id.clone(),
                    status: ChargeStatus::Succeeded,
                    amount: body.amount.clone(),
                    card: card.clone(),
                    created_at: created_at.clone(),
                },
            ),
        ),
        Err(decline) => (
            ChargeStatus::Failed,
            Some(decline.code()),
            decline.code(),
            stored(
                StatusCode::PAYMENT_REQUIRED,
                &PaymentProblem {
                    problem: Problem::typed(
                        StatusCode::PAYMENT_REQUIRED,
                        &decline.code().replace('_', "-"),
                        format!("{}; nothing was charged", decline.message()),
                    ),
                    declined: Declined {
                        code: decline.code().to_owned(),
                        charge_id: charge_id.clone(),
                    },
                },
            ),
        ),
    };
    let recorded = state
        .store
        .record_charge(
            (scope, &key, &token),
            NewCharge {
                charge_id: &charge_id,
                order_id: &order_id,
                status,
                failure_code,
                amount: &body.amount,
                card: &card,
                created_at: &created_at,
            },
            outcome,
            &response,
        )
        .await;
    finish(
        &state,
        scope,
        &key,
        &token,
        recorded.map(|ok| ok.then_some(response)),
    )
    .await
}

/// Refund part or all of a succeeded charge. Refunds together never exceed the charge (409), also
/// when they race; a failed charge cannot be refunded (409).
#[utoipa::path(post, path = "/internal/charges/{charge_id}/refunds", request_body = RefundRequest,
    params(("charge_id" = Uuid, Path), ("Idempotency-Key" = String, Header, pattern = "^[\\x21-\\x7e]{1,255}$", description = "1 to 255 visible ASCII characters")),
    responses(
        (status = 201, body = RefundCreated),
        (status = 400, body = Problem, description = "a malformed Idempotency-Key"),
        (status = 409, body = Problem, description = "more than what is left to refund, another currency than the charge's, a failed charge, or this key still in progress"),
        (status = 422, body = Problem, description = "invalid request, or the key was used for another request"),
        (status = 428, body = Problem, description = "no Idempotency-Key")))]
async fn refund(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(charge_id): Path<Uuid>,
    Json(body): Json<RefundRequest>,
) -> ApiResult<Response> {
    let key = idempotency::required_key(&headers, "payment attempt")?;
    domain::validate_refund(&body)?;
    let charge_id = charge_id.to_string();
    let scope = "refunds";
    let hash = domain::refund_fingerprint(&charge_id, &body);
    let token = match claimed(&state, scope, &key, &hash).await? {
        Ok(token) => token,
        Err(replay) => return Ok(replay),
    };
    let amount = body.amount.clone();
    let respond = |outcome: &RefundOutcome| match outcome {
        RefundOutcome::Refunded(refund_id, total, at) => stored(
            StatusCode::CREATED,
            &RefundCreated {
                refund_id: refund_id.clone(),
                charge_id: charge_id.clone(),
                amount: amount.clone(),
                refunded_total: *total,
                created_at: at.clone(),
            },
        ),
        RefundOutcome::NotFound => problem(Problem::not_found(format!(
            "there is no charge {charge_id}"
        ))),
        RefundOutcome::ChargeFailed => problem(Problem::typed(
            StatusCode::CONFLICT,
            "charge-failed",
            format!("charge {charge_id} failed; there is nothing to refund"),
        )),
        // A well-formed amount the stored charge cannot take: a conflict with its state.
        RefundOutcome::CurrencyMismatch(currency) => problem(
            Problem::typed(
                StatusCode::CONFLICT,
                "currency-mismatch",
                format!("charge {charge_id} is in {currency}; refund it in {currency}"),
            )
            .with_errors(vec![FieldError {
                field: "amount.currency".into(),
                message: format!("must be the charge's currency, {currency}"),
            }]),
        ),
        RefundOutcome::Exceeds(charged, refunded) => problem(Problem::typed(
            StatusCode::CONFLICT,
            "refund-exceeds-charge",
            format!(
                "amount: {} exceeds what is left to refund ({} of {charged} already refunded); nothing was refunded",
                amount.amount, refunded
            ),
        )),
    };
    let recorded = state
        .store
        .refund((scope, &key, &token), &charge_id, &body.amount, respond)
        .await;
    finish(
        &state,
        scope,
        &key,
        &token,
        recorded.map(|done| done.map(|(_, response)| response)),
    )
    .await
}

/// A charge and its transactions.
#[utoipa::path(get, path = "/internal/charges/{charge_id}", params(("charge_id" = Uuid, Path)), responses(
    (status = 200, body = ChargeDetails)))]
async fn get_charge(
    State(state): State<AppState>,
    Path(charge_id): Path<Uuid>,
) -> ApiResult<Json<ChargeDetails>> {
    state
        .store
        .charge(&charge_id.to_string())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("there is no charge {charge_id}")))
}

/// Every charge attempt for an order with its transactions, oldest first (for the saga resuming
/// after a crash).
#[utoipa::path(get, path = "/internal/charges", params(ChargeQuery), responses((status = 200, body = ChargeList)))]
async fn list_charges(
    State(state): State<AppState>,
    Query(query): Query<ChargeQuery>,
) -> ApiResult<Json<ChargeList>> {
    Ok(Json(ChargeList {
        items: state
            .store
            .charges_of_order(&query.order_id.to_string())
            .await?,
    }))
}

/// `Ok(token)` when this request owns the key; `Err(response)` for an answer without doing the
/// work (a replay, or a refusal).
async fn claimed(
    state: &AppState,
    scope: &str,
    key: &str,
    hash: &str,
) -> ApiResult<Result<String, Response>> {
    Ok(match state.store.claim(scope, key, hash).await? {
        Claim::Owned(token) => Ok(token),
        Claim::Replay(response) => Err(send(response)),
        Claim::Mismatch => Err(Problem::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request; use a new key for a new request",
        )
        .into_response()),
        Claim::InProgress => Err(Problem::typed(
            StatusCode::CONFLICT,
            "idempotency-key-in-progress",
            "a request with this Idempotency-Key is still in progress; retry shortly",
        )
        .into_response()),
    })
}

/// Answers with the stored response; on an unexpected failure gives the key up so a retry can run
/// again; when the claim was lost to a takeover, answers what the new owner stored.
async fn finish(
    state: &AppState,
    scope: &str,
    key: &str,
    token: &str,
    recorded: Result<Option<StoredResponse>, sqlx::Error>,
) -> ApiResult<Response> {
    match recorded {
        Ok(Some(response)) => Ok(send(response)),
        Ok(None) => Err(Problem::typed(
            StatusCode::CONFLICT,
            "idempotency-key-in-progress",
            "this request took too long and a retry took it over; retry to get its result",
        )),
        Err(e) => {
            state.store.abandon(scope, key, token).await;
            Err(e.into())
        }
    }
}

fn stored(status: StatusCode, body: &impl Serialize) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        body: serde_json::to_string(body).expect("response types serialise"),
    }
}

fn problem(problem: Problem) -> StoredResponse {
    stored(problem.status_code(), &problem)
}

/// A stored response, exactly as first sent.
fn send(response: StoredResponse) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        PROBLEM_JSON
    };
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        response.body,
    )
        .into_response()
}
