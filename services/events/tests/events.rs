//! The event relay and buses against real NATS JetStream and real SQLite/PostgreSQL.
//!
//! NATS tests use `SHOP_TEST_NATS_URL` (tests/nats.sh) and, for the outage, a private
//! nats-server they stop and restart. Every test uses its own consumer names and event types,
//! so tests sharing one server do not see each other's counts.

use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use shop_events::consume::{HandleError, Handler};
use shop_events::{self as events, Bus, Consumer, Event, EventOptions, Peer, Relay, nats, outbox};
use shop_kit::Database;
use shop_kit::Metrics;
use shop_kit::db::Tx;
use shop_kit::testing::{self, TestDatabase};

fn fast_options() -> EventOptions {
    EventOptions {
        poll_interval: Duration::from_millis(20),
        max_deliveries: 3,
        retry_base: Duration::from_millis(50),
        retry_cap: Duration::from_millis(500),
        ack_wait: Duration::from_secs(2),
        ..EventOptions::default()
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Records every applied event of types `<prefix>.*` in `applied`; `<prefix>.reject` is
/// rejected and `<prefix>.flaky` always asks for a retry. Other types are not ours: `Ok`.
struct Recorder {
    prefix: String,
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, tx: &mut Tx, event: &Event) -> Result<(), HandleError> {
        let Some(rest) = event.kind.strip_prefix(&format!("{}.", self.prefix)) else {
            return Ok(());
        };
        match rest {
            "reject" => Err(HandleError::Reject(anyhow!("this event can never apply"))),
            "flaky" => Err(HandleError::Retry(anyhow!("not now"))),
            _ => {
                sqlx::query("INSERT INTO applied (event_id, type) VALUES ($1, $2)")
                    .bind(event.id.to_string())
                    .bind(&event.kind)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }
    }
}

/// A producer's runtime over `bus`, as a service named `test` gets it.
fn producer_runtime(bus: &Bus) -> shop_events::Runtime {
    events::testing::runtime_with_bus("test", "sqlite://unused", bus.clone())
}

/// A relay of `producer`'s outbox onto `bus`.
async fn start_relay(bus: &Bus, producer: &Database) -> Relay {
    Relay::start(&producer_runtime(bus), producer.clone())
        .await
        .unwrap()
}

/// A consumer called `name` that records the events of `prefix` in `db`.
async fn start_recorder(bus: &Bus, db: &Database, name: &str, prefix: &str) -> Consumer {
    Consumer::start(
        bus,
        db.clone(),
        &Metrics::new("test"),
        name,
        Recorder {
            prefix: prefix.to_owned(),
        },
    )
    .await
    .unwrap()
}

async fn open(test_db: &TestDatabase) -> Database {
    let db = Database::connect(&test_db.url).await.unwrap();
    events::install_tables(&db).await.unwrap();
    // No key: a second application of one event would show as a second row.
    sqlx::query("CREATE TABLE IF NOT EXISTS applied (event_id TEXT NOT NULL, type TEXT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    db
}

/// Two fresh databases on each backend: (producer, consumer).
async fn database_pairs() -> Vec<(TestDatabase, TestDatabase)> {
    let mut pairs = vec![(testing::sqlite(), testing::sqlite())];
    if let Some(first) = testing::postgres().await {
        pairs.push((first, testing::postgres().await.unwrap()));
    }
    pairs
}

async fn write_events(db: &Database, kind: &str, count: usize) -> Vec<Event> {
    let mut written = Vec::new();
    for n in 0..count {
        let event = Event::new(kind, "test", 1, serde_json::json!({ "n": n }));
        let mut tx = db.begin().await.unwrap();
        outbox::insert(&mut tx, &event).await.unwrap();
        tx.commit().await.unwrap();
        written.push(event);
    }
    written
}

/// POSTs `body` as JSON to `path` on the server at `url`.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    body: &impl serde::Serialize,
) -> reqwest::Response {
    client
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn scalar(db: &Database, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn applied(db: &Database) -> i64 {
    scalar(db, "SELECT COUNT(*) FROM applied").await
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every event applied exactly once: as many rows as distinct ids as expected.
/// Waits until every row of `db`'s outbox is published.
async fn all_published(db: &Database) {
    eventually("the outbox published", Duration::from_secs(10), || async {
        scalar(db, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").await == 0
    })
    .await;
}

async fn assert_applied_once(db: &Database, expected: i64) {
    assert_eq!(applied(db).await, expected, "rows in applied");
    assert_eq!(
        scalar(db, "SELECT COUNT(DISTINCT event_id) FROM applied").await,
        expected,
        "distinct events in applied"
    );
}

/// Waits until the JetStream consumer has nothing pending and nothing unacknowledged.
async fn drained(bus: &Bus, consumer: &str) -> bool {
    let jetstream = bus.jetstream().unwrap();
    let Ok(stream) = jetstream.get_stream(nats::EVENT_STREAM).await else {
        return false;
    };
    let Ok(mut consumer) = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
        .await
    else {
        return false;
    };
    match consumer.info().await {
        Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
        Err(_) => false,
    }
}

#[tokio::test]
async fn nats_relay_applies_every_event_once_even_when_delivered_twice() {
    let Some(url) = testing::nats() else { return };
    for (producer_db, consumer_db) in database_pairs().await {
        let producer = open(&producer_db).await;
        let consumer = open(&consumer_db).await;
        let bus = Bus::nats(&url, fast_options()).await.unwrap();
        let prefix = unique("once");
        let name = unique("consumer");
        let events = write_events(&producer, &format!("{prefix}.created"), 40).await;

        let runtime = producer_runtime(&bus);
        let metrics = runtime.metrics.clone();
        let relay = Relay::start(&runtime, producer.clone()).await.unwrap();
        // A second replica of the producer relays the same outbox at the same time.
        let replica = start_relay(&bus, &producer).await;
        let Consumer {
            routes,
            tasks: running,
        } = start_recorder(&bus, &consumer, &name, &prefix).await;
        drop(routes);
        let started = std::time::Instant::now();
        eventually("all 40 applied", Duration::from_secs(30), || async {
            applied(&consumer).await == 40
        })
        .await;
        eprintln!(
            "nats: 40 events from the outbox applied by the consumer in {:?} ({})",
            started.elapsed(),
            producer_db.backend
        );
        all_published(&producer).await;

        // Delivered twice: the relay publishes ten rows again (as a second replica would) and
        // the same events arrive under new message ids (as after a consumer crash before ack).
        sqlx::query(
            "UPDATE outbox SET published_at = NULL WHERE id IN (SELECT id FROM outbox ORDER BY time LIMIT 10)",
        )
        .execute(producer.pool())
        .await
        .unwrap();
        relay.waker.wake();
        let jetstream = bus.jetstream().unwrap();
        for event in &events[10..20] {
            jetstream
                .publish_with_headers(
                    nats::event_subject(&event.kind),
                    {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
                        headers
                    },
                    serde_json::to_vec(event).unwrap().into(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
        eventually(
            "the outbox published again",
            Duration::from_secs(10),
            || async {
                scalar(
                    &producer,
                    "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL",
                )
                .await
                    == 0
            },
        )
        .await;
        eventually("the consumer drained", Duration::from_secs(20), || {
            drained(&bus, &name)
        })
        .await;
        assert_applied_once(&consumer, 40).await;
        // Every delivery of ours was recorded by id (other tests' events add to the count).
        let processed = scalar(
            &consumer,
            &format!("SELECT COUNT(*) FROM processed_events WHERE consumer = '{name}'"),
        )
        .await;
        assert!(processed >= 40, "{processed} processed ids");
        assert!(
            metrics.encode().contains("shop_events_published_total"),
            "{}",
            metrics.encode()
        );
        drop((running, relay, replica));
    }
}

/// Whether consumer `name` in `db` has applied (or skipped) the event `id`.
async fn processed(db: &Database, name: &str, id: uuid::Uuid) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM processed_events WHERE consumer = $1 AND event_id = $2",
    )
    .bind(name)
    .bind(id.to_string())
    .fetch_one(db.pool())
    .await
    .unwrap()
        == 1
}

/// The cart's consumer is subscribed to `order.confirmed` alone: JetStream never sends it the
/// other events (before, it received every event and skipped all but one type). A consumer left
/// by an older version, subscribed to every event, keeps working.
#[tokio::test]
async fn nats_sends_the_carts_consumer_only_what_it_reads() {
    let Some(url) = testing::nats() else { return };
    let cart = shop_contracts::ServiceName::Cart.as_str();

    let bus = Bus::nats(&url, fast_options()).await.unwrap();
    let jetstream = bus.jetstream().unwrap();
    nats::ensure_streams(jetstream).await.unwrap();
    let stream = jetstream.get_stream(nats::EVENT_STREAM).await.unwrap();
    for older in [false, true] {
        // This test owns the name `cart` on the test server: no other test of this binary uses it.
        let _ = stream.delete_consumer(cart).await;
        if older {
            stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(cart.to_owned()),
                    filter_subject: "shop.events.>".into(),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let (producer_db, consumer_db) = (testing::sqlite(), testing::sqlite());
        let (producer, consumer) = (open(&producer_db).await, open(&consumer_db).await);
        let placed = write_events(&producer, "order.placed", 2).await;
        let confirmed = write_events(&producer, "order.confirmed", 3).await;
        let _relay = start_relay(&bus, &producer).await;
        let _cart = start_recorder(&bus, &consumer, cart, "order").await;
        for event in &confirmed {
            eventually(
                "the cart applied order.confirmed",
                Duration::from_secs(15),
                || processed(&consumer, cart, event.id),
            )
            .await;
        }
        let mut info = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(cart)
            .await
            .unwrap();
        let subject = info.info().await.unwrap().config.filter_subject.clone();
        let skipped_placed = !processed(&consumer, cart, placed[0].id).await
            && !processed(&consumer, cart, placed[1].id).await;
        eprintln!("older consumer: {older}; subscribed to {subject}");
        if older && subject == "shop.events.>" {
            // The server kept the older subject (NATS before 2.10): every event still arrives,
            // and the consumer goes on with it.
            assert!(
                !skipped_placed,
                "an unfiltered consumer receives order.placed"
            );
        } else {
            assert_eq!(subject, "shop.events.order.confirmed");
            // The stream's order: had the placed events been sent, they were processed first.
            assert!(
                skipped_placed,
                "order.placed was sent to the cart's consumer"
            );
        }
    }
    let _ = stream.delete_consumer(cart).await;
}

#[tokio::test]
async fn nats_outage_loses_nothing_and_events_arrive_after_it_returns() {
    let Some(mut server) = testing::NatsServer::start().await else {
        return;
    };
    for (producer_db, consumer_db) in database_pairs().await {
        let producer = open(&producer_db).await;
        let consumer = open(&consumer_db).await;
        let bus = Bus::nats(&server.url, fast_options()).await.unwrap();
        let prefix = unique("outage");
        let relay = start_relay(&bus, &producer).await;
        let Consumer { tasks: running, .. } =
            start_recorder(&bus, &consumer, &unique("consumer"), &prefix).await;
        let kind = format!("{prefix}.created");
        write_events(&producer, &kind, 10).await;
        eventually("the first 10 applied", Duration::from_secs(30), || async {
            applied(&consumer).await == 10
        })
        .await;

        server.stop().await;
        // Checkouts go on while NATS is down: their events wait in the outbox.
        for _ in 0..10 {
            write_events(&producer, &kind, 2).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            applied(&consumer).await,
            10,
            "nothing can arrive while NATS is down"
        );
        assert!(
            scalar(
                &producer,
                "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"
            )
            .await
                == 20
        );

        let started = std::time::Instant::now();
        server.restart().await;
        eventually(
            "all 30 applied after NATS returned",
            Duration::from_secs(60),
            || async { applied(&consumer).await == 30 },
        )
        .await;
        eprintln!(
            "outage: the 20 waiting events were applied {:?} after NATS was started again",
            started.elapsed()
        );
        assert_applied_once(&consumer, 30).await;
        all_published(&producer).await;
        drop((relay, running));
    }
}

#[tokio::test]
async fn nats_poison_messages_go_to_the_dead_letter_stream_and_block_nothing() {
    let Some(url) = testing::nats() else { return };
    let (producer_db, consumer_db) = (testing::sqlite(), testing::sqlite());
    let (producer, consumer) = (open(&producer_db).await, open(&consumer_db).await);
    let bus = Bus::nats(&url, fast_options()).await.unwrap();
    let jetstream = bus.jetstream().unwrap();
    nats::ensure_streams(jetstream).await.unwrap();
    let prefix = unique("poison");
    let name = unique("consumer");

    // Not JSON at all, on a real event subject.
    let garbage = format!("{{not json {prefix}");
    jetstream
        .publish("shop.events.order.confirmed", garbage.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    write_events(&producer, &format!("{prefix}.reject"), 1).await;
    write_events(&producer, &format!("{prefix}.flaky"), 1).await;
    write_events(&producer, &format!("{prefix}.created"), 5).await;

    let relay = start_relay(&bus, &producer).await;
    let Consumer { tasks: running, .. } = start_recorder(&bus, &consumer, &name, &prefix).await;
    eventually(
        "the 5 good events applied",
        Duration::from_secs(30),
        || async { applied(&consumer).await == 5 },
    )
    .await;

    let dead = jetstream
        .get_stream(nats::DEAD_LETTER_STREAM)
        .await
        .unwrap();
    let letter = |subject: String| {
        let dead = dead.clone();
        async move {
            for _ in 0..200 {
                if let Ok(message) = dead.get_last_raw_message_by_subject(&subject).await {
                    return message;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no dead letter on {subject}");
        }
    };
    let header = |message: &async_nats::jetstream::message::StreamMessage, name: &str| {
        message
            .headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };

    // The garbage, unchanged, with why it died; dead-lettered on its first delivery.
    let undecodable = letter(format!("shop.dead.{name}.order.confirmed")).await;
    assert_eq!(undecodable.payload.as_ref(), garbage.as_bytes());
    assert_eq!(header(&undecodable, nats::HEADER_DEAD_CONSUMER), name);
    assert_eq!(
        header(&undecodable, nats::HEADER_DEAD_SUBJECT),
        "shop.events.order.confirmed"
    );
    assert!(header(&undecodable, nats::HEADER_DEAD_ERROR).contains("undecodable"));
    assert_eq!(header(&undecodable, nats::HEADER_DEAD_DELIVERIES), "1");

    let rejected = letter(format!("shop.dead.{name}.{prefix}.reject")).await;
    assert!(header(&rejected, nats::HEADER_DEAD_ERROR).contains("can never apply"));
    assert_eq!(header(&rejected, nats::HEADER_DEAD_DELIVERIES), "1");
    let event: Event = serde_json::from_slice(&rejected.payload).unwrap();
    assert_eq!(event.kind, format!("{prefix}.reject"));

    // Retried up to max_deliveries (3), then dead.
    let flaky = letter(format!("shop.dead.{name}.{prefix}.flaky")).await;
    assert_eq!(header(&flaky, nats::HEADER_DEAD_DELIVERIES), "3");
    assert!(header(&flaky, nats::HEADER_DEAD_ERROR).contains("not now"));

    eventually("the consumer drained", Duration::from_secs(20), || {
        drained(&bus, &name)
    })
    .await;
    assert_applied_once(&consumer, 5).await;
    drop((relay, running));
}

/// A consumer's server on a port chosen now and started later (to be "down" first).
struct LaterServer {
    addr: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LaterServer {
    fn reserve() -> Self {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self {
            addr: probe.local_addr().unwrap(),
            task: None,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn start(&mut self, router: axum::Router) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
    }
}

impl Drop for LaterServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[tokio::test]
async fn local_bus_delivers_to_every_peer_once_also_when_one_is_down_for_a_while() {
    for (producer_db, consumer_db) in database_pairs().await {
        let producer = open(&producer_db).await;
        let up_db = open(&consumer_db).await;
        let late_test_db = testing::sqlite();
        let late_db = open(&late_test_db).await;
        let prefix = unique("local");

        let consumer_bus = Bus::none(fast_options());
        let Consumer {
            routes: up_routes,
            tasks: _up,
        } = start_recorder(&consumer_bus, &up_db, "notification", &prefix).await;
        // Counts the delivery requests the peer that is up receives.
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = received.clone();
        let up_routes = up_routes.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                next.run(request)
            },
        ));
        let up_server = testing::spawn(up_routes).await;
        let mut late_server = LaterServer::reserve();

        let peers = vec![
            Peer {
                name: "notification".into(),
                url: up_server.url.clone(),
            },
            Peer {
                name: "cart".into(),
                url: late_server.url(),
            },
        ];
        let bus = Bus::local(peers, fast_options());
        let relay = start_relay(&bus, &producer).await;
        // A second replica of the producer relays the same outbox at the same time.
        let replica = start_relay(&bus, &producer).await;
        let events = write_events(&producer, &format!("{prefix}.created"), 20).await;

        // The peer that is up gets everything while the other is down.
        eventually(
            "20 applied by the peer that is up",
            Duration::from_secs(20),
            || async { applied(&up_db).await == 20 },
        )
        .await;
        assert_eq!(
            scalar(
                &producer,
                "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"
            )
            .await,
            20,
            "not published while a peer lacks them"
        );
        // Events written during the outage reach the live peer too (no head-of-line blocking).
        write_events(&producer, &format!("{prefix}.created"), 5).await;
        eventually(
            "25 applied by the peer that is up",
            Duration::from_secs(20),
            || async { applied(&up_db).await == 25 },
        )
        .await;

        // Restarted relays resend nothing the live peer took, although the rows are still
        // unpublished (the other peer lacks them): deliveries are remembered.
        // (The relay records a delivery just after the peer's answer: wait for the records, as a
        // relay stopped in between would rightly send those again.)
        eventually(
            "25 deliveries to the live peer recorded",
            Duration::from_secs(10),
            || async {
                scalar(
                    &producer,
                    "SELECT COUNT(*) FROM outbox_deliveries WHERE peer = 'notification'",
                )
                .await
                    == 25
            },
        )
        .await;
        drop((relay, replica));
        // Let requests already on the wire arrive before counting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = received.load(std::sync::atomic::Ordering::SeqCst);
        // A request carries a batch of events: fewer requests than events.
        assert!(before > 0, "no delivery requests counted");
        let relay = start_relay(&bus, &producer).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            received.load(std::sync::atomic::Ordering::SeqCst),
            before,
            "a restarted relay sent nothing again to the peer that has it all"
        );

        let Consumer {
            routes: late_routes,
            tasks: _late,
        } = start_recorder(&consumer_bus, &late_db, "cart", &prefix).await;
        late_server.start(late_routes).await;
        eventually(
            "25 applied by the peer that came up",
            Duration::from_secs(30),
            || async { applied(&late_db).await == 25 },
        )
        .await;
        all_published(&producer).await;
        assert_eq!(
            scalar(&producer, "SELECT COUNT(*) FROM outbox_deliveries").await,
            50
        );

        // A duplicate delivery (a batch, what the relay sends) is taken whole and applied once.
        let client = reqwest::Client::new();
        let batch = events::local::Batch {
            events: events[..2]
                .iter()
                .map(|event| events::local::BatchItem {
                    id: event.id.to_string(),
                    attempt: 1,
                    traceparent: None,
                    tracestate: None,
                    event: serde_json::to_value(event).unwrap(),
                })
                .collect(),
        };
        for _ in 0..2 {
            let route = events::local::route("notification");
            let response = post_json(&client, &up_server.url, &route, &batch).await;
            assert_eq!(response.status(), 200);
            let answer: events::local::BatchAnswer = response.json().await.unwrap();
            assert!(answer.retry.is_empty(), "{answer:?}");
        }
        assert_applied_once(&up_db, 25).await;
        assert_applied_once(&late_db, 25).await;

        // Published rows go after the retention, in batches: with more old rows than one
        // cleanup statement takes, each with a delivery record, every one goes.
        let bulk = 2 * events::relay::CLEANUP_BATCH + 5;
        for insert in [
            "INSERT INTO outbox (id, type, source, time, payload, published_at) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             SELECT 'bulk-' || i, 'test.bulk', 'test', '2026-01-01T00:00:00Z', '{}', \
             '2026-01-01T00:00:00Z' FROM n",
            "INSERT INTO outbox_deliveries (event_id, peer, delivered_at) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             SELECT 'bulk-' || i, 'notification', '2026-01-01T00:00:00Z' FROM n",
        ] {
            sqlx::query(insert)
                .bind(bulk)
                .execute(producer.pool())
                .await
                .unwrap();
        }
        let deleted = events::relay::delete_published_before(&producer, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(deleted, 25 + bulk as u64);
        assert_eq!(scalar(&producer, "SELECT COUNT(*) FROM outbox").await, 0);
        assert_eq!(
            scalar(&producer, "SELECT COUNT(*) FROM outbox_deliveries").await,
            0
        );
        drop(relay);
    }
}

#[tokio::test]
async fn local_bus_dead_letters_poison_and_keeps_delivering() {
    for (producer_db, consumer_db) in database_pairs().await {
        let producer = open(&producer_db).await;
        let consumer = open(&consumer_db).await;
        let prefix = unique("localpoison");
        let options = fast_options();
        let metrics = Metrics::new("notification");
        let Consumer {
            routes,
            tasks: _running,
        } = Consumer::start(
            &Bus::none(options.clone()),
            consumer.clone(),
            &metrics,
            "notification",
            Recorder {
                prefix: prefix.clone(),
            },
        )
        .await
        .unwrap();
        let server = testing::spawn(routes).await;

        let route = events::local::route("notification");
        // Not a batch at all: refused, and nothing to dead-letter.
        let response = reqwest::Client::new()
            .post(format!("{}{route}", server.url))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        // An unreadable event in a batch is dead-lettered alone: the good one beside it is
        // applied, and the batch is taken (nothing to retry). The relay sends the good one again
        // later; it is applied once.
        let good = write_events(&producer, &format!("{prefix}.created"), 1).await;
        let mixed = serde_json::json!({"events": [
            {"id": "not-an-event", "attempt": 1, "event": {"type": "garbled"}},
            {"id": good[0].id.to_string(), "attempt": 1, "event": good[0]},
        ]});
        let response = post_json(&reqwest::Client::new(), &server.url, &route, &mixed).await;
        assert_eq!(response.status(), 200);
        let answer: events::local::BatchAnswer = response.json().await.unwrap();
        assert!(answer.retry.is_empty(), "{answer:?}");
        assert_eq!(
            applied(&consumer).await,
            1,
            "the good event beside it applied"
        );

        write_events(&producer, &format!("{prefix}.reject"), 1).await;
        write_events(&producer, &format!("{prefix}.flaky"), 1).await;
        write_events(&producer, &format!("{prefix}.created"), 5).await;
        let bus = Bus::local(
            vec![Peer {
                name: "notification".into(),
                url: server.url.clone(),
            }],
            options,
        );
        let relay = start_relay(&bus, &producer).await;
        eventually(
            "the 6 good events applied",
            Duration::from_secs(20),
            || async { applied(&consumer).await == 6 },
        )
        .await;
        eventually("3 dead letters", Duration::from_secs(20), || async {
            events::local::dead_letters(&consumer, "notification")
                .await
                .unwrap()
                .len()
                == 3
        })
        .await;
        let letters = events::local::dead_letters(&consumer, "notification")
            .await
            .unwrap();
        let by_type = |kind: &str| {
            letters
                .iter()
                .find(|l| l.kind == kind)
                .unwrap_or_else(|| panic!("no dead letter of {kind}: {letters:?}"))
        };
        let garbled = by_type("garbled");
        assert!(garbled.error.contains("undecodable"), "{garbled:?}");
        let rejected = by_type(&format!("{prefix}.reject"));
        assert_eq!(rejected.attempts, 1);
        assert!(rejected.error.contains("can never apply"));
        let flaky = by_type(&format!("{prefix}.flaky"));
        assert_eq!(flaky.attempts, 3, "retried up to max_deliveries");
        assert!(flaky.error.contains("not now"));
        // Every dead letter counted by its reason.
        let exposition = metrics.encode();
        for (reason, count) in [("undecodable", 1), ("rejected", 1), ("exhausted", 1)] {
            let sample = format!(
                r#"shop_events_dead_lettered_total{{service="notification",consumer="notification",reason="{reason}"}} {count}"#
            );
            assert!(exposition.contains(&sample), "{sample} in {exposition}");
        }
        all_published(&producer).await;
        assert_applied_once(&consumer, 6).await;
        drop(relay);
    }
}

#[tokio::test]
async fn nats_down_at_start_delays_events_not_the_service() {
    let Some(mut server) = testing::NatsServer::start().await else {
        return;
    };
    server.stop().await;
    let (producer_db, consumer_db) = (testing::sqlite(), testing::sqlite());
    let (producer, consumer) = (open(&producer_db).await, open(&consumer_db).await);
    let prefix = unique("coldstart");

    let started = std::time::Instant::now();
    let bus = Bus::nats(&server.url, fast_options()).await.unwrap();
    let relay = start_relay(&bus, &producer).await;
    let Consumer { tasks: running, .. } =
        start_recorder(&bus, &consumer, &unique("consumer"), &prefix).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "starting took {:?} with NATS down",
        started.elapsed()
    );
    write_events(&producer, &format!("{prefix}.created"), 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied(&consumer).await, 0);

    server.restart().await;
    eventually(
        "all 10 applied once NATS is up",
        Duration::from_secs(60),
        || async { applied(&consumer).await == 10 },
    )
    .await;
    assert_applied_once(&consumer, 10).await;
    drop((relay, running));
}

/// The value of the unlabelled-but-`service` sample `name` of a `Metrics::new("test")`.
fn test_sample(metrics: &Metrics, name: &str) -> Option<f64> {
    let prefix = format!(r#"{name}{{service="test"}} "#);
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
}

#[tokio::test]
async fn the_outbox_lag_shows_while_no_bus_takes_the_events() {
    for (producer_db, _) in database_pairs().await {
        let producer = open(&producer_db).await;
        write_events(&producer, &format!("{}.created", unique("lag")), 3).await;
        // Written an hour ago, as if the bus had been down since.
        let hour_ago = time::OffsetDateTime::now_utc() - Duration::from_secs(3600);
        sqlx::query("UPDATE outbox SET time = $1")
            .bind(shop_kit::db::rfc3339(hour_ago))
            .execute(producer.pool())
            .await
            .unwrap();
        let runtime = producer_runtime(&Bus::none(fast_options()));
        let metrics = runtime.metrics.clone();
        let _relay = Relay::start(&runtime, producer.clone()).await.unwrap();
        eventually("the pending gauge set", Duration::from_secs(5), || async {
            test_sample(&metrics, "shop_outbox_pending_events") == Some(3.0)
        })
        .await;
        let age = test_sample(&metrics, "shop_outbox_oldest_pending_age_seconds").unwrap();
        assert!(
            (3590.0..3700.0).contains(&age),
            "{age} s on {}",
            producer_db.backend
        );
    }
}

#[tokio::test]
async fn an_outbox_made_before_trace_context_gains_it_and_nats_messages_carry_it() {
    let Some(url) = testing::nats() else { return };
    let bus = Bus::nats(&url, fast_options()).await.unwrap();
    let jetstream = bus.jetstream().unwrap().clone();
    nats::ensure_streams(&jetstream).await.unwrap();
    let mut databases = vec![testing::sqlite()];
    databases.extend(testing::postgres().await);
    for test_db in &databases {
        let db = Database::connect(&test_db.url).await.unwrap();
        // The outbox as this crate (and the first migrations of inventory and shipping) made it.
        sqlx::query(
            "CREATE TABLE outbox (id TEXT PRIMARY KEY, type TEXT NOT NULL, source TEXT NOT NULL, \
             time TEXT NOT NULL, payload TEXT NOT NULL, published_at TEXT)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        events::install_tables(&db).await.unwrap();
        events::install_tables(&db).await.unwrap();

        let kind = format!("{}.traced", unique("trace"));
        let written = write_events(&db, &kind, 1).await;
        assert_eq!(
            scalar(&db, "SELECT COUNT(*) FROM outbox WHERE traceparent IS NULL").await,
            1,
            "outside a request there is no context to store"
        );
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        sqlx::query("UPDATE outbox SET traceparent = $1, tracestate = $2")
            .bind(traceparent)
            .bind("shop=1")
            .execute(db.pool())
            .await
            .unwrap();

        let _relay = start_relay(&bus, &db).await;
        all_published(&db).await;
        let consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
            .get_stream(nats::EVENT_STREAM)
            .await
            .unwrap()
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                filter_subject: nats::event_subject(&kind),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
        let message = futures_util::StreamExt::next(&mut batch)
            .await
            .expect("the relayed event")
            .unwrap();
        let headers = message.headers.as_ref().expect("headers");
        assert_eq!(headers.get("traceparent").unwrap().as_str(), traceparent);
        assert_eq!(headers.get("tracestate").unwrap().as_str(), "shop=1");
        let event: Event = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            event, written[0],
            "the context travels beside the event, not in it"
        );
    }
}

#[tokio::test]
async fn a_consumer_forgets_the_events_it_applied_once_past_the_retention() {
    for (test_db, _) in database_pairs().await {
        let db = open(&test_db).await;
        let day = Duration::from_secs(24 * 3600);
        let ago = |age: Duration| shop_kit::db::rfc3339(time::OffsetDateTime::now_utc() - age);
        // Consumer `a` applied one event nine days ago and one an hour ago; `b` one nine days ago.
        for (consumer, event, at) in [
            ("a", "old", ago(9 * day)),
            ("a", "recent", ago(Duration::from_secs(3600))),
            ("b", "old", ago(9 * day)),
        ] {
            sqlx::query(
                "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3)",
            )
            .bind(consumer)
            .bind(event)
            .bind(at)
            .execute(db.pool())
            .await
            .unwrap();
        }
        // And more old records than one cleanup statement deletes: all of them go, in batches.
        let bulk = 2 * events::relay::CLEANUP_BATCH + 5;
        sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             SELECT 'a', 'bulk-' || i, $2 FROM n",
        )
        .bind(bulk)
        .bind(ago(9 * day))
        .execute(db.pool())
        .await
        .unwrap();
        let forgotten = events::forget_processed_before(&db, "a", 8 * day)
            .await
            .unwrap();
        assert_eq!(forgotten, 1 + bulk as u64, "{}", test_db.backend);
        let left: Vec<(String, String)> = sqlx::query_as(
            "SELECT consumer, event_id FROM processed_events ORDER BY consumer, event_id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert_eq!(
            left,
            [
                ("a".to_owned(), "recent".to_owned()),
                ("b".to_owned(), "old".to_owned())
            ],
            "only a's own old record goes"
        );
    }
}

#[tokio::test]
async fn local_bus_sends_a_shop_event_only_to_the_services_that_read_it() {
    for (producer_db, cart_db) in database_pairs().await {
        eprintln!("backend: {}", producer_db.backend);
        let notification_db = testing::sqlite();
        let producer = open(&producer_db).await;
        let (cart, notification) = (open(&cart_db).await, open(&notification_db).await);
        let consumer_bus = Bus::none(fast_options());
        let cart_consumer = start_recorder(&consumer_bus, &cart, "cart", "order").await;
        let notification_consumer =
            start_recorder(&consumer_bus, &notification, "notification", "order").await;
        let cart_server = testing::spawn(cart_consumer.routes).await;
        let notification_server = testing::spawn(notification_consumer.routes).await;

        write_events(&producer, "order.placed", 3).await;
        write_events(&producer, "order.confirmed", 2).await;
        let bus = Bus::local(
            vec![
                Peer {
                    name: "cart".into(),
                    url: cart_server.url.clone(),
                },
                Peer {
                    name: "notification".into(),
                    url: notification_server.url.clone(),
                },
            ],
            fast_options(),
        );
        let relay = start_relay(&bus, &producer).await;
        eventually(
            "the notification service applies all 5",
            Duration::from_secs(20),
            || async { applied(&notification).await == 5 },
        )
        .await;
        // Published once every peer has each event: the cart "has" order.placed without being
        // sent it, as it does not read it.
        all_published(&producer).await;
        assert_applied_once(&cart, 2).await;
        assert_eq!(
            scalar(
                &cart,
                "SELECT COUNT(*) FROM applied WHERE type = 'order.placed'"
            )
            .await,
            0
        );
        assert_eq!(
            scalar(&cart, "SELECT COUNT(*) FROM processed_events").await,
            2,
            "the cart was sent only what it reads"
        );
        drop(relay);
    }
}
