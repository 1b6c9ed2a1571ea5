//! The payment service's tables. Portable SQL over the kit's database.
//!
//! Idempotency is an insert-first claim: the first request inserts its key (in progress) and owns
//! it through a claim token; its effect (charge or refund, and the transaction record) and its
//! response are written in one transaction that starts with a write (so SQLite takes its write
//! lock first) and ends by marking the key done, but only if the claim is still this request's.
//! A duplicate finds the key and polls until the response is there.

use std::time::Duration;

use shop_kit::db::Tx;
use shop_kit::{Database, Money, now_rfc3339};
use time::OffsetDateTime;

use crate::domain::{CardSummary, ChargeDetails, ChargeStatus, Transaction};

/// How long a duplicate waits for the first request's response before answering 409.
pub const CLAIM_WAIT: Duration = Duration::from_secs(10);
/// How often a duplicate looks again.
const CLAIM_POLL: Duration = Duration::from_millis(20);
/// A claim this old was left by a crashed request: the next duplicate takes it over. Safe,
/// because the effect and "done" commit together, conditional on the claim token.
pub const STALE_CLAIM: Duration = Duration::from_secs(30);

/// An idempotency key as stored; the response is there once the status is `done`.
#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: String,
    status: String,
    claim_token: String,
    claimed_at: String,
    response_status: Option<i64>,
    response_body: Option<String>,
}

/// A charge as stored, its card summarised.
#[derive(sqlx::FromRow)]
struct ChargeRow {
    id: String,
    order_id: String,
    status: String,
    failure_code: Option<String>,
    amount: i64,
    currency: String,
    refunded: i64,
    card_brand: String,
    card_last4: String,
    created_at: String,
}

/// What a refund that did not fit is checked against.
#[derive(sqlx::FromRow)]
struct BalanceRow {
    status: String,
    currency: String,
    amount: i64,
    refunded: i64,
}

#[derive(sqlx::FromRow)]
struct TransactionRow {
    id: String,
    kind: String,
    amount: i64,
    currency: String,
    outcome: String,
    created_at: String,
}

#[derive(Clone)]
pub struct Store {
    db: Database,
}

/// A response as first sent: status and the exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

pub enum Claim {
    /// This request owns the key: do the work, then finish with this token.
    Owned(String),
    /// The key's first request is done: answer what it answered.
    Replay(StoredResponse),
    /// The key was used for another request.
    Mismatch,
    /// The first request is still running after [`CLAIM_WAIT`].
    InProgress,
}

/// A charge to record (the processor has already answered).
pub struct NewCharge<'a> {
    pub charge_id: &'a str,
    pub order_id: &'a str,
    pub status: ChargeStatus,
    pub failure_code: Option<&'a str>,
    pub amount: &'a Money,
    pub card: &'a CardSummary,
    pub created_at: &'a str,
}

pub enum RefundOutcome {
    /// Recorded: (refund id, refunded total, time).
    Refunded(String, i64, String),
    NotFound,
    /// The charge failed: nothing to refund.
    ChargeFailed,
    CurrencyMismatch(String),
    /// More than what is left: (charged, already refunded).
    Exceeds(i64, i64),
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Deletes the idempotency keys claimed more than `retention` ago, with the answers they
    /// replay (an unanswered one that old was abandoned long since: a stale claim is taken
    /// over after seconds). A request that uses such a key again is a new request. Returns how
    /// many were deleted.
    pub async fn delete_expired_keys(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let before = shop_kit::db::rfc3339(OffsetDateTime::now_utc() - retention);
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE claimed_at < $1")
            .bind(before)
            .execute(self.db.pool())
            .await?;
        Ok(deleted.rows_affected())
    }

    /// Claims `key` in `scope` for a request with fingerprint `hash`, or waits for the request
    /// that claimed it first.
    pub async fn claim(&self, scope: &str, key: &str, hash: &str) -> Result<Claim, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        loop {
            let token = uuid::Uuid::new_v4().to_string();
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, claim_token, claimed_at) \
                 VALUES ($1, $2, $3, 'in_progress', $4, $5) ON CONFLICT (scope, idem_key) DO NOTHING",
            )
            .bind(scope)
            .bind(key)
            .bind(hash)
            .bind(&token)
            .bind(now_rfc3339())
            .execute(self.db.pool())
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(Claim::Owned(token));
            }
            let row: Option<KeyRow> = sqlx::query_as(
                    "SELECT request_hash, status, claim_token, claimed_at, response_status, response_body \
                     FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
                )
                .bind(scope)
                .bind(key)
                .fetch_optional(self.db.pool())
                .await?;
            // Gone: its owner failed and gave it up; try to claim it again.
            if let Some(stored) = row {
                if stored.request_hash != hash {
                    return Ok(Claim::Mismatch);
                }
                if stored.status == "done" {
                    let (Some(status), Some(body)) = (stored.response_status, stored.response_body)
                    else {
                        return Err(sqlx::Error::Decode("a done key without a response".into()));
                    };
                    return Ok(Claim::Replay(StoredResponse {
                        status: status as u16,
                        body,
                    }));
                }
                if stored.claimed_at < stale_before() {
                    let token = uuid::Uuid::new_v4().to_string();
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET claim_token = $1, claimed_at = $2 \
                         WHERE scope = $3 AND idem_key = $4 AND status = 'in_progress' AND claim_token = $5",
                    )
                    .bind(&token)
                    .bind(now_rfc3339())
                    .bind(scope)
                    .bind(key)
                    .bind(&stored.claim_token)
                    .execute(self.db.pool())
                    .await?;
                    if taken.rows_affected() == 1 {
                        tracing::warn!(scope, "took over an idempotency key left in progress");
                        return Ok(Claim::Owned(token));
                    }
                    continue;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Claim::InProgress);
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }

    /// Gives a claim up after an unexpected failure, so a retry can run the request again.
    pub async fn abandon(&self, scope: &str, key: &str, token: &str) {
        let result = sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 \
             AND status = 'in_progress' AND claim_token = $3",
        )
        .bind(scope)
        .bind(key)
        .bind(token)
        .execute(self.db.pool())
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not give up an idempotency key; it is taken over when stale");
        }
    }

    /// Marks the claim done with its response, in the caller's transaction. False when the claim
    /// is no longer this request's (taken over as stale): the caller must roll back.
    async fn finish(
        tx: &mut Tx,
        scope: &str,
        key: &str,
        token: &str,
        response: &StoredResponse,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET status = 'done', response_status = $1, response_body = $2 \
             WHERE scope = $3 AND idem_key = $4 AND status = 'in_progress' AND claim_token = $5",
        )
        .bind(i64::from(response.status))
        .bind(&response.body)
        .bind(scope)
        .bind(key)
        .bind(token)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a charge attempt and its transaction, and completes the key with `response`.
    /// False when the claim was lost (nothing recorded).
    pub async fn record_charge(
        &self,
        (scope, key, token): (&str, &str, &str),
        charge: NewCharge<'_>,
        outcome: &str,
        response: &StoredResponse,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO charges (id, order_id, status, failure_code, amount, currency, refunded, \
             card_brand, card_last4, created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9)",
        )
        .bind(charge.charge_id)
        .bind(charge.order_id)
        .bind(charge.status.as_str())
        .bind(charge.failure_code)
        .bind(charge.amount.amount)
        .bind(&charge.amount.currency)
        .bind(&charge.card.brand)
        .bind(&charge.card.last4)
        .bind(charge.created_at)
        .execute(&mut *tx)
        .await?;
        Self::transaction(
            &mut tx,
            &uuid::Uuid::now_v7().to_string(),
            charge.charge_id,
            "charge",
            charge.amount,
            outcome,
            charge.created_at,
        )
        .await?;
        if !Self::finish(&mut tx, scope, key, token, response).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Refunds `amount` of a charge: one conditional UPDATE, so concurrent refunds queue on the
    /// charge's row and together never exceed it. `respond` turns the outcome into the response
    /// stored with the key in the same transaction. `None` when the claim was lost.
    pub async fn refund(
        &self,
        (scope, key, token): (&str, &str, &str),
        charge_id: &str,
        amount: &Money,
        respond: impl FnOnce(&RefundOutcome) -> StoredResponse,
    ) -> Result<Option<(RefundOutcome, StoredResponse)>, sqlx::Error> {
        let at = now_rfc3339();
        let mut tx = self.db.begin().await?;
        // The first statement writes: it takes the charge's row lock (PostgreSQL) or the write
        // lock (SQLite) before anything is read.
        let refunded: Option<i64> = sqlx::query_scalar(
            "UPDATE charges SET refunded = refunded + $1 \
             WHERE id = $2 AND status = 'succeeded' AND currency = $3 AND refunded + $4 <= amount \
             RETURNING refunded",
        )
        .bind(amount.amount)
        .bind(charge_id)
        .bind(&amount.currency)
        .bind(amount.amount)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match refunded {
            Some(total) => {
                let refund_id = uuid::Uuid::now_v7().to_string();
                Self::transaction(
                    &mut tx,
                    &refund_id,
                    charge_id,
                    "refund",
                    amount,
                    "succeeded",
                    &at,
                )
                .await?;
                RefundOutcome::Refunded(refund_id, total, at)
            }
            None => {
                let row: Option<BalanceRow> = sqlx::query_as(
                    "SELECT status, currency, amount, refunded FROM charges WHERE id = $1",
                )
                .bind(charge_id)
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    None => RefundOutcome::NotFound,
                    Some(charge) if charge.status != ChargeStatus::Succeeded.as_str() => {
                        RefundOutcome::ChargeFailed
                    }
                    Some(charge) if charge.currency != amount.currency => {
                        RefundOutcome::CurrencyMismatch(charge.currency)
                    }
                    Some(charge) => RefundOutcome::Exceeds(charge.amount, charge.refunded),
                }
            }
        };
        let response = respond(&outcome);
        if !Self::finish(&mut tx, scope, key, token, &response).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some((outcome, response)))
    }

    async fn transaction(
        tx: &mut Tx,
        id: &str,
        charge_id: &str,
        kind: &str,
        amount: &Money,
        outcome: &str,
        at: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO transactions (id, charge_id, kind, amount, currency, outcome, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(charge_id)
        .bind(kind)
        .bind(amount.amount)
        .bind(&amount.currency)
        .bind(outcome)
        .bind(at)
        .execute(&mut **tx)
        .await
        .map(|_| ())
    }

    pub async fn charge(&self, charge_id: &str) -> Result<Option<ChargeDetails>, sqlx::Error> {
        Ok(self
            .charges_where("id = $1", charge_id)
            .await?
            .into_iter()
            .next())
    }

    pub async fn charges_of_order(
        &self,
        order_id: &str,
    ) -> Result<Vec<ChargeDetails>, sqlx::Error> {
        self.charges_where("order_id = $1", order_id).await
    }

    async fn charges_where(
        &self,
        condition: &str,
        value: &str,
    ) -> Result<Vec<ChargeDetails>, sqlx::Error> {
        let rows: Vec<ChargeRow> = sqlx::query_as(&format!(
            "SELECT id, order_id, status, failure_code, amount, currency, refunded, card_brand, \
             card_last4, created_at FROM charges WHERE {condition} ORDER BY created_at, id"
        ))
        .bind(value)
        .fetch_all(self.db.reader())
        .await?;
        let mut charges = Vec::with_capacity(rows.len());
        for row in rows {
            let transactions: Vec<TransactionRow> = sqlx::query_as(
                "SELECT id, kind, amount, currency, outcome, created_at FROM transactions \
                 WHERE charge_id = $1 ORDER BY created_at, id",
            )
            .bind(&row.id)
            .fetch_all(self.db.reader())
            .await?;
            let status = row.status;
            charges.push(ChargeDetails {
                status: ChargeStatus::parse(&status).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown charge status {status:?}").into())
                })?,
                charge_id: row.id,
                order_id: row.order_id,
                failure_code: row.failure_code,
                amount: Money {
                    amount: row.amount,
                    currency: row.currency,
                },
                refunded: row.refunded,
                card: CardSummary {
                    brand: row.card_brand,
                    last4: row.card_last4,
                },
                created_at: row.created_at,
                transactions: transactions
                    .into_iter()
                    .map(|transaction| Transaction {
                        transaction_id: transaction.id,
                        kind: transaction.kind,
                        amount: Money {
                            amount: transaction.amount,
                            currency: transaction.currency,
                        },
                        outcome: transaction.outcome,
                        created_at: transaction.created_at,
                    })
                    .collect(),
            });
        }
        Ok(charges)
    }
}

/// Claims taken before this time are stale.
fn stale_before() -> String {
    shop_kit::db::rfc3339(OffsetDateTime::now_utc() - STALE_CLAIM)
}
