//! The inventory's internal reservation API, as the order service's checkout saga calls it:
//! `POST /internal/reservations` holds every item or none; `…/{order_id}/commit` and `/release`
//! end the hold. Not routed by the gateway.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{OrderId, ProductId};

pub const RESERVATIONS_PATH: &str = "/internal/reservations";

/// `POST` here: the order is paid, the held units leave the warehouse.
pub fn commit_path(order_id: impl std::fmt::Display) -> String {
    format!("{RESERVATIONS_PATH}/{order_id}/commit")
}

/// `POST` here: give the held units back (a compensation).
pub fn release_path(order_id: impl std::fmt::Display) -> String {
    format!("{RESERVATIONS_PATH}/{order_id}/release")
}

/// The problem type (its last segment) of a `409` for a reservation short of stock; its
/// `errors` name the short products.
pub const INSUFFICIENT_STOCK: &str = "insufficient-stock";

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// The order this hold is for; a retry with the same order id returns the same reservation.
    pub order_id: OrderId,
    /// Each product once, with its total quantity.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ReserveItem>,
    /// How long the hold lasts unless committed; the service's default when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::rules::optional_integer"
    )]
    #[schema(minimum = 1, maximum = 3600)]
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveItem {
    pub product_id: ProductId,
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "crate::rules::integer")]
    pub quantity: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    /// Stock is held until `expires_at`.
    Held,
    /// The order is paid: the held units left the warehouse.
    Committed,
    /// Given back by the order service (a compensation).
    Released,
    /// Not committed in time: the units were freed.
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Held, Self::Committed, Self::Released, Self::Expired]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ReservedItem {
    pub product_id: String,
    pub quantity: i64,
}

/// Every reservation endpoint's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: String,
    /// A hold past its expiry reads as `expired` even before the sweeper has freed it.
    pub status: ReservationStatus,
    /// Sorted by product id.
    pub items: Vec<ReservedItem>,
    pub expires_at: String,
    pub created_at: String,
}
