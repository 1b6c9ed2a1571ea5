//! The events the order service writes, each in the transaction of the change it announces
//! (see `storage`). Their names and versions are the contracts'; the kit adds `version` to `data`.

use serde::Serialize;
use shop_contracts::events::EventType;
use shop_events::Event;
use shop_kit::Money;

use crate::domain::{Order, OrderItem};

pub use shop_contracts::events::{ORDER_CONFIRMED, ORDER_FAILED, ORDER_PLACED};

/// An event of this type, as its contract names, versions and sources it.
fn event(kind: EventType, data: impl Serialize) -> Event {
    Event::new(kind.name, kind.source(), kind.version, data)
}

/// `order.placed`: the order exists and its saga starts. `total` is the items' subtotal:
/// shipping is quoted later in the saga (`order.confirmed` carries the final total).
#[derive(Debug, Clone, Serialize)]
pub struct OrderPlaced<'a> {
    pub order_id: &'a str,
    pub user_id: &'a str,
    pub items: &'a [OrderItem],
    pub total: &'a Money,
}

/// `order.confirmed`: paid, committed and shipped.
#[derive(Debug, Clone, Serialize)]
pub struct OrderConfirmed<'a> {
    pub order_id: &'a str,
    pub user_id: &'a str,
    pub items: &'a [OrderItem],
    pub total: &'a Money,
    pub tracking_number: &'a str,
    /// When the order was placed (its cart read): the cart keeps lines changed after it.
    pub placed_at: &'a str,
}

/// `order.failed`: the saga ended without the order; compensations have run.
#[derive(Debug, Clone, Serialize)]
pub struct OrderFailed<'a> {
    pub order_id: &'a str,
    pub user_id: &'a str,
    pub reason_code: &'a str,
    pub reason: &'a str,
}

pub fn placed(order_id: &str, user_id: &str, items: &[OrderItem], subtotal: &Money) -> Event {
    event(
        ORDER_PLACED,
        OrderPlaced {
            order_id,
            user_id,
            items,
            total: subtotal,
        },
    )
}

pub fn confirmed(order: &Order, tracking_number: &str) -> Event {
    event(
        ORDER_CONFIRMED,
        OrderConfirmed {
            order_id: &order.id,
            user_id: &order.user_id,
            items: &order.items,
            total: &order.total,
            tracking_number,
            placed_at: &order.created_at,
        },
    )
}

pub fn failed(order: &Order, reason_code: &str, reason: &str) -> Event {
    event(
        ORDER_FAILED,
        OrderFailed {
            order_id: &order.id,
            user_id: &order.user_id,
            reason_code,
            reason,
        },
    )
}
