//! Catalog rules: what a valid product is, how search patterns are formed, the seed.

use serde::Deserialize;
use shop_kit::{ApiResult, Money, Validator};
use utoipa::ToSchema;

pub const MAX_NAME: usize = 200;
pub const MAX_DESCRIPTION: usize = 4000;
pub const MAX_SKU: usize = 40;
pub const MAX_QUERY: usize = 100;
pub const MAX_CATEGORIES: usize = 10;
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// The product and category as this service answers them and the cart and the order service
/// read them.
pub use shop_contracts::catalog::{Category, Product};

/// A product as an admin submits it, for create and full update.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ProductInput {
    /// Upper-case letters, digits and dashes; unique.
    #[schema(pattern = "^[A-Z0-9-]{1,40}$")]
    pub sku: String,
    #[schema(max_length = 200, pattern = r"[^\s\x00-\x1f\x7f-\x9f]")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 4000)]
    pub description: String,
    pub price: Money,
    /// Slugs of existing categories (an unknown one is a 422).
    #[schema(min_items = 1, max_items = 10, example = json!(["kitchen"]))]
    pub categories: Vec<String>,
    /// Empty, or one of the catalog's pictures (`/images/<category>/<name>.svg`).
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^(/images/[a-z0-9-]+/[a-z0-9-]+\\.svg)?$")]
    pub image_url: String,
}

impl From<&Product> for ProductInput {
    fn from(p: &Product) -> Self {
        Self {
            sku: p.sku.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            price: p.price.clone(),
            categories: p.categories.clone(),
            image_url: p.image_url.clone(),
        }
    }
}

impl ProductInput {
    pub fn validate(&self) -> ApiResult<()> {
        let mut v = Validator::new();
        v.check(
            !self.sku.is_empty()
                && self.sku.len() <= MAX_SKU
                && self
                    .sku
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'),
            "sku",
            format!("must be 1 to {MAX_SKU} upper-case letters, digits or dashes"),
        )
        .text("name", &self.name, MAX_NAME)
        .check(
            self.description.chars().count() <= MAX_DESCRIPTION,
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        )
        .check(
            (1..=MAX_CATEGORIES).contains(&self.categories.len()),
            "categories",
            format!("must list 1 to {MAX_CATEGORIES} categories"),
        )
        .check(
            self.image_url.is_empty() || crate::pictures::is_picture_url(&self.image_url),
            "image_url",
            "must be empty or one of the catalog's pictures, /images/<category>/<name>.svg \
             (lower-case letters, digits and dashes): other addresses would not load in the shop",
        );
        self.price.validate(&mut v, "price");
        v.finish()
    }
}

/// A `LIKE` pattern matching `query` anywhere, with the wildcard characters in it taken literally.
pub fn contains_pattern(query: &str) -> String {
    let mut pattern = String::with_capacity(query.len() + 2);
    pattern.push('%');
    for c in query.trim().to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

pub fn search_text(sku: &str, name: &str, description: &str) -> String {
    format!("{} {} {}", name, sku, description).to_lowercase()
}

/// The seed catalog: the contracts' seed products (eight categories, 28 products each, ids
/// derived from their SKUs), named, described and priced here. Deterministic, so every fresh
/// database (and every replica racing to seed it) holds the same products with the same ids.
pub fn seed() -> (Vec<Category>, Vec<Product>) {
    use shop_contracts::seed::{CATEGORIES, STYLES};
    let categories = CATEGORIES
        .iter()
        .map(|c| Category {
            slug: c.slug.into(),
            name: c.name.into(),
        })
        .collect();
    let products = shop_contracts::seed::products()
        .into_iter()
        .map(|p| {
            let category = &CATEGORIES[p.category];
            let item = category.items[p.item];
            let style = STYLES[p.style];
            // A price from 4.99 to ~150: varied, but fixed per product.
            let amount = 499
                + ((p.category * 7919 + p.item * 104_729 + p.style * 1_299_709) % 14_500) as i64
                    / 100
                    * 100;
            Product {
                id: p.id.to_string(),
                description: format!(
                    "The {} {} from our {} range: built to last, priced to please.",
                    style.to_lowercase(),
                    item.to_lowercase(),
                    category.name.to_lowercase()
                ),
                sku: p.sku.clone(),
                name: format!("{style} {item}"),
                price: Money::new(amount, "USD"),
                categories: vec![category.slug.into()],
                image_url: format!("/images/{}/{}.svg", category.slug, p.sku.to_lowercase()),
            }
        })
        .collect();
    (categories, products)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_has_enough_valid_unique_products() {
        let (categories, products) = seed();
        assert!(products.len() >= 200, "{} products", products.len());
        let mut skus: Vec<_> = products.iter().map(|p| &p.sku).collect();
        skus.sort();
        skus.dedup();
        assert_eq!(skus.len(), products.len());
        for p in &products {
            assert!(categories.iter().any(|c| p.categories.contains(&c.slug)));
            ProductInput::from(p)
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", p.sku));
        }
        assert_eq!(seed().1[7].id, products[7].id, "ids are deterministic");
    }

    #[test]
    fn wildcards_in_queries_are_literal() {
        assert_eq!(contains_pattern(" 100%_Cotton "), "%100\\%\\_cotton%");
        assert_eq!(contains_pattern("x' OR 1=1 --"), "%x' or 1=1 --%");
    }
}
