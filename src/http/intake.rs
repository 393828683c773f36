//! The intake routes: authenticate the raw bytes, parse them, commit them, answer `202` only after the commit.
//! Each answer is counted, and timed from the request's start, in [`crate::metrics`].

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{ApiError, AppState};
use crate::alert::{self, Format, ParseError};
use crate::auth;
use crate::store::Disposition;
use crate::store::NewDelivery;

pub async fn native(state: State<Arc<AppState>>, request: Request) -> Response {
    timed(&state, Format::Native, request).await
}

pub async fn scom(state: State<Arc<AppState>>, request: Request) -> Response {
    timed(&state, Format::Scom, request).await
}

pub async fn alertmanager(state: State<Arc<AppState>>, request: Request) -> Response {
    timed(&state, Format::Alertmanager, request).await
}

/// Answers one intake request, and records how long that took whatever the answer.
async fn timed(state: &AppState, format: Format, request: Request) -> Response {
    let started = Instant::now();
    let response = intake(state, format, request).await.unwrap_or_else(IntoResponse::into_response);
    state.metrics.intake_duration(format, started.elapsed());
    response
}

async fn intake(state: &AppState, format: Format, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, state.settings.max_body_bytes).await?;
    let now = chrono::Utc::now().timestamp();
    let who =
        auth::authenticate(&state.settings.senders, &parts.headers, &body, now).map_err(|err| {
            tracing::warn!(reason = err.reason(), route = format.as_str(), "delivery refused");
            state.metrics.auth_failure(format, err);
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", err.to_string())
        })?;
    let delivery = NewDelivery {
        sender: who.sender.to_owned(),
        format,
        webhook_id: who.delivery_id.map(str::to_owned),
        body: body.clone(),
    };
    if !is_json(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the alert as Content-Type: application/json",
        ));
    }
    let parsed = match alert::parse_with(format, &body, &state.settings.runbooks) {
        Ok(parsed) => parsed,
        Err(ParseError::Malformed(message)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", message))
        }
        Err(err @ ParseError::Invalid { .. }) => {
            let message = err.to_string();
            let id = state.store.reject(delivery, message.clone()).await?;
            tracing::warn!(delivery = %id, error = %message, "invalid alert kept as a rejected delivery");
            state.metrics.rejected(format, who.sender);
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_alert", message));
        }
    };
    if parsed.truncated_alerts > 0 {
        tracing::warn!(
            sender = who.sender,
            truncated = parsed.truncated_alerts,
            "the sender left alerts out of this notification (Alertmanager max_alerts); set max_alerts: 0 to receive them all"
        );
    }
    let answer = state
        .store
        .accept(
            delivery,
            parsed.alerts,
            state.settings.executor.dry_run,
            state.settings.duplicate_window,
        )
        .await?;
    for item in &answer.alerts {
        state.metrics.delivery(format, who.sender, item.disposition);
    }
    // A new or attached alert makes sure its incident is driven; a resolved notice also ends a wait under way.
    for item in &answer.alerts {
        match (item.disposition, &item.incident_id) {
            (Disposition::Resolved, Some(incident)) => state.engine.resolved(incident),
            (Disposition::NewIncident | Disposition::Attached, Some(incident)) => {
                state.engine.wake(incident)
            }
            _ => {}
        }
    }
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Reads the whole body, refusing it (413) as soon as it passes the limit.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => Err(ApiError::bad_request(format!("cannot read the body: {err}"))),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
