//! The payment service's internal API, as the order service's checkout saga calls it:
//! `POST /internal/charges`, `POST /internal/charges/{charge_id}/refunds` and
//! `GET /internal/charges?order_id=`; and the card rules both sides run (the order checks the
//! card before anything is reserved, payment before it charges). Not routed by the gateway.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::ids::OrderId;
use crate::money::Money;
use crate::rules::Checks;
use crate::test_cards;

pub const CHARGES_PATH: &str = "/internal/charges";

/// `GET` here: every charge of an order, with its transactions.
pub fn charges_of_order_path(order_id: impl std::fmt::Display) -> String {
    format!("{CHARGES_PATH}?order_id={order_id}")
}

/// `POST` here: refund part or all of a charge.
pub fn refunds_path(charge_id: &str) -> String {
    format!("{CHARGES_PATH}/{charge_id}/refunds")
}

/// The `code` of a `402`: the processor declined the card.
pub const CARD_DECLINED: &str = "card_declined";
/// The `code` of a `402`: the card has insufficient funds.
pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";

/// A card number or CVC as sent. Its `Debug` hides it, and its deserialiser never echoes a
/// wrongly typed value into an error message (serde's default would print the number). It
/// serialises as the plain string: the order service sends it on to payment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl Visitor<'_> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string of digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom("must be a string of digits, not a number"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom("must be a string of digits, not a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom("must be a string of digits, not a number"))
            }
        }
        // `deserialize_any`: with `deserialize_str`, serde_json words the type error itself, number included.
        deserializer.deserialize_any(SecretVisitor)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// 13 to 19 digits passing the Luhn check (format `card-number`). Never stored, logged or
    /// returned.
    #[schema(value_type = String, format = "card-number", pattern = "^[0-9]{13,19}$", example = json!(test_cards::SUCCEEDS))]
    pub number: Secret,
    #[schema(minimum = 1, maximum = 12, example = 12)]
    #[serde(deserialize_with = "crate::rules::integer")]
    pub exp_month: i64,
    /// The card is valid through the end of its expiry month: an earlier month is a 422.
    #[schema(minimum = 2000, maximum = 2099, example = 2030)]
    #[serde(deserialize_with = "crate::rules::integer")]
    pub exp_year: i64,
    /// 3 or 4 digits. Never stored, logged or returned.
    #[schema(value_type = String, pattern = "^[0-9]{3,4}$", example = "123")]
    pub cvc: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    /// The order being paid.
    pub order_id: OrderId,
    /// Above 0.
    #[schema(schema_with = crate::money::payable_schema)]
    pub amount: Money,
    pub card: Card,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Above 0, in the charge's currency; with earlier refunds at most the charged amount.
    #[schema(schema_with = crate::money::payable_schema)]
    pub amount: Money,
}

/// What is kept of a card: enough to recognise it, not enough to use it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CardSummary {
    /// visa | mastercard | amex | discover | unknown
    pub brand: String,
    pub last4: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChargeStatus {
    Succeeded,
    /// Declined by the processor: `failure_code` says why.
    Failed,
}

impl ChargeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A charge as answered by `POST /internal/charges`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ChargeCreated {
    pub charge_id: String,
    pub order_id: String,
    pub status: ChargeStatus,
    pub amount: Money,
    pub card: CardSummary,
    pub created_at: String,
}

/// A refund as answered by `POST /internal/charges/{charge_id}/refunds`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct RefundCreated {
    pub refund_id: String,
    pub charge_id: String,
    pub amount: Money,
    /// Everything refunded on the charge so far, this refund included.
    pub refunded_total: i64,
    pub created_at: String,
}

/// One money movement: the charge attempt or a refund.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Transaction {
    pub transaction_id: String,
    /// charge | refund
    #[serde(rename = "type")]
    pub kind: String,
    pub amount: Money,
    /// succeeded | card_declined | insufficient_funds
    pub outcome: String,
    pub created_at: String,
}

/// A charge with everything that happened to it (for the saga resuming after a crash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ChargeDetails {
    pub charge_id: String,
    pub order_id: String,
    pub status: ChargeStatus,
    /// card_declined | insufficient_funds, for a failed charge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    pub amount: Money,
    pub refunded: i64,
    pub card: CardSummary,
    pub created_at: String,
    /// Oldest first: the charge attempt, then its refunds.
    pub transactions: Vec<Transaction>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChargeList {
    /// Oldest first.
    pub items: Vec<ChargeDetails>,
}

/// What a `402` (a declined payment, a business outcome) adds to its problem.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Declined {
    /// card_declined | insufficient_funds
    pub code: String,
    /// The failed charge, recorded with its transaction.
    pub charge_id: String,
}

/// Why the simulated processor declines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    CardDeclined,
    InsufficientFunds,
}

impl Decline {
    pub fn code(self) -> &'static str {
        match self {
            Self::CardDeclined => CARD_DECLINED,
            Self::InsufficientFunds => INSUFFICIENT_FUNDS,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::CardDeclined => "the card was declined",
            Self::InsufficientFunds => "the card has insufficient funds",
        }
    }
}

/// The built-in processor: the [test cards](crate::test_cards) decline; every other valid card
/// succeeds, as card processors' test modes do, so any Luhn-valid number works in a demo.
pub fn simulate(number: &str) -> Result<(), Decline> {
    match number {
        test_cards::DECLINED => Err(Decline::CardDeclined),
        test_cards::INSUFFICIENT_FUNDS => Err(Decline::InsufficientFunds),
        _ => Ok(()),
    }
}

pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

pub fn brand(number: &str) -> &'static str {
    let prefix = |n: usize| number.get(..n).and_then(|p| p.parse::<u32>().ok());
    match (prefix(1), prefix(2), prefix(4)) {
        (Some(4), _, _) => "visa",
        (_, Some(34 | 37), _) => "amex",
        (_, Some(51..=55), _) | (_, _, Some(2221..=2720)) => "mastercard",
        (_, Some(65), _) | (_, _, Some(6011)) => "discover",
        _ => "unknown",
    }
}

pub fn summary(number: &str) -> CardSummary {
    CardSummary {
        brand: brand(number).to_owned(),
        last4: number[number.len().saturating_sub(4)..].to_owned(),
    }
}

/// The request fields a card's errors name: `card.number` in payment's charge,
/// `payment.card_number` in the order service's checkout.
pub struct CardFields<'a> {
    pub number: &'a str,
    pub exp_month: &'a str,
    pub exp_year: &'a str,
    pub cvc: &'a str,
}

/// Checks a card's number (digits, 13 to 19 of them, Luhn), expiry against `today` (year, month)
/// and CVC. The messages never quote the number or the CVC.
pub fn check_card(
    checks: &mut Checks,
    card: &Card,
    (year, month): (i64, i64),
    fields: &CardFields,
) {
    let number = &card.number.0;
    let digits = number.bytes().all(|b| b.is_ascii_digit());
    checks.check(digits, fields.number, "must contain only digits");
    if digits {
        let length_ok = (13..=19).contains(&number.len());
        checks.check(length_ok, fields.number, "must have 13 to 19 digits");
        checks.check(
            !length_ok || luhn_valid(number),
            fields.number,
            "is not a valid card number (Luhn check failed)",
        );
    }
    let month_ok = (1..=12).contains(&card.exp_month);
    let year_ok = (2000..=2099).contains(&card.exp_year);
    checks.check(month_ok, fields.exp_month, "must be 1 to 12");
    checks.check(year_ok, fields.exp_year, "must be a four-digit year");
    if month_ok && year_ok {
        let field = if card.exp_year == year {
            fields.exp_month
        } else {
            fields.exp_year
        };
        checks.check(
            (card.exp_year, card.exp_month) >= (year, month),
            field,
            "the card has expired",
        );
    }
    let cvc = &card.cvc.0;
    checks.check(
        (3..=4).contains(&cvc.len()) && cvc.bytes().all(|b| b.is_ascii_digit()),
        fields.cvc,
        "must be 3 or 4 digits",
    );
}

/// (year, month) now, in UTC: the `today` of [`check_card`].
pub fn this_month() -> (i64, i64) {
    let now = OffsetDateTime::now_utc();
    (i64::from(now.year()), i64::from(u8::from(now.month())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_the_test_cards_and_rejects_a_typo() {
        for number in [
            test_cards::SUCCEEDS,
            test_cards::DECLINED,
            test_cards::INSUFFICIENT_FUNDS,
        ] {
            assert!(luhn_valid(number), "{number}");
        }
        assert!(!luhn_valid("4242424242424241"));
    }

    #[test]
    fn brands_and_last_four() {
        assert_eq!(
            summary(test_cards::SUCCEEDS),
            CardSummary {
                brand: "visa".into(),
                last4: "4242".into()
            }
        );
        assert_eq!(brand("5555555555554444"), "mastercard");
        assert_eq!(brand("378282246310005"), "amex");
        assert_eq!(brand("6011111111111117"), "discover");
        assert_eq!(brand("9999999999999995"), "unknown");
    }

    #[test]
    fn the_processor_honours_the_test_cards() {
        assert_eq!(simulate(test_cards::SUCCEEDS), Ok(()));
        assert_eq!(simulate(test_cards::DECLINED), Err(Decline::CardDeclined));
        assert_eq!(
            simulate(test_cards::INSUFFICIENT_FUNDS),
            Err(Decline::InsufficientFunds)
        );
    }

    #[test]
    fn a_wrongly_typed_card_number_is_not_echoed() {
        let err = serde_json::from_str::<Card>(&format!(
            r#"{{"number": {}, "exp_month": 1, "exp_year": 2099, "cvc": "123"}}"#,
            test_cards::SUCCEEDS
        ))
        .unwrap_err()
        .to_string();
        assert!(!err.contains(test_cards::SUCCEEDS), "{err}");
        assert!(!format!("{:?}", Secret(test_cards::SUCCEEDS.into())).contains("4242"));
    }

    #[test]
    fn a_card_serialises_as_sent() {
        let card = Card {
            number: Secret(test_cards::SUCCEEDS.into()),
            exp_month: 1,
            exp_year: 2099,
            cvc: Secret("123".into()),
        };
        let json = serde_json::to_value(&card).unwrap();
        assert_eq!(json["number"], test_cards::SUCCEEDS);
        assert_eq!(json["cvc"], "123");
    }
}
