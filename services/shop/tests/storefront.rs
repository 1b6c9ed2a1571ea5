//! The storefront over HTTP, as a browser without JavaScript uses it, across the real service
//! processes: every form's bad input answered on the same page with what was typed, the CSRF
//! check, the cookies' flags and the security headers, and the pages that still render when a
//! service behind them is down. (The real browser's tests are in tests/browser.)

mod common;

use std::collections::BTreeMap;

use common::stack::{Bus, GOOD_CARD, Stack, Storage};
use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::{Client, StatusCode};

fn encode(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// A cookie-keeping client that does not follow redirects, so each answer can be looked at.
struct Browser {
    client: Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    fn has(&self, text: &str) -> bool {
        self.body.contains(text)
    }
}

impl Browser {
    fn new(stack: &Stack) -> Self {
        Self {
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: stack.url("gateway"),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let response = request
            .header("accept", "text/html")
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        for value in headers.get_all(SET_COOKIE) {
            let (pair, attributes) = value.to_str().unwrap().split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page {
            status: response.status(),
            headers,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// Posts a form with the CSRF token the pages hold (the cookie's value).
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.cookies.get("shop_csrf").cloned().unwrap_or_default();
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf", &csrf));
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(&form));
        self.send(request).await
    }

    async fn register(&mut self, name: &str) -> String {
        self.get("/register").await;
        let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
        let page = self
            .post(
                "/register",
                &[
                    ("name", name),
                    ("email", &email),
                    ("password", "correct horse battery"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        email
    }
}

async fn stack() -> Stack {
    Stack::start(Storage::Sqlite, Bus::Local)
        .await
        .expect("SQLite needs nothing outside")
}

async fn first_product(stack: &Stack) -> (String, String) {
    let product = stack.products(1).await.remove(0);
    (
        product["id"].as_str().unwrap().to_owned(),
        product["name"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn cookies_are_http_only_and_lax_and_every_page_has_the_security_headers() {
    let stack = stack().await;
    let mut browser = Browser::new(&stack);
    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.has("<h1>Welcome to shop</h1>"));
    let csp = home.headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(home.headers["x-content-type-options"], "nosniff");
    assert_eq!(home.headers["referrer-policy"], "same-origin");
    assert!(!home.has("<script>"), "no inline script");
    assert!(!home.has("style=\""), "no inline style");

    // The assets stay out of the session: no cookie set, even for a visitor with none.
    let css = Browser::new(&stack).get("/static/shop.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers.get(SET_COOKIE).is_none(), "{:?}", css.headers);
    assert!(css.headers.contains_key("content-security-policy"));

    let csrf = home.set_cookie("shop_csrf").expect("a CSRF cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(csrf.contains(flag), "{flag} in {csrf}");
    }
    browser.register("cookies").await;
    // The session's cookies were set by the redirect that followed the registration.
    assert!(browser.cookies.contains_key("shop_access"));
    assert!(browser.cookies.contains_key("shop_refresh"));
    let signed_in = browser.get("/").await;
    assert!(signed_in.has("Sign out") && !signed_in.has(">Sign in<"));

    // The tokens' cookies carry the same flags.
    browser.cookies.remove("shop_access");
    let refreshed = browser.get("/").await;
    let access = refreshed
        .set_cookie("shop_access")
        .expect("an expired or missing access token is refreshed with the refresh token");
    assert!(
        access.contains("HttpOnly") && access.contains("SameSite=Lax"),
        "{access}"
    );
    assert!(
        refreshed.has("Sign out"),
        "still signed in after the refresh"
    );

    let signed_out = browser.post("/signout", &[]).await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert!(!browser.cookies.contains_key("shop_access"));
    assert!(!browser.cookies.contains_key("shop_refresh"));
}

#[tokio::test]
async fn a_form_without_the_csrf_token_or_from_another_site_changes_nothing() {
    let stack = stack().await;
    let (id, _) = first_product(&stack).await;
    let mut browser = Browser::new(&stack);
    browser.get("/").await;
    let form = [("product_id", id.as_str()), ("quantity", "1")];

    let missing = browser
        .send(
            browser
                .client
                .post(format!("{}/cart/items", browser.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode(&form)),
        )
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.has("This form has expired"), "{}", missing.body);

    let mut wrong = form.to_vec();
    wrong.push(("csrf", "forged"));
    let forged = browser
        .send(
            browser
                .client
                .post(format!("{}/cart/items", browser.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode(&wrong)),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let csrf = browser.cookies["shop_csrf"].clone();
    let mut right = form.to_vec();
    right.push(("csrf", &csrf));
    let cross_site = browser
        .send(
            browser
                .client
                .post(format!("{}/cart/items", browser.base))
                .header("sec-fetch-site", "cross-site")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode(&right)),
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert!(
        !browser.cookies.contains_key("shop_guest_cart"),
        "nothing was added"
    );

    let added = browser.post("/cart/items", &form).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER);
    assert!(browser.cookies["shop_guest_cart"].starts_with(&id));
}

#[tokio::test]
async fn bad_input_on_every_form_is_answered_on_the_same_page_with_what_was_typed() {
    let stack = stack().await;
    let (id, name) = first_product(&stack).await;
    let mut browser = Browser::new(&stack);
    browser.get("/").await;

    // Add to cart: a negative, a fractional and a missing quantity; a forged product id.
    for quantity in ["-2", "1.5", "lots"] {
        let page = browser
            .post(
                "/cart/items",
                &[("product_id", &id), ("quantity", quantity)],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{quantity}");
        assert!(page.has("role=\"alert\"") && page.has("whole number from 1 to 99"));
        assert!(
            page.has(&format!("value=\"{quantity}\"")),
            "{quantity} kept"
        );
        assert!(
            page.has(&format!("<h1>{name}</h1>")),
            "the same product page"
        );
    }
    let missing = browser.post("/cart/items", &[("product_id", &id)]).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    for forged in ["../api/users/me", "00000000-0000-4000-8000-000000000000"] {
        let page = browser
            .post("/cart/items", &[("product_id", forged), ("quantity", "1")])
            .await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{forged}");
        assert!(page.has("That product does not exist"), "{}", page.body);
    }
    assert!(!browser.cookies.contains_key("shop_guest_cart"));

    // The cart: a quantity out of range.
    browser
        .post("/cart/items", &[("product_id", &id), ("quantity", "2")])
        .await;
    let page = browser
        .post(&format!("/cart/items/{id}"), &[("quantity", "500")])
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("<h1>Your cart</h1>") && page.has("whole number from 0 to 99"));

    // Register: a bad email and a short password, then a taken email; a missing field.
    let page = browser
        .post(
            "/register",
            &[
                ("name", "Ann <b>"),
                ("email", "not-an-email"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.has("Email: ") && page.has("Password: "),
        "{}",
        page.body
    );
    assert!(
        page.has("value=\"Ann &#60;b&#62;\""),
        "the name kept, escaped"
    );
    assert!(page.has("value=\"not-an-email\""));
    let page = browser.post("/register", &[("name", "Ann")]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("Please check the form"));
    let email = Browser::new(&stack).register("taken").await;
    let page = browser
        .post(
            "/register",
            &[
                ("name", "Ann"),
                ("email", &email),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.has("exists already"));

    // Sign in: the wrong password; an open redirect is not followed.
    let page = browser
        .post(
            "/signin",
            &[("email", &email), ("password", "wrong password")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.has("Wrong email or password") && page.has(&format!("value=\"{email}\"")));
    let page = browser
        .post(
            "/signin",
            &[
                ("email", &email),
                ("password", "correct horse battery"),
                ("next", "https://elsewhere.example/"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/");

    // Checkout: a bad address and card, then a non-numeric expiry; the address is kept, the
    // card number never shown again.
    let page = browser
        .post(
            "/checkout",
            &[
                ("name", "Ann"),
                ("line1", "Main 1"),
                ("city", "Berlin"),
                ("postal_code", "10115"),
                ("country", "Germany"),
                ("card_number", "4242"),
                ("exp_month", "13"),
                ("exp_year", "2030"),
                ("cvc", "123"),
                ("idempotency_key", &uuid::Uuid::new_v4().to_string()),
            ],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.body
    );
    for field in ["Country: ", "Card number: ", "Expiry month: "] {
        assert!(page.has(field), "{field} in {}", page.body);
    }
    assert!(page.has("value=\"Main 1\"") && page.has("value=\"GERMANY\""));
    assert!(!page.has("value=\"4242\""), "the card number is not echoed");
    let page = browser
        .post(
            "/checkout",
            &[("name", "Ann"), ("exp_month", "soon"), ("exp_year", "2030")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("must be numbers"));

    // Tracking: not a tracking number; an unknown one.
    let page = browser.get("/track?number=%3Cscript%3E").await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("That is not a tracking number") && page.has("&#60;SCRIPT&#62;"));
    let page = browser.get("/track?number=SHP-AAAA-BBBB-CCCC-DDDD").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.has("No parcel has that tracking number"));

    // The admin form: refused to a customer.
    let page = browser
        .post(&format!("/product/{id}/admin"), &[("price", "1.00")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.has("Admins only"));

    // Unknown pages are pages; unknown API paths stay the gateway's problem+json.
    let page = browser.get("/no/such/page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.has("<h1>Not found</h1>"));
    let api = browser.get("/api/nothing-here").await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert!(api.has("no service serves this path"), "{}", api.body);
}

#[tokio::test]
async fn an_admin_edits_price_and_stock_from_the_product_page() {
    let stack = stack().await;
    let (id, _) = first_product(&stack).await;
    let mut admin = Browser::new(&stack);
    admin.get("/register").await;
    let page = admin
        .post(
            "/register",
            &[
                ("name", "Admin"),
                ("email", "admin@shop.test"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let product = admin.get(&format!("/product/{id}")).await;
    assert!(product.has("<h2 id=\"admin\">Admin</h2>"));

    let page = admin
        .post(
            &format!("/product/{id}/admin"),
            &[("price", "12.3.4"), ("on_hand", "3")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("value=\"12.3.4\""), "the typed price kept");

    let page = admin
        .post(
            &format!("/product/{id}/admin"),
            &[("price", "12.50"), ("on_hand", "3")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let product = admin.get(&format!("/product/{id}?saved=1")).await;
    assert!(product.has("$12.50") && product.has("Only 3 left") && product.has("Saved."));
    assert_eq!(stack.available(&id).await, 3);
}

#[tokio::test]
async fn pages_degrade_when_the_services_behind_them_are_down() {
    let mut stack = stack().await;
    let (id, name) = first_product(&stack).await;
    let mut browser = Browser::new(&stack);
    browser.register("degrade").await;
    browser
        .post("/cart/items", &[("product_id", &id), ("quantity", "2")])
        .await;
    let address = [
        ("name", "Ann"),
        ("line1", "Main 1"),
        ("city", "Berlin"),
        ("postal_code", "10115"),
        ("country", "DE"),
        ("card_number", GOOD_CARD),
        ("exp_month", "12"),
        ("exp_year", "2040"),
        ("cvc", "123"),
    ];

    // Payment down: checkout says to try later, nothing is reserved, the cart is kept.
    stack.kill("payment").await;
    let key = uuid::Uuid::new_v4().to_string();
    let mut form = address.to_vec();
    form.push(("idempotency_key", &key));
    let page = browser.post("/checkout", &form).await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    assert!(page.has("try again later"), "{}", page.body);
    assert_eq!(stack.available(&id).await, 100, "nothing reserved");
    assert!(browser.get("/cart").await.has(&name), "the cart kept");
    stack.start_service("payment", &[]).await;

    // Shipping and notification down: the order still goes through (the saga needs shipping,
    // so it is down only after), and the order page renders without the shipment's status.
    let key = uuid::Uuid::new_v4().to_string();
    let mut form = address.to_vec();
    form.push(("idempotency_key", &key));
    let placed = browser.post("/checkout", &form).await;
    assert_eq!(placed.status, StatusCode::SEE_OTHER, "{}", placed.body);
    stack.kill("shipping").await;
    stack.kill("notification").await;
    let order = browser.get(placed.location()).await;
    assert_eq!(order.status, StatusCode::OK);
    assert!(order.has("Thank you! Your order is confirmed."));
    assert!(order.has("cannot be shown right now"), "{}", order.body);
    assert_eq!(browser.get("/").await.status, StatusCode::OK);
    let inbox = browser.get("/inbox").await;
    assert_eq!(inbox.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(inbox.has("Temporarily unavailable") && inbox.has("Your messages"));

    // The catalog down: its pages say so at once; the cart still renders from the cart, names
    // and prices included. (A product the order did not buy: the confirmed order empties the
    // lines it bought, whenever its event arrives.)
    let other = stack.products(2).await.remove(1);
    let (other_id, other_name) = (
        other["id"].as_str().unwrap().to_owned(),
        other["name"].as_str().unwrap().to_owned(),
    );
    let added = browser
        .post(
            "/cart/items",
            &[("product_id", &other_id), ("quantity", "1")],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    stack.kill("catalog").await;
    let started = std::time::Instant::now();
    let product = browser.get(&format!("/product/{id}")).await;
    println!(
        "product page with the catalog down: {:?}",
        started.elapsed()
    );
    assert_eq!(product.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(product.has("Temporarily unavailable") && product.headers.contains_key("retry-after"));
    let cart = browser.get("/cart").await;
    assert_eq!(cart.status, StatusCode::OK);
    assert!(
        cart.has(&other_name) && cart.has("Total: $"),
        "{}",
        cart.body
    );
}

#[tokio::test]
async fn changing_a_cart_line_of_a_product_no_longer_sold_says_so() {
    let stack = stack().await;
    let (id, name) = first_product(&stack).await;
    let mut shopper = Browser::new(&stack);
    shopper.register("Shopper").await;
    let added = shopper
        .post("/cart/items", &[("product_id", &id), ("quantity", "1")])
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);

    // An admin stops selling it (through the API).
    let admin = stack.admin().await;
    let deleted = stack
        .client
        .delete(stack.api(&format!("/products/{id}")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());

    let page = shopper
        .post(&format!("/cart/items/{id}"), &[("quantity", "2")])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    assert!(
        page.has("role=\"alert\"") && page.has("no longer sold"),
        "{}",
        page.body
    );
    // Removing it still works.
    let removed = shopper.post(&format!("/cart/items/{id}/remove"), &[]).await;
    assert_eq!(
        removed.status,
        StatusCode::SEE_OTHER,
        "{name}: {}",
        removed.body
    );
}
