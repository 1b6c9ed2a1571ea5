//! The `Idempotency-Key` request header: the same rule and the same problems wherever a service
//! takes one (order checkouts, payment charges and refunds).

use axum::http::{HeaderMap, StatusCode};

use crate::problem::{ApiResult, Problem};

/// The header's name, as `HeaderMap` looks it up.
pub const HEADER: &str = "idempotency-key";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A valid key: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The request's key: 428 `idempotency-key-missing` without one, 400 when it breaks the rule.
/// `unit` names what one key stands for in the 428's detail ("checkout", "payment attempt").
pub fn required_key(headers: &HeaderMap, unit: &str) -> ApiResult<String> {
    let Some(value) = headers.get(HEADER) else {
        return Err(Problem::typed(
            StatusCode::PRECONDITION_REQUIRED,
            "idempotency-key-missing",
            format!(
                "the Idempotency-Key header is required: a unique value per {unit}, reused on retries"
            ),
        ));
    };
    match value.to_str() {
        Ok(key) if valid_key(key) => Ok(key.to_owned()),
        _ => Err(Problem::bad_request(format!(
            "the Idempotency-Key header must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))),
    }
}

/// A SHA-256 fingerprint of what a request asks for, which a reused key is checked against. A
/// card enters as brand, last four digits and expiry, never the full number or CVC: even a hash
/// of a card number can be reversed by trying the few billion numbers that share its brand and
/// last four.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_key(value: HeaderValue) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, value);
        headers
    }

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(valid_key("a"));
        assert!(valid_key(&"k".repeat(MAX_KEY_LEN)));
        assert!(valid_key("order-1:retry/2"));
        for bad in [
            "",
            " ",
            "has space",
            "tab\t",
            "é",
            &"k".repeat(MAX_KEY_LEN + 1),
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_key_is_428_with_the_callers_wording() {
        let err = required_key(&HeaderMap::new(), "checkout").unwrap_err();
        assert_eq!(err.status, 428);
        assert_eq!(
            err.kind,
            "https://shop.dev/problems/idempotency-key-missing"
        );
        assert_eq!(
            err.detail.as_deref(),
            Some(
                "the Idempotency-Key header is required: a unique value per checkout, reused on retries"
            )
        );
    }

    #[test]
    fn a_malformed_key_is_400_and_a_good_one_is_returned() {
        for bad in [
            HeaderValue::from_static("has space"),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            HeaderValue::from_str(&"k".repeat(MAX_KEY_LEN + 1)).unwrap(),
        ] {
            let err = required_key(&with_key(bad), "checkout").unwrap_err();
            assert_eq!(err.status, 400);
            assert_eq!(
                err.detail.as_deref(),
                Some("the Idempotency-Key header must be 1 to 255 visible ASCII characters")
            );
        }
        let key = required_key(&with_key(HeaderValue::from_static("k-1")), "checkout");
        assert_eq!(key.unwrap(), "k-1");
    }
}
