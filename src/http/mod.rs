//! The HTTP interface: routes, request limits, and the one place where errors become status codes.
//!
//! This is the only module that knows HTTP. Handlers authenticate, hand bytes to the parsers and the store, and
//! shape answers; they make no decisions of their own about incidents.

mod admin;
pub mod guesses;
mod intake;
pub mod listener;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::engine::EngineHandle;
use crate::metrics::{self, Metrics, StoreGauges};
use crate::store::{Store, StoreError};

/// What every handler shares.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    /// Wrong admin tokens per client address, for the login and the admin API.
    pub guesses: guesses::Guesses,
}

pub fn router(state: Arc<AppState>) -> Router {
    let admin = admin::routes()
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admin::require_token));
    Router::new()
        .route("/v1/alerts", post(intake::native))
        .route("/v1/alerts/scom", post(intake::scom))
        .route("/v1/alerts/alertmanager", post(intake::alertmanager))
        .route("/healthz", get(|| async { Json(json!({"status": "alive"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .merge(admin)
        .merge(ui::routes(state.clone()))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn readyz(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // A write as large as the largest delivery must commit now; while commits fail (a full disk, an I/O error), the
    // service is not ready, and it is again as soon as they succeed.
    if let Err(err) = state.store.check_writable(state.settings.max_body_bytes).await {
        tracing::error!(error = %err, "readiness check: the store cannot commit");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_not_writable",
            "the store cannot commit a write (the log says why)",
        ));
    }
    if !state.engine.is_running() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_stopped",
            "the runbook engine is not running",
        ));
    }
    let paused = state.store.paused().await?;
    Ok(Json(
        json!({"status": "ready", "store": "writable", "engine": "running", "paused": paused.is_some(), "pause_reason": paused}),
    ))
}

/// The metrics in the OpenMetrics text format; the store's gauges are read now.
async fn prometheus(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    let gauges = StoreGauges {
        open_incidents: state.store.open_incidents().await?,
        automation_paused: state.store.paused().await?.is_some(),
    };
    Ok(([(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.metrics.encode(gauges))
        .into_response())
}

/// The answer to an address that guessed wrong too often: `429` with `Retry-After`, in the shape `shape` makes of
/// the message (JSON for the API, a page for a browser).
fn too_many_guesses(
    locked: guesses::Locked,
    shape: impl FnOnce(StatusCode, &str) -> Response,
) -> Response {
    let seconds = locked.retry_after.as_secs().max(1);
    let mut response = shape(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "too many wrong admin tokens from this address; try again in {}",
            humantime::format_duration(Duration::from_secs(seconds))
        ),
    );
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
    response
}

/// An error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}})))
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            err @ StoreError::Damaged { .. } => {
                tracing::error!(error = %err, "store damaged");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable; retry later",
                )
            }
            StoreError::Unavailable(detail) => {
                tracing::error!(error = %detail, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable; retry later",
                )
            }
            StoreError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} does not exist"))
            }
            StoreError::Conflict(what) => ApiError::new(StatusCode::CONFLICT, "conflict", what),
            StoreError::LostClaim(what) => ApiError::new(StatusCode::CONFLICT, "conflict", what),
            err @ (StoreError::Sql(_) | StoreError::Postgres(_)) => {
                tracing::error!(error = %err, "store error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}
