//! Erasure requests (GDPR Art. 17): erase one data subject's items across every target that
//! maps a subject, with a receipt (deadline, status, counts, audit entries) per request.

use lethe_core::audit::Entry;
use lethe_core::time::Timestamp;
use serde::Serialize;

use crate::engine::{self, Job, SweepOptions, SweepReport};
use crate::error::{Error, Result};
use crate::ops::common::{
    open_state, preflight, refuse_dropped_pending, subject_arg, subject_targets,
};
use crate::registry::{self, Request};
use crate::settings::Loaded;
use crate::state::{Access, Filter};
use crate::util::now;

/// Days before a deadline at which an open request is near it.
pub const NEAR_DEADLINE_DAYS: i64 = 7;

/// Whose data to erase.
#[derive(Clone, Debug)]
pub struct EraseRequest {
    /// The data subject, as the targets' subject column holds it.
    pub subject: String,
    /// Delete; without it nothing in any target changes (the request is recorded as
    /// previewed).
    pub apply: bool,
    /// On whose behalf (an API token's name), recorded in the request's entries.
    pub by: Option<String>,
    /// Show a progress bar on a terminal (stderr).
    pub progress: bool,
}

/// An erasure run: the request it served (carried on if one was open for the subject), the
/// status it was left in, and the run's report.
#[derive(Clone, Debug, Serialize)]
pub struct Erasure {
    pub request: Request,
    /// `previewed`, `failed`, `completed_with_items_withheld` or `completed`.
    pub status: String,
    pub report: SweepReport,
    /// Set when no target held any item of the subject: a subject is matched exactly as
    /// written (white space and case count), so a misspelt one erases nothing and says so.
    pub warning: Option<String>,
}

impl Erasure {
    /// Items withheld under legal hold (GDPR Art. 17(3)(e)).
    pub fn held(&self) -> u64 {
        self.report.targets.iter().map(|t| t.held).sum()
    }
}

/// Erases (or previews erasing) a subject's items in every target that maps a subject, and
/// records the request's status and counts.
pub fn erase(loaded: &Loaded, req: &EraseRequest) -> Result<Erasure> {
    let subject = subject_arg(&req.subject)?;
    let targets = subject_targets(loaded)?;
    preflight(loaded, &targets, req.apply)?;
    let now = now();
    let mut state = open_state(loaded, Access::Write)?;
    refuse_dropped_pending(&state, loaded)?;
    let hash = state.key.subject_hash(subject);
    let request = match registry::open_request(&mut state, &hash)? {
        Some(r) => r,
        None => registry::new_request(
            &mut state,
            "erasure",
            &hash,
            loaded.config.erasure.deadline,
            now,
            req.by.as_deref(),
        )?,
    };
    let job = Job::Erasure {
        subject: subject.to_string(),
        request_id: request.id.clone(),
    };
    let opts = SweepOptions {
        apply: req.apply,
        batch: engine::DEFAULT_BATCH,
        rows_per_commit: engine::DEFAULT_ROWS_PER_COMMIT,
        progress: req.progress,
        required_tags: loaded.config.tags.required.clone(),
        stop: None,
        run_id: None,
        by: req.by.clone(),
        // An erasure request is never held back by the guard against a mistyped policy,
        // nor delayed by a target's delete_delay: its deadline is the law's.
        guard: Default::default(),
    };
    let report = engine::sweep(&mut state, &targets, &loaded.base, now, &job, &opts)?;
    let held: u64 = report.targets.iter().map(|t| t.held).sum();
    // A file kept because work still running uses it is not erased, and no exemption
    // covers it: the request is not done until a later run erases it.
    let in_use: u64 = report.targets.iter().map(|t| t.in_use).sum();
    let status = if !req.apply {
        "previewed"
    } else if report.has_failures() || in_use > 0 {
        "failed"
    } else if held > 0 {
        "completed_with_items_withheld"
    } else {
        "completed"
    };
    let counts = serde_json::to_value(&report.targets)?;
    registry::finish_request(
        &mut state,
        &request,
        status,
        &counts,
        now,
        req.by.as_deref(),
    )?;
    let found: u64 = report.targets.iter().map(|t| t.found).sum();
    let warning = (found == 0 && !report.has_failures()).then(|| {
        "no target holds any item of this subject: subjects are matched exactly as written (white space and case count); check the spelling if the subject should have data".to_string()
    });
    Ok(Erasure {
        request,
        status: status.to_string(),
        report,
        warning,
    })
}

/// A request's receipt: the request, and the audit entries it produced.
#[derive(Debug, Serialize)]
pub struct Receipt {
    pub request: Request,
    pub entries: Vec<Entry>,
}

/// The receipt of one request (erasure or access).
pub fn status(loaded: &Loaded, id: &str) -> Result<Receipt> {
    let mut state = open_state(loaded, Access::Read)?;
    let request = registry::request(&mut state, id)?
        .ok_or_else(|| Error::not_found(format!("no request {id} (see `lethe erase list`)")))?;
    let mut entries = Vec::new();
    state.entries(
        &Filter {
            run_id: Some(id.to_string()),
            ..Default::default()
        },
        |e| {
            entries.push(e);
            Ok(())
        },
    )?;
    Ok(Receipt { request, entries })
}

/// The signed receipt of a finished erasure request ([`lethe_core::receipt`]): the request,
/// per target what was deleted and withheld, and the chain segment from its first entry to
/// a signed head, checkable offline with the public key alone. Refused (a conflict: nothing
/// to attest yet) for a request not completed.
pub fn receipt(loaded: &Loaded, id: &str) -> Result<lethe_core::receipt::Receipt> {
    use lethe_core::receipt::{self, Receipt as Signed, RequestFacts};
    let mut state = open_state(loaded, Access::Read)?;
    let request = registry::request(&mut state, id)?
        .ok_or_else(|| Error::not_found(format!("no request {id} (see `lethe erase list`)")))?;
    if request.kind != "erasure" {
        return Err(Error::usage(format!(
            "request {id} is an access request; receipts are for erasure requests"
        )));
    }
    if !is_closed(&request) {
        return Err(Error::conflict(format!(
            "request {id} is {}, not completed: a receipt attests a finished erasure; run `lethe erase --subject ... --apply` to finish it",
            request.status
        )));
    }
    let (segment, head) = state
        .receipt_segment(id)?
        .map_err(|why| Error::conflict(format!("no receipt for request {id}: {why}")))?;
    let finished_at = segment
        .iter()
        .rev()
        .find(|e| {
            e.body.run_id == id && e.body.action == lethe_core::audit::Action::ErasureFinished
        })
        .map(|e| e.body.decided_at.clone())
        .unwrap_or_default();
    let r = Signed {
        version: receipt::VERSION,
        kind: receipt::KIND.to_string(),
        targets: receipt::outcomes(id, &segment),
        request: RequestFacts {
            id: request.id.clone(),
            kind: request.kind.clone(),
            subject_hash: request.subject_hash.clone(),
            received_at: request.received_at.clone(),
            finished_at,
            deadline: request.deadline.clone(),
            status: request.status.clone(),
        },
        segment,
        head,
    };
    // What is handed out must verify: a trail or register that disagrees is reported, not
    // signed off.
    if let Err(problems) = r.verify(state.public_key().as_deref()) {
        return Err(Error::TrailBroken(anyhow::Error::new(
            crate::state::TrailBroken(format!(
                "the receipt of request {id} does not verify against the trail ({})",
                problems.join("; ")
            )),
        )));
    }
    Ok(r)
}

/// The erasure requests still open (not completed), by deadline.
pub fn open_requests(loaded: &Loaded) -> Result<Vec<Request>> {
    let mut state = open_state(loaded, Access::Read)?;
    Ok(registry::requests(&mut state)?
        .into_iter()
        .filter(|r| r.kind == "erasure" && !is_closed(r))
        .collect())
}

/// Every request (erasure and access), oldest first.
pub fn all_requests(loaded: &Loaded) -> Result<Vec<Request>> {
    let mut state = open_state(loaded, Access::Read)?;
    Ok(registry::requests(&mut state)?)
}

/// Whether a request was carried out (in full, or with items withheld under hold).
pub fn is_closed(r: &Request) -> bool {
    r.status.starts_with("completed")
}

/// How far an open request's deadline is: negative days when it is past.
pub fn days_to_deadline(r: &Request, now: Timestamp) -> Option<f64> {
    let d = Timestamp::parse(&r.deadline).ok()?;
    Some((d.as_micros() - now.as_micros()) as f64 / 86_400e6)
}
