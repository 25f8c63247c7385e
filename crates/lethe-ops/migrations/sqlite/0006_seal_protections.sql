-- state schema step 6
ALTER TABLE audit_seal ADD COLUMN protections TEXT;
CREATE INDEX audit_protections ON audit(seq) WHERE action IN ('hold_placed', 'hold_released', 'exception_granted', 'exception_renewed', 'exception_revoked');
