//! The catalog's product and category, as the catalog answers them and as the cart and the order
//! service read them (`GET /api/products/{id}`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::money::Money;

/// The path of one product, for callers of the catalog.
pub fn product_path(product_id: impl std::fmt::Display) -> String {
    format!("/api/products/{product_id}")
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Product {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub categories: Vec<String>,
    pub image_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Category {
    /// Lower-case letters, digits and dashes.
    #[schema(pattern = "^[a-z0-9-]{1,50}$")]
    pub slug: String,
    #[schema(max_length = 100, pattern = r"[^\s\x00-\x1f\x7f-\x9f]")]
    pub name: String,
}

/// Where the catalog serves its product pictures (`/images/<category>/<name>.svg`): the prefix
/// a gateway routes to the catalog, so every `image_url` the API gives loads.
pub const PICTURES_PREFIX: &str = "/images";
/// Every product picture is this size in pixels; pages reserve the space before it loads.
pub const PICTURE_WIDTH: u32 = 480;
pub const PICTURE_HEIGHT: u32 = 360;
