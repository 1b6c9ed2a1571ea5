//! A whole checkout backend in one test process: the real catalog, cart, inventory, payment and
//! shipping services and the order service, each on its own fresh database of one backend
//! (SQLite or PostgreSQL), on free loopback ports.

#![allow(dead_code)]

use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use shop_contracts::identity::HEADER;
use shop_kit::context::{USER_ID_HEADER, USER_ROLES_HEADER};
use shop_kit::db::Backend;
use shop_kit::testing::service_token;
use shop_kit::testing::{self, TestDatabase, TestServer};
use shop_kit::{Database, Metrics, Upstream, UpstreamOptions};
use shop_order::{Crash, Settings, Step, Upstreams};
use tokio::net::TcpListener;

pub const ADMIN: &str = "0190f5c4-0000-7000-8000-0000000000ad";

/// A server that can be stopped for real: the listener closes and idle connections are closed,
/// so callers see the service as down (a dropped `TestServer` leaves open connections serving).
pub struct StoppableServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl StoppableServer {
    pub async fn start(service: shop_kit::Service, name: &'static str) -> Self {
        let config = testing::config("sqlite://unused");
        let metrics = Metrics::new(name);
        let app = shop_kit::server::app(service, &config, &metrics);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = shop_kit::server::serve_with(
                name,
                listener,
                app,
                Duration::from_secs(1),
                async move {
                    let _ = stopped.await;
                },
            )
            .await;
        });
        Self {
            url,
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for StoppableServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn fresh(backend: Backend) -> TestDatabase {
    match backend {
        Backend::Sqlite => testing::sqlite(),
        Backend::Postgres => testing::postgres().await.expect("PostgreSQL is configured"),
    }
}

/// The backends to run on: SQLite always, PostgreSQL when configured (required under CI).
pub async fn backends() -> Vec<Backend> {
    testing::all_backends()
        .await
        .into_iter()
        .map(|db| db.backend)
        .collect()
}

pub struct Shop {
    pub backend: Backend,
    pub catalog: TestServer,
    pub cart: TestServer,
    pub inventory: TestServer,
    pub payment: StoppableServer,
    pub shipping: StoppableServer,
    pub order: Option<TestServer>,
    pub order_db: Database,
    pub order_db_url: String,
    pub upstreams: Upstreams,
    pub client: Client,
    _dbs: Vec<TestDatabase>,
}

/// Settings for tests: the resumer runs often, with a lease longer than any test's step.
pub fn settings() -> Settings {
    Settings {
        resume_interval: Duration::from_millis(100),
        resume_lease: Duration::from_secs(10),
        checkout_deadline: Duration::from_secs(8),
        crash_at: None,
        crash: Crash::Kill,
    }
}

impl Shop {
    pub async fn start(backend: Backend, settings: Settings) -> Self {
        Self::start_with_order_db(backend, settings, None).await
    }

    /// As [`Shop::start`], with the order service on `order_db_url` when given.
    pub async fn start_with_order_db(
        backend: Backend,
        settings: Settings,
        order_db_url: Option<String>,
    ) -> Self {
        let mut dbs = Vec::new();
        for _ in 0..6 {
            dbs.push(fresh(backend).await);
        }
        let runtime = shop_events::testing::runtime("catalog", &dbs[0].url);
        let catalog = testing::spawn_service(
            shop_catalog::build(&runtime, shop_catalog::Settings::default())
                .await
                .unwrap(),
            &runtime.config,
            &runtime.metrics,
        )
        .await;
        let options = UpstreamOptions::default()
            .calling_as(&shop_kit::Identity::new("order", testing::service_key()));
        let upstream = |name: &str, url: &str| Upstream::new(name, url, &options).unwrap();

        let cart_db = Database::connect_and_migrate(&dbs[1].url, &shop_cart::MIGRATOR)
            .await
            .unwrap();
        let metrics = Metrics::new("cart");
        let cart = testing::spawn_service(
            shop_cart::service(cart_db, upstream("catalog", &catalog.url)),
            &testing::config(&dbs[1].url),
            &metrics,
        )
        .await;

        // The order's tests read events from outboxes; no bus relays them.
        let runtime = shop_events::testing::runtime("inventory", &dbs[2].url);
        let inventory = testing::spawn_service(
            shop_inventory::build(&runtime, shop_inventory::Settings::default())
                .await
                .unwrap(),
            &runtime.config,
            &runtime.metrics,
        )
        .await;

        let payment_db = Database::connect_and_migrate(&dbs[3].url, &shop_payment::MIGRATOR)
            .await
            .unwrap();
        let payment = StoppableServer::start(shop_payment::service(payment_db), "payment").await;

        let shipping_db = Database::connect_and_migrate(&dbs[4].url, &shop_shipping::MIGRATOR)
            .await
            .unwrap();
        let shipping =
            StoppableServer::start(shop_shipping::service(shipping_db), "shipping").await;

        let upstreams = Upstreams {
            cart: upstream("cart", &cart.url),
            catalog: upstream("catalog", &catalog.url),
            inventory: upstream("inventory", &inventory.url),
            payment: upstream("payment", &payment.url),
            shipping: upstream("shipping", &shipping.url),
        };
        let order_db_url = order_db_url.unwrap_or_else(|| dbs[5].url.clone());
        let order_db = Database::connect_and_migrate(&order_db_url, &shop_order::MIGRATOR)
            .await
            .unwrap();
        shop_events::install_tables(&order_db).await.unwrap();
        let mut shop = Self {
            backend,
            catalog,
            cart,
            inventory,
            payment,
            shipping,
            order: None,
            order_db,
            order_db_url,
            upstreams,
            client: Client::new(),
            _dbs: dbs,
        };
        shop.start_order(settings).await;
        shop
    }

    /// Starts (or restarts) the order service on its database, with fresh upstream clients.
    pub async fn start_order(&mut self, settings: Settings) {
        self.order = None;
        // Dropping the old server stopped its resumer; dropping the old client closes its
        // connections, so the old service's connection tasks, and with them its router, go too.
        self.client = Client::new();
        let db = Database::connect(&self.order_db_url).await.unwrap();
        let options = UpstreamOptions::default()
            .calling_as(&shop_kit::Identity::new("order", testing::service_key()));
        let fresh = |u: &Upstream| Upstream::new(u.name(), u.base_url(), &options).unwrap();
        let upstreams = Upstreams {
            cart: fresh(&self.upstreams.cart),
            catalog: fresh(&self.upstreams.catalog),
            inventory: fresh(&self.upstreams.inventory),
            payment: fresh(&self.upstreams.payment),
            shipping: fresh(&self.upstreams.shipping),
        };
        let config = testing::config(&self.order_db_url);
        let metrics = Metrics::new("order");
        self.order = Some(
            testing::spawn_service(
                shop_order::service(db, upstreams, settings),
                &config,
                &metrics,
            )
            .await,
        );
    }

    pub fn order_url(&self) -> String {
        self.order
            .as_ref()
            .expect("the order service runs")
            .url
            .clone()
    }

    /// `count` seeded products, each stocked with `stock` units.
    pub async fn products(&self, count: usize, stock: i64) -> Vec<Value> {
        let page: Value = self
            .client
            .get(format!("{}/api/products?limit={count}", self.catalog.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), count);
        for product in &items {
            self.set_stock(product["id"].as_str().unwrap(), stock).await;
        }
        items
    }

    pub async fn set_stock(&self, product_id: &str, on_hand: i64) {
        let response = self
            .client
            .put(format!("{}/api/stock/{product_id}", self.inventory.url))
            .header(USER_ID_HEADER, ADMIN)
            .header(USER_ROLES_HEADER, "admin")
            .json(&json!({ "on_hand": on_hand }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    pub async fn available(&self, product_id: &str) -> i64 {
        let body: Value = self
            .client
            .get(format!("{}/api/stock/{product_id}", self.inventory.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["available"].as_i64().unwrap()
    }

    pub async fn add_to_cart(&self, user: &str, product_id: &str, quantity: i64) {
        let response = self
            .client
            .put(format!("{}/api/cart/items/{product_id}", self.cart.url))
            .header(USER_ID_HEADER, user)
            .json(&json!({ "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "adding to the cart");
    }

    pub async fn cart(&self, user: &str) -> Value {
        self.client
            .get(format!("{}/api/cart", self.cart.url))
            .header(USER_ID_HEADER, user)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn checkout(&self, user: &str, key: Option<&str>, body: &Value) -> Response {
        let mut request = self
            .client
            .post(format!("{}/api/orders", self.order_url()))
            .header(USER_ID_HEADER, user)
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    pub async fn order(&self, user: &str, order_id: &str) -> Response {
        self.client
            .get(format!("{}/api/orders/{order_id}", self.order_url()))
            .header(USER_ID_HEADER, user)
            .send()
            .await
            .unwrap()
    }

    /// Every charge payment holds for the order.
    pub async fn charges(&self, order_id: &str) -> Vec<Value> {
        let body: Value = self
            .client
            .get(format!(
                "{}/internal/charges?order_id={order_id}",
                self.payment.url
            ))
            .header(HEADER, service_token("order", "payment"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["items"].as_array().unwrap().clone()
    }

    /// Charges that took money and were not fully refunded.
    pub async fn standing_charges(&self, order_id: &str) -> usize {
        self.charges(order_id)
            .await
            .iter()
            .filter(|c| {
                c["status"] == "succeeded"
                    && c["refunded"].as_i64().unwrap() < c["amount"]["amount"].as_i64().unwrap()
            })
            .count()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(self.order_db.pool())
            .await
            .unwrap()
    }

    /// Outbox event types for the order, oldest first.
    pub async fn events_of(&self, order_id: &str) -> Vec<(String, Value)> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT type, payload FROM outbox ORDER BY time, id")
                .fetch_all(self.order_db.pool())
                .await
                .unwrap();
        rows.into_iter()
            .map(|(kind, payload)| (kind, serde_json::from_str::<Value>(&payload).unwrap()))
            .filter(|(_, data)| data["order_id"] == order_id)
            .collect()
    }

    /// Polls the order until it is CONFIRMED or FAILED.
    pub async fn wait_terminal(&self, user: &str, order_id: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let order: Value = self.order(user, order_id).await.json().await.unwrap();
            if order["status"] != "PENDING" {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id} still pending at step {}",
                order["step"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn checkout_body(card: &str) -> Value {
    json!({
        "shipping_address": {
            "name": "Ann Example",
            "line1": "Main Street 1",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE"
        },
        "payment": {
            "card_number": card,
            "exp_month": 12,
            "exp_year": 2099,
            "cvc": "123"
        }
    })
}

pub fn user() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn key() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

pub const GOOD_CARD: &str = shop_contracts::test_cards::SUCCEEDS;
pub const DECLINED_CARD: &str = shop_contracts::test_cards::DECLINED;
pub const NO_FUNDS_CARD: &str = shop_contracts::test_cards::INSUFFICIENT_FUNDS;

/// Every step name the crash tests iterate over.
pub fn steps() -> Vec<Step> {
    shop_order::STEPS.to_vec()
}
