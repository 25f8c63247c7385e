-- state schema step 7
ALTER TABLE pending ADD COLUMN identity TEXT;
