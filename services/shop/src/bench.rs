//! `shop bench`: starts a whole shop (SQLite, or PostgreSQL with `--database-url`) and a bare axum
//! endpoint, drives the `shop load` mix through the gateway and the ceiling with the same client in
//! the same run, and prints latency, errors and each service's memory against the targets.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::get;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use shop::load::{self, CardWeights, Classified, Group, LoadArgs, Row, Samples, Weights};
use shop::up::{self, UpArgs};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Concurrent clients, for the mix and for the ceiling.
    #[arg(long, visible_alias = "connections", default_value_t = load::DEFAULT_CONCURRENCY)]
    pub concurrency: u32,
    /// Seconds measured, for the mix and for the ceiling.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds of load before each measurement.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// The first of the loopback ports to use (the ceiling server takes the one before it).
    #[arg(long, default_value_t = 18081)]
    pub port: u16,
    /// Run the shop on this PostgreSQL server (an admin URL) instead of SQLite. The benchmark uses
    /// its own databases, shop_bench_<service>, fresh each run and dropped at the end.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The mix's weights, as for `shop load`.
    #[arg(long, default_value_t = Weights::default())]
    pub weights: Weights,
    /// The checkouts' test cards, as for `shop load`.
    #[arg(long, default_value_t = CardWeights::default())]
    pub cards: CardWeights,
    /// A soak instead: the mix for this many minutes, no ceiling, sampling every service's
    /// resident memory, open file descriptors and database connections as it runs, and printing
    /// how fast each grows.
    #[arg(long, value_name = "MINUTES")]
    pub soak: Option<u64>,
    /// With --soak: seconds between samples.
    #[arg(long, default_value_t = 30, requires = "soak")]
    pub sample_every: u64,
}

/// The admin `shop up` names (`SHOP_ADMIN_EMAILS`), whom the benchmark registers to restock.
const ADMIN_EMAIL: &str = "admin@shop.local";
/// Every product's stock before the mix: more than any run sells (the seed is 100 a product).
const RESTOCK_ON_HAND: i64 = 1_000_000;

/// The benchmark's own databases on a `--database-url` server, apart from a `shop up`'s.
const DATABASE_PREFIX: &str = "shop_bench";

/// The targets of issues 5 and 15, at 50 concurrent clients.
const BROWSE_P99_MS: f64 = 20.0;
const SEARCH_P99_MS: f64 = 25.0;
const CART_P99_MS: f64 = 25.0;
const CHECKOUT_P99_MS: f64 = 150.0;
/// Three times the mix's 1,419 requests/s measured on SQLite when issue 15 was filed.
const MIX_PER_SECOND: f64 = 4200.0;
const SHOP_RSS_MIB: f64 = 200.0;
const SERVICE_RSS_MIB: f64 = 48.0;
/// The storefront's targets (issue 13), in the `browse-pages` mix at 50 concurrent clients.
const PAGE_P99_MS: f64 = 30.0;
const STOREFRONT_RSS_MIB: f64 = 32.0;

/// CPU time (user and system) `pid` has used, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    shop_kit::metrics::ProcessStats::of(pid).cpu_seconds
}

/// The ceiling: one axum route answering a fixed product as JSON, nothing else in the way.
pub async fn ceiling(listen: std::net::SocketAddr) -> Result<()> {
    let product = serde_json::json!({
        "id": "47c760a6-4881-5546-97c1-c5d40ade3c1c", "sku": "KIT-01A", "name": "Classic Kettle",
        "description": "The classic kettle from our kitchen range: built to last, priced to please.",
        "price": {"amount": 499, "currency": "USD"}, "categories": ["kitchen"], "image_url": "/images/kitchen/kit-01a.svg"
    });
    let app = Router::new().route("/product", get(move || async move { axum::Json(product) }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shop_kit::server::shutdown_signal())
        .await?;
    Ok(())
}

/// A process's memory, in MiB, from /proc.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Resident now (`VmRSS`): counts every page it maps, also those it shares.
    rss: f64,
    /// Resident at its peak (`VmHWM`).
    peak: f64,
    /// Its proportional share (`Pss`): a page shared by n processes counts 1/n in each, so the
    /// shares of all the shop's processes add up to the memory the shop holds. Every service is
    /// the same `shop` binary, and its code, counted once per process, is most of a small
    /// service's RSS.
    pss: f64,
}

fn memory_mib(pid: Pid) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mib = |text: &str, key: &str| Some(shop_kit::metrics::proc_kib(text, key)? as f64 / 1024.0);
    Some(Memory {
        rss: mib(&status, "VmRSS:")?,
        peak: mib(&status, "VmHWM:")?,
        pss: mib(&rollup, "Pss:")?,
    })
}

/// The ceiling under the same closed loop as the mix: `concurrency` clients, one fixed GET each.
async fn drive_ceiling(
    client: &reqwest::Client,
    url: &str,
    concurrency: u32,
    warmup: Duration,
    duration: Duration,
) -> Row {
    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_owned());
        loops.spawn(async move {
            let mut samples = Samples::default();
            while Instant::now() < until {
                let sent = Instant::now();
                let classified = match client.get(&url).send().await {
                    Ok(r) if !r.status().is_success() => {
                        Classified::Error(format!("HTTP {}", r.status().as_u16()))
                    }
                    Ok(r) => match r.bytes().await {
                        Ok(_) => Classified::Success,
                        Err(_) => Classified::Error("transport error".into()),
                    },
                    Err(_) => Classified::Error("transport error".into()),
                };
                if sent >= measure_from {
                    samples.record(sent.elapsed(), classified);
                }
            }
            samples
        });
    }
    let mut all = Samples::default();
    while let Some(Ok(samples)) = loops.join_next().await {
        all.merge(samples);
    }
    all.into_row("bare axum JSON endpoint (ceiling)", duration)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn print_target(what: &str, target: &str, measured: Option<f64>, unit: &str, met: Option<bool>) {
    let measured = measured.map_or_else(|| "not measured".to_owned(), |m| format!("{m:.2}{unit}"));
    println!(
        "  {:<28} {:>10} {:>14}  {}",
        what,
        target,
        measured,
        met.map_or("", verdict)
    );
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let data = std::env::temp_dir().join(format!("shop-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    if let Some(admin) = &args.database_url {
        // A fresh start: what an earlier run left would skew the numbers.
        up::drop_databases(admin, DATABASE_PREFIX)
            .await
            .context("dropping the benchmark's databases of an earlier run")?;
    }
    let shop = up::start(&UpArgs {
        data_dir: data.clone(),
        port: args.port,
        host: [127, 0, 0, 1].into(),
        database_url: args.database_url.clone(),
        database_prefix: DATABASE_PREFIX.into(),
        // Quiet services and no rate limit: the benchmark is one client address sending flat out.
        env: vec![
            ("SHOP_LOG".into(), "warn".into()),
            ("SHOP_RATE_LIMIT_PER_SECOND".into(), "0".into()),
        ],
    })
    .await?;
    let result = match args.soak {
        Some(minutes) => soak(&args, &shop, minutes).await,
        None => measure(&args, &shop).await,
    };
    shop.stop().await;
    if let Some(admin) = &args.database_url {
        up::drop_databases(admin, DATABASE_PREFIX).await?;
    }
    let _ = std::fs::remove_dir_all(&data);
    result
}

/// What a soak samples of the whole shop at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    minutes: f64,
    resident_mib: f64,
    open_files: f64,
    database_connections: f64,
}

/// Open file descriptors of `pid`, and how many of them are SQLite database files (one per
/// connection: the `-wal` and `-shm` files are not counted).
fn descriptors(pid: Pid) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let targets: Vec<_> = entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    let databases = targets
        .iter()
        .filter(|t| t.extension().is_some_and(|e| e == "db"))
        .count();
    (targets.len(), databases)
}

/// Connections to the benchmark's own databases on the PostgreSQL server of `admin`.
async fn postgres_connections(admin: &str) -> Result<f64> {
    use sqlx::Connection;
    let mut server = sqlx::PgConnection::connect(admin).await?;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE $1 || '\\_%'")
            .bind(DATABASE_PREFIX)
            .fetch_one(&mut server)
            .await?;
    server.close().await?;
    Ok(count as f64)
}

async fn sample(shop: &up::Shop, database_url: Option<&str>, started: Instant) -> Sample {
    let mut sample = Sample {
        minutes: started.elapsed().as_secs_f64() / 60.0,
        ..Sample::default()
    };
    for running in &shop.running {
        sample.resident_mib += memory_mib(running.pid).map_or(0.0, |m| m.rss);
        let (files, databases) = descriptors(running.pid);
        sample.open_files += files as f64;
        sample.database_connections += databases as f64;
    }
    if let Some(admin) = database_url {
        sample.database_connections = postgres_connections(admin).await.unwrap_or(f64::NAN);
    }
    sample
}

/// The least-squares slope of `value` over the samples' minutes, per minute.
fn slope_per_minute(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> f64 {
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.minutes).sum::<f64>() / n;
    let mean_v = samples.iter().map(&value).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for s in samples {
        covariance += (s.minutes - mean_t) * (value(s) - mean_v);
        variance += (s.minutes - mean_t).powi(2);
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

/// `shop bench --soak MINUTES`: the mix for that long, sampled every `--sample-every` seconds.
async fn soak(args: &BenchArgs, shop: &up::Shop, minutes: u64) -> Result<()> {
    anyhow::ensure!(minutes > 0, "--soak must be at least 1 minute");
    let gateway = shop.url(shop::ServiceName::Gateway).to_owned();
    load::restock(&gateway, ADMIN_EMAIL, RESTOCK_ON_HAND)
        .await
        .context("restocking before the soak")?;
    let backend = if args.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    eprintln!(
        "shop bench: soak of {minutes} min, {} clients, {backend}, a sample every {} s",
        args.concurrency, args.sample_every
    );
    let started = Instant::now();
    let mix = tokio::spawn(load::execute_owned(LoadArgs {
        url: gateway,
        concurrency: Some(args.concurrency),
        rate: None,
        users: None,
        duration: minutes * 60,
        warmup: 0,
        weights: args.weights,
        cards: args.cards,
        json: false,
    }));
    let mut samples = Vec::new();
    let mut every = tokio::time::interval(Duration::from_secs(args.sample_every.max(1)));
    println!(
        "\n  {:>8} {:>14} {:>12} {:>22}",
        "minute", "resident MiB", "open files", "database connections"
    );
    loop {
        every.tick().await;
        // A sample after the mix has ended would count its clients' connections closing.
        if mix.is_finished() {
            break;
        }
        let sample = sample(shop, args.database_url.as_deref(), started).await;
        println!(
            "  {:>8.1} {:>14.1} {:>12} {:>22}",
            sample.minutes, sample.resident_mib, sample.open_files, sample.database_connections
        );
        samples.push(sample);
    }
    let (_, report) = mix.await.context("the soak's load")??;
    println!();
    report.print();
    // The first minutes fill pools and caches: the slope is taken after them.
    let settled: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.minutes >= 2.0)
        .collect();
    let settled = if settled.len() >= 2 { settled } else { samples };
    println!(
        "\n  growth per minute after the first 2 minutes (least squares over {} samples):",
        settled.len()
    );
    for (what, unit, value) in [
        (
            "resident memory",
            "MiB",
            (|s: &Sample| s.resident_mib) as fn(&Sample) -> f64,
        ),
        ("open file descriptors", "", |s: &Sample| s.open_files),
        ("database connections", "", |s: &Sample| {
            s.database_connections
        }),
    ] {
        let first = settled.first().map_or(f64::NAN, &value);
        let last = settled.last().map_or(f64::NAN, &value);
        println!(
            "  {what:<24} {:>+9.3} {unit}/min   ({first:.1} → {last:.1})",
            slope_per_minute(&settled, value)
        );
    }
    println!(
        "  {:<24} {:>9}   {}\n",
        "errors",
        report.total.errors,
        verdict(report.total.errors == 0)
    );
    Ok(())
}

async fn measure(args: &BenchArgs, shop: &up::Shop) -> Result<()> {
    let ceiling_port = args.port - 1;
    let exe = std::env::current_exe()?;
    let mut ceiling = tokio::process::Command::new(exe)
        .args(["ceiling", "--listen", &format!("127.0.0.1:{ceiling_port}")])
        .kill_on_drop(true)
        .spawn()
        .context("starting the ceiling server")?;
    let ceiling_url = format!("http://127.0.0.1:{ceiling_port}/product");
    let client = load::client(args.concurrency as usize)?;
    let ready_deadline = Instant::now() + Duration::from_secs(10);
    while client.get(&ceiling_url).send().await.is_err() {
        anyhow::ensure!(
            Instant::now() < ready_deadline,
            "the ceiling server did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (warmup, duration) = (
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.duration),
    );
    let backend = if args.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    eprintln!(
        "shop bench: {} clients, {} s measured after {} s warm-up, {backend}, {} cores",
        args.concurrency,
        args.duration,
        args.warmup,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let ceiling_row =
        drive_ceiling(&client, &ceiling_url, args.concurrency, warmup, duration).await;
    if let Some(id) = ceiling.id() {
        let _ = kill(Pid::from_raw(id as i32), Signal::SIGTERM);
    }
    let _ = ceiling.wait().await;

    let gateway = shop.url(shop::ServiceName::Gateway).to_owned();
    let restocked = load::restock(&gateway, ADMIN_EMAIL, RESTOCK_ON_HAND)
        .await
        .context("restocking before the mix")?;
    eprintln!("shop bench: {restocked} products restocked to {RESTOCK_ON_HAND} as {ADMIN_EMAIL}");

    let pids: Vec<u32> = shop.running.iter().map(|r| r.pid.as_raw() as u32).collect();
    let cpu_of = |pids: &[u32]| -> Vec<f64> {
        pids.iter()
            .map(|&pid| cpu_seconds(pid).unwrap_or(f64::NAN))
            .collect()
    };
    let (client_before, shop_before) = (cpu_seconds(std::process::id()), cpu_of(&pids));
    let mix_started = Instant::now();
    let (_, report) = load::execute(&LoadArgs {
        url: gateway,
        concurrency: Some(args.concurrency),
        rate: None,
        users: None,
        duration: args.duration,
        warmup: args.warmup,
        weights: args.weights,
        cards: args.cards,
        json: false,
    })
    .await?;
    let mix_seconds = mix_started.elapsed().as_secs_f64();
    let client_cpu = cpu_seconds(std::process::id())
        .zip(client_before)
        .map(|(after, before)| after - before);
    let shop_cpu: Vec<f64> = cpu_of(&pids)
        .iter()
        .zip(&shop_before)
        .map(|(after, before)| after - before)
        .collect();
    let memory: Vec<_> = shop
        .running
        .iter()
        .map(|r| (r, memory_mib(r.pid)))
        .collect();

    println!(
        "\nshop bench: {} concurrent clients, {} s measured after {} s warm-up, {backend}; mix {}, cards {}\n",
        args.concurrency, args.duration, args.warmup, args.weights, args.cards
    );
    report.print();
    println!("\n  same run, same client:");
    println!(
        "  {:<34} {:>9.0} req/s   p50 {:.2} ms   p99 {:.2} ms   errors {}",
        ceiling_row.name,
        ceiling_row.per_second,
        ceiling_row.p50_ms.unwrap_or(f64::NAN),
        ceiling_row.p99_ms.unwrap_or(f64::NAN),
        ceiling_row.errors
    );
    // Where the machine's cores went during the mix (warm-up included): the load client shares
    // them with the shop, and its share is time the shop did not have.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let share = |seconds: f64| 100.0 * seconds / (mix_seconds * cores);
    let shop_total: f64 = shop_cpu.iter().filter(|s| s.is_finite()).sum();
    println!(
        "\n  CPU during the mix ({mix_seconds:.1} s with warm-up, {cores} cores = 100 %): shop {:.1} %, load client {}, idle or other {:.1} %",
        share(shop_total),
        client_cpu.map_or("not measured".to_owned(), |c| format!("{:.1} %", share(c))),
        100.0 - share(shop_total) - client_cpu.map_or(0.0, share)
    );
    println!(
        "\n  {:<10} {:>16} {:>16} {:>16} {:>22} {:>14}",
        "service",
        "RSS at end (MiB)",
        "peak RSS (MiB)",
        "PSS at end (MiB)",
        "ready after start (ms)",
        "CPU share (%)"
    );
    for ((running, mib), cpu) in memory.iter().zip(&shop_cpu) {
        let (now, peak, pss) = mib.map_or(("-".into(), "-".into(), "-".into()), |m| {
            (
                format!("{:.1}", m.rss),
                format!("{:.1}", m.peak),
                format!("{:.1}", m.pss),
            )
        });
        println!(
            "  {:<10} {:>16} {:>16} {:>16} {:>22} {:>14.1}",
            running.service.as_str(),
            now,
            peak,
            pss,
            running.ready_after.as_millis(),
            share(*cpu)
        );
    }

    println!(
        "\n  targets (issues 5 and 15, at 50 concurrent clients; measured at {}):",
        args.concurrency
    );
    println!("  {:<28} {:>10} {:>14}", "", "target", "measured");
    let p99 = |g| report.group(g).and_then(|r| r.p99_ms);
    for (what, group, target) in [
        ("browse p99", Group::Browse, BROWSE_P99_MS),
        ("search p99", Group::Search, SEARCH_P99_MS),
        ("cart p99", Group::Cart, CART_P99_MS),
        ("checkout p99", Group::Checkout, CHECKOUT_P99_MS),
    ] {
        let measured = p99(group);
        print_target(
            what,
            &format!("≤ {target} ms"),
            measured,
            " ms",
            measured.map(|v| v <= target),
        );
    }
    let throughput = report.total.per_second;
    print_target(
        "mix throughput",
        &format!("≥ {MIX_PER_SECOND} /s"),
        Some(throughput),
        " /s",
        Some(throughput >= MIX_PER_SECOND),
    );
    println!(
        "  {:<28} {:>10} {:>14}",
        "  as a share of the ceiling",
        "",
        format!("{:.1} %", 100.0 * throughput / ceiling_row.per_second)
    );
    if args.weights.pages > 0 {
        let pages = p99(Group::Pages);
        print_target(
            "storefront page p99",
            &format!("≤ {PAGE_P99_MS} ms"),
            pages,
            " ms",
            pages.map(|v| v <= PAGE_P99_MS),
        );
        let storefront = memory
            .iter()
            .find(|(r, _)| r.service == shop::ServiceName::Storefront)
            .and_then(|(_, mib)| mib.map(|m| m.peak));
        print_target(
            "storefront peak RSS",
            &format!("≤ {STOREFRONT_RSS_MIB} MiB"),
            storefront,
            " MiB",
            storefront.map(|v| v <= STOREFRONT_RSS_MIB),
        );
    }
    let errors = report.total.errors;
    println!(
        "  {:<28} {:>10} {:>14}  {}",
        "errors",
        "0",
        errors,
        verdict(errors == 0)
    );
    // The whole shop's memory is its processes' proportional shares: a sum of their RSS counts
    // the one binary's pages once per process (printed too, as the upper bound it is).
    let whole = |of: fn(&Memory) -> f64| -> f64 {
        memory
            .iter()
            .filter_map(|(_, mib)| mib.as_ref().map(of))
            .sum()
    };
    print_target(
        "whole shop memory (PSS) at end",
        &format!("≤ {SHOP_RSS_MIB} MiB"),
        Some(whole(|m| m.pss)),
        " MiB",
        Some(whole(|m| m.pss) <= SHOP_RSS_MIB),
    );
    println!(
        "  {:<28} {:>10} {:>10.2} MiB  (each process's shared pages counted in full)",
        "  sum of the services' RSS",
        "",
        whole(|m| m.rss)
    );
    for (running, mib) in &memory {
        let now = mib.map(|m| m.rss);
        print_target(
            &format!("{} RSS at end", running.service.as_str()),
            &format!("≤ {SERVICE_RSS_MIB} MiB"),
            now,
            " MiB",
            now.map(|v| v <= SERVICE_RSS_MIB),
        );
    }
    println!();
    Ok(())
}
