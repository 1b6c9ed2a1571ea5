-- The producer's W3C trace context with each event (see shop-events: the relay sends it as
-- message headers and consumers link their spans to it). The events crate adds these columns to
-- outboxes it created itself; this one was created by this service's first migration.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
ALTER TABLE outbox ADD COLUMN tracestate TEXT;
