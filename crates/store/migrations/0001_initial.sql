CREATE TABLE groups (
    id {ID},
    name TEXT NOT NULL UNIQUE,
    parent_id BIGINT REFERENCES groups(id)
);
CREATE TABLE policies (
    group_id BIGINT PRIMARY KEY REFERENCES groups(id),
    settings TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE devices (
    id {ID},
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    group_id BIGINT NOT NULL REFERENCES groups(id),
    cert_fingerprint TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    last_seen BIGINT NOT NULL DEFAULT 0,
    local_settings TEXT NOT NULL DEFAULT '{}',
    next_seq BIGINT NOT NULL DEFAULT 0,
    acked_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX devices_group ON devices(group_id);
CREATE TABLE enroll_tokens (
    id {ID},
    token_hash TEXT NOT NULL UNIQUE,
    group_id BIGINT NOT NULL REFERENCES groups(id),
    expires_at BIGINT NOT NULL,
    max_uses BIGINT NOT NULL,
    uses_left BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE accounts (
    id {ID},
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX accounts_one_special ON accounts(kind) WHERE kind = 'special';
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE outbox (
    device_id BIGINT NOT NULL REFERENCES devices(id),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    ref_id BIGINT,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE tasks (
    id {ID},
    name TEXT NOT NULL,
    autonomous BIGINT NOT NULL,
    group_id BIGINT NOT NULL REFERENCES groups(id),
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    iocs TEXT NOT NULL,
    scope TEXT NOT NULL,
    actions TEXT NOT NULL,
    dedup_key TEXT,
    cancelled BIGINT NOT NULL DEFAULT 0,
    last_run_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    detection_id TEXT
);
CREATE INDEX tasks_dedup ON tasks(group_id, dedup_key);
CREATE TABLE task_devices (
    task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    device_id BIGINT NOT NULL REFERENCES devices(id),
    state TEXT NOT NULL,
    hits BIGINT NOT NULL DEFAULT 0,
    reason TEXT,
    results TEXT NOT NULL DEFAULT 'null',
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, device_id)
);
CREATE TABLE detections (
    id TEXT PRIMARY KEY,
    device_id BIGINT NOT NULL REFERENCES devices(id),
    record TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    task_id BIGINT,
    group_action_error TEXT
);
CREATE TABLE action_outcomes (
    id {ID},
    detection_id TEXT NOT NULL,
    device_id BIGINT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE TABLE quarantine (
    device_id BIGINT NOT NULL REFERENCES devices(id),
    entry_id TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, entry_id)
);
CREATE TABLE processed_events (
    device_id BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (device_id, event_id)
);
CREATE TABLE alerts (
    id {ID},
    device_id BIGINT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE TABLE audit (
    id {ID},
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
