//! The public API, as the storefront calls it through the gateway: with the visitor's access
//! token when there is one, like any other client.
//!
//! The answers are read as the storefront needs them: the shared contracts' types where the
//! contracts define them (products, categories, the cart), and for the rest small views of the
//! fields the pages show, read tolerantly (unknown fields ignored), as any client of a public API
//! would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shop_contracts::Money;
use shop_contracts::cart::{CART_PATH, Cart};
use shop_contracts::catalog::{Category, Product, product_path};
use shop_kit::{Problem, Upstream, UpstreamError};

/// Why a call did not give the answer a page needs.
#[derive(Debug)]
pub enum ApiError {
    /// The service behind the call cannot answer now: down, too slow, or its circuit is open.
    Unavailable,
    /// The session is not valid (any more): sign in again.
    Unauthorized,
    NotFound,
    /// Refused with a problem (bad input, a conflict, a declined card): say it on the page.
    Rejected {
        status: StatusCode,
        problem: Problem,
        /// The whole answer, for the fields a problem does not have (a checkout's
        /// `reason_code`); null where only the problem was read.
        body: Value,
    },
}

impl From<UpstreamError> for ApiError {
    fn from(err: UpstreamError) -> Self {
        match err {
            UpstreamError::Status {
                status, problem, ..
            } => from_status(status, None, problem),
            other => {
                tracing::warn!(error = %other, "the API did not answer");
                Self::Unavailable
            }
        }
    }
}

fn from_status(status: StatusCode, body: Option<Value>, problem: Option<Problem>) -> ApiError {
    match status {
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
        StatusCode::NOT_FOUND => ApiError::NotFound,
        s if s.is_client_error() => ApiError::Rejected {
            status,
            problem: problem.unwrap_or_else(|| Problem::new(status, "the request was refused")),
            body: body.unwrap_or_default(),
        },
        // 5xx: the shop cannot do it now; the page says so rather than showing an error.
        _ => ApiError::Unavailable,
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Deserialize)]
pub struct ProductPage {
    pub items: Vec<Product>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Stock {
    pub available: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
}

#[derive(Debug, Deserialize)]
pub struct OrderLine {
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
}

#[derive(Debug, Deserialize)]
pub struct StepEntry {
    pub step: String,
    pub at: String,
}

#[derive(Debug, Deserialize)]
pub struct Order {
    pub id: String,
    pub status: String,
    pub items: Vec<OrderLine>,
    pub subtotal: Money,
    pub shipping_cost: Option<Money>,
    pub total: Money,
    pub tracking_number: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub history: Vec<StepEntry>,
}

#[derive(Debug, Deserialize)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Notification {
    pub subject: String,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize)]
pub struct NotificationPage {
    pub items: Vec<Notification>,
}

#[derive(Debug, Deserialize)]
pub struct TrackingEvent {
    pub status: String,
    pub at: String,
}

#[derive(Debug, Deserialize)]
pub struct Tracking {
    pub tracking_number: String,
    pub status: String,
    pub items_count: i64,
    pub estimated_days: Option<i64>,
    pub history: Vec<TrackingEvent>,
}

/// What a checkout came to.
#[derive(Debug)]
pub enum Checkout {
    /// Confirmed (201) or still running (202): the order page follows it.
    Placed { order_id: String },
    /// The order failed or was refused; `reason_code` when the order service gave one.
    Refused {
        status: StatusCode,
        reason_code: Option<String>,
        problem: Problem,
    },
}

/// The address and card a checkout sends, as the order service's `POST /api/orders` takes them.
#[derive(Debug)]
pub struct CheckoutInput<'a> {
    pub name: &'a str,
    pub line1: &'a str,
    pub line2: &'a str,
    pub city: &'a str,
    pub postal_code: &'a str,
    pub country: &'a str,
    pub card_number: &'a str,
    pub exp_month: i64,
    pub exp_year: i64,
    pub cvc: &'a str,
}

#[derive(Clone)]
pub struct Api {
    gateway: Upstream,
    categories: Arc<Mutex<Option<Fetched<Vec<Category>>>>>,
}

/// An answer and when it was fetched.
type Fetched<T> = (Instant, Arc<T>);

/// How long the list of categories is reused: it is on most pages and changes only when an
/// admin adds a category, which then shows within this time.
const CATEGORIES_FOR: Duration = Duration::from_secs(30);

impl Api {
    pub fn new(gateway: Upstream) -> Self {
        Self {
            gateway,
            categories: Arc::default(),
        }
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.gateway.request(method, path);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, token: Option<&str>) -> ApiResult<T> {
        Ok(self
            .gateway
            .json(self.request(Method::GET, path, token))
            .await?)
    }

    /// Sends a write; only its success matters to the caller.
    async fn send(&self, request: reqwest::RequestBuilder) -> ApiResult<Value> {
        let response = self.gateway.send(request).await?;
        let status = response.status();
        let body: Option<Value> = response.json().await.ok();
        if status.is_success() {
            return Ok(body.unwrap_or_default());
        }
        let problem = body
            .clone()
            .and_then(|b| serde_json::from_value::<Problem>(b).ok());
        Err(from_status(status, body, problem))
    }

    pub async fn categories(&self) -> ApiResult<Arc<Vec<Category>>> {
        if let Some((fetched, categories)) = &*self.categories.lock().expect("categories lock")
            && fetched.elapsed() < CATEGORIES_FOR
        {
            return Ok(categories.clone());
        }
        let categories: Arc<Vec<Category>> = Arc::new(self.get("/api/categories", None).await?);
        *self.categories.lock().expect("categories lock") =
            Some((Instant::now(), categories.clone()));
        Ok(categories)
    }

    pub async fn products(
        &self,
        query: Option<&str>,
        category: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> ApiResult<ProductPage> {
        let mut params = vec![("limit", limit.to_string())];
        for (key, value) in [("q", query), ("category", category), ("cursor", cursor)] {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                params.push((key, value.to_owned()));
            }
        }
        let request = self
            .request(Method::GET, "/api/products", None)
            .query(&params);
        Ok(self.gateway.json(request).await?)
    }

    pub async fn product(&self, id: &str) -> ApiResult<Product> {
        self.get(&product_path(id), None).await
    }

    pub async fn stock(&self, product_id: &str) -> ApiResult<Stock> {
        self.get(&format!("/api/stock/{product_id}"), None).await
    }

    pub async fn cart(&self, token: &str) -> ApiResult<Cart> {
        self.get(CART_PATH, Some(token)).await
    }

    pub async fn set_cart_item(
        &self,
        token: &str,
        product_id: &str,
        quantity: i64,
    ) -> ApiResult<()> {
        let path = format!("{CART_PATH}/items/{product_id}");
        self.send(
            self.request(Method::PUT, &path, Some(token))
                .json(&json!({ "quantity": quantity })),
        )
        .await
        .map(drop)
    }

    pub async fn remove_cart_item(&self, token: &str, product_id: &str) -> ApiResult<()> {
        let path = format!("{CART_PATH}/items/{product_id}");
        self.send(self.request(Method::DELETE, &path, Some(token)))
            .await
            .map(drop)
    }

    pub async fn register(&self, name: &str, email: &str, password: &str) -> ApiResult<()> {
        self.send(
            self.request(Method::POST, "/api/users", None)
                .json(&json!({ "name": name, "email": email, "password": password })),
        )
        .await
        .map(drop)
    }

    pub async fn login(&self, email: &str, password: &str) -> ApiResult<Tokens> {
        let body = self
            .send(
                self.request(Method::POST, "/api/auth/login", None)
                    .json(&json!({ "email": email, "password": password })),
            )
            .await?;
        serde_json::from_value(body).map_err(|_| ApiError::Unavailable)
    }

    /// Signs the session out at the user service: its refresh tokens are revoked.
    pub async fn logout(&self, refresh_token: &str) -> ApiResult<()> {
        self.send(
            self.request(Method::POST, "/api/auth/logout", None)
                .json(&json!({ "refresh_token": refresh_token })),
        )
        .await
        .map(drop)
    }

    pub async fn refresh(&self, refresh_token: &str) -> ApiResult<Tokens> {
        let body = self
            .send(
                self.request(Method::POST, "/api/auth/refresh", None)
                    .json(&json!({ "refresh_token": refresh_token })),
            )
            .await?;
        serde_json::from_value(body).map_err(|_| ApiError::Unavailable)
    }

    /// Checks out the caller's cart. `idempotency_key` comes from the form, so a form sent twice
    /// (a double click, a reload) places one order.
    pub async fn checkout(
        &self,
        token: &str,
        idempotency_key: &str,
        input: &CheckoutInput<'_>,
    ) -> ApiResult<Checkout> {
        let mut address = json!({
            "name": input.name, "line1": input.line1, "city": input.city,
            "postal_code": input.postal_code, "country": input.country,
        });
        if !input.line2.is_empty() {
            address["line2"] = json!(input.line2);
        }
        let request = self
            .request(Method::POST, "/api/orders", Some(token))
            .header("idempotency-key", idempotency_key)
            .json(&json!({
                "shipping_address": address,
                "payment": {
                    "card_number": input.card_number, "exp_month": input.exp_month,
                    "exp_year": input.exp_year, "cvc": input.cvc,
                },
            }));
        match self.send(request).await {
            Ok(body) => match body["id"].as_str() {
                Some(id) => Ok(Checkout::Placed {
                    order_id: id.to_owned(),
                }),
                None => Err(ApiError::Unavailable),
            },
            Err(ApiError::Rejected {
                status,
                problem,
                body,
            }) => Ok(Checkout::Refused {
                status,
                reason_code: body["reason_code"].as_str().map(str::to_owned),
                problem,
            }),
            Err(other) => Err(other),
        }
    }

    pub async fn orders(&self, token: &str, cursor: Option<&str>) -> ApiResult<OrderPage> {
        let mut request = self
            .request(Method::GET, "/api/orders", Some(token))
            .query(&[("limit", "20")]);
        if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
            request = request.query(&[("cursor", cursor)]);
        }
        Ok(self.gateway.json(request).await?)
    }

    pub async fn order(&self, token: &str, id: &str) -> ApiResult<Order> {
        self.get(&format!("/api/orders/{id}"), Some(token)).await
    }

    pub async fn notifications(&self, token: &str) -> ApiResult<NotificationPage> {
        self.get("/api/notifications?limit=50", Some(token)).await
    }

    pub async fn tracking(&self, token: Option<&str>, number: &str) -> ApiResult<Tracking> {
        self.get(&format!("/api/shipments/{number}"), token).await
    }

    /// Admins: replaces the product with its new price (the other fields as they are).
    pub async fn set_price(&self, token: &str, product: &Product, amount: i64) -> ApiResult<()> {
        let request = self
            .request(Method::PUT, &product_path(&product.id), Some(token))
            .json(&json!({
                "sku": product.sku, "name": product.name, "description": product.description,
                "price": { "amount": amount, "currency": product.price.currency },
                "categories": product.categories, "image_url": product.image_url,
            }));
        self.send(request).await.map(drop)
    }

    /// Admins: sets the units on hand.
    pub async fn set_stock(&self, token: &str, product_id: &str, on_hand: i64) -> ApiResult<()> {
        let request = self
            .request(
                Method::PUT,
                &format!("/api/stock/{product_id}"),
                Some(token),
            )
            .json(&json!({ "on_hand": on_hand }));
        self.send(request).await.map(drop)
    }
}
