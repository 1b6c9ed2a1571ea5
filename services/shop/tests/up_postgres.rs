//! `shop up --database-url`: every service in its own database on a real PostgreSQL server,
//! created on first start, found again on the next; and the load mix runs on it without errors.

mod common;

use std::process::Command;

use common::{Process, SHOP, SHOP_UP_PORTS, TempDir, free_ports, interrupt, shop_up};
use serde_json::{Value, json};
use shop::ServiceName;
use shop::up::{database_name, has_database};
use sqlx::Connection;

async fn shop_up_on(admin: &str, prefix: &str, data: &TempDir, port: u16) -> Process {
    shop_up(
        data,
        port,
        &["--database-url", admin, "--database-prefix", prefix],
        &[("SHOP_RATE_LIMIT_PER_SECOND", "0".into())],
    )
    .await
}

async fn databases(admin: &str, prefix: &str) -> Vec<String> {
    let mut server = sqlx::PgConnection::connect(admin).await.unwrap();
    let names = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE $1 || '\\_%' ORDER BY 1",
    )
    .bind(prefix)
    .fetch_all(&mut server)
    .await
    .unwrap();
    server.close().await.unwrap();
    names
}

#[tokio::test]
async fn each_service_gets_its_own_database_and_keeps_it() {
    let Ok(admin) = std::env::var("SHOP_TEST_POSTGRES_URL") else {
        assert!(
            !shop_kit::testing::in_ci(),
            "SHOP_TEST_POSTGRES_URL is not set: under CI=true this test must run"
        );
        eprintln!("SKIPPED: SHOP_TEST_POSTGRES_URL is not set");
        return;
    };
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let data = TempDir::new();
    let port = free_ports(SHOP_UP_PORTS);
    let url = format!("http://127.0.0.1:{port}");

    let shop = shop_up_on(&admin, &prefix, &data, port).await;
    let mut expected: Vec<String> = ServiceName::ALL
        .into_iter()
        .filter(|s| has_database(*s))
        .map(|s| database_name(&prefix, s))
        .collect();
    expected.sort();
    assert_eq!(databases(&admin, &prefix).await, expected);
    assert!(
        std::fs::read_dir(&data.0).unwrap().all(|f| !f
            .unwrap()
            .path()
            .to_string_lossy()
            .ends_with(".db")),
        "no SQLite files when the data is on PostgreSQL"
    );

    let client = reqwest::Client::new();
    let created = client
        .post(format!("{url}/api/users"))
        .json(&json!({"email": "pg@example.com", "password": "pg password", "name": "Pg"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // The mix on PostgreSQL, checkouts through the order saga included, without errors.
    let output = Command::new(SHOP)
        .args([
            "load",
            "--url",
            &url,
            "--concurrency",
            "4",
            "--duration",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["total"]["count"].as_u64().unwrap() > 0);
    assert_eq!(report["total"]["errors"], 0, "{report:#}");
    interrupt(shop).await;

    // A second start finds the databases and the data of the first.
    let shop = shop_up_on(&admin, &prefix, &data, port).await;
    let again = client
        .post(format!("{url}/api/users"))
        .json(&json!({"email": "pg@example.com", "password": "pg password", "name": "Pg"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "the account of the first run is there");
    interrupt(shop).await;

    let mut server = sqlx::PgConnection::connect(&admin).await.unwrap();
    for name in expected {
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut server)
            .await
            .unwrap();
    }
}

#[test]
fn a_database_url_that_is_not_postgres_is_refused() {
    let data = TempDir::new();
    let output = Command::new(SHOP)
        .args([
            "up",
            "--data-dir",
            data.0.to_str().unwrap(),
            "--port",
            &free_ports(SHOP_UP_PORTS).to_string(),
            "--database-url",
            "mysql://root@127.0.0.1/shop",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--database-url must be a postgres:// URL"),
        "{stderr}"
    );
}
