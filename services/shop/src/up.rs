//! `shop up`: every service as its own process on loopback, SQLite files in one folder.
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

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Folder for the services' SQLite files and the gateway's route table.
    #[arg(long, default_value = "shop-data")]
    pub data_dir: PathBuf,
    /// The gateway's port; the services take the next ports in order (user, catalog, cart, inventory, payment).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The address every service listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Extra environment for every service (set by `shop bench`, not on the command line).
    #[arg(skip)]
    pub env: Vec<(String, String)>,
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

/// Start order: the gateway last, so the user service's keys are there when it starts.
const START_ORDER: [ServiceName; 7] = [
    ServiceName::User,
    ServiceName::Catalog,
    ServiceName::Cart,
    ServiceName::Inventory,
    ServiceName::Payment,
    ServiceName::Shipping,
    ServiceName::Gateway,
];

fn port_of(base: u16, service: ServiceName) -> u16 {
    base + ServiceName::ALL
        .iter()
        .position(|s| *s == service)
        .expect("a known service") as u16
}

pub async fn run(args: UpArgs) -> Result<()> {
    let started = Instant::now();
    let mut shop = start(&args).await?;
    print_summary(&shop.running, &shop.data_dir, started.elapsed());

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

    let exe = std::env::current_exe().context("finding the shop executable")?;
    let (exited_tx, mut exits) = mpsc::unbounded_channel();
    let mut running = Vec::new();
    for service in START_ORDER {
        let name = service.as_str();
        let mut command = Command::new(&exe);
        command
            .args(["serve", name])
            .env(
                "SHOP_LISTEN",
                format!("{}:{}", args.host, port_of(args.port, service)),
            )
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", data_dir.join(format!("{name}.db")).display()),
            )
            .env("USER_URL", url_of(ServiceName::User))
            .env("CATALOG_URL", url_of(ServiceName::Catalog))
            .env("SHOP_ROUTES_FILE", &routes_file)
            .kill_on_drop(true)
            .envs(args.env.iter().map(|(k, v)| (k, v)));
        for (key, default) in [
            ("SHOP_LOG_FORMAT", "text"),
            ("SHOP_ADMIN_EMAILS", "admin@shop.local"),
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

fn print_summary(running: &[Running], data_dir: &Path, took: Duration) {
    let gateway = running
        .iter()
        .find(|r| r.service == ServiceName::Gateway)
        .map_or("", |r| r.url.as_str());
    println!("\nshop is up ({} ms to ready)\n", took.as_millis());
    println!("  {:<10} {:<24} {:<8} data", "service", "address", "pid");
    for r in running {
        let data = if r.service == ServiceName::Gateway {
            "routes.json (edit it: reloaded live)".to_owned()
        } else {
            format!("{}.db", r.service.as_str())
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
