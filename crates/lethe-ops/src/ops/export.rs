//! Access requests (GDPR Art. 15): every item of one data subject, per target, as one JSON
//! document, written as it is read.

use std::io::Write;

use lethe_core::config::Target;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::files::Roots;
use crate::ops::common::{Destination, open_state, preflight, subject_arg, subject_targets};
use crate::registry;
use crate::settings::Loaded;
use crate::state::Access;
use crate::targets::{Connector, kind_of};
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
    export_by(loaded, subject, to, None)
}

/// [`export`] on someone's behalf (an API token's name), recorded in the request's entry.
pub fn export_by(
    loaded: &Loaded,
    subject: &str,
    to: Destination<'_>,
    by: Option<&str>,
) -> Result<AccessExport> {
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
        by,
    )?;
    let mut w = to.open()?;
    write!(
        w,
        "{{\"request_id\":{},\"subject\":{},\"generated_at\":{},\"targets\":[",
        json_str(&req.id),
        json_str(subject),
        json_str(&now.to_rfc3339())
    )?;
    let mut counts = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        if let Some(exported) = export_target(&mut w, loaded, t, ti, subject)? {
            counts.push(exported);
        }
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
        by,
    )?;
    Ok(AccessExport {
        request_id: req.id,
        targets: counts,
    })
}

/// A string as a JSON string.
fn json_str(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Reads one target (the `ti`-th) and writes its part of the document: its items, then the
/// files its rows own. `None` when it has no part: it maps no subject, or cannot be read.
fn export_target(
    w: &mut dyn Write,
    loaded: &Loaded,
    t: &Target,
    ti: usize,
    subject: &str,
) -> Result<Option<Exported>> {
    // (subject column, file column and key column when rows own files, roots)
    let kind = kind_of(t);
    if !kind.reaches_subjects(t) {
        return Ok(None);
    }
    let subj_col = t.subject.as_deref().unwrap_or_default();
    if !kind.can_sweep() {
        return Ok(None);
    }
    let owned = kind.owned_files(t);
    let mut table = match loaded.open(t, false) {
        Some(table) => table.map_err(|e| Error::target(&t.name, e))?,
        None => return Ok(None),
    };
    let roots = match owned {
        Some(_) => kind.roots(t, &loaded.base),
        None => Roots::default(),
    };
    if ti > 0 {
        write!(w, ",")?;
    }
    write!(w, "{{\"target\":{},\"items\":[", json_str(&t.name))?;
    let (n, files) = write_items(w, table.as_mut(), t, subj_col, subject, owned)?;
    write!(w, "],\"files\":[")?;
    write_files(w, &roots, &files)?;
    write!(w, "]}}")?;
    Ok(Some(Exported {
        target: t.name.clone(),
        items: n,
        files: files.len(),
    }))
}

/// A file an exported row owns: the row's key (its one column's value, or all of them),
/// and the path as the row gives it.
type OwnedPath = (serde_json::Value, String);

/// Writes a subject's items in one target as the connector reads them; returns how many,
/// and the files their rows own.
fn write_items(
    w: &mut dyn Write,
    table: &mut dyn Connector,
    t: &Target,
    subj_col: &str,
    subject: &str,
    owned: Option<(&str, &[String])>,
) -> Result<(u64, Vec<OwnedPath>)> {
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
            serde_json::to_writer(&mut *w, &row)?;
            Ok(())
        };
        put().inspect_err(|_| output_failed = true)
    });
    match read {
        Ok(()) => Ok((n, files)),
        Err(e) if output_failed => Err(Error::from(e)),
        Err(e) => Err(Error::target(&t.name, e)),
    }
}

/// Writes the files exported rows own, each with its size and digest (or why not).
fn write_files(w: &mut dyn Write, roots: &Roots, files: &[OwnedPath]) -> Result<()> {
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
        serde_json::to_writer(&mut *w, &entry)?;
    }
    Ok(())
}
