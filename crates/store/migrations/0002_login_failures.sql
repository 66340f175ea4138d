CREATE TABLE login_failures (
    throttle_key TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX login_failures_key ON login_failures(throttle_key, at_ms)
