//! Service identity on the internal APIs, through the kit's middleware and client: a service
//! named `payment` serving `/internal/charges` (the order service's only) and a public route.

use axum::Router;
use axum::http::{HeaderMap, Method};
use axum::routing::{get, post};
use shop_contracts::identity::HEADER;
use shop_kit::testing::{self, expect_problem};
use shop_kit::{Identity, Metrics, Service, ServiceKey, Upstream, UpstreamOptions};

async fn payment() -> testing::TestServer {
    let router = Router::new()
        .route("/internal/charges", post(|| async { "charged" }))
        .route("/internal/unruled", get(|| async { "nobody may see this" }))
        .route(
            "/api/public",
            get(|headers: HeaderMap| async move {
                // A token is never needed, nor forwarded, outside /internal/.
                format!("public; token sent: {}", headers.contains_key(HEADER))
            }),
        );
    let service = Service {
        name: "payment",
        router,
        openapi: utoipa::openapi::OpenApi::default().into(),
        ready: shop_kit::server::Readiness::Always,
        tasks: Default::default(),
    };
    let config = testing::config("sqlite://unused");
    testing::spawn_service(service, &config, &Metrics::new("payment")).await
}

fn calling_as(name: &str, key: ServiceKey, url: &str) -> Upstream {
    let options = UpstreamOptions::default().calling_as(&Identity::new(name, key));
    Upstream::new("payment", url, &options).unwrap()
}

#[tokio::test]
async fn only_an_allowed_caller_with_a_valid_token_reaches_an_internal_route() {
    let server = payment().await;
    let order = calling_as("order", testing::service_key(), &server.url);
    let answer = order
        .send(order.request(Method::POST, "/internal/charges"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "charged");

    // The cart holds the key but may not charge.
    let cart = calling_as("cart", testing::service_key(), &server.url);
    let refused = cart
        .send(cart.request(Method::POST, "/internal/charges"))
        .await
        .unwrap();
    let problem = expect_problem(refused, 403).await;
    assert!(problem.kind.ends_with("/caller-not-allowed"), "{problem:?}");
    assert_eq!(
        problem.detail.as_deref(),
        Some("the cart service may not call /internal/charges")
    );

    // A path no rule names is open to nobody, the order service included.
    let unruled = order
        .send(order.request(Method::GET, "/internal/unruled"))
        .await
        .unwrap();
    expect_problem(unruled, 403).await;
}

#[tokio::test]
async fn no_token_another_key_or_another_audience_is_unauthorized() {
    let server = payment().await;
    let client = reqwest::Client::new();
    let url = format!("{}/internal/charges", server.url);

    let bare = client.post(&url).send().await.unwrap();
    let problem = expect_problem(bare, 401).await;
    assert!(
        problem
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("shop-service-token")),
        "{problem:?}"
    );

    let stranger = calling_as("order", ServiceKey::from_bytes(&[9; 32]), &server.url);
    let forged = stranger
        .send(stranger.request(Method::POST, "/internal/charges"))
        .await
        .unwrap();
    expect_problem(forged, 401).await;

    // A token the order service made for the inventory, replayed at the payment service.
    let for_inventory = testing::service_token("order", "inventory");
    let replayed = client
        .post(&url)
        .header(HEADER, &for_inventory)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(replayed, 401).await;
    assert_eq!(
        problem.detail.as_deref(),
        Some("the service credential was made for the inventory service, not this one")
    );

    let public = client
        .get(format!("{}/api/public", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 200);
    let order = calling_as("order", testing::service_key(), &server.url);
    let public = order
        .send(order.request(Method::GET, "/api/public"))
        .await
        .unwrap();
    assert_eq!(public.text().await.unwrap(), "public; token sent: false");
}
