//! The order service's tables. Portable SQL over the kit's database.
//!
//! The order row is the Idempotency-Key claim: inserted once per (user, key), with `order.placed`
//! in the same transaction. Every later write is one conditional UPDATE on the expected step and
//! the runner holding the order (so two runners can never both advance one order) that also
//! appends the step to the row's `history`; for the terminal steps it returns the row and the
//! event goes to the outbox in the same transaction.

use shop_contracts::shipping::{Address, Quote};
use shop_events::outbox;
use shop_kit::page::{self, Cursor};
use shop_kit::propagation::TraceContext;
use shop_kit::{Database, FieldError, Money, now_rfc3339};
use sqlx::FromRow;

use crate::domain::{CardSummary, Order, OrderItem, OrderStatus, Step, StepEntry};
use crate::events;

const ORDER_COLUMNS: &str = "id, user_id, request_hash, status, step, runner, items, currency, \
    subtotal, shipping_cost, shipping_quote, shipping_address, card_brand, card_last4, charge_id, \
    payment_check, tracking_number, reason_code, reason, reason_errors, created_at, updated_at, \
    history";

/// An order as stored (the columns of [`ORDER_COLUMNS`]): money in minor units of `currency`,
/// items, address, quote and reason errors as JSON text, `payment_check` as 0 or 1 (a BIGINT on
/// both backends). Its `status` column is left out: it follows from `step`.
#[derive(sqlx::FromRow)]
struct OrderRow {
    id: String,
    user_id: String,
    request_hash: String,
    step: String,
    runner: String,
    items: String,
    currency: String,
    subtotal: i64,
    shipping_cost: Option<i64>,
    shipping_quote: Option<String>,
    shipping_address: String,
    card_brand: String,
    card_last4: String,
    charge_id: Option<String>,
    payment_check: i64,
    tracking_number: Option<String>,
    reason_code: Option<String>,
    reason: Option<String>,
    reason_errors: Option<String>,
    created_at: String,
    updated_at: String,
    history: String,
}

/// A step as appended to the `history` column: `<step> <at>;`.
fn history_entry(step: Step, at: &str) -> String {
    format!("{} {at};", step.as_str())
}

fn parse_history(text: &str) -> Vec<StepEntry> {
    text.split(';')
        .filter_map(|entry| {
            let (step, at) = entry.split_once(' ')?;
            Some(StepEntry {
                step: Step::parse(step)?,
                at: at.to_owned(),
            })
        })
        .collect()
}

#[derive(Clone)]
pub struct Store {
    db: Database,
}

/// An order with what the saga needs beyond the API view.
#[derive(Debug, Clone)]
pub struct SagaState {
    pub order: Order,
    pub request_hash: String,
    pub runner: String,
    pub quote: Option<Quote>,
    pub charge_id: Option<String>,
    /// A charge may exist that `charge_id` does not name: ask payment before finishing.
    pub payment_check: bool,
    pub reason_errors: Vec<FieldError>,
}

impl SagaState {
    /// This state after [`Store::advance`] recorded `to` with `progress`: as a new read would
    /// decode it (the timestamps aside, which the saga does not use).
    pub fn advanced(&mut self, to: Step, progress: Progress) {
        let order = &mut self.order;
        order.step = to;
        order.status = to.status();
        if let Some(quote) = progress.quote {
            order.shipping_cost = Some(Money::new(quote.amount.amount, &order.currency));
            order.total = Money::new(order.subtotal.amount + quote.amount.amount, &order.currency);
            self.quote = Some(quote);
        }
        if progress.charge_id.is_some() {
            self.charge_id = progress.charge_id;
        }
        if progress.tracking_number.is_some() {
            order.tracking_number = progress.tracking_number;
        }
    }
}

/// What [`Store::advance`] wrote.
pub enum Advanced {
    /// Nothing: the order is no longer at the step, or no longer the runner's.
    Lost,
    /// The step.
    Recorded,
    /// The step `Confirmed` and `order.confirmed`; the order as stored.
    Confirmed(Box<SagaState>),
}

/// A new order, already validated and priced.
pub struct NewOrder<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub idem_key: &'a str,
    pub request_hash: &'a str,
    pub runner: &'a str,
    pub items: &'a [OrderItem],
    pub subtotal: &'a Money,
    pub address: &'a Address,
    pub card: &'a CardSummary,
}

/// What a step records besides itself.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub quote: Option<Quote>,
    pub charge_id: Option<String>,
    pub tracking_number: Option<String>,
}

/// Why a step failed, as recorded when compensation starts.
pub struct Failure<'a> {
    pub reason_code: &'a str,
    pub reason: &'a str,
    pub errors: &'a [FieldError],
    pub payment_check: bool,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Inserts the order, its first step and `order.placed`, and returns the order as stored;
    /// unless the user already has an order under this key: then `None`, and nothing is written.
    pub async fn insert(&self, new: NewOrder<'_>) -> Result<Option<SagaState>, sqlx::Error> {
        let now = now_rfc3339();
        // The checkout's trace, for the resumer to link to should it take the saga over.
        let trace = shop_kit::propagation::current();
        let mut tx = self.db.begin().await?;
        let inserted: Option<OrderRow> = sqlx::query_as(&format!(
            "INSERT INTO orders (id, user_id, idem_key, request_hash, status, step, runner, items, \
             currency, subtotal, shipping_address, card_brand, card_last4, payment_check, \
             created_at, updated_at, traceparent, tracestate, history) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, $14, $15, $16, $17, $18) \
             ON CONFLICT (user_id, idem_key) DO NOTHING RETURNING {ORDER_COLUMNS}"
        ))
        .bind(new.id)
        .bind(new.user_id)
        .bind(new.idem_key)
        .bind(new.request_hash)
        .bind(OrderStatus::Pending.as_str())
        .bind(Step::Placed.as_str())
        .bind(new.runner)
        .bind(serde_json::to_string(new.items).expect("items serialise"))
        .bind(&new.subtotal.currency)
        .bind(new.subtotal.amount)
        .bind(serde_json::to_string(new.address).expect("an address serialises"))
        .bind(&new.card.brand)
        .bind(&new.card.last4)
        .bind(&now)
        .bind(&now)
        .bind(trace.as_ref().map(|t| t.traceparent.clone()))
        .bind(trace.and_then(|t| t.tracestate))
        .bind(history_entry(Step::Placed, &now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = inserted else {
            tx.rollback().await?;
            return Ok(None);
        };
        let placed = decode(row)?;
        outbox::insert(
            &mut tx,
            &events::placed(new.id, new.user_id, new.items, new.subtotal),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(placed))
    }

    /// The trace context of the request that placed the order, if it was traced.
    pub async fn checkout_trace(&self, id: &str) -> Result<Option<TraceContext>, sqlx::Error> {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT traceparent, tracestate FROM orders WHERE id = $1")
                .bind(id)
                .fetch_optional(self.db.reader())
                .await?;
        Ok(row.and_then(|(parent, state)| TraceContext::new(parent, state)))
    }

    /// The user's order under an Idempotency-Key.
    pub async fn by_key(&self, user_id: &str, key: &str) -> Result<Option<SagaState>, sqlx::Error> {
        let row = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND idem_key = $2"
        ))
        .bind(user_id)
        .bind(key)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(decode).transpose()
    }

    /// The order as stored, with its step history.
    pub async fn state(&self, id: &str) -> Result<Option<SagaState>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.reader())
            .await?
            .map(decode)
            .transpose()
    }

    /// A page of the user's orders, newest first.
    pub async fn list(
        &self,
        user_id: &str,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<(Vec<Order>, Option<Cursor>), sqlx::Error> {
        let rows: Vec<OrderRow> = match after {
            Some(c) => {
                sqlx::query_as(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 \
                     AND (created_at < $2 OR (created_at = $3 AND id < $4)) \
                     ORDER BY created_at DESC, id DESC LIMIT $5"
                ))
                .bind(user_id)
                .bind(&c.key)
                .bind(&c.key)
                .bind(&c.id)
                .bind(limit + 1)
                .fetch_all(self.db.reader())
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                ))
                .bind(user_id)
                .bind(limit + 1)
                .fetch_all(self.db.reader())
                .await?
            }
        };
        let orders = rows
            .into_iter()
            .map(|row| decode(row).map(|state| state.order))
            .collect::<Result<Vec<_>, _>>()?;
        let (orders, next) = page::split(orders, limit, |last| {
            Cursor::new(&last.created_at, &last.id)
        });
        Ok((orders, next))
    }

    /// Records that `runner` completed `to` after `from`: [`Advanced::Lost`] when the order is no
    /// longer at `from` or no longer this runner's (nothing written). Reaching `Confirmed` writes
    /// `order.confirmed` in the same transaction, and returns the order as stored.
    pub async fn advance(
        &self,
        id: &str,
        runner: &str,
        from: Step,
        to: Step,
        progress: Progress,
    ) -> Result<Advanced, sqlx::Error> {
        let now = now_rfc3339();
        let (shipping_cost, quote) = match &progress.quote {
            Some(q) => (
                Some(q.amount.amount),
                Some(serde_json::to_string(q).expect("a quote serialises")),
            ),
            None => (None, None),
        };
        // Only the terminal step reads the row back, for the event written with it.
        let returning = if to == Step::Confirmed {
            format!(" RETURNING {ORDER_COLUMNS}")
        } else {
            String::new()
        };
        let sql = format!(
            "UPDATE orders SET step = $1, status = $2, updated_at = $3, \
             shipping_cost = COALESCE($4, shipping_cost), shipping_quote = COALESCE($5, shipping_quote), \
             charge_id = COALESCE($6, charge_id), tracking_number = COALESCE($7, tracking_number), \
             history = history || $8 \
             WHERE id = $9 AND step = $10 AND runner = $11{returning}"
        );
        let update = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(to.status().as_str())
            .bind(&now)
            .bind(shipping_cost)
            .bind(quote)
            .bind(progress.charge_id)
            .bind(progress.tracking_number)
            .bind(history_entry(to, &now))
            .bind(id)
            .bind(from.as_str())
            .bind(runner);
        if to != Step::Confirmed {
            // One statement, committed by itself: the step and its history together.
            let updated = update.execute(self.db.pool()).await?.rows_affected();
            return Ok(if updated == 1 {
                Advanced::Recorded
            } else {
                Advanced::Lost
            });
        }
        let mut tx = self.db.begin().await?;
        let Some(row) = update.fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return Ok(Advanced::Lost);
        };
        let confirmed = decode(OrderRow::from_row(&row)?)?;
        let order = &confirmed.order;
        let tracking = order.tracking_number.clone().unwrap_or_default();
        outbox::insert(&mut tx, &events::confirmed(order, &tracking)).await?;
        tx.commit().await?;
        Ok(Advanced::Confirmed(Box::new(confirmed)))
    }

    /// Moves the order from `from` to `Compensating` with the failure's reason.
    pub async fn start_compensating(
        &self,
        id: &str,
        runner: &str,
        from: Step,
        failure: Failure<'_>,
    ) -> Result<bool, sqlx::Error> {
        let now = now_rfc3339();
        let errors = (!failure.errors.is_empty())
            .then(|| serde_json::to_string(failure.errors).expect("field errors serialise"));
        let updated = sqlx::query(
            "UPDATE orders SET step = $1, updated_at = $2, reason_code = $3, reason = $4, \
             reason_errors = $5, payment_check = $6, history = history || $7 \
             WHERE id = $8 AND step = $9 AND runner = $10",
        )
        .bind(Step::Compensating.as_str())
        .bind(&now)
        .bind(failure.reason_code)
        .bind(failure.reason)
        .bind(errors)
        .bind(i64::from(failure.payment_check))
        .bind(history_entry(Step::Compensating, &now))
        .bind(id)
        .bind(from.as_str())
        .bind(runner)
        .execute(self.db.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Ends a compensated order: FAILED, with `order.failed` in the same transaction. Returns the
    /// order as stored, or `None` when it is no longer compensating or no longer this runner's
    /// (nothing written).
    pub async fn finish_failed(
        &self,
        id: &str,
        runner: &str,
    ) -> Result<Option<SagaState>, sqlx::Error> {
        let now = now_rfc3339();
        let mut tx = self.db.begin().await?;
        let row: Option<OrderRow> = sqlx::query_as(&format!(
            "UPDATE orders SET step = $1, status = $2, updated_at = $3, history = history || $4 \
             WHERE id = $5 AND step = $6 AND runner = $7 RETURNING {ORDER_COLUMNS}"
        ))
        .bind(Step::Failed.as_str())
        .bind(OrderStatus::Failed.as_str())
        .bind(&now)
        .bind(history_entry(Step::Failed, &now))
        .bind(id)
        .bind(Step::Compensating.as_str())
        .bind(runner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let failed = decode(row)?;
        let order = &failed.order;
        let code = order.reason_code.clone().unwrap_or_default();
        let reason = order.reason.clone().unwrap_or_default();
        outbox::insert(&mut tx, &events::failed(order, &code, &reason)).await?;
        tx.commit().await?;
        Ok(Some(failed))
    }

    /// Orders left unfinished and untouched since `stale_before`: each one this call manages to
    /// take over is handed to `runner`. Returns their ids.
    pub async fn take_over_stale(
        &self,
        stale_before: &str,
        runner: &str,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let candidates: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, updated_at FROM orders WHERE status = $1 AND updated_at < $2 \
             ORDER BY updated_at LIMIT $3",
        )
        .bind(OrderStatus::Pending.as_str())
        .bind(stale_before)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        let mut taken = Vec::new();
        for (id, updated_at) in candidates {
            // Conditional on the row being exactly as read: another resumer (or the runner
            // waking up) wins any race.
            let updated = sqlx::query(
                "UPDATE orders SET runner = $1, updated_at = $2 \
                 WHERE id = $3 AND status = $4 AND updated_at = $5",
            )
            .bind(runner)
            .bind(now_rfc3339())
            .bind(&id)
            .bind(OrderStatus::Pending.as_str())
            .bind(&updated_at)
            .execute(self.db.pool())
            .await?;
            if updated.rows_affected() == 1 {
                taken.push(id);
            }
        }
        Ok(taken)
    }
}

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("the orders table holds an unreadable {what}").into())
}

fn json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(text).map_err(|_| corrupt(what))
}

fn decode(row: OrderRow) -> Result<SagaState, sqlx::Error> {
    let step = Step::parse(&row.step).ok_or_else(|| corrupt("step"))?;
    let currency = row.currency;
    Ok(SagaState {
        order: Order {
            id: row.id,
            user_id: row.user_id,
            status: step.status(),
            step,
            items: json(&row.items, "items list")?,
            subtotal: Money::new(row.subtotal, &currency),
            shipping_cost: row.shipping_cost.map(|c| Money::new(c, &currency)),
            total: Money::new(row.subtotal + row.shipping_cost.unwrap_or(0), &currency),
            shipping_address: json(&row.shipping_address, "address")?,
            currency,
            card: CardSummary {
                brand: row.card_brand,
                last4: row.card_last4,
            },
            tracking_number: row.tracking_number,
            reason_code: row.reason_code,
            reason: row.reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
            history: parse_history(&row.history),
        },
        request_hash: row.request_hash,
        runner: row.runner,
        quote: row
            .shipping_quote
            .as_deref()
            .map(|q| json(q, "quote"))
            .transpose()?,
        charge_id: row.charge_id,
        payment_check: row.payment_check != 0,
        reason_errors: row
            .reason_errors
            .as_deref()
            .map(|e| json(e, "reason"))
            .transpose()?
            .unwrap_or_default(),
    })
}
