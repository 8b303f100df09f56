-- v5: delivery attempts per job, so a result that cannot be posted is given up on after a
-- few tries (delivery_failed_at set) instead of being retried at every start.

ALTER TABLE jobs ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 0
    CHECK (delivery_attempts >= 0);
ALTER TABLE jobs ADD COLUMN delivery_failed_at TEXT;
