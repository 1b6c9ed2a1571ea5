//! Money as an integer count of minor units (cents) and an ISO 4217 currency code: never floats.

use serde::{Deserialize, Serialize};

use crate::rules::Checks;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Minor units: 1999 is 19.99 in a two-decimal currency.
    #[schema(minimum = 0, maximum = 100_000_000, example = 1999)]
    #[serde(deserialize_with = "crate::rules::integer")]
    pub amount: i64,
    /// ISO 4217 code, three upper-case letters.
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    pub currency: String,
}

/// The schema of an amount to pay or refund: a [`Money`] above 0 (a price may be 0).
pub fn payable_schema() -> utoipa::openapi::Object {
    money_schema(1, None)
}

/// A [`Money`] schema narrower than the type's: at least `min_amount`, and where given, one of
/// `currencies`.
pub fn money_schema(min_amount: i64, currencies: Option<&[&str]>) -> utoipa::openapi::Object {
    use utoipa::openapi::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let currency = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("ISO 4217 code, three upper-case letters."))
        .examples(["USD"]);
    let currency = match currencies {
        Some(list) => currency.enum_values(Some(list.iter().copied())),
        None => currency.pattern(Some("^[A-Z]{3}$")),
    };
    ObjectBuilder::new()
        .property(
            "amount",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .description(Some(
                    "Minor units: 1999 is 19.99 in a two-decimal currency.",
                ))
                .minimum(Some(min_amount))
                .maximum(Some(MAX_AMOUNT))
                .examples([1999]),
        )
        .required("amount")
        .property("currency", currency)
        .required("currency")
        .build()
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

/// Digits after the decimal point of an ISO 4217 currency (2 unless the table says otherwise).
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

impl Money {
    /// The amount as a person reads it, never through floats: `1234567` EUR → `12345.67`, or
    /// `12,345.67` with `grouped`.
    pub fn amount_text(&self, grouped: bool) -> String {
        let digits = minor_digits(&self.currency);
        let sign = if self.amount < 0 { "-" } else { "" };
        let units = self.amount.unsigned_abs();
        let scale = 10u64.pow(digits);
        let (major, minor) = (units / scale, units % scale);
        let major = major.to_string();
        let mut whole = String::with_capacity(major.len() + major.len() / 3);
        for (i, c) in major.chars().enumerate() {
            if grouped && i > 0 && (major.len() - i) % 3 == 0 {
                whole.push(',');
            }
            whole.push(c);
        }
        if digits == 0 {
            format!("{sign}{whole}")
        } else {
            format!("{sign}{whole}.{minor:0width$}", width = digits as usize)
        }
    }

    /// A decimal as typed (`33.99`, `34`, `34.5`) in minor units of `currency`; `None` for
    /// anything else (a sign, a third decimal in a two-decimal currency, letters).
    pub fn parse_amount(text: &str, currency: &str) -> Option<Self> {
        let digits = minor_digits(currency) as usize;
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 12
            || fraction.len() > digits
            || (digits == 0 && text.contains('.'))
            || !all_digits(whole)
            || !all_digits(fraction)
        {
            return None;
        }
        let minor = if digits == 0 {
            0
        } else {
            format!("{fraction:0<digits$}").parse::<i64>().ok()?
        };
        let amount = whole.parse::<i64>().ok()? * 10i64.pow(digits as u32) + minor;
        Some(Self::new(amount, currency))
    }
}

/// `12,345.67 EUR`.
impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.amount_text(true), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_formatted_from_minor_units() {
        for (amount, currency, text) in [
            (0, "EUR", "0.00 EUR"),
            (5, "EUR", "0.05 EUR"),
            (1999, "EUR", "19.99 EUR"),
            (123_456_789, "USD", "1,234,567.89 USD"),
            (100_000, "EUR", "1,000.00 EUR"),
            (-250, "GBP", "-2.50 GBP"),
            (1500, "JPY", "1,500 JPY"),
            (1234, "KWD", "1.234 KWD"),
        ] {
            assert_eq!(Money::new(amount, currency).to_string(), text);
        }
        assert_eq!(Money::new(123_456, "USD").amount_text(false), "1234.56");
    }

    #[test]
    fn typed_amounts_parse_to_minor_units() {
        let usd = |t: &str| Money::parse_amount(t, "USD").map(|m| m.amount);
        assert_eq!(usd("33.99"), Some(3399));
        assert_eq!(usd("34"), Some(3400));
        assert_eq!(usd("34.5"), Some(3450));
        for bad in ["", "-1", "1.234", "abc", "1e3", "1.-5", ".5", "1,000"] {
            assert_eq!(usd(bad), None, "{bad}");
        }
        assert_eq!(
            Money::parse_amount("1500", "JPY").map(|m| m.amount),
            Some(1500)
        );
        assert_eq!(Money::parse_amount("15.5", "JPY"), None);
        assert_eq!(
            Money::parse_amount("1.234", "KWD").map(|m| m.amount),
            Some(1234)
        );
        // Round trip with what the admin form shows.
        let price = Money::new(3399, "USD");
        assert_eq!(
            Money::parse_amount(&price.amount_text(false), "USD"),
            Some(price)
        );
    }

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
