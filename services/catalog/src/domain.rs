//! Catalog rules: what a valid product is, how search patterns are formed, the seed.

use serde::{Deserialize, Serialize};
use shop_kit::{ApiResult, Money, Validator};
use utoipa::ToSchema;

pub const MAX_NAME: usize = 200;
pub const MAX_DESCRIPTION: usize = 4000;
pub const MAX_SKU: usize = 40;
pub const MAX_QUERY: usize = 100;
pub const MAX_CATEGORIES: usize = 10;
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

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

/// A product as an admin submits it, for create and full update.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ProductInput {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub price: Money,
    pub categories: Vec<String>,
    #[serde(default)]
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
            self.image_url.is_empty()
                || (self.image_url.len() <= 500
                    && (self.image_url.starts_with("https://") || self.image_url.starts_with('/'))),
            "image_url",
            "must be an https:// URL or a path, at most 500 characters",
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

/// The seed catalog: eight categories, 28 products each, deterministic so every fresh database
/// (and every replica racing to seed it) holds the same products with the same ids.
pub fn seed() -> (Vec<Category>, Vec<Product>) {
    const CATEGORIES: [(&str, &str, [&str; 7]); 8] = [
        (
            "kitchen",
            "Kitchen",
            [
                "Kettle",
                "Chef Knife",
                "Skillet",
                "Cutting Board",
                "Teapot",
                "Colander",
                "Whisk",
            ],
        ),
        (
            "outdoors",
            "Outdoors",
            [
                "Tent",
                "Lantern",
                "Backpack",
                "Sleeping Bag",
                "Hammock",
                "Compass",
                "Canteen",
            ],
        ),
        (
            "books",
            "Books",
            [
                "Cookbook",
                "Field Guide",
                "Atlas",
                "Novel",
                "Sketchbook",
                "Almanac",
                "Notebook",
            ],
        ),
        (
            "electronics",
            "Electronics",
            [
                "Headphones",
                "Speaker",
                "Charger",
                "Keyboard",
                "Desk Lamp",
                "Radio",
                "Mouse",
            ],
        ),
        (
            "clothing",
            "Clothing",
            [
                "Scarf",
                "Rain Jacket",
                "Wool Socks",
                "Beanie",
                "Flannel Shirt",
                "Gloves",
                "Sweater",
            ],
        ),
        (
            "home",
            "Home",
            [
                "Blanket",
                "Candle",
                "Vase",
                "Cushion",
                "Wall Clock",
                "Mirror",
                "Plant Pot",
            ],
        ),
        (
            "toys",
            "Toys",
            [
                "Puzzle",
                "Kite",
                "Yo-yo",
                "Building Blocks",
                "Board Game",
                "Spinning Top",
                "Marbles",
            ],
        ),
        (
            "sports",
            "Sports",
            [
                "Yoga Mat",
                "Jump Rope",
                "Water Bottle",
                "Tennis Balls",
                "Dumbbell",
                "Bike Bell",
                "Frisbee",
            ],
        ),
    ];
    const STYLES: [&str; 4] = ["Classic", "Compact", "Deluxe", "Everyday"];
    let namespace = uuid::Uuid::from_u128(0x5b0b_5eed_0000_4000_8000_0000_0000_0000);
    let mut categories = Vec::new();
    let mut products = Vec::new();
    for (c, (slug, label, items)) in CATEGORIES.iter().enumerate() {
        categories.push(Category {
            slug: (*slug).into(),
            name: (*label).into(),
        });
        for (i, item) in items.iter().enumerate() {
            for (s, style) in STYLES.iter().enumerate() {
                let sku = format!(
                    "{}-{:02}{}",
                    slug[..3].to_uppercase(),
                    i + 1,
                    (b'A' + s as u8) as char
                );
                let name = format!("{style} {item}");
                // A price from 4.99 to ~150: varied, but fixed per product.
                let amount =
                    499 + ((c * 7919 + i * 104_729 + s * 1_299_709) % 14_500) as i64 / 100 * 100;
                products.push(Product {
                    id: uuid::Uuid::new_v5(&namespace, sku.as_bytes()).to_string(),
                    description: format!(
                        "The {} {} from our {} range: built to last, priced to please.",
                        style.to_lowercase(),
                        item.to_lowercase(),
                        label.to_lowercase()
                    ),
                    sku,
                    name,
                    price: Money::new(amount, "USD"),
                    categories: vec![(*slug).into()],
                    image_url: format!("/images/{slug}/{}.jpg", i + 1),
                });
            }
        }
    }
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
