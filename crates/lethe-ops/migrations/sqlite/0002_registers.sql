-- state schema step 2
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('subject', 'item', 'target')),
    target TEXT,
    item_key TEXT,
    subject_hash TEXT,
    case_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    placed_by TEXT NOT NULL,
    placed_at TEXT NOT NULL,
    released_at TEXT,
    released_by TEXT,
    release_reason TEXT
);
CREATE TABLE exceptions (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    item_key TEXT NOT NULL,
    until TEXT NOT NULL,
    until_micros BIGINT NOT NULL,
    item_expires_at TEXT NOT NULL,
    owner TEXT NOT NULL,
    reason TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    renewal BIGINT NOT NULL,
    superseded_by TEXT,
    revoked_at TEXT,
    revoked_by TEXT,
    revoke_reason TEXT
);
CREATE INDEX exceptions_item ON exceptions(target, item_key);
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject_hash TEXT NOT NULL,
    received_at TEXT NOT NULL,
    deadline TEXT NOT NULL,
    status TEXT NOT NULL,
    counts TEXT NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL
);
CREATE INDEX requests_subject ON requests(subject_hash);
