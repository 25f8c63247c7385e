//! Erasure (GDPR Art. 17) and access (Art. 15) requests.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use lethe_core::config::Role;
use lethe_ops::ops;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::runs::TargetCounts;
use super::schema::{Text, not_blank};
use super::{ApiError, ApiResult, ErrorBody, Shared, caller, op};

/// An erasure request: whose data, and whether to erase it now.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureBody {
    /// The data subject (as the targets' subject column or metadata holds it). Never
    /// stored or logged: the trail keeps its keyed hash.
    #[schema(value_type = Text)]
    pub subject: String,
    /// Erase (true), or preview what would be erased (false, the default). Filing the same
    /// subject again continues its open request.
    #[serde(default)]
    pub apply: bool,
}

/// What an erasure run came to.
// Documents the strings the library writes (the field stays the library's string, so that
// a value this build does not know is still shown): never constructed.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureStatus {
    /// Nothing erased: what would be.
    Previewed,
    /// Every item of the subject erased.
    Completed,
    /// Erased, except items under legal hold (GDPR Art. 17(3)(e)).
    CompletedWithItemsWithheld,
    /// Some items could not be erased (the per-target counts say where).
    Failed,
}

/// The request, its status and the run's per-target counts.
#[derive(Serialize, ToSchema)]
pub struct ErasureOutcome {
    pub request_id: String,
    #[schema(value_type = ErasureStatus)]
    pub status: String,
    pub received_at: String,
    pub deadline: String,
    pub run_id: String,
    pub dry_run: bool,
    /// Per target: found, deleted, held, failed, and the error when it failed.
    pub targets: Vec<TargetCounts>,
    /// Set when no target held any item of the subject (matched exactly as written).
    pub warning: Option<String>,
}

/// Files (and, with `apply`, carries out) an erasure request.
#[utoipa::path(post, path = "/v1/erasure-requests", tag = "requests",
    request_body = ErasureBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Previewed or carried out", body = ErasureOutcome),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 409, description = "The request cannot be carried out now", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 502, description = "A target could not be reached", body = ErrorBody)))]
pub async fn file_erasure(
    State(d): Shared,
    headers: HeaderMap,
    body: Result<Json<ErasureBody>, JsonRejection>,
) -> ApiResult<Json<ErasureOutcome>> {
    let who = caller(&d, &headers, Role::Operator)?;
    let Json(body) = body?;
    if !not_blank(&body.subject) {
        return Err(ApiError::bad_request("subject is empty"));
    }
    let apply = body.apply;
    let req = ops::EraseRequest {
        subject: body.subject,
        apply,
        progress: false,
        by: Some(who.name.clone()),
    };
    let e = op(move || ops::erase(&d.loaded, &req)).await?;
    tracing::info!(request_id = %e.request.id, by = %who.name, apply, status = %e.status, "erasure request through the API");
    Ok(Json(ErasureOutcome {
        request_id: e.request.id.clone(),
        status: e.status.clone(),
        received_at: e.request.received_at.clone(),
        deadline: e.request.deadline.clone(),
        run_id: e.report.run_id.clone(),
        dry_run: e.report.dry_run,
        targets: e.report.targets.iter().map(TargetCounts::from).collect(),
        warning: e.warning.clone(),
    }))
}

// Documents the strings the library writes (the field stays the library's string, so that
// a value this build does not know is still shown): never constructed.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// GDPR Art. 17.
    Erasure,
    /// GDPR Art. 15.
    Access,
}

/// Where a request stands: received (recorded, not run yet), previewed, completed,
/// completed_with_items_withheld (under legal hold) or failed.
// Documents the strings the library writes (the field stays the library's string, so that
// a value this build does not know is still shown): never constructed.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Received,
    Previewed,
    Completed,
    CompletedWithItemsWithheld,
    Failed,
}

/// An erasure request as listed, with how far its deadline is.
#[derive(Serialize, ToSchema)]
pub struct RequestSummary {
    pub id: String,
    #[schema(value_type = RequestKind)]
    pub kind: String,
    pub received_at: String,
    pub deadline: String,
    #[schema(value_type = RequestStatus)]
    pub status: String,
    /// Open with its deadline past.
    pub overdue: bool,
    /// Open with its deadline within 3 days.
    pub due_soon: bool,
    /// Days to the deadline (negative: past), while open.
    pub days_to_deadline: Option<f64>,
}

/// Every erasure and access request, newest first, with due and overdue marked.
#[utoipa::path(get, path = "/v1/erasure-requests", tag = "requests",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The requests", body = Vec<RequestSummary>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody)))]
pub async fn list_erasures(
    State(d): Shared,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<RequestSummary>>> {
    caller(&d, &headers, Role::Operator)?;
    let all = op(move || ops::erase::all_requests(&d.loaded)).await?;
    let now = lethe_ops::util::now();
    let mut out: Vec<RequestSummary> = all
        .into_iter()
        .map(|r| {
            let open = !ops::erase::is_closed(&r) && r.kind == "erasure";
            let days = open
                .then(|| ops::erase::days_to_deadline(&r, now))
                .flatten();
            RequestSummary {
                overdue: days.is_some_and(|d| d < 0.0),
                due_soon: days.is_some_and(|d| (0.0..=ops::census::DUE_SOON_DAYS).contains(&d)),
                days_to_deadline: days.map(|d| (d * 100.0).round() / 100.0),
                id: r.id,
                kind: r.kind,
                received_at: r.received_at,
                deadline: r.deadline,
                status: r.status,
            }
        })
        .collect();
    out.reverse();
    Ok(Json(out))
}

/// A request's status: the request and the audit entries it produced.
#[derive(Serialize, ToSchema)]
pub struct ReceiptBody {
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    #[schema(value_type = Vec<Object>)]
    pub entries: serde_json::Value,
}

async fn receipt(
    d: std::sync::Arc<crate::Daemon>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ReceiptBody>> {
    caller(&d, &headers, Role::Operator)?;
    let Path(id) = id?;
    let r = op(move || ops::erase::status(&d.loaded, &id)).await?;
    Ok(Json(ReceiptBody {
        request: serde_json::to_value(&r.request).unwrap_or_default(),
        entries: serde_json::to_value(&r.entries).unwrap_or_default(),
    }))
}

/// A request's status, with its audit entries.
#[utoipa::path(get, path = "/v1/erasure-requests/{id}", tag = "requests",
    params(("id" = String, Path, description = "The request's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The request", body = ReceiptBody),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody)))]
pub async fn erasure_status(
    State(d): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ReceiptBody>> {
    receipt(d, headers, id).await
}

/// A request's receipt: what was done, entry by entry, each verifiable in the trail.
#[utoipa::path(get, path = "/v1/erasure-requests/{id}/receipt", tag = "requests",
    params(("id" = String, Path, description = "The request's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The receipt", body = ReceiptBody),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody)))]
pub async fn erasure_receipt(
    State(d): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ReceiptBody>> {
    receipt(d, headers, id).await
}

/// Whose data to export.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessBody {
    /// The data subject, as the targets hold it.
    #[schema(value_type = Text)]
    pub subject: String,
}

/// The Art. 15 document: every item of the subject, per target, with the files its rows own.
#[utoipa::path(post, path = "/v1/access-requests", tag = "requests",
    request_body = AccessBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The document", body = Object),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 502, description = "A target could not be reached", body = ErrorBody)))]
pub async fn access(
    State(d): Shared,
    headers: HeaderMap,
    body: Result<Json<AccessBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = caller(&d, &headers, Role::Operator)?;
    let Json(body) = body?;
    if !not_blank(&body.subject) {
        return Err(ApiError::bad_request("subject is empty"));
    }
    let by = who.name.clone();
    let doc = op(move || {
        let mut buf: Vec<u8> = Vec::new();
        ops::export_by(
            &d.loaded,
            &body.subject,
            ops::Destination::Writer(&mut buf),
            Some(&by),
        )?;
        serde_json::from_slice::<serde_json::Value>(&buf)
            .map_err(|e| lethe_ops::Error::Other(anyhow::anyhow!("the export is not JSON: {e}")))
    })
    .await?;
    tracing::info!(by = %who.name, request_id = %doc.get("request_id").and_then(|v| v.as_str()).unwrap_or(""), "access request through the API");
    Ok(Json(doc))
}
