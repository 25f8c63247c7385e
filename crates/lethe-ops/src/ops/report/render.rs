//! A [`Report`] as text (terminal tables), Markdown and CSV. JSON is the report serialised
//! as it is; HTML is [`super::html`].

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

use super::{Figures, GroupFigures, Kpi, Report, human_secs};

/// Escapes text for HTML (and for Markdown table cells, with [`md_cell`]).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text from the config or the registers in a Markdown table cell or list item: no HTML
/// tag or entity of its own, line breaks folded, and the characters Markdown reads as
/// markup escaped.
fn md_cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            // no HTML from the text; `>` and quotes are plain text in a cell
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            '|' | '`' | '*' | '_' | '[' | ']' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A runbook link in Markdown: an http(s) URL as an autolink, anything else as text.
fn md_link(u: &str) -> String {
    let plain = (u.starts_with("https://") || u.starts_with("http://"))
        && !u
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '"'));
    if plain { format!("<{u}>") } else { md_cell(u) }
}

fn verdict(k: &Kpi) -> &'static str {
    match k.pass {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None if k.goal.is_none() => "-",
        None => "not measured",
    }
}

pub(super) fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A group's figures as numbers, in the order of [`FIGURE_HEADERS`] (rates as fractions,
/// times in seconds, the oldest expiry as unix seconds).
fn figure_values(f: &Figures) -> Vec<Option<f64>> {
    let n = |v: u64| Some(v as f64);
    vec![
        f.items.map(|v| v as f64),
        f.tag_coverage,
        n(f.past_expiry.up_to_1d),
        n(f.past_expiry.d1_to_7),
        n(f.past_expiry.over_7d),
        f.past_expiry
            .oldest_expiry
            .as_deref()
            .and_then(|e| lethe_core::time::Timestamp::parse(e).ok())
            .map(|t| t.as_micros() as f64 / 1e6),
        n(f.deleted),
        n(f.failed),
        f.success_rate,
        f.within_24h,
        f.time_to_delete_mean_s,
        f.time_to_delete_p95_s,
        n(f.held + f.excepted),
    ]
}

/// A group's figures as the columns the tables show.
fn figure_cells(f: &Figures) -> Vec<String> {
    vec![
        opt(f.items),
        pct(f.tag_coverage),
        f.past_expiry.up_to_1d.to_string(),
        f.past_expiry.d1_to_7.to_string(),
        f.past_expiry.over_7d.to_string(),
        // the day is enough for people; JSON has the instant
        f.past_expiry
            .oldest_expiry
            .as_deref()
            .map(|e| e.chars().take(10).collect())
            .unwrap_or_else(|| "-".into()),
        f.deleted.to_string(),
        f.failed.to_string(),
        pct(f.success_rate),
        pct(f.within_24h),
        human_secs(f.time_to_delete_mean_s),
        human_secs(f.time_to_delete_p95_s),
        (f.held + f.excepted).to_string(),
    ]
}

pub(super) const FIGURE_HEADERS: [&str; 13] = [
    "items",
    "tagged",
    "past 0-1 d",
    "1-7 d",
    "> 7 d",
    "oldest expiry",
    "deleted",
    "failed",
    "success",
    "≤ 24 h",
    "mean time to delete",
    "p95",
    "held/excepted",
];

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().copied());
    t
}

/// The dimensions, with their titles.
pub fn dimensions(r: &Report) -> [(&'static str, &[GroupFigures]); 5] {
    [
        ("target", &r.groups.by_target),
        ("category", &r.groups.by_category),
        ("sensitivity", &r.groups.by_sensitivity),
        ("owner", &r.groups.by_owner),
        ("region", &r.groups.by_region),
    ]
}

/// For a terminal.
pub fn text(r: &Report) -> String {
    let mut out = format!(
        "Lethe compliance report, {} ({} to {}), generated {}\n\n",
        r.period.label, r.period.since, r.period.until, r.generated_at
    );
    if !r.trail.problems.is_empty() {
        out.push_str(&format!(
            "WARNING: the audit trail does not verify: {}. Every figure below is read from it.\n\n",
            r.trail.problems.join("; ")
        ));
    }
    let mut t = table(&["KPI", "value", "goal", "", "period"]);
    for k in &r.kpis {
        t.add_row(vec![
            k.name.clone(),
            k.display.clone(),
            k.goal.clone().unwrap_or_else(|| "-".into()),
            verdict(k).into(),
            k.period.clone(),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    for (dim, groups) in dimensions(r) {
        let mut headers = vec![dim];
        headers.extend(FIGURE_HEADERS);
        let mut t = table(&headers);
        for g in groups {
            let mut row = vec![g.name.clone()];
            row.extend(figure_cells(&g.figures));
            t.add_row(row);
        }
        out.push_str(&format!("\nBy {dim}:\n{t}\n"));
    }
    for tf in r.targets.iter().filter(|t| t.error.is_some()) {
        out.push_str(&format!(
            "\ntarget {}: not counted now: {}\n",
            tf.target,
            tf.error.as_deref().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "\nLegal holds active: {}; exceptions in the register: {}; erasure requests received: {}, completed in time: {}, overdue now: {}\n",
        r.holds.len(),
        r.exceptions.len(),
        r.requests.received,
        r.requests.completed_in_time,
        r.requests.overdue.len()
    ));
    if !r.remediation.is_empty() {
        out.push_str("\nTo fix:\n");
        for m in &r.remediation {
            out.push_str(&format!("- {}", m.text));
            if let Some(o) = &m.owner {
                out.push_str(&format!(", owner {o}"));
            }
            if let Some(u) = &m.runbook {
                out.push_str(&format!(", runbook {u}"));
            }
            out.push('\n');
        }
    }
    out.push_str(
        "\nHow each figure is computed: lethe report --format json (each KPI's method).\n",
    );
    out
}

/// The monthly report (or any period's), for people and for a ticket or a wiki.
pub fn markdown(r: &Report) -> String {
    let mut out = format!(
        "# Lethe compliance report: {}\n\nPeriod {} to {} (UTC, end excluded); generated {} from `{}`.\n\n",
        md_cell(&r.period.label),
        r.period.since,
        r.period.until,
        r.generated_at,
        md_cell(&r.config)
    );
    if !r.trail.problems.is_empty() {
        out.push_str(&format!(
            "**The audit trail does not verify: {}. Every figure below is read from it.**\n\n",
            md_cell(&r.trail.problems.join("; "))
        ));
    }
    out.push_str(if r.all_met {
        "**Every KPI with a goal is met.**\n\n"
    } else {
        "**Some KPIs are not met: see the remediation list.**\n\n"
    });
    out.push_str("## KPIs\n\n| KPI | value | goal | result | period | how computed |\n|---|---|---|---|---|---|\n");
    for k in &r.kpis {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            md_cell(&k.name),
            md_cell(&k.display),
            md_cell(k.goal.as_deref().unwrap_or("-")),
            verdict(k),
            md_cell(&k.period),
            md_cell(&k.method)
        ));
    }
    if !r.remediation.is_empty() {
        out.push_str("\n## Remediation\n\n");
        for m in &r.remediation {
            out.push_str(&format!("- {}", md_cell(&m.text)));
            if let Some(o) = &m.owner {
                out.push_str(&format!(", owner {}", md_cell(o)));
            }
            if let Some(u) = &m.runbook {
                out.push_str(&format!(", runbook {}", md_link(u)));
            }
            out.push('\n');
        }
    }
    for (dim, groups) in dimensions(r) {
        out.push_str(&format!("\n## By {dim}\n\n| {dim} |"));
        for h in FIGURE_HEADERS {
            out.push_str(&format!(" {h} |"));
        }
        out.push_str(&format!("\n|{}\n", "---|".repeat(FIGURE_HEADERS.len() + 1)));
        for g in groups {
            out.push_str(&format!("| {} |", md_cell(&g.name)));
            for c in figure_cells(&g.figures) {
                out.push_str(&format!(" {} |", md_cell(&c)));
            }
            out.push('\n');
        }
    }
    out.push_str("\n## Exception register\n\n");
    if r.exceptions.is_empty() {
        out.push_str("No exception was in force in the period.\n");
    } else {
        out.push_str("| id | target | item | owner | reason | until | renewals | status |\n|---|---|---|---|---|---|---|---|\n");
        for e in &r.exceptions {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                md_cell(&e.id),
                md_cell(&e.target),
                md_cell(&e.item_key),
                md_cell(&e.owner),
                md_cell(&e.reason),
                md_cell(&e.until),
                e.renewals,
                md_cell(&e.status)
            ));
        }
    }
    out.push_str("\n## Legal holds in force\n\n");
    if r.holds.is_empty() {
        out.push_str("None.\n");
    } else {
        out.push_str("| id | scope | target | item | case | reason | placed by | placed at |\n|---|---|---|---|---|---|---|---|\n");
        for h in &r.holds {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                md_cell(&h.id),
                md_cell(&h.scope),
                md_cell(h.target.as_deref().unwrap_or("-")),
                md_cell(h.item_key.as_deref().unwrap_or("-")),
                md_cell(&h.case_id),
                md_cell(&h.reason),
                md_cell(&h.placed_by),
                md_cell(&h.placed_at)
            ));
        }
    }
    out.push_str(&format!(
        "\n## Erasure requests\n\nReceived in the period: {}; completed by their deadline: {}; completed late: {}; open now: {}; overdue now: {}.\n",
        r.requests.received,
        r.requests.completed_in_time,
        r.requests.completed_late,
        r.requests.open,
        r.requests.overdue.len()
    ));
    if !r.requests.overdue.is_empty() {
        out.push_str("\n| overdue request | received | deadline | status |\n|---|---|---|---|\n");
        for q in &r.requests.overdue {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                md_cell(&q.id),
                md_cell(&q.received_at),
                md_cell(&q.deadline),
                md_cell(&q.status)
            ));
        }
    }
    out.push_str(&format!(
        "\n## Runs\n\nTarget sweeps finished in the period: {}; ended with an error: {}; scheduled runs missed: {}.\n",
        r.runs.sweeps,
        r.runs.failed.len(),
        r.runs.misfires.len()
    ));
    for f in r.runs.failed.iter().take(50) {
        out.push_str(&format!(
            "- {} {} ({}): {}\n",
            md_cell(&f.at),
            md_cell(&f.target),
            md_cell(&f.run_id),
            md_cell(&f.detail)
        ));
    }
    if let Some(rec) = &r.reconciliation {
        out.push_str(&format!(
            "\n## Reconciliation\n\n{} of {} checks matched ({}).\n",
            rec.matched,
            rec.checked,
            pct((rec.checked > 0).then_some(rec.success_rate))
        ));
        for m in rec.mismatches.iter().take(50) {
            out.push_str(&format!("- {}\n", md_cell(m)));
        }
    }
    out
}

/// One row per KPI, then one per group and figure: flat, for a spreadsheet.
pub fn csv(r: &Report) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "section", "group", "name", "id", "value", "display", "goal", "result", "period", "method",
    ])?;
    let kpi_row = |w: &mut csv::Writer<Vec<u8>>, section: &str, group: &str, k: &Kpi| {
        w.write_record([
            section,
            group,
            &k.name,
            &k.id,
            &k.value.map(|v| v.to_string()).unwrap_or_default(),
            &k.display,
            k.goal.as_deref().unwrap_or(""),
            verdict(k),
            &k.period,
            &k.method,
        ])
    };
    for k in &r.kpis {
        kpi_row(&mut w, "kpi", "", k)?;
    }
    for (dim, groups) in dimensions(r) {
        for g in groups {
            for k in &g.kpis {
                kpi_row(&mut w, dim, &g.name, k)?;
            }
            for ((h, c), v) in FIGURE_HEADERS
                .iter()
                .zip(figure_cells(&g.figures))
                .zip(figure_values(&g.figures))
            {
                let v = v.map(|v| v.to_string()).unwrap_or_default();
                w.write_record([dim, &g.name, h, "", &v, &c, "", "", &r.period.label, ""])?;
            }
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| csv::Error::from(std::io::Error::other(e.to_string())))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
