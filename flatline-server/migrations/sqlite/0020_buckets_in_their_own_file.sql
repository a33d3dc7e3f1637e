-- Rate-limit buckets moved to a database file of their own (`<file>.ratelimits`, created by the store), so that
-- their writes no longer queue for the main file's single writer. The old table's state (ephemeral: at worst a few
-- permits handed back) is dropped with it.
DROP TABLE IF EXISTS rate_limit_buckets;
