//! Sending recorded messages: a pluggable [`Sender`], and [`send_due`], which the service's
//! dispatcher task runs every interval.
//!
//! A message is recorded first (in the event consumer's transaction) and sent afterwards, so a
//! sender that fails or a process that dies mid-send loses nothing: the message stays `pending`
//! and is tried again with a growing delay, up to [`MAX_ATTEMPTS`], then marked `failed`.
//! Delivery is at least once: a process that dies after sending a batch and before recording it
//! sends that batch again once the lease has passed.

use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};

use crate::storage::{Due, Store};

/// Attempts before a message is marked `failed`.
pub const MAX_ATTEMPTS: i64 = 5;
/// How long a dispatcher holds a message it is sending before another may take it.
const LEASE: Duration = Duration::from_secs(60);
/// Messages taken per pass.
const BATCH: i64 = 50;

/// What a sender did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed over for delivery.
    Sent,
    /// Deliberately not sent (the `none` sender).
    Skipped,
}

impl Delivery {
    fn state(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Skipped => "skipped",
        }
    }
}

/// Delivers one message (an e-mail gateway, an SMS provider, a log line).
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    async fn send(&self, message: &Due) -> anyhow::Result<Delivery>;
}

/// One structured log line per message: enough to follow it, not its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSender;

#[async_trait]
impl Sender for LogSender {
    async fn send(&self, message: &Due) -> anyhow::Result<Delivery> {
        tracing::info!(
            notification_id = %message.id,
            event_type = %message.event_type,
            channel = %message.channel,
            user_id = message.user_id.as_deref().unwrap_or("-"),
            to = %mask_address(&message.address),
            subject = %message.subject,
            "notification sent (log sender)"
        );
        Ok(Delivery::Sent)
    }
}

/// Sends nothing; messages are recorded and marked `skipped`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSender;

#[async_trait]
impl Sender for NoSender {
    async fn send(&self, _message: &Due) -> anyhow::Result<Delivery> {
        Ok(Delivery::Skipped)
    }
}

/// `ann.lee@example.com` → `a***@example.com`: the log shows the domain, not the person.
pub fn mask_address(address: &str) -> String {
    address
        .split(", ")
        .map(|one| match one.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The delay before attempt `attempts + 1` after a failure: 2, 4, 8, 16 s ... up to 256 s. Not
/// jittered: a message is retried by the one dispatcher holding its lease, not by a crowd.
fn backoff(attempts: i64) -> Duration {
    let mut schedule = ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(256))
        .with_factor(2.0)
        .without_max_times()
        .build();
    let nth = attempts.clamp(1, 8) - 1;
    schedule
        .nth(nth as usize)
        .expect("a schedule without a maximum never ends")
}

/// Sends every due message once, a batch at a time until none is left. Returns how many were
/// handed to the sender (sent or skipped).
///
/// A batch is taken in one statement and its deliveries recorded in one: under load a pass
/// handles what arrived since the last, and the database sees two writes per batch, not two
/// per message.
pub async fn send_due(store: &Store, sender: &dyn Sender) -> Result<usize, sqlx::Error> {
    let mut delivered = 0;
    loop {
        let batch = store.claim_due(BATCH, LEASE).await?;
        let (mut sent, mut skipped) = (Vec::new(), Vec::new());
        for due in &batch {
            match sender.send(due).await {
                Ok(Delivery::Sent) => sent.push(due.id.as_str()),
                Ok(Delivery::Skipped) => skipped.push(due.id.as_str()),
                Err(e) => {
                    let retry_in = (due.attempts < MAX_ATTEMPTS).then(|| backoff(due.attempts));
                    tracing::warn!(notification_id = %due.id, attempts = due.attempts, error = %e, gives_up = retry_in.is_none(), "sending a notification failed");
                    store
                        .send_failed(&due.id, &format!("{e:#}"), retry_in)
                        .await?;
                }
            }
        }
        store.finish(&sent, Delivery::Sent.state()).await?;
        store.finish(&skipped, Delivery::Skipped.state()).await?;
        delivered += sent.len() + skipped.len();
        if (batch.len() as i64) < BATCH {
            return Ok(delivered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_masked_in_logs() {
        assert_eq!(mask_address("ann.lee@example.com"), "a***@example.com");
        assert_eq!(mask_address("a@x.org, bob@y.org"), "a***@x.org, b***@y.org");
        assert_eq!(mask_address("nonsense"), "***");
    }

    #[test]
    fn the_backoff_grows_and_is_bounded() {
        assert_eq!(backoff(0), Duration::from_secs(2));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(16));
        assert_eq!(backoff(7), Duration::from_secs(128));
        assert_eq!(backoff(8), Duration::from_secs(256));
        assert_eq!(backoff(40), Duration::from_secs(256));
    }
}
