//! The audit trail: entries by item, subject or run, and verification.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use lethe_core::config::Role;
use lethe_ops::ops::{self, LogQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, ErrorBody, Shared, caller, op};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// A target: its entries, or with `key` one item's. The trail keeps the entries of
    /// targets no longer configured: any name is looked up.
    #[param(min_length = 1)]
    pub target: Option<String>,
    /// An item's key: with `target`, that item's entries; alone, the entries of items with
    /// that key in any target.
    #[param(min_length = 1)]
    pub key: Option<String>,
    /// A data subject, as the targets hold it (matched by its keyed hash; never stored).
    #[param(min_length = 1)]
    pub subject: Option<String>,
    /// A run or request id.
    #[param(min_length = 1)]
    pub run: Option<String>,
    /// At most this many entries, the newest (1 to 10000; 100 when absent).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// The entries found, oldest first.
#[derive(Serialize, ToSchema)]
pub struct Entries {
    /// The newest `limit` of them.
    #[schema(value_type = Vec<Object>)]
    pub entries: serde_json::Value,
    /// How many matched in all.
    pub total: u64,
}

/// Entries by item (`target` and `key`), target, subject or run, or (with none of them)
/// the newest entries of the whole trail.
#[utoipa::path(get, path = "/v1/audit/entries", tag = "audit",
    params(EntriesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The entries", body = Entries),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody)))]
pub async fn entries(
    State(d): Shared,
    headers: HeaderMap,
    q: Result<Query<EntriesQuery>, QueryRejection>,
) -> ApiResult<Json<Entries>> {
    caller(&d, &headers, Role::Viewer)?;
    let Query(q) = q?;
    for (name, v) in [
        ("target", &q.target),
        ("key", &q.key),
        ("subject", &q.subject),
        ("run", &q.run),
    ] {
        if v.as_deref() == Some("") {
            return Err(ApiError::bad_request(format!(
                "{name} is empty: give a value, or leave {name} out"
            )));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit={limit}: between 1 and 10000"
        )));
    }
    let query = LogQuery {
        target: q.target,
        key: q.key,
        subject: q.subject,
        run: q.run,
        limit: limit as usize,
    };
    let page = op(move || ops::log(&d.loaded, &query)).await?;
    Ok(Json(Entries {
        entries: serde_json::to_value(&page.entries).unwrap_or_default(),
        total: page.total,
    }))
}

/// The trail's verification: its chain, its seals, and the registers against it.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Verified, or what is wrong (ok = false)", body = Object),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody)))]
pub async fn verify(State(d): Shared, headers: HeaderMap) -> ApiResult<Json<serde_json::Value>> {
    caller(&d, &headers, Role::Viewer)?;
    let v = op(move || ops::verify(&d.loaded)).await?;
    Ok(Json(serde_json::to_value(&v).unwrap_or_default()))
}
