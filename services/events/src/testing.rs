//! Test support for producers and consumers of events: a sink that keeps what it is given, a
//! fast local bus, and the runtime a service under test is built from.

use shop_kit::Tasks;
use shop_kit::testing::{TestDatabase, TestServer, spawn, sqlite};

use crate::bus::{Bus, EventOptions, Peer};
use crate::consumer::Consumer;
use crate::event::Event;

/// The runtime a service gets in tests: the kit's test configuration over `database_url`, no
/// bus (events stay in the outbox), a fresh registry named `name`.
pub fn runtime(name: &str, database_url: &str) -> shop_kit::Runtime<Bus> {
    runtime_with_bus(name, database_url, Bus::none(EventOptions::default()))
}

/// [`runtime`] with the events going to `bus`.
pub fn runtime_with_bus(name: &str, database_url: &str, bus: Bus) -> shop_kit::Runtime<Bus> {
    let config = shop_kit::testing::config(database_url);
    shop_kit::Runtime {
        identity: shop_kit::Identity::new(name, config.service_key.clone()),
        config,
        bus,
        metrics: shop_kit::Metrics::new(name),
    }
}

/// A consumer on the local bus that keeps every event it is given, for tests of producers:
/// build the producer with `Bus::local(vec![sink.peer()], ...)` and wait for its events.
pub struct EventSink {
    pub server: TestServer,
    name: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
    _db: TestDatabase,
    _tasks: Tasks,
}

struct Keep(std::sync::Arc<std::sync::Mutex<Vec<Event>>>);

#[async_trait::async_trait]
impl crate::consume::Handler for Keep {
    async fn handle(
        &self,
        _tx: &mut shop_kit::db::Tx,
        event: &Event,
    ) -> Result<(), crate::consume::HandleError> {
        self.0.lock().expect("sink lock").push(event.clone());
        Ok(())
    }
}

impl EventSink {
    /// A sink named `name` (its consumer name) on a free port, with its own SQLite database.
    pub async fn start(name: &str) -> Self {
        let db_file = sqlite();
        let db = shop_kit::Database::connect(&db_file.url)
            .await
            .expect("the sink's database");
        let received = std::sync::Arc::default();
        let bus = Bus::none(EventOptions::default());
        let metrics = shop_kit::Metrics::new(name);
        let consumer = Consumer::start(
            &bus,
            db,
            &metrics,
            name,
            Keep(std::sync::Arc::clone(&received)),
        )
        .await
        .expect("starting the sink");
        Self {
            server: spawn(consumer.routes).await,
            name: name.to_owned(),
            received,
            _db: db_file,
            _tasks: consumer.tasks,
        }
    }

    /// This sink as a local-bus peer.
    pub fn peer(&self) -> Peer {
        Peer {
            name: self.name.clone(),
            url: self.server.url.clone(),
        }
    }

    /// Every event applied so far, in arrival order (each once).
    pub fn events(&self) -> Vec<Event> {
        self.received.lock().expect("sink lock").clone()
    }

    /// The first event of `kind`, waiting up to `timeout`; panics when none arrives.
    pub async fn wait_for(&self, kind: &str, timeout: std::time::Duration) -> Event {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(event) = self.events().into_iter().find(|e| e.kind == kind) {
                return event;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {kind} event reached the sink within {timeout:?}; got {:?}",
                self.events()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A local bus to `peers` that polls every 20 ms, for producers under test.
pub fn local_bus(peers: Vec<Peer>) -> Bus {
    Bus::local(
        peers,
        EventOptions {
            poll_interval: std::time::Duration::from_millis(20),
            ..EventOptions::default()
        },
    )
}
