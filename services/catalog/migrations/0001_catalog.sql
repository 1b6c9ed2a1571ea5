-- Portable SQL: runs on SQLite and PostgreSQL alike.
CREATE TABLE categories (
    slug TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE products (
    id          TEXT PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    image_url   TEXT NOT NULL,
    -- Lower-cased name, sku and description: what text search matches against.
    search_text TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- Listing order and the keyset cursor.
CREATE INDEX products_by_name ON products (name, id);

CREATE TABLE product_categories (
    product_id TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    category   TEXT NOT NULL REFERENCES categories (slug),
    PRIMARY KEY (product_id, category)
);
CREATE INDEX product_categories_by_category ON product_categories (category, product_id);
