//! PostgreSQL stopped for 10 s and started again while `shop load` runs the full mix: every
//! answer during the outage is a fast `503` with `Retry-After`, no request waits past its
//! timeout, the services' pools recover on their own within seconds of the server's return, and
//! afterwards every order is CONFIRMED or FAILED with stock and charges to match.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::stack::{Bus, Stack, Storage, eventually, standing};
use serde_json::Value;
use shop::load::LoadArgs;
use shop_kit::testing::PostgresServer;
use sqlx::{Connection, PgConnection};

const OUTAGE: Duration = Duration::from_secs(10);
/// The load's virtual users.
const USERS: u32 = 8;
/// What a service may take to notice the server is gone: a request already waiting for a
/// connection waits out the pool's acquire timeout (2 s) once.
const NOTICE: Duration = Duration::from_secs(3);
/// How soon after the server's return every probe must be answered again.
const RECOVERY: Duration = Duration::from_secs(5);
/// Customer-facing reads, one per database behind them, asked every 100 ms.
const PROBES: [&str; 3] = ["/products?limit=3", "/cart", "/orders"];

/// One probe's answer.
struct Answer {
    path: &'static str,
    /// When it was sent, from the start of the test.
    sent: Duration,
    took: Duration,
    status: u16,
    retry_after: Option<String>,
}

async fn rows(url: &str, sql: &str) -> Vec<sqlx::postgres::PgRow> {
    let mut connection = PgConnection::connect(url).await.unwrap();
    let rows = sqlx::query(sql).fetch_all(&mut connection).await.unwrap();
    connection.close().await.unwrap();
    rows
}

/// Units on hand per product, and the units still reserved anywhere.
async fn stock(stack: &Stack) -> (BTreeMap<String, i64>, i64) {
    use sqlx::Row;
    let rows = rows(
        stack.database_url("inventory"),
        "SELECT product_id, on_hand, reserved FROM stock",
    )
    .await;
    let on_hand = rows
        .iter()
        .map(|row| (row.get("product_id"), row.get("on_hand")))
        .collect();
    let reserved = rows.iter().map(|row| row.get::<i64, _>("reserved")).sum();
    (on_hand, reserved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_rides_out_a_database_restart_under_load() {
    use sqlx::Row;
    let Some(server) = PostgresServer::start().await else {
        return;
    };
    let stack = Stack::start(Storage::PostgresAt(server.admin_url.clone()), Bus::Local)
        .await
        .unwrap();
    let (on_hand_before, _) = stock(&stack).await;
    let prober = stack.customer("prober").await;
    let started = Instant::now();

    let load = tokio::spawn(shop::load::execute_owned(LoadArgs {
        url: stack.url("gateway"),
        concurrency: Some(USERS),
        rate: None,
        users: None,
        duration: 30,
        warmup: 0,
        weights: Default::default(),
        cards: Default::default(),
        json: false,
    }));
    let probing = Arc::new(AtomicBool::new(true));
    let probes = tokio::spawn({
        let (client, api, token, probing) = (
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            stack.api(""),
            prober.token.clone(),
            probing.clone(),
        );
        async move {
            let mut answers = Vec::new();
            while probing.load(Ordering::Relaxed) {
                for path in PROBES {
                    let sent = started.elapsed();
                    let response = client
                        .get(format!("{api}{path}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("GET {path} got no answer: {e}"));
                    answers.push(Answer {
                        path,
                        sent,
                        took: started.elapsed() - sent,
                        status: response.status().as_u16(),
                        retry_after: response
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_owned()),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        }
    });

    // The outage starts once the load's users are registered and its mix is running.
    let users_url = stack.database_url("user").to_owned();
    eventually(
        "the load's users registered",
        Duration::from_secs(60),
        || async {
            let count: i64 = rows(&users_url, "SELECT count(*) AS n FROM users").await[0].get("n");
            (count > i64::from(USERS)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The outage's edges as the probes can see them: the server may still answer while its
    // shutdown runs (until `stopped_at`), and may answer again before the script that starts it
    // has returned (from `resuming_at`).
    let down_at = started.elapsed();
    server.pause().await;
    let stopped_at = started.elapsed();
    tokio::time::sleep(OUTAGE).await;
    let resuming_at = started.elapsed();
    server.resume().await;
    let up_at = started.elapsed();

    let (_, report) = load.await.unwrap().expect("the load ran");
    probing.store(false, Ordering::Relaxed);
    let answers = probes.await.unwrap();

    report.print();
    let total = &report.total;
    let max_ms = total.max_ms.unwrap();
    // The probes: during the outage 503s with Retry-After, fast once noticed; after it, 200s
    // again within RECOVERY.
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.sent >= down_at && a.sent + a.took < resuming_at)
        .collect();
    // The load: every failure is a 503, none waited out a client timeout.
    assert!(
        total.errors_besides_shed().is_empty(),
        "errors other than 503 under the outage: {:?}",
        total.error_kinds
    );
    assert!(
        max_ms < 10_000.0,
        "a request took {max_ms} ms (the services' request timeout is 10 s)"
    );
    for answer in &during {
        assert!(
            answer.status == 200 || answer.status == 503,
            "GET {} answered {} during the outage",
            answer.path,
            answer.status
        );
        if answer.status == 503 {
            assert!(
                answer.retry_after.is_some(),
                "GET {}: a 503 without Retry-After",
                answer.path
            );
        }
        assert!(
            answer.took <= NOTICE,
            "GET {} took {:?} during the outage",
            answer.path,
            answer.took
        );
    }
    let settled: Vec<&&Answer> = during
        .iter()
        .filter(|a| a.sent >= stopped_at + NOTICE)
        .collect();
    let answered: Vec<String> = settled
        .iter()
        .filter(|a| a.status != 503)
        .map(|a| {
            format!(
                "GET {} sent {:?} after the server stopped: {}",
                a.path,
                a.sent - stopped_at,
                a.status
            )
        })
        .collect();
    assert!(
        answered.is_empty(),
        "every probe fails once the outage is noticed (the shutdown took {:?}, the restart \
         began {:?} after it): {answered:?}",
        stopped_at - down_at,
        resuming_at - stopped_at
    );
    let mut fast: Vec<Duration> = settled.iter().map(|a| a.took).collect();
    fast.sort();
    let p99 = fast[(fast.len() * 99).div_ceil(100) - 1];
    assert!(
        p99 < Duration::from_millis(500),
        "503s during the outage: p99 {p99:?}"
    );
    let mut back_after = BTreeMap::new();
    for path in PROBES {
        let last_failure = answers
            .iter()
            .filter(|a| a.path == path && a.status != 200)
            .map(|a| a.sent + a.took)
            .max()
            .unwrap_or(up_at);
        let back = last_failure.saturating_sub(up_at);
        assert!(
            back <= RECOVERY,
            "GET {path} failed until {back:?} after the database's return"
        );
        assert!(
            answers
                .iter()
                .any(|a| a.path == path && a.sent > last_failure && a.status == 200),
            "GET {path} answered again after the outage"
        );
        back_after.insert(path, back);
    }
    eprintln!(
        "database restart: {} probes during the {OUTAGE:?} outage, {} of them 503 (p99 once \
         noticed {p99:?}, max {:?}); answering again after {back_after:?}; the load: {} requests, \
         {} errors (all 503), max {max_ms} ms",
        during.len(),
        during.iter().filter(|a| a.status == 503).count(),
        during.iter().map(|a| a.took).max().unwrap_or_default(),
        total.count,
        total.errors,
    );

    // Every order ends CONFIRMED or FAILED; stock and charges agree with the outcomes.
    let order_url = stack.database_url("order").to_owned();
    let orders = eventually(
        "every order CONFIRMED or FAILED",
        Duration::from_secs(90),
        || async {
            let orders = rows(&order_url, "SELECT id, status, items FROM orders").await;
            orders
                .iter()
                .all(|o| matches!(o.get::<&str, _>("status"), "CONFIRMED" | "FAILED"))
                .then_some(orders)
        },
    )
    .await;
    let mut sold: BTreeMap<String, i64> = BTreeMap::new();
    let (mut confirmed, mut failed) = (0, 0);
    for order in &orders {
        let id: &str = order.get("id");
        let charges = standing(&stack.charges(id).await);
        if order.get::<&str, _>("status") == "CONFIRMED" {
            confirmed += 1;
            assert_eq!(charges, 1, "order {id} is CONFIRMED: one charge");
            let items: Vec<Value> = serde_json::from_str(order.get("items")).unwrap();
            for item in items {
                *sold
                    .entry(item["product_id"].as_str().unwrap().to_owned())
                    .or_default() += item["quantity"].as_i64().unwrap();
            }
        } else {
            failed += 1;
            assert_eq!(charges, 0, "order {id} is FAILED: no charge standing");
        }
    }
    assert!(confirmed > 0, "some orders went through");
    let (on_hand_after, reserved) = eventually(
        "every reservation committed or released",
        Duration::from_secs(60),
        || async {
            let (on_hand, reserved) = stock(&stack).await;
            (reserved == 0).then_some((on_hand, reserved))
        },
    )
    .await;
    assert_eq!(reserved, 0);
    for (product, before) in &on_hand_before {
        assert_eq!(
            before - on_hand_after[product],
            sold.get(product).copied().unwrap_or_default(),
            "units of {product} gone = units in CONFIRMED orders"
        );
    }
    eprintln!("database restart: {confirmed} orders CONFIRMED, {failed} FAILED, all consistent");
}
