//! Targets, runs, and sweeps started by hand.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use lethe_core::config::Role;
use lethe_ops::ops;
use lethe_ops::ops::schedule::{LeaseHolder, RunRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::schema::TargetName;
use super::{ApiError, ApiResult, ErrorBody, Shared, caller, op};
use crate::Daemon;

/// A target as configured, with what the daemon knows of it now.
#[derive(Serialize, ToSchema)]
pub struct TargetStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub category: String,
    /// The retention window, e.g. "30d".
    pub window: String,
    /// The category's cap, when it has one.
    pub max: Option<String>,
    /// The schedule that sweeps it: "sweep", "targets.NAME", or none.
    pub schedule: Option<String>,
    /// Whether erasure and access requests reach it.
    pub maps_subject: bool,
    /// The sweep working on it now, if any.
    pub busy: Option<Busy>,
    /// The last census: items past expiry (over 0, 1 and 7 days), held, excepted.
    #[schema(value_type = Option<Object>)]
    pub census: Option<serde_json::Value>,
    /// Why the last census could not read it.
    pub census_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Busy {
    pub holder: String,
    pub since: String,
}

/// Every target and its status.
#[utoipa::path(get, path = "/v1/targets", tag = "targets",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The targets", body = Vec<TargetStatus>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody)))]
pub async fn targets(State(d): Shared, headers: HeaderMap) -> ApiResult<Json<Vec<TargetStatus>>> {
    caller(&d, &headers, Role::Viewer)?;
    let dd = d.clone();
    let leases = op(move || ops::schedule::leases(&dd.loaded)).await?;
    let overview = d.overview.lock().ok().and_then(|o| o.clone());
    let out = d
        .loaded
        .config
        .targets
        .iter()
        .map(|t| {
            let counted = overview
                .as_ref()
                .and_then(|o| o.targets.iter().find(|c| c.target == t.name));
            TargetStatus {
                name: t.name.clone(),
                type_name: t.type_name.to_string(),
                category: t.category.clone(),
                window: t.window.retention.to_string(),
                max: t.window.max.map(|m| m.to_string()),
                schedule: d
                    .schedules
                    .iter()
                    .find(|s| s.targets.contains(&t.name))
                    .map(|s| s.name.clone()),
                maps_subject: ops::common::maps_subject(t),
                busy: leases.iter().find(|l| l.target == t.name).map(|l| Busy {
                    holder: l.holder.clone(),
                    since: l.since.clone(),
                }),
                census: counted
                    .and_then(|c| c.census.as_ref())
                    .and_then(|c| serde_json::to_value(c).ok()),
                census_error: counted.and_then(|c| c.error.clone()),
            }
        })
        .collect();
    Ok(Json(out))
}

/// What a run did in one target.
#[derive(Serialize, ToSchema)]
pub struct TargetCounts {
    pub target: String,
    /// Items found due (past expiry, or the subject's).
    pub found: u64,
    pub deleted: u64,
    /// Kept under legal hold or exception.
    pub held: u64,
    pub files_removed: u64,
    /// Items that could not be deleted (each named in the trail with its reason).
    pub failed: u64,
    /// Objects lacking a `[tags] required` entry (object store targets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untagged: Option<u64>,
    /// Items past expiry kept because work still running at the store uses them.
    #[serde(skip_serializing_if = "is_zero")]
    #[schema(required = false)]
    pub in_use: u64,
    /// Requests retried (throttled, server errors, timeouts), for vendor API targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    /// Why the target could not be swept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run stopped before the end of the target; the next run goes on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub interrupted: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<&lethe_ops::engine::TargetReport> for TargetCounts {
    fn from(t: &lethe_ops::engine::TargetReport) -> TargetCounts {
        TargetCounts {
            target: t.target.clone(),
            found: t.found,
            deleted: t.deleted,
            held: t.held,
            files_removed: t.files_removed,
            failed: t.failed,
            untagged: t.untagged,
            in_use: t.in_use,
            retries: t.retries,
            error: t.error.clone(),
            interrupted: t.interrupted,
        }
    }
}

/// A run's report as it closed.
#[derive(Serialize, ToSchema)]
pub struct RunReport {
    pub run_id: String,
    pub dry_run: bool,
    /// The schedule that fired it, for a scheduled run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    pub targets: Vec<TargetCounts>,
}

// Documents the strings the library writes (the field stays the library's string, so that
// a value this build does not know is still shown): never constructed.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A sweep of expired items (scheduled, or started by hand).
    Retention,
    /// An erasure request's run.
    Erasure,
}

/// A run, as `GET /v1/runs` lists it.
#[derive(Serialize, ToSchema)]
pub struct Run {
    pub run_id: String,
    #[schema(value_type = RunKind)]
    pub kind: String,
    pub dry_run: bool,
    pub started_at: String,
    /// Absent while the run is going.
    pub finished_at: Option<String>,
    /// Per target: found, deleted, held, failed, and the error when it failed; absent while
    /// the run is going.
    #[schema(value_type = Option<RunReport>)]
    pub report: Option<serde_json::Value>,
}

impl From<RunRecord> for Run {
    fn from(r: RunRecord) -> Run {
        Run {
            run_id: r.run_id,
            kind: r.kind,
            dry_run: r.dry_run,
            started_at: r.started_at,
            finished_at: r.finished_at,
            report: r.report,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// How many runs, newest first (1 to 500; 50 when absent).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The newest runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs",
    params(RunsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The runs", body = Vec<Run>),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody)))]
pub async fn list_runs(
    State(d): Shared,
    headers: HeaderMap,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Run>>> {
    caller(&d, &headers, Role::Viewer)?;
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit={limit}: between 1 and 500"
        )));
    }
    let runs = op(move || ops::schedule::runs(&d.loaded, limit as usize)).await?;
    Ok(Json(runs.into_iter().map(Run::from).collect()))
}

/// One run, with its per-target counts and failures.
#[utoipa::path(get, path = "/v1/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path, description = "The run's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run", body = Run),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody)))]
pub async fn one_run(
    State(d): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Run>> {
    caller(&d, &headers, Role::Viewer)?;
    let Path(id) = id?;
    let run = op(move || ops::schedule::run(&d.loaded, &id)).await?;
    Ok(Json(run.into()))
}

/// What to sweep.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepBody {
    /// The targets, by name (a name given twice is swept once); every target when absent.
    #[schema(value_type = Option<Vec<TargetName>>, min_items = 1)]
    pub targets: Option<Vec<String>>,
    /// Delete (true) or only say what would be deleted (false, the default).
    #[serde(default)]
    pub apply: bool,
}

/// A sweep accepted: it runs in the background; `GET /v1/runs/{run_id}` follows it.
#[derive(Serialize, ToSchema)]
pub struct SweepStarted {
    pub run_id: String,
    pub targets: Vec<String>,
    pub apply: bool,
}

/// Starts a sweep of the given targets (all when `targets` is absent).
#[utoipa::path(post, path = "/v1/sweeps", tag = "runs",
    request_body = SweepBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Started; follow it at /v1/runs/{run_id}", body = SweepStarted),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 404, description = "No such target", body = ErrorBody),
        (status = 409, description = "A target is busy: another sweep holds it (the holder is named)", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 503, description = "The daemon is stopping", body = ErrorBody)))]
pub async fn start_sweep(
    State(d): Shared,
    headers: HeaderMap,
    body: Result<Json<SweepBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<SweepStarted>)> {
    let who = caller(&d, &headers, Role::Operator)?;
    let Json(body) = body?;
    if d.stopping() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping: no new run starts",
        ));
    }
    let names: Vec<String> = match body.targets {
        Some(t) if t.is_empty() => {
            return Err(ApiError::bad_request(
                "targets is empty: name at least one target, or leave targets out for all",
            ));
        }
        Some(t) => {
            let mut seen = std::collections::HashSet::new();
            t.into_iter().filter(|n| seen.insert(n.clone())).collect()
        }
        None => d
            .loaded
            .config
            .targets
            .iter()
            .map(|t| t.name.clone())
            .collect(),
    };
    let known: Vec<&str> = d
        .loaded
        .config
        .targets
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(ApiError::not_found(format!(
            "no target {bad:?} (targets: {})",
            known.join(", ")
        )));
    }
    let dd = d.clone();
    let leases: Vec<LeaseHolder> = op(move || ops::schedule::leases(&dd.loaded)).await?;
    if let Some(l) = leases.iter().find(|l| names.contains(&l.target)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "target {} is busy: another sweep ({}, since {}) holds it; try again when it is done",
                l.target, l.holder, l.since
            ),
        ));
    }
    let run_id = op(ops::new_run_id).await?;
    let req = ops::SweepRequest {
        apply: body.apply,
        targets: names.clone(),
        stop: Some(d.stop.clone()),
        run_id: Some(run_id.clone()),
        by: Some(who.name.clone()),
        ..Default::default()
    };
    spawn_sweep(d.clone(), req, who.name);
    Ok((
        StatusCode::ACCEPTED,
        Json(SweepStarted {
            run_id,
            targets: names,
            apply: body.apply,
        }),
    ))
}

fn spawn_sweep(d: Arc<Daemon>, req: ops::SweepRequest, by: String) {
    tokio::spawn(async move {
        let run_id = req.run_id.clone().unwrap_or_default();
        tracing::info!(run_id = %run_id, by = %by, apply = req.apply, targets = ?req.targets, "sweep started through the API");
        let dd = d.clone();
        match crate::blocking(move || ops::sweep(&dd.loaded, &req)).await {
            Ok(report) => {
                tracing::info!(run_id = %run_id, failures = report.has_failures(), "sweep finished");
            }
            Err(e) => tracing::error!(run_id = %run_id, error = %e, "sweep failed"),
        }
        d.recount.notify_one();
        d.dashboard.redraw.notify_one();
    });
}
