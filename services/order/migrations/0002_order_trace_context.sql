-- The checkout request's W3C trace context (traceparent, tracestate): a saga the resumer takes
-- over after the request is gone runs in a trace of its own, linked to this one.
ALTER TABLE orders ADD COLUMN traceparent TEXT;
ALTER TABLE orders ADD COLUMN tracestate TEXT;
