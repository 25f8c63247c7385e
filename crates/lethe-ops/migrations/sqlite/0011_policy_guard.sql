-- state schema step 11
-- The policy last applied to each target (its effective window, as JSON): `lethe plan`
-- and an apply compare the config with it, so that a mistyped window is caught before it
-- deletes. Kept by target name; written only by an apply or `lethe plan --accept`.
CREATE TABLE applied_policies (
    target TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    run_id TEXT NOT NULL,
    how TEXT NOT NULL
);
-- Items an apply found due on a target with `delete_delay`: deleted only by a run at least
-- the delay after `scheduled_at` (unix seconds), if still due then. `lethe sweep --cancel
-- RUN` drops what run RUN scheduled.
CREATE TABLE scheduled_deletions (
    target TEXT NOT NULL,
    item_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    scheduled_at BIGINT NOT NULL,
    PRIMARY KEY (target, item_key)
);
CREATE INDEX scheduled_deletions_run ON scheduled_deletions(run_id);
