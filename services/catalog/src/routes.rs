//! HTTP handlers of the catalog service.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use shop_kit::page::Cursor;
use shop_kit::{ApiResult, Caller, Json, Path, Problem, Query, Validator};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::domain::{self, Category, Product, ProductInput};
use crate::storage::{Store, WriteError};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Text to find in the name, SKU or description.
    #[param(max_length = 100)]
    pub q: Option<String>,
    /// A category slug.
    #[param(max_length = 50)]
    pub category: Option<String>,
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page (any other value is a 400).
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop catalog service",
        description = "Products and categories."
    ),
    paths(
        list_products,
        get_product,
        create_product,
        update_product,
        delete_product,
        list_categories,
        create_category
    ),
    components(schemas(Product, ProductInput, ProductPage, Category, Problem, shop_kit::Money))
)]
pub struct ApiDoc;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/products", get(list_products).post(create_product))
        .route(
            "/api/products/{id}",
            get(get_product).put(update_product).delete(delete_product),
        )
        .route(
            "/api/categories",
            get(list_categories).post(create_category),
        )
        .route("/images/{category}/{file}", get(picture))
        .with_state(state)
}

/// A product picture: drawn from its path, the same bytes every time, so cached for a year.
async fn picture(uri: axum::http::Uri) -> axum::response::Response {
    let path = uri.path();
    if !crate::pictures::is_picture_url(path) {
        return Problem::not_found("no such picture").into_response();
    }
    (
        [
            (axum::http::header::CONTENT_TYPE, "image/svg+xml"),
            (
                axum::http::header::CACHE_CONTROL,
                "public, max-age=31536000, immutable",
            ),
        ],
        crate::pictures::draw(path),
    )
        .into_response()
}

/// Search and list products.
#[utoipa::path(get, path = "/api/products", params(ListParams), responses((status = 200, body = ProductPage)))]
async fn list_products(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ProductPage>> {
    let limit = params.limit.unwrap_or(domain::DEFAULT_LIMIT);
    let mut v = Validator::new();
    v.check(
        (1..=domain::MAX_LIMIT).contains(&limit),
        "limit",
        format!("must be 1 to {}", domain::MAX_LIMIT),
    );
    if let Some(q) = &params.q {
        v.check(
            q.chars().count() <= domain::MAX_QUERY,
            "q",
            format!("must be at most {} characters", domain::MAX_QUERY),
        );
    }
    if let Some(c) = &params.category {
        v.check(
            c.chars().count() <= 50,
            "category",
            "must be at most 50 characters",
        );
    }
    v.finish()?;
    let pattern = params
        .q
        .as_deref()
        .filter(|q| !q.trim().is_empty())
        .map(domain::contains_pattern);
    let cursor = params.cursor.as_deref().map(Cursor::decode).transpose()?;
    let category = params.category.as_deref().filter(|c| !c.is_empty());
    let page = state
        .store
        .list(pattern.as_deref(), category, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ProductPage {
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// One product.
#[utoipa::path(get, path = "/api/products/{id}", params(("id" = uuid::Uuid, Path)), responses((status = 200, body = Product)))]
async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<Json<Product>> {
    state
        .store
        .get(&id.to_string())
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found("no such product"))
}

fn write_problem(err: WriteError) -> Problem {
    match err {
        WriteError::DuplicateSku => Problem::conflict("a product with this SKU already exists"),
        WriteError::UnknownCategories(slugs) => Problem::validation(vec![shop_kit::FieldError {
            field: "categories".into(),
            message: format!("unknown categories: {}", slugs.join(", ")),
        }]),
        WriteError::Db(e) => e.into(),
    }
}

/// Add a product (admin).
#[utoipa::path(post, path = "/api/products", request_body = ProductInput, security(("identity" = [])), responses(
    (status = 201, body = Product), (status = 403, body = Problem, description = "Not an admin."),
    (status = 409, body = Problem, description = "The SKU is taken.")))]
async fn create_product(
    State(state): State<AppState>,
    caller: Caller,
    Json(input): Json<ProductInput>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    input.validate()?;
    let id = shop_kit::context::new_id().to_string();
    state
        .store
        .insert(&id, &input)
        .await
        .map_err(write_problem)?;
    let product = state
        .store
        .get(&id)
        .await?
        .ok_or_else(|| Problem::internal("a created product vanished"))?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// Replace a product (admin).
#[utoipa::path(put, path = "/api/products/{id}", params(("id" = uuid::Uuid, Path)), request_body = ProductInput, security(("identity" = [])), responses(
    (status = 200, body = Product), (status = 403, body = Problem, description = "Not an admin."),
    (status = 409, body = Problem, description = "The SKU is taken.")))]
async fn update_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<uuid::Uuid>,
    Json(input): Json<ProductInput>,
) -> ApiResult<Json<Product>> {
    caller.require_admin()?;
    input.validate()?;
    let id = id.to_string();
    if !state
        .store
        .update(&id, &input)
        .await
        .map_err(write_problem)?
    {
        return Err(Problem::not_found("no such product"));
    }
    state
        .store
        .get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found("no such product"))
}

/// Remove a product (admin).
#[utoipa::path(delete, path = "/api/products/{id}", params(("id" = uuid::Uuid, Path)), security(("identity" = [])), responses(
    (status = 204, description = "Deleted."), (status = 403, body = Problem, description = "Not an admin.")))]
async fn delete_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if state.store.delete(&id.to_string()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("no such product"))
    }
}

/// All categories.
#[utoipa::path(get, path = "/api/categories", responses((status = 200, body = [Category])))]
async fn list_categories(State(state): State<AppState>) -> ApiResult<Json<Vec<Category>>> {
    Ok(Json(state.store.categories().await?))
}

/// Add a category (admin).
#[utoipa::path(post, path = "/api/categories", request_body = Category, security(("identity" = [])), responses(
    (status = 201, body = Category), (status = 403, body = Problem, description = "Not an admin."),
    (status = 409, body = Problem, description = "The category exists.")))]
async fn create_category(
    State(state): State<AppState>,
    caller: Caller,
    Json(category): Json<Category>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    let mut v = Validator::new();
    v.check(
        !category.slug.is_empty()
            && category.slug.len() <= 50
            && category
                .slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "slug",
        "must be 1 to 50 lower-case letters, digits or dashes",
    )
    .text("name", &category.name, 100);
    v.finish()?;
    if state.store.insert_category(&category).await? {
        Ok((StatusCode::CREATED, Json(category)))
    } else {
        Err(Problem::conflict("this category already exists"))
    }
}
