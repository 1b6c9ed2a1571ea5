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
    pub slug: String,
    pub name: String,
}
