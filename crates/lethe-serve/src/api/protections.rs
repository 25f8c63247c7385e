//! Legal holds and approved exceptions (the legal role's).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use lethe_core::config::Role;
use lethe_ops::ops::{self, exception, hold};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, ErrorBody, Shared, caller, op};

/// A hold: on a subject, on one item (`target` and `key`), or on a whole target.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// A data subject: every item of theirs, now and later.
    #[schema(min_length = 1)]
    pub subject: Option<String>,
    /// A target: all of it, or with `key` one item.
    #[schema(min_length = 1)]
    pub target: Option<String>,
    /// An item's key, with `target`.
    #[schema(min_length = 1)]
    pub key: Option<String>,
    /// The legal case the hold serves.
    #[schema(min_length = 1)]
    pub case_id: String,
    #[schema(min_length = 1)]
    pub reason: String,
}

/// A hold placed.
#[derive(Serialize, ToSchema)]
pub struct HoldPlaced {
    pub id: String,
    /// What the person who placed it should know (a subject with no item today; an item
    /// whose deletion an interrupted run began).
    pub warning: Option<String>,
    pub deletion_begun: Option<String>,
}

/// Places a legal hold; the token's name is recorded as who placed it.
#[utoipa::path(post, path = "/v1/holds", tag = "protections",
    request_body = HoldBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Placed", body = HoldPlaced),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 404, description = "No such target or item", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 502, description = "The target could not be reached", body = ErrorBody)))]
pub async fn place_hold(
    State(d): Shared,
    headers: HeaderMap,
    body: Result<Json<HoldBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<HoldPlaced>)> {
    let who = caller(&d, &headers, Role::Legal)?;
    let Json(b) = body?;
    let req = hold::HoldRequest {
        subject: b.subject,
        target: b.target,
        key: b.key,
        case_id: b.case_id,
        reason: b.reason,
        by: Some(who.name),
    };
    let placed = op(move || hold::place(&d.loaded, &req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(HoldPlaced {
            id: placed.id,
            warning: placed.warning,
            deletion_begun: placed.deletion_begun,
        }),
    ))
}

/// Every hold, in force or released.
#[utoipa::path(get, path = "/v1/holds", tag = "protections",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The holds", body = Vec<Object>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody)))]
pub async fn list_holds(
    State(d): Shared,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    caller(&d, &headers, Role::Legal)?;
    let holds = op(move || hold::list(&d.loaded)).await?;
    Ok(Json(
        holds
            .iter()
            .filter_map(|h| serde_json::to_value(h).ok())
            .collect(),
    ))
}

/// Why a hold or an exception ends.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndBody {
    #[schema(min_length = 1)]
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct Ended {
    pub id: String,
    /// released or revoked.
    pub status: String,
}

/// Releases a hold.
#[utoipa::path(post, path = "/v1/holds/{id}/release", tag = "protections",
    params(("id" = String, Path, description = "The hold's id")),
    request_body = EndBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Released", body = Ended),
        (status = 400, description = "A bad body or path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 404, description = "No such hold", body = ErrorBody),
        (status = 409, description = "Already released", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody)))]
pub async fn release_hold(
    State(d): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<EndBody>, JsonRejection>,
) -> ApiResult<Json<Ended>> {
    let who = caller(&d, &headers, Role::Legal)?;
    let Path(id) = id?;
    let Json(b) = body?;
    if b.reason.trim().is_empty() {
        return Err(ApiError::bad_request("reason is empty"));
    }
    let req = hold::HoldRelease {
        id: id.clone(),
        reason: b.reason,
        by: Some(who.name),
    };
    op(move || hold::release(&d.loaded, &req)).await?;
    Ok(Json(Ended {
        id,
        status: "released".into(),
    }))
}

/// An exception: keep one item past its expiry, until a date.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionBody {
    #[schema(min_length = 1)]
    pub target: String,
    #[schema(min_length = 1)]
    pub key: String,
    /// Until when: a date or an RFC 3339 time, within `[exceptions] max_extension` of the
    /// item's expiry.
    #[schema(min_length = 1)]
    pub until: String,
    /// Who answers for it.
    #[schema(min_length = 1)]
    pub owner: String,
    #[schema(min_length = 1)]
    pub reason: String,
}

/// Grants (or renews) an exception; the token's name is recorded as who granted it.
#[utoipa::path(post, path = "/v1/exceptions", tag = "protections",
    request_body = ExceptionBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Granted", body = Object),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 404, description = "No such target or item", body = ErrorBody),
        (status = 409, description = "Refused: beyond the limits of [exceptions]", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 502, description = "The target could not be reached", body = ErrorBody)))]
pub async fn grant_exception(
    State(d): Shared,
    headers: HeaderMap,
    body: Result<Json<ExceptionBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let who = caller(&d, &headers, Role::Legal)?;
    let Json(b) = body?;
    let req = exception::ExceptionRequest {
        target: b.target,
        key: b.key,
        until: b.until,
        owner: b.owner,
        reason: b.reason,
        by: Some(who.name),
    };
    let granted = op(move || exception::grant(&d.loaded, &req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(&granted).unwrap_or_default()),
    ))
}

/// Every exception: active, lapsed, superseded, revoked.
#[utoipa::path(get, path = "/v1/exceptions", tag = "protections",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The exceptions", body = Vec<Object>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody)))]
pub async fn list_exceptions(
    State(d): Shared,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    caller(&d, &headers, Role::Legal)?;
    let list = op(move || exception::list(&d.loaded)).await?;
    Ok(Json(
        list.iter()
            .filter_map(|x| serde_json::to_value(x).ok())
            .collect(),
    ))
}

/// Revokes an exception.
#[utoipa::path(post, path = "/v1/exceptions/{id}/revoke", tag = "protections",
    params(("id" = String, Path, description = "The exception's id")),
    request_body = EndBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked", body = Ended),
        (status = 400, description = "A bad body or path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 404, description = "No such exception", body = ErrorBody),
        (status = 409, description = "Not active", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody)))]
pub async fn revoke_exception(
    State(d): Shared,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<EndBody>, JsonRejection>,
) -> ApiResult<Json<Ended>> {
    let who = caller(&d, &headers, Role::Legal)?;
    let Path(id) = id?;
    let Json(b) = body?;
    if b.reason.trim().is_empty() {
        return Err(ApiError::bad_request("reason is empty"));
    }
    let req = ops::Revocation {
        id: id.clone(),
        reason: b.reason,
        by: Some(who.name),
    };
    op(move || exception::revoke(&d.loaded, &req)).await?;
    Ok(Json(Ended {
        id,
        status: "revoked".into(),
    }))
}
