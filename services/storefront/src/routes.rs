//! The pages and forms. Every form is a POST answered with a redirect (POST-redirect-GET), or
//! with the same page again saying what was wrong, the typed values kept. Nothing here ever
//! answers with a stack trace: a service that cannot answer gives a page that says so.

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use shop_contracts::Money;
use shop_contracts::catalog::Product;

use crate::api::{ApiError, Checkout, CheckoutInput};
use crate::pages::{self, *};
use crate::session::{self, GuestLine, Visitor};
use crate::{App, assets};

pub use shop_contracts::cart::MAX_QUANTITY;

/// Products per page of a listing, and on the home page.
const PAGE_SIZE: u32 = 24;
const FEATURED: u32 = 8;
/// "Only N left" from this many down.
const FEW_LEFT: i64 = 5;

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/search", get(search))
        .route("/category/{slug}", get(category))
        .route("/product/{id}", get(product))
        .route("/product/{id}/admin", post(admin_save))
        .route("/cart", get(cart))
        .route("/cart/items", post(add_to_cart))
        .route("/cart/items/{id}", post(update_line))
        .route("/cart/items/{id}/remove", post(remove_line))
        .route("/register", get(register_form).post(register))
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", post(signout))
        .route("/checkout", get(checkout_form).post(checkout))
        .route("/orders", get(orders))
        .route("/orders/{id}", get(order))
        .route("/inbox", get(inbox))
        .route("/track", get(track))
        .route("/static/shop.css", get(assets::css))
        .route("/static/shop.js", get(assets::js))
        .route("/static/favicon.svg", get(assets::icon))
        // A catch-all route rather than a fallback: the kit sets the fallback of every service
        // (a problem+json 404), and a browser should get a page.
        .route("/{*rest}", get(not_found))
        .layer(middleware::from_fn_with_state(app.clone(), session::layer))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// No inline script or style, nothing from another origin, no framing, no referrer leaving the
/// shop: the headers every answer carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn layout(v: &Visitor, title: impl Into<String>) -> Layout {
    Layout {
        title: title.into(),
        signed_in: v.signed_in().is_some(),
        cart_count: v
            .signed_in()
            .is_none()
            .then(|| v.guest_cart.iter().map(|l| l.quantity).sum()),
        csrf: v.csrf.clone(),
        query: String::new(),
    }
}

fn error(v: &Visitor, status: StatusCode, heading: &str, message: String) -> Response {
    let mut response = pages::render(
        status,
        &ErrorPage {
            layout: layout(v, heading),
            heading: heading.to_owned(),
            message,
        },
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn not_found_page(v: &Visitor, what: &str) -> Response {
    error(
        v,
        StatusCode::NOT_FOUND,
        "Not found",
        format!("{what} does not exist, or no longer does."),
    )
}

/// The page for an API call that failed; `what` names what could not be had ("The catalogue").
fn failure(v: &Visitor, err: ApiError, what: &str) -> Response {
    match err {
        ApiError::Unavailable => error(
            v,
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            format!("{what} cannot be reached right now. Please try again in a moment."),
        ),
        ApiError::NotFound => not_found_page(v, what),
        ApiError::Unauthorized => sign_in_again(),
        ApiError::Rejected {
            status, problem, ..
        } => error(
            v,
            status,
            "That did not work",
            problem
                .detail
                .unwrap_or_else(|| "The shop refused the request.".to_owned()),
        ),
    }
}

/// The session is over (or never was): sign in, and come back.
fn sign_in_again() -> Response {
    Redirect::to("/signin").into_response()
}

fn sign_in_then(next: &str) -> Response {
    Redirect::to(&format!("/signin?{}", query(&[("next", next)]))).into_response()
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

/// Where to go after signing in: a path of this site only (never `//elsewhere` or a URL).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && n.len() < 512 =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Product and order ids are UUIDs; anything else is refused before it reaches a URL.
fn uuid(raw: &str) -> Option<String> {
    uuid::Uuid::parse_str(raw).ok().map(|u| u.to_string())
}

fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

// ---- browsing ----

async fn home(State(app): State<App>, Extension(v): Extension<Visitor>) -> Response {
    let (categories, featured) = tokio::join!(
        app.api.categories(),
        app.api.products(None, None, None, FEATURED)
    );
    match (categories, featured) {
        (Ok(categories), Ok(featured)) => pages::render(
            StatusCode::OK,
            &Home {
                layout: layout(&v, "Welcome"),
                categories: categories.into_iter().map(|c| (c.slug, c.name)).collect(),
                featured: featured.items.iter().map(ProductView::from).collect(),
            },
        ),
        (Err(e), _) | (_, Err(e)) => failure(&v, e, "The product catalogue"),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    q: Option<String>,
    cursor: Option<String>,
}

async fn search(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Query(params): Query<ListQuery>,
) -> Response {
    let q: String = params
        .q
        .unwrap_or_default()
        .trim()
        .chars()
        .take(100)
        .collect();
    let page = match app
        .api
        .products(Some(&q), None, params.cursor.as_deref(), PAGE_SIZE)
        .await
    {
        Ok(page) => page,
        Err(e) => return failure(&v, e, "The product catalogue"),
    };
    let mut layout = layout(&v, format!("Search: {q}"));
    layout.query = q.clone();
    let heading = if q.is_empty() {
        "All products".to_owned()
    } else {
        format!("Search results for “{q}”")
    };
    pages::render(
        StatusCode::OK,
        &Listing {
            layout,
            heading,
            products: page.items.iter().map(ProductView::from).collect(),
            next: page
                .next_cursor
                .map(|c| format!("/search?{}", query(&[("q", &q), ("cursor", &c)]))),
        },
    )
}

async fn category(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(slug): Path<String>,
    Query(params): Query<ListQuery>,
) -> Response {
    if slug.is_empty()
        || slug.len() > 64
        || !slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return not_found_page(&v, "That category");
    }
    let (categories, page) = tokio::join!(
        app.api.categories(),
        app.api
            .products(None, Some(&slug), params.cursor.as_deref(), PAGE_SIZE)
    );
    let (categories, page) = match (categories, page) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(e), _) | (_, Err(e)) => return failure(&v, e, "The product catalogue"),
    };
    let Some(found) = categories.into_iter().find(|c| c.slug == slug) else {
        return not_found_page(&v, "That category");
    };
    pages::render(
        StatusCode::OK,
        &Listing {
            layout: layout(&v, found.name.clone()),
            heading: found.name,
            products: page.items.iter().map(ProductView::from).collect(),
            next: page
                .next_cursor
                .map(|c| format!("/category/{slug}?{}", query(&[("cursor", &c)]))),
        },
    )
}

#[derive(Debug, Deserialize)]
struct ProductQuery {
    saved: Option<String>,
}

/// The product page, with `notice` and the typed `quantity` when a form on it was refused.
async fn product_page(
    app: &App,
    v: &Visitor,
    id: &str,
    status: StatusCode,
    notice: Option<Notice>,
    quantity: Option<String>,
    admin: Option<AdminForm>,
) -> Response {
    let Some(id) = uuid(id) else {
        return not_found_page(v, "That product");
    };
    let (product, stock) = tokio::join!(app.api.product(&id), app.api.stock(&id));
    let product = match product {
        Ok(p) => p,
        Err(e) => return failure(v, e, "That product"),
    };
    let stock = match stock {
        Ok(s) if s.available <= 0 => StockLevel::SoldOut,
        Ok(s) if s.available <= FEW_LEFT => StockLevel::Few(s.available),
        Ok(_) => StockLevel::InStock,
        // Inventory down: the page still shows the product; checkout will say if it is gone.
        Err(_) => StockLevel::Unknown,
    };
    let admin = v.is_admin().then(|| {
        admin.unwrap_or_else(|| AdminForm {
            price: decimal(&product.price),
            on_hand: String::new(),
        })
    });
    pages::render(
        status,
        &ProductPage {
            layout: layout(v, product.name.clone()),
            product: ProductView::from(&product),
            stock,
            notice,
            quantity: quantity.unwrap_or_else(|| "1".to_owned()),
            admin,
        },
    )
}

async fn product(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
    Query(params): Query<ProductQuery>,
) -> Response {
    let notice = params.saved.map(|_| Notice::status("Saved."));
    product_page(&app, &v, &id, StatusCode::OK, notice, None, None).await
}

async fn not_found(
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    request_path: axum::http::Uri,
) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if request_path.path().starts_with("/api/") || !wants_html {
        return shop_kit::Problem::not_found("no such page").into_response();
    }
    not_found_page(&v, "That page")
}

// ---- the cart ----

/// Every field defaults to empty: a missing one is then refused on the page with the others,
/// never by the form decoder's plain-text error.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AddForm {
    product_id: String,
    quantity: String,
}

/// A quantity as typed: a whole number from `min` to 99.
fn parse_quantity(raw: &str, min: i64) -> Result<i64, Notice> {
    match raw.trim().parse::<i64>() {
        Ok(q) if (min..=MAX_QUANTITY).contains(&q) => Ok(q),
        _ => Err(Notice::alert(format!(
            "Enter a whole number from {min} to {MAX_QUANTITY} as the quantity (you entered “{}”).",
            raw.trim()
        ))),
    }
}

async fn add_to_cart(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Form(form): Form<AddForm>,
) -> Response {
    let Some(id) = uuid(&form.product_id) else {
        return not_found_page(&v, "That product");
    };
    let quantity = match parse_quantity(&form.quantity, 1) {
        Ok(q) => q,
        Err(notice) => {
            return product_page(
                &app,
                &v,
                &id,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(notice),
                Some(form.quantity),
                None,
            )
            .await;
        }
    };
    let added = format!("/cart?{}", query(&[("added", &id)]));
    match v.signed_in() {
        Some(token) => {
            let current = match app.api.cart(token).await {
                Ok(cart) => cart
                    .items
                    .iter()
                    .find(|l| l.product_id == id)
                    .map_or(0, |l| l.quantity),
                Err(e) => return failure(&v, e, "Your cart"),
            };
            match app
                .api
                .set_cart_item(token, &id, (current + quantity).min(MAX_QUANTITY))
                .await
            {
                Ok(()) => see_other(&added),
                Err(ApiError::NotFound) => not_found_page(&v, "That product"),
                Err(ApiError::Rejected { problem, .. }) => {
                    let notice = Notice::alert(problem.detail.unwrap_or_default());
                    product_page(
                        &app,
                        &v,
                        &id,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Some(notice),
                        Some(form.quantity),
                        None,
                    )
                    .await
                }
                Err(e) => failure(&v, e, "Your cart"),
            }
        }
        None => {
            // A guest: the line goes into the cookie once the product is known to exist.
            if let Err(e) = app.api.product(&id).await {
                return failure(&v, e, "That product");
            }
            let mut lines = v.guest_cart.clone();
            let room = lines.len() < session::GUEST_CART_MAX_LINES;
            match lines.iter_mut().find(|l| l.product_id == id) {
                Some(line) => line.quantity = (line.quantity + quantity).min(MAX_QUANTITY),
                None if room => lines.push(GuestLine {
                    product_id: id.clone(),
                    quantity,
                }),
                None => {
                    let notice = Notice::alert(format!(
                        "A guest cart holds at most {} products; sign in to add more.",
                        session::GUEST_CART_MAX_LINES
                    ));
                    return product_page(
                        &app,
                        &v,
                        &id,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Some(notice),
                        Some(form.quantity),
                        None,
                    )
                    .await;
                }
            }
            with_cookie(see_other(&added), guest_cookie(&app, &lines))
        }
    }
}

fn guest_cookie(app: &App, lines: &[GuestLine]) -> HeaderValue {
    let value = session::format_guest_cart(lines);
    app.cookies.set(
        session::GUEST_CART_COOKIE,
        (!value.is_empty()).then_some(value.as_str()),
    )
}

#[derive(Debug, Deserialize)]
struct CartQuery {
    added: Option<String>,
}

fn line_view(product_id: String, name: String, quantity: i64, unit_price: &Money) -> CartLineView {
    CartLineView {
        product_id,
        name,
        quantity,
        unit_price: money(unit_price),
        line_total: money(&Money::new(
            unit_price.amount.saturating_mul(quantity),
            &unit_price.currency,
        )),
    }
}

/// The visitor's cart as lines and a total. A guest's lines are priced from the catalog; with
/// the catalog down they are listed without names or prices rather than not at all.
async fn cart_lines(
    app: &App,
    v: &Visitor,
) -> Result<(Vec<CartLineView>, Option<String>), ApiError> {
    if let Some(token) = v.signed_in() {
        let cart = app.api.cart(token).await?;
        let lines = cart
            .items
            .iter()
            .map(|l| {
                line_view(
                    l.product_id.clone(),
                    l.name.clone(),
                    l.quantity,
                    &l.unit_price,
                )
            })
            .collect();
        return Ok((lines, cart.total.as_ref().map(money)));
    }
    let mut lines = Vec::new();
    let mut total: Option<Money> = None;
    let mut catalog_down = false;
    for line in &v.guest_cart {
        let product: Option<Product> = if catalog_down {
            None
        } else {
            match app.api.product(&line.product_id).await {
                Ok(p) => Some(p),
                Err(ApiError::NotFound) => continue,
                Err(_) => {
                    catalog_down = true;
                    None
                }
            }
        };
        match product {
            Some(p) => {
                let amount = p.price.amount.saturating_mul(line.quantity);
                total = Some(match total {
                    Some(t) if t.currency == p.price.currency => {
                        Money::new(t.amount + amount, &t.currency)
                    }
                    Some(t) => t,
                    None => Money::new(amount, &p.price.currency),
                });
                lines.push(line_view(
                    line.product_id.clone(),
                    p.name.clone(),
                    line.quantity,
                    &p.price,
                ));
            }
            None => lines.push(CartLineView {
                product_id: line.product_id.clone(),
                name: "A product (details unavailable right now)".to_owned(),
                quantity: line.quantity,
                unit_price: "–".to_owned(),
                line_total: "–".to_owned(),
            }),
        }
    }
    let total = if catalog_down {
        None
    } else {
        total.as_ref().map(money)
    };
    Ok((lines, total))
}

async fn cart_page(app: &App, v: &Visitor, status: StatusCode, notice: Option<Notice>) -> Response {
    match cart_lines(app, v).await {
        Ok((lines, total)) => pages::render(
            status,
            &CartPage {
                layout: layout(v, "Your cart"),
                lines,
                total,
                notice,
            },
        ),
        Err(e) => failure(v, e, "Your cart"),
    }
}

async fn cart(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Query(params): Query<CartQuery>,
) -> Response {
    let notice = params.added.map(|_| Notice::status("Added to your cart."));
    cart_page(&app, &v, StatusCode::OK, notice).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct QuantityForm {
    quantity: String,
}

async fn update_line(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
    Form(form): Form<QuantityForm>,
) -> Response {
    let Some(id) = uuid(&id) else {
        return not_found_page(&v, "That product");
    };
    let quantity = match parse_quantity(&form.quantity, 0) {
        Ok(q) => q,
        Err(notice) => {
            return cart_page(&app, &v, StatusCode::UNPROCESSABLE_ENTITY, Some(notice)).await;
        }
    };
    set_line(&app, &v, &id, quantity).await
}

async fn remove_line(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = uuid(&id) else {
        return not_found_page(&v, "That product");
    };
    set_line(&app, &v, &id, 0).await
}

/// Sets a line's quantity (0 removes it), then back to the cart.
async fn set_line(app: &App, v: &Visitor, id: &str, quantity: i64) -> Response {
    match v.signed_in() {
        Some(token) => {
            let result = if quantity == 0 {
                app.api.remove_cart_item(token, id).await
            } else {
                app.api.set_cart_item(token, id, quantity).await
            };
            match result {
                Ok(()) | Err(ApiError::NotFound) => see_other("/cart"),
                Err(ApiError::Rejected { problem, .. }) => {
                    let notice = Notice::alert(problem.detail.unwrap_or_default());
                    cart_page(app, v, StatusCode::UNPROCESSABLE_ENTITY, Some(notice)).await
                }
                Err(e) => failure(v, e, "Your cart"),
            }
        }
        None => {
            let mut lines = v.guest_cart.clone();
            if quantity == 0 {
                lines.retain(|l| l.product_id != id);
            } else if let Some(line) = lines.iter_mut().find(|l| l.product_id == id) {
                line.quantity = quantity;
            }
            with_cookie(see_other("/cart"), guest_cookie(app, &lines))
        }
    }
}

// ---- accounts ----

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn register_form(Extension(v): Extension<Visitor>, Query(q): Query<NextQuery>) -> Response {
    pages::render(
        StatusCode::OK,
        &RegisterPage {
            layout: layout(&v, "Create an account"),
            notice: None,
            name: String::new(),
            email: String::new(),
            next: local_path(q.next.as_deref()),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RegisterForm {
    name: String,
    email: String,
    password: String,
    next: Option<String>,
}

/// A field's name in the API, as the form labels it.
fn field_label(field: &str) -> &str {
    match field.rsplit('.').next().unwrap_or(field) {
        "name" => "Name",
        "email" => "Email",
        "password" => "Password",
        "line1" => "Address",
        "line2" => "Address line 2",
        "city" => "City",
        "postal_code" => "Postal code",
        "country" => "Country",
        "card_number" => "Card number",
        "exp_month" => "Expiry month",
        "exp_year" => "Expiry year",
        "cvc" => "CVC",
        "quantity" => "Quantity",
        other => other,
    }
}

/// "Please check …" with one line per field the API refused.
fn check_fields(problem: &shop_kit::Problem) -> Notice {
    let mut notice = Notice::alert("Please check the form:");
    notice.details = problem
        .errors
        .iter()
        .map(|e| format!("{}: {}", field_label(&e.field), e.message))
        .collect();
    if notice.details.is_empty() {
        notice.text = problem
            .detail
            .clone()
            .unwrap_or_else(|| "Please check the form.".into());
    }
    notice
}

async fn register(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Form(form): Form<RegisterForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    let again = |status, notice| {
        pages::render(
            status,
            &RegisterPage {
                layout: layout(&v, "Create an account"),
                notice: Some(notice),
                name: form.name.clone(),
                email: form.email.clone(),
                next: next.clone(),
            },
        )
    };
    match app
        .api
        .register(form.name.trim(), form.email.trim(), &form.password)
        .await
    {
        Ok(()) => {}
        Err(ApiError::Rejected {
            status: StatusCode::CONFLICT,
            ..
        }) => {
            return again(
                StatusCode::CONFLICT,
                Notice::alert("An account with this email exists already: sign in instead."),
            );
        }
        Err(ApiError::Rejected {
            status, problem, ..
        }) => return again(status, check_fields(&problem)),
        Err(e) => return failure(&v, e, "Registration"),
    }
    match app.api.login(form.email.trim(), &form.password).await {
        Ok(tokens) => signed_in(&app, &v, tokens, &next).await,
        Err(e) => failure(&v, e, "Signing in"),
    }
}

async fn signin_form(Extension(v): Extension<Visitor>, Query(q): Query<NextQuery>) -> Response {
    pages::render(
        StatusCode::OK,
        &SignInPage {
            layout: layout(&v, "Sign in"),
            notice: None,
            email: String::new(),
            next: local_path(q.next.as_deref()),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SignInForm {
    email: String,
    password: String,
    next: Option<String>,
}

async fn signin(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    let again = |status, text: &str| {
        pages::render(
            status,
            &SignInPage {
                layout: layout(&v, "Sign in"),
                notice: Some(Notice::alert(text)),
                email: form.email.clone(),
                next: next.clone(),
            },
        )
    };
    match app.api.login(form.email.trim(), &form.password).await {
        Ok(tokens) => signed_in(&app, &v, tokens, &next).await,
        Err(ApiError::Unauthorized) => again(StatusCode::UNAUTHORIZED, "Wrong email or password."),
        Err(ApiError::Rejected {
            status: StatusCode::TOO_MANY_REQUESTS,
            ..
        }) => again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts for this account: wait a minute and try again.",
        ),
        Err(ApiError::Rejected {
            status, problem, ..
        }) => again(status, &check_fields(&problem).details.join("; ")).into_response(),
        Err(e) => failure(&v, e, "Signing in"),
    }
}

/// Sets the session cookies, moves the guest cart into the account's cart, and goes on.
async fn signed_in(app: &App, v: &Visitor, tokens: crate::api::Tokens, next: &str) -> Response {
    if !v.guest_cart.is_empty() {
        merge_guest_cart(app, &tokens.access_token, &v.guest_cart).await;
    }
    let mut response = see_other(next);
    for (name, value) in [
        (session::ACCESS_COOKIE, Some(tokens.access_token.as_str())),
        (session::REFRESH_COOKIE, Some(tokens.refresh_token.as_str())),
        (session::GUEST_CART_COOKIE, None),
    ] {
        response = with_cookie(response, app.cookies.set(name, value));
    }
    response
}

/// Adds each guest line to the account's cart (quantities add up, to the cart's limit). A line
/// that cannot be added (a product no longer sold) is left out; the rest still move.
async fn merge_guest_cart(app: &App, token: &str, lines: &[GuestLine]) {
    let current = match app.api.cart(token).await {
        Ok(cart) => cart.items,
        Err(e) => {
            tracing::warn!(error = ?e, "the guest cart was not merged: the cart is unavailable");
            return;
        }
    };
    for line in lines {
        let existing = current
            .iter()
            .find(|l| l.product_id == line.product_id)
            .map_or(0, |l| l.quantity);
        let quantity = (existing + line.quantity).min(MAX_QUANTITY);
        if let Err(e) = app
            .api
            .set_cart_item(token, &line.product_id, quantity)
            .await
        {
            tracing::info!(product_id = %line.product_id, error = ?e, "a guest cart line was not merged");
        }
    }
}

async fn signout(State(app): State<App>) -> Response {
    let mut response = see_other("/");
    for name in [session::ACCESS_COOKIE, session::REFRESH_COOKIE] {
        response = with_cookie(response, app.cookies.set(name, None));
    }
    response
}

// ---- checkout and orders ----

fn test_cards() -> Vec<(&'static str, &'static str)> {
    use shop_contracts::test_cards::*;
    vec![
        (SUCCEEDS, "succeeds"),
        (DECLINED, "is declined"),
        (INSUFFICIENT_FUNDS, "has insufficient funds"),
    ]
}

fn this_year() -> i32 {
    time::OffsetDateTime::now_utc().year()
}

async fn checkout_page(
    app: &App,
    v: &Visitor,
    status: StatusCode,
    notice: Option<Notice>,
    address: AddressForm,
) -> Response {
    let Some(_) = v.signed_in() else {
        return sign_in_then("/checkout");
    };
    let (lines, total, cart_unavailable) = match cart_lines(app, v).await {
        Ok((lines, total)) => (lines, total, false),
        Err(ApiError::Unauthorized) => return sign_in_then("/checkout"),
        // The form still shows: the order service reads the cart itself at checkout.
        Err(_) => (Vec::new(), None, true),
    };
    pages::render(
        status,
        &CheckoutPage {
            layout: layout(v, "Checkout"),
            notice,
            lines,
            total,
            cart_unavailable,
            address,
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            test_cards: test_cards(),
            next_year: this_year() + 1,
        },
    )
}

async fn checkout_form(State(app): State<App>, Extension(v): Extension<Visitor>) -> Response {
    checkout_page(&app, &v, StatusCode::OK, None, AddressForm::default()).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CheckoutForm {
    name: String,
    line1: String,
    line2: String,
    city: String,
    postal_code: String,
    country: String,
    card_number: String,
    exp_month: String,
    exp_year: String,
    cvc: String,
    idempotency_key: String,
}

/// What to tell the buyer when the order service refused or failed the checkout.
fn refusal(status: StatusCode, reason_code: Option<&str>, problem: &shop_kit::Problem) -> Notice {
    let detail = problem.detail.clone().unwrap_or_default();
    match reason_code {
        Some("card_declined") => {
            Notice::alert("Your card was declined. Nothing was charged: try another card.")
        }
        Some("insufficient_funds") => Notice::alert(
            "Your card has insufficient funds. Nothing was charged: try another card.",
        ),
        Some("out_of_stock") | Some("reservation_lost") => Notice::alert(format!(
            "Sorry, some items are no longer in stock ({detail}). Nothing was charged; your cart \
             is kept: change the quantities and try again."
        )),
        _ if status == StatusCode::UNPROCESSABLE_ENTITY => check_fields(problem),
        _ => Notice::alert(if detail.is_empty() {
            "The order could not be placed.".to_owned()
        } else {
            format!("The order could not be placed: {detail}")
        }),
    }
}

async fn checkout(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Form(form): Form<CheckoutForm>,
) -> Response {
    let Some(token) = v.signed_in() else {
        return sign_in_then("/checkout");
    };
    let address = AddressForm {
        name: form.name.trim().to_owned(),
        line1: form.line1.trim().to_owned(),
        line2: form.line2.trim().to_owned(),
        city: form.city.trim().to_owned(),
        postal_code: form.postal_code.trim().to_owned(),
        country: form.country.trim().to_ascii_uppercase(),
    };
    let (Ok(exp_month), Ok(exp_year)) = (
        form.exp_month.trim().parse::<i64>(),
        form.exp_year.trim().parse::<i64>(),
    ) else {
        let notice =
            Notice::alert("The expiry month and year must be numbers, such as 12 and 2030.");
        return checkout_page(
            &app,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(notice),
            address,
        )
        .await;
    };
    let card_number: String = form
        .card_number
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    // The key the form was shown with, so sending it twice places one order; a key that is not
    // one of ours is replaced (the order is then simply not deduplicated).
    let key = uuid(&form.idempotency_key).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let input = CheckoutInput {
        name: &address.name,
        line1: &address.line1,
        line2: &address.line2,
        city: &address.city,
        postal_code: &address.postal_code,
        country: &address.country,
        card_number: &card_number,
        exp_month,
        exp_year,
        cvc: form.cvc.trim(),
    };
    match app.api.checkout(token, &key, &input).await {
        Ok(Checkout::Placed { order_id }) => see_other(&format!("/orders/{order_id}?placed=1")),
        Ok(Checkout::Refused {
            status,
            reason_code,
            problem,
        }) => {
            let notice = refusal(status, reason_code.as_deref(), &problem);
            checkout_page(&app, &v, status, Some(notice), address).await
        }
        Err(ApiError::Unauthorized) => sign_in_then("/checkout"),
        Err(_) => {
            let notice = Notice::alert(
                "Payment is unavailable right now; please try again later. Nothing was charged \
                 and your cart is kept.",
            );
            checkout_page(
                &app,
                &v,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(notice),
                address,
            )
            .await
        }
    }
}

#[derive(Debug, Deserialize)]
struct CursorQuery {
    cursor: Option<String>,
}

async fn orders(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Query(params): Query<CursorQuery>,
) -> Response {
    let Some(token) = v.signed_in() else {
        return sign_in_then("/orders");
    };
    match app.api.orders(token, params.cursor.as_deref()).await {
        Ok(page) => pages::render(
            StatusCode::OK,
            &OrdersPage {
                layout: layout(&v, "Your orders"),
                orders: page
                    .items
                    .iter()
                    .map(|o| OrderSummary {
                        id: o.id.clone(),
                        status: o.status.clone(),
                        total: money(&o.total),
                        created: when(&o.created_at),
                    })
                    .collect(),
                next: page
                    .next_cursor
                    .map(|c| format!("/orders?{}", query(&[("cursor", &c)]))),
            },
        ),
        Err(e) => failure(&v, e, "Your orders"),
    }
}

/// A saga step or a shipment status, as a person would say it.
fn step_label(step: &str) -> String {
    match step {
        "placed" => "Order placed",
        "reserved" => "Stock reserved",
        "quoted" => "Shipping priced",
        "charged" => "Card charged",
        "committed" => "Stock committed",
        "shipped" => "Shipment created",
        "confirmed" => "Confirmed",
        "compensating" => "Undoing what was done (stock released, charge refunded)",
        "failed" => "Failed",
        "label_created" => "Label created",
        "in_transit" => "In transit",
        "out_for_delivery" => "Out for delivery",
        "delivered" => "Delivered",
        "cancelled" => "Cancelled",
        "returned" => "Returned",
        other => other,
    }
    .to_owned()
}

#[derive(Debug, Deserialize)]
struct OrderQuery {
    placed: Option<String>,
}

async fn order(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
    Query(params): Query<OrderQuery>,
) -> Response {
    let Some(token) = v.signed_in() else {
        return sign_in_then(&format!("/orders/{}", uuid(&id).unwrap_or_default()));
    };
    let Some(id) = uuid(&id) else {
        return not_found_page(&v, "That order");
    };
    let order = match app.api.order(token, &id).await {
        Ok(order) => order,
        // Another customer's order is "not found" too: its existence is not the visitor's
        // business.
        Err(ApiError::Rejected {
            status: StatusCode::FORBIDDEN,
            ..
        }) => {
            return not_found_page(&v, "That order");
        }
        Err(e) => return failure(&v, e, "That order"),
    };
    let shipment = match &order.tracking_number {
        Some(number) => Some(match app.api.tracking(Some(token), number).await {
            Ok(t) => format!("{} ({} item(s))", step_label(&t.status), t.items_count),
            Err(_) => "The shipment's status cannot be shown right now.".to_owned(),
        }),
        None => None,
    };
    let pending = order.status == "PENDING";
    let notice = params.placed.and_then(|_| match order.status.as_str() {
        "CONFIRMED" => Some(Notice::status("Thank you! Your order is confirmed.")),
        "PENDING" => Some(Notice::status("Thank you! We are confirming your order.")),
        _ => None,
    });
    pages::render(
        StatusCode::OK,
        &OrderPage {
            layout: layout(&v, format!("Order {}", order.id)),
            notice,
            id: order.id.clone(),
            status: order.status.clone(),
            pending,
            reason: order.reason.clone(),
            lines: order
                .items
                .iter()
                .map(|l| line_view(String::new(), l.name.clone(), l.quantity, &l.unit_price))
                .collect(),
            subtotal: money(&order.subtotal),
            shipping: order.shipping_cost.as_ref().map(money),
            total: money(&order.total),
            tracking_number: order.tracking_number.clone(),
            steps: order
                .history
                .iter()
                .map(|s| StepView {
                    step: step_label(&s.step),
                    at: when(&s.at),
                })
                .collect(),
            shipment,
        },
    )
}

async fn inbox(State(app): State<App>, Extension(v): Extension<Visitor>) -> Response {
    let Some(token) = v.signed_in() else {
        return sign_in_then("/inbox");
    };
    match app.api.notifications(token).await {
        Ok(page) => pages::render(
            StatusCode::OK,
            &InboxPage {
                layout: layout(&v, "Inbox"),
                messages: page
                    .items
                    .into_iter()
                    .map(|m| MessageView {
                        subject: m.subject,
                        body: m.body,
                        at: when(&m.created_at),
                    })
                    .collect(),
            },
        ),
        Err(e) => failure(&v, e, "Your messages"),
    }
}

#[derive(Debug, Deserialize)]
struct TrackQuery {
    number: Option<String>,
}

async fn track(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Query(params): Query<TrackQuery>,
) -> Response {
    let number = params
        .number
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    let page = |status, notice, tracking| {
        pages::render(
            status,
            &TrackPage {
                layout: layout(&v, "Track a parcel"),
                notice,
                number: number.clone(),
                tracking,
            },
        )
    };
    if number.is_empty() {
        return page(StatusCode::OK, None, None);
    }
    if number.len() > 40
        || !number
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        let notice =
            Notice::alert("That is not a tracking number: they look like SHP-7KQ2-M4XA-PL3D-ZR6B.");
        return page(StatusCode::UNPROCESSABLE_ENTITY, Some(notice), None);
    }
    match app.api.tracking(v.signed_in(), &number).await {
        Ok(t) => page(
            StatusCode::OK,
            None,
            Some(TrackingView {
                number: t.tracking_number,
                status: step_label(&t.status),
                items: t.items_count,
                estimated_days: t.estimated_days,
                history: t
                    .history
                    .iter()
                    .map(|h| StepView {
                        step: step_label(&h.status),
                        at: when(&h.at),
                    })
                    .collect(),
            }),
        ),
        Err(ApiError::NotFound) => page(
            StatusCode::NOT_FOUND,
            Some(Notice::alert("No parcel has that tracking number.")),
            None,
        ),
        Err(ApiError::Unavailable) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Notice::alert(
                "Tracking is unavailable right now; please try again in a moment.",
            )),
            None,
        ),
        Err(e) => failure(&v, e, "Tracking"),
    }
}

// ---- admin ----

/// Minor units as a decimal: 3399 → "33.99".
fn decimal(m: &Money) -> String {
    format!("{}.{:02}", m.amount / 100, m.amount.rem_euclid(100))
}

/// A price as typed ("33.99", "34", "34.5") in minor units.
fn parse_price(raw: &str) -> Option<i64> {
    let raw = raw.trim().trim_start_matches(['$', '€', '£']);
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty()
        || fraction.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || whole.len() > 9
    {
        return None;
    }
    let cents = format!("{fraction:0<2}").parse::<i64>().ok()?;
    Some(whole.parse::<i64>().ok()? * 100 + cents)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AdminSave {
    price: String,
    on_hand: String,
}

async fn admin_save(
    State(app): State<App>,
    Extension(v): Extension<Visitor>,
    Path(id): Path<String>,
    Form(form): Form<AdminSave>,
) -> Response {
    let (Some(token), true) = (v.signed_in(), v.is_admin()) else {
        return error(
            &v,
            StatusCode::FORBIDDEN,
            "Admins only",
            "Only the shop's admins can change prices and stock.".to_owned(),
        );
    };
    let Some(id) = uuid(&id) else {
        return not_found_page(&v, "That product");
    };
    let kept = AdminForm {
        price: form.price.clone(),
        on_hand: form.on_hand.clone(),
    };
    let refuse = |text: String, kept| async {
        product_page(
            &app,
            &v,
            &id,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(Notice::alert(text)),
            None,
            Some(kept),
        )
        .await
    };
    let Some(amount) = parse_price(&form.price) else {
        return refuse(
            format!(
                "Enter the price as a number such as 24.90 (you entered “{}”).",
                form.price.trim()
            ),
            kept,
        )
        .await;
    };
    let on_hand = match form.on_hand.trim() {
        "" => None,
        raw => match raw.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => return refuse(
                format!(
                    "Enter the units on hand as a whole number, 0 or more (you entered “{raw}”)."
                ),
                kept,
            )
            .await,
        },
    };
    let product = match app.api.product(&id).await {
        Ok(p) => p,
        Err(e) => return failure(&v, e, "That product"),
    };
    if product.price.amount != amount
        && let Err(e) = app.api.set_price(token, &product, amount).await
    {
        return match e {
            ApiError::Rejected { problem, .. } => {
                refuse(problem.detail.unwrap_or_default(), kept).await
            }
            e => failure(&v, e, "The catalogue"),
        };
    }
    if let Some(on_hand) = on_hand
        && let Err(e) = app.api.set_stock(token, &id, on_hand).await
    {
        return match e {
            ApiError::Rejected { problem, .. } => {
                refuse(problem.detail.unwrap_or_default(), kept).await
            }
            e => failure(&v, e, "The inventory"),
        };
    }
    see_other(&format!("/product/{id}?saved=1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use askama::Template;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/checkout")), "/checkout");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil",
            "checkout",
            "",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn quantities_are_whole_numbers_in_range() {
        assert_eq!(parse_quantity(" 3 ", 1).unwrap(), 3);
        assert_eq!(parse_quantity("0", 0).unwrap(), 0);
        for bad in ["0", "-1", "100", "1.5", "two", ""] {
            let notice = parse_quantity(bad, 1).unwrap_err();
            assert!(notice.text.contains("1 to 99"), "{bad}: {}", notice.text);
        }
    }

    #[test]
    fn prices_parse_to_minor_units() {
        assert_eq!(parse_price("33.99"), Some(3399));
        assert_eq!(parse_price("$34"), Some(3400));
        assert_eq!(parse_price("34.5"), Some(3450));
        for bad in ["", "-1", "1.234", "abc", "1e3", "1.-5"] {
            assert_eq!(parse_price(bad), None, "{bad}");
        }
    }

    #[test]
    fn refusals_say_what_happened() {
        let problem = shop_kit::Problem::new(StatusCode::CONFLICT, "short: Classic Atlas");
        assert!(
            refusal(
                StatusCode::PAYMENT_REQUIRED,
                Some("card_declined"),
                &problem
            )
            .text
            .contains("declined")
        );
        assert!(
            refusal(
                StatusCode::PAYMENT_REQUIRED,
                Some("insufficient_funds"),
                &problem
            )
            .text
            .contains("insufficient funds")
        );
        let stock = refusal(StatusCode::CONFLICT, Some("out_of_stock"), &problem);
        assert!(stock.text.contains("no longer in stock") && stock.text.contains("Classic Atlas"));
    }

    #[test]
    fn the_error_page_renders() {
        let page = ErrorPage {
            layout: Layout::default(),
            heading: "Temporarily unavailable".into(),
            message: "x".into(),
        };
        assert!(
            page.render()
                .unwrap()
                .contains("<h1>Temporarily unavailable</h1>")
        );
    }
}
