//! Money as an integer count of minor units (cents) and an ISO 4217 currency code: never floats.

use serde::{Deserialize, Serialize};

use crate::rules::Checks;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Minor units: 1999 is 19.99 in a two-decimal currency.
    pub amount: i64,
    /// ISO 4217 code, three upper-case letters.
    pub currency: String,
}

/// The largest price the shop accepts: 1,000,000.00 in a two-decimal currency.
pub const MAX_AMOUNT: i64 = 100_000_000;

impl Money {
    pub fn new(amount: i64, currency: &str) -> Self {
        Self {
            amount,
            currency: currency.to_owned(),
        }
    }

    pub fn validate(&self, checks: &mut Checks, field: &str) {
        checks
            .check(
                (0..=MAX_AMOUNT).contains(&self.amount),
                &format!("{field}.amount"),
                format!("must be between 0 and {MAX_AMOUNT} minor units"),
            )
            .check(
                self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase()),
                &format!("{field}.currency"),
                "must be a three-letter ISO 4217 code such as USD",
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_negative_huge_and_lowercase() {
        for (money, ok) in [
            (Money::new(1999, "USD"), true),
            (Money::new(-1, "USD"), false),
            (Money::new(MAX_AMOUNT + 1, "USD"), false),
            (Money::new(100, "usd"), false),
            (Money::new(100, "EURO"), false),
        ] {
            let mut checks = Checks::new();
            money.validate(&mut checks, "price");
            assert_eq!(checks.is_empty(), ok, "{money:?}");
        }
    }
}
