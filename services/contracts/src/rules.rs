//! Field errors as plain data: a contract's rule reports what is wrong with which field, and each
//! side turns the list into its own answer (the kit's 422 problem, or a field name of its own API).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One broken rule of a request field (in a 422 problem's `errors`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Collects the field errors of one request, in the order the rules ran.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` against `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) -> &mut Self {
        if !ok {
            self.errors.push(FieldError {
                field: field.into(),
                message: message.into(),
            });
        }
        self
    }

    /// A required text field: at most `max` characters, at least one of them visible (neither
    /// white space nor a control character).
    ///
    /// The schemas say the same with `maxLength` and [`TEXT_PATTERN`], so a client that
    /// follows the OpenAPI document is never refused.
    pub fn text(&mut self, field: &str, value: &str, max: usize) -> &mut Self {
        self.check(has_visible_char(value), field, "must not be empty")
            .check(
                value.chars().count() <= max,
                field,
                format!("must be at most {max} characters"),
            )
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors so far, leaving none behind.
    pub fn take(&mut self) -> Vec<FieldError> {
        std::mem::take(&mut self.errors)
    }
}

/// The schemas' `pattern` for a required text field: one character that is neither white space
/// nor a control character (Python's and ECMAScript's `\s` hold the same characters as Rust's
/// `char::is_whitespace` once the C0 and C1 controls are added). utoipa takes only literals, so
/// annotations repeat it; the API contract test holds the two together.
pub const TEXT_PATTERN: &str = r"[^\s\x00-\x1f\x7f-\x9f]";

/// Whether `value` holds a character that is neither white space nor a control character.
pub fn has_visible_char(value: &str) -> bool {
    value.chars().any(|c| !c.is_whitespace() && !c.is_control())
}

/// Reads a whole number, also when written with a zero fraction (`2.0`): JSON Schema's
/// `integer`, which the documents promise, holds such numbers too. For `deserialize_with`.
pub fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("the number is too large"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // Every whole f64 strictly inside ±2^63 converts exactly.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
            if v.fract() == 0.0 && v.abs() < LIMIT {
                Ok(v as i64)
            } else {
                Err(E::custom(format!(
                    "invalid type: {v}, expected a whole number"
                )))
            }
        }
    }
    deserializer.deserialize_any(Whole)
}

/// [`integer`] for an optional field (with `#[serde(default)]`).
pub fn optional_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "integer")] i64);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_collect_every_failure_in_order() {
        let mut checks = Checks::new();
        checks
            .text("name", "  ", 10)
            .text("email", &"x".repeat(11), 10)
            .check(true, "ok", "never");
        let fields: Vec<_> = checks.take().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "email"]);
        assert!(checks.is_empty());
    }

    #[test]
    fn whole_numbers_may_carry_a_zero_fraction() {
        #[derive(Deserialize)]
        struct Body {
            #[serde(deserialize_with = "integer")]
            n: i64,
            #[serde(default, deserialize_with = "optional_integer")]
            m: Option<i64>,
        }
        let read = |text: &str| serde_json::from_str::<Body>(text).map(|b| (b.n, b.m));
        assert_eq!(read(r#"{"n": 48.0, "m": 2}"#).unwrap(), (48, Some(2)));
        assert_eq!(read(r#"{"n": -3}"#).unwrap(), (-3, None));
        assert_eq!(read(r#"{"n": 1, "m": null}"#).unwrap(), (1, None));
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": "1"}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": 1, "m": 0.5}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_needs_a_visible_character_and_counts_every_character() {
        assert!(!has_visible_char(" \t\u{1c}\u{85}\u{3000}\u{0}"));
        assert!(has_visible_char(" é "));
        let mut checks = Checks::new();
        checks.text("a", &format!("{} ", "x".repeat(10)), 10);
        assert_eq!(checks.take().len(), 1, "the spaces count");
    }
}
