-- state schema step 8
CREATE INDEX audit_repairs ON audit(seq) WHERE action = 'trail_repaired';
