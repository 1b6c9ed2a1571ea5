//! Clients that are slow or hostile on purpose, against the kit's server with short limits:
//! each is cut off by a documented limit (`SHOP_HEADER_READ_TIMEOUT_MS`, `SHOP_MAX_HEADER_BYTES`,
//! `SHOP_REQUEST_TIMEOUT_MS`) while the server keeps answering everyone else. The figures are
//! printed (`--nocapture`).

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use shop_kit::{Metrics, Service, testing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `/hello` and `POST /echo` (which reads the whole body) with short limits; returns the
/// address and the sender that stops it.
async fn serve() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let service = Service {
        name: "hostile",
        router: Router::new().route("/hello", get(|| async { "hi" })).route(
            "/echo",
            post(|body: String| async move { body.len().to_string() }),
        ),
        openapi: utoipa::openapi::OpenApi::default().into(),
        ready: shop_kit::server::Readiness::Always,
        tasks: Default::default(),
    };
    let mut config = testing::config("sqlite://unused");
    config.header_read_timeout = HEADER_READ_TIMEOUT;
    config.request_timeout = REQUEST_TIMEOUT;
    config.max_header_bytes = 16 * 1024;
    let app = shop_kit::server::app(service, &config, &Metrics::new("hostile"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(shop_kit::server::serve_with(
        "hostile",
        listener,
        app,
        Duration::from_secs(1),
        async move {
            let _ = stopped.await;
        },
    ));
    (address, stop)
}

/// A well-behaved request on a connection of its own: the server still serves others.
async fn hello(address: std::net::SocketAddr) -> Duration {
    let started = Instant::now();
    let response = reqwest::get(format!("http://{address}/hello"))
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "hi");
    started.elapsed()
}

/// Reads until the server closes the connection (or `limit` passes); what it sent and when it
/// closed, from `since`.
async fn read_until_closed(
    stream: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> (String, Option<Duration>) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = since + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&received).into_owned(),
                    Some(since.elapsed()),
                );
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), None),
        }
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_others_are_served_meanwhile() {
    let (address, _stop) = serve().await;
    let mut slow = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    // Half a request head, then nothing more: a slowloris connection.
    slow.write_all(b"GET /hello HTTP/1.1\r\nHost: shop\r\nX-Slow: ")
        .await
        .unwrap();
    let served_in = hello(address).await;
    let (_, closed) = read_until_closed(&mut slow, started, Duration::from_secs(5)).await;
    let closed = closed.expect("the slow connection was never closed");
    println!(
        "slow headers: cut off after {} ms (limit {} ms); another client served in {:.1} ms meanwhile",
        closed.as_millis(),
        HEADER_READ_TIMEOUT.as_millis(),
        served_in.as_secs_f64() * 1000.0
    );
    assert!(
        closed >= HEADER_READ_TIMEOUT - Duration::from_millis(50),
        "{closed:?}"
    );
    assert!(closed < HEADER_READ_TIMEOUT * 4, "{closed:?}");
}

#[tokio::test]
async fn huge_headers_are_answered_431() {
    let (address, _stop) = serve().await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    let mut request = b"GET /hello HTTP/1.1\r\nHost: shop\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 64 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(&request).await;
    let (answer, closed) = read_until_closed(&mut stream, started, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "a 64 KiB header: {:?}",
        answer.lines().next()
    );
    assert!(closed.is_some(), "the connection is closed after the 431");
    println!(
        "huge headers: 64 KiB answered 431 in {} ms (limit 16 KiB)",
        started.elapsed().as_millis()
    );
    hello(address).await;
}

#[tokio::test]
async fn a_body_that_never_ends_gets_503_at_the_request_deadline() {
    let (address, _stop) = serve().await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: shop\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nonly ten b",
        )
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, started, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "{:?}",
        answer.lines().next()
    );
    assert!(
        closed.is_some(),
        "the connection is closed: its body was never read to the end"
    );
    let answered = started.elapsed();
    println!(
        "never-ending body: 503 after {} ms (request deadline {} ms)",
        answered.as_millis(),
        REQUEST_TIMEOUT.as_millis()
    );
    assert!(answered < REQUEST_TIMEOUT * 3, "{answered:?}");
    hello(address).await;
}

#[tokio::test]
async fn hundreds_of_idle_connections_are_closed_and_hold_up_no_one() {
    const IDLE: usize = 300;
    let (address, _stop) = serve().await;
    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(address).await.unwrap());
    }
    // A kept-alive connection that has been answered once and then says nothing more.
    let mut kept_alive = TcpStream::connect(address).await.unwrap();
    kept_alive
        .write_all(b"GET /hello HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        slowest = slowest.max(hello(address).await);
    }
    let kept_alive = tokio::spawn(async move {
        read_until_closed(&mut kept_alive, started, Duration::from_secs(10)).await
    });
    let mut closings = tokio::task::JoinSet::new();
    for mut stream in idle {
        closings.spawn(async move {
            read_until_closed(&mut stream, started, Duration::from_secs(10))
                .await
                .1
        });
    }
    let mut closed: Vec<Duration> = closings.join_all().await.into_iter().flatten().collect();
    let (answer, kept_alive_closed) = kept_alive.await.unwrap();
    closed.extend(kept_alive_closed);
    let last = closed.iter().max().copied().unwrap_or_default();
    println!(
        "{IDLE} idle connections and a kept-alive one: 20 requests meanwhile, the slowest {:.1} ms; {} of {} closed by the server, the last after {} ms (limit {} ms)",
        slowest.as_secs_f64() * 1000.0,
        closed.len(),
        IDLE + 1,
        last.as_millis(),
        HEADER_READ_TIMEOUT.as_millis()
    );
    assert_eq!(closed.len(), IDLE + 1, "every idle connection is closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
}
