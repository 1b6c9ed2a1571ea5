//! `shop`: serve one service, run the whole shop locally, migrate a database, drive load.

mod bench;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use shop::{ServiceName, load, up};
use shop_events::{Bus, EventOptions, Runtime};
use shop_kit::{Service, ServiceConfig};

#[derive(Parser)]
#[command(
    name = "shop",
    version,
    about = "The shop: an e-commerce system of microservices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service (configured by environment variables; see the README).
    Serve {
        #[arg(value_parser = shop::service_name_parser())]
        service: ServiceName,
    },
    /// Run every service on this machine: SQLite files in a data folder (nothing else to install),
    /// or one database per service on a PostgreSQL server (--database-url).
    Up(up::UpArgs),
    /// Bring a service's database schema up to date (DATABASE_URL) and exit.
    Migrate {
        #[arg(value_parser = shop::service_name_parser())]
        service: ServiceName,
    },
    /// Drive a realistic mix (browse, search, cart, checkout) through the gateway; print latency per operation.
    Load(load::LoadArgs),
    /// Start a shop and a bare axum endpoint, run the load mix, print latency, errors and memory against the targets.
    Bench(bench::BenchArgs),
    /// The bare axum endpoint `shop bench` measures as its ceiling.
    #[command(hide = true)]
    Ceiling {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

fn main() -> Result<()> {
    let started = Instant::now();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { service } => serve(service, started).await,
            Command::Up(args) => up::run(args).await,
            Command::Migrate { service } => migrate(service).await,
            Command::Load(args) => load::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Ceiling { listen } => bench::ceiling(listen).await,
        }
    })
}

/// Builds `service` from `runtime` and its own settings from the environment: the one way every
/// service is built (`shop up` and the process tests run `shop serve` too).
async fn build(service: ServiceName, runtime: &Runtime) -> Result<Service> {
    macro_rules! build {
        ($service:ident) => {
            $service::build(runtime, $service::Settings::from_env()?).await
        };
    }
    match service {
        ServiceName::Gateway => build!(shop_gateway),
        ServiceName::User => build!(shop_user),
        ServiceName::Catalog => build!(shop_catalog),
        ServiceName::Cart => build!(shop_cart),
        ServiceName::Inventory => build!(shop_inventory),
        ServiceName::Payment => build!(shop_payment),
        ServiceName::Shipping => build!(shop_shipping),
        ServiceName::Order => build!(shop_order),
        ServiceName::Notification => build!(shop_notification),
        ServiceName::Storefront => build!(shop_storefront),
    }
}

async fn serve(service: ServiceName, started: Instant) -> Result<()> {
    let name = service.as_str();
    if let Ok(parent) = std::env::var(up::PARENT_PID) {
        // Started by `shop up`: stop with it even when it is SIGKILLed or crashes, instead of
        // holding its ports (Ctrl-C is handled by `shop up` itself, which stops us in order).
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
            .context("asking to be stopped with shop up")?;
        if parent.parse() != Ok(nix::unistd::getppid().as_raw()) {
            bail!("shop up (process {parent}) exited before {name} started");
        }
    }
    let telemetry = shop_kit::telemetry::init(name);
    let result = async {
        // Only a service that writes or reads events opens the bus (a NATS connection).
        let bus = if shop_contracts::events::has_events(service) {
            Bus::from_env().await?
        } else {
            Bus::none(EventOptions::default())
        };
        let runtime = Runtime::from_env(name, bus)?;
        let built = build(service, &runtime).await?;
        tracing::info!(
            service = name,
            startup_ms = started.elapsed().as_millis() as u64,
            "started"
        );
        shop_kit::server::run(built, &runtime).await
    }
    .await;
    if let Err(e) = &result {
        tracing::error!(service = name, error = format!("{e:#}"), "failed");
    }
    telemetry.shutdown().await;
    result
}

/// How long `shop migrate` waits for its database to accept connections.
const MIGRATE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

async fn migrate(service: ServiceName) -> Result<()> {
    let name = service.as_str();
    let _telemetry = shop_kit::telemetry::init(name);
    let migrator = match service {
        ServiceName::User => &shop_user::MIGRATOR,
        ServiceName::Catalog => &shop_catalog::MIGRATOR,
        ServiceName::Cart => &shop_cart::MIGRATOR,
        ServiceName::Inventory => &shop_inventory::MIGRATOR,
        ServiceName::Payment => &shop_payment::MIGRATOR,
        ServiceName::Shipping => &shop_shipping::MIGRATOR,
        ServiceName::Order => &shop_order::MIGRATOR,
        ServiceName::Notification => &shop_notification::MIGRATOR,
        ServiceName::Gateway | ServiceName::Storefront => {
            bail!("the {name} keeps no data and has no database")
        }
    };
    let config = ServiceConfig::from_env(name)?;
    // In a pod, this init container usually starts before its database accepts connections.
    // Waiting here, rather than failing into the kubelet's crash back-off (10 s, 20 s, 40 s …),
    // lets a fresh install converge in seconds.
    let deadline = Instant::now() + MIGRATE_WAIT;
    let db = loop {
        match shop_kit::Database::connect(&config.database_url).await {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline => {
                tracing::info!(
                    service = name,
                    error = format!("{e:#}"),
                    "waiting for the database"
                );
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "the database did not accept connections within {}s",
                    MIGRATE_WAIT.as_secs()
                )));
            }
        }
    };
    db.migrate(migrator).await?;
    // The event crate's tables too, so the schema is complete before the service first starts.
    shop_events::install_tables(&db).await?;
    tracing::info!(service = name, "database schema is up to date");
    Ok(())
}
