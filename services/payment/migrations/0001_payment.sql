-- Portable SQL: runs on SQLite and PostgreSQL alike. Times are fixed-precision RFC 3339 UTC text.
-- No full card number and no CVC is ever stored: a card is its brand and last four digits.

-- One row per charge attempt, succeeded or failed. `refunded` grows with one conditional UPDATE
-- per refund; the CHECK is the last line against refunding more than was charged.
CREATE TABLE charges (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL,
    status       TEXT NOT NULL,
    failure_code TEXT,
    amount       BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    refunded     BIGINT NOT NULL DEFAULT 0,
    card_brand   TEXT NOT NULL,
    card_last4   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    CONSTRAINT refunds_within_charge CHECK (refunded >= 0 AND refunded <= amount)
);
CREATE INDEX charges_by_order ON charges (order_id, created_at);

-- Every money movement the processor was asked for: kind charge | refund; outcome succeeded |
-- card_declined | insufficient_funds.
CREATE TABLE transactions (
    id         TEXT PRIMARY KEY,
    charge_id  TEXT NOT NULL REFERENCES charges (id),
    kind       TEXT NOT NULL,
    amount     BIGINT NOT NULL,
    currency   TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX transactions_by_charge ON transactions (charge_id, created_at);

-- Idempotency keys, scoped per endpoint. The first request inserts the row (in_progress) and
-- owns it through claim_token; its response is stored in the same transaction as its effect, so
-- a replay returns exactly what the first request answered. request_hash is a SHA-256 over the
-- request without card number or CVC (see docs/decisions.md).
CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          TEXT NOT NULL,
    claim_token     TEXT NOT NULL,
    claimed_at      TEXT NOT NULL,
    response_status BIGINT,
    response_body   TEXT,
    PRIMARY KEY (scope, idem_key)
);
