//! Order rules: the checkout request and its validation, the saga's steps, what a failure answers,
//! the order as the API shows it. No I/O here.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shop_contracts::payment::{self, Card, CardFields, Secret};
use shop_contracts::shipping::{self, Address};
use shop_kit::idempotency::fingerprint;
use shop_kit::{ApiResult, FieldError, Money, Problem, Validator};
use utoipa::ToSchema;

/// The card as an order keeps and shows it: payment's summary of it.
pub use shop_contracts::payment::CardSummary;

/// Most units of one product in one order (the cart's own limit is lower).
pub const MAX_QUANTITY: i64 = 1_000;

/// The saga's steps, in order. `step` on an order is the last one completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The order exists (PENDING) and `order.placed` is in the outbox.
    Placed,
    /// Inventory holds the stock for the order.
    Reserved,
    /// Shipping has priced the parcel; the total is known.
    Quoted,
    /// Payment charged the card.
    Charged,
    /// The reservation is committed: the units left the warehouse.
    Committed,
    /// The shipment exists, with its tracking number.
    Shipped,
    /// Terminal: CONFIRMED, `order.confirmed` in the outbox.
    Confirmed,
    /// A step failed: the reason is recorded and the compensations (release, refund) run.
    Compensating,
    /// Terminal: FAILED, `order.failed` in the outbox.
    Failed,
}

/// Every step, for tests that crash the service after each in turn.
pub const STEPS: [Step; 9] = [
    Step::Placed,
    Step::Reserved,
    Step::Quoted,
    Step::Charged,
    Step::Committed,
    Step::Shipped,
    Step::Confirmed,
    Step::Compensating,
    Step::Failed,
];

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Reserved => "reserved",
            Self::Quoted => "quoted",
            Self::Charged => "charged",
            Self::Committed => "committed",
            Self::Shipped => "shipped",
            Self::Confirmed => "confirmed",
            Self::Compensating => "compensating",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        STEPS.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Confirmed | Self::Failed)
    }

    /// The order's status once this step is reached.
    pub fn status(self) -> OrderStatus {
        match self {
            Self::Confirmed => OrderStatus::Confirmed,
            Self::Failed => OrderStatus::Failed,
            _ => OrderStatus::Pending,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderStatus {
    /// The saga is running (or being compensated).
    Pending,
    Confirmed,
    Failed,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Failed => "FAILED",
        }
    }
}

/// Why an order failed (`reason_code`, also in `order.failed`).
pub mod reason {
    /// Payment's decline codes, passed on as they are.
    pub const CARD_DECLINED: &str = shop_contracts::payment::CARD_DECLINED;
    pub const INSUFFICIENT_FUNDS: &str = shop_contracts::payment::INSUFFICIENT_FUNDS;
    pub const OUT_OF_STOCK: &str = "out_of_stock";
    pub const PAYMENT_UNAVAILABLE: &str = "payment_unavailable";
    pub const UPSTREAM_UNAVAILABLE: &str = "upstream_unavailable";
    pub const INVALID_CARD: &str = "invalid_card";
    /// The reservation expired or was released before the order could commit it.
    pub const RESERVATION_LOST: &str = "reservation_lost";
    /// The service stopped before charging, and the card is not kept to charge it later.
    pub const CHECKOUT_INTERRUPTED: &str = "checkout_interrupted";
    /// Shipping refused the shipment (after the stock was committed).
    pub const SHIPPING_FAILED: &str = "shipping_failed";
}

/// The HTTP status a failed order answers with.
pub fn failure_status(reason_code: &str) -> StatusCode {
    match reason_code {
        reason::CARD_DECLINED | reason::INSUFFICIENT_FUNDS => StatusCode::PAYMENT_REQUIRED,
        reason::OUT_OF_STOCK | reason::RESERVATION_LOST => StatusCode::CONFLICT,
        reason::INVALID_CARD => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The card as sent for this one checkout. Never stored or logged: the number and CVC only live
/// in memory while the request's saga runs.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentDetails {
    /// 13 to 19 digits passing the Luhn check (format `card-number`).
    #[schema(value_type = String, format = "card-number", pattern = "^[0-9]{13,19}$", example = json!(shop_contracts::test_cards::SUCCEEDS))]
    pub card_number: Secret,
    #[schema(minimum = 1, maximum = 12, example = 12)]
    #[serde(deserialize_with = "shop_contracts::rules::integer")]
    pub exp_month: i64,
    /// The card is valid through the end of its expiry month: an earlier month is a 422.
    #[schema(minimum = 2000, maximum = 2099, example = 2030)]
    #[serde(deserialize_with = "shop_contracts::rules::integer")]
    pub exp_year: i64,
    /// 3 or 4 digits.
    #[schema(value_type = String, pattern = "^[0-9]{3,4}$", example = "123")]
    pub cvc: Secret,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub shipping_address: Address,
    pub payment: PaymentDetails,
}

/// Checks the request before anything is read or created; `today` is (year, month). The address
/// and card rules are shipping's and payment's, with the errors named after this API's fields.
pub fn validate_checkout(request: &CheckoutRequest, today: (i64, i64)) -> ApiResult<()> {
    let mut v = Validator::new();
    shipping::check_address(&mut v, &request.shipping_address, "shipping_address");
    let details = &request.payment;
    let card = Card {
        number: details.card_number.clone(),
        exp_month: details.exp_month,
        exp_year: details.exp_year,
        cvc: details.cvc.clone(),
    };
    let fields = CardFields {
        number: "payment.card_number",
        exp_month: "payment.exp_month",
        exp_year: "payment.exp_year",
        cvc: "payment.cvc",
    };
    payment::check_card(&mut v, &card, today, &fields);
    v.finish()
}

/// What a checkout asks for, as a fingerprint the same key is checked against. The card enters
/// as brand, last four, length and expiry, never the number or CVC (see the kit's fingerprint).
pub fn request_fingerprint(request: &CheckoutRequest) -> String {
    let card = payment::summary(&request.payment.card_number.0);
    let address = serde_json::to_string(&request.shipping_address).expect("an address serialises");
    fingerprint(&[
        &address,
        &card.brand,
        &card.last4,
        &request.payment.card_number.0.len().to_string(),
        &request.payment.exp_month.to_string(),
        &request.payment.exp_year.to_string(),
    ])
}

/// The idempotency key of the order's charge: derived from the order, so a retry after a crash
/// gets the first charge back.
pub fn charge_key(order_id: &str) -> String {
    format!("order-{order_id}-charge")
}

/// The idempotency key of the refund of one charge.
pub fn refund_key(charge_id: &str) -> String {
    format!("refund-{charge_id}")
}

/// One line of an order, priced from the catalog at checkout.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct OrderItem {
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
}

/// Checks the priced lines: something to buy, sane quantities, one currency. Returns the subtotal.
pub fn check_lines(items: &[OrderItem]) -> ApiResult<Money> {
    let Some(first) = items.first() else {
        // The request is fine; the cart is not (yet): a conflict with its current state.
        return Err(Problem::typed(
            StatusCode::CONFLICT,
            "empty-cart",
            "the cart is empty: add products before checking out",
        ));
    };
    let mut v = Validator::new();
    for (i, item) in items.iter().enumerate() {
        v.check(
            (1..=MAX_QUANTITY).contains(&item.quantity),
            &format!("items[{i}].quantity"),
            format!("must be 1 to {MAX_QUANTITY}"),
        )
        .check(
            item.unit_price.currency == first.unit_price.currency,
            &format!("items[{i}].unit_price.currency"),
            format!(
                "must be {} like the rest of the cart",
                first.unit_price.currency
            ),
        );
    }
    v.finish()?;
    let amount = items
        .iter()
        .map(|i| i.unit_price.amount.saturating_mul(i.quantity))
        .fold(0i64, i64::saturating_add);
    Ok(Money::new(amount, &first.unit_price.currency))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct StepEntry {
    pub step: Step,
    pub at: String,
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub status: OrderStatus,
    /// The saga's last completed step.
    pub step: Step,
    pub items: Vec<OrderItem>,
    pub subtotal: Money,
    /// Absent until shipping has been quoted.
    pub shipping_cost: Option<Money>,
    /// Subtotal plus shipping (the subtotal alone until shipping is quoted).
    pub total: Money,
    pub currency: String,
    pub shipping_address: Address,
    pub card: CardSummary,
    pub tracking_number: Option<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Oldest first.
    pub history: Vec<StepEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// Newest first.
    pub items: Vec<Order>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A failed checkout: the problem plus the order it concerns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderProblem {
    #[serde(flatten)]
    pub problem: Problem,
    pub order_id: String,
    pub reason_code: String,
}

/// The problem a failed order answers with.
pub fn failure_problem(order: &Order, errors: Vec<FieldError>) -> OrderProblem {
    let code = order
        .reason_code
        .clone()
        .unwrap_or_else(|| reason::UPSTREAM_UNAVAILABLE.to_owned());
    let detail = order
        .reason
        .clone()
        .unwrap_or_else(|| "the checkout failed".to_owned());
    OrderProblem {
        problem: Problem::typed(failure_status(&code), &code.replace('_', "-"), detail)
            .with_errors(errors),
        order_id: order.id.clone(),
        reason_code: code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_contracts::test_cards::SUCCEEDS;

    fn request(number: &str, month: i64, year: i64, cvc: &str) -> CheckoutRequest {
        CheckoutRequest {
            shipping_address: Address {
                name: "Ann".into(),
                line1: "Main St 1".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
            payment: PaymentDetails {
                card_number: Secret(number.into()),
                exp_month: month,
                exp_year: year,
                cvc: Secret(cvc.into()),
            },
        }
    }

    #[test]
    fn cards_are_checked_before_anything_happens() {
        let today = (2026, 11);
        assert!(validate_checkout(&request(SUCCEEDS, 11, 2026, "123"), today).is_ok());
        for (number, month, year, cvc, field) in [
            ("4242424242424241", 1, 2030, "123", "payment.card_number"),
            ("4242x", 1, 2030, "123", "payment.card_number"),
            (SUCCEEDS, 10, 2026, "123", "payment.exp_month"),
            (SUCCEEDS, 1, 2025, "123", "payment.exp_year"),
            (SUCCEEDS, 13, 2030, "123", "payment.exp_month"),
            (SUCCEEDS, 1, 2030, "12", "payment.cvc"),
        ] {
            let err = validate_checkout(&request(number, month, year, cvc), today).unwrap_err();
            assert_eq!(err.status, 422);
            assert_eq!(err.errors[0].field, field, "{number} {month}/{year} {cvc}");
            assert!(!err.detail.unwrap_or_default().contains(number));
        }
    }

    #[test]
    fn address_errors_name_the_request_field() {
        let mut bad = request(SUCCEEDS, 1, 2030, "123");
        bad.shipping_address.country = "Germany".into();
        let err = validate_checkout(&bad, (2026, 11)).unwrap_err();
        assert_eq!(err.errors[0].field, "shipping_address.country");
    }

    #[test]
    fn fingerprints_ignore_the_secret_parts_but_not_the_rest() {
        let a = request(SUCCEEDS, 1, 2030, "123");
        let b = request(SUCCEEDS, 1, 2030, "999");
        let c = request(SUCCEEDS, 2, 2030, "123");
        assert_eq!(request_fingerprint(&a), request_fingerprint(&b));
        assert_ne!(request_fingerprint(&a), request_fingerprint(&c));
    }

    #[test]
    fn steps_round_trip_and_only_two_are_terminal() {
        for step in STEPS {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        let terminal: Vec<_> = STEPS.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Step::Confirmed, Step::Failed]);
    }

    #[test]
    fn lines_need_one_currency_and_sum_in_minor_units() {
        let line = |q, amount, currency| OrderItem {
            product_id: "p".into(),
            name: "P".into(),
            quantity: q,
            unit_price: Money::new(amount, currency),
        };
        assert_eq!(
            check_lines(&[line(2, 1999, "USD"), line(1, 2, "USD")]).unwrap(),
            Money::new(4000, "USD")
        );
        assert_eq!(check_lines(&[]).unwrap_err().status, 409, "an empty cart");
        assert_eq!(check_lines(&[line(0, 1, "USD")]).unwrap_err().status, 422);
        assert_eq!(
            check_lines(&[line(1, 1, "USD"), line(1, 1, "EUR")])
                .unwrap_err()
                .status,
            422
        );
    }

    #[test]
    fn failures_answer_with_their_status() {
        assert_eq!(failure_status(reason::CARD_DECLINED), 402);
        assert_eq!(failure_status(reason::OUT_OF_STOCK), 409);
        assert_eq!(failure_status(reason::PAYMENT_UNAVAILABLE), 503);
    }
}
