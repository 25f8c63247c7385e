-- state schema step 9
-- The daemon's schedules. A fire is claimed once, by whichever daemon
-- inserts its row first; its targets are claimed one at a time by the daemons that are up.
CREATE TABLE fires (
    schedule TEXT NOT NULL,
    fire_at BIGINT NOT NULL,
    run_id TEXT NOT NULL UNIQUE,
    apply BIGINT NOT NULL,
    claimed_by TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    finished_at TEXT,
    result TEXT,
    PRIMARY KEY (schedule, fire_at)
);
CREATE TABLE fire_targets (
    run_id TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    worker TEXT,
    not_before BIGINT NOT NULL,
    claimed_at BIGINT,
    report TEXT,
    PRIMARY KEY (run_id, target)
);
CREATE INDEX fire_targets_open ON fire_targets(status) WHERE status <> 'done';
CREATE TABLE daemons (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat BIGINT NOT NULL
);
-- Alerts in force, one row each: whichever daemon inserts (or deletes) the row posts the
-- firing (or the resolution), so daemons sharing a state post each once.
-- A row stays until its last news (firing, or resolution: `resolved_at`) was delivered:
-- an undelivered one is posted again by whichever daemon claims it (`attempt_at`).
CREATE TABLE alerts (
    key TEXT PRIMARY KEY,
    fired_at TEXT NOT NULL,
    summary TEXT NOT NULL,
    resolved_at TEXT,
    delivered BIGINT NOT NULL,
    attempt_at BIGINT NOT NULL
);
