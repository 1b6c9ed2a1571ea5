//! The disk under a service's SQLite file fills up: writes are answered `503`
//! `database-cannot-write` with `Retry-After` (not `500`), reads go on, nothing half-written is
//! kept, writes work again once there is room, and the file passes SQLite's integrity check.
//!
//! The catalog runs with its database on a 16 MiB tmpfs in a mount namespace of its own; the
//! test fills that disk through `/proc/<pid>/root` and frees it again.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{TempDir, free_ports, serve_on_small_disk};
use nix::sys::signal::Signal;
use reqwest::Client;
use serde_json::{Value, json};
use shop_kit::context::{USER_ID_HEADER, USER_ROLES_HEADER};
use sqlx::{Connection, SqliteConnection};

/// A product with a description near its 4,000-character limit, so each write takes room.
fn product(n: usize, category: &str) -> Value {
    json!({
        "sku": format!("FULL-{n}"),
        "name": format!("Filler {n}"),
        "description": "a product written to fill a disk. ".repeat(110),
        "price": {"amount": 1000, "currency": "USD"},
        "categories": [category],
    })
}

/// Fills the file system of `path` with one file until it is full.
fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // The last partial block may have fit; whatever is left is less than a block.
    let _ = file.flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_503_and_corrupts_nothing() {
    let dir = TempDir::new();
    let port = free_ports(1);
    let Some((catalog, disk)) = serve_on_small_disk("catalog", port, &dir, 16).await else {
        return;
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new();
    let admin_id = uuid::Uuid::new_v4().to_string();
    let admin = |request: reqwest::RequestBuilder| {
        request
            .header(USER_ID_HEADER, &admin_id)
            .header(USER_ROLES_HEADER, "admin")
    };
    let categories: Value = client
        .get(format!("{url}/api/categories"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let category = categories[0]["slug"]
        .as_str()
        .unwrap_or_else(|| panic!("a category: {categories}"))
        .to_owned();

    let mut created = Vec::new();
    let mut n = 0;
    let create = async |n: usize| {
        let response = admin(client.post(format!("{url}/api/products")))
            .json(&product(n, &category))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, retry_after, body)
    };
    for _ in 0..3 {
        n += 1;
        let (status, _, body) = create(n).await;
        assert_eq!(status, 201, "{body}");
        created.push(format!("FULL-{n}"));
    }

    // The disk fills: every write from then on is refused cleanly until one fails for room.
    let filler = disk.join("filler");
    fill(&filler);
    let mut refused = 0;
    let mut slowest = Duration::ZERO;
    while refused < 50 {
        n += 1;
        assert!(n < 2_000, "the disk never ran out of room for the catalog");
        let started = Instant::now();
        let (status, retry_after, body) = create(n).await;
        slowest = slowest.max(started.elapsed());
        match status {
            201 => created.push(format!("FULL-{n}")),
            503 => {
                assert_eq!(
                    body["type"], "https://shop.dev/problems/database-cannot-write",
                    "{body}"
                );
                assert!(retry_after.is_some(), "a 503 without Retry-After");
                refused += 1;
            }
            other => panic!(
                "a write on a full disk answered {other}: {body}; the catalog's log:\n{}",
                std::fs::read_to_string(dir.0.join("catalog.log")).unwrap_or_default()
            ),
        }
    }
    // Reads go on.
    let read = client
        .get(format!("{url}/api/products?limit=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reading with the disk full");
    eprintln!(
        "full disk: {} products written before it filled up, then {refused} writes refused with \
         503 (slowest answer {slowest:?}); reads answered",
        created.len()
    );

    // Room again: writes work again without a restart.
    std::fs::remove_file(&filler).unwrap();
    n += 1;
    let (status, _, body) = create(n).await;
    assert_eq!(status, 201, "a write once there is room again: {body}");
    created.push(format!("FULL-{n}"));

    // Nothing corrupted, nothing half-kept: a copy of the files passes the integrity check and
    // holds exactly the products whose writes were answered 201.
    let copy = dir.0.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for suffix in ["", "-wal"] {
        let name = format!("catalog.db{suffix}");
        if disk.join(&name).exists() {
            std::fs::copy(disk.join(&name), copy.join(&name)).unwrap();
        }
    }
    catalog.signal(Signal::SIGTERM);
    let mut db =
        SqliteConnection::connect(&format!("sqlite://{}", copy.join("catalog.db").display()))
            .await
            .unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    let mut kept: Vec<String> =
        sqlx::query_scalar("SELECT sku FROM products WHERE sku LIKE 'FULL-%'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    kept.sort();
    created.sort();
    assert_eq!(kept, created, "the products kept are the ones answered 201");
}
