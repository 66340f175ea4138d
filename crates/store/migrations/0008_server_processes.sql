CREATE TABLE server_processes (
    instance TEXT PRIMARY KEY,
    beat_ms BIGINT NOT NULL
)
