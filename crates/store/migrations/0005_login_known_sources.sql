CREATE TABLE login_known_sources (
    account TEXT NOT NULL,
    source_key TEXT NOT NULL,
    last_ok_ms BIGINT NOT NULL,
    PRIMARY KEY (account, source_key)
)
