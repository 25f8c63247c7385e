//! The HTTP API, under `/v1`, JSON in and out, in the shapes of the commands' `--json`.
//! Every error is a JSON body `{"error": "..."}` naming what is wrong; bad input is a 4xx,
//! never a 500. `/healthz`, `/readyz` and `/metrics` need no token; everything else does
//! (see [`auth`]), the dashboard at `/` a viewer's.

mod audit;
pub mod auth;
mod protections;
mod requests;
mod runs;
mod schema;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lethe_core::config::Role;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Daemon;

/// The shared state of every handler.
pub type Shared = State<Arc<Daemon>>;

/// Every error's body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, and where.
    pub error: String,
}

/// An error answer: a status and a message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"lethe\""),
            );
        }
        r
    }
}

impl From<lethe_ops::Error> for ApiError {
    fn from(e: lethe_ops::Error) -> ApiError {
        use lethe_ops::Error as E;
        let status = match &e {
            E::Usage(_) | E::Config(_) => StatusCode::BAD_REQUEST,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Conflict(_) => StatusCode::CONFLICT,
            // A store that failed is not the caller's fault, nor the daemon's.
            E::TargetFailed { .. } => StatusCode::BAD_GATEWAY,
            E::TrailBroken(_) | E::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, format!("{e:#}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = match &r {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, format!("the request body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("the query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::bad_request(format!("the path: {}", r.body_text()))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The caller, when its token allows `needed`.
pub fn caller(d: &Daemon, headers: &HeaderMap, needed: Role) -> ApiResult<auth::Caller> {
    auth::require(&d.tokens, headers, needed)
}

/// Runs an operation of the library on a blocking thread, its error as an answer.
pub async fn op<T: Send + 'static>(
    f: impl FnOnce() -> lethe_ops::Result<T> + Send + 'static,
) -> ApiResult<T> {
    Ok(crate::blocking(f).await?)
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lethe",
        description = "Retention and erasure engine: scheduled sweeps, erasure and access requests, legal holds, exceptions and the audit trail. Every /v1 endpoint, and the dashboard at /, needs a bearer token (roles: viewer, operator, legal, admin); /healthz, /readyz and /metrics do not."
    ),
    modifiers(&Bearer),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// Every `/v1` operation reads or writes the state: one that fails (or a trail that does not
/// verify where it must be extended) is a 500, documented as such.
fn document_server_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.responses.responses.entry("500".into()).or_insert_with(|| {
                ResponseBuilder::new()
                    .description(
                        "The state could not be read or written, or the trail does not verify where it must be extended (see the daemon's log)",
                    )
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into()
            });
        }
    }
}

/// What a client does next with what an answer returns: OpenAPI links from each creation to
/// the operations that take its id.
fn document_links(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, link::LinkBuilder};
    let links: [(&str, &str, &str, &str, &str, &str); 6] = [
        // (path of the creation, its status, link name, operation, parameter, its value)
        (
            "/v1/holds",
            "201",
            "release",
            "release_hold",
            "id",
            "$response.body#/id",
        ),
        (
            "/v1/exceptions",
            "201",
            "revoke",
            "revoke_exception",
            "id",
            "$response.body#/id",
        ),
        (
            "/v1/erasure-requests",
            "200",
            "status",
            "erasure_status",
            "id",
            "$response.body#/request_id",
        ),
        (
            "/v1/erasure-requests",
            "200",
            "receipt",
            "erasure_receipt",
            "id",
            "$response.body#/request_id",
        ),
        (
            "/v1/sweeps",
            "202",
            "run",
            "one_run",
            "run_id",
            "$response.body#/run_id",
        ),
        (
            "/v1/erasure-requests",
            "200",
            "run",
            "one_run",
            "run_id",
            "$response.body#/run_id",
        ),
    ];
    for (path, status, name, operation, param, value) in links {
        let response = doc
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.responses.responses.get_mut(status));
        // Each is there (a unit test says so).
        if let Some(RefOr::T(r)) = response {
            r.links.insert(
                name.into(),
                LinkBuilder::new()
                    .operation_id(operation)
                    .parameter(param, value)
                    .build()
                    .into(),
            );
        }
    }
}

/// The routes, and the OpenAPI document made from them for a daemon with these targets.
fn routes(target_names: &[String]) -> (axum::Router<Arc<Daemon>>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(dashboard))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(runs::targets))
        .routes(routes!(runs::list_runs))
        .routes(routes!(runs::one_run))
        .routes(routes!(runs::start_sweep))
        .routes(routes!(requests::file_erasure, requests::list_erasures))
        .routes(routes!(requests::erasure_status))
        .routes(routes!(requests::erasure_receipt))
        .routes(routes!(requests::access))
        .routes(routes!(protections::place_hold, protections::list_holds))
        .routes(routes!(protections::release_hold))
        .routes(routes!(
            protections::grant_exception,
            protections::list_exceptions
        ))
        .routes(routes!(protections::revoke_exception))
        .routes(routes!(audit::entries))
        .routes(routes!(audit::verify))
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    document_server_errors(&mut doc);
    document_links(&mut doc);
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .insert("TargetName".into(), schema::target_names(target_names));
    (router, doc)
}

/// The daemon's routes, with the OpenAPI document made from them at `/openapi.json`. The
/// document names this daemon's targets (`TargetName`): a request for another is malformed.
pub fn router(d: Arc<Daemon>) -> axum::Router {
    let target_names: Vec<String> = d
        .loaded
        .config
        .targets
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let (router, doc) = routes(&target_names);
    let doc = Arc::new(doc);
    router
        .with_state(d)
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (the API is under /v1; see /openapi.json)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method (see /openapi.json)",
    )
}

/// What the dashboard page may use: its inline styles, its `data:` favicon, nothing else
/// (no script, no request; inline SVG needs nothing).
const DASHBOARD_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard: the compliance report of the last 30 days as one page (KPIs, charts,
/// tables, registers), rendered after each run and at least hourly.
#[utoipa::path(get, path = "/", tag = "dashboard",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The dashboard page", body = String, content_type = "text/html"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The token's role does not allow it", body = ErrorBody),
        (status = 500, description = "The state could not be read to render the page (see the daemon's log)", body = ErrorBody)))]
async fn dashboard(State(d): Shared, headers: HeaderMap) -> ApiResult<Response> {
    caller(&d, &headers, Role::Viewer)?;
    let page = crate::dashboard::current(&d).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        page.as_str().to_owned(),
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[derive(Serialize, ToSchema)]
struct Ready {
    ready: bool,
    /// The state answered this daemon's last heartbeat.
    state_reachable: bool,
    /// The schedules are loaded and the fires missed while no daemon ran dealt with.
    schedules_loaded: bool,
    schedules: usize,
}

/// The state is reachable and the schedules are loaded.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready: the state cannot be reached, or the schedules are not loaded yet", body = Ready)))]
async fn readyz(State(d): Shared) -> (StatusCode, Json<Ready>) {
    let state_reachable = d.state_ok.load(Ordering::SeqCst);
    let schedules_loaded = d.ready.load(Ordering::SeqCst);
    let ready = state_reachable && schedules_loaded && !d.stopping();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Ready {
            ready,
            state_reachable,
            schedules_loaded,
            schedules: d.schedules.len(),
        }),
    )
}

/// The metrics, in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
async fn metrics(State(d): Shared) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        d.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> serde_json::Value {
        let (_, doc) = routes(&["logs".to_string(), "files".to_string()]);
        serde_json::to_value(&doc).unwrap_or_default()
    }

    #[test]
    fn every_creation_links_to_what_takes_its_id() {
        let doc = document();
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(_, item)| item.as_object().into_iter().flatten())
            .filter_map(|(_, op)| op["operationId"].as_str())
            .collect();
        for (path, status, name) in [
            ("/v1/holds", "201", "release"),
            ("/v1/exceptions", "201", "revoke"),
            ("/v1/erasure-requests", "200", "status"),
            ("/v1/erasure-requests", "200", "receipt"),
            ("/v1/erasure-requests", "200", "run"),
            ("/v1/sweeps", "202", "run"),
        ] {
            let link = &doc["paths"][path]["post"]["responses"][status]["links"][name];
            let op = link["operationId"].as_str();
            assert!(
                op.is_some_and(|op| ids.contains(&op)),
                "POST {path} {status} has no link {name} to an operation: {link}"
            );
        }
    }

    #[test]
    fn the_document_names_the_targets_and_every_v1_server_error() {
        let doc = document();
        assert_eq!(
            doc["components"]["schemas"]["TargetName"]["enum"],
            serde_json::json!(["logs", "files"])
        );
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                if path.starts_with("/v1/") {
                    assert!(
                        op["responses"]["500"].is_object(),
                        "{method} {path} does not document 500"
                    );
                }
            }
        }
    }
}
