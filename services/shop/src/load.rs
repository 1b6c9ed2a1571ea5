//! `shop load`: closed-loop load through the gateway, with throughput and latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The gateway to drive.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Concurrent connections, each sending its next request when the last one is answered.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

/// What one scenario measured.
pub struct Outcome {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sorted, in microseconds.
    latencies_us: Vec<u32>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index =
            ((self.latencies_us.len() as f64 * p) as usize).min(self.latencies_us.len() - 1);
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

/// A path to request, given a running counter (so scenarios can vary what they ask for).
pub type PathFn = Arc<dyn Fn(u64) -> String + Send + Sync>;

pub fn client(connections: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .context("building the load client")
}

/// Runs `connections` request loops against `base` for `duration`.
pub async fn drive(
    client: &reqwest::Client,
    name: &str,
    base: &str,
    path: PathFn,
    connections: usize,
    duration: Duration,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + duration;
    let mut loops = tokio::task::JoinSet::new();
    for worker in 0..connections as u64 {
        let (client, base, path) = (client.clone(), base.to_owned(), path.clone());
        loops.spawn(async move {
            let (mut latencies, mut errors, mut n) =
                (Vec::with_capacity(65_536), 0u64, worker * 1_000_003);
            while Instant::now() < deadline {
                n += 1;
                let sent = Instant::now();
                let ok = match client.get(format!("{base}{}", path(n))).send().await {
                    Ok(response) => {
                        response.status().is_success() && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                errors += u64::from(!ok);
            }
            (latencies, errors)
        });
    }
    let (mut latencies_us, mut errors) = (Vec::new(), 0);
    while let Some(Ok((l, e))) = loops.join_next().await {
        latencies_us.extend(l);
        errors += e;
    }
    latencies_us.sort_unstable();
    Outcome {
        name: name.to_owned(),
        requests: latencies_us.len() as u64,
        errors,
        elapsed: started.elapsed(),
        latencies_us,
    }
}

pub fn print_header() {
    println!(
        "  {:<34} {:>10} {:>8} {:>8} {:>7} {:>8}",
        "scenario", "req/s", "p50 ms", "p99 ms", "errors", "ceiling"
    );
}

pub fn print_row(outcome: &Outcome, ceiling: Option<&Outcome>) {
    let share = ceiling.map_or_else(String::new, |c| {
        format!("{:.0} %", 100.0 * outcome.per_second() / c.per_second())
    });
    println!(
        "  {:<34} {:>10.0} {:>8.2} {:>8.2} {:>7} {:>8}",
        outcome.name,
        outcome.per_second(),
        outcome.percentile_ms(0.50),
        outcome.percentile_ms(0.99),
        outcome.errors,
        share
    );
}

/// Product ids to read, taken from the catalog through the gateway.
pub async fn product_ids(client: &reqwest::Client, gateway: &str) -> Result<Arc<Vec<String>>> {
    let page: serde_json::Value = client
        .get(format!("{gateway}/api/products?limit=100"))
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<String> = page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| p["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        bail!("the catalog at {gateway} returned no products");
    }
    Ok(Arc::new(ids))
}

pub const SEARCH_TERMS: [&str; 8] = [
    "kettle", "lantern", "blanket", "classic", "puzzle", "mat", "compact", "deluxe",
];

/// The read scenarios every benchmark runs through the gateway.
pub async fn read_scenarios(
    client: &reqwest::Client,
    gateway: &str,
    connections: usize,
    duration: Duration,
) -> Result<Vec<Outcome>> {
    let ids = product_ids(client, gateway).await?;
    let by_id: PathFn = Arc::new(move |n| format!("/api/products/{}", ids[n as usize % ids.len()]));
    let search: PathFn = Arc::new(|n| {
        format!(
            "/api/products?q={}&limit=20",
            SEARCH_TERMS[n as usize % SEARCH_TERMS.len()]
        )
    });
    Ok(vec![
        drive(
            client,
            "GET /api/products/{id} (gateway)",
            gateway,
            by_id,
            connections,
            duration,
        )
        .await,
        drive(
            client,
            "GET /api/products?q= (gateway)",
            gateway,
            search,
            connections,
            duration,
        )
        .await,
    ])
}

pub async fn run(args: LoadArgs) -> Result<()> {
    let client = client(args.connections)?;
    let gateway = args.url.trim_end_matches('/');
    println!(
        "driving {gateway} with {} connections, {} s per scenario\n",
        args.connections, args.duration
    );
    let outcomes = read_scenarios(
        &client,
        gateway,
        args.connections,
        Duration::from_secs(args.duration),
    )
    .await?;
    print_header();
    for outcome in &outcomes {
        print_row(outcome, None);
    }
    Ok(())
}
