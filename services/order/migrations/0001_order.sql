-- Portable SQL: runs on SQLite and PostgreSQL alike. Times are fixed-precision RFC 3339 UTC text.
-- No card number and no CVC is ever stored: a card is its brand and last four digits.

-- One row per order; the row is also the Idempotency-Key claim (unique per user and key).
-- `step` is the last saga step completed; every write to it is a conditional UPDATE on the
-- expected step and on `runner` (the saga runner holding the order), so two runners can never
-- both advance one order. `updated_at` is the runner's lease: an order not terminal and not
-- updated for a while is taken over by the resumer.
CREATE TABLE orders (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    idem_key         TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           TEXT NOT NULL,
    step             TEXT NOT NULL,
    runner           TEXT NOT NULL,
    items            TEXT NOT NULL,
    currency         TEXT NOT NULL,
    subtotal         BIGINT NOT NULL,
    shipping_cost    BIGINT,
    shipping_quote   TEXT,
    shipping_address TEXT NOT NULL,
    card_brand       TEXT NOT NULL,
    card_last4       TEXT NOT NULL,
    charge_id        TEXT,
    -- 1 when a charge may exist that the order does not know of (a charge call that may have
    -- reached payment): compensation then asks payment for the order's charges.
    payment_check    BIGINT NOT NULL DEFAULT 0,
    tracking_number  TEXT,
    reason_code      TEXT,
    reason           TEXT,
    -- JSON field errors that explain a failure (the short items of an out-of-stock order).
    reason_errors    TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    CONSTRAINT one_order_per_key UNIQUE (user_id, idem_key)
);
CREATE INDEX orders_by_user ON orders (user_id, created_at, id);
CREATE INDEX orders_unfinished ON orders (status, updated_at);

-- The saga's history: one row per step reached.
CREATE TABLE order_steps (
    order_id TEXT NOT NULL REFERENCES orders (id),
    step     TEXT NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (order_id, step)
);
