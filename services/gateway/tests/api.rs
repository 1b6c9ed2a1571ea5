//! The gateway served with its full middleware stack on a loopback port, in front of real axum
//! upstreams that answer with what reached them: token verification, route matching over a route
//! table in the operator's format, the headers stripped and set on the way, and the per-client
//! rate limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_gateway::{RouteSource, Settings};
use shop_kit::Problem;
use shop_kit::auth::{AUDIENCE, Claims, ISSUER, JWKS_PATH};
use shop_kit::testing::{self, TestServer, expect_problem};

const USER_ID: &str = "0b7e5e0c-3f5e-4c1a-9a3e-5d0c1e2f3a4b";

/// An upstream service that answers every request with what it received, and counts them.
struct Upstream {
    server: TestServer,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start(name: &'static str) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        // Its API document, which the gateway fetches to merge, is not a request that counts.
        let document = json!({
            "openapi": "3.1.0",
            "info": { "title": name, "version": "1", "description": format!("The {name} service.") },
            "paths": {
                format!("/api/{name}"): { "get": { "summary": format!("Read the {name}."),
                    "security": [ { "identity": [] } ],
                    "responses": { "200": { "description": "OK" } } } },
                format!("/internal/{name}"): { "post": { "x-internal": true, "responses": {} } }
            }
        });
        let router = Router::new()
            .route(
                "/openapi.json",
                get(move || std::future::ready(axum::Json(document.clone()))),
            )
            .fallback(echo)
            .with_state((name, hits.clone()));
        Self {
            server: testing::spawn(router).await,
            hits,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn echo(
    State((name, hits)): State<(&'static str, Arc<AtomicUsize>)>,
    request: Request,
) -> axum::Json<Value> {
    hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (header, value) in &parts.headers {
        headers
            .entry(header.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("<binary>").to_owned());
    }
    let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    axum::Json(json!({
        "service": name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// An Ed25519 signing key with its key id, published by the fake user service's JWKS.
struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public_key: Vec<u8>,
}

impl SigningKey {
    fn generate(kid: &str) -> Self {
        use ring::signature::KeyPair;
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self {
            kid: kid.to_owned(),
            pkcs8: pkcs8.as_ref().to_vec(),
            public_key: pair.public_key().as_ref().to_vec(),
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public_key),
        })
    }

    /// A token as the user service issues them, for `USER_ID` with two roles, expiring
    /// `expires_in` seconds from now (negative: already expired).
    fn token(&self, expires_in: i64) -> String {
        self.sign(&claims(expires_in))
    }

    fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }
}

fn claims(expires_in: i64) -> Claims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Claims {
        sub: USER_ID.into(),
        roles: vec!["customer".into(), "support".into()],
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        iat: now - 60,
        exp: now + expires_in,
    }
}

/// The gateway and everything behind it.
struct Shop {
    url: String,
    client: reqwest::Client,
    key: SigningKey,
    user: Upstream,
    cart: Upstream,
    catalog: Upstream,
    featured: Upstream,
    _jwks: TestServer,
    _gateway: TestServer,
}

impl Shop {
    /// `rate_limit`: requests per second and burst per client (0: off).
    async fn start(rate_limit: (u32, u32)) -> Self {
        let key = SigningKey::generate("current");
        let jwks = json!({ "keys": [key.jwk()] });
        let jwks = testing::spawn(Router::new().route(
            JWKS_PATH,
            get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        ))
        .await;
        let user = Upstream::start("user").await;
        let cart = Upstream::start("cart").await;
        let catalog = Upstream::start("catalog").await;
        let featured = Upstream::start("featured").await;

        // The table as the operator writes it into the gateway's ConfigMap: sorted by prefix,
        // a service under several prefixes, one prefix inside another.
        let route = |prefix: &str, service: &str, upstream: &Upstream| json!({ "prefix": prefix, "service": service, "upstream": upstream.server.url });
        let table = json!({ "routes": [
            route("/api/auth", "user", &user),
            route("/api/cart", "cart", &cart),
            route("/api/products", "catalog", &catalog),
            route("/api/products/featured", "featured", &featured),
            route("/api/users", "user", &user),
        ]});
        let settings = Settings {
            routes: RouteSource::Inline(table.to_string()),
            reload_every: Duration::from_secs(60),
            user_url: jwks.url.clone(),
            rate_limit_per_second: rate_limit.0,
            rate_limit_burst: rate_limit.1,
            openapi_every: Duration::from_millis(200),
        };
        let runtime = shop_events::testing::runtime("gateway", "sqlite::memory:");
        let service = shop_gateway::build(&runtime, settings).await.unwrap();
        let gateway = testing::spawn_service(service, &runtime.config, &runtime.metrics).await;
        Self {
            url: gateway.url.clone(),
            client: reqwest::Client::new(),
            key,
            user,
            cart,
            catalog,
            featured,
            _jwks: jwks,
            _gateway: gateway,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    fn upstreams(&self) -> [&Upstream; 4] {
        [&self.user, &self.cart, &self.catalog, &self.featured]
    }

    fn hits(&self) -> usize {
        self.upstreams().iter().map(|u| u.hits()).sum()
    }

    /// Sends `request`, expects it forwarded, and returns what the upstream saw.
    async fn forwarded(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Sends `request` with `token` and expects a 401 that reached no upstream.
    async fn refused(&self, token: &str) -> Problem {
        let before = self.hits();
        let response = self
            .get("/api/cart")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, 401).await;
        assert_eq!(self.hits(), before, "a refused token reaches no service");
        problem
    }
}

fn header<'a>(seen: &'a Value, name: &str) -> Vec<&'a str> {
    seen["headers"][name]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_valid_token_is_vouched_for_and_every_bad_one_refused() {
    let shop = Shop::start((0, 0)).await;

    let seen = shop
        .forwarded(shop.get("/api/cart").bearer_auth(shop.key.token(600)))
        .await;
    assert_eq!(header(&seen, "x-shop-user-id"), [USER_ID]);
    assert_eq!(header(&seen, "x-shop-user-roles"), ["customer,support"]);

    let expired = shop.refused(&shop.key.token(-60)).await;
    assert!(
        expired.detail.as_deref().unwrap().contains("expired"),
        "{expired:?}"
    );

    // Another key under the key id the JWKS publishes.
    let wrong_key = SigningKey::generate("current").token(600);
    let problem = shop.refused(&wrong_key).await;
    assert!(problem.detail.unwrap().contains("invalid"));

    // A key the JWKS does not have: fetched again, still unknown.
    let unknown_key = SigningKey::generate("another").token(600);
    let problem = shop.refused(&unknown_key).await;
    assert!(problem.detail.unwrap().contains("unknown key"));

    // A valid token whose payload now names someone else, its signature kept.
    let valid = shop.key.token(600);
    let [header_part, _, signature] = valid.split('.').collect::<Vec<_>>()[..] else {
        panic!("a JWT has three parts: {valid}");
    };
    let mut elevated = claims(600);
    elevated.sub = "ffffffff-ffff-4fff-bfff-ffffffffffff".into();
    elevated.roles = vec!["admin".into()];
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&elevated).unwrap());
    shop.refused(&format!("{header_part}.{payload}.{signature}"))
        .await;

    let mut foreign = claims(600);
    foreign.aud = "another-shop".into();
    shop.refused(&shop.key.sign(&foreign)).await;
    let mut foreign = claims(600);
    foreign.iss = "someone-else".into();
    shop.refused(&shop.key.sign(&foreign)).await;

    shop.refused("not-a-jwt").await;
    let before = shop.hits();
    let basic = shop
        .get("/api/cart")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    expect_problem(basic, 401).await;
    assert_eq!(shop.hits(), before);

    // No token: anonymous, forwarded without an identity; each service decides.
    let seen = shop.forwarded(shop.get("/api/cart")).await;
    assert!(header(&seen, "x-shop-user-id").is_empty(), "{seen}");
    assert!(header(&seen, "x-shop-user-roles").is_empty(), "{seen}");
}

#[tokio::test]
async fn a_token_remembered_as_verified_is_refused_once_it_expires() {
    let shop = Shop::start((0, 0)).await;
    // Expired 3 s ago: inside the gateway's 5 s leeway for 2 s more.
    let token = shop.key.token(-3);
    for _ in 0..2 {
        // The second time from the gateway's memory of verified tokens.
        let seen = shop
            .forwarded(shop.get("/api/cart").bearer_auth(&token))
            .await;
        assert_eq!(header(&seen, "x-shop-user-id"), [USER_ID]);
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let expired = shop.refused(&token).await;
    assert!(
        expired.detail.as_deref().unwrap().contains("expired"),
        "{expired:?}"
    );
}

#[tokio::test]
async fn requests_go_to_the_longest_matching_prefix_of_the_route_table() {
    let shop = Shop::start((0, 0)).await;
    let cases = [
        ("/api/cart", "cart"),
        ("/api/cart/items/42?quantity=2", "cart"),
        ("/api/auth/login", "user"),
        ("/api/users/me", "user"),
        ("/api/products?q=tea&limit=5", "catalog"),
        ("/api/products/7", "catalog"),
        ("/api/products/featured", "featured"),
        ("/api/products/featured/today", "featured"),
        // A prefix matches on segment boundaries only.
        ("/api/products/featuredx", "catalog"),
    ];
    for (path, service) in cases {
        let seen = shop.forwarded(shop.get(path)).await;
        assert_eq!(seen["service"], service, "{path}");
        assert_eq!(seen["uri"], path, "the path and query go on unchanged");
    }
    assert_eq!(shop.user.hits(), 2);
    assert_eq!(shop.cart.hits(), 2);
    assert_eq!(shop.catalog.hits(), 3);
    assert_eq!(shop.featured.hits(), 2);

    let seen = shop
        .forwarded(
            shop.client
                .put(format!("{}/api/cart/items/42", shop.url))
                .header("content-type", "application/json")
                .body(r#"{"quantity":3}"#),
        )
        .await;
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["body"], r#"{"quantity":3}"#);
    assert_eq!(header(&seen, "content-type"), ["application/json"]);

    let before = shop.hits();
    for path in ["/api/cartoon", "/api/orders", "/api"] {
        let response = shop.get(path).send().await.unwrap();
        let problem = expect_problem(response, 404).await;
        assert_eq!(
            problem.detail.as_deref(),
            Some("no service serves this path"),
            "{path}"
        );
    }
    assert_eq!(shop.hits(), before, "unrouted paths reach no service");
}

#[tokio::test]
async fn identity_headers_from_clients_are_dropped_and_the_gateways_own_set() {
    let shop = Shop::start((0, 0)).await;
    let forged = |request: reqwest::RequestBuilder| {
        request
            .header("x-shop-user-id", "ffffffff-ffff-4fff-bfff-ffffffffffff")
            .header("x-shop-user-roles", "admin")
            .header("x-shop-user-anything", "admin")
            .header("x-request-id", "req-from-the-client")
            .header("x-client-note", "kept")
    };

    let seen = shop.forwarded(forged(shop.get("/api/products"))).await;
    for name in [
        "x-shop-user-id",
        "x-shop-user-roles",
        "x-shop-user-anything",
    ] {
        assert!(
            header(&seen, name).is_empty(),
            "{name} reached the service: {seen}"
        );
    }
    assert_eq!(header(&seen, "x-client-note"), ["kept"]);
    assert_eq!(
        header(&seen, "x-request-id"),
        ["req-from-the-client"],
        "the request id goes on once"
    );
    assert_eq!(header(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    let upstream_host = shop.catalog.server.url.trim_start_matches("http://");
    assert_eq!(
        header(&seen, "host"),
        [upstream_host],
        "the upstream's host, not the gateway's"
    );

    // With a token, the identity is the token's, and only the token's.
    let seen = shop
        .forwarded(forged(shop.get("/api/cart")).bearer_auth(shop.key.token(600)))
        .await;
    assert_eq!(header(&seen, "x-shop-user-id"), [USER_ID]);
    assert_eq!(header(&seen, "x-shop-user-roles"), ["customer,support"]);
    assert!(header(&seen, "x-shop-user-anything").is_empty(), "{seen}");

    // Without a request id the gateway makes one and hands it on.
    let response = shop.get("/api/cart").send().await.unwrap();
    let answered = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen: Value = response.json().await.unwrap();
    assert_eq!(header(&seen, "x-request-id"), [answered.as_str()]);
}

#[tokio::test]
async fn a_client_over_its_quota_is_answered_429_by_the_gateway_alone() {
    // One request a second after a burst of three, per client address.
    let shop = Shop::start((1, 3)).await;
    for _ in 0..3 {
        shop.forwarded(shop.get("/api/products")).await;
    }
    for path in ["/api/products", "/api/cart", "/api/nowhere"] {
        let response = shop.get(path).send().await.unwrap();
        assert_eq!(response.headers()["retry-after"], "1", "{path}");
        let problem = expect_problem(response, 429).await;
        assert!(problem.detail.unwrap().contains("too many requests"));
    }
    assert_eq!(shop.hits(), 3, "refused requests reach no service");

    // The gateway's own endpoints stay answerable to a client over its quota.
    let health = shop.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = shop.get("/readyz/upstreams").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // The bucket refills at the quota's rate.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    shop.forwarded(shop.get("/api/products")).await;
}

#[tokio::test]
async fn a_rate_of_zero_switches_the_limit_off() {
    let shop = Shop::start((0, 0)).await;
    for _ in 0..50 {
        shop.forwarded(shop.get("/api/products")).await;
    }
    assert_eq!(shop.catalog.hits(), 50);
}

#[tokio::test]
async fn the_public_api_document_merges_the_routed_services_and_has_a_reference_page() {
    let shop = Shop::start((0, 0)).await;
    // The gateway merges every 200 ms here: wait for the routed document.
    let mut document = Value::Null;
    for _ in 0..100 {
        document = shop
            .client
            .get(format!("{}/openapi.json", shop.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if document["paths"]["/api/cart"].is_object() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Only the cart's public path: no `/internal` operation, and nothing the table does not route
    // to the service that documents it (`/api/user`, `/api/catalog` and `/api/featured` are under
    // no route; `/api/users` goes to the user service, which does not document it).
    let paths: Vec<_> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .collect();
    assert_eq!(paths, ["/api/cart"], "{document}");
    assert_eq!(
        document["paths"]["/api/cart"]["get"]["security"],
        json!([{ "bearer": [] }])
    );
    assert_eq!(
        document["paths"]["/api/cart"]["get"]["tags"],
        json!(["cart"])
    );

    let page = shop
        .client
        .get(format!("{}/api/docs", shop.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let page = page.text().await.unwrap();
    assert!(
        page.contains("<code>/api/cart</code>") && page.contains("Read the cart."),
        "{page}"
    );
    let style = shop
        .client
        .get(format!("{}/api/docs/style.css", shop.url))
        .send()
        .await
        .unwrap();
    assert_eq!(style.headers()["content-type"], "text/css; charset=utf-8");
}
