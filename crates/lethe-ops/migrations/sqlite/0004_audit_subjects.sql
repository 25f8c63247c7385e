-- state schema step 4
CREATE TABLE audit_subjects (
    subject_hash TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (subject_hash, run_id)
);
INSERT INTO audit_subjects (subject_hash, run_id)
    SELECT DISTINCT subject_hash, run_id FROM audit WHERE subject_hash IS NOT NULL;
DROP INDEX audit_subject;
