-- What the keys of the first server on this database look like: every process on it
-- must share its CA and its sealing key.
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
)
