//! The cart's table. Portable SQL over the kit's database.

use shop_kit::db::now_rfc3339;
use shop_kit::{Database, Money};

use crate::domain::{Cart, CartLine, line};

/// One line of a cart as stored, its unit price in minor units.
#[derive(sqlx::FromRow)]
struct LineRow {
    product_id: String,
    name: String,
    quantity: i64,
    unit_price_minor: i64,
    currency: String,
}

#[derive(Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn cart(&self, user_id: &str) -> Result<Cart, sqlx::Error> {
        let rows: Vec<LineRow> = sqlx::query_as(
            "SELECT product_id, name, quantity, unit_price_minor, currency FROM cart_items \
             WHERE user_id = $1 ORDER BY updated_at, product_id",
        )
        .bind(user_id)
        .fetch_all(self.db.reader())
        .await?;
        Ok(Cart::from_lines(
            rows.into_iter()
                .map(|row| {
                    line(
                        row.product_id,
                        row.name,
                        row.quantity,
                        Money::new(row.unit_price_minor, &row.currency),
                    )
                })
                .collect(),
        ))
    }

    /// Sets the quantity of one product in the cart, adding the line when new.
    pub async fn set_line(&self, user_id: &str, item: &CartLine) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO cart_items (user_id, product_id, quantity, name, unit_price_minor, currency, updated_at, changed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = excluded.quantity, name = excluded.name, \
             unit_price_minor = excluded.unit_price_minor, currency = excluded.currency, \
             changed_at = excluded.changed_at",
        )
        .bind(user_id)
        .bind(&item.product_id)
        .bind(item.quantity)
        .bind(&item.name)
        .bind(item.unit_price.amount)
        .bind(&item.unit_price.currency)
        .bind(now_rfc3339())
        .execute(self.db.pool())
        .await
        .map(|_| ())
    }

    pub async fn remove_line(&self, user_id: &str, product_id: &str) -> Result<bool, sqlx::Error> {
        let result = sqlx::query("DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2")
            .bind(user_id)
            .bind(product_id)
            .execute(self.db.pool())
            .await?;
        Ok(result.rows_affected() > 0)
    }

    pub async fn clear(&self, user_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM cart_items WHERE user_id = $1")
            .bind(user_id)
            .execute(self.db.pool())
            .await
            .map(|_| ())
    }
}
