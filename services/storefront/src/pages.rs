//! The pages: one template per page, each extending `base.html`, and what they show, already
//! formatted (prices, dates), so the templates hold no logic beyond loops and conditions.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use shop_contracts::Money;
use shop_contracts::catalog::{PICTURE_HEIGHT, PICTURE_WIDTH, Product};

/// What every page's header and footer need.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub title: String,
    pub signed_in: bool,
    /// Items in the guest cart; `None` when signed in (the count would cost a call per page).
    pub cart_count: Option<i64>,
    pub csrf: String,
    /// The search box's text.
    pub query: String,
}

impl Layout {
    pub fn cart_label(&self) -> String {
        match self.cart_count {
            Some(n) if n > 0 => format!("Cart ({n})"),
            _ => "Cart".to_owned(),
        }
    }
}

/// A price with its currency's symbol (`$1,234.50`), or its code where it has none here.
pub fn money(m: &Money) -> String {
    let symbol = match m.currency.as_str() {
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        _ => return m.to_string(),
    };
    format!("{symbol}{}", m.amount_text(true))
}

/// The date and time of an RFC 3339 timestamp, readable: `2026-12-06 06:36 UTC`.
pub fn when(timestamp: &str) -> String {
    match (timestamp.get(..10), timestamp.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => timestamp.to_owned(),
    }
}

/// A product as a card or a page shows it.
#[derive(Debug, Clone)]
pub struct ProductView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub price: String,
    pub picture: String,
    pub width: u32,
    pub height: u32,
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        let picture = if p.image_url.is_empty() {
            // Any picture path loads (the catalog draws it); a product without one gets its
            // category's.
            let category = p.categories.first().map_or("shop", String::as_str);
            format!("/images/{category}/default.svg")
        } else {
            p.image_url.clone()
        };
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            price: money(&p.price),
            picture,
            width: PICTURE_WIDTH,
            height: PICTURE_HEIGHT,
        }
    }
}

/// A message at the top of a page: `alert` for what went wrong, `status` for what went right.
#[derive(Debug, Clone)]
pub struct Notice {
    pub role: &'static str,
    pub text: String,
    /// What was wrong with each field, when the API said.
    pub details: Vec<String>,
}

impl Notice {
    pub fn alert(text: impl Into<String>) -> Self {
        Self {
            role: "alert",
            text: text.into(),
            details: Vec::new(),
        }
    }

    pub fn status(text: impl Into<String>) -> Self {
        Self {
            role: "status",
            text: text.into(),
            details: Vec::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct Home {
    pub layout: Layout,
    pub categories: Vec<(String, String)>,
    pub featured: Vec<ProductView>,
}

#[derive(Template)]
#[template(path = "listing.html")]
pub struct Listing {
    pub layout: Layout,
    pub heading: String,
    pub products: Vec<ProductView>,
    /// The link to the next page, when there is one.
    pub next: Option<String>,
}

pub enum StockLevel {
    InStock,
    Few(i64),
    SoldOut,
    Unknown,
}

#[derive(Template)]
#[template(path = "product.html")]
pub struct ProductPage {
    pub layout: Layout,
    pub product: ProductView,
    pub stock: StockLevel,
    pub notice: Option<Notice>,
    /// The quantity as typed, kept when it was refused.
    pub quantity: String,
    /// The admin's form: the price as a decimal, the units on hand (`None` unless an admin).
    pub admin: Option<AdminForm>,
}

pub struct AdminForm {
    pub price: String,
    pub on_hand: String,
}

pub struct CartLineView {
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: String,
    pub line_total: String,
}

#[derive(Template)]
#[template(path = "cart.html")]
pub struct CartPage {
    pub layout: Layout,
    pub lines: Vec<CartLineView>,
    pub total: Option<String>,
    pub notice: Option<Notice>,
}

#[derive(Template)]
#[template(path = "register.html")]
pub struct RegisterPage {
    pub layout: Layout,
    pub notice: Option<Notice>,
    pub name: String,
    pub email: String,
    pub next: String,
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignInPage {
    pub layout: Layout,
    pub notice: Option<Notice>,
    pub email: String,
    pub next: String,
}

/// What the checkout form holds; the card fields are never shown again.
#[derive(Debug, Clone, Default)]
pub struct AddressForm {
    pub name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Template)]
#[template(path = "checkout.html")]
pub struct CheckoutPage {
    pub layout: Layout,
    pub notice: Option<Notice>,
    pub lines: Vec<CartLineView>,
    pub total: Option<String>,
    /// The cart could not be read: the form shows without the summary.
    pub cart_unavailable: bool,
    pub address: AddressForm,
    /// A new key per form shown: the same form sent twice places one order.
    pub idempotency_key: String,
    pub test_cards: Vec<(&'static str, &'static str)>,
    pub next_year: i32,
}

pub struct OrderSummary {
    pub id: String,
    pub status: String,
    pub total: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "orders.html")]
pub struct OrdersPage {
    pub layout: Layout,
    pub orders: Vec<OrderSummary>,
    pub next: Option<String>,
}

pub struct StepView {
    pub step: String,
    pub at: String,
}

#[derive(Template)]
#[template(path = "order.html")]
pub struct OrderPage {
    pub layout: Layout,
    pub notice: Option<Notice>,
    pub id: String,
    pub status: String,
    pub pending: bool,
    pub reason: Option<String>,
    pub lines: Vec<CartLineView>,
    pub subtotal: String,
    pub shipping: Option<String>,
    pub total: String,
    pub tracking_number: Option<String>,
    pub steps: Vec<StepView>,
    /// The shipment's status, or why it cannot be shown now.
    pub shipment: Option<String>,
}

pub struct MessageView {
    pub subject: String,
    pub body: String,
    pub at: String,
}

#[derive(Template)]
#[template(path = "inbox.html")]
pub struct InboxPage {
    pub layout: Layout,
    pub messages: Vec<MessageView>,
}

pub struct TrackingView {
    pub number: String,
    pub status: String,
    pub items: i64,
    pub estimated_days: Option<i64>,
    pub history: Vec<StepView>,
}

#[derive(Template)]
#[template(path = "track.html")]
pub struct TrackPage {
    pub layout: Layout,
    pub notice: Option<Notice>,
    pub number: String,
    pub tracking: Option<TrackingView>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub heading: String,
    pub message: String,
}

/// Renders a page with its status. A page that cannot be rendered (a bug) is a plain 503, not
/// a stack trace.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page could not be rendered");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The shop cannot show this page right now.",
            )
                .into_response()
        }
    }
}

/// A page that only says what went wrong, without the visitor's header state (used where the
/// visitor is not known, such as a refused form).
pub fn error_page(status: StatusCode, heading: &str, message: &str) -> Response {
    render(
        status,
        &ErrorPage {
            layout: Layout {
                title: heading.to_owned(),
                ..Layout::default()
            },
            heading: heading.to_owned(),
            message: message.to_owned(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_like_a_price() {
        assert_eq!(money(&Money::new(3399, "USD")), "$33.99");
        assert_eq!(money(&Money::new(5, "EUR")), "€0.05");
        assert_eq!(money(&Money::new(100_000, "GBP")), "£1,000.00");
        assert_eq!(money(&Money::new(1250, "CHF")), "12.50 CHF");
    }

    #[test]
    fn pages_escape_what_they_show() {
        let page = ErrorPage {
            layout: Layout::default(),
            heading: "<script>alert(1)</script>".into(),
            message: "a & b".into(),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        // askama writes numeric character references.
        assert!(
            html.contains("&#60;script&#62;") && html.contains("a &#38; b"),
            "{html}"
        );
    }
}
