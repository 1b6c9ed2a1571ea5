//! `shop-operator`: the operator's command line.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shop_operator::controller::leader::{self, LeaderElection};
use shop_operator::controller::{self, Settings};

/// The image of the bundled services by default: this release's.
const DEFAULT_IMAGE: &str = concat!("ghcr.io/shop-dev/shop:", env!("CARGO_PKG_VERSION"));
use shop_operator::build::database::DEFAULT_POSTGRES_IMAGE;

#[derive(Parser)]
#[command(name = "shop-operator", about = "The Kubernetes operator of the shop")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ShopService CustomResourceDefinition as YAML (for `kubectl apply -f -`).
    Crd,
    /// Run the operator: reconcile ShopServices until SIGTERM.
    Run(RunArgs),
    /// Print, as YAML, every object the operator would create for the ShopServices in FILEs
    /// (or stdin), without a cluster: a preview to review or lint. Passwords are placeholders.
    Render(RenderArgs),
}

#[derive(clap::Args)]
struct RenderArgs {
    /// YAML files of ShopServices (several documents each); `-` or none reads stdin.
    #[arg(value_name = "FILE")]
    files: Vec<std::path::PathBuf>,
    /// The namespace of ShopServices that do not set `metadata.namespace`.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The image of the bundled services, for ShopServices without `spec.image`.
    #[arg(long, env = "SHOP_OPERATOR_DEFAULT_IMAGE", default_value = DEFAULT_IMAGE)]
    default_image: String,
    /// The PostgreSQL image of Dedicated databases.
    #[arg(long, env = "SHOP_OPERATOR_POSTGRES_IMAGE", default_value = DEFAULT_POSTGRES_IMAGE)]
    postgres_image: String,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch ShopServices in this namespace only (default: every namespace).
    #[arg(long, env = "SHOP_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// The image of the bundled services, for ShopServices without `spec.image`.
    #[arg(long, env = "SHOP_OPERATOR_DEFAULT_IMAGE", default_value = DEFAULT_IMAGE)]
    default_image: String,
    /// The PostgreSQL image of Dedicated databases (any image with the official one's
    /// environment contract, `postgres` as uid 70, `sh` and `pg_isready`).
    #[arg(long, env = "SHOP_OPERATOR_POSTGRES_IMAGE", default_value = DEFAULT_POSTGRES_IMAGE)]
    postgres_image: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[arg(
        long,
        env = "SHOP_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Reconcile only while holding the Lease `shop-operator`, so that several replicas can
    /// run: the others stand by.
    #[arg(long, env = "SHOP_OPERATOR_LEADER_ELECT")]
    leader_elect: bool,
    /// The namespace of the leader Lease: the operator's own (the downward API's
    /// `metadata.namespace`).
    #[arg(long, env = "POD_NAMESPACE", required_if_eq("leader_elect", "true"))]
    leader_election_namespace: Option<String>,
    /// How long a leader's lease lasts without renewal before a standby takes over.
    #[arg(long, default_value = "15", value_name = "SECONDS")]
    lease_duration: u64,
    /// How long the cleanup of a deleted ShopService waits for an unreachable shared database
    /// server before it lets go, leaving the database and role behind.
    #[arg(long, default_value_t = controller::DEFAULT_SHARED_CLEANUP_TIMEOUT.as_secs(), value_name = "SECONDS")]
    shared_cleanup_timeout: u64,
    /// How long a change of a ShopService's children or peers waits for more before the
    /// ShopService is reconciled (a trailing debounce): a burst of status updates of its
    /// Deployment and database becomes one reconcile, at the price of this much delay. A change
    /// of the ShopService itself is reconciled at once.
    #[arg(long, env = "SHOP_OPERATOR_DEBOUNCE_MS", default_value_t = controller::DEFAULT_DEBOUNCE.as_millis() as u64, value_name = "MILLISECONDS")]
    debounce_ms: u64,
    /// How many ShopServices are reconciled at once.
    #[arg(long, env = "SHOP_OPERATOR_CONCURRENCY", default_value_t = controller::DEFAULT_CONCURRENCY)]
    concurrency: u16,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print(&shop_operator::crd_yaml()?)?,
        Command::Run(args) => tokio::runtime::Runtime::new()?.block_on(run(args))?,
        Command::Render(args) => print(&render(args)?)?,
    }
    Ok(())
}

/// Writes `text` to standard output. A reader that stopped early (`| head`) is no error.
fn print(text: &str) -> std::io::Result<()> {
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn render(args: RenderArgs) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::io::Read;
    use std::path::PathBuf;

    let files = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files
    };
    let mut services = Vec::new();
    for file in &files {
        let (text, source) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            (text, "<stdin>".to_owned())
        } else {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            (text, file.display().to_string())
        };
        services.extend(shop_operator::render::parse_shop_services(&text, &source)?);
    }
    let options = shop_operator::render::Options {
        namespace: args.namespace,
        default_image: args.default_image,
        postgres_image: args.postgres_image,
    };
    shop_operator::render::render(&services, &options)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // The same logs as every shop service (JSON lines, `SHOP_LOG`, `SHOP_LOG_FORMAT`, OTLP traces
    // with OTEL_EXPORTER_OTLP_ENDPOINT); the reconcile span puts the ShopService's name and
    // namespace on each line.
    let telemetry = shop_kit::telemetry::init("shop-operator");
    let result = operate(args).await;
    if let Err(e) = &result {
        tracing::error!(
            error = format!("{e:#}"),
            "the operator stopped with an error"
        );
    }
    telemetry.shutdown().await;
    result
}

async fn operate(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let http_listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    let leader_election = match (args.leader_elect, args.leader_election_namespace) {
        (true, Some(namespace)) => {
            // The pod's name (downward API, or the hostname Kubernetes gives the pod).
            let identity = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--leader-elect needs POD_NAME or HOSTNAME to name this replica"
                    )
                })?;
            Some(Arc::new(LeaderElection::new(
                kube::Api::namespaced(client.clone(), &namespace),
                leader::LEASE_NAME,
                identity,
                Duration::from_secs(args.lease_duration),
            )))
        }
        _ => None,
    };
    let settings = Settings {
        namespace: args.namespace,
        default_image: args.default_image,
        postgres_image: args.postgres_image,
        http_listener,
        leader_election,
        shared_cleanup_timeout: Duration::from_secs(args.shared_cleanup_timeout),
        debounce: Duration::from_millis(args.debounce_ms),
        concurrency: args.concurrency,
    };
    controller::run(client, settings, shop_kit::server::shutdown_signal()).await
}
