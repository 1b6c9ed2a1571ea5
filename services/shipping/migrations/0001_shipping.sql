-- Portable SQL: runs on SQLite and PostgreSQL alike.
-- One shipment per order: order_id is the idempotency key of the checkout saga. `request` is the
-- normalised create request as JSON, so a retry can be told apart from a different body.
-- items, address and quote are JSON text (read whole, never queried into).
-- status: label_created | in_transit | out_for_delivery | delivered | returned | cancelled.
-- Times are fixed-precision RFC 3339 UTC text, so text order is time order on both backends.
CREATE TABLE shipments (
    tracking_number TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL,
    status          TEXT NOT NULL,
    items_count     BIGINT NOT NULL,
    items           TEXT NOT NULL,
    address         TEXT NOT NULL,
    quote           TEXT NOT NULL,
    request         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

-- Every status a shipment has had, in order (seq 1 is label_created).
CREATE TABLE shipment_events (
    tracking_number TEXT NOT NULL REFERENCES shipments (tracking_number) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    status          TEXT NOT NULL,
    at              TEXT NOT NULL,
    PRIMARY KEY (tracking_number, seq)
);

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
