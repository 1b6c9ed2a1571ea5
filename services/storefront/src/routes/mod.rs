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

mod account;
mod admin;
mod browse;
mod cart;
mod orders;

use account::*;
use admin::*;
use browse::*;
use cart::*;
use orders::*;

/// Products per page of a listing, and on the home page.
const PAGE_SIZE: u32 = 24;
const FEATURED: u32 = 8;
/// "Only N left" from this many down.
const FEW_LEFT: i64 = 5;

pub fn router(app: App) -> Router {
    let pages = Router::new()
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
        // A catch-all route rather than a fallback: the kit sets the fallback of every service
        // (a problem+json 404), and a browser should get a page.
        .route("/{*rest}", get(not_found))
        .layer(middleware::from_fn_with_state(app.clone(), session::layer))
        .with_state(app);
    // The assets skip the session: they need no visitor, and a stylesheet fetched beside a page
    // must not refresh the same tokens the page is refreshing.
    Router::new()
        .route("/static/shop.css", get(assets::css))
        .route("/static/shop.js", get(assets::js))
        .route("/static/favicon.svg", get(assets::icon))
        .merge(pages)
        .layer(middleware::from_fn(security_headers))
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
