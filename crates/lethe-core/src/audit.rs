//! The audit trail's evidence: entries, their hash chain, the keyed seal over the head, and
//! the keyed subject hash. Pure: storage lives in the state store.
//!
//! Each entry's `hash` is SHA-256 over the previous entry's hash and the entry's canonical
//! JSON (fields in a fixed order), so anyone can recompute the chain from an export. The
//! seal is an HMAC over the head (seq and hash) under the audit key: cutting entries off the
//! end changes the head, and a new seal cannot be made without the key.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What was decided or done. Stored as its snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Deleted,
    WouldDelete,
    Held,
    Excepted,
    Failed,
    SweepStarted,
    SweepFinished,
    HoldPlaced,
    HoldReleased,
    ExceptionGranted,
    ExceptionRenewed,
    ExceptionRevoked,
    ErasureReceived,
    ErasureFinished,
    AccessExported,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deleted => "deleted",
            Action::WouldDelete => "would_delete",
            Action::Held => "held",
            Action::Excepted => "excepted",
            Action::Failed => "failed",
            Action::SweepStarted => "sweep_started",
            Action::SweepFinished => "sweep_finished",
            Action::HoldPlaced => "hold_placed",
            Action::HoldReleased => "hold_released",
            Action::ExceptionGranted => "exception_granted",
            Action::ExceptionRenewed => "exception_renewed",
            Action::ExceptionRevoked => "exception_revoked",
            Action::ErasureReceived => "erasure_received",
            Action::ErasureFinished => "erasure_finished",
            Action::AccessExported => "access_exported",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deleted" => Action::Deleted,
            "would_delete" => Action::WouldDelete,
            "held" => Action::Held,
            "excepted" => Action::Excepted,
            "failed" => Action::Failed,
            "sweep_started" => Action::SweepStarted,
            "sweep_finished" => Action::SweepFinished,
            "hold_placed" => Action::HoldPlaced,
            "hold_released" => Action::HoldReleased,
            "exception_granted" => Action::ExceptionGranted,
            "exception_renewed" => Action::ExceptionRenewed,
            "exception_revoked" => Action::ExceptionRevoked,
            "erasure_received" => Action::ErasureReceived,
            "erasure_finished" => Action::ErasureFinished,
            "access_exported" => Action::AccessExported,
            _ => return None,
        })
    }
}

/// An entry as decided, before it takes its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// RFC 3339, UTC.
    pub decided_at: String,
    pub run_id: String,
    pub action: Action,
    pub target: String,
    pub item_key: String,
    pub category: String,
    /// retention, erasure, ...
    pub reason: String,
    /// The window applied, e.g. "30d", "max 90d", "expires_at".
    pub window: String,
    pub expires_at: Option<String>,
    /// HMAC of the subject under the audit key; never the subject itself.
    pub subject_hash: Option<String>,
    /// Why it failed, which hold or exception kept it, counts for a run.
    pub detail: String,
}

/// An entry in its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    #[serde(flatten)]
    pub body: Body,
    pub prev_hash: String,
    pub hash: String,
}

fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// The canonical bytes an entry's hash covers: its sequence number and body, as JSON with the
/// fields in declaration order.
fn canonical(seq: i64, body: &Body) -> Vec<u8> {
    #[derive(Serialize)]
    struct Canon<'a> {
        seq: i64,
        #[serde(flatten)]
        body: &'a Body,
    }
    // Serializing plain strings and integers cannot fail.
    serde_json::to_vec(&Canon { seq, body }).unwrap_or_default()
}

pub fn entry_hash(prev_hash: &str, seq: i64, body: &Body) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical(seq, body));
    hex(&h.finalize())
}

/// Appends bodies to a chain whose head is (`seq`, `hash`).
pub fn chain(head_seq: i64, head_hash: &str, bodies: Vec<Body>) -> Vec<Entry> {
    let mut prev = head_hash.to_string();
    let mut seq = head_seq;
    bodies
        .into_iter()
        .map(|body| {
            seq += 1;
            let hash = entry_hash(&prev, seq, &body);
            Entry {
                seq,
                body,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
        .collect()
}

/// The audit key: hashes subjects and seals the head. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AuditKey(Vec<u8>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey([REDACTED])")
    }
}

impl AuditKey {
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < 16 {
            return Err("the audit key must be at least 16 bytes".into());
        }
        Ok(AuditKey(bytes))
    }

    fn mac(&self, domain: &str, msg: &[u8]) -> String {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        m.update(domain.as_bytes());
        m.update(b"\0");
        m.update(msg);
        hex(&m.finalize().into_bytes())
    }

    /// The only form in which a subject is ever stored.
    pub fn subject_hash(&self, subject: &str) -> String {
        self.mac("lethe-subject-v1", subject.as_bytes())
    }

    pub fn seal(&self, seq: i64, hash: &str) -> String {
        self.mac("lethe-seal-v1", format!("{seq}:{hash}").as_bytes())
    }

    /// A short public fingerprint, so a reader can tell which key sealed a trail.
    pub fn fingerprint(&self) -> String {
        let d = Sha256::digest(&self.0);
        hex(&d[..6])
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Break {
    /// Sequence numbers skip: entries were removed (or inserted with a gap).
    Gap { expected: i64, found: i64 },
    /// An entry's prev_hash is not the hash of the entry before it: reordered or inserted.
    Link { seq: i64 },
    /// An entry's hash does not match its contents: altered.
    Altered { seq: i64 },
    /// The head does not match the seal: entries cut off the end, or the seal forged.
    Seal { detail: String },
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Gap { expected, found } => write!(
                f,
                "entry {expected} is missing (next entry is {found}): entries were removed"
            ),
            Break::Link { seq } => write!(
                f,
                "entry {seq} does not follow the entry before it: entries were removed, reordered or inserted"
            ),
            Break::Altered { seq } => {
                write!(f, "entry {seq} does not match its hash: it was altered")
            }
            Break::Seal { detail } => write!(f, "the seal does not match the head: {detail}"),
        }
    }
}

/// Walks a chain entry by entry; the caller feeds entries in `seq` order.
#[derive(Debug)]
pub struct Verifier {
    next_seq: i64,
    prev_hash: String,
    pub count: u64,
}

impl Verifier {
    /// Starts at the genesis, or at a checkpoint (the last pruned entry's seq and hash).
    pub fn new(after_seq: i64, after_hash: &str) -> Self {
        Verifier {
            next_seq: after_seq + 1,
            prev_hash: after_hash.to_string(),
            count: 0,
        }
    }

    pub fn push(&mut self, e: &Entry) -> Result<(), Break> {
        if e.seq != self.next_seq {
            return Err(if e.seq > self.next_seq {
                Break::Gap {
                    expected: self.next_seq,
                    found: e.seq,
                }
            } else {
                Break::Link { seq: e.seq }
            });
        }
        if e.prev_hash != self.prev_hash {
            return Err(Break::Link { seq: e.seq });
        }
        if entry_hash(&e.prev_hash, e.seq, &e.body) != e.hash {
            return Err(Break::Altered { seq: e.seq });
        }
        self.prev_hash = e.hash.clone();
        self.next_seq += 1;
        self.count += 1;
        Ok(())
    }

    /// The head reached: (seq, hash).
    pub fn head(&self) -> (i64, &str) {
        (self.next_seq - 1, &self.prev_hash)
    }

    /// Checks the seal over the head reached.
    pub fn check_seal(&self, key: &AuditKey, seal: Option<(i64, &str, &str)>) -> Result<(), Break> {
        let (seq, hash) = self.head();
        let Some((s_seq, s_hash, s_mac)) = seal else {
            return if seq == 0 {
                Ok(())
            } else {
                Err(Break::Seal {
                    detail: "the trail has entries but no seal".into(),
                })
            };
        };
        if s_seq != seq || s_hash != hash {
            return Err(Break::Seal {
                detail: format!(
                    "the seal is for entry {s_seq}, the trail ends at entry {seq}: entries were removed from or added to the end"
                ),
            });
        }
        if key.seal(s_seq, s_hash) != s_mac {
            return Err(Break::Seal {
                detail: "the seal was not made with this audit key".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(i: usize) -> Body {
        Body {
            decided_at: "2026-01-01T00:00:00Z".into(),
            run_id: "run-1".into(),
            action: Action::Deleted,
            target: "t".into(),
            item_key: i.to_string(),
            category: "c".into(),
            reason: "retention".into(),
            window: "30d".into(),
            expires_at: Some("2025-12-01T00:00:00Z".into()),
            subject_hash: None,
            detail: String::new(),
        }
    }

    fn key() -> AuditKey {
        match AuditKey::new(vec![7; 32]) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    fn verify(entries: &[Entry], seal: Option<(i64, &str, &str)>) -> Result<(), Break> {
        let mut v = Verifier::new(0, GENESIS);
        for e in entries {
            v.push(e)?;
        }
        v.check_seal(&key(), seal)
    }

    fn sealed(entries: &[Entry]) -> (i64, String, String) {
        let last = &entries[entries.len() - 1];
        (
            last.seq,
            last.hash.clone(),
            key().seal(last.seq, &last.hash),
        )
    }

    #[test]
    fn intact_chain_verifies_and_every_tampering_is_caught() {
        let entries = chain(0, GENESIS, (0..5).map(body).collect());
        let (s, h, m) = sealed(&entries);
        let seal = Some((s, h.as_str(), m.as_str()));
        assert_eq!(verify(&entries, seal), Ok(()));

        let mut altered = entries.clone();
        altered[2].body.action = Action::Held;
        assert_eq!(verify(&altered, seal), Err(Break::Altered { seq: 3 }));

        let mut removed = entries.clone();
        removed.remove(1);
        assert!(matches!(
            verify(&removed, seal),
            Err(Break::Gap {
                expected: 2,
                found: 3
            })
        ));

        let mut reordered = entries.clone();
        reordered.swap(1, 2);
        assert!(verify(&reordered, seal).is_err());

        // renumbered after a removal: the links give it away
        let mut renumbered = entries.clone();
        renumbered.remove(1);
        for (i, e) in renumbered.iter_mut().enumerate() {
            e.seq = i as i64 + 1;
        }
        assert!(verify(&renumbered, seal).is_err());

        let mut inserted = entries.clone();
        let mut forged = chain(2, &entries[1].hash, vec![body(99)]).remove(0);
        forged.seq = 3;
        inserted.insert(2, forged);
        assert!(verify(&inserted, seal).is_err());

        let truncated = &entries[..4];
        assert!(matches!(verify(truncated, seal), Err(Break::Seal { .. })));
        // a seal recomputed without the key does not pass
        let fake = (4, entries[3].hash.as_str(), "00");
        assert!(matches!(
            verify(truncated, Some(fake)),
            Err(Break::Seal { .. })
        ));
        assert!(matches!(verify(&entries, None), Err(Break::Seal { .. })));
    }

    #[test]
    fn subject_hash_is_keyed_and_stable() {
        let k = key();
        assert_eq!(k.subject_hash("user-1"), k.subject_hash("user-1"));
        assert_ne!(k.subject_hash("user-1"), k.subject_hash("user-2"));
        let other = AuditKey::new(vec![8; 32]).map(|o| o.subject_hash("user-1"));
        assert_ne!(other, Ok(k.subject_hash("user-1")));
        assert!(!k.subject_hash("user-1").contains("user"));
        assert_eq!(format!("{k:?}"), "AuditKey([REDACTED])");
    }
}
