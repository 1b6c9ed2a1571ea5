//! The events the cart consumes: `order.confirmed` takes what was bought out of the cart.
//!
//! The ordered quantity is subtracted from the line, and a line left at zero or below is
//! removed. A line the user has not touched since checkout holds exactly the ordered quantity,
//! so it goes; a line they raised after checking out (while the order was still running) keeps
//! what they added on top, rather than losing an item they put in after paying for the rest.
//! Applied once per event by the kit; other types are ignored.

use async_trait::async_trait;
use serde::Deserialize;
use shop_contracts::events::ORDER_CONFIRMED;
use shop_events::Event;
use shop_events::consume::{HandleError, Handler};
use shop_kit::db::Tx;
use uuid::Uuid;

/// The consumer name under which events are recorded in `processed_events`.
pub const CONSUMER: &str = "cart";

/// The schema version of `order.confirmed` this consumer understands.
const ORDER_CONFIRMED_VERSION: u64 = ORDER_CONFIRMED.version as u64;

/// The part of `order.confirmed` the cart needs.
#[derive(Debug, Deserialize)]
struct OrderConfirmed {
    user_id: Uuid,
    items: Vec<OrderedItem>,
    /// When the order was placed (its cart read). Lines the customer set after that are kept:
    /// they are what the customer wants now, not what was bought. Absent: every line is older.
    #[serde(default)]
    placed_at: String,
}

#[derive(Debug, Deserialize)]
struct OrderedItem {
    product_id: Uuid,
    quantity: i64,
}

/// Removes the ordered items from the buyer's cart.
#[derive(Debug, Clone, Copy, Default)]
pub struct CartHandler;

/// The cart's event consumer, for `shop_events::consume::apply(&db, CONSUMER, &handler(), &event)`.
pub fn handler() -> CartHandler {
    CartHandler
}

#[async_trait]
impl Handler for CartHandler {
    async fn handle(&self, tx: &mut Tx, event: &Event) -> Result<(), HandleError> {
        if event.kind != ORDER_CONFIRMED.name {
            return Ok(());
        }
        if event.version() != ORDER_CONFIRMED_VERSION {
            return Err(HandleError::Reject(anyhow::anyhow!(
                "order.confirmed has data version {}; the cart understands version {ORDER_CONFIRMED_VERSION}",
                event.version()
            )));
        }
        let order: OrderConfirmed = event.data_as().map_err(|e| {
            HandleError::Reject(anyhow::anyhow!("order.confirmed data is malformed: {e}"))
        })?;
        if let Some(item) = order.items.iter().find(|i| i.quantity < 1) {
            return Err(HandleError::Reject(anyhow::anyhow!(
                "order.confirmed item {} has quantity {}",
                item.product_id,
                item.quantity
            )));
        }
        let user_id = order.user_id.to_string();
        for item in &order.items {
            let product_id = item.product_id.to_string();
            let removed = sqlx::query(
                "DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2 AND quantity <= $3 \
                 AND ($4 = '' OR changed_at <= $4)",
            )
            .bind(&user_id)
            .bind(&product_id)
            .bind(item.quantity)
            .bind(&order.placed_at)
            .execute(&mut **tx)
            .await?;
            if removed.rows_affected() > 0 {
                // The line was bought whole (the usual case): nothing is left to lower.
                continue;
            }
            sqlx::query(
                "UPDATE cart_items SET quantity = quantity - $1 \
                 WHERE user_id = $2 AND product_id = $3 AND quantity > $4 \
                 AND ($5 = '' OR changed_at <= $5)",
            )
            .bind(item.quantity)
            .bind(&user_id)
            .bind(&product_id)
            .bind(item.quantity)
            .bind(&order.placed_at)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
