//! A service's background tasks run while it is served and stop when it shuts down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use shop_kit::testing;
use shop_kit::{Metrics, Service, Tasks};
use tokio::net::TcpListener;

/// A service whose one task counts its runs every 10 ms, and the count.
fn counting_service() -> (Service, Arc<AtomicU32>) {
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let mut tasks = Tasks::new();
    tasks.spawn_every(
        tokio::time::interval(Duration::from_millis(10)),
        "counting",
        move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, std::convert::Infallible>(()))
        },
    );
    let service = Service {
        name: "counting",
        router: Router::new().route("/hello", get(|| async { "hi" })),
        openapi: utoipa::openapi::OpenApi::default().into(),
        ready: shop_kit::server::Readiness::Always,
        tasks,
    };
    (service, runs)
}

/// Waits until `runs` has grown past `above`, at most two seconds.
async fn grows(runs: &AtomicU32, above: u32) -> bool {
    for _ in 0..200 {
        if runs.load(Ordering::SeqCst) > above {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn tasks_run_while_served_and_stop_at_shutdown() {
    let (service, runs) = counting_service();
    let config = testing::config("sqlite://unused");
    let app = shop_kit::server::app(service, &config, &Metrics::new("counting"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(shop_kit::server::serve_with(
        "counting",
        listener,
        app,
        Duration::from_secs(1),
        async move {
            let _ = stopped.await;
        },
    ));

    let hello = reqwest::get(format!("{url}/hello")).await.unwrap();
    assert_eq!(hello.text().await.unwrap(), "hi");
    assert!(
        grows(&runs, 2).await,
        "the task runs while the service is served"
    );

    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    let at_shutdown = runs.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        at_shutdown,
        "the task ran on after the service shut down"
    );
}

#[tokio::test]
async fn a_test_server_stops_its_service_tasks_when_dropped() {
    let (service, runs) = counting_service();
    let config = testing::config("sqlite://unused");
    let server = testing::spawn_service(service, &config, &Metrics::new("counting")).await;
    assert!(
        grows(&runs, 2).await,
        "the task runs while the server exists"
    );

    drop(server);
    // Aborting takes effect at the task's next await point.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_drop = runs.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        after_drop,
        "the task ran on after its server was dropped"
    );
}
