//! Test support shared by every service: databases for both backends and a server on a free port.
//!
//! PostgreSQL comes from `SHOP_TEST_POSTGRES_URL` (an admin URL; `tests/run.sh` starts a server and
//! sets it). Without it the PostgreSQL half of a test is skipped with a loud message, except under
//! `CI=true`, where it fails: CI must never pass a test it did not run.

use std::path::PathBuf;

use axum::Router;
use tokio::net::TcpListener;

use crate::db::Backend;

pub mod dashboards;

/// A fresh, empty database for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    dir: Option<PathBuf>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A SQLite database in its own temporary folder, removed on drop.
pub fn sqlite() -> TestDatabase {
    let dir = std::env::temp_dir().join(format!("shop-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("creating a temporary folder");
    TestDatabase {
        url: format!("sqlite://{}", dir.join("test.db").display()),
        backend: Backend::Sqlite,
        dir: Some(dir),
    }
}

/// A new database on the test PostgreSQL server, or `None` (with a message) when there is none
/// outside CI.
pub async fn postgres() -> Option<TestDatabase> {
    let admin_url = shared_postgres_url()?;
    Some(postgres_on(&admin_url).await)
}

/// `SHOP_TEST_POSTGRES_URL`, or `None` (with a message) when it is unset outside CI.
fn shared_postgres_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("SHOP_TEST_POSTGRES_URL") else {
        assert!(
            !in_ci(),
            "SHOP_TEST_POSTGRES_URL is not set: under CI=true the PostgreSQL tests must run (use tests/run.sh)"
        );
        eprintln!(
            "SKIPPED the PostgreSQL half: SHOP_TEST_POSTGRES_URL is not set (tests/run.sh sets it)"
        );
        return None;
    };
    Some(admin_url)
}

/// A new database on the PostgreSQL server of `admin_url` (a URL naming a database there).
pub async fn postgres_on(admin_url: &str) -> TestDatabase {
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let db = crate::db::Database::connect(admin_url)
        .await
        .expect("connecting to the test PostgreSQL server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(db.pool())
        .await
        .expect("creating a test database");
    db.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("the admin URL names a database");
    TestDatabase {
        url: format!("{base}/{name}"),
        backend: Backend::Postgres,
        dir: None,
    }
}

/// SQLite always, PostgreSQL when available: run a test body over each.
pub async fn all_backends() -> Vec<TestDatabase> {
    let mut dbs = vec![sqlite()];
    dbs.extend(postgres().await);
    dbs
}

/// A server on a free loopback port, stopped when dropped, and with it the background tasks
/// of the service it serves.
pub struct TestServer {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
    _tasks: crate::Tasks,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn spawn(router: Router) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    TestServer {
        url,
        task,
        _tasks: crate::Tasks::default(),
    }
}

/// The configuration a service gets in tests: a loopback port chosen later, short deadlines.
pub fn config(database_url: &str) -> crate::ServiceConfig {
    crate::ServiceConfig {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        database_url: database_url.to_owned(),
        shutdown_grace: std::time::Duration::from_secs(5),
        shutdown_delay: std::time::Duration::ZERO,
        request_timeout: std::time::Duration::from_secs(10),
        max_body_bytes: 64 * 1024,
        header_read_timeout: std::time::Duration::from_secs(10),
        max_header_bytes: 16 * 1024,
        service_key: service_key(),
        admission: crate::config::Admission::default(),
    }
}

/// The installation key of every service a test builds with [`config`].
pub fn service_key() -> crate::ServiceKey {
    crate::ServiceKey::from_bytes(b"the shop's tests' own service key")
}

/// A token of `caller` for calling `audience`'s internal API in a test, for the header
/// `shop_contracts::identity::HEADER`.
pub fn service_token(caller: &str, audience: &str) -> String {
    crate::Identity::new(caller, service_key()).token_for(audience)
}

/// Serves a built service with the full middleware stack, as `shop serve` would; its background
/// tasks run until the server is dropped.
pub async fn spawn_service(
    service: crate::Service,
    config: &crate::ServiceConfig,
    metrics: &crate::Metrics,
) -> TestServer {
    let app = crate::server::app(service, config, metrics);
    let mut server = spawn(app.router).await;
    server._tasks = app.tasks;
    server
}

/// A service under test: served with the full middleware stack on a free port, with a pool of its
/// own on the service's database (to check what the API does not show) and an HTTP client.
pub struct TestService {
    pub server: TestServer,
    pub url: String,
    pub db: crate::Database,
    pub client: reqwest::Client,
}

impl TestService {
    /// Migrates `db` with `migrator`, builds the service over it with `service`, and serves it.
    pub async fn start(
        db: &TestDatabase,
        migrator: &sqlx::migrate::Migrator,
        service: impl FnOnce(crate::Database) -> crate::Service,
    ) -> Self {
        let database = crate::Database::connect_and_migrate(&db.url, migrator)
            .await
            .expect("migrating the test database");
        let service = service(database.clone());
        let metrics = crate::Metrics::new(service.name);
        Self::with_pool(service, &metrics, &db.url, database).await
    }

    /// Serves a service its `build` made (with `metrics`, the registry it registered in) over
    /// `database_url`.
    pub async fn serve(
        service: crate::Service,
        metrics: &crate::Metrics,
        database_url: &str,
    ) -> Self {
        let database = crate::Database::connect(database_url)
            .await
            .expect("connecting to the test database");
        Self::with_pool(service, metrics, database_url, database).await
    }

    async fn with_pool(
        service: crate::Service,
        metrics: &crate::Metrics,
        database_url: &str,
        db: crate::Database,
    ) -> Self {
        let server = spawn_service(service, &config(database_url), metrics).await;
        Self {
            url: server.url.clone(),
            server,
            db,
            client: reqwest::Client::new(),
        }
    }

    /// The number of rows in `table`.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.db.pool())
            .await
            .expect("counting rows")
    }
}

/// Asserts that a response is a problem+json with this status, and returns its body.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> crate::Problem {
    let actual = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(actual, status, "expected {status}, got {actual}: {body}");
    assert_eq!(
        content_type,
        crate::problem::PROBLEM_JSON,
        "problem responses are problem+json: {body}"
    );
    let problem: crate::Problem = serde_json::from_str(&body).expect("a problem body");
    assert_eq!(problem.status, status);
    assert!(
        problem.detail.as_deref().is_some_and(|d| !d.is_empty()),
        "a problem says what is wrong: {body}"
    );
    problem
}

/// The test NATS server's URL from `SHOP_TEST_NATS_URL` (`tests/nats.sh start` prints it), or
/// `None` (with a message) when it is unset outside CI; under `CI=true` a missing server fails.
pub fn nats() -> Option<String> {
    match std::env::var("SHOP_TEST_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                !in_ci(),
                "SHOP_TEST_NATS_URL is not set: under CI=true the NATS tests must run (use tests/run.sh)"
            );
            eprintln!(
                "SKIPPED the NATS part: SHOP_TEST_NATS_URL is not set (tests/nats.sh start prints it)"
            );
            None
        }
    }
}

/// A private `nats-server` with JetStream, for tests that stop and restart it. The binary is
/// `SHOP_TEST_NATS_SERVER`, else `nats-server` on PATH, else `/usr/sbin/nats-server`. Killed on
/// drop; its store folder is removed then too.
pub struct NatsServer {
    pub url: String,
    port: u16,
    store: PathBuf,
    child: Option<tokio::process::Child>,
}

impl NatsServer {
    /// The binary, or `None` when there is none outside CI (under `CI=true` it panics).
    pub fn binary() -> Option<PathBuf> {
        let found = std::env::var_os("SHOP_TEST_NATS_SERVER")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("PATH").and_then(|path| {
                    std::env::split_paths(&path)
                        .map(|dir| dir.join("nats-server"))
                        .find(|candidate| candidate.is_file())
                })
            })
            .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()));
        if found.is_none() {
            assert!(
                !in_ci(),
                "no nats-server binary: under CI=true the NATS tests must run"
            );
            eprintln!(
                "SKIPPED: no nats-server binary (set SHOP_TEST_NATS_SERVER or install nats-server)"
            );
        }
        found
    }

    /// Starts a server on a free loopback port with a fresh store folder.
    pub async fn start() -> Option<Self> {
        let binary = Self::binary()?;
        let port = free_loopback_port();
        let store = std::env::temp_dir().join(format!("shop-test-nats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&store).expect("creating a store folder");
        let mut server = Self {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store,
            child: None,
        };
        server.spawn(&binary).await;
        Some(server)
    }

    async fn spawn(&mut self, binary: &std::path::Path) {
        let child = tokio::process::Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("nats-server did not start listening on port {}", self.port);
    }

    /// Kills the server (its PID only) and waits until it is gone; the store stays.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(&mut self) {
        self.stop().await;
        let binary = Self::binary().expect("the nats-server binary that started it");
        self.spawn(&binary).await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A loopback port free a moment ago, for a test server of one test's own that binds it later.
/// Below Linux's ephemeral range (32768 and up), where the kernel's own choice (port 0) would
/// land: there an outgoing connection can take the port before the server binds it.
fn free_loopback_port() -> u16 {
    for _ in 0..200 {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

/// A PostgreSQL server of one test's own, to stop and start again (the shared test server must
/// stay up for the other tests): `tests/postgres.sh` with its own folder and port. Stopped and
/// removed on drop. `None` where the PostgreSQL tests are skipped (see [`postgres`]).
pub struct PostgresServer {
    /// An admin URL, as `SHOP_TEST_POSTGRES_URL` is for the shared server.
    pub admin_url: String,
    dir: PathBuf,
    port: u16,
}

impl PostgresServer {
    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/postgres.sh");

    pub async fn start() -> Option<Self> {
        // The shared server's variable says PostgreSQL is installed here and these tests run.
        shared_postgres_url()?;
        let port = free_loopback_port();
        // Directly under /tmp: the server runs as the `postgres` user, which must reach it.
        let dir = PathBuf::from(format!(
            "/tmp/shop-test-pg-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut server = Self {
            admin_url: String::new(),
            dir,
            port,
        };
        let printed = server.script("start").await;
        server.admin_url = printed
            .lines()
            .find_map(|line| line.strip_prefix("export SHOP_TEST_POSTGRES_URL="))
            .unwrap_or_else(|| panic!("tests/postgres.sh start printed no URL: {printed}"))
            .to_owned();
        Some(server)
    }

    /// Stops the server as an operator's restart does (a fast shutdown: sessions are ended).
    pub async fn pause(&self) {
        self.script("pause").await;
    }

    /// Starts the stopped server again, with its data.
    pub async fn resume(&self) {
        self.script("resume").await;
    }

    /// `tests/postgres.sh <command>` for this server's folder and port.
    fn command(&self, command: &str) -> std::process::Command {
        let mut script = std::process::Command::new("bash");
        script
            .arg(Self::SCRIPT)
            .arg(command)
            .env("SHOP_PG_DIR", &self.dir)
            .env("SHOP_PG_PORT", self.port.to_string());
        script
    }

    async fn script(&self, command: &str) -> String {
        let output = tokio::process::Command::from(self.command(command))
            .output()
            .await
            .expect("running tests/postgres.sh");
        assert!(
            output.status.success(),
            "tests/postgres.sh {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.command("stop").output();
    }
}
