//! `shop load` against a real `shop up` (SQLite): the mix reaches every operation, checkouts
//! included, and nothing answers with an error.

mod common;

use std::process::{Command, Output};

use common::{SHOP, SHOP_UP_PORTS, TempDir, free_ports, interrupt, shop_up};
use serde_json::Value;

fn shop_load(args: &[&str]) -> Output {
    Command::new(SHOP)
        .arg("load")
        .args(args)
        .output()
        .expect("running shop load")
}

fn report_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "shop load failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the --json report is JSON")
}

fn operation<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

const NOT_CHECKOUT: [&str; 8] = [
    "GET /api/products",
    "GET /api/products/{id}",
    "GET /api/categories",
    "GET /api/products?q=",
    "GET /api/products?category=",
    "PUT /api/cart/items/{id}",
    "DELETE /api/cart/items/{id}",
    "GET /api/cart",
];

#[tokio::test]
async fn the_mix_reaches_every_operation_without_errors() {
    let data = TempDir::new();
    let port = free_ports(SHOP_UP_PORTS);
    // One client address sending flat out: the per-address limit would turn it into 429s.
    let shop = shop_up(
        &data,
        port,
        &[],
        &[("SHOP_RATE_LIMIT_PER_SECOND", "0".into())],
    )
    .await;
    let url = format!("http://127.0.0.1:{port}");

    // Closed loop, the default mix (checkouts included), weighted so the rarer operations show up
    // in two seconds.
    let closed = report_of(&shop_load(&[
        "--url",
        &url,
        "--concurrency",
        "4",
        "--duration",
        "2",
        "--weights",
        "browse=40,search=25,cart=25,checkout=10",
        "--json",
    ]));
    assert_eq!(closed["pacing"]["mode"], "closed");
    assert_eq!(closed["pacing"]["concurrency"], 4);
    for name in NOT_CHECKOUT {
        let op = operation(&closed, name);
        assert!(op["count"].as_u64().unwrap() > 0, "{name} never ran");
        assert_eq!(op["errors"], 0, "{name}: {op:#}");
        assert!(op["p99_ms"].as_f64().unwrap() >= op["p50_ms"].as_f64().unwrap());
    }
    let checkout = operation(&closed, "POST /api/orders");
    assert!(checkout["count"].as_u64().unwrap() > 0);
    assert_eq!(checkout["errors"], 0, "{checkout:#}");
    let groups: Vec<&str> = closed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["browse", "search", "cart", "checkout"]);

    // Open loop: the requests started match the rate, whatever the answers.
    let open = report_of(&shop_load(&[
        "--url",
        &url,
        "--rate",
        "100",
        "--users",
        "3",
        "--duration",
        "2",
        "--weights",
        "checkout=0",
        "--json",
    ]));
    assert_eq!(open["pacing"]["mode"], "open");
    let total = open["total"]["count"].as_u64().unwrap();
    assert!(
        (190..=201).contains(&total),
        "{total} requests at 100/s for 2 s"
    );
    assert_eq!(open["total"]["errors"], 0, "{open:#}");
    assert!(
        open["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["name"] != "checkout")
    );

    interrupt(shop).await;
}

#[test]
fn bad_arguments_are_refused_before_any_traffic() {
    // Nothing listens on port 9: a run that got past the arguments would fail differently.
    for (args, says) in [
        (
            &["--concurrency", "5", "--rate", "5"][..],
            "cannot be used with",
        ),
        (&["--rate", "0"], "--rate must be above 0"),
        (&["--duration", "0"], "--duration must be at least 1 second"),
        (
            &["--weights", "browse=0,search=0,cart=0,checkout=0"],
            "above 0",
        ),
        (&["--cards", "platinum=1"], "unknown key `platinum`"),
    ] {
        let mut all = vec!["--url", "http://127.0.0.1:9"];
        all.extend_from_slice(args);
        let output = shop_load(&all);
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
