-- state schema step 3
CREATE TABLE batches_done (
    pending_id BIGINT PRIMARY KEY,
    finished_at TEXT NOT NULL
);
