//! `shop bench`: starts a whole shop and a bare axum endpoint, measures both under the same load
//! in the same run, and prints throughput, latency, memory and start-up time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::get;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::load::{self, Outcome, PathFn};
use crate::up::{self, UpArgs};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds per scenario (after a warm-up of a quarter of that).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// The first of the loopback ports to use (the ceiling server takes the one before it).
    #[arg(long, default_value_t = 18081)]
    pub port: u16,
}

/// The ceiling: one axum route answering a fixed product as JSON, nothing else in the way.
pub async fn ceiling(listen: std::net::SocketAddr) -> Result<()> {
    let product = serde_json::json!({
        "id": "47c760a6-4881-5546-97c1-c5d40ade3c1c", "sku": "KIT-01A", "name": "Classic Kettle",
        "description": "The classic kettle from our kitchen range: built to last, priced to please.",
        "price": {"amount": 499, "currency": "USD"}, "categories": ["kitchen"], "image_url": "/images/kitchen/1.jpg"
    });
    let app = Router::new().route("/product", get(move || async move { axum::Json(product) }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shop_kit::server::shutdown_signal())
        .await?;
    Ok(())
}

/// Resident memory of a process in MiB, from /proc (Linux).
fn rss_mib(pid: Pid) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Runs `work` while sampling the peak memory of each process.
async fn with_peak_memory<T>(
    pids: &[Pid],
    work: impl std::future::Future<Output = T>,
) -> (T, Vec<f64>) {
    let peaks = Arc::new(std::sync::Mutex::new(vec![0.0f64; pids.len()]));
    let sampler = {
        let (pids, peaks) = (pids.to_vec(), peaks.clone());
        tokio::spawn(async move {
            loop {
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(rss) = rss_mib(*pid) {
                        let mut peaks = peaks.lock().expect("peaks lock");
                        peaks[i] = peaks[i].max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let result = work.await;
    sampler.abort();
    let peaks = peaks.lock().expect("peaks lock").clone();
    (result, peaks)
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let data = std::env::temp_dir().join(format!("shop-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let shop = up::start(&UpArgs {
        data_dir: data.clone(),
        port: args.port,
        host: [127, 0, 0, 1].into(),
        // Quiet services and no rate limit: the benchmark is one client sending flat out.
        env: vec![
            ("SHOP_LOG".into(), "warn".into()),
            ("SHOP_RATE_LIMIT_PER_SECOND".into(), "0".into()),
        ],
    })
    .await?;
    let ceiling_port = args.port - 1;
    let exe = std::env::current_exe()?;
    let mut ceiling = tokio::process::Command::new(exe)
        .args(["ceiling", "--listen", &format!("127.0.0.1:{ceiling_port}")])
        .kill_on_drop(true)
        .spawn()
        .context("starting the ceiling server")?;
    let ceiling_url = format!("http://127.0.0.1:{ceiling_port}");
    let client = load::client(args.connections)?;
    let ready_deadline = Instant::now() + Duration::from_secs(10);
    while client
        .get(format!("{ceiling_url}/product"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < ready_deadline,
            "the ceiling server did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let gateway = shop.url(crate::ServiceName::Gateway).to_owned();
    let duration = Duration::from_secs(args.duration);
    let warmup = duration / 4;
    println!(
        "\nshop bench: {} connections, {} s per scenario after a {} ms warm-up, {} cores\n",
        args.connections,
        args.duration,
        warmup.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm both paths (connection pools, SQLite page cache) before measuring.
    let fixed: PathFn = Arc::new(|_| "/product".to_owned());
    load::drive(
        &client,
        "warm-up",
        &ceiling_url,
        fixed.clone(),
        args.connections,
        warmup,
    )
    .await;
    load::read_scenarios(&client, &gateway, args.connections, warmup).await?;

    let ceiling_outcome: Outcome = load::drive(
        &client,
        "bare axum JSON (ceiling)",
        &ceiling_url,
        fixed,
        args.connections,
        duration,
    )
    .await;
    let pids: Vec<Pid> = shop.running.iter().map(|r| r.pid).collect();
    let (outcomes, peaks) = with_peak_memory(
        &pids,
        load::read_scenarios(&client, &gateway, args.connections, duration),
    )
    .await;
    let outcomes = outcomes?;

    load::print_header();
    load::print_row(&ceiling_outcome, None);
    for outcome in &outcomes {
        load::print_row(outcome, Some(&ceiling_outcome));
    }
    println!(
        "\n  {:<10} {:>16} {:>22}",
        "service", "peak RSS (MiB)", "ready after start (ms)"
    );
    for (running, peak) in shop.running.iter().zip(&peaks) {
        println!(
            "  {:<10} {:>16.1} {:>22}",
            running.service.as_str(),
            peak,
            running.ready_after.as_millis()
        );
    }
    println!();

    if let Some(id) = ceiling.id() {
        let _ = kill(Pid::from_raw(id as i32), Signal::SIGTERM);
    }
    let _ = ceiling.wait().await;
    shop.stop().await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
