//! Twice the load the shop can carry: an open loop at 2× the throughput measured in the same
//! run, for 60 s. The shop sheds what it cannot serve with `503` (each service admits a bounded
//! number of requests and queues a bounded number for a bounded time), the requests it accepts
//! keep a bounded p99, memory stays bounded, and latency is back to normal within 5 s of the
//! load dropping.
//!
//! The services run with small admission limits (24 in flight, 24 queued) so that a load client
//! of 100 virtual users can exceed them; the defaults are larger (see the README).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::stack::{Bus, Stack, Storage};
use shop::load::LoadArgs;

const IN_FLIGHT: usize = 24;
const OVERLOAD_SECS: u64 = 60;
/// Back to normal latency within this long after the load drops.
const RECOVERY: Duration = Duration::from_secs(5);

fn limits(_service: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SHOP_MAX_IN_FLIGHT", IN_FLIGHT.to_string()),
        ("SHOP_MAX_QUEUED", IN_FLIGHT.to_string()),
        ("SHOP_QUEUE_TIMEOUT_MS", "500".into()),
    ]
}

fn load(stack: &Stack, concurrency: Option<u32>, rate: Option<f64>, duration: u64) -> LoadArgs {
    LoadArgs {
        url: stack.url("gateway"),
        concurrency,
        rate,
        users: rate.map(|_| 100),
        duration,
        warmup: 0,
        weights: Default::default(),
        cards: Default::default(),
        json: false,
    }
}

/// `count` product listings, one every 50 ms: when each was sent (from `since`), how long it
/// took, and its status.
async fn listings(stack: &Stack, count: usize, since: Instant) -> Vec<(Duration, Duration, u16)> {
    let mut answers = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        let status = stack
            .client
            .get(stack.api("/products?limit=20"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        answers.push((started - since, started.elapsed(), status));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_capacity_is_shed_and_what_is_accepted_stays_fast() {
    let stack = Stack::start_with(Storage::Sqlite, Bus::Local, limits)
        .await
        .unwrap();

    // Capacity: the closed loop's throughput at as many clients as a service admits.
    let (_, capacity) = shop::load::execute(&load(&stack, Some(IN_FLIGHT as u32), None, 8))
        .await
        .expect("the capacity run");
    capacity.print();
    let capacity_per_second = capacity.total.per_second;
    let baseline = listings(&stack, 20, Instant::now()).await;
    let normal =
        baseline.iter().map(|(_, took, _)| *took).max().unwrap() * 2 + Duration::from_millis(20);
    let resident_before = stack.resident_mib();

    // Twice that, open loop; memory sampled every second meanwhile.
    let rate = 2.0 * capacity_per_second;
    let overload = tokio::spawn(shop::load::execute_owned(load(
        &stack,
        None,
        Some(rate),
        OVERLOAD_SECS,
    )));
    let mut peak: BTreeMap<&str, f64> = BTreeMap::new();
    while !overload.is_finished() {
        for (service, mib) in stack.resident_mib() {
            let entry = peak.entry(service).or_default();
            *entry = entry.max(mib);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (_, report) = overload.await.unwrap().expect("the overload run");
    let dropped_at = Instant::now();
    report.print();

    // Back to normal: every listing within `normal` from some moment within RECOVERY on.
    let after = listings(&stack, 100, dropped_at).await;
    let recovered_in = after
        .iter()
        .filter(|(_, took, status)| *took > normal || *status != 200)
        .map(|(sent, took, _)| *sent + *took)
        .max()
        .unwrap_or_default();

    let total = &report.total;
    let accepted_p99 = total.accepted_p99_ms.unwrap();
    eprintln!(
        "overload: capacity {capacity_per_second:.0} requests/s (closed loop, {IN_FLIGHT} \
         clients); offered {rate:.0}/s for {OVERLOAD_SECS} s: accepted {} ({:.0}/s), shed {} \
         (503), p99 of the accepted {accepted_p99:.0} ms; normal latency (≤ {normal:?}) again \
         {recovered_in:?} after; resident MiB before {resident_before:?}, peak {peak:?}",
        total.accepted,
        total.accepted as f64 / report.elapsed_s,
        total.shed,
    );
    assert!(
        total.errors_besides_shed().is_empty(),
        "errors other than shedding: {:?}",
        total.error_kinds
    );
    assert!(
        total.shed > 0,
        "twice the capacity was offered and nothing was shed"
    );
    assert!(
        total.accepted as f64 >= 0.5 * capacity_per_second * report.elapsed_s,
        "the shop kept serving at least half its capacity while shedding"
    );
    // Queued at most 500 ms per service, then handled with a bounded number in flight.
    assert!(
        accepted_p99 < 3_000.0,
        "p99 of the accepted requests {accepted_p99} ms"
    );
    for (service, mib) in &peak {
        let before = resident_before.get(service).copied().unwrap_or_default();
        assert!(
            *mib <= before * 2.0 + 32.0,
            "{service}: resident {mib:.1} MiB at peak, {before:.1} MiB before"
        );
    }
    assert!(
        recovered_in <= RECOVERY,
        "latency back to normal only {recovered_in:?} after the load dropped"
    );
}
