//! The operator's page: server-rendered HTML for incidents, their timelines, alerts and emails, behind a login
//! with an in-memory session, and forms (replay, pause, resume, approve, deny, log out) that each carry a CSRF
//! token; and the approval links, which need no login.
//!
//! - `session`: sessions, the login and logout, and the CSRF check every form passes.
//! - `pages`: the pages behind the login (incidents, one incident, one alert) and the error pages.
//! - `approvals`: deciding on approvals, from the page (CSRF) or from the email's link (its token).
//! - `html`: the document frame, its style sheet, badges and times.
//!
//! It reads through the store's views and changes things only through the admin API's own functions
//! ([`admin::replay_alert`], [`admin::pause_automation`], [`admin::resume_automation`], [`admin::decide`]), so the
//! page and the API cannot drift apart. It must not know SQL or how incidents are driven, and it sends no script:
//! every page is plain HTML with inline CSS, which the Content-Security-Policy below enforces.
//!
//! Invariant: every piece of text that comes from an alert, the store or the request reaches the page through
//! [`escape`] (or [`html::when`], which escapes too).

mod approvals;
mod html;
mod pages;
mod session;

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::{admin, AppState};
use crate::text::escape_html as escape;
use pages::{alert_page, error_page, incident_page, index, message_page};
use session::{login, login_page, logout, LoggedIn, Sessions};

const SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// What the page's handlers share: the service's state and the logged-in browsers.
struct Ui {
    app: Arc<AppState>,
    sessions: Sessions,
    /// The session cookie is `Secure` when people reach the service over HTTPS (`public_url`).
    secure_cookie: bool,
}

/// The page's routes, with their own state (the sessions) already applied; merged into the service's router.
pub fn routes(app: Arc<AppState>) -> Router<Arc<AppState>> {
    let secure_cookie =
        app.settings.public_url.as_deref().is_some_and(|url| url.starts_with("https://"));
    let ui = Arc::new(Ui { app, sessions: Sessions::default(), secure_cookie });
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/incidents/{id}", get(incident_page))
        .route("/alerts/{id}", get(alert_page))
        .route("/alerts/{id}/replay", post(replay))
        .route("/automation/pause", post(pause))
        .route("/automation/resume", post(resume))
        .route("/incidents/{id}/decide", post(approvals::decide_on_page))
        .route("/approvals/{token}", get(approvals::link_page).post(approvals::link_decide))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ui)
}

/// Every answer of the page: no script, no framing, no sniffing, and no caching of pages that hold a CSRF token.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

// ---------------------------------------------------------------------------------------------------------------
// Changing things: replay, pause, resume

#[derive(Deserialize)]
struct ReplayForm {
    csrf: Option<String>,
    /// A checkbox: present ("on") when ticked.
    dry_run: Option<String>,
}

async fn replay(
    State(ui): State<Arc<Ui>>,
    who: LoggedIn,
    Path(alert_id): Path<String>,
    form: Result<Form<ReplayForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(err) => return bad_form(err),
    };
    if let Err(refused) = who.check_csrf(form.csrf.as_deref()) {
        return refused.into_response();
    }
    match admin::replay_alert(&ui.app, alert_id, form.dry_run.is_some()).await {
        Ok(incident_id) => Redirect::to(&format!("/incidents/{incident_id}")).into_response(),
        Err(err) => error_page(&who, err),
    }
}

#[derive(Deserialize)]
struct PauseForm {
    csrf: Option<String>,
    reason: Option<String>,
    back: Option<String>,
}

async fn pause(
    State(ui): State<Arc<Ui>>,
    who: LoggedIn,
    form: Result<Form<PauseForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(err) => return bad_form(err),
    };
    if let Err(refused) = who.check_csrf(form.csrf.as_deref()) {
        return refused.into_response();
    }
    match admin::pause_automation(&ui.app, form.reason).await {
        Ok(_) => Redirect::to(local_path(form.back.as_deref())).into_response(),
        Err(err) => error_page(&who, err),
    }
}

#[derive(Deserialize)]
struct ResumeForm {
    csrf: Option<String>,
    back: Option<String>,
}

async fn resume(
    State(ui): State<Arc<Ui>>,
    who: LoggedIn,
    form: Result<Form<ResumeForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(err) => return bad_form(err),
    };
    if let Err(refused) = who.check_csrf(form.csrf.as_deref()) {
        return refused.into_response();
    }
    match admin::resume_automation(&ui.app).await {
        Ok(()) => Redirect::to(local_path(form.back.as_deref())).into_response(),
        Err(err) => error_page(&who, err),
    }
}

/// Where to go back to after a form: one of this page's own paths, never another site.
fn local_path(back: Option<&str>) -> &str {
    match back {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_?=&".contains(&b)) =>
        {
            path
        }
        _ => "/",
    }
}

fn bad_form(err: FormRejection) -> Response {
    message_page(
        StatusCode::BAD_REQUEST,
        "Bad form",
        &format!("the form could not be read: {}", err.body_text()),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_back() {
        let cases = [
            (None, "/"),
            (Some("/incidents/0193-ab"), "/incidents/0193-ab"),
            (Some("/?state=running"), "/?state=running"),
            (Some("//evil.example/"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/a\r\nSet-Cookie: x"), "/"),
        ];
        for (back, expected) in cases {
            assert_eq!(local_path(back), expected, "{back:?}");
        }
    }
}
