-- state schema step 1
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    decided_at TEXT NOT NULL,
    run_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    item_key TEXT NOT NULL,
    category TEXT NOT NULL,
    reason TEXT NOT NULL,
    policy_window TEXT NOT NULL,
    expires_at TEXT,
    subject_hash TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_item ON audit(target, item_key);
CREATE INDEX audit_subject ON audit(subject_hash) WHERE subject_hash IS NOT NULL;
CREATE INDEX audit_run ON audit(run_id);
CREATE TABLE audit_seal (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL
);
CREATE TABLE pending (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    target TEXT NOT NULL,
    created_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX pending_target ON pending(target);
CREATE TABLE leases (
    target TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    pid BIGINT NOT NULL,
    host TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    heartbeat BIGINT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dry_run BIGINT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    summary TEXT
);
