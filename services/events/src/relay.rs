//! The relay: outbox rows to the bus, oldest first, marked published only once the bus has them.
//!
//! - JetStream: each row is published on `shop.events.<type>` with `Nats-Msg-Id: <event id>`
//!   and marked once its ack arrives. Two relays on one database may publish a row twice;
//!   JetStream drops the copy within its duplicate window and consumers dedupe by id after it.
//! - Local bus: one delivery loop per peer; a row is marked once every peer has taken it
//!   (`outbox_deliveries` remembers who has, across restarts). A peer that is down waits with
//!   backoff without holding up the others.
//!
//! While the bus is down the relay retries with capped exponential backoff, warning when the
//! outage starts and when it ends, not on every attempt. Published rows are deleted after the
//! retention period.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shop_kit::db::{Database, now_rfc3339, rfc3339};
use shop_kit::{Metrics, Tasks, Upstream, UpstreamOptions};
use tokio::sync::Notify;

use crate::bus::{EventOptions, Kind, Peer};
use crate::local::{self, Delivery};
use crate::nats;
use crate::outbox::OutboxRow;
use crate::schema::install_tables;

/// The relay of one producing service: its tasks and what wakes them.
pub struct Relay {
    /// The polling loops; give them to the service (`service.tasks.extend(relay.tasks)`) so
    /// they run while it does. Dropped, they stop.
    pub tasks: Tasks,
    /// Wakes the loops now instead of at their next poll.
    pub waker: Waker,
}

#[derive(Clone, Default)]
struct RelayMetrics {
    published: Counter,
    failures: Counter,
    pending: Gauge,
    oldest_pending_age: Gauge<f64, AtomicU64>,
}

impl RelayMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = Self::default();
        metrics.register(
            "events_published",
            "Events the relay handed to the bus (on the local bus: deliveries, one per consumer)",
            this.published.clone(),
        );
        metrics.register(
            "events_relay_failures",
            "Failed relay rounds (bus or peer unreachable)",
            this.failures.clone(),
        );
        metrics.register(
            "outbox_pending_events",
            "Outbox rows not yet published",
            this.pending.clone(),
        );
        metrics.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox row not yet published (0 when none is): how far the relay lags",
            this.oldest_pending_age.clone(),
        );
        this
    }
}

impl Relay {
    /// Starts relaying `db`'s outbox to the runtime's bus (creating the event tables if
    /// needed), counting in its metrics; on the local bus it calls the peers as the runtime's
    /// service.
    pub async fn start(runtime: &crate::Runtime, db: Database) -> Result<Self> {
        let (bus, metrics, caller) = (&runtime.bus, &runtime.metrics, &runtime.identity);
        install_tables(&db)
            .await
            .context("creating the event tables")?;
        let counters = RelayMetrics::register(metrics);
        let options = bus.options.clone();
        let mut tasks = Tasks::new();
        tasks.spawn(housekeeping(db.clone(), options.clone(), counters.clone()));
        let mut wakers = Vec::new();
        match &*bus.kind {
            Kind::Nats(jetstream) => {
                let wake = Arc::new(Notify::new());
                wakers.push(wake.clone());
                tasks.spawn(relay_to_nats(
                    jetstream.clone(),
                    db,
                    options,
                    counters,
                    wake,
                ));
            }
            Kind::Local(peers) => {
                let names: Arc<[String]> = peers.iter().map(|p| p.name.clone()).collect();
                // Not reporting to `shop_upstream_breaker_*`: a peer is also the service's
                // upstream by the same name (the order service calls the cart), and one series
                // would mix two breakers. The relay's health shows in its failures and lag.
                let upstream_options = UpstreamOptions::from_env()
                    .unwrap_or_default()
                    .calling_as(caller);
                for peer in peers {
                    let wake = Arc::new(Notify::new());
                    wakers.push(wake.clone());
                    let upstream = Upstream::new(&peer.name, &peer.url, &upstream_options)?;
                    tasks.spawn(relay_to_peer(
                        peer.clone(),
                        upstream,
                        names.clone(),
                        db.clone(),
                        options.clone(),
                        counters.clone(),
                        wake,
                    ));
                }
            }
            Kind::None => {
                tracing::warn!("no event bus configured: events stay in the outbox until one is");
            }
        }
        Ok(Self {
            tasks,
            waker: Waker(wakers),
        })
    }
}

/// Wakes a relay's loops now instead of at their next poll: call it after committing an event
/// when latency matters (without it the poll interval bounds the delay). Cheap to clone; the
/// default wakes nothing.
#[derive(Debug, Clone, Default)]
pub struct Waker(Vec<Arc<Notify>>);

impl Waker {
    pub fn wake(&self) {
        for waker in &self.0 {
            waker.notify_one();
        }
    }
}

const SELECT_COLUMNS: &str =
    "o.id, o.type, o.source, o.time, o.payload, o.traceparent, o.tracestate";

async fn unpublished(db: &Database, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {SELECT_COLUMNS} FROM outbox o WHERE o.published_at IS NULL ORDER BY o.time, o.id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.iter().map(OutboxRow::from_row).collect()
}

async fn mark_published(db: &Database, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET published_at = $1 WHERE id = $2 AND published_at IS NULL")
        .bind(now_rfc3339())
        .bind(id)
        .execute(db.pool())
        .await
        .map(|_| ())
}

/// Waits for a wake-up or the poll interval, whichever comes first.
async fn idle(wake: &Notify, options: &EventOptions) {
    let _ = tokio::time::timeout(options.poll_interval, wake.notified()).await;
}

/// Logs an outage once when it starts (and every 20 failures after), and once when it ends.
#[derive(Default)]
struct Outage {
    failures: u32,
}

impl Outage {
    fn failed(&mut self, what: &str, error: &anyhow::Error, counters: &RelayMetrics) -> u32 {
        self.failures += 1;
        counters.failures.inc();
        if self.failures == 1 || self.failures.is_multiple_of(20) {
            tracing::warn!(target: "shop::events", failures = self.failures, error = %format!("{error:#}"), "{what}: retrying with backoff");
        } else {
            tracing::debug!(target: "shop::events", failures = self.failures, error = %format!("{error:#}"), "{what}: still failing");
        }
        self.failures
    }

    fn succeeded(&mut self, what: &str) {
        if self.failures > 0 {
            tracing::info!(target: "shop::events", failures = self.failures, "{what}: working again");
            self.failures = 0;
        }
    }
}

async fn relay_to_nats(
    jetstream: async_nats::jetstream::Context,
    db: Database,
    options: EventOptions,
    counters: RelayMetrics,
    wake: Arc<Notify>,
) {
    let mut outage = Outage::default();
    let mut streams_ready = false;
    loop {
        let round = async {
            if !streams_ready {
                nats::ensure_streams(&jetstream).await?;
                streams_ready = true;
            }
            publish_batch(&jetstream, &db, &options, &counters).await
        }
        .await;
        match round {
            Ok(count) => {
                outage.succeeded("relay to NATS");
                if (count as i64) < options.batch_size {
                    idle(&wake, &options).await;
                }
            }
            Err(error) => {
                streams_ready = false;
                let failures = outage.failed("relay to NATS", &error, &counters);
                tokio::time::sleep(options.backoff(failures)).await;
            }
        }
    }
}

/// Publishes one batch, pipelined: every publish is sent, then the acks are awaited in order and
/// each acked row is marked. Returns how many rows were read.
async fn publish_batch(
    jetstream: &async_nats::jetstream::Context,
    db: &Database,
    options: &EventOptions,
    counters: &RelayMetrics,
) -> Result<usize> {
    let rows = unpublished(db, options.batch_size)
        .await
        .context("reading the outbox")?;
    let mut acks = Vec::with_capacity(rows.len());
    for row in &rows {
        let ack = jetstream
            .send_publish(
                nats::event_subject(&row.event.kind),
                nats::event_message(row),
            )
            .await
            .context("publishing to NATS")?;
        acks.push((row, ack));
    }
    for (row, ack) in acks {
        ack.await.context("waiting for NATS to confirm an event")?;
        mark_published(db, &row.id)
            .await
            .context("marking an event published")?;
        counters.published.inc();
    }
    Ok(rows.len())
}

async fn relay_to_peer(
    peer: Peer,
    upstream: Upstream,
    all_peers: Arc<[String]>,
    db: Database,
    options: EventOptions,
    counters: RelayMetrics,
    wake: Arc<Notify>,
) {
    let what = format!("delivering events to {}", peer.name);
    let mut outage = Outage::default();
    // Per event refused by this peer: attempts so far and when to try again. In memory: after a
    // restart an event starts over, which at most repeats `max_deliveries` attempts.
    let mut refused: HashMap<String, (u32, Instant)> = HashMap::new();
    loop {
        match deliver_batch(
            &peer,
            &upstream,
            &all_peers,
            &db,
            &options,
            &counters,
            &mut refused,
        )
        .await
        {
            Ok(progressed) => {
                outage.succeeded(&what);
                if progressed < options.batch_size as usize {
                    idle(&wake, &options).await;
                }
            }
            Err(error) => {
                let failures = outage.failed(&what, &error, &counters);
                tokio::time::sleep(options.backoff(failures)).await;
            }
        }
    }
}

/// The unpublished rows `$1` (a peer) has not taken, oldest first, at most `$2`.
///
/// `OFFSET 0` keeps PostgreSQL from turning the `NOT EXISTS` into a hash anti join, which reads
/// every delivery recorded since the last cleanup on each poll (1.7 ms and growing under
/// `shop bench`, a third of a core for the order service's relays); as a subplan it probes the
/// primary key once per unpublished row (0.2 ms). SQLite probes the key either way.
fn pending_for_peer_sql() -> String {
    format!(
        "SELECT {SELECT_COLUMNS} FROM outbox o WHERE o.published_at IS NULL AND NOT EXISTS \
         (SELECT 1 FROM outbox_deliveries d WHERE d.event_id = o.id AND d.peer = $1 LIMIT 1 OFFSET 0) \
         ORDER BY o.time, o.id LIMIT $2"
    )
}

async fn deliver_batch(
    peer: &Peer,
    upstream: &Upstream,
    all_peers: &[String],
    db: &Database,
    options: &EventOptions,
    counters: &RelayMetrics,
    refused: &mut HashMap<String, (u32, Instant)>,
) -> Result<usize> {
    let rows = sqlx::query(&pending_for_peer_sql())
        .bind(&peer.name)
        .bind(options.batch_size)
        .fetch_all(db.reader())
        .await
        .context("reading the outbox")?;
    // Rows this peer has now: delivered, or of a type it does not read (sent nothing). Recorded
    // together after the batch, also when the delivery fails; a relay stopped before recording
    // sends those again, which the consumer's dedupe absorbs.
    let rows = rows
        .iter()
        .map(OutboxRow::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let mut taken = Vec::new();
    let mut send = Vec::new();
    let now = Instant::now();
    for row in &rows {
        if !peer.reads(&row.event.kind) {
            taken.push(row.id.clone());
            continue;
        }
        let attempt = match refused.get(&row.id) {
            Some((_, retry_at)) if *retry_at > now => continue,
            Some((attempts, _)) => attempts + 1,
            None => 1,
        };
        send.push((row, attempt));
    }
    let mut failed = None;
    if !send.is_empty() {
        // One request for the whole batch: under load a peer gets a few events per request, and
        // applies them in one transaction.
        match local::deliver(upstream, &peer.name, &send).await {
            Err(error) => failed = Some(error),
            Ok(delivery) => {
                for (row, attempt) in &send {
                    let refusal = match &delivery {
                        Delivery::Taken { retry } if !retry.contains(&row.id) => None,
                        Delivery::Taken { .. } => Some("the peer could not apply it now"),
                        Delivery::Refused(why) => Some(why.as_str()),
                    };
                    let Some(why) = refusal else {
                        refused.remove(&row.id);
                        counters.published.inc();
                        taken.push(row.id.clone());
                        continue;
                    };
                    // Warn when a peer starts refusing, not for every event it refuses.
                    if refused.is_empty() {
                        tracing::warn!(target: "shop::events", peer = %peer.name, event_id = %row.id, reason = %why, "a peer refused an event; retrying it with backoff");
                    } else {
                        tracing::debug!(target: "shop::events", peer = %peer.name, event_id = %row.id, attempt, reason = %why, "a peer refused an event again");
                    }
                    refused.insert(row.id.clone(), (*attempt, now + options.backoff(*attempt)));
                }
            }
        }
    }
    record_deliveries(db, &taken, &peer.name, all_peers).await?;
    if let Some(error) = failed {
        return Err(error);
    }
    // Forget refusals of rows that are gone (published through another replica, deleted).
    if refused.len() > 4 * options.batch_size as usize {
        refused.retain(|_, (_, retry_at)| *retry_at + options.retry_cap > Instant::now());
    }
    // Rows taken without a delivery count as progress: the next batch follows at once.
    Ok(taken.len())
}

/// Records that `peer` has the events `ids`, and marks each published once every peer has it:
/// two statements for the whole batch.
async fn record_deliveries(
    db: &Database,
    ids: &[String],
    peer: &str,
    all_peers: &[String],
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let now = now_rfc3339();
    // $1 the time, $2 the peer, then the ids.
    let values: Vec<String> = (0..ids.len())
        .map(|i| format!("(${}, $2, $1)", i + 3))
        .collect();
    let sql = format!(
        "INSERT INTO outbox_deliveries (event_id, peer, delivered_at) VALUES {} \
         ON CONFLICT (event_id, peer) DO NOTHING",
        values.join(", ")
    );
    let mut insert = sqlx::query(&sql).bind(&now).bind(peer);
    for id in ids {
        insert = insert.bind(id);
    }
    insert
        .execute(db.pool())
        .await
        .context("recording deliveries")?;
    // $1 the time, $2 the number of peers, then the ids, then the peers' names.
    let id_params: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
    let peer_params: Vec<String> = (0..all_peers.len())
        .map(|i| format!("${}", i + 3 + ids.len()))
        .collect();
    let sql = format!(
        "UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND id IN ({}) AND \
         (SELECT COUNT(*) FROM outbox_deliveries d WHERE d.event_id = outbox.id AND d.peer IN ({})) >= $2",
        id_params.join(", "),
        peer_params.join(", ")
    );
    let mut mark = sqlx::query(&sql).bind(now).bind(all_peers.len() as i64);
    for id in ids {
        mark = mark.bind(id);
    }
    for name in all_peers {
        mark = mark.bind(name.as_str());
    }
    mark.execute(db.pool())
        .await
        .context("marking events published")?;
    Ok(())
}

/// Deletes published rows past the retention, and keeps the pending gauges current.
async fn housekeeping(db: Database, options: EventOptions, counters: RelayMetrics) {
    let mut last_cleanup: Option<Instant> = None;
    let cleanup_every =
        (options.retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        if let Ok((count, oldest)) = sqlx::query_as::<_, (i64, Option<String>)>(
            "SELECT COUNT(*), MIN(time) FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(db.reader())
        .await
        {
            counters.pending.set(count);
            counters
                .oldest_pending_age
                .set(oldest.map_or(0.0, |at| age_seconds(&at)));
        }
        if last_cleanup.is_none_or(|at| at.elapsed() >= cleanup_every) {
            last_cleanup = Some(Instant::now());
            if let Err(error) = delete_published_before(&db, options.retention).await {
                tracing::debug!(target: "shop::events", error = %format!("{error:#}"), "outbox cleanup failed; next round retries");
            }
        }
        tokio::time::sleep(Duration::from_secs(5).min(cleanup_every)).await;
    }
}

/// Seconds since `at` (RFC 3339), 0 for a time in the future or one that does not parse.
fn age_seconds(at: &str) -> f64 {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map(|at| {
            (time::OffsetDateTime::now_utc() - at)
                .as_seconds_f64()
                .max(0.0)
        })
        .unwrap_or(0.0)
}

/// Deletes rows published longer than `retention` ago (and their delivery records), a batch
/// at a time: on SQLite a statement runs on the service's own thread (docs/decisions.md), and a
/// day's worth of rows in one statement would hold it and the one writer for as long.
pub async fn delete_published_before(db: &Database, retention: Duration) -> Result<u64> {
    let cutoff = rfc3339(time::OffsetDateTime::now_utc() - retention);
    let mut deleted = 0;
    loop {
        // The same oldest batch from both tables: the deliveries first, then their events
        // (whose count is the batch's).
        let mut batch = 0;
        for (table, column) in [("outbox_deliveries", "event_id"), ("outbox", "id")] {
            batch = sqlx::query(&format!(
                "DELETE FROM {table} WHERE {column} IN \
                 (SELECT id FROM outbox WHERE published_at IS NOT NULL AND published_at < $1 \
                  ORDER BY id LIMIT $2)"
            ))
            .bind(&cutoff)
            .bind(CLEANUP_BATCH)
            .execute(db.pool())
            .await?
            .rows_affected();
        }
        deleted += batch;
        if batch < CLEANUP_BATCH as u64 {
            return Ok(deleted);
        }
        tokio::task::yield_now().await;
    }
}

/// How many rows one cleanup statement deletes at most.
pub const CLEANUP_BATCH: i64 = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    /// The poll of a peer's rows reads the deliveries by key, one probe per unpublished row, also
    /// where the planner's statistics still count many rows unpublished (taken while a peer was
    /// behind): then PostgreSQL would hash the whole table for the `NOT EXISTS` on every poll.
    #[tokio::test]
    async fn a_peer_poll_probes_the_deliveries_by_key_on_postgresql() {
        let Some(test) = shop_kit::testing::postgres().await else {
            return;
        };
        let db = Database::connect(&test.url).await.unwrap();
        install_tables(&db).await.unwrap();
        for statement in [
            // No background ANALYZE between the statistics taken below and the plan.
            "ALTER TABLE outbox SET (autovacuum_enabled = false)",
            "ALTER TABLE outbox_deliveries SET (autovacuum_enabled = false)",
            "INSERT INTO outbox (id, type, source, time, payload) \
             SELECT 'e' || g, 'order.placed', 'order', to_char(g, 'FM000000'), '{}' \
             FROM generate_series(1, 5005) g",
            "INSERT INTO outbox_deliveries (event_id, peer, delivered_at) \
             SELECT 'e' || g, p, 'now' FROM generate_series(1, 5000) g, \
             (VALUES ('cart'), ('notification')) AS peers (p)",
            "ANALYZE outbox",
            "ANALYZE outbox_deliveries",
            "UPDATE outbox SET published_at = 'now' WHERE id IN \
             (SELECT event_id FROM outbox_deliveries WHERE peer = 'cart')",
        ] {
            sqlx::query(statement).execute(db.pool()).await.unwrap();
        }
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", pending_for_peer_sql()))
            .bind("cart")
            .bind(256_i64)
            .fetch_all(db.pool())
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("SubPlan") && !plan.contains("Anti Join"),
            "the deliveries are to be probed per row, not joined whole:\n{plan}"
        );
        let pending: Vec<String> = sqlx::query(&pending_for_peer_sql())
            .bind("cart")
            .bind(256_i64)
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| sqlx::Row::get(row, "id"))
            .collect();
        assert_eq!(pending, ["e5001", "e5002", "e5003", "e5004", "e5005"]);
        db.close().await;
    }
}
