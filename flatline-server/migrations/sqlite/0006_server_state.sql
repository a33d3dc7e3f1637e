-- Instance-wide state shared by every server process (API.md §7, §8).

-- Fingerprints of the keys the instance runs with; a process started with another key refuses to start.
CREATE TABLE key_fingerprints (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
) STRICT;

-- The manifest version counter: one row; the hash is of the manifest content without version and times.
CREATE TABLE manifest_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    version      INTEGER NOT NULL CHECK (version >= 1),
    content_hash BLOB NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
