-- state schema step 10
-- The head's Ed25519 signature beside its MAC, so that a party without the audit key can
-- check it; the public key that made it.
ALTER TABLE audit_seal ADD COLUMN signature TEXT;
ALTER TABLE audit_seal ADD COLUMN public_key TEXT;
-- Signed heads kept for receipts: the head just after a request finished, which a receipt
-- made later cites (the seal moves on with every append).
CREATE TABLE signed_heads (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    protections TEXT NOT NULL,
    signature TEXT NOT NULL,
    public_key TEXT NOT NULL
);
-- Where a pruned trail starts (`lethe audit prune`): one row, the checkpoint as JSON.
CREATE TABLE audit_checkpoint (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    body TEXT NOT NULL
);
