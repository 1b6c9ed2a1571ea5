//! Inventory rules: what a valid reservation request is, when stock counts as low, reservation
//! states and times. No I/O here.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use shop_kit::{ApiResult, Validator};
use utoipa::ToSchema;

/// The reservation API's bodies and answers are the contracts' (the order service's saga sends
/// and reads the same types).
pub use shop_contracts::inventory::{
    Reservation, ReservationStatus, ReserveItem, ReserveRequest, ReservedItem,
};

/// Most units of one product one order may hold.
pub const MAX_QUANTITY: i64 = 1_000;
/// Most different products in one reservation.
pub const MAX_ITEMS: usize = 100;
/// Longest hold a caller may ask for; the saga needs minutes, not days.
pub const MAX_TTL_SECONDS: i64 = 3_600;
/// Largest stock level an operator may set.
pub const MAX_ON_HAND: i64 = 1_000_000_000;
/// Units each seeded catalog product starts with.
pub const SEED_ON_HAND: i64 = 100;

/// What the public sees: how many units can still be bought.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct StockLevel {
    pub product_id: String,
    /// Units neither sold nor held by a live reservation; 0 for a product never stocked.
    pub available: i64,
}

/// The full stock record, for operators.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct StockRecord {
    pub product_id: String,
    /// Units in the warehouse, including held ones.
    pub on_hand: i64,
    /// Units held by live reservations.
    pub reserved: i64,
    pub available: i64,
}

/// Set the units on hand (restock or correction).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "shop_contracts::rules::integer")]
    pub on_hand: i64,
}

/// A product the reservation could not get enough of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shortfall {
    pub product_id: String,
    pub requested: i64,
    pub available: i64,
}

/// The status a stored reservation shows at `now`.
pub fn effective_status(
    stored: ReservationStatus,
    expires_at: &str,
    now: &str,
) -> ReservationStatus {
    if stored == ReservationStatus::Held && expires_at <= now {
        ReservationStatus::Expired
    } else {
        stored
    }
}

pub fn validate_reserve(request: &ReserveRequest) -> ApiResult<()> {
    let mut v = Validator::new();
    v.check(
        !request.order_id.is_nil(),
        "order_id",
        "must not be the nil UUID",
    )
    .check(
        !request.items.is_empty(),
        "items",
        "must list at least one product",
    )
    .check(
        request.items.len() <= MAX_ITEMS,
        "items",
        format!("must list at most {MAX_ITEMS} products"),
    );
    let mut seen = HashSet::new();
    for (i, item) in request.items.iter().enumerate() {
        v.check(
            (1..=MAX_QUANTITY).contains(&item.quantity),
            &format!("items[{i}].quantity"),
            format!("must be 1 to {MAX_QUANTITY}"),
        )
        .check(
            seen.insert(item.product_id),
            &format!("items[{i}].product_id"),
            "appears more than once; list each product once with its total quantity",
        );
    }
    if let Some(ttl) = request.ttl_seconds {
        v.check(
            (1..=MAX_TTL_SECONDS).contains(&ttl),
            "ttl_seconds",
            format!("must be 1 to {MAX_TTL_SECONDS}"),
        );
    }
    v.finish()
}

pub fn validate_on_hand(on_hand: i64) -> ApiResult<()> {
    Validator::new()
        .check(
            (0..=MAX_ON_HAND).contains(&on_hand),
            "on_hand",
            format!("must be 0 to {MAX_ON_HAND}"),
        )
        .finish()
}

/// The items as stored: product ids as text, sorted, so every transaction locks stock rows in the
/// same order (no deadlocks between concurrent reservations on PostgreSQL).
pub fn normalised_items(items: &[ReserveItem]) -> Vec<ReservedItem> {
    let mut items: Vec<_> = items
        .iter()
        .map(|i| ReservedItem {
            product_id: i.product_id.to_string(),
            quantity: i.quantity,
        })
        .collect();
    items.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    items
}

/// `stock.low` fires on the hold that takes availability from at-or-above the threshold to below
/// it, so one run of sales announces it once.
pub fn crosses_low(before: i64, after: i64, threshold: i64) -> bool {
    before >= threshold && after < threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn request(items: &[(Uuid, i64)]) -> ReserveRequest {
        ReserveRequest {
            order_id: Uuid::now_v7().into(),
            items: items
                .iter()
                .map(|(product_id, quantity)| ReserveItem {
                    product_id: (*product_id).into(),
                    quantity: *quantity,
                })
                .collect(),
            ttl_seconds: None,
        }
    }

    #[test]
    fn bad_requests_name_the_field() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let fields = |r: &ReserveRequest| {
            validate_reserve(r)
                .unwrap_err()
                .errors
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(&request(&[])), ["items"]);
        assert_eq!(fields(&request(&[(a, 0)])), ["items[0].quantity"]);
        assert_eq!(fields(&request(&[(a, 1), (b, -2)])), ["items[1].quantity"]);
        assert_eq!(fields(&request(&[(a, 1), (a, 2)])), ["items[1].product_id"]);
        let mut long = request(&[(a, 1)]);
        long.ttl_seconds = Some(0);
        assert_eq!(fields(&long), ["ttl_seconds"]);
        assert!(validate_reserve(&request(&[(a, 1), (b, MAX_QUANTITY)])).is_ok());
    }

    #[test]
    fn low_stock_fires_only_on_the_crossing() {
        assert!(crosses_low(5, 4, 5));
        assert!(crosses_low(9, 0, 5));
        assert!(!crosses_low(6, 5, 5));
        assert!(!crosses_low(4, 3, 5), "already low: announced before");
    }

    #[test]
    fn a_hold_past_its_expiry_reads_as_expired() {
        use shop_kit::db::rfc3339;
        use time::OffsetDateTime;
        let now = rfc3339(OffsetDateTime::now_utc());
        let past = rfc3339(OffsetDateTime::now_utc() - time::Duration::seconds(1));
        let later = rfc3339(OffsetDateTime::now_utc() + time::Duration::seconds(60));
        use ReservationStatus::*;
        assert_eq!(effective_status(Held, &past, &now), Expired);
        assert_eq!(effective_status(Held, &later, &now), Held);
        assert_eq!(effective_status(Committed, &past, &now), Committed);
    }

    #[test]
    fn items_are_sorted_for_lock_order() {
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let items = normalised_items(&request(&[(a, 1), (b, 2)]).items);
        assert_eq!(items[0].product_id, b.to_string());
    }
}
