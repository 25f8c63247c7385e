//! The dashboard: one self-contained HTML page from a [`Report`].

use super::Report;

/// The page, whole: no script, font or style from the network.
pub fn page(r: &Report) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Lethe report {}</title></head><body></body></html>",
        super::render::escape(&r.period.label)
    )
}
