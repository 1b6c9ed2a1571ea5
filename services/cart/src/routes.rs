//! HTTP handlers of the cart service.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use serde::Deserialize;
use shop_contracts::catalog::{Product, product_path};
use shop_kit::{ApiResult, Caller, Json, Money, Path, Problem, Upstream, UpstreamError};
use utoipa::{OpenApi, ToSchema};

use crate::domain::{self, Cart, CartLine};
use crate::storage::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub catalog: Upstream,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetQuantity {
    /// To remove the item, DELETE it.
    #[schema(minimum = 1, maximum = 99)]
    #[serde(deserialize_with = "shop_contracts::rules::integer")]
    pub quantity: i64,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop cart service",
        description = "The caller's shopping cart."
    ),
    paths(get_cart, set_item, remove_item, clear_cart),
    components(schemas(Cart, CartLine, SetQuantity, Problem, Money))
)]
pub struct ApiDoc;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/cart", get(get_cart).delete(clear_cart))
        .route("/api/cart/items/{product_id}", put(set_item))
        .route("/api/cart/items/{product_id}", delete(remove_item))
        .with_state(state)
}

/// The caller's cart. Served from the cart's own database: works while the catalog is down.
#[utoipa::path(get, path = "/api/cart", security(("identity" = [])), responses((status = 200, body = Cart)))]
async fn get_cart(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Cart>> {
    Ok(Json(state.store.cart(&caller.user_id.to_string()).await?))
}

/// Put a product in the cart with this quantity (replacing any earlier quantity).
#[utoipa::path(put, path = "/api/cart/items/{product_id}", params(("product_id" = uuid::Uuid, Path)),
    request_body = SetQuantity, security(("identity" = [])), responses(
    (status = 200, body = Cart),
    (status = 404, body = Problem, description = "No such product (`unknown-product`)."),
    (status = 409, body = Problem, description = "The cart holds another currency (`currency-mismatch`), or is full (`cart-full`)."),
    (status = 502, body = Problem, description = "The catalog answered something unreadable."),
    (status = 503, body = Problem, description = "The catalog is unavailable."),
    (status = 504, body = Problem, description = "The catalog did not answer in time.")))]
async fn set_item(
    State(state): State<AppState>,
    caller: Caller,
    Path(product_id): Path<uuid::Uuid>,
    Json(body): Json<SetQuantity>,
) -> ApiResult<Json<Cart>> {
    domain::validate_quantity(body.quantity)?;
    let user_id = caller.user_id.to_string();
    let product: Product = match state.catalog.get_json(&product_path(product_id)).await {
        Ok(product) => product,
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
            return Err(Problem::typed(
                StatusCode::NOT_FOUND,
                "unknown-product",
                format!("there is no product {product_id}"),
            ));
        }
        Err(e @ UpstreamError::Status { .. }) => {
            tracing::warn!(error = %e, "catalog error");
            return Err(Problem::unavailable(
                "the catalog cannot check this product right now; try again shortly",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let cart = state.store.cart(&user_id).await?;
    domain::check_currency(&cart, &product.price)?;
    let is_new = !cart.items.iter().any(|l| l.product_id == product.id);
    if is_new && cart.items.len() >= domain::MAX_LINES {
        return Err(Problem::typed(
            StatusCode::CONFLICT,
            "cart-full",
            format!(
                "a cart holds at most {} different products",
                domain::MAX_LINES
            ),
        ));
    }
    let line = domain::line(product.id, product.name, body.quantity, product.price);
    state.store.set_line(&user_id, &line).await?;
    // The cart as read above with this write applied, without reading it again: the line
    // replaced where it was, or added last (the cart is ordered by when each line was first
    // added). A change the same user made in between shows in their next read.
    let mut lines = cart.items;
    match lines.iter_mut().find(|l| l.product_id == line.product_id) {
        Some(existing) => *existing = line,
        None => lines.push(line),
    }
    Ok(Json(Cart::from_lines(lines)))
}

/// Take a product out of the cart.
#[utoipa::path(delete, path = "/api/cart/items/{product_id}", params(("product_id" = uuid::Uuid, Path)),
    security(("identity" = [])), responses((status = 200, body = Cart)))]
async fn remove_item(
    State(state): State<AppState>,
    caller: Caller,
    Path(product_id): Path<uuid::Uuid>,
) -> ApiResult<Json<Cart>> {
    let user_id = caller.user_id.to_string();
    state
        .store
        .remove_line(&user_id, &product_id.to_string())
        .await?;
    Ok(Json(state.store.cart(&user_id).await?))
}

/// Empty the cart.
#[utoipa::path(delete, path = "/api/cart", security(("identity" = [])), responses((status = 204, description = "Emptied.")))]
async fn clear_cart(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    state.store.clear(&caller.user_id.to_string()).await?;
    Ok(StatusCode::NO_CONTENT)
}
