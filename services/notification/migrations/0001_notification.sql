-- Portable SQL: runs on SQLite and PostgreSQL alike.

-- The address book, filled from user.registered: later messages are addressed by it.
CREATE TABLE recipients (
    user_id    TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    name       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Every message the shop sends, recorded before it is sent (in the event consumer's
-- transaction) and then handed to the sender by the dispatcher.
CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,
    -- One message per event, whichever consumer name applied it.
    event_id        TEXT NOT NULL UNIQUE,
    event_type      TEXT NOT NULL,
    -- NULL for messages to the administrators (audience 'admins').
    user_id         TEXT,
    audience        TEXT NOT NULL,
    channel         TEXT NOT NULL,
    -- NULL until the user's address is known (events may arrive out of order).
    address         TEXT,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    -- pending | sent | skipped | failed
    send_state      TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    -- A pending message is due when this is past; a dispatcher that takes it moves it ahead
    -- (a lease), so two dispatchers do not send it twice and a crash mid-send retries it.
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    sent_at         TEXT
);

CREATE INDEX notifications_by_user ON notifications (user_id, created_at, id);
CREATE INDEX notifications_by_audience ON notifications (audience, created_at, id);
CREATE INDEX notifications_due ON notifications (send_state, next_attempt_at);
