-- Idempotency keys expire (PAYMENT_IDEMPOTENCY_RETENTION_HOURS): the sweeper deletes by age.
CREATE INDEX idempotency_keys_by_claim ON idempotency_keys (claimed_at);
