//! Shared databases against the real cluster and the real PostgreSQL server of
//! `SHOP_TEST_POSTGRES_URL` (an admin URL). The operator runs in-process, as in
//! `tests/operator.rs`, so it reaches that server on loopback, and so do the tests when they
//! log in as a service would. Without the variable the tests are skipped with a message,
//! except under `CI=true`, where they fail.
//!
//! Roles and databases are named after the test's throwaway namespace, so reruns and tests
//! running in parallel never share one; each test drops what it made on the server, also when
//! it fails.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_harness::{Harness, Result, TestNamespace, wait_for, wait_for_deletion};
use serde_json::json;
use shop_e2e::{InProcessOperator, kube_error};
use shop_operator::controller::shared_database::identifier;
use shop_operator::crd::ShopService;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor, Row};

const TIMEOUT: Duration = Duration::from_secs(120);
const FIELD_MANAGER: &str = "shop-e2e";
/// How long the operator waits for an unreachable shared server before it lets a deleted
/// ShopService go: short, so that the test of it is quick.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The Secret with the shared server's admin URL, in each test's namespace.
const SERVER_SECRET: &str = "shared-pg";

/// The admin URL of the test server, or `None` (with a message) outside CI without one.
fn postgres_url() -> Option<String> {
    match std::env::var("SHOP_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                !kube_harness::running_in_ci(),
                "SHOP_TEST_POSTGRES_URL is not set: under CI=true the Shared database tests must run (use tests/run.sh)"
            );
            eprintln!(
                "SKIPPED: SHOP_TEST_POSTGRES_URL is not set (tests/run.sh sets it); the Shared database tests need a PostgreSQL server"
            );
            None
        }
    }
}

/// The operator in-process on `namespace`, with a short [`CLEANUP_TIMEOUT`].
async fn start_operator(harness: &Harness, namespace: &str) -> Result<InProcessOperator> {
    InProcessOperator::start_with(harness, namespace, |_, settings| {
        settings.shared_cleanup_timeout = CLEANUP_TIMEOUT;
    })
    .await
}

/// The roles and databases a test expects the operator to make, dropped from the server when
/// this goes out of scope, whether the test passed or not. Declared before the operator, so
/// that it is dropped after it.
struct ServerObjects {
    admin_url: String,
    identifiers: Vec<String>,
}

impl Drop for ServerObjects {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let identifiers = self.identifiers.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                for name in &identifiers {
                    admin
                        .execute(
                            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                        )
                        .await?;
                    admin
                        .execute(format!("DROP ROLE IF EXISTS \"{name}\"").as_str())
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "could not drop {:?} on the test server; drop them by hand",
                self.identifiers
            );
        }
    }
}

/// A role on the test server with `attributes` and a password, and the URL that logs in as
/// it; the caller drops it (list it in [`ServerObjects`] after the service roles).
async fn admin_role(superuser_url: &str, name: &str, attributes: &str) -> (String, String) {
    let password = format!("{name}-pw");
    let mut superuser = PgConnection::connect(superuser_url)
        .await
        .expect("connect to SHOP_TEST_POSTGRES_URL");
    superuser
        .execute(
            format!("CREATE ROLE \"{name}\" LOGIN {attributes} PASSWORD '{password}'").as_str(),
        )
        .await
        .expect("create an admin role");
    let _ = superuser.close().await;
    let server = PgConnectOptions::from_str(superuser_url).expect("a PostgreSQL URL");
    let url = format!(
        "postgres://{name}:{password}@{}:{}/postgres",
        server.get_host(),
        server.get_port()
    );
    (url, password)
}

/// Whether the role and the database `name` exist on the server.
async fn on_server(admin_url: &str, name: &str) -> (bool, bool) {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect to SHOP_TEST_POSTGRES_URL");
    let count = |sql: &'static str| sqlx::query(sql).bind(name.to_owned());
    let roles: i64 = count("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0);
    let databases: i64 = count("SELECT count(*) FROM pg_database WHERE datname = $1")
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0);
    let _ = admin.close().await;
    (roles == 1, databases == 1)
}

async fn create_secret(ns: &TestNamespace, name: &str, data: &[(&str, &str)]) -> Result<()> {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .map_err(kube_error("create a Secret"))?;
    Ok(())
}

fn shared_shop(name: &str, policy: &str, server_secret: &str) -> String {
    format!(
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {{name: {name}}}\nspec: {{component: cart, database: {{mode: Shared, deletionPolicy: {policy}, sharedServerSecret: {server_secret}}}}}\n"
    )
}

/// The credentials Secret of `name`, decoded.
async fn credentials(ns: &TestNamespace, name: &str) -> (BTreeMap<String, String>, String) {
    let secret = ns
        .api::<Secret>()
        .get(&format!("{name}-db-credentials"))
        .await
        .expect("the credentials Secret");
    let version = secret.resource_version().unwrap_or_default();
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, String::from_utf8(value.0).expect("UTF-8")))
        .collect();
    (data, version)
}

fn condition_is(shop: &ShopService, type_: &str, status: &str) -> bool {
    shop.status.as_ref().is_some_and(|s| {
        s.observed_generation == shop.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == status)
    })
}

async fn wait_condition(
    ns: &TestNamespace,
    name: &str,
    type_: &str,
    status: &str,
) -> Result<ShopService> {
    wait_for(
        &ns.api::<ShopService>(),
        name,
        &format!("{type_}={status}"),
        TIMEOUT,
        |shop: Option<&ShopService>| shop.is_some_and(|s| condition_is(s, type_, status)),
    )
    .await
}

fn database_ready(shop: &ShopService) -> (String, String) {
    let condition = shop
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "DatabaseReady"))
        .expect("a DatabaseReady condition");
    (condition.reason.clone(), condition.message.clone())
}

/// `(type, reason, note)` of every Event about the ShopService `name`.
async fn events(ns: &TestNamespace, name: &str) -> Vec<(String, String, String)> {
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ShopService")
        })
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits for an Event about the ShopService `name` of `type_` and `reason`; returns its note.
async fn wait_event(ns: &TestNamespace, name: &str, type_: &str, reason: &str) -> String {
    let event = shop_e2e::wait_for_event(ns, name, reason)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(event.type_.as_deref(), Some(type_), "{event:?}");
    event.note.unwrap_or_default()
}

async fn delete_shop(ns: &TestNamespace, name: &str) -> Result<()> {
    ns.api::<ShopService>()
        .delete(name, &DeleteParams::background())
        .await
        .map_err(kube_error("delete a ShopService"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_databases_are_private_stable_and_follow_the_deletion_policy() -> Result<()> {
    let Some(admin_url) = postgres_url() else {
        return Ok(());
    };
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("shared-db").await?;
    let (alpha, beta) = (
        identifier(ns.name(), "alpha"),
        identifier(ns.name(), "beta"),
    );
    let admin_name = identifier(ns.name(), "admin");
    let _server_objects = ServerObjects {
        admin_url: admin_url.clone(),
        identifiers: vec![alpha.clone(), beta.clone(), admin_name.clone()],
    };
    // What docs/shared-databases.md asks of the admin, and no more: not a superuser.
    let (operator_admin_url, admin_password) =
        admin_role(&admin_url, &admin_name, "NOSUPERUSER CREATEROLE CREATEDB").await;
    let operator = start_operator(&harness, ns.name()).await?;
    create_secret(&ns, SERVER_SECRET, &[("url", &operator_admin_url)]).await?;
    ns.apply_yaml(&shared_shop("alpha", "Delete", SERVER_SECRET))
        .await?;
    ns.apply_yaml(&shared_shop("beta", "Retain", SERVER_SECRET))
        .await?;

    wait_condition(&ns, "alpha", "Ready", "True").await?;
    let ready = wait_condition(&ns, "alpha", "DatabaseReady", "True").await?;
    wait_condition(&ns, "beta", "DatabaseReady", "True").await?;
    eprintln!(
        "two Shared ShopServices were Ready after {:?}",
        started.elapsed()
    );
    let database_status = ready.status.as_ref().unwrap().database.as_ref().unwrap();
    assert_eq!(
        database_status.secret_name.as_deref(),
        Some("alpha-db-credentials")
    );

    // The Secret: every key, the server of the admin URL, the role named after the service.
    let admin = PgConnectOptions::from_str(&admin_url).expect("a PostgreSQL URL");
    let (secret, version) = credentials(&ns, "alpha").await;
    assert_eq!(
        secret.keys().map(String::as_str).collect::<Vec<_>>(),
        ["dbname", "host", "password", "port", "uri", "username"]
    );
    assert_eq!(secret["username"], alpha);
    assert_eq!(secret["dbname"], alpha);
    assert_eq!(secret["host"], admin.get_host());
    assert_eq!(secret["port"], admin.get_port().to_string());
    assert_eq!(secret["password"].len(), 32);
    assert_eq!(database_status.host.as_deref(), Some(admin.get_host()));
    let password = secret["password"].clone();
    let status_text = serde_json::to_string(&ready.status).unwrap();
    for secret_text in [&password, &admin_password] {
        assert!(
            !status_text.contains(secret_text),
            "no password in the status"
        );
    }

    // The uri opens the service's own database, where it may create tables.
    let mut service = PgConnection::connect(&secret["uri"])
        .await
        .expect("the Secret's uri logs in");
    service
        .execute("CREATE TABLE orders (id BIGINT PRIMARY KEY); INSERT INTO orders VALUES (1)")
        .await
        .expect("the service's role creates a table in its database");
    let row = sqlx::query("SELECT current_user, current_database()")
        .fetch_one(&mut service)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), alpha);
    assert_eq!(row.get::<String, _>(1), alpha);
    let _ = service.close().await;

    // Another service's role cannot connect to it.
    let (beta_secret, _) = credentials(&ns, "beta").await;
    let intruder = PgConnectOptions::from_str(&beta_secret["uri"])
        .unwrap()
        .database(&alpha);
    match PgConnection::connect_with(&intruder).await {
        Ok(_) => panic!("role {beta} connected to database {alpha}"),
        Err(sqlx::Error::Database(e)) => assert_eq!(
            e.code().as_deref(),
            Some("42501"),
            "refused for lack of the CONNECT privilege: {e}"
        ),
        Err(e) => panic!("unexpected error connecting as {beta} to {alpha}: {e}"),
    }

    // Reconciles of a settled Shared database change neither the password nor the Secret.
    let shops = ns.api::<ShopService>();
    let reconciles = operator.successful_reconciles().await;
    for round in 0..3 {
        shops
            .patch(
                "alpha",
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(json!({
                    "apiVersion": "shop.dev/v1alpha1",
                    "kind": "ShopService",
                    "metadata": {"annotations": {"shop-e2e/nudge": round.to_string()}},
                })),
            )
            .await
            .map_err(kube_error("annotate"))?;
    }
    operator
        .wait_for_reconciles_above(reconciles, TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, version_after) = credentials(&ns, "alpha").await;
    assert_eq!(after["password"], password, "the password never changes");
    assert_eq!(version_after, version, "the Secret was not rewritten");
    let mut service = PgConnection::connect(&after["uri"])
        .await
        .expect("the password still logs in after the reconciles");
    let kept: i64 = sqlx::query("SELECT count(*) FROM orders")
        .fetch_one(&mut service)
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "the data is still there");
    let _ = service.close().await;

    // Delete: the database, the role and the Secret go.
    assert_eq!(on_server(&admin_url, &alpha).await, (true, true));
    delete_shop(&ns, "alpha").await?;
    wait_for_deletion(&shops, "alpha", TIMEOUT).await?;
    assert_eq!(
        on_server(&admin_url, &alpha).await,
        (false, false),
        "role and database {alpha} dropped"
    );
    wait_for_deletion(&ns.api::<Secret>(), "alpha-db-credentials", TIMEOUT).await?;
    let note = wait_event(&ns, "alpha", "Normal", "DeletedData").await;
    assert!(note.contains(&alpha), "{note}");

    // Retain: they stay, and the Secret still opens the database.
    delete_shop(&ns, "beta").await?;
    wait_for_deletion(&shops, "beta", TIMEOUT).await?;
    assert_eq!(on_server(&admin_url, &beta).await, (true, true));
    let retained = ns
        .api::<Secret>()
        .get("beta-db-credentials")
        .await
        .map_err(kube_error("get"))?;
    assert!(
        retained.owner_references().is_empty(),
        "a retained Secret has no owner"
    );
    let (beta_after, _) = credentials(&ns, "beta").await;
    PgConnection::connect(&beta_after["uri"])
        .await
        .expect("the retained Secret opens the retained database")
        .close()
        .await
        .unwrap();
    for name in ["alpha", "beta"] {
        for (_, reason, note) in events(&ns, name).await {
            for secret_text in [&password, &admin_password] {
                assert!(
                    !note.contains(secret_text),
                    "a password in {reason}: {note}"
                );
            }
        }
    }
    eprintln!("the Shared database check took {:?}", started.elapsed());

    operator.stop().await;
    ns.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_server_problems_are_reported_and_never_hold_a_deletion() -> Result<()> {
    let Some(admin_url) = postgres_url() else {
        return Ok(());
    };
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("shared-bad").await?;
    let (no_url, unreachable, denied) = (
        identifier(ns.name(), "no-url"),
        identifier(ns.name(), "unreachable"),
        identifier(ns.name(), "denied"),
    );
    let weak_admin = identifier(ns.name(), "weak-admin");
    let _server_objects = ServerObjects {
        admin_url: admin_url.clone(),
        identifiers: vec![
            no_url.clone(),
            unreachable.clone(),
            denied.clone(),
            weak_admin.clone(),
        ],
    };
    // An admin that may log in and nothing else.
    let (weak_admin_url, weak_admin_password) = admin_role(
        &admin_url,
        &weak_admin,
        "NOSUPERUSER NOCREATEROLE NOCREATEDB",
    )
    .await;
    let operator = start_operator(&harness, ns.name()).await?;
    create_secret(&ns, "weak", &[("url", &weak_admin_url)]).await?;
    ns.apply_yaml(&shared_shop("denied", "Retain", "weak"))
        .await?;
    // The admin password must never show; port 1 on loopback refuses connections.
    let admin_password = "hunter2-admin-password";
    create_secret(&ns, "without-url", &[("host", "127.0.0.1")]).await?;
    create_secret(
        &ns,
        "nowhere",
        &[(
            "url",
            &format!("postgres://admin:{admin_password}@127.0.0.1:1/postgres"),
        )],
    )
    .await?;
    ns.apply_yaml(&shared_shop("no-url", "Retain", "without-url"))
        .await?;
    ns.apply_yaml(&shared_shop("unreachable", "Delete", "nowhere"))
        .await?;

    let shop = wait_condition(&ns, "no-url", "DatabaseReady", "False").await?;
    let (reason, message) = database_ready(&shop);
    assert_eq!(reason, "SharedServerURLInvalid");
    assert!(
        message.contains("Secret without-url") && message.contains("no key `url`"),
        "{message}"
    );
    assert!(
        condition_is(&shop, "Ready", "False"),
        "not Ready without a database"
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("no-url-db-credentials")
            .await
            .unwrap()
            .is_none(),
        "no credentials without a server"
    );

    let shop = wait_condition(&ns, "unreachable", "DatabaseReady", "False").await?;
    let (reason, message) = database_ready(&shop);
    assert_eq!(reason, "SharedServerUnreachable", "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    eprintln!("DatabaseReady of unreachable: {reason}: {message}");
    let shop = wait_condition(&ns, "denied", "DatabaseReady", "False").await?;
    let (reason, message) = database_ready(&shop);
    assert_eq!(reason, "SharedServerPermissionDenied", "{message}");
    assert!(message.contains("CREATEROLE"), "{message}");
    eprintln!("DatabaseReady of denied: {reason}: {message}");
    assert_eq!(
        on_server(&admin_url, &denied).await,
        (false, false),
        "nothing made without the rights"
    );

    let (secret, _) = credentials(&ns, "unreachable").await;
    let password = secret["password"].clone();
    let secret_texts = [
        admin_password,
        weak_admin_password.as_str(),
        password.as_str(),
    ];
    for name in ["no-url", "unreachable", "denied"] {
        let shop = ns.api::<ShopService>().get(name).await.unwrap();
        let status = serde_json::to_string(&shop.status).unwrap();
        for secret_text in secret_texts {
            assert!(!status.contains(secret_text), "a secret in {name}'s status");
        }
    }
    eprintln!(
        "both problems were in the status after {:?}",
        started.elapsed()
    );

    // Deleting it while the server is unreachable: a warning that says when the operator
    // gives up, then it lets go after the bound, with a warning naming what was left.
    let deleting = Instant::now();
    delete_shop(&ns, "unreachable").await?;
    let retrying = wait_event(&ns, "unreachable", "Warning", "ReconcileFailed").await;
    assert!(
        retrying.contains(&unreachable) && retrying.contains("giving up"),
        "{retrying}"
    );
    wait_for_deletion(&ns.api::<ShopService>(), "unreachable", TIMEOUT).await?;
    let held = deleting.elapsed();
    let abandoned = wait_event(&ns, "unreachable", "Warning", "CleanupAbandoned").await;
    assert!(
        abandoned.contains(&unreachable) && abandoned.contains("left behind"),
        "{abandoned}"
    );
    eprintln!("while retrying: {retrying}\nwhen letting go: {abandoned}");
    // The deletion timestamp has whole seconds, so the bound may end up to 1 s early.
    assert!(
        held + Duration::from_secs(1) >= CLEANUP_TIMEOUT,
        "let go after {held:?}, before the bound of {CLEANUP_TIMEOUT:?}"
    );
    eprintln!("the deletion with an unreachable server let go after {held:?}");

    for name in ["no-url", "denied"] {
        delete_shop(&ns, name).await?;
        wait_for_deletion(&ns.api::<ShopService>(), name, TIMEOUT).await?;
    }
    for name in ["no-url", "unreachable", "denied"] {
        for (_, reason, note) in events(&ns, name).await {
            for secret_text in secret_texts {
                assert!(
                    !note.contains(secret_text),
                    "a secret in the {reason} event: {note}"
                );
            }
        }
    }

    operator.stop().await;
    ns.cleanup().await
}

/// TLS to the shared server: an admin URL with `sslmode=verify-full` and the server's CA in
/// key `ca.crt` of its Secret is verified by the operator and handed on to the service (its
/// URI names the mounted CA); the same URL without the CA is refused with the TLS error.
/// The test server's CA is made by `tests/postgres.sh` at every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_shared_server_is_verified_with_the_ca_of_its_secret() -> Result<()> {
    let Some(admin_url) = postgres_url() else {
        return Ok(());
    };
    let ca_path = match std::env::var("SHOP_TEST_POSTGRES_CA") {
        Ok(path) => path,
        Err(_) => {
            assert!(
                !kube_harness::running_in_ci(),
                "SHOP_TEST_POSTGRES_CA is not set: under CI=true the TLS test must run (tests/postgres.sh start prints it)"
            );
            eprintln!(
                "SKIPPED: SHOP_TEST_POSTGRES_CA is not set (tests/postgres.sh start prints it)"
            );
            return Ok(());
        }
    };
    let ca = std::fs::read_to_string(&ca_path).expect("the test server's CA certificate");
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let ns = harness.namespace("shared-tls").await?;
    let (verified, untrusted) = (
        identifier(ns.name(), "verified"),
        identifier(ns.name(), "untrusted"),
    );
    let _server_objects = ServerObjects {
        admin_url: admin_url.clone(),
        identifiers: vec![verified.clone(), untrusted.clone()],
    };
    let operator = start_operator(&harness, ns.name()).await?;
    let verify_full = format!("{admin_url}?sslmode=verify-full");
    create_secret(&ns, "pg-with-ca", &[("url", &verify_full), ("ca.crt", &ca)]).await?;
    create_secret(&ns, "pg-without-ca", &[("url", &verify_full)]).await?;
    ns.apply_yaml(&shared_shop("verified", "Delete", "pg-with-ca"))
        .await?;
    ns.apply_yaml(&shared_shop("untrusted", "Delete", "pg-without-ca"))
        .await?;

    wait_condition(&ns, "verified", "DatabaseReady", "True").await?;
    let (login, _) = credentials(&ns, "verified").await;
    assert_eq!(
        login["ca.crt"], ca,
        "the CA handed on to the service's pods"
    );
    let uri = &login["uri"];
    assert!(
        uri.ends_with("?sslmode=verify-full&sslrootcert=/etc/shop/database-ca/ca.crt"),
        "{uri}"
    );
    // Log in as the service's pod would, its CA where the pod has it mounted.
    let here = uri.replace("/etc/shop/database-ca/ca.crt", &ca_path);
    let mut connection = PgConnection::connect(&here)
        .await
        .expect("the service's URI connects with TLS, verifying the server");
    let encrypted: bool = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "the connection is encrypted");
    let _ = connection.close().await;

    let shop = wait_condition(&ns, "untrusted", "DatabaseReady", "False").await?;
    let (reason, message) = database_ready(&shop);
    assert_eq!(reason, "SharedServerTLSFailed", "{message}");
    assert!(message.contains("TLS"), "{message}");
    assert!(
        ns.api::<Secret>()
            .get_opt("untrusted-db-credentials")
            .await
            .unwrap()
            .is_some_and(|secret| secret.data.is_some_and(|data| !data.contains_key("ca.crt"))),
        "no CA to hand on"
    );

    for name in ["verified", "untrusted"] {
        ns.api::<ShopService>()
            .delete(name, &DeleteParams::background())
            .await
            .map_err(kube_error("delete a ShopService"))?;
        wait_for_deletion(&ns.api::<ShopService>(), name, TIMEOUT).await?;
    }
    operator.stop().await;
    ns.cleanup().await
}
