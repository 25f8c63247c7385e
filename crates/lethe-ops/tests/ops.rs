//! The operations called as a library, without the command line: a demo is built (SQLite
//! data, dataset files, a lethe.toml and its state), and each operation's typed result or
//! typed error is looked at.

use std::path::PathBuf;

use anyhow::Result;
use lethe_ops::Error;
use lethe_ops::ops::{self, Destination, exception, hold};
use lethe_ops::settings::{self, Loaded};

/// A demo in a directory of its own, removed at the end.
struct Demo {
    dir: PathBuf,
    loaded: Loaded,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn demo(name: &str) -> Result<Demo> {
    let dir = std::env::temp_dir().join(format!("lethe-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = ops::demo::run(&dir)?;
    assert!(run.report.dry_run);
    assert_eq!(run.report.targets.len(), 2);
    let loaded = settings::load(Some(&run.config))?;
    Ok(Demo { dir, loaded })
}

#[test]
fn check_init_and_verify_report_typed_results() -> Result<()> {
    let d = demo("check")?;
    let r = ops::check(&d.loaded)?;
    assert!(r.ok, "{r:?}");
    let names: Vec<&str> = r.targets.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(names, ["inference_logs", "training_records"]);
    let logs = &r.targets[0];
    // 240 rows, an offset timestamp, a unix time and one nobody can read.
    assert_eq!(logs.rows, Some(243));
    assert_eq!(logs.unreadable, Some(1));
    assert!(logs.past_expiry.is_some_and(|n| n > 0));
    assert!(logs.problems.is_empty());

    // The demo made the state: init leaves it as it is.
    let again = ops::init(&d.loaded)?;
    assert!(!again.created);
    let v = ops::verify(&d.loaded)?;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.key_fingerprint, again.key_fingerprint);
    assert!(v.entries > 0);
    Ok(())
}

#[test]
fn refusals_are_typed_errors() -> Result<()> {
    let d = demo("refusals")?;
    let l = &d.loaded;
    let unknown = ops::sweep(
        l,
        &ops::SweepRequest {
            targets: vec!["nope".into()],
            ..Default::default()
        },
    );
    assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");

    let on = |subject: &str| hold::HoldRequest {
        subject: Some(subject.into()),
        case_id: "case-1".into(),
        reason: "litigation".into(),
        ..Default::default()
    };
    let placed = hold::place(l, &on("user-0001"))?;
    assert_eq!(placed.warning, None);
    // A subject with no item: placed, with a warning for the caller to show.
    let typo = hold::place(l, &on("user-9999"))?;
    assert!(typo.warning.is_some_and(|w| w.contains("user-9999")));

    let release = |id: &str| hold::HoldRelease {
        id: id.into(),
        reason: "case closed".into(),
        by: Some("test".into()),
    };
    hold::release(l, &release(&placed.id))?;
    let twice = hold::release(l, &release(&placed.id));
    assert!(matches!(twice, Err(Error::Conflict(_))), "{twice:?}");
    let none = hold::release(l, &release("hold-nope"));
    assert!(matches!(none, Err(Error::NotFound(_))), "{none:?}");
    let holds = hold::list(l)?;
    assert_eq!(holds.len(), 2);
    assert_eq!(holds.iter().filter(|h| h.released_at.is_some()).count(), 1);

    let past = exception::grant(
        l,
        &exception::ExceptionRequest {
            target: "inference_logs".into(),
            key: "1".into(),
            until: "2001-01-01".into(),
            owner: "me".into(),
            reason: "audit".into(),
            by: None,
        },
    );
    assert!(matches!(past, Err(Error::Usage(_))), "{past:?}");
    let status = ops::erase::status(l, "erasure-nope");
    assert!(matches!(status, Err(Error::NotFound(_))), "{status:?}");
    let bad = ops::repair(
        l,
        &ops::RepairRequest {
            reason: " ".into(),
            by: None,
        },
    );
    assert!(matches!(bad, Err(e) if e.is_refusal()));
    Ok(())
}

#[test]
fn erasure_preview_and_access_export_write_to_any_writer() -> Result<()> {
    let d = demo("requests")?;
    let l = &d.loaded;
    let e = ops::erase(
        l,
        &ops::EraseRequest {
            subject: "user-0001".into(),
            apply: false,
            progress: false,
            by: None,
        },
    )?;
    assert_eq!(e.status, "previewed");
    assert!(e.report.dry_run);
    let open = ops::erase::open_requests(l)?;
    assert!(open.iter().any(|r| r.id == e.request.id));
    let receipt = ops::erase::status(l, &e.request.id)?;
    assert!(!receipt.entries.is_empty());

    let mut buf = Vec::new();
    let x = ops::export(l, "user-0001", Destination::Writer(&mut buf))?;
    let doc: serde_json::Value = serde_json::from_slice(&buf)?;
    assert_eq!(doc["request_id"], x.request_id.as_str());
    assert_eq!(doc["subject"], "user-0001");
    assert_eq!(x.targets.len(), 2);
    for (t, part) in x
        .targets
        .iter()
        .zip(doc["targets"].as_array().into_iter().flatten())
    {
        assert_eq!(part["target"], t.target.as_str());
        let items = part["items"].as_array().map_or(0, Vec::len);
        assert_eq!(items as u64, t.items);
    }
    Ok(())
}

#[test]
fn an_applied_sweep_is_in_the_trail() -> Result<()> {
    let d = demo("apply")?;
    let l = &d.loaded;
    let report = ops::sweep(
        l,
        &ops::SweepRequest {
            apply: true,
            ..Default::default()
        },
    )?;
    assert!(!report.dry_run);
    // The demo's deliberate failures (an unreadable timestamp, files outside the roots).
    assert!(report.has_failures());
    assert!(report.targets.iter().any(|t| t.deleted > 0));
    let page = ops::log(
        l,
        &ops::LogQuery {
            target: None,
            key: None,
            subject: None,
            run: Some(report.run_id.clone()),
            limit: 5,
        },
    )?;
    assert_eq!(page.entries.len(), 5);
    assert!(page.total > 5);

    let mut csv = Vec::new();
    let n = ops::export_trail(l, ops::TrailFormat::Csv, Destination::Writer(&mut csv))?;
    let text = String::from_utf8(csv)?;
    assert_eq!(text.lines().next(), Some(ops::audit::CSV_HEADER));
    assert_eq!(text.lines().count() as u64, n + 1);
    assert!(ops::verify(l)?.ok);
    Ok(())
}
