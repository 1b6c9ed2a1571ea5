//! The seed catalogue's keys: which products an empty catalog is seeded with, and their ids.
//! Ids are derived from the SKUs (UUID v5), so the catalog seeding its products and the
//! inventory stocking them agree without a call between them, and every replica racing to seed
//! writes the same rows. The names, descriptions and prices are the catalog's.

use uuid::Uuid;

/// A category of the seed catalogue and its seven items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedCategory {
    pub slug: &'static str,
    pub name: &'static str,
    pub items: [&'static str; 7],
}

/// Eight categories of seven items, each item in every one of [`STYLES`]: 224 products.
pub const CATEGORIES: [SeedCategory; 8] = [
    SeedCategory {
        slug: "kitchen",
        name: "Kitchen",
        items: [
            "Kettle",
            "Chef Knife",
            "Skillet",
            "Cutting Board",
            "Teapot",
            "Colander",
            "Whisk",
        ],
    },
    SeedCategory {
        slug: "outdoors",
        name: "Outdoors",
        items: [
            "Tent",
            "Lantern",
            "Backpack",
            "Sleeping Bag",
            "Hammock",
            "Compass",
            "Canteen",
        ],
    },
    SeedCategory {
        slug: "books",
        name: "Books",
        items: [
            "Cookbook",
            "Field Guide",
            "Atlas",
            "Novel",
            "Sketchbook",
            "Almanac",
            "Notebook",
        ],
    },
    SeedCategory {
        slug: "electronics",
        name: "Electronics",
        items: [
            "Headphones",
            "Speaker",
            "Charger",
            "Keyboard",
            "Desk Lamp",
            "Radio",
            "Mouse",
        ],
    },
    SeedCategory {
        slug: "clothing",
        name: "Clothing",
        items: [
            "Scarf",
            "Rain Jacket",
            "Wool Socks",
            "Beanie",
            "Flannel Shirt",
            "Gloves",
            "Sweater",
        ],
    },
    SeedCategory {
        slug: "home",
        name: "Home",
        items: [
            "Blanket",
            "Candle",
            "Vase",
            "Cushion",
            "Wall Clock",
            "Mirror",
            "Plant Pot",
        ],
    },
    SeedCategory {
        slug: "toys",
        name: "Toys",
        items: [
            "Puzzle",
            "Kite",
            "Yo-yo",
            "Building Blocks",
            "Board Game",
            "Spinning Top",
            "Marbles",
        ],
    },
    SeedCategory {
        slug: "sports",
        name: "Sports",
        items: [
            "Yoga Mat",
            "Jump Rope",
            "Water Bottle",
            "Tennis Balls",
            "Dumbbell",
            "Bike Bell",
            "Frisbee",
        ],
    },
];

/// Every item comes in each of these styles.
pub const STYLES: [&str; 4] = ["Classic", "Compact", "Deluxe", "Everyday"];

/// The namespace of the seed products' UUID v5 ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x5b0b_5eed_0000_4000_8000_0000_0000_0000);

/// One seed product: its key and where it sits in [`CATEGORIES`] and [`STYLES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedProduct {
    pub id: Uuid,
    /// `KIT-01A`: the category's first three letters, the item's number, the style's letter.
    pub sku: String,
    /// Index into [`CATEGORIES`].
    pub category: usize,
    /// Index into the category's items.
    pub item: usize,
    /// Index into [`STYLES`].
    pub style: usize,
}

/// The id of the seed product with this SKU.
pub fn product_id(sku: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, sku.as_bytes())
}

/// Every seed product, category by category, item by item, style by style.
pub fn products() -> Vec<SeedProduct> {
    let mut products = Vec::new();
    for (category, c) in CATEGORIES.iter().enumerate() {
        for item in 0..c.items.len() {
            for style in 0..STYLES.len() {
                let sku = format!(
                    "{}-{:02}{}",
                    c.slug[..3].to_uppercase(),
                    item + 1,
                    char::from(b'A' + style as u8)
                );
                products.push(SeedProduct {
                    id: product_id(&sku),
                    sku,
                    category,
                    item,
                    style,
                });
            }
        }
    }
    products
}

/// The ids of every seed product (what the inventory stocks on an empty database).
pub fn product_ids() -> Vec<String> {
    products().into_iter().map(|p| p.id.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_and_ids_are_unique_and_stable() {
        let products = products();
        assert_eq!(products.len(), 224);
        let mut ids: Vec<_> = products.iter().map(|p| p.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), products.len());
        assert_eq!(products[0].sku, "KIT-01A");
        assert_eq!(products[7].sku, "KIT-02D");
        // The first seed id, as every existing database holds it.
        assert_eq!(
            products[0].id.to_string(),
            Uuid::new_v5(
                &Uuid::parse_str("5b0b5eed-0000-4000-8000-000000000000").unwrap(),
                b"KIT-01A"
            )
            .to_string()
        );
    }
}
