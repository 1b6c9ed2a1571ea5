//! The cart as the cart service answers it (`GET /api/cart`) and the order service reads it at
//! checkout.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::money::Money;

/// The caller's cart (the caller named by the identity headers).
pub const CART_PATH: &str = "/api/cart";

/// The most units of one product a cart line holds.
pub const MAX_QUANTITY: i64 = 99;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct CartLine {
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Cart {
    pub items: Vec<CartLine>,
    /// Absent for an empty cart.
    pub total: Option<Money>,
    pub item_count: i64,
}

impl Cart {
    pub fn from_lines(items: Vec<CartLine>) -> Self {
        let total = items.first().map(|first| {
            Money::new(
                items.iter().map(|l| l.line_total.amount).sum(),
                &first.unit_price.currency,
            )
        });
        let item_count = items.iter().map(|l| l.quantity).sum();
        Self {
            items,
            total,
            item_count,
        }
    }
}
