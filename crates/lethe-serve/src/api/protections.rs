//! Legal holds and approved exceptions (the legal role's).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use lethe_core::config::Role;
use lethe_ops::ops::{self, exception, hold};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schema::{self, TargetName, Text, Until, not_blank};
use super::{ApiError, ApiResult, ErrorBody, Shared, caller, op};

/// A hold: on a subject, on one item (`target` and `key`), or on a whole target. Its
/// document ([`schema::hold_body`]) says which fields go together; the library refuses the
/// rest with the same rules.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// A data subject: every item of theirs, now and later.
    pub subject: Option<String>,
    /// A target: all of it, or with `key` one item.
    pub target: Option<String>,
    /// An item's key, with `target`.
    pub key: Option<String>,
    /// The legal case the hold serves.
    pub case_id: String,
    pub reason: String,
}

impl utoipa::PartialSchema for HoldBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::hold_body()
    }
}

impl ToSchema for HoldBody {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((Text::name().into(), Text::schema()));
        schemas.push((TargetName::name().into(), TargetName::schema()));
    }
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
    /// Recorded in the trail.
    #[schema(value_type = Text)]
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndedStatus {
    /// A hold.
    Released,
    /// An exception.
    Revoked,
}

#[derive(Serialize, ToSchema)]
pub struct Ended {
    pub id: String,
    pub status: EndedStatus,
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
    end(
        d,
        headers,
        id,
        body,
        EndedStatus::Released,
        |loaded, id, reason, by| hold::release(loaded, &hold::HoldRelease { id, reason, by }),
    )
    .await
}

/// Ends a hold or an exception (`end`): the legal role's, with a reason, the token's name
/// recorded as who ended it.
async fn end(
    d: std::sync::Arc<crate::Daemon>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<EndBody>, JsonRejection>,
    status: EndedStatus,
    end: impl FnOnce(
        &lethe_ops::settings::Loaded,
        String,
        String,
        Option<String>,
    ) -> lethe_ops::Result<()>
    + Send
    + 'static,
) -> ApiResult<Json<Ended>> {
    let who = caller(&d, &headers, Role::Legal)?;
    let Path(id) = id?;
    let Json(b) = body?;
    if !not_blank(&b.reason) {
        return Err(ApiError::bad_request("reason is empty"));
    }
    let ended = id.clone();
    op(move || end(&d.loaded, ended, b.reason, Some(who.name))).await?;
    Ok(Json(Ended { id, status }))
}

/// An exception: keep one item past its expiry, until a date.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionBody {
    #[schema(value_type = TargetName)]
    pub target: String,
    /// The item's key, as the target names it.
    #[schema(min_length = 1)]
    pub key: String,
    #[schema(value_type = Until)]
    pub until: String,
    /// Who answers for it.
    #[schema(value_type = Text)]
    pub owner: String,
    #[schema(value_type = Text)]
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
        (status = 409, description = "Refused as the register stands: beyond [exceptions] max_extension or max_renewals, or the item's expiry cannot be read", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "`until` is not in the future", body = ErrorBody),
        (status = 502, description = "The target could not be reached", body = ErrorBody)))]
pub async fn grant_exception(
    State(d): Shared,
    headers: HeaderMap,
    body: Result<Json<ExceptionBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let who = caller(&d, &headers, Role::Legal)?;
    let Json(b) = body?;
    // The API takes RFC 3339 only (the command line also reads other spellings): what the
    // document says `until` is.
    if !schema::rfc3339_until(&b.until) {
        return Err(ApiError::bad_request(format!(
            "until {:?}: expected an RFC 3339 date (2025-01-31) or date-time (2025-01-31T12:00:00Z)",
            b.until
        )));
    }
    let until = exception::parse_until(&b.until)?;
    if until <= lethe_ops::util::now() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("until {until} is not in the future"),
        ));
    }
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
    end(
        d,
        headers,
        id,
        body,
        EndedStatus::Revoked,
        |loaded, id, reason, by| exception::revoke(loaded, &ops::Revocation { id, reason, by }),
    )
    .await
}
