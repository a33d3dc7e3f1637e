-- PostgreSQL announces account changes to the other server processes here (their authentication caches); SQLite
-- serves one process and caches nothing, so there is nothing to do. Kept so both dialects number alike.
SELECT 1;
