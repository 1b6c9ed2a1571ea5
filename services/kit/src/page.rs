//! Keyset pagination: the opaque cursor a list endpoint hands out as `next_cursor`.
//!
//! A cursor names the last row of a page by its sort key and id (`(name, id)` for products,
//! `(created_at, id)` for orders and messages); the next page starts strictly after it. The
//! encoding is URL-safe base64 of a small JSON object and is not part of the API: clients pass it
//! back unchanged and must not build one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::problem::{ApiResult, Problem};

/// Where the next page starts: after the row with this sort `key` and `id`, in listing order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "i")]
    pub id: String,
}

impl Cursor {
    pub fn new(key: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            id: id.into(),
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serialises"))
    }

    /// The cursor `encode` wrote; anything else is a 400, since only the API makes cursors.
    pub fn decode(raw: &str) -> ApiResult<Self> {
        URL_SAFE_NO_PAD
            .decode(raw)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| Problem::bad_request("the cursor is not one this API returned"))
    }
}

/// Cuts the `limit + 1` rows a list query fetched to one page of at most `limit`; when there
/// was a row beyond it, also the cursor after the page's last row (`cursor_of` names a row).
pub fn split<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> Cursor,
) -> (Vec<T>, Option<Cursor>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(cursor_of)
    } else {
        None
    };
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor::new("2026-11-22T10:00:00.000000Z", "x");
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        let name_keyed = Cursor::new("Kettle", "abc");
        assert_eq!(Cursor::decode(&name_keyed.encode()).unwrap(), name_keyed);
        for garbage in [
            "not-a-cursor!".to_owned(),
            URL_SAFE_NO_PAD.encode(b"{}"),
            URL_SAFE_NO_PAD.encode(b"not json"),
        ] {
            let err = Cursor::decode(&garbage).unwrap_err();
            assert_eq!(err.status, 400, "{garbage}");
            assert_eq!(
                err.detail.as_deref(),
                Some("the cursor is not one this API returned")
            );
        }
    }

    #[test]
    fn a_page_has_a_next_cursor_only_when_a_row_was_left_over() {
        let cursor_of = |n: &i32| Cursor::new(n.to_string(), format!("id-{n}"));
        let (page, next) = split(vec![1, 2, 3], 2, cursor_of);
        assert_eq!(page, [1, 2]);
        assert_eq!(next, Some(Cursor::new("2", "id-2")));
        let (page, next) = split(vec![1, 2], 2, cursor_of);
        assert_eq!(page, [1, 2]);
        assert_eq!(next, None);
        assert_eq!(split(Vec::<i32>::new(), 2, cursor_of), (vec![], None));
    }
}
