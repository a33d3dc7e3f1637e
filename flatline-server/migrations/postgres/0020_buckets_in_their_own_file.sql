-- SQLite moved its rate-limit buckets to a file of their own here; PostgreSQL keeps them in `rate_limit_buckets`
-- (written on a pool of its own with asynchronous commit). Kept so both dialects number alike.
SELECT 1;
