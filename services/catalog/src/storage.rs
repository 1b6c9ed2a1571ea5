//! The catalog's tables. Portable SQL over the kit's database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shop_kit::db::{Tx, now_rfc3339};
use shop_kit::page::{self, Cursor};
use shop_kit::{Database, Money};

use crate::cache::ReadCache;
use crate::domain::{Category, Product, ProductInput, search_text};

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: String,
    sku: String,
    name: String,
    description: String,
    price_minor: i64,
    currency: String,
    image_url: String,
}

/// Binds a product's columns, in the order both INSERT and UPDATE list them after the id:
/// sku, name, description, price, currency, image URL, search text.
fn bind_product<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    input: &'q ProductInput,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&input.sku)
        .bind(input.name.trim())
        .bind(&input.description)
        .bind(input.price.amount)
        .bind(&input.price.currency)
        .bind(&input.image_url)
        .bind(search_text(&input.sku, &input.name, &input.description))
}

impl ProductRow {
    fn into_product(self, categories: Vec<String>) -> Product {
        Product {
            id: self.id,
            sku: self.sku,
            name: self.name,
            description: self.description,
            price: Money::new(self.price_minor, &self.currency),
            categories,
            image_url: self.image_url,
        }
    }
}

/// A product row joined with one of its categories (none when it has none).
#[derive(sqlx::FromRow)]
struct ProductCategoryRow {
    #[sqlx(flatten)]
    product: ProductRow,
    category: Option<String>,
}

const PRODUCT_COLUMNS: &str =
    "p.id, p.sku, p.name, p.description, p.price_minor, p.currency, p.image_url";

/// One page of a listing; `next` is set when more products follow.
#[derive(Clone)]
pub struct Page {
    pub items: Vec<Product>,
    pub next: Option<Cursor>,
}

/// Why a write was refused.
#[derive(Debug)]
pub enum WriteError {
    DuplicateSku,
    UnknownCategories(Vec<String>),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        if Database::is_unique_violation(&e) {
            Self::DuplicateSku
        } else {
            Self::Db(e)
        }
    }
}

/// A listing's arguments: pattern, category, where it starts, page size.
type ListKey = (
    Option<String>,
    Option<String>,
    Option<(String, String)>,
    i64,
);

#[derive(Clone)]
pub struct Store {
    db: Database,
    products: Arc<ReadCache<String, Option<Product>>>,
    listings: Arc<ReadCache<ListKey, Page>>,
    categories: Arc<ReadCache<(), Vec<Category>>>,
}

impl Store {
    /// A store whose answers are kept for `cache_ttl` (see [`crate::cache`]).
    pub fn new(db: Database, cache_ttl: Duration) -> Self {
        Self {
            db,
            products: Arc::new(ReadCache::new(cache_ttl)),
            listings: Arc::new(ReadCache::new(cache_ttl)),
            categories: Arc::new(ReadCache::new(cache_ttl)),
        }
    }

    /// After any write through this store.
    fn forget_reads(&self) {
        self.products.clear();
        self.listings.clear();
        self.categories.clear();
    }

    /// Products matching an optional search pattern and category, in (name, id) order after
    /// `after`; at most `limit`.
    pub async fn list(
        &self,
        pattern: Option<&str>,
        category: Option<&str>,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Page, sqlx::Error> {
        let key = (
            pattern.map(str::to_owned),
            category.map(str::to_owned),
            after.map(|c| (c.key.clone(), c.id.clone())),
            limit,
        );
        let seen = match self.listings.get(&key) {
            Ok(page) => return Ok(page),
            Err(seen) => seen,
        };
        let page = self.read_list(pattern, category, after, limit).await?;
        self.listings.put(seen, key, page.clone());
        Ok(page)
    }

    async fn read_list(
        &self,
        pattern: Option<&str>,
        category: Option<&str>,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Page, sqlx::Error> {
        let mut sql = format!("SELECT {PRODUCT_COLUMNS} FROM products p WHERE 1 = 1");
        let mut n = 0;
        let mut next_param = || {
            n += 1;
            format!("${n}")
        };
        if pattern.is_some() {
            sql += &format!(" AND p.search_text LIKE {} ESCAPE '\\'", next_param());
        }
        if category.is_some() {
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM product_categories pc WHERE pc.product_id = p.id AND pc.category = {})",
                next_param()
            );
        }
        if after.is_some() {
            let (a, b, c) = (next_param(), next_param(), next_param());
            sql += &format!(" AND (p.name > {a} OR (p.name = {b} AND p.id > {c}))");
        }
        sql += &format!(" ORDER BY p.name, p.id LIMIT {}", next_param());
        let mut query = sqlx::query_as::<_, ProductRow>(&sql);
        if let Some(pattern) = pattern {
            query = query.bind(pattern);
        }
        if let Some(category) = category {
            query = query.bind(category);
        }
        if let Some(after) = after {
            query = query.bind(&after.key).bind(&after.key).bind(&after.id);
        }
        let rows = query.bind(limit + 1).fetch_all(self.db.reader()).await?;
        let (rows, next) = page::split(rows, limit, |last| Cursor::new(&last.name, &last.id));
        Ok(Page {
            items: self.with_categories(rows).await?,
            next,
        })
    }

    /// One product with its categories (the hottest read in the shop).
    pub async fn get(&self, id: &str) -> Result<Option<Product>, sqlx::Error> {
        let seen = match self.products.get(&id.to_owned()) {
            Ok(product) => return Ok(product),
            Err(seen) => seen,
        };
        let product = self.read_product(id).await?;
        self.products.put(seen, id.to_owned(), product.clone());
        Ok(product)
    }

    /// One product with its categories, in one query.
    async fn read_product(&self, id: &str) -> Result<Option<Product>, sqlx::Error> {
        let rows: Vec<ProductCategoryRow> = sqlx::query_as(&format!(
            "SELECT {PRODUCT_COLUMNS}, pc.category FROM products p \
             LEFT JOIN product_categories pc ON pc.product_id = p.id WHERE p.id = $1 ORDER BY pc.category"
        ))
        .bind(id)
        .fetch_all(self.db.reader())
        .await?;
        let categories = rows.iter().filter_map(|row| row.category.clone()).collect();
        Ok(rows
            .into_iter()
            .next()
            .map(|row| row.product.into_product(categories)))
    }

    async fn with_categories(&self, rows: Vec<ProductRow>) -> Result<Vec<Product>, sqlx::Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=rows.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT product_id, category FROM product_categories WHERE product_id IN ({}) ORDER BY category",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql);
        for row in &rows {
            query = query.bind(&row.id);
        }
        let mut categories: HashMap<String, Vec<String>> = HashMap::new();
        for (product_id, category) in query.fetch_all(self.db.reader()).await? {
            categories.entry(product_id).or_default().push(category);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let categories = categories.remove(&row.id).unwrap_or_default();
                row.into_product(categories)
            })
            .collect())
    }

    pub async fn categories(&self) -> Result<Vec<Category>, sqlx::Error> {
        let seen = match self.categories.get(&()) {
            Ok(categories) => return Ok(categories),
            Err(seen) => seen,
        };
        let categories = self.read_categories().await?;
        self.categories.put(seen, (), categories.clone());
        Ok(categories)
    }

    async fn read_categories(&self) -> Result<Vec<Category>, sqlx::Error> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT slug, name FROM categories ORDER BY name")
                .fetch_all(self.db.reader())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(slug, name)| Category { slug, name })
            .collect())
    }

    pub async fn insert_category(&self, category: &Category) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(
            "INSERT INTO categories (slug, name) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING",
        )
        .bind(&category.slug)
        .bind(&category.name)
        .execute(self.db.pool())
        .await?;
        self.forget_reads();
        Ok(result.rows_affected() == 1)
    }

    async fn check_categories(tx: &mut Tx, wanted: &[String]) -> Result<(), WriteError> {
        let mut unknown = Vec::new();
        for slug in wanted {
            let found: Option<String> =
                sqlx::query_scalar("SELECT slug FROM categories WHERE slug = $1")
                    .bind(slug)
                    .fetch_optional(&mut **tx)
                    .await?;
            if found.is_none() {
                unknown.push(slug.clone());
            }
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(WriteError::UnknownCategories(unknown))
        }
    }

    async fn write_categories(
        tx: &mut Tx,
        id: &str,
        categories: &[String],
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM product_categories WHERE product_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        for category in categories {
            sqlx::query(
                "INSERT INTO product_categories (product_id, category) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(category)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    pub async fn insert(&self, id: &str, input: &ProductInput) -> Result<(), WriteError> {
        let mut tx = self.db.begin().await?;
        Self::check_categories(&mut tx, &input.categories).await?;
        Self::insert_in(&mut tx, id, input, false).await?;
        tx.commit().await?;
        self.forget_reads();
        Ok(())
    }

    async fn insert_in(
        tx: &mut Tx,
        id: &str,
        input: &ProductInput,
        ignore_existing: bool,
    ) -> Result<(), WriteError> {
        let now = now_rfc3339();
        let conflict = if ignore_existing {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO products (id, sku, name, description, price_minor, currency, image_url, search_text, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9){conflict}"
        );
        let inserted = bind_product(sqlx::query(&sql).bind(id), input)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        if inserted.rows_affected() == 1 {
            Self::write_categories(tx, id, &input.categories).await?;
        }
        Ok(())
    }

    /// Replaces a product; `false` when there is no such product.
    pub async fn update(&self, id: &str, input: &ProductInput) -> Result<bool, WriteError> {
        let mut tx = self.db.begin().await?;
        Self::check_categories(&mut tx, &input.categories).await?;
        let sql = "UPDATE products SET sku = $2, name = $3, description = $4, price_minor = $5, currency = $6, \
                   image_url = $7, search_text = $8, updated_at = $9 WHERE id = $1";
        let updated = bind_product(sqlx::query(sql).bind(id), input)
            .bind(now_rfc3339())
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        Self::write_categories(&mut tx, id, &input.categories).await?;
        tx.commit().await?;
        self.forget_reads();
        Ok(true)
    }

    pub async fn delete(&self, id: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        // Explicit, because SQLite only cascades with foreign keys switched on per connection.
        sqlx::query("DELETE FROM product_categories WHERE product_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM products WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.forget_reads();
        Ok(deleted.rows_affected() == 1)
    }

    /// Loads the seed catalog when there are no products; returns how many were added.
    pub async fn seed_if_empty(&self) -> anyhow::Result<usize> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
            .fetch_one(self.db.pool())
            .await?;
        if count > 0 {
            return Ok(0);
        }
        let (categories, products) = crate::domain::seed();
        let mut tx = self.db.begin().await?;
        for c in &categories {
            sqlx::query(
                "INSERT INTO categories (slug, name) VALUES ($1, $2) ON CONFLICT (slug) DO NOTHING",
            )
            .bind(&c.slug)
            .bind(&c.name)
            .execute(&mut *tx)
            .await?;
        }
        for p in &products {
            Self::insert_in(&mut tx, &p.id, &ProductInput::from(p), true)
                .await
                .map_err(|e| match e {
                    WriteError::Db(e) => anyhow::Error::from(e),
                    other => anyhow::anyhow!("seeding {}: {other:?}", p.sku),
                })?;
        }
        tx.commit().await?;
        self.forget_reads();
        Ok(products.len())
    }
}
