//! Every service as a separate process, each started, stopped and killed on its own, on SQLite
//! or PostgreSQL, with the local bus or a NATS server: what the checkout tests need to cut a
//! service off mid-saga.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop::ServiceName;
use shop::up::{START_ORDER, port_of, service_env};
use shop_kit::testing::TestDatabase;

use super::{Process, TempDir, free_ports};

/// The service called `name`.
fn service(name: &str) -> ServiceName {
    ServiceName::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

pub const GOOD_CARD: &str = shop_contracts::test_cards::SUCCEEDS;
pub const DECLINED_CARD: &str = shop_contracts::test_cards::DECLINED;
pub const NO_FUNDS_CARD: &str = shop_contracts::test_cards::INSUFFICIENT_FUNDS;

#[derive(Debug, Clone)]
pub enum Bus {
    /// Direct delivery between the processes (`SHOP_EVENT_PEERS`), as `shop up` does.
    Local,
    /// A NATS JetStream server at this URL.
    Nats(String),
}

pub enum Storage {
    Sqlite,
    /// The shared test server (`SHOP_TEST_POSTGRES_URL`).
    Postgres,
    /// A server of the test's own, by its admin URL.
    PostgresAt(String),
}

pub struct Stack {
    base: u16,
    bus: Bus,
    dir: TempDir,
    databases: BTreeMap<&'static str, String>,
    _postgres: Vec<TestDatabase>,
    processes: BTreeMap<&'static str, Process>,
    /// Extra environment per service, kept for restarts.
    extra_env: fn(&str) -> Vec<(&'static str, String)>,
    /// The installation's key (`SHOP_SERVICE_KEY`), as `shop up` generates one.
    pub service_key: String,
    pub client: Client,
}

impl Stack {
    /// Starts every service. `None` when PostgreSQL is asked for but not configured outside CI
    /// (under `CI=true` that fails instead).
    pub async fn start(storage: Storage, bus: Bus) -> Option<Self> {
        Self::start_with(storage, bus, |_| Vec::new()).await
    }

    /// [`Stack::start`] with `extra_env(service)` added to each service's environment.
    pub async fn start_with(
        storage: Storage,
        bus: Bus,
        extra_env: fn(&str) -> Vec<(&'static str, String)>,
    ) -> Option<Self> {
        let dir = TempDir::new();
        let mut databases = BTreeMap::new();
        let mut postgres = Vec::new();
        for service in ServiceName::ALL.map(ServiceName::as_str) {
            let url = match storage {
                Storage::Sqlite => {
                    format!("sqlite://{}", dir.0.join(format!("{service}.db")).display())
                }
                Storage::Postgres | Storage::PostgresAt(_) => {
                    let db = match &storage {
                        Storage::PostgresAt(admin) => shop_kit::testing::postgres_on(admin).await,
                        _ => shop_kit::testing::postgres().await?,
                    };
                    let url = db.url.clone();
                    postgres.push(db);
                    url
                }
            };
            databases.insert(service, url);
        }
        let mut stack = Self {
            base: free_ports(super::SHOP_UP_PORTS),
            bus,
            dir,
            databases,
            _postgres: postgres,
            processes: BTreeMap::new(),
            extra_env,
            service_key: shop_kit::ServiceKey::generate(),
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        for service in START_ORDER {
            stack.start_service(service.as_str(), &[]).await;
        }
        Some(stack)
    }

    fn port(&self, name: &str) -> u16 {
        port_of(self.base, service(name))
    }

    pub fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.port(service))
    }

    /// The `DATABASE_URL` of `service`.
    pub fn database_url(&self, service: &str) -> &str {
        &self.databases[service]
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api{path}", self.url("gateway"))
    }

    /// `shop up`'s environment for `name`, with the tests' settings, and NATS when asked for.
    fn environment(&self, name: &'static str) -> Vec<(String, String)> {
        let mut env = service_env(
            service(name),
            [127, 0, 0, 1].into(),
            self.base,
            self.databases[name].clone(),
        );
        env.extend(
            [
                ("SHOP_ADMIN_EMAILS", "admin@shop.test".into()),
                ("SHOP_RATE_LIMIT_PER_SECOND", "0".into()),
                ("SHOP_REGISTRATIONS_PER_MINUTE", "0".into()),
                ("SHOP_SHUTDOWN_DELAY_MS", "0".into()),
                ("ORDER_RESUME_INTERVAL_MS", "500".into()),
                // A saga whose process died is taken over after 2 s of silence (15 s by default).
                ("ORDER_RESUME_LEASE_MS", "2000".into()),
                (shop_contracts::env::SERVICE_KEY, self.service_key.clone()),
            ]
            .map(|(key, value): (&str, String)| (key.to_owned(), value)),
        );
        if name == "gateway" {
            let ports: Vec<(&str, u16)> = ServiceName::ALL
                .iter()
                .map(|s| (s.as_str(), port_of(self.base, *s)))
                .collect();
            let routes = shop_gateway::domain::local_table(&ports);
            env.push((
                "SHOP_ROUTES".into(),
                serde_json::to_string(&routes).unwrap(),
            ));
        }
        env.extend(
            (self.extra_env)(name)
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value)),
        );
        // NATS_URL takes over from the local bus's peers that `shop up` sets.
        if let Bus::Nats(url) = &self.bus {
            env.push((shop_contracts::env::NATS_URL.into(), url.clone()));
        }
        env
    }

    /// Starts `service` (again), with `extra` environment, and waits until it is ready.
    pub async fn start_service(&mut self, service: &'static str, extra: &[(&str, String)]) {
        let mut env = self.environment(service);
        env.extend(
            extra
                .iter()
                .map(|(key, value)| (key.to_string(), value.clone())),
        );
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let log = self.dir.0.join(format!("{service}.log"));
        let process = Process::start_logging(service, &["serve", service], &env, &log);
        self.processes.insert(service, process);
        let ready = format!("{}/readyz", self.url(service));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .client
                .get(&ready)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            // A service that exited (a port taken, a bad setting) fails at once, with its log.
            let exited = self.processes.get_mut(service).unwrap().child.try_wait();
            let exited = exited.unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{service} not ready at {ready} ({}); its log:\n{}",
                exited.map_or("still starting after 60 s".into(), |s| format!(
                    "exited, {s}"
                )),
                self.log(service)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILLs `service` and waits until it is gone.
    pub async fn kill(&mut self, service: &str) {
        let mut process = self
            .processes
            .remove(service)
            .unwrap_or_else(|| panic!("{service} is not running"));
        process.signal(Signal::SIGKILL);
        process.wait(Duration::from_secs(10)).await;
    }

    /// Waits for `service` to exit on its own (a crash hook), at most `limit`.
    pub async fn wait_exit(&mut self, service: &str, limit: Duration) -> std::process::ExitStatus {
        let mut process = self
            .processes
            .remove(service)
            .unwrap_or_else(|| panic!("{service} is not running"));
        process.wait(limit).await
    }

    /// Resident memory of each running service, in MiB (from `/proc`).
    pub fn resident_mib(&self) -> BTreeMap<&'static str, f64> {
        self.processes
            .iter()
            .filter_map(|(name, process)| {
                let bytes =
                    shop_kit::metrics::ProcessStats::of(process.child.id()).resident_memory_bytes?;
                Some((*name, bytes as f64 / (1024.0 * 1024.0)))
            })
            .collect()
    }

    /// The log of `service`, for failure messages.
    pub fn log(&self, service: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(format!("{service}.log"))).unwrap_or_default()
    }

    // ---- the customer's side, through the gateway ----

    /// Registers and logs in a new customer.
    pub async fn customer(&self, name: &str) -> Customer {
        let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
        self.sign_up(&email, name).await
    }

    /// Registers and logs in the admin (`SHOP_ADMIN_EMAILS` names admin@shop.test); once per
    /// stack.
    pub async fn admin(&self) -> Customer {
        self.sign_up("admin@shop.test", "Admin").await
    }

    async fn sign_up(&self, email: &str, name: &str) -> Customer {
        let created = self
            .client
            .post(self.api("/users"))
            .json(&json!({"email": email, "password": "correct horse battery", "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "registering {email}");
        let tokens: Value = self
            .client
            .post(self.api("/auth/login"))
            .json(&json!({"email": email, "password": "correct horse battery"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Customer {
            token: tokens["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// `count` products of the seed catalog, with their ids and prices.
    pub async fn products(&self, count: usize) -> Vec<Value> {
        let page = self
            .get_json(self.api(&format!("/products?limit={count}")), None)
            .await;
        page["items"].as_array().unwrap().clone()
    }

    pub async fn set_cart(&self, customer: &Customer, product_id: &str, quantity: u32) {
        let response = self
            .client
            .put(self.api(&format!("/cart/items/{product_id}")))
            .bearer_auth(&customer.token)
            .json(&json!({ "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "adding {product_id} to the cart: {}",
            response.text().await.unwrap()
        );
    }

    pub async fn cart(&self, customer: &Customer) -> Value {
        self.get_json(self.api("/cart"), Some(customer)).await
    }

    /// Checks out the customer's cart; the status and the JSON body (an order or a problem).
    pub async fn checkout(
        &self,
        customer: &Customer,
        key: &str,
        card: &str,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.api("/orders"))
            .bearer_auth(&customer.token)
            .header("Idempotency-Key", key)
            .json(&checkout_body(card))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn order(&self, customer: &Customer, id: &str) -> Value {
        self.get_json(self.api(&format!("/orders/{id}")), Some(customer))
            .await
    }

    pub async fn orders(&self, customer: &Customer) -> Vec<Value> {
        let page = self.get_json(self.api("/orders"), Some(customer)).await;
        page["items"].as_array().cloned().unwrap_or_default()
    }

    pub async fn available(&self, product_id: &str) -> i64 {
        let stock = self
            .get_json(self.api(&format!("/stock/{product_id}")), None)
            .await;
        stock["available"].as_i64().unwrap()
    }

    /// A token of `caller` for `audience`'s internal API, signed with the stack's key.
    pub fn service_token(&self, caller: &str, audience: &str) -> String {
        let key = shop_kit::ServiceKey::decode(&self.service_key).unwrap();
        shop_kit::Identity::new(caller, key).token_for(audience)
    }

    /// The payment service's charges for an order (its internal API, not through the gateway),
    /// asked as the order service.
    pub async fn charges(&self, order_id: &str) -> Vec<Value> {
        let url = format!(
            "{}/internal/charges?order_id={order_id}",
            self.url("payment")
        );
        let found = json_of(self.client.get(url).header(
            shop_contracts::identity::HEADER,
            self.service_token("order", "payment"),
        ))
        .await;
        found["items"]
            .as_array()
            .unwrap_or_else(|| panic!("charges of {order_id}: {found}"))
            .clone()
    }

    pub async fn notifications(&self, customer: &Customer) -> Vec<Value> {
        let page = self
            .get_json(self.api("/notifications"), Some(customer))
            .await;
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// GETs `url`, as `customer` when one is given, and reads the JSON answer.
    async fn get_json(&self, url: String, customer: Option<&Customer>) -> Value {
        let mut request = self.client.get(url);
        if let Some(customer) = customer {
            request = request.bearer_auth(&customer.token);
        }
        json_of(request).await
    }
}

/// Charges that still hold money: succeeded and not refunded in full (payment keeps a refunded
/// charge `succeeded` and counts what went back in `refunded`).
pub fn standing(charges: &[Value]) -> usize {
    charges
        .iter()
        .filter(|c| {
            c["status"] == "succeeded"
                && c["refunded"].as_i64().unwrap() < c["amount"]["amount"].as_i64().unwrap()
        })
        .count()
}

/// The JSON answer to `request`.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

pub struct Customer {
    pub token: String,
}

pub fn checkout_body(card: &str) -> Value {
    json!({
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "12 Analytical Row",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE"
        },
        "payment": {"card_number": card, "exp_month": 12, "exp_year": 2031, "cvc": "123"}
    })
}

/// Polls `check` until it returns `Some`, at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
