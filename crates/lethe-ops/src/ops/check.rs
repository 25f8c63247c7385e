//! `check`: validate the config against its targets and count what each holds, changing
//! nothing.

use serde::Serialize;

use crate::engine;
use crate::error::Result;
use crate::ops::places::shared_places;
use crate::settings::Loaded;
use crate::targets::roots_for;
use crate::util::now;

/// What `check` found: the config fits its targets when `ok`.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The config file, as it was named.
    pub config: String,
    pub ok: bool,
    /// Each target of the config, in its order.
    pub targets: Vec<TargetCheck>,
}

/// One target as `check` found it. The counts are there when the target was reached and
/// fits the config.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub ok: bool,
    /// Why the target does not fit (each a line for people).
    pub problems: Vec<String>,
    /// What fits but deserves a look (a missing index).
    pub warnings: Vec<String>,
    /// Items (rows, files or objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Items past their expiry now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub past_expiry: Option<u64>,
    /// Items whose timestamps cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<u64>,
    /// Objects lacking a `[tags] required` entry (object store targets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untagged: Option<u64>,
    /// The item longest past its expiry: its key and expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<String>,
}

/// Whether the target's items name their own sensitivity level.
fn item_levels(t: &lethe_core::config::Target) -> bool {
    t.spec::<crate::targets::sql::SqlTarget>()
        .is_some_and(|s| s.sensitivity_column.is_some())
        || t.spec::<crate::targets::objects::ObjectStoreTarget>()
            .is_some_and(|o| o.sensitivity_metadata.is_some())
        || t.spec::<crate::targets::vendor::VendorTarget>()
            .is_some_and(|v| v.sensitivity_metadata.is_some())
}

/// Reaches every target and checks its table, columns and roots, and counts what it holds.
/// One target that cannot be read is reported; the others are checked.
pub fn check(loaded: &Loaded) -> Result<CheckReport> {
    let c = &loaded.config;
    let now = now();
    let shared = shared_places(loaded);
    let mut targets = Vec::new();
    for t in &c.targets {
        let mut problems: Vec<String> = shared
            .iter()
            .filter(|(x, _)| std::ptr::eq(*x, t))
            .map(|(_, p)| p.clone())
            .collect();
        let mut found = TargetCheck {
            target: t.name.clone(),
            ok: false,
            problems: Vec::new(),
            warnings: Vec::new(),
            rows: None,
            past_expiry: None,
            unreadable: None,
            untagged: None,
            oldest: None,
        };
        found
            .warnings
            .extend(t.window.minimum_warnings(&t.category, item_levels(t)));
        if let Some(sql) = t.spec::<crate::targets::sql::SqlTarget>() {
            for tag in sql.tags.keys().filter(|k| !c.tags.required.contains(k)) {
                let required = if c.tags.required.is_empty() {
                    "none".to_string()
                } else {
                    c.tags.required.join(", ")
                };
                found.warnings.push(format!(
                    "[targets.tags] maps {tag:?}, which [tags] required does not name (required: {required}): it counts for nothing"
                ));
            }
        }
        match loaded.open(t, false) {
            Some(source) => match source {
                Err(e) => problems.push(format!("{e:#}")),
                Ok(mut table) => {
                    let mut reach = || -> anyhow::Result<()> {
                        problems.extend(table.check_schema()?);
                        if problems.is_empty() {
                            found.warnings.extend(table.index_warnings()?);
                            let rows = table.count()?;
                            let due = engine::count_due(table.as_mut(), t, now)?;
                            found.rows = rows;
                            found.past_expiry = Some(due.due);
                            found.unreadable = Some(due.unreadable);
                            found.oldest = due
                                .oldest
                                .map(|(k, e)| format!("{k} (expired {})", e.to_rfc3339()));
                            found.untagged = table.count_untagged(&c.tags.required)?;
                        }
                        Ok(())
                    };
                    if let Err(e) = reach() {
                        problems.push(format!("{e:#}"));
                    }
                    for p in roots_for(t, &loaded.base).problems() {
                        if !problems.contains(&p) {
                            problems.push(p);
                        }
                    }
                }
            },
            None => problems.push(format!(
                "target type {} is not supported by this build yet",
                t.type_name
            )),
        }
        found.ok = problems.is_empty();
        found.problems = problems;
        targets.push(found);
    }
    Ok(CheckReport {
        config: loaded.path.display().to_string(),
        ok: targets.iter().all(|t| t.ok),
        targets,
    })
}
