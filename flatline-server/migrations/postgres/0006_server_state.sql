-- Instance-wide state shared by every server process (mirrors migrations/sqlite/0006; API.md §7, §8).

-- Fingerprints of the keys the instance runs with; a process started with another key refuses to start.
CREATE TABLE key_fingerprints (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);

-- The manifest version counter: one row; the hash is of the manifest content without version and times.
CREATE TABLE manifest_state (
    id           BIGINT PRIMARY KEY CHECK (id = 1),
    version      BIGINT NOT NULL CHECK (version >= 1),
    content_hash BYTEA NOT NULL,
    updated_at   BIGINT NOT NULL
);
