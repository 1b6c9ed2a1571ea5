-- Portable SQL: runs on SQLite and PostgreSQL alike.
-- `reserved` counts units held by live reservations; a hold is taken with one conditional UPDATE
-- (`... WHERE on_hand - reserved >= quantity`), and the CHECK is the last line against overselling.
CREATE TABLE stock (
    product_id TEXT PRIMARY KEY,
    on_hand    BIGINT NOT NULL,
    reserved   BIGINT NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    CONSTRAINT stock_never_oversold CHECK (reserved >= 0 AND reserved <= on_hand)
);

-- One reservation per order: order_id is the idempotency key of the checkout saga.
-- status: held | committed | released | expired. Times are fixed-precision RFC 3339 UTC text,
-- so text order is time order on both backends.
CREATE TABLE reservations (
    order_id   TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX reservations_by_status_expiry ON reservations (status, expires_at);

CREATE TABLE reservation_lines (
    order_id   TEXT NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
    product_id TEXT NOT NULL,
    quantity   BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX reservation_lines_by_product ON reservation_lines (product_id);

-- Events written in the same transaction as the change they announce. Nothing relays them yet:
-- the relay to NATS JetStream (published_at set once sent) is later work.
CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    source       TEXT NOT NULL,
    time         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    published_at TEXT
);
CREATE INDEX outbox_unpublished ON outbox (published_at, time);
