-- Portable SQL: runs on SQLite and PostgreSQL alike.
-- Name and price are copied from the catalog when an item is set, so the cart can be shown
-- while the catalog is down; checkout prices the order afresh.
CREATE TABLE cart_items (
    user_id          TEXT NOT NULL,
    product_id       TEXT NOT NULL,
    quantity         BIGINT NOT NULL,
    name             TEXT NOT NULL,
    unit_price_minor BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (user_id, product_id)
);
