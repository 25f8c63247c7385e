//! An erasure receipt: what a request erased and withheld, and the proof that the trail
//! says so, checkable offline with SHA-256 and the deployment's Ed25519 public key alone.
//!
//! The proof is the chain segment from the request's first entry to a signed head at or
//! after its last: every entry's hash and link is recomputed up to the head, whose signature
//! covers (seq, hash, protections). A Merkle inclusion proof would be shorter for a request
//! that spans a busy trail, but it needs a second structure kept beside the chain (and kept
//! right through pruning and repairs); the segment needs nothing the trail does not already
//! hold, and the receipt's counts are recomputed from the very entries it proves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Action, Entry};

/// The receipt format's version.
pub const VERSION: u32 = 1;
/// What the document is, so a receipt is never taken for another signed file.
pub const KIND: &str = "lethe-erasure-receipt";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub version: u32,
    pub kind: String,
    pub request: RequestFacts,
    /// Per target, recomputed from the segment by the verifier.
    pub targets: Vec<TargetOutcome>,
    /// Every entry from the request's first through `head`, in order.
    pub segment: Vec<Entry>,
    pub head: SignedHead,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFacts {
    pub id: String,
    /// `erasure`.
    pub kind: String,
    /// The subject as the trail holds it: its keyed hash, never the subject.
    pub subject_hash: String,
    pub received_at: String,
    pub finished_at: String,
    pub deadline: String,
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetOutcome {
    pub target: String,
    pub deleted: u64,
    /// SHA-256 over the deleted items' keys, sorted, each as its length in bytes, a colon,
    /// the key and a newline (so that no two sets of keys read the same).
    pub deleted_keys_sha256: String,
    pub withheld: Withheld,
    /// The same over the withheld items' keys.
    pub withheld_keys_sha256: String,
}

/// Items of the subject kept, by why: a legal hold, an exception, a failed deletion, work
/// still using it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withheld {
    pub held: u64,
    pub excepted: u64,
    pub failed: u64,
    pub in_use: u64,
}

/// A trail head and its Ed25519 signature ([`audit::head_message`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    pub seq: i64,
    pub hash: String,
    pub protections: String,
    pub signature: String,
    pub public_key: String,
}

fn keys_sha256(keys: &mut [&str]) -> String {
    keys.sort_unstable();
    let mut text = String::new();
    for k in keys.iter() {
        text.push_str(&format!("{}:{k}\n", k.len()));
    }
    audit::sha256_hex(text.as_bytes())
}

/// Each target's outcome for request `id`, from its entries in `segment`: an item counts by
/// its last decision (a failed deletion retried and done is deleted); previews are not
/// decisions.
pub fn outcomes(id: &str, segment: &[Entry]) -> Vec<TargetOutcome> {
    let mut last: BTreeMap<(&str, &str), Action> = BTreeMap::new();
    for e in segment.iter().filter(|e| e.body.run_id == id) {
        let a = e.body.action;
        if matches!(
            a,
            Action::Deleted
                | Action::Redacted
                | Action::Held
                | Action::Excepted
                | Action::Failed
                | Action::InUse
        ) {
            last.insert((e.body.target.as_str(), e.body.item_key.as_str()), a);
        }
    }
    let mut by_target: BTreeMap<&str, (Vec<&str>, Vec<&str>, Withheld)> = BTreeMap::new();
    for ((target, key), a) in last {
        let t = by_target.entry(target).or_default();
        // A row redacted on a redacting target is erased as that target erases (its text
        // and subject overwritten): counted with the deletions.
        match a {
            Action::Deleted | Action::Redacted => t.0.push(key),
            Action::Held => t.2.held += 1,
            Action::Excepted => t.2.excepted += 1,
            Action::Failed => t.2.failed += 1,
            _ => t.2.in_use += 1,
        }
        if !matches!(a, Action::Deleted | Action::Redacted) {
            t.1.push(key);
        }
    }
    by_target
        .into_iter()
        .map(|(target, (mut deleted, mut withheld, w))| TargetOutcome {
            target: target.to_string(),
            deleted: deleted.len() as u64,
            deleted_keys_sha256: keys_sha256(&mut deleted),
            withheld: w,
            withheld_keys_sha256: keys_sha256(&mut withheld),
        })
        .collect()
}

/// What a verification found: which key vouched for the receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub public_key: String,
    /// Whether the key was given by the verifier (else the receipt's own was used, which
    /// only shows the receipt is whole, not who made it).
    pub key_given: bool,
    pub entries: usize,
}

/// Whether `s` is lowercase hex of `len` digits (as Lethe writes hashes and keys): another
/// spelling of the same bytes is a changed receipt.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Receipt {
    /// The receipt as Lethe writes it: pretty JSON and a newline.
    pub fn to_text(&self) -> String {
        // Serializing strings, integers and vectors of them cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Checks everything the receipt says: its form, every entry's hash and link in the
    /// segment up to the head, the head's signature (with `public_key` when given, else the
    /// receipt's own), that the segment is the request's from its first entry through its
    /// end, and the request's facts and per-target outcomes against the entries. Every
    /// problem found, or what vouched for it.
    pub fn verify(&self, public_key: Option<&str>) -> Result<Verified, Vec<String>> {
        let mut problems = Vec::new();
        let mut bad = |p: String| problems.push(p);
        if self.version != VERSION {
            bad(format!(
                "version {} is not a receipt version this verifier knows ({VERSION})",
                self.version
            ));
        }
        if self.kind != KIND {
            bad(format!("kind is {:?}, not {KIND:?}", self.kind));
        }
        let r = &self.request;
        if r.kind != "erasure" {
            bad(format!("request kind is {:?}, not \"erasure\"", r.kind));
        }
        // The chain: consecutive, linked, each entry matching its hash, ending at the head.
        for w in self.segment.windows(2) {
            if w[1].seq != w[0].seq + 1 || w[1].prev_hash != w[0].hash {
                bad(format!(
                    "entry {} does not follow entry {} in the segment: entries were removed, inserted or reordered",
                    w[1].seq, w[0].seq
                ));
            }
        }
        for e in &self.segment {
            if !is_hex(&e.hash, 64)
                || !is_hex(&e.prev_hash, 64)
                || audit::entry_hash(&e.prev_hash, e.seq, &e.body) != e.hash
            {
                bad(format!(
                    "entry {} does not match its hash: it was altered",
                    e.seq
                ));
            }
        }
        let h = &self.head;
        match self.segment.last() {
            Some(last) if last.seq == h.seq && last.hash == h.hash => {}
            _ => bad(format!(
                "the segment does not end at the signed head (entry {})",
                h.seq
            )),
        }
        // The head's signature.
        let key_given = public_key.is_some();
        let pk = public_key.map(str::trim).unwrap_or(&h.public_key);
        if !is_hex(&h.public_key, 64) || !is_hex(&h.signature, 128) || !is_hex(&h.protections, 64) {
            bad("the signed head's key, signature or protections head is not lowercase hex of its length".into());
        }
        if key_given && pk != h.public_key {
            bad(format!(
                "the receipt names public key {}, not the one given ({pk})",
                h.public_key
            ));
        }
        if let Err(why) = audit::verify_signature(
            pk,
            audit::HEAD_DOMAIN,
            &audit::head_message(h.seq, &h.hash, &h.protections),
            &h.signature,
        ) {
            bad(format!("the signature over head {}: {why}", h.seq));
        }
        // The segment is the request's: it starts at its receipt, ends after its finish.
        let first = self.segment.first();
        let received = first.filter(|e| {
            e.body.action == Action::ErasureReceived
                && e.body.run_id == r.id
                && e.body.subject_hash.as_deref() == Some(r.subject_hash.as_str())
        });
        match received {
            None => bad(format!(
                "the segment does not start with request {}'s erasure_received entry for subject hash {}",
                r.id, r.subject_hash
            )),
            Some(e) => {
                if e.body.decided_at != r.received_at {
                    bad(format!(
                        "received_at {} is not when the trail recorded the request ({})",
                        r.received_at, e.body.decided_at
                    ));
                }
                let head = format!("request {} received; deadline {}", r.id, r.deadline);
                let rest = e.body.detail.strip_prefix(&head);
                if !rest.is_some_and(|rest| rest.is_empty() || rest.starts_with(';')) {
                    bad(format!(
                        "deadline {} is not the deadline the trail recorded",
                        r.deadline
                    ));
                }
            }
        }
        let finished = self
            .segment
            .iter()
            .rev()
            .find(|e| e.body.action == Action::ErasureFinished && e.body.run_id == r.id);
        match finished {
            None => bad(format!(
                "the segment has no erasure_finished entry of request {}",
                r.id
            )),
            Some(e) => {
                if e.body.decided_at != r.finished_at {
                    bad(format!(
                        "finished_at {} is not when the trail recorded the request finished ({})",
                        r.finished_at, e.body.decided_at
                    ));
                }
                if e.body.subject_hash.as_deref() != Some(r.subject_hash.as_str()) {
                    bad("the erasure_finished entry is for another subject".into());
                }
                if !e
                    .body
                    .detail
                    .starts_with(&format!("request {} {}; ", r.id, r.status))
                {
                    bad(format!(
                        "status {} is not the status the trail recorded",
                        r.status
                    ));
                }
            }
        }
        // A repair inside the segment accepted the trail before it as found: what was
        // altered there and re-chained would pass every hash check above.
        for e in self
            .segment
            .iter()
            .filter(|e| e.body.action == Action::TrailRepaired)
        {
            bad(format!(
                "entry {} inside the segment is a repair of the trail ({}): the entries before it were accepted as they were found, so the segment cannot vouch for them",
                e.seq,
                e.body.detail.chars().take(120).collect::<String>()
            ));
        }
        // The deletions each run of the request recorded at its finish, as the run counted
        // them, summed per target, against the entries (an item is deleted once).
        let mut recorded: std::collections::BTreeMap<String, u64> =
            std::collections::BTreeMap::new();
        for e in self
            .segment
            .iter()
            .filter(|e| e.body.action == Action::ErasureFinished && e.body.run_id == r.id)
        {
            let counts = e.body.detail.split_once("; ").map(|(_, c)| c);
            match counts.and_then(|c| serde_json::from_str::<Vec<serde_json::Value>>(c).ok()) {
                Some(list) => {
                    for c in list {
                        let target = c["target"].as_str().unwrap_or_default().to_string();
                        *recorded.entry(target).or_default() += c["deleted"].as_u64().unwrap_or(0)
                            + c["redacted"].as_u64().unwrap_or(0);
                    }
                }
                None => bad(format!(
                    "entry {}: the request's finish does not record its counts readably",
                    e.seq
                )),
            }
        }
        let given = outcomes(&r.id, &self.segment);
        for (target, deleted) in &recorded {
            let counted = given
                .iter()
                .find(|o| &o.target == target)
                .map_or(0, |o| o.deleted);
            if counted != *deleted {
                bad(format!(
                    "target {target}: the request's runs recorded {deleted} deleted at their finish, but the segment's entries give {counted}"
                ));
            }
        }
        if outcomes(&r.id, &self.segment) != self.targets {
            bad(
                "the per-target counts or key hashes are not the ones the segment's entries give"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(Verified {
                public_key: pk.to_string(),
                key_given,
                entries: self.segment.len(),
            })
        } else {
            Err(problems)
        }
    }

    /// Reads a receipt as written: `Err` when it is not a receipt at all. A receipt whose
    /// text is not exactly as Lethe writes it (re-spaced, keys reordered) reads, and
    /// [`Receipt::form_problem`] says so.
    pub fn parse(text: &str) -> Result<Receipt, String> {
        serde_json::from_str(text).map_err(|e| format!("not a Lethe receipt: {e}"))
    }

    /// Whether `text` (this receipt, as read) is byte for byte the form Lethe writes: any
    /// change to a receipt, even one JSON ignores, fails its verification.
    pub fn form_problem(&self, text: &str) -> Option<String> {
        (self.to_text() != text).then(|| {
            "the receipt is not byte for byte as Lethe wrote it: it was altered or reformatted"
                .to_string()
        })
    }

    /// Reads and checks a receipt's text: the outer `Err` when it is no receipt at all
    /// (unreadable), else the receipt and what its check found ([`Receipt::verify`], and
    /// [`Receipt::form_problem`] first).
    #[allow(clippy::type_complexity)]
    pub fn check_text(
        text: &str,
        public_key: Option<&str>,
    ) -> Result<(Receipt, Result<Verified, Vec<String>>), String> {
        let r = Receipt::parse(text)?;
        let mut outcome = r.verify(public_key);
        if let Some(p) = r.form_problem(text) {
            match &mut outcome {
                Ok(_) => outcome = Err(vec![p]),
                Err(ps) => ps.insert(0, p),
            }
        }
        Ok((r, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Body, GENESIS, chain};

    fn item(action: Action, run: &str, key: &str) -> Body {
        Body {
            decided_at: "2026-01-01T00:00:00Z".into(),
            run_id: run.into(),
            action,
            target: "t".into(),
            item_key: key.into(),
            category: "c".into(),
            reason: "erasure".into(),
            window: String::new(),
            expires_at: None,
            subject_hash: Some("h".into()),
            detail: String::new(),
        }
    }

    #[test]
    fn an_item_counts_by_its_last_decision_and_other_runs_do_not_count() {
        let segment = chain(
            0,
            GENESIS,
            vec![
                item(Action::WouldDelete, "r", "1"),
                item(Action::Failed, "r", "1"),
                item(Action::Deleted, "other", "9"),
                item(Action::Deleted, "r", "1"),
                item(Action::Held, "r", "2"),
                item(Action::Excepted, "r", "3"),
                item(Action::InUse, "r", "4"),
                item(Action::Failed, "r", "5"),
            ],
        );
        let o = outcomes("r", &segment);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].deleted, 1);
        assert_eq!(o[0].deleted_keys_sha256, audit::sha256_hex(b"1:1\n"));
        assert_eq!(
            o[0].withheld,
            Withheld {
                held: 1,
                excepted: 1,
                failed: 1,
                in_use: 1
            }
        );
        assert_eq!(
            o[0].withheld_keys_sha256,
            audit::sha256_hex(b"1:2\n1:3\n1:4\n1:5\n")
        );
    }

    #[test]
    fn a_repair_inside_the_segment_or_counts_unlike_the_finish_fail() {
        let mut received = item(Action::ErasureReceived, "r", "");
        received.detail = "request r received; deadline 2026-02-01T00:00:00Z".into();
        let mut repaired = item(Action::TrailRepaired, "repair-1", "");
        repaired.detail = "{}".into();
        let mut finished = item(Action::ErasureFinished, "r", "");
        // the run counted one deletion; the entries (one altered) give two
        finished.detail = r#"request r completed; [{"deleted":1,"target":"t"}]"#.into();
        let segment = chain(
            0,
            GENESIS,
            vec![
                received,
                item(Action::Deleted, "r", "1"),
                item(Action::Deleted, "r", "2"),
                repaired,
                finished,
            ],
        );
        let last = segment
            .last()
            .map(|e| (e.seq, e.hash.clone()))
            .unwrap_or_default();
        let receipt = Receipt {
            version: VERSION,
            kind: KIND.into(),
            request: RequestFacts {
                id: "r".into(),
                kind: "erasure".into(),
                subject_hash: "h".into(),
                received_at: "2026-01-01T00:00:00Z".into(),
                finished_at: "2026-01-01T00:00:00Z".into(),
                deadline: "2026-02-01T00:00:00Z".into(),
                status: "completed".into(),
            },
            targets: outcomes("r", &segment),
            segment,
            head: SignedHead {
                seq: last.0,
                hash: last.1,
                protections: GENESIS.into(),
                signature: "00".repeat(64),
                public_key: "00".repeat(32),
            },
        };
        let problems = receipt.verify(None).err().unwrap_or_default();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("is a repair of the trail")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p
                .contains("recorded 1 deleted at their finish, but the segment's entries give 2")),
            "{problems:?}"
        );
    }
}
