-- Whether a bucket's last request was admitted, so that one upsert can both apply a request and say its verdict
-- (RETURNING sees only the new row). Existing rows never need it: it is written by every acquire.
ALTER TABLE rate_limit_buckets ADD COLUMN admitted BOOLEAN NOT NULL DEFAULT TRUE;
