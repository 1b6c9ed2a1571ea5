//! `shop up`: every service as its own process on loopback, SQLite files in one folder, or with
//! `--database-url` one database per service on a PostgreSQL server.
//!
//! Separate processes rather than tasks in one: each service keeps its own memory, can be stopped
//! on its own (see fault isolation in the README), and runs exactly as it does in a container.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::ServiceName;
use shop_contracts::env;

/// Set by `shop up` for its services: its process id. A service started with it stops (SIGTERM)
/// when `shop up` dies, however it dies (see `shop serve`).
pub const PARENT_PID: &str = "SHOP_UP_PID";

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Folder for the services' SQLite files and the gateway's route table.
    #[arg(long, default_value = "shop-data")]
    pub data_dir: PathBuf,
    /// The gateway's port; the services take the next ports in order (user, catalog, cart, inventory,
    /// payment, shipping, order, notification, storefront).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The address every service listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Keep the data on this PostgreSQL server instead of SQLite files: an admin URL such as
    /// postgres://postgres@127.0.0.1:5432/postgres. Each service gets its own database on it,
    /// shop_<service>, created if missing.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Extra environment for every service (set by `shop bench`, not on the command line).
    #[arg(skip)]
    pub env: Vec<(String, String)>,
    /// What the databases' names start with (tests and `shop bench` keep theirs apart).
    #[arg(long, default_value = "shop", hide = true, value_parser = database_prefix)]
    pub database_prefix: String,
}

pub struct Running {
    pub service: ServiceName,
    pub pid: Pid,
    pub url: String,
    /// From spawning the process to its first successful `/readyz`.
    pub ready_after: Duration,
}

type Exits = mpsc::UnboundedReceiver<(ServiceName, std::io::Result<std::process::ExitStatus>)>;

/// A running shop: its processes and the channel that reports their exits.
pub struct Shop {
    pub running: Vec<Running>,
    pub data_dir: PathBuf,
    exits: Exits,
}

impl Shop {
    pub fn url(&self, service: ServiceName) -> &str {
        self.running
            .iter()
            .find(|r| r.service == service)
            .map_or("", |r| r.url.as_str())
    }

    /// Stops every service (SIGTERM, then SIGKILL for any that outstay their grace).
    pub async fn stop(mut self) {
        let alive = self.running.iter().collect();
        stop_all(alive, &mut self.exits).await;
    }
}

/// Start order: the gateway after the services, so the user service's keys are there when it
/// starts, and the storefront, a client of the gateway, last.
/// The event consumers come before the producers, whose relays would otherwise retry a while.
pub const START_ORDER: [ServiceName; 10] = [
    ServiceName::Notification,
    ServiceName::User,
    ServiceName::Catalog,
    ServiceName::Cart,
    ServiceName::Inventory,
    ServiceName::Payment,
    ServiceName::Shipping,
    ServiceName::Order,
    ServiceName::Gateway,
    ServiceName::Storefront,
];

/// A service's port: the gateway's is `base`, the others follow in [`ServiceName::ALL`]'s order.
pub fn port_of(base: u16, service: ServiceName) -> u16 {
    base + ServiceName::ALL
        .iter()
        .position(|s| *s == service)
        .expect("a known service") as u16
}

pub async fn run(args: UpArgs) -> Result<()> {
    let started = Instant::now();
    let mut shop = start(&args).await?;
    let database = |service: ServiceName| match &args.database_url {
        Some(_) => format!(
            "postgres database {}",
            database_name(&args.database_prefix, service)
        ),
        None => format!("{}.db", service.as_str()),
    };
    print_summary(&shop.running, &shop.data_dir, &database, started.elapsed());

    let mut alive: Vec<&Running> = shop.running.iter().collect();
    loop {
        tokio::select! {
            () = shop_kit::server::shutdown_signal() => break,
            Some((service, status)) = shop.exits.recv() => {
                alive.retain(|r| r.service != service);
                eprintln!("shop: {} exited ({}); the other services keep running", service.as_str(), describe(status));
                if alive.is_empty() {
                    bail!("every service has exited");
                }
            }
        }
    }
    stop_all(alive, &mut shop.exits).await;
    Ok(())
}

/// Starts every service, one after another, each once the previous one is ready.
pub async fn start(args: &UpArgs) -> Result<Shop> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let url_of = |s: ServiceName| format!("http://{}:{}", args.host, port_of(args.port, s));
    let ports: Vec<_> = ServiceName::ALL
        .iter()
        .map(|s| (s.as_str(), port_of(args.port, *s)))
        .collect();
    let mut routes = shop_gateway::domain::local_table(&ports);
    for route in &mut routes.routes {
        route.upstream = route.upstream.replace("127.0.0.1", &args.host.to_string());
    }
    let routes_file = data_dir.join("routes.json");
    std::fs::write(&routes_file, serde_json::to_string_pretty(&routes)?)?;

    let databases = match &args.database_url {
        Some(admin) => Some(create_databases(admin, &args.database_prefix).await?),
        None => None,
    };
    // The gateway keeps no data; like before, it is handed a SQLite path it never opens.
    let database_url = |service: ServiceName| {
        databases
            .iter()
            .flatten()
            .find(|(s, _)| *s == service)
            .map_or_else(
                || {
                    format!(
                        "sqlite://{}",
                        data_dir.join(format!("{}.db", service.as_str())).display()
                    )
                },
                |(_, url)| url.clone(),
            )
    };

    let exe = std::env::current_exe().context("finding the shop executable")?;
    // Ten processes share this machine's cores: a runtime with a worker per core in each would
    // put ten workers on every core and spend the CPU switching between them (on 2 cores, one
    // worker each served 20 % more requests; docs/benchmarks.md). Half the cores each, at least
    // one; TOKIO_WORKER_THREADS set by the user wins.
    let workers = (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1);
    let workers = workers.to_string();
    // One key for the installation, for the services' tokens on each other's internal APIs;
    // new at every start unless given (to call the internal APIs from outside, say).
    let service_key = shop_kit::ServiceKey::generate();
    let (exited_tx, mut exits) = mpsc::unbounded_channel();
    let mut running = Vec::new();
    for service in START_ORDER {
        let name = service.as_str();
        let mut command = Command::new(&exe);
        command
            .args(["serve", name])
            .envs(service_env(
                service,
                args.host,
                args.port,
                database_url(service),
            ))
            .env(env::ROUTES_FILE, &routes_file)
            .env(PARENT_PID, std::process::id().to_string())
            .kill_on_drop(true)
            .envs(args.env.iter().map(|(k, v)| (k, v)));
        for (key, default) in [
            (env::LOG_FORMAT, "text"),
            ("SHOP_ADMIN_EMAILS", "admin@shop.local"),
            ("TOKIO_WORKER_THREADS", workers.as_str()),
            // `shop load` and `shop bench` register their virtual users from one address.
            ("SHOP_REGISTRATIONS_PER_MINUTE", "0"),
            (env::SERVICE_KEY, service_key.as_str()),
        ] {
            if std::env::var_os(key).is_none() && !args.env.iter().any(|(k, _)| k == key) {
                command.env(key, default);
            }
        }
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = Pid::from_raw(child.id().context("a started child has a pid")? as i32);
        let tx = exited_tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send((service, status));
        });
        let url = url_of(service);
        wait_ready(service, &url, &mut exits).await?;
        running.push(Running {
            service,
            pid,
            url,
            ready_after: spawned.elapsed(),
        });
    }
    Ok(Shop {
        running,
        data_dir,
        exits,
    })
}

/// The environment `shop up` gives `service` when the gateway is on `host`:`base`: where it
/// listens, its database, where the others are, and the local bus's consumers (events go
/// straight to them; `NATS_URL` in the environment takes over).
pub fn service_env(
    service: ServiceName,
    host: IpAddr,
    base: u16,
    database_url: String,
) -> Vec<(String, String)> {
    let url_of = |s: ServiceName| format!("http://{host}:{}", port_of(base, s));
    let event_peers = shop_contracts::events::CONSUMERS
        .iter()
        .map(|s| format!("{}={}", s.as_str(), url_of(*s)))
        .collect::<Vec<_>>()
        .join(",");
    let mut env = vec![
        (
            env::LISTEN.to_owned(),
            format!("{host}:{}", port_of(base, service)),
        ),
        (env::DATABASE_URL.to_owned(), database_url),
    ];
    // Every service's `*_URL` (each reads those of the peers it calls), so a new one is not missed.
    env.extend(
        ServiceName::ALL
            .into_iter()
            .map(|peer| (peer.url_var(), url_of(peer))),
    );
    env.push(("SHOP_EVENT_PEERS".to_owned(), event_peers));
    env
}

/// The services that keep data (every one but the gateway and the storefront).
pub fn has_database(service: ServiceName) -> bool {
    !matches!(service, ServiceName::Gateway | ServiceName::Storefront)
}

/// A prefix for database names: it is put into SQL unescaped (quoted), so only plain names pass.
fn database_prefix(prefix: &str) -> Result<String, String> {
    let plain = prefix.len() <= 40
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(prefix.to_owned())
    } else {
        Err("a database prefix is 1 to 40 of a-z, 0-9 and _, starting with a letter".into())
    }
}

/// The database a service gets on the PostgreSQL server: `<prefix>_<service>`.
pub fn database_name(prefix: &str, service: ServiceName) -> String {
    format!("{prefix}_{}", service.as_str())
}

/// The admin URL with its database replaced by `database` (user, password, host, port and
/// options kept). Only PostgreSQL URLs are accepted: SQLite needs no server and is the default.
pub fn service_database_url(admin: &str, database: &str) -> Result<String> {
    let mut url = reqwest::Url::parse(admin)
        .map_err(|e| anyhow::anyhow!("--database-url is not a URL: {e}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        bail!(
            "--database-url must be a postgres:// URL (got {}://); without it the shop uses SQLite files",
            url.scheme()
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("--database-url has no host");
    }
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

/// Connects to the server with the admin URL and creates each service's database if missing;
/// returns the URL of each.
async fn create_databases(admin: &str, prefix: &str) -> Result<Vec<(ServiceName, String)>> {
    use sqlx::Connection;

    let mut urls = Vec::new();
    for service in ServiceName::ALL.into_iter().filter(|s| has_database(*s)) {
        let name = database_name(prefix, service);
        urls.push((service, service_database_url(admin, &name)?));
    }
    let mut server = sqlx::PgConnection::connect(admin)
        .await
        .context("connecting to the PostgreSQL server of --database-url")?;
    for (service, _) in &urls {
        let name = database_name(prefix, *service);
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut server)
                .await?;
        if exists.is_none() {
            // The name is ours (a prefix and a service name), so quoting it is enough.
            match sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut server)
                .await
            {
                Ok(_) => eprintln!("shop: created database {name}"),
                // Created meanwhile by another `shop up`: just as good.
                Err(e) if is_duplicate_database(&e) => {}
                Err(e) => return Err(e).with_context(|| format!("creating database {name}")),
            }
        }
    }
    server.close().await?;
    Ok(urls)
}

fn is_duplicate_database(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "42P04")
}

/// Drops each service's database (`shop bench` cleaning up after itself; never `shop up`).
pub async fn drop_databases(admin: &str, prefix: &str) -> Result<()> {
    use sqlx::Connection;

    let mut server = sqlx::PgConnection::connect(admin).await?;
    for service in ServiceName::ALL.into_iter().filter(|s| has_database(*s)) {
        let name = database_name(prefix, service);
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut server)
            .await
            .with_context(|| format!("dropping database {name}"))?;
    }
    server.close().await?;
    Ok(())
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

async fn wait_ready(service: ServiceName, url: &str, exited: &mut Exits) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((gone, status)) = exited.try_recv() {
            bail!(
                "{} exited before it was ready ({}); see its log above",
                gone.as_str(),
                describe(status)
            );
        }
        if client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} was not ready at {url}/readyz within 30 s",
                service.as_str()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn print_summary(
    running: &[Running],
    data_dir: &Path,
    database: &dyn Fn(ServiceName) -> String,
    took: Duration,
) {
    let gateway = running
        .iter()
        .find(|r| r.service == ServiceName::Gateway)
        .map_or("", |r| r.url.as_str());
    println!("\nshop is up ({} ms to ready)\n", took.as_millis());
    println!("  {:<10} {:<24} {:<8} data", "service", "address", "pid");
    for r in running {
        let data = match r.service {
            ServiceName::Gateway => "routes.json (edit it: reloaded live)".to_owned(),
            ServiceName::Storefront => "none (the web shop; a client of the gateway)".to_owned(),
            service => database(service),
        };
        println!(
            "  {:<10} {:<24} {:<8} {}",
            r.service.as_str(),
            r.url,
            r.pid,
            data
        );
    }
    println!("\n  data folder: {}", data_dir.display());
    println!("  the shop is at {gateway}/ (open it in a browser)");
    println!("  the public API is the gateway's: try  curl '{gateway}/api/products?q=kettle'");
    println!("  Ctrl-C stops every service.\n");
}

/// SIGTERM to each service (gateway first, so no new traffic reaches the others), then waits;
/// whatever has not stopped within its grace period is killed.
async fn stop_all(mut alive: Vec<&Running>, exited: &mut Exits) {
    for r in alive.iter().rev() {
        let _ = kill(r.pid, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while !alive.is_empty() {
        match tokio::time::timeout_at(deadline, exited.recv()).await {
            Ok(Some((service, _))) => alive.retain(|r| r.service != service),
            _ => break,
        }
    }
    // Only processes that have not exited (and so still own their pid) are killed.
    for r in alive {
        eprintln!(
            "shop: {} did not stop in time; killing it",
            r.service.as_str()
        );
        let _ = kill(r.pid, Signal::SIGKILL);
    }
    println!("shop stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_its_own_database_on_the_admin_server() {
        assert_eq!(database_name("shop", ServiceName::Cart), "shop_cart");
        assert_eq!(
            service_database_url("postgres://shop@127.0.0.1:55432/postgres", "shop_cart").unwrap(),
            "postgres://shop@127.0.0.1:55432/shop_cart"
        );
        // Credentials, port and options stay; a missing database path is fine.
        assert_eq!(
            service_database_url(
                "postgresql://admin:s3cret@db.local:5432?sslmode=require",
                "shop_user"
            )
            .unwrap(),
            "postgresql://admin:s3cret@db.local:5432/shop_user?sslmode=require"
        );
        assert!(!has_database(ServiceName::Gateway));
        assert!(!has_database(ServiceName::Storefront));
        assert!(has_database(ServiceName::Inventory));
    }

    #[test]
    fn database_prefixes_are_plain_names() {
        assert_eq!(database_prefix("shop_bench").unwrap(), "shop_bench");
        assert_eq!(database_prefix("t0").unwrap(), "t0");
        for bad in [
            "",
            "Shop",
            "0shop",
            "shop-bench",
            "shop\"; DROP",
            &"a".repeat(41),
        ] {
            assert!(database_prefix(bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn only_postgres_urls_are_accepted() {
        let refused = |url: &str| {
            service_database_url(url, "shop_user")
                .unwrap_err()
                .to_string()
        };
        assert!(refused("sqlite://shop.db").contains("must be a postgres:// URL"));
        assert!(refused("mysql://root@localhost/db").contains("must be a postgres:// URL"));
        assert!(refused("not a url").contains("is not a URL"));
        assert!(refused("postgres:///postgres").contains("no host"));
    }
}
