//! Access requests (GDPR Art. 15): every item of one data subject, per target, as one JSON
//! document, written as it is read.

use std::io::Write;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::files::Roots;
use crate::ops::common::{Destination, open_state, preflight, subject_arg, subject_targets};
use crate::registry;
use crate::settings::Loaded;
use crate::state::Access;
use crate::targets::kind_of;
use crate::util::now;

/// What an access export wrote: its request id, and per target how many items and files.
#[derive(Clone, Debug, Serialize)]
pub struct AccessExport {
    pub request_id: String,
    pub targets: Vec<Exported>,
}

/// One target's part of an access export.
#[derive(Clone, Debug, Serialize)]
pub struct Exported {
    pub target: String,
    pub items: u64,
    pub files: usize,
}

/// Writes every item of `subject` in every target that maps a subject as one JSON document
/// (`request_id`, `subject`, `generated_at`, and per target its items and the files its rows
/// own, each with its size and digest), and records the access request as completed.
pub fn export(loaded: &Loaded, subject: &str, to: Destination<'_>) -> Result<AccessExport> {
    let subject = subject_arg(subject)?;
    let targets = subject_targets(loaded)?;
    preflight(loaded, &targets, false)?;
    let now = now();
    let mut state = open_state(loaded, Access::Write)?;
    let hash = state.key.subject_hash(subject);
    let req = registry::new_request(
        &mut state,
        "access",
        &hash,
        loaded.config.erasure.deadline,
        now,
    )?;
    let mut w = to.open()?;
    let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
    write!(
        w,
        "{{\"request_id\":{},\"subject\":{},\"generated_at\":{},\"targets\":[",
        s(&req.id),
        s(subject),
        s(&now.to_rfc3339())
    )?;
    let mut counts = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        // (subject column, file column and key column when rows own files, roots)
        let kind = kind_of(t);
        let Some(subj_col) = &t.subject else {
            continue;
        };
        if !kind.can_sweep() {
            continue;
        }
        let owned = kind.owned_files(t);
        let mut table = match loaded.open(t, false) {
            Some(table) => table.map_err(|e| Error::target(&t.name, e))?,
            None => continue,
        };
        let roots = match owned {
            Some(_) => kind.roots(t, &loaded.base),
            None => Roots::default(),
        };
        if ti > 0 {
            write!(w, ",")?;
        }
        write!(w, "{{\"target\":{},\"items\":[", s(&t.name))?;
        let mut n = 0u64;
        let mut files = Vec::new();
        // A failure writing the document is the output's, not the target's.
        let mut output_failed = false;
        let read = table.export_subject(subj_col, subject, &mut |row| {
            let mut put = || -> anyhow::Result<()> {
                if n > 0 {
                    write!(w, ",")?;
                }
                n += 1;
                if let Some((fcol, kcol)) = owned
                    && let Some(serde_json::Value::String(p)) = row.get(fcol)
                    && !p.is_empty()
                {
                    let parts: Vec<serde_json::Value> = kcol
                        .iter()
                        .map(|k| row.get(k).cloned().unwrap_or(serde_json::Value::Null))
                        .collect();
                    let key = match <[serde_json::Value; 1]>::try_from(parts) {
                        Ok([one]) => one,
                        Err(parts) => serde_json::Value::Array(parts),
                    };
                    files.push((key, p.clone()));
                }
                serde_json::to_writer(&mut w, &row)?;
                Ok(())
            };
            put().inspect_err(|_| output_failed = true)
        });
        if let Err(e) = read {
            return Err(if output_failed {
                Error::from(e)
            } else {
                Error::target(&t.name, e)
            });
        }
        write!(w, "],\"files\":[")?;
        for (i, (key, path)) in files.iter().enumerate() {
            let entry = match roots.place(path).and_then(|f| roots.digest(&f)) {
                Ok(Some((size, sha))) => {
                    serde_json::json!({"key": key, "path": path, "size": size, "sha256": sha})
                }
                Ok(None) => serde_json::json!({"key": key, "path": path, "missing": true}),
                Err(e) => serde_json::json!({"key": key, "path": path, "not_read": e}),
            };
            if i > 0 {
                write!(w, ",")?;
            }
            serde_json::to_writer(&mut w, &entry)?;
        }
        write!(w, "]}}")?;
        counts.push(Exported {
            target: t.name.clone(),
            items: n,
            files: files.len(),
        });
    }
    writeln!(w, "]}}")?;
    w.flush()?;
    drop(w);
    registry::finish_request(
        &mut state,
        &req,
        "completed",
        &serde_json::to_value(&counts)?,
        now,
    )?;
    Ok(AccessExport {
        request_id: req.id,
        targets: counts,
    })
}
