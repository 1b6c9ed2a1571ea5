//! Payment rules: what a valid charge and refund are (the card rule and the simulated processor are
//! the contracts'), and the request fingerprints idempotency keys are checked against. No I/O here.

use serde::{Deserialize, Serialize};
use shop_kit::idempotency::fingerprint;
use shop_kit::{ApiResult, Money, Problem, Validator};
use utoipa::ToSchema;
use uuid::Uuid;

/// The API's bodies and answers, the card rule and the simulated processor are the contracts'
/// (the order service sends and reads the same types).
pub use shop_contracts::payment::{
    Card, CardFields, CardSummary, ChargeCreated, ChargeDetails, ChargeList, ChargeRequest,
    ChargeStatus, Declined, RefundCreated, RefundRequest, Transaction, check_card, simulate,
    summary, this_month,
};

#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChargeQuery {
    pub order_id: Uuid,
}

/// A declined payment: a business outcome, answered 402 with a machine-readable `code`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentProblem {
    #[serde(flatten)]
    pub problem: Problem,
    #[serde(flatten)]
    pub declined: Declined,
}

fn validate_amount(v: &mut Validator, amount: &Money, field: &str) {
    amount.validate(v, field);
    v.check(
        amount.amount > 0,
        &format!("{field}.amount"),
        "must be above 0",
    );
}

/// Checks a charge; `today` is (year, month) for the expiry check.
pub fn validate_charge(request: &ChargeRequest, today: (i64, i64)) -> ApiResult<()> {
    let mut v = Validator::new();
    v.check(
        !request.order_id.is_nil(),
        "order_id",
        "must not be the nil UUID",
    );
    validate_amount(&mut v, &request.amount, "amount");
    check_card(
        &mut v,
        &request.card,
        today,
        &CardFields {
            number: "card.number",
            exp_month: "card.exp_month",
            exp_year: "card.exp_year",
            cvc: "card.cvc",
        },
    );
    v.finish()
}

pub fn validate_refund(request: &RefundRequest) -> ApiResult<()> {
    let mut v = Validator::new();
    validate_amount(&mut v, &request.amount, "amount");
    v.finish()
}

pub fn charge_fingerprint(request: &ChargeRequest) -> String {
    let card = summary(&request.card.number.0);
    fingerprint(&[
        &request.order_id.to_string(),
        &request.amount.amount.to_string(),
        &request.amount.currency,
        &card.brand,
        &card.last4,
        &request.card.number.0.len().to_string(),
        &request.card.exp_month.to_string(),
        &request.card.exp_year.to_string(),
    ])
}

pub fn refund_fingerprint(charge_id: &str, request: &RefundRequest) -> String {
    fingerprint(&[
        charge_id,
        &request.amount.amount.to_string(),
        &request.amount.currency,
    ])
}
