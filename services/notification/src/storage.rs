//! The notification tables. Portable SQL over the kit's database.

use std::time::Duration;

use shop_kit::Database;
use shop_kit::db::{Tx, now_rfc3339};
use shop_kit::page::{self, Cursor};
use uuid::Uuid;

use crate::domain::{Audience, Channel, Message, Notification, Recipient};

const AUDIENCE_USER: &str = "user";
const AUDIENCE_ADMINS: &str = "admins";

/// The time `after` from now, in the kit's fixed-width format (so text order is time order).
pub fn rfc3339_in(after: Duration) -> String {
    shop_kit::db::rfc3339(time::OffsetDateTime::now_utc() + after)
}

/// Whose messages a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whose {
    User(Uuid),
    Admins,
}

pub struct Page {
    pub items: Vec<Notification>,
    pub next: Option<Cursor>,
}

/// A message taken to be sent; `attempts` counts this attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Due {
    pub id: String,
    pub event_type: String,
    pub user_id: Option<String>,
    pub channel: String,
    pub address: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
    pub next_attempt_at: String,
}

#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: String,
    event_type: String,
    user_id: Option<String>,
    channel: String,
    address: Option<String>,
    subject: String,
    body: String,
    created_at: String,
    send_state: String,
    sent_at: Option<String>,
}

impl From<NotificationRow> for Notification {
    fn from(r: NotificationRow) -> Self {
        Self {
            id: r.id,
            event_type: r.event_type,
            user_id: r.user_id,
            channel: Channel::parse(&r.channel),
            address: r.address,
            subject: r.subject,
            body: r.body,
            created_at: r.created_at,
            send_state: r.send_state,
            sent_at: r.sent_at,
        }
    }
}

const COLUMNS: &str =
    "id, event_type, user_id, channel, address, subject, body, created_at, send_state, sent_at";

/// Reads and writes inside an event consumer's transaction.
pub struct InTx;

impl InTx {
    pub async fn recipient(tx: &mut Tx, user_id: Uuid) -> Result<Option<Recipient>, sqlx::Error> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT email, name FROM recipients WHERE user_id = $1")
                .bind(user_id.to_string())
                .fetch_optional(&mut **tx)
                .await?;
        Ok(row.map(|(email, name)| Recipient { email, name }))
    }

    /// Adds or updates the address book entry, and addresses the user's messages that were
    /// recorded before it was known.
    pub async fn remember(
        tx: &mut Tx,
        user_id: Uuid,
        recipient: &Recipient,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO recipients (user_id, email, name, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name, \
             updated_at = excluded.updated_at",
        )
        .bind(user_id.to_string())
        .bind(&recipient.email)
        .bind(&recipient.name)
        .bind(now_rfc3339())
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE notifications SET address = $1 WHERE user_id = $2 AND address IS NULL \
             AND send_state = 'pending'",
        )
        .bind(&recipient.email)
        .bind(user_id.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Records a message for `event_id`, pending; a second message for the same event is not
    /// recorded. Returns whether it was.
    pub async fn record(
        tx: &mut Tx,
        event_id: Uuid,
        event_type: &str,
        message: &Message,
        address: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let (audience, user_id) = match &message.audience {
            Audience::User(id) => (AUDIENCE_USER, Some(id.to_string())),
            Audience::Admins => (AUDIENCE_ADMINS, None),
        };
        let now = now_rfc3339();
        let inserted = sqlx::query(
            "INSERT INTO notifications (id, event_id, event_type, user_id, audience, channel, \
             address, subject, body, created_at, send_state, attempts, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 0, $11) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(shop_kit::context::new_id().to_string())
        .bind(event_id.to_string())
        .bind(event_type)
        .bind(user_id)
        .bind(audience)
        .bind(message.channel.as_str())
        .bind(address)
        .bind(&message.subject)
        .bind(&message.body)
        .bind(&now)
        .bind(&now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}

#[derive(Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// One page of messages, newest first.
    pub async fn list(
        &self,
        whose: &Whose,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Page, sqlx::Error> {
        let mut sql = format!("SELECT {COLUMNS} FROM notifications WHERE ");
        sql += match whose {
            Whose::User(_) => "user_id = $1",
            Whose::Admins => "audience = $1",
        };
        if after.is_some() {
            sql += " AND (created_at < $2 OR (created_at = $3 AND id < $4))";
            sql += " ORDER BY created_at DESC, id DESC LIMIT $5";
        } else {
            sql += " ORDER BY created_at DESC, id DESC LIMIT $2";
        }
        let mut query = sqlx::query_as::<_, NotificationRow>(&sql).bind(match whose {
            Whose::User(id) => id.to_string(),
            Whose::Admins => AUDIENCE_ADMINS.to_owned(),
        });
        if let Some(after) = after {
            query = query.bind(&after.key).bind(&after.key).bind(&after.id);
        }
        let rows = query.bind(limit + 1).fetch_all(self.db.reader()).await?;
        let (rows, next) = page::split(rows, limit, |last| Cursor::new(&last.created_at, &last.id));
        Ok(Page {
            items: rows.into_iter().map(Notification::from).collect(),
            next,
        })
    }

    /// Takes up to `limit` messages whose time to be sent has come (oldest first) for `lease`,
    /// in one statement, and returns them with `attempts` counting this one. Only one
    /// dispatcher wins a message: the update re-checks that it is still pending and due, which a
    /// message another dispatcher took is not (its time moved to the end of that lease). If this
    /// one dies while sending, the message is due again after the lease.
    pub async fn claim_due(&self, limit: i64, lease: Duration) -> Result<Vec<Due>, sqlx::Error> {
        let now = now_rfc3339();
        let mut taken: Vec<Due> = sqlx::query_as(
            "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = $1 \
             WHERE id IN (SELECT id FROM notifications \
                 WHERE send_state = 'pending' AND address IS NOT NULL AND next_attempt_at <= $2 \
                 ORDER BY next_attempt_at, id LIMIT $3) \
             AND send_state = 'pending' AND next_attempt_at <= $2 \
             RETURNING id, event_type, user_id, channel, address, subject, body, attempts, \
             next_attempt_at",
        )
        .bind(rfc3339_in(lease))
        .bind(&now)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        // RETURNING keeps no order; ids are time-ordered (UUIDv7), so this is oldest first.
        taken.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Ok(taken)
    }

    /// The sender took these (`sent`) or was told not to send them (`skipped`): one statement
    /// for the lot.
    pub async fn finish(&self, ids: &[&str], state: &str) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE notifications SET send_state = $1, sent_at = $2, last_error = NULL \
             WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut update = sqlx::query(&sql).bind(state).bind(now_rfc3339());
        for id in ids {
            update = update.bind(*id);
        }
        update.execute(self.db.pool()).await.map(|_| ())
    }

    /// A send failed: try again after `retry_in`, or give up (`failed`) when `retry_in` is None.
    pub async fn send_failed(
        &self,
        id: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), sqlx::Error> {
        let (state, next) = match retry_in {
            Some(delay) => ("pending", rfc3339_in(delay)),
            None => ("failed", now_rfc3339()),
        };
        sqlx::query(
            "UPDATE notifications SET send_state = $1, next_attempt_at = $2, last_error = $3 \
             WHERE id = $4",
        )
        .bind(state)
        .bind(next)
        .bind(error.chars().take(500).collect::<String>())
        .bind(id)
        .execute(self.db.pool())
        .await
        .map(|_| ())
    }
}
