//! The admin API (bearer admin token): alerts, incidents, replay, approvals, the pause switch and silences.
//!
//! Replay, approvals and the pause switch are also offered to the operator's page (`ui`), which calls the same functions here
//! so that both surfaces behave alike.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::alert::{self, Format};
use crate::approval::{self, Verdict, Via};
use crate::auth;
use crate::domain::ServerName;
use crate::incident::{ActionKind, State as IncidentState};
use crate::store::{Decided, NewDecision, StoreError, Target};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/alerts", get(list_alerts))
        .route("/v1/alerts/{id}", get(show_alert))
        .route("/v1/alerts/{id}/replay", post(replay))
        .route("/v1/incidents", get(list_incidents))
        .route("/v1/incidents/{id}", get(show_incident))
        .route("/v1/incidents/{id}/approve", post(approve))
        .route("/v1/incidents/{id}/deny", post(deny))
        .route("/v1/automation/pause", post(pause))
        .route("/v1/automation/resume", post(resume))
        .route("/v1/silences", get(list_silences).post(add_silence))
        .route("/v1/silences/{id}", delete(delete_silence))
}

/// Lets a request through only with one of the configured admin tokens.
/// An address that sent too many wrong tokens is refused for a while (see [`super::guesses`]).
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let client = super::listener::peer(request.extensions()).map(|addr| addr.ip());
    let now = std::time::Instant::now();
    if let Some(Err(locked)) = client.map(|ip| state.guesses.check(ip, now)) {
        return super::too_many_guesses(locked, |status, message| {
            ApiError::new(status, "too_many_attempts", message).into_response()
        });
    }
    match auth::bearer_token(request.headers()) {
        Ok(Some(token)) if auth::token_matches(&state.settings.admin_tokens, token) => {
            next.run(request).await
        }
        Ok(None) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin token as Authorization: Bearer <token>",
        )
        .into_response(),
        _ => {
            if let Some(ip) = client {
                state.guesses.failed(ip, "admin API", now);
            }
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the admin token is not valid")
                .into_response()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<u32>,
    before: Option<String>,
    #[serde(default)]
    rejected: bool,
    state: Option<String>,
}

impl Page {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=1000) => Ok(n),
            Some(n) => {
                Err(ApiError::bad_request(format!("limit: {n} is out of range, use 1 to 1000")))
            }
        }
    }
}

fn query(
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Page, ApiError> {
    query.map(|Query(page)| page).map_err(|err| ApiError::bad_request(err.body_text()))
}

async fn list_alerts(
    State(state): State<Arc<AppState>>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let page = query(page)?;
    let limit = page.limit()?;
    if page.rejected {
        let rows = state.store.list_rejected(limit, page.before).await?;
        return Ok(Json(json!({ "rejected": rows })).into_response());
    }
    let rows = state.store.list_alerts(limit, page.before).await?;
    Ok(Json(json!({ "alerts": rows })).into_response())
}

async fn show_alert(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.store.alert(id).await?).into_response())
}

async fn list_incidents(
    State(state): State<Arc<AppState>>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let page = query(page)?;
    let limit = page.limit()?;
    let filter = match page.state.as_deref() {
        None | Some("") => None,
        Some(name) => Some(IncidentState::parse(name).ok_or_else(|| {
            let known: Vec<&str> = IncidentState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("state: {name:?} is not one of {}", known.join(", ")))
        })?),
    };
    let rows = state.store.list_incidents(filter, limit, page.before).await?;
    Ok(Json(json!({ "incidents": rows })).into_response())
}

async fn show_incident(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.store.incident(id).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    dry_run: bool,
}

async fn replay(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: ReplayBody = optional_json(&body)?;
    let incident_id = replay_alert(&state, id, body.dry_run).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "incident_id": incident_id }))).into_response())
}

/// Opens a new incident from a stored alert and wakes the engine for it; returns the new incident's id.
///
/// The alert is read again from the delivery's raw bytes through the same parser the intake route used, so a replay
/// sees exactly what the sender sent. The service's own dry-run setting always wins over the request's.
pub(super) async fn replay_alert(
    state: &AppState,
    alert_id: String,
    dry_run: bool,
) -> Result<String, ApiError> {
    let stored = state.store.alert(alert_id.clone()).await?;
    let unreadable = |why: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_alert",
            format!("alert {alert_id} cannot be replayed: {why}"),
        )
    };
    let format = Format::parse_name(&stored.summary.format)
        .ok_or_else(|| unreadable(format!("unknown format {:?}", stored.summary.format)))?;
    let alerts = alert::parse_with(format, &stored.raw_bytes, &state.settings.runbooks)
        .map_err(|err| unreadable(err.to_string()))?
        .alerts;
    let alert = usize::try_from(stored.position)
        .ok()
        .and_then(|position| alerts.into_iter().nth(position))
        .ok_or_else(|| {
            unreadable(format!(
                "its delivery no longer holds an alert at position {}",
                stored.position
            ))
        })?;
    let open_for = format!(
        "{} {} {}",
        alert.server,
        alert.health_set.as_str(),
        alert.monitor.as_ref().map_or("(no monitor)", |m| m.as_str())
    );
    let incident_id = match state
        .store
        .replay(alert_id.clone(), alert, dry_run || state.settings.executor.dry_run)
        .await
    {
        Ok(id) => id,
        Err(StoreError::Conflict(open)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("incident {open} is already open for {open_for}"),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    tracing::info!(alert = %alert_id, incident = %incident_id, "alert replayed");
    state.engine.wake(&incident_id);
    Ok(incident_id)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    reason: Option<String>,
}

async fn approve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    decide_incident(&state, id, Verdict::Approve, &body).await
}

async fn deny(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    decide_incident(&state, id, Verdict::Deny, &body).await
}

async fn decide_incident(
    state: &AppState,
    id: String,
    verdict: Verdict,
    body: &[u8],
) -> Result<Response, ApiError> {
    let body: DecisionBody = optional_json(body)?;
    let incident_id = decide(state, Target::Incident(id), verdict, Via::Api, body.reason).await?;
    Ok(Json(json!({ "incident_id": incident_id, "decision": verdict.outcome() })).into_response())
}

/// Records a person's decision on an approval and wakes the engine: the one function behind the admin API (and
/// the CLI), the operator's page and the email's link. `409` when nothing awaits a decision there; `400` for a
/// reason that cannot be kept. Returns the incident's id.
pub(super) async fn decide(
    state: &AppState,
    target: Target,
    verdict: Verdict,
    via: Via,
    reason: Option<String>,
) -> Result<String, ApiError> {
    approval::check_reason(reason.as_deref()).map_err(ApiError::bad_request)?;
    let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    let detail = approval::detail(via, reason.as_deref());
    let decision = NewDecision { outcome: verdict.outcome(), via: Some(via), reason, detail };
    match state.store.decide(target, decision).await? {
        Decided::Recorded { incident_id } => {
            tracing::warn!(incident = %incident_id, decision = %verdict.outcome(), via = via.as_str(), "approval decided");
            state.metrics.action(ActionKind::Approval, verdict.outcome());
            state.engine.wake(&incident_id);
            Ok(incident_id)
        }
        Decided::Nothing(why) => Err(ApiError::new(StatusCode::CONFLICT, "nothing_to_decide", why)),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    reason: Option<String>,
}

/// Reads an optional JSON body; an empty body counts as `{}`.
fn optional_json<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|err| ApiError::bad_request(format!("body: {err}")))
}

async fn pause(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: PauseBody = optional_json(&body)?;
    let reason = pause_automation(&state, body.reason).await?;
    Ok(Json(json!({"paused": true, "reason": reason})).into_response())
}

/// Turns the kill switch on; a blank reason gets a default one, which is returned.
pub(super) async fn pause_automation(
    state: &AppState,
    reason: Option<String>,
) -> Result<String, ApiError> {
    let reason = reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "paused by an operator".to_owned());
    state.store.set_paused(Some(reason.clone())).await?;
    state.engine.set_paused(true);
    tracing::warn!(%reason, "automation paused");
    Ok(reason)
}

async fn resume(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    resume_automation(&state).await?;
    Ok(Json(json!({"paused": false})).into_response())
}

pub(super) async fn resume_automation(state: &AppState) -> Result<(), ApiError> {
    state.store.set_paused(None).await?;
    state.engine.set_paused(false);
    tracing::warn!("automation resumed");
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    server: String,
    until: String,
    #[serde(default)]
    reason: String,
}

async fn list_silences(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "silences": state.store.silences().await? })).into_response())
}

async fn add_silence(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let silence: NewSilence = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("body: {err}")))?;
    let server = ServerName::parse(&silence.server)
        .map_err(|err| ApiError::bad_request(format!("server: {err}")))?;
    let until = chrono::DateTime::parse_from_rfc3339(&silence.until).map_err(|err| {
        ApiError::bad_request(format!("until: {:?} is not an RFC 3339 time ({err})", silence.until))
    })?;
    if until.timestamp_millis() <= crate::store::now_ms() {
        return Err(ApiError::bad_request("until: is in the past"));
    }
    let created = state
        .store
        .add_silence(server.to_string(), until.timestamp_millis(), silence.reason)
        .await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn delete_silence(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.store.delete_silence(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
