-- When the customer last set a line's quantity. The consumer of order.confirmed leaves alone a
-- line changed after the order was placed: that is what the customer wants now. '' (older lines)
-- sorts before every timestamp.
ALTER TABLE cart_items ADD COLUMN changed_at TEXT NOT NULL DEFAULT '';
