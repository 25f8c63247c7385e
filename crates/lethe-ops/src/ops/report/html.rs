//! The dashboard: one self-contained HTML page from a [`Report`], for `lethe report --format
//! html` and `lethe serve`'s `/`. Inline CSS, charts as inline SVG, no script, nothing loaded.
//!
//! Markup is written through [`Html`], whose only way to emit unescaped text takes a
//! `&'static str`: every string of the report (a target's name, a reason, a URL) is escaped
//! because nothing else compiles. That is the guarantee a template engine would give, without
//! a new dependency (and its proc macros) for one page.

use std::collections::BTreeMap;

use super::render::{FIGURE_HEADERS, escape, pct};
use super::{Figures, GroupFigures, Kpi, Report, human_secs, thousands};

/// Markup being written. Tags, attribute names and CSS are `&'static str`; every other
/// string goes through [`escape`].
struct Html {
    out: String,
}

impl Html {
    /// Markup written by this file (never data).
    fn m(&mut self, markup: &'static str) -> &mut Self {
        self.out.push_str(markup);
        self
    }
    /// Text, escaped.
    fn t(&mut self, text: &str) -> &mut Self {
        self.out.push_str(&escape(text));
        self
    }
    /// `<tag a="v" ...>`, each value escaped.
    fn open(&mut self, tag: &'static str, attrs: &[(&'static str, &str)]) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.out.push_str(&escape(v));
            self.out.push('"');
        }
        self.out.push('>');
        self
    }
    fn close(&mut self, tag: &'static str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }
    /// `<tag ...>text</tag>`.
    fn el(&mut self, tag: &'static str, attrs: &[(&'static str, &str)], text: &str) -> &mut Self {
        self.open(tag, attrs).t(text).close(tag)
    }
}

/// A runbook or owner URL fit for an `href`: http and https only (a `javascript:` or
/// `data:` URL from a config is shown as text, never linked).
fn web_url(u: &str) -> Option<&str> {
    let u = u.trim();
    let lower = u.to_ascii_lowercase();
    let ok = (lower.starts_with("https://") || lower.starts_with("http://"))
        && u.len() > "http://".len()
        && !u.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(u)
}

/// An email address fit for a `mailto:` link.
fn email(s: &str) -> Option<&str> {
    let s = s.trim();
    let (user, host) = s.split_once('@')?;
    let fine = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    };
    (fine(user) && fine(host) && host.contains('.')).then_some(s)
}

const CSS: &str = r#"
:root{color-scheme:light;--fg:#1b1f24;--muted:#5b6470;--line:#d5dae0;--bg:#f6f7f9;--card:#fff;--ok:#1a7f37;--bad:#c62828;--na:#6e7781;--accent:#0b5cad}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg);overflow-wrap:anywhere}
header,main,footer{max-width:80rem;margin:0 auto;padding:0 1rem}
header{padding-top:1rem}
h1{font-size:1.4rem;margin:.2rem 0}
h2{font-size:1.15rem;margin:1.6rem 0 .6rem;border-bottom:1px solid var(--line);padding-bottom:.2rem}
h3{font-size:1rem;margin:1rem 0 .4rem}
a{color:var(--accent)}
.meta{color:var(--muted);font-size:.85rem;margin:.2rem 0}
.status{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600;font-size:.9rem}
.status.ok{background:#dafbe1;color:var(--ok)}.status.bad{background:#ffebe9;color:var(--bad)}
nav{display:flex;flex-wrap:wrap;gap:.3rem .8rem;font-size:.9rem;margin:.6rem 0}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,12.5rem),1fr));gap:.7rem}
.tile{background:var(--card);border:1px solid var(--line);border-left:5px solid var(--na);border-radius:.4rem;padding:.6rem .7rem}
.tile.met{border-left-color:var(--ok)}.tile.fail{border-left-color:var(--bad)}
.tile .name{font-size:.85rem;color:var(--muted)}
.tile .value{font-size:1.5rem;font-weight:650;margin:.1rem 0}
.tile .goal{font-size:.85rem}
.tile .period{font-size:.75rem;color:var(--muted)}
.tile .verdict{font-weight:600}
.met .verdict{color:var(--ok)}.fail .verdict{color:var(--bad)}.na .verdict{color:var(--na)}
.tile details{font-size:.8rem;color:var(--muted);margin-top:.3rem}
.figures{display:flex;flex-wrap:wrap;gap:.4rem 1.4rem;margin:.8rem 0;font-size:.95rem}
.figures b{font-size:1.1rem}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,26rem),1fr));gap:.8rem}
figure.chart{margin:0;background:var(--card);border:1px solid var(--line);border-radius:.4rem;padding:.6rem}
figure.chart figcaption{font-weight:600;margin-bottom:.3rem}
figure.chart svg{width:100%;height:auto;display:block}
svg text{font-size:11px;fill:var(--muted);font-family:inherit}
svg .axis{stroke:#8c959f;stroke-width:1}
svg .grid{stroke:#e4e8ec;stroke-width:1}
svg .bar{fill:var(--accent)}
svg .bar.late{fill:#d4761c}
svg .goal{stroke:var(--bad);stroke-dasharray:4 3}
.empty{color:var(--muted);font-style:italic;margin:1.5rem 0}
.legend{list-style:none;padding:0;margin:.4rem 0 0;display:flex;flex-wrap:wrap;gap:.2rem .9rem;font-size:.85rem}
.sw{display:inline-block;width:.8rem;height:.8rem;border-radius:.15rem;margin-right:.3rem;vertical-align:-.1rem}
.scroll{overflow-x:auto;max-width:100%;background:var(--card);border:1px solid var(--line);border-radius:.4rem}
table{border-collapse:collapse;font-size:.85rem;min-width:100%}
th,td{padding:.3rem .5rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;overflow-wrap:normal;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th{background:#eef1f4;position:sticky;top:0}
td.wide{min-width:14rem;white-space:normal;overflow-wrap:anywhere}
.bad-text{color:var(--bad);font-weight:600}
ul.remed li{margin:.3rem 0}
footer{color:var(--muted);font-size:.8rem;padding-bottom:2rem;margin-top:2rem}
@media (max-width:40rem){body{font-size:14px}.tiles{grid-template-columns:repeat(auto-fill,minmax(min(100%,9.5rem),1fr));gap:.5rem}.tile{padding:.5rem}.tile .value{font-size:1.25rem}}
"#;

/// The chart palette (lines, legend swatches).
const PALETTE: [&str; 8] = [
    "#0b5cad", "#d4761c", "#1a7f37", "#8250df", "#c62828", "#0f8f8f", "#9a6700", "#57606a",
];

fn opt(v: Option<u64>) -> String {
    v.map(thousands).unwrap_or_else(|| "-".into())
}

/// The dashboard page, whole.
pub fn page(r: &Report) -> String {
    render(r, None)
}

/// The page `lethe serve` shows at `/`: the same, reloading itself every `refresh_secs`.
pub fn live_page(r: &Report, refresh_secs: u32) -> String {
    render(r, Some(refresh_secs))
}

fn render(r: &Report, refresh: Option<u32>) -> String {
    let mut h = Html {
        out: String::with_capacity(64 * 1024),
    };
    h.m("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
        .m("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        // No favicon request: the page loads nothing.
        .m("<link rel=\"icon\" href=\"data:,\">");
    if let Some(s) = refresh {
        h.open(
            "meta",
            &[("http-equiv", "refresh"), ("content", &s.to_string())],
        );
    }
    h.el(
        "title",
        &[],
        &format!("Lethe compliance dashboard, {}", r.period.label),
    )
    .m("<style>")
    .m(CSS)
    .m("</style></head><body>");
    header(&mut h, r);
    h.m("<main>");
    kpis(&mut h, r);
    charts(&mut h, r);
    remediation(&mut h, r);
    targets(&mut h, r);
    groups(&mut h, r);
    registers(&mut h, r);
    h.m("</main><footer>");
    h.t(&format!(
        "Generated {} from {}. Every figure states its period; a tile's \"how\" says how it was computed. Times are UTC.",
        r.generated_at, r.config
    ));
    h.m("</footer></body></html>\n");
    h.out
}

fn header(h: &mut Html, r: &Report) {
    h.m("<header><h1>Lethe compliance dashboard</h1>");
    let minute = |t: &str| t.get(..16).unwrap_or(t).replace('T', " ");
    h.open(
        "p",
        &[
            ("class", "meta"),
            (
                "title",
                &format!("{} to {}, end excluded", r.period.since, r.period.until),
            ),
        ],
    )
    .t(&format!(
        "Period {} (UTC) · generated {} UTC",
        r.period.label,
        minute(&r.generated_at)
    ));
    h.close("p");
    if !r.trail.problems.is_empty() {
        h.el(
            "p",
            &[("class", "status bad"), ("data-trail", "broken")],
            &format!(
                "The audit trail does not verify: {}. Every figure here is read from it.",
                r.trail.problems.join("; ")
            ),
        );
    }
    if r.all_met {
        h.el(
            "p",
            &[("class", "status ok"), ("data-all-met", "true")],
            "Every KPI with a goal is met",
        );
    } else {
        h.el(
            "p",
            &[("class", "status bad"), ("data-all-met", "false")],
            "Some KPIs are not met: see the remediation list",
        );
    }
    h.m("<nav aria-label=\"Sections\"><a href=\"#kpis\">KPIs</a><a href=\"#charts\">Charts</a><a href=\"#remediation\">Remediation</a><a href=\"#targets\">Targets</a><a href=\"#groups\">By category, owner, region, sensitivity</a><a href=\"#exceptions\">Exceptions</a><a href=\"#holds\">Holds</a><a href=\"#requests\">Requests</a><a href=\"#runs\">Runs</a><a href=\"#reconciliation\">Reconciliation</a></nav></header>");
}

fn verdict(k: &Kpi) -> (&'static str, &'static str) {
    match k.pass {
        Some(true) => ("met", "met"),
        Some(false) => ("fail", "not met"),
        None if k.goal.is_none() => ("na", "no goal"),
        None => ("na", "not measured"),
    }
}

fn kpis(h: &mut Html, r: &Report) {
    h.m("<section id=\"kpis\"><h2>KPIs</h2><div class=\"tiles\">");
    for k in &r.kpis {
        let (class, said) = verdict(k);
        h.open(
            "div",
            &[
                ("class", &format!("tile {class}")),
                ("data-kpi", &k.id),
                ("title", &k.method),
            ],
        );
        h.el("div", &[("class", "name")], &k.name);
        h.el("div", &[("class", "value")], &k.display);
        h.open("div", &[("class", "goal")]);
        match &k.goal {
            Some(g) => h.t(&format!("goal {g} · ")),
            None => h,
        };
        h.el("span", &[("class", "verdict")], said).close("div");
        h.el(
            "div",
            &[("class", "period")],
            &if k.period == "now" {
                "now".to_string()
            } else {
                format!("over {}", k.period)
            },
        );
        h.m("<details><summary>how</summary>");
        h.t(&format!("{} Period: {}.", k.method, k.period));
        h.m("</details></div>");
    }
    h.m("</div>");
    // The period's totals, over every target.
    let sum = |f: &dyn Fn(&Figures) -> u64| r.targets.iter().map(|t| f(&t.figures)).sum::<u64>();
    let figures: [(&str, &str, u64); 6] = [
        ("deleted", "deletions in the period", sum(&|f| f.deleted)),
        ("failed", "failed deletions", sum(&|f| f.failed)),
        (
            "past_expiry",
            "items past expiry now",
            sum(&|f| f.past_expiry.total()),
        ),
        ("held", "held now", sum(&|f| f.held)),
        ("excepted", "excepted now", sum(&|f| f.excepted)),
        ("sweeps", "target sweeps in the period", r.runs.sweeps),
    ];
    h.m("<p class=\"figures\">");
    for (id, label, n) in figures {
        h.m("<span>")
            .el("b", &[("data-figure", id)], &thousands(n))
            .t(&format!(" {label}"))
            .m("</span>");
    }
    h.m("</p></section>");
}

/// Plot geometry of every chart (SVG user units; the SVG scales to its box).
const W: f64 = 480.0;
const H: f64 = 220.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 44.0;

fn plot_w() -> f64 {
    W - LEFT - RIGHT
}

fn plot_h() -> f64 {
    H - TOP - BOTTOM
}

/// A round number at or above `max`, for the y axis.
fn nice_max(max: u64) -> u64 {
    if max <= 4 {
        return max.max(1);
    }
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m * 2) >= max {
                return step.saturating_mul(m * 2);
            }
        }
        step = step.saturating_mul(10);
        if step == u64::MAX {
            return max;
        }
    }
}

fn y_of(v: u64, max: u64) -> f64 {
    TOP + plot_h() * (1.0 - v as f64 / max.max(1) as f64)
}

fn n1(v: f64) -> String {
    format!("{v:.1}")
}

/// A chart with nothing to draw: it says so, and marks itself empty.
fn empty_chart(h: &mut Html, id: &str, title: &str, why: &str) {
    h.open(
        "figure",
        &[
            ("class", "chart"),
            ("data-chart", id),
            ("data-empty", "true"),
        ],
    );
    h.el("figcaption", &[], title);
    h.el("p", &[("class", "empty")], why);
    h.close("figure");
}

/// Opens a chart's figure and its SVG, with the title and description a screen reader reads.
fn open_chart(h: &mut Html, id: &str, title: &str, desc: &str, height: f64) {
    h.open(
        "figure",
        &[
            ("class", "chart"),
            ("data-chart", id),
            ("data-empty", "false"),
        ],
    );
    h.el("figcaption", &[("id", &format!("{id}-caption"))], title);
    h.open(
        "svg",
        &[
            ("viewBox", &format!("0 0 {W} {height}")),
            ("role", "img"),
            ("aria-labelledby", &format!("{id}-title {id}-desc")),
        ],
    );
    h.el("title", &[("id", &format!("{id}-title"))], title);
    h.el("desc", &[("id", &format!("{id}-desc"))], desc);
}

/// The axes of a vertical chart: y from 0 to `max` with a gridline at half and top, the axis
/// titles.
fn axes(h: &mut Html, max: u64, x_title: &str, y_title: &str) {
    let mut ticks = vec![0, max / 2, max];
    ticks.dedup();
    for v in ticks {
        let y = n1(y_of(v, max));
        if v > 0 {
            h.open(
                "line",
                &[
                    ("class", "grid"),
                    ("x1", &n1(LEFT)),
                    ("x2", &n1(W - RIGHT)),
                    ("y1", &y),
                    ("y2", &y),
                ],
            )
            .close("line");
        }
        h.el(
            "text",
            &[
                ("x", &n1(LEFT - 5.0)),
                ("y", &n1(y_of(v, max) + 4.0)),
                ("text-anchor", "end"),
            ],
            &thousands(v),
        );
    }
    let base = n1(TOP + plot_h());
    h.open(
        "line",
        &[
            ("class", "axis"),
            ("x1", &n1(LEFT)),
            ("x2", &n1(W - RIGHT)),
            ("y1", &base),
            ("y2", &base),
        ],
    )
    .close("line");
    h.open(
        "line",
        &[
            ("class", "axis"),
            ("x1", &n1(LEFT)),
            ("x2", &n1(LEFT)),
            ("y1", &n1(TOP)),
            ("y2", &base),
        ],
    )
    .close("line");
    h.el(
        "text",
        &[
            ("class", "axis-label"),
            ("x", &n1(LEFT + plot_w() / 2.0)),
            ("y", &n1(H - 4.0)),
            ("text-anchor", "middle"),
        ],
        x_title,
    );
    h.el(
        "text",
        &[
            ("class", "axis-label"),
            (
                "transform",
                &format!("translate(12 {}) rotate(-90)", n1(TOP + plot_h() / 2.0)),
            ),
            ("text-anchor", "middle"),
        ],
        y_title,
    );
}

/// Labels under the x axis at `every`-th of `labels` (and the last), centred on their slot.
fn x_labels(h: &mut Html, labels: &[String], every: usize) {
    let n = labels.len().max(1);
    let slot = plot_w() / n as f64;
    for (i, l) in labels.iter().enumerate() {
        if i % every.max(1) != 0 && i + 1 != labels.len() {
            continue;
        }
        // The last label stands alone only if it does not run into the previous one.
        if i + 1 == labels.len() && i % every.max(1) != 0 && i % every.max(1) < every / 2 {
            continue;
        }
        h.el(
            "text",
            &[
                ("x", &n1(LEFT + slot * (i as f64 + 0.5))),
                ("y", &n1(TOP + plot_h() + 15.0)),
                ("text-anchor", "middle"),
            ],
            l,
        );
    }
}

/// Vertical bars, one per label.
#[allow(clippy::too_many_arguments)]
fn bar_chart(
    h: &mut Html,
    id: &str,
    title: &str,
    desc: &str,
    x_title: &str,
    y_title: &str,
    bars: &[(String, String, u64)],
    label_every: usize,
) {
    open_chart(h, id, title, desc, H);
    let max = nice_max(bars.iter().map(|b| b.2).max().unwrap_or(0));
    axes(h, max, x_title, y_title);
    let slot = plot_w() / bars.len().max(1) as f64;
    let width = (slot * 0.75).max(1.0);
    for (i, (_, full, v)) in bars.iter().enumerate() {
        let y = y_of(*v, max);
        h.open(
            "rect",
            &[
                ("class", "bar"),
                ("data-value", &v.to_string()),
                ("x", &n1(LEFT + slot * i as f64 + (slot - width) / 2.0)),
                ("y", &n1(y)),
                ("width", &n1(width)),
                ("height", &n1(TOP + plot_h() - y)),
            ],
        );
        h.el("title", &[], &format!("{full}: {}", thousands(*v)));
        h.close("rect");
    }
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    x_labels(h, &labels, label_every);
    h.m("</svg></figure>");
}

fn charts(h: &mut Html, r: &Report) {
    h.m("<section id=\"charts\"><h2>Charts</h2><div class=\"charts\">");
    let s = &r.series;

    // Deletions per day.
    let days = &s.deletions_per_day;
    let title = "Deletions per day";
    if days.iter().all(|d| d.count == 0) {
        empty_chart(
            h,
            "deletions_per_day",
            title,
            "No deletion was recorded in the period.",
        );
    } else {
        let bars: Vec<(String, String, u64)> = days
            .iter()
            .map(|d| {
                (
                    d.day.get(5..).unwrap_or(&d.day).to_string(),
                    d.day.clone(),
                    d.count,
                )
            })
            .collect();
        let total: u64 = days.iter().map(|d| d.count).sum();
        bar_chart(
            h,
            "deletions_per_day",
            title,
            &format!(
                "Items deleted (retention and erasure) per UTC day from {} to {}: {} in all.",
                r.period.since,
                r.period.until,
                thousands(total)
            ),
            "day (UTC)",
            "items deleted",
            &bars,
            days.len().div_ceil(6).max(1),
        );
    }

    backlog_chart(h, r);

    // Time to delete.
    let title = "Time from expiry to deletion";
    let buckets = &s.time_to_delete;
    if buckets.iter().all(|b| b.count == 0) {
        empty_chart(
            h,
            "time_to_delete",
            title,
            "No retention deletion with a recorded expiry in the period.",
        );
    } else {
        let bars: Vec<(String, String, u64)> = buckets
            .iter()
            .map(|b| (b.label.clone(), b.label.clone(), b.count))
            .collect();
        bar_chart(
            h,
            "time_to_delete",
            title,
            "Retention deletions of the period by the time between the item's expiry and its deletion (goal: within 24 h).",
            "time past expiry when deleted",
            "items",
            &bars,
            1,
        );
    }

    tag_chart(h, r);
    h.m("</div></section>");
}

/// Backlog past expiry per target, day by day: a line per target, broken where a day had no
/// sweep.
fn backlog_chart(h: &mut Html, r: &Report) {
    let id = "backlog";
    let title = "Backlog past expiry per target";
    let drawn: Vec<(usize, &super::Backlog)> = r
        .series
        .backlog
        .iter()
        .filter(|b| b.points.iter().any(Option::is_some))
        .enumerate()
        .collect();
    if drawn.is_empty() {
        empty_chart(
            h,
            id,
            title,
            "No sweep with --apply finished in the period, so no backlog was recorded.",
        );
        return;
    }
    let n = r
        .series
        .deletions_per_day
        .len()
        .max(drawn.iter().map(|(_, b)| b.points.len()).max().unwrap_or(0));
    let max = nice_max(
        drawn
            .iter()
            .flat_map(|(_, b)| b.points.iter().flatten())
            .copied()
            .max()
            .unwrap_or(0),
    );
    open_chart(
        h,
        id,
        title,
        &format!(
            "Items each target's last sweep of the day left past expiry (found minus deleted), per UTC day of {}; a gap is a day without a sweep.",
            r.period.label
        ),
        H,
    );
    axes(h, max, "day (UTC)", "items left past expiry");
    let slot = plot_w() / n.max(1) as f64;
    let x = |i: usize| LEFT + slot * (i as f64 + 0.5);
    for (k, b) in &drawn {
        let color = PALETTE[k % PALETTE.len()];
        h.open("g", &[("data-target", &b.target)]);
        h.el("title", &[], &b.target);
        // Runs of consecutive days with a value: a line each; a lone day, a dot.
        let mut run: Vec<(usize, u64)> = Vec::new();
        let flush = |h: &mut Html, run: &mut Vec<(usize, u64)>| {
            if run.len() > 1 {
                let pts: Vec<String> = run
                    .iter()
                    .map(|(i, v)| format!("{},{}", n1(x(*i)), n1(y_of(*v, max))))
                    .collect();
                h.open(
                    "polyline",
                    &[
                        ("points", &pts.join(" ")),
                        ("fill", "none"),
                        ("stroke", color),
                        ("stroke-width", "2"),
                    ],
                )
                .close("polyline");
            }
            for (i, v) in run.drain(..) {
                h.open(
                    "circle",
                    &[
                        ("cx", &n1(x(i))),
                        ("cy", &n1(y_of(v, max))),
                        ("r", "3"),
                        ("fill", color),
                        ("data-value", &v.to_string()),
                    ],
                );
                let day = r
                    .series
                    .deletions_per_day
                    .get(i)
                    .map(|d| d.day.as_str())
                    .unwrap_or("");
                h.el(
                    "title",
                    &[],
                    &format!("{} {day}: {}", b.target, thousands(v)),
                );
                h.close("circle");
            }
        };
        for (i, p) in b.points.iter().enumerate() {
            match p {
                Some(v) => run.push((i, *v)),
                None => flush(h, &mut run),
            }
        }
        flush(h, &mut run);
        h.close("g");
    }
    let labels: Vec<String> = (0..n)
        .map(|i| {
            r.series
                .deletions_per_day
                .get(i)
                .map(|d| d.day.get(5..).unwrap_or(&d.day).to_string())
                .unwrap_or_default()
        })
        .collect();
    x_labels(h, &labels, n.div_ceil(6).max(1));
    h.m("</svg><ul class=\"legend\">");
    for (k, b) in &drawn {
        h.m("<li>")
            .open(
                "span",
                &[
                    ("class", "sw"),
                    (
                        "style",
                        &format!("background:{}", PALETTE[k % PALETTE.len()]),
                    ),
                ],
            )
            .close("span")
            .t(&b.target)
            .m("</li>");
    }
    h.m("</ul></figure>");
}

/// Tag coverage per target: a horizontal bar each, "not measured" where the target's kind
/// carries no tags.
fn tag_chart(h: &mut Html, r: &Report) {
    let id = "tag_coverage";
    let title = "Tag coverage per target";
    if r.targets.iter().all(|t| t.figures.tag_coverage.is_none()) {
        empty_chart(
            h,
            id,
            title,
            "Not measured: no target of a kind that carries tags (object stores, vendor stores) has [tags] required entries to check.",
        );
        return;
    }
    let row = 24.0;
    let label_w = 150.0;
    let height = TOP + row * r.targets.len() as f64 + 30.0;
    open_chart(
        h,
        id,
        title,
        "Share of each target's items carrying every [tags] required entry, now; the dashed line is the 98% goal.",
        height,
    );
    let x0 = label_w;
    let span = W - label_w - 60.0;
    for (i, t) in r.targets.iter().enumerate() {
        let y = TOP + row * i as f64;
        let name: String = if t.target.chars().count() > 22 {
            t.target.chars().take(21).collect::<String>() + "…"
        } else {
            t.target.clone()
        };
        h.open(
            "text",
            &[
                ("x", &n1(x0 - 6.0)),
                ("y", &n1(y + row * 0.65)),
                ("text-anchor", "end"),
            ],
        )
        .el("title", &[], &t.target)
        .t(&name)
        .close("text");
        match t.figures.tag_coverage {
            Some(c) => {
                let c = c.clamp(0.0, 1.0);
                h.open(
                    "rect",
                    &[
                        ("class", if c >= 0.98 { "bar" } else { "bar late" }),
                        ("data-value", &format!("{c:.4}")),
                        ("x", &n1(x0)),
                        ("y", &n1(y + 4.0)),
                        ("width", &n1((span * c).max(1.0))),
                        ("height", &n1(row - 8.0)),
                    ],
                );
                h.el(
                    "title",
                    &[],
                    &format!(
                        "{}: {} tagged ({} of {} items lack a required tag)",
                        t.target,
                        pct(Some(c)),
                        opt(t.figures.untagged),
                        opt(t.figures.tag_checked)
                    ),
                );
                h.close("rect");
                h.el(
                    "text",
                    &[("x", &n1(x0 + span * c + 4.0)), ("y", &n1(y + row * 0.65))],
                    &pct(Some(c)),
                );
            }
            None => {
                h.el(
                    "text",
                    &[("x", &n1(x0 + 4.0)), ("y", &n1(y + row * 0.65))],
                    "not measured",
                );
            }
        }
    }
    let bottom = TOP + row * r.targets.len() as f64;
    let goal = n1(x0 + span * 0.98);
    h.open(
        "line",
        &[
            ("class", "goal"),
            ("x1", &goal),
            ("x2", &goal),
            ("y1", &n1(TOP)),
            ("y2", &n1(bottom)),
        ],
    )
    .close("line");
    h.open(
        "line",
        &[
            ("class", "axis"),
            ("x1", &n1(x0)),
            ("x2", &n1(x0 + span)),
            ("y1", &n1(bottom)),
            ("y2", &n1(bottom)),
        ],
    )
    .close("line");
    for (v, anchor) in [(0.0, "start"), (0.5, "middle"), (1.0, "end")] {
        h.el(
            "text",
            &[
                ("x", &n1(x0 + span * v)),
                ("y", &n1(bottom + 13.0)),
                ("text-anchor", anchor),
            ],
            &format!("{:.0}%", v * 100.0),
        );
    }
    h.el(
        "text",
        &[
            ("class", "axis-label"),
            ("x", &n1(x0 + span / 2.0)),
            ("y", &n1(bottom + 27.0)),
            ("text-anchor", "middle"),
        ],
        "items carrying every required tag",
    );
    h.m("</svg></figure>");
}

/// An owner: a `mailto:` link for an address, a link for a URL, else a link to the owner's
/// row in the table by owner.
fn owner_link(h: &mut Html, owner: &str, anchors: &BTreeMap<String, String>) {
    if let Some(u) = web_url(owner) {
        h.el("a", &[("href", u), ("class", "owner")], owner);
    } else if let Some(e) = email(owner) {
        h.el(
            "a",
            &[("href", &format!("mailto:{e}")), ("class", "owner")],
            owner,
        );
    } else if let Some(a) = anchors.get(owner) {
        h.el(
            "a",
            &[("href", &format!("#{a}")), ("class", "owner")],
            owner,
        );
    } else {
        h.t(owner);
    }
}

/// A runbook: linked when it is an http(s) URL, shown as text otherwise.
fn runbook_link(h: &mut Html, runbook: Option<&str>) {
    match runbook {
        Some(u) => match web_url(u) {
            Some(u) => {
                h.el(
                    "a",
                    &[
                        ("href", u),
                        ("class", "runbook"),
                        ("rel", "noopener noreferrer"),
                    ],
                    "runbook",
                );
            }
            None => {
                h.t(u);
            }
        },
        None => {
            h.t("-");
        }
    }
}

/// The by-owner table's row ids, by owner.
fn owner_anchors(r: &Report) -> BTreeMap<String, String> {
    r.groups
        .by_owner
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.clone(), format!("owner-{i}")))
        .collect()
}

fn figure_cells(h: &mut Html, f: &Figures) {
    let over = f.past_expiry.over_7d;
    let cells = [
        opt(f.items),
        pct(f.tag_coverage),
        thousands(f.past_expiry.up_to_1d),
        thousands(f.past_expiry.d1_to_7),
        thousands(over),
        f.past_expiry
            .oldest_expiry
            .clone()
            .unwrap_or_else(|| "-".into()),
        thousands(f.deleted),
        thousands(f.failed),
        pct(f.success_rate),
        pct(f.within_24h),
        human_secs(f.time_to_delete_mean_s),
        human_secs(f.time_to_delete_p95_s),
        format!("{} / {}", thousands(f.held), thousands(f.excepted)),
    ];
    for (i, c) in cells.iter().enumerate() {
        let class = if i == 4 && over > 0 {
            "n bad-text"
        } else {
            "n"
        };
        h.el("td", &[("class", class)], c);
    }
}

fn figure_headers(h: &mut Html) {
    for c in FIGURE_HEADERS {
        h.el("th", &[("class", "n"), ("scope", "col")], c);
    }
}

fn targets(h: &mut Html, r: &Report) {
    let anchors = owner_anchors(r);
    h.m("<section id=\"targets\"><h2>Targets</h2><div class=\"scroll\"><table><thead><tr>");
    for c in [
        "target",
        "kind",
        "category",
        "owner",
        "runbook",
        "region",
        "sensitivity",
    ] {
        h.el("th", &[("scope", "col")], c);
    }
    figure_headers(h);
    h.m("<th scope=\"col\">not counted now</th></tr></thead><tbody>");
    for t in &r.targets {
        h.open("tr", &[("data-target", &t.target)]);
        h.open("th", &[("scope", "row")]).t(&t.target);
        if !t.in_config {
            h.m(" (removed from the config)");
        }
        h.close("th");
        h.el("td", &[], &t.kind);
        h.el("td", &[], &t.category);
        h.m("<td>");
        owner_link(h, &t.owner, &anchors);
        h.m("</td><td>");
        runbook_link(h, t.runbook.as_deref());
        h.m("</td>");
        h.el("td", &[], &t.region);
        h.el("td", &[], &t.sensitivity);
        figure_cells(h, &t.figures);
        h.el("td", &[("class", "wide")], t.error.as_deref().unwrap_or(""));
        h.m("</tr>");
    }
    h.m("</tbody></table></div></section>");
}

fn group_table(
    h: &mut Html,
    dim: &'static str,
    groups: &[GroupFigures],
    anchors: &BTreeMap<String, String>,
) {
    let linked = dim == "category";
    h.m("<div class=\"scroll\"><table><thead><tr>");
    h.el("th", &[("scope", "col")], dim);
    if linked {
        h.m("<th scope=\"col\">owner</th><th scope=\"col\">runbook</th>");
    }
    h.m("<th scope=\"col\">targets</th>");
    figure_headers(h);
    h.m("</tr></thead><tbody>");
    for g in groups {
        match (dim, anchors.get(&g.name)) {
            ("owner", Some(a)) => h.open("tr", &[("id", a), ("data-group", &g.name)]),
            _ => h.open("tr", &[("data-group", &g.name)]),
        };
        h.el("th", &[("scope", "row")], &g.name);
        if linked {
            h.m("<td>");
            match &g.owner {
                Some(o) => owner_link(h, o, anchors),
                None => {
                    h.t("several");
                }
            }
            h.m("</td><td>");
            runbook_link(h, g.runbook.as_deref());
            h.m("</td>");
        }
        h.el("td", &[("class", "wide")], &g.targets.join(", "));
        figure_cells(h, &g.figures);
        h.m("</tr>");
    }
    h.m("</tbody></table></div>");
}

fn groups(h: &mut Html, r: &Report) {
    let anchors = owner_anchors(r);
    h.m("<section id=\"groups\"><h2>By category, owner, region and sensitivity</h2>");
    let dims: [(&'static str, &'static str, &[GroupFigures]); 4] = [
        ("category", "By category", &r.groups.by_category),
        (
            "owner",
            "By owner (items past expiry per owner)",
            &r.groups.by_owner,
        ),
        ("region", "By region", &r.groups.by_region),
        ("sensitivity", "By sensitivity", &r.groups.by_sensitivity),
    ];
    for (dim, title, g) in dims {
        h.el("h3", &[], title);
        group_table(h, dim, g, &anchors);
    }
    h.m("</section>");
}

fn remediation(h: &mut Html, r: &Report) {
    let anchors = owner_anchors(r);
    h.m("<section id=\"remediation\"><h2>Remediation</h2>");
    if r.remediation.is_empty() {
        h.m("<p>Nothing to fix: no KPI with a goal fails.</p></section>");
        return;
    }
    h.m("<ul class=\"remed\">");
    for m in &r.remediation {
        h.open("li", &[("data-kpi", &m.kpi)]).t(&m.text);
        if let Some(o) = &m.owner {
            h.m(" · owner ");
            owner_link(h, o, &anchors);
        }
        if m.runbook.is_some() {
            h.m(" · ");
            runbook_link(h, m.runbook.as_deref());
        }
        h.m("</li>");
    }
    h.m("</ul></section>");
}

/// A table of rows of text, or `none` when there are no rows.
fn simple_table(h: &mut Html, headers: &[&'static str], rows: &[Vec<String>], none: &str) {
    if rows.is_empty() {
        h.el("p", &[], none);
        return;
    }
    h.m("<div class=\"scroll\"><table><thead><tr>");
    for c in headers {
        h.el("th", &[("scope", "col")], c);
    }
    h.m("</tr></thead><tbody>");
    for row in rows {
        h.m("<tr>");
        for c in row {
            // Long text (a reason, a detail) wraps; ids, times and names do not.
            let class = if c.chars().count() > 40 { "wide" } else { "" };
            h.el("td", &[("class", class)], c);
        }
        h.m("</tr>");
    }
    h.m("</tbody></table></div>");
}

/// Rows shown of a long list; the rest are counted.
const MAX_ROWS: usize = 200;

fn more(h: &mut Html, n: usize) {
    if n > MAX_ROWS {
        h.el(
            "p",
            &[("class", "meta")],
            &format!(
                "{} more not shown: lethe report --format json has them all.",
                thousands((n - MAX_ROWS) as u64)
            ),
        );
    }
}

fn registers(h: &mut Html, r: &Report) {
    h.m("<section id=\"exceptions\"><h2>Exception register</h2>");
    let rows: Vec<Vec<String>> = r
        .exceptions
        .iter()
        .take(MAX_ROWS)
        .map(|e| {
            vec![
                e.id.clone(),
                e.target.clone(),
                e.item_key.clone(),
                e.owner.clone(),
                e.reason.clone(),
                e.until.clone(),
                e.renewals.to_string(),
                e.granted_by.clone(),
                e.status.clone(),
            ]
        })
        .collect();
    simple_table(
        h,
        &[
            "id",
            "target",
            "item",
            "owner",
            "reason",
            "until",
            "renewals",
            "granted by",
            "status",
        ],
        &rows,
        "No exception was in force in the period.",
    );
    more(h, r.exceptions.len());
    h.m("</section><section id=\"holds\"><h2>Legal holds in force</h2>");
    let rows: Vec<Vec<String>> = r
        .holds
        .iter()
        .take(MAX_ROWS)
        .map(|x| {
            vec![
                x.id.clone(),
                x.scope.clone(),
                x.target.clone().unwrap_or_else(|| "-".into()),
                x.item_key.clone().unwrap_or_else(|| "-".into()),
                x.case_id.clone(),
                x.reason.clone(),
                x.placed_by.clone(),
                x.placed_at.clone(),
            ]
        })
        .collect();
    simple_table(
        h,
        &[
            "id",
            "scope",
            "target",
            "item",
            "case",
            "reason",
            "placed by",
            "placed at",
        ],
        &rows,
        "None.",
    );
    more(h, r.holds.len());

    let q = &r.requests;
    h.m("</section><section id=\"requests\"><h2>Erasure requests</h2>");
    h.open("p", &[]).t(&format!(
        "Received in the period: {}; completed by their deadline: {}; completed late: {}; open now: {}; overdue now: {}.",
        q.received,
        q.completed_in_time,
        q.completed_late,
        q.open,
        q.overdue.len()
    ));
    h.close("p");
    let rows: Vec<Vec<String>> = q
        .overdue
        .iter()
        .take(MAX_ROWS)
        .map(|x| {
            vec![
                x.id.clone(),
                x.received_at.clone(),
                x.deadline.clone(),
                x.status.clone(),
            ]
        })
        .collect();
    simple_table(
        h,
        &["overdue request", "received", "deadline", "status"],
        &rows,
        "No request is overdue.",
    );
    more(h, q.overdue.len());

    h.m("</section><section id=\"runs\"><h2>Runs</h2>");
    h.open("p", &[]).t(&format!(
        "Target sweeps finished in the period: {}; ended with an error: {}; scheduled runs missed: {}.",
        r.runs.sweeps,
        r.runs.failed.len(),
        r.runs.misfires.len()
    ));
    h.close("p");
    let rows: Vec<Vec<String>> = r
        .runs
        .failed
        .iter()
        .map(|f| ("failed", f))
        .chain(r.runs.misfires.iter().map(|f| ("missed", f)))
        .take(MAX_ROWS)
        .map(|(what, f)| {
            vec![
                f.at.clone(),
                what.into(),
                f.target.clone(),
                f.run_id.clone(),
                f.detail.clone(),
            ]
        })
        .collect();
    simple_table(
        h,
        &["at", "what", "target", "run", "detail"],
        &rows,
        "No failed or missed run in the period.",
    );
    more(h, r.runs.failed.len() + r.runs.misfires.len());

    h.m("</section><section id=\"reconciliation\"><h2>Reconciliation</h2>");
    match &r.reconciliation {
        None => {
            h.el(
                "p",
                &[],
                "Not run for this report (reconcile sample 0): lethe audit reconcile checks the stores against the trail.",
            );
        }
        Some(rec) => {
            h.open("p", &[]).t(&format!(
                "{} of {} checks matched ({}), re-checking {} recorded deletions per target and every item present past expiry.",
                thousands(rec.matched),
                thousands(rec.checked),
                pct((rec.checked > 0).then_some(rec.success_rate)),
                rec.sample
                    .map(|s| format!("a sample of {s}"))
                    .unwrap_or_else(|| "all".into())
            ));
            h.close("p");
            let rows: Vec<Vec<String>> = rec
                .mismatches
                .iter()
                .map(|m| vec!["mismatch".to_string(), m.clone()])
                .chain(
                    rec.errors
                        .iter()
                        .map(|e| vec!["error".to_string(), e.clone()]),
                )
                .take(MAX_ROWS)
                .collect();
            if !rows.is_empty() {
                simple_table(h, &["what", "detail"], &rows, "");
                more(h, rec.mismatches.len() + rec.errors.len());
            }
        }
    }
    h.m("</section>");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::*;
    use super::*;

    fn figures(deleted: u64, coverage: Option<f64>) -> Figures {
        Figures {
            items: Some(100),
            tag_checked: coverage.map(|_| 100),
            untagged: coverage.map(|c| (100.0 * (1.0 - c)) as u64),
            tag_coverage: coverage,
            past_expiry: PastExpiry {
                up_to_1d: 1,
                d1_to_7: 2,
                over_7d: 3,
                oldest_expiry: Some("2026-10-01T00:00:00Z".into()),
            },
            deleted,
            success_rate: Some(1.0),
            ..Figures::default()
        }
    }

    fn target(name: &str, runbook: Option<&str>, coverage: Option<f64>) -> TargetFigures {
        TargetFigures {
            target: name.into(),
            kind: "sql".into(),
            category: "logs".into(),
            owner: "platform-sre".into(),
            runbook: runbook.map(str::to_string),
            region: "eu".into(),
            sensitivity: "high".into(),
            figures: figures(7, coverage),
            error: None,
            in_config: true,
        }
    }

    fn group(name: &str, runbook: Option<&str>) -> GroupFigures {
        GroupFigures {
            name: name.into(),
            targets: vec![name.into()],
            owner: Some("platform-sre".into()),
            runbook: runbook.map(str::to_string),
            figures: figures(7, None),
            kpis: Vec::new(),
        }
    }

    fn sample() -> Report {
        let evil = "<script>alert(1)</script>";
        let targets = vec![
            target("logs", Some("https://wiki.example/runbooks/logs"), None),
            target(evil, Some("javascript:alert(1)"), Some(0.9)),
        ];
        Report {
            generated_at: "2026-11-27T12:00:00Z".into(),
            config: "/etc/lethe.toml".into(),
            period: Period {
                since: "2026-11-24T00:00:00Z".into(),
                until: "2026-11-27T00:00:00Z".into(),
                label: "2026-11-24 to 2026-11-27".into(),
                monthly: false,
            },
            kpis: vec![Kpi {
                id: "overdue_7d".into(),
                name: "Items > 7 d past expiry".into(),
                value: Some(6.0),
                display: "6".into(),
                goal: Some("= 0".into()),
                pass: Some(false),
                period: "now".into(),
                method: format!("counted {evil}"),
            }],
            groups: Groups {
                by_target: vec![group("logs", None), group(evil, None)],
                by_category: vec![group("logs", Some("https://wiki.example/cat"))],
                by_sensitivity: vec![group("high", None)],
                by_owner: vec![group("platform-sre", None)],
                by_region: vec![group("eu", None)],
            },
            targets,
            holds: vec![HoldLine {
                id: "hold-1".into(),
                scope: "target".into(),
                target: Some(evil.into()),
                item_key: None,
                subject_hash: None,
                case_id: "case \"7\"".into(),
                reason: evil.into(),
                placed_by: "legal".into(),
                placed_at: "2026-11-01T00:00:00Z".into(),
                released_at: None,
            }],
            exceptions: vec![ExceptionLine {
                id: "exc-1".into(),
                target: "logs".into(),
                item_key: "42".into(),
                owner: "ml".into(),
                reason: evil.into(),
                until: "2026-12-31T00:00:00Z".into(),
                renewals: 1,
                granted_by: "legal".into(),
                granted_at: "2026-11-01T00:00:00Z".into(),
                status: "active".into(),
            }],
            requests: RequestFigures::default(),
            runs: RunFigures::default(),
            reconciliation: None,
            series: Series {
                deletions_per_day: ["2026-11-24", "2026-11-25", "2026-11-26"]
                    .iter()
                    .zip([3, 0, 11])
                    .map(|(d, c)| DayCount {
                        day: (*d).into(),
                        count: c,
                    })
                    .collect(),
                backlog: vec![
                    Backlog {
                        target: "logs".into(),
                        points: vec![Some(5), None, Some(2)],
                    },
                    Backlog {
                        target: evil.into(),
                        points: vec![Some(1), Some(0), Some(0)],
                    },
                ],
                time_to_delete: vec![
                    Bucket {
                        label: "≤ 1 h".into(),
                        count: 4,
                    },
                    Bucket {
                        label: "> 7 d".into(),
                        count: 1,
                    },
                ],
            },
            remediation: vec![Remediation {
                kpi: "overdue_7d".into(),
                subject: evil.into(),
                text: format!("{evil}: 3 items > 7 d past expiry"),
                owner: Some("platform-sre".into()),
                runbook: Some("javascript:alert(1)".into()),
            }],
            trail: super::super::TrailCheck {
                from_seq: 0,
                head_seq: 9,
                entries: 9,
                problems: vec![format!("entry 3 {evil}")],
                pruned_before: None,
            },
            all_met: false,
        }
    }

    /// The `data-chart` of each chart and whether it says it is empty.
    fn charts_of(page: &str) -> Vec<(String, bool)> {
        page.split("<figure ")
            .skip(1)
            .map(|f| {
                let attr = |name: &str| {
                    let at = f.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                    f[at..].split('"').next().unwrap().to_string()
                };
                (attr("data-chart"), attr("data-empty") == "true")
            })
            .collect()
    }

    #[test]
    fn strings_from_the_report_are_escaped_everywhere() {
        let page = page(&sample());
        assert!(!page.contains("<script"), "raw <script in the page");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("case &quot;7&quot;"));
        // Only http(s) runbooks are links; the other is shown as text.
        assert!(page.contains("href=\"https://wiki.example/runbooks/logs\""));
        assert!(page.contains("href=\"https://wiki.example/cat\""));
        assert!(!page.contains("href=\"javascript:"));
        assert!(page.contains(">javascript:alert(1)<"));
    }

    #[test]
    fn the_page_loads_nothing_and_runs_nothing() {
        let page = page(&sample());
        for bad in [
            "src=",
            "@import",
            "url(",
            "<script",
            "<link rel=\"stylesheet",
        ] {
            assert!(!page.contains(bad), "the page has {bad}");
        }
        // The one <link> is the empty favicon, so that a browser asks for none.
        assert_eq!(page.matches("<link").count(), 1);
        assert!(page.contains("<link rel=\"icon\" href=\"data:,\">"));
        assert!(page.contains("<meta name=\"viewport\""));
        // Every href is an in-page anchor, mailto or http(s).
        for h in page.split("href=\"").skip(1) {
            let url = h.split('"').next().unwrap();
            assert!(
                url.starts_with('#')
                    || url.starts_with("https://")
                    || url.starts_with("http://")
                    || url.starts_with("mailto:")
                    || url == "data:,",
                "href {url}"
            );
        }
    }

    #[test]
    fn every_chart_is_drawn_with_an_accessible_title() {
        let page = page(&sample());
        assert_eq!(
            charts_of(&page),
            [
                ("deletions_per_day".to_string(), false),
                ("backlog".to_string(), false),
                ("time_to_delete".to_string(), false),
                ("tag_coverage".to_string(), false),
            ]
        );
        assert_eq!(page.matches("<svg ").count(), 4);
        assert_eq!(page.matches("role=\"img\"").count(), 4);
        for id in [
            "deletions_per_day",
            "backlog",
            "time_to_delete",
            "tag_coverage",
        ] {
            assert!(page.contains(&format!("<title id=\"{id}-title\">")), "{id}");
        }
        // Three days of bars, two buckets, one covered target.
        assert_eq!(page.matches("class=\"bar\"").count(), 3 + 2);
        assert_eq!(page.matches("class=\"bar late\"").count(), 1);
        // The backlog's gap: "logs" has two lone days (dots, no line); the other one line.
        assert_eq!(page.matches("<polyline").count(), 1);
        assert_eq!(page.matches("<circle").count(), 2 + 3);
        assert!(page.contains(">not measured<"));
        // A KPI tile says what it covers.
        assert!(page.contains("<div class=\"period\">now</div>"));
        // The deletions total, for a reader (and a test) to find.
        assert!(page.contains("data-figure=\"deleted\">14<"));
    }

    #[test]
    fn a_chart_without_data_says_so_instead_of_drawing_nothing() {
        let mut r = sample();
        r.series = Series::default();
        for t in &mut r.targets {
            t.figures.tag_coverage = None;
        }
        let page = page(&r);
        assert!(charts_of(&page).iter().all(|(_, empty)| *empty));
        assert_eq!(charts_of(&page).len(), 4);
        assert_eq!(page.matches("<svg").count(), 0);
        assert!(page.contains("No deletion was recorded in the period."));
    }

    #[test]
    fn each_target_and_category_links_to_its_owner_and_runbook() {
        let page = page(&sample());
        let row = page.split("<tr data-target=\"logs\">").nth(1).unwrap();
        let row = row.split("</tr>").next().unwrap();
        assert!(row.contains("<a href=\"#owner-0\" class=\"owner\">platform-sre</a>"));
        assert!(row.contains("class=\"runbook\""));
        assert!(page.contains("<tr id=\"owner-0\" data-group=\"platform-sre\">"));
        let cat = page.split("<tr data-group=\"logs\">").nth(1).unwrap();
        assert!(
            cat.split("</tr>")
                .next()
                .unwrap()
                .contains("https://wiki.example/cat")
        );
        assert_eq!(
            web_url(" HTTPS://x.example/a "),
            Some("HTTPS://x.example/a")
        );
        assert_eq!(web_url("https://x.example/a b"), None);
        assert_eq!(web_url("data:text/html,x"), None);
        assert_eq!(email("sre@example.com"), Some("sre@example.com"));
        assert_eq!(email("sre team"), None);
    }

    #[test]
    fn the_live_page_reloads_itself() {
        let page = live_page(&sample(), 300);
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"300\">"));
        assert!(!super::page(&sample()).contains("http-equiv"));
    }
}
