//! The operator's page: server-rendered HTML for incidents, their timelines, alerts and emails, behind a login
//! with an in-memory session, and forms (replay, pause, resume, log out) that each carry a CSRF token.
//!
//! It reads through the store's views and changes things only through the admin API's own functions
//! ([`admin::replay_alert`], [`admin::pause_automation`], [`admin::resume_automation`]), so the page and the API
//! cannot drift apart. It must not know SQL or how incidents are driven, and it sends no script: every page is plain
//! HTML with inline CSS, which the Content-Security-Policy below enforces.
//!
//! Invariant: every piece of text that comes from an alert, the store or the request reaches the page through
//! [`escape`] (or [`when`], which escapes too).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{admin, ApiError, AppState};
use crate::auth;
use crate::incident::{Outcome, Sense, State as IncidentState};
use crate::store::{AlertDetail, AlertSummary, IncidentView, NotificationView, StepView};
use crate::text::escape_html as escape;

/// The session cookie's name.
const COOKIE: &str = "hsr_session";
/// How long a login lasts; there is no sliding renewal, so a stolen cookie is worth at most this long.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// How many incidents the front page lists.
const LIST_LIMIT: u32 = 100;

const SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// What the page's handlers share: the service's state and the logged-in browsers.
struct Ui {
    app: Arc<AppState>,
    sessions: Sessions,
    /// The session cookie is `Secure` when people reach the service over HTTPS (`public_url`).
    secure_cookie: bool,
}

/// The page's routes, with their own state (the sessions) already applied; merged into the service's router.
pub fn routes(app: Arc<AppState>) -> Router<Arc<AppState>> {
    let secure_cookie = app.settings.public_url.as_deref().is_some_and(|url| url.starts_with("https://"));
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
// Sessions and CSRF

/// Logged-in browsers, in memory only: a restart logs everyone out, which errs on the safe side.
///
/// Sessions are keyed by the SHA-256 of their id, so the map's lookup time says nothing useful about a guessed id.
/// A std `Mutex` is enough: it is held for a map operation and never across an `.await`.
#[derive(Default)]
struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

#[derive(Clone)]
struct Session {
    csrf: String,
    expires_at: Instant,
}

impl Sessions {
    /// Starts a session and returns its id (for the cookie); expired sessions are dropped on the way.
    fn create(&self) -> String {
        let id = random_token();
        let session = Session { csrf: random_token(), expires_at: Instant::now() + SESSION_LIFETIME };
        let mut sessions = self.by_hash.lock().expect("the session map is never poisoned");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires_at > now);
        sessions.insert(hash(&id), session);
        id
    }

    fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.by_hash.lock().expect("the session map is never poisoned");
        let key = hash(id);
        match sessions.get(&key) {
            Some(session) if session.expires_at > Instant::now() => Some(session.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    fn remove(&self, id: &str) {
        self.by_hash.lock().expect("the session map is never poisoned").remove(&hash(id));
    }
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// A request from a logged-in browser. Without a valid session the request is answered with a redirect to the
/// login page, and nothing else runs.
struct LoggedIn {
    id: String,
    csrf: String,
}

impl LoggedIn {
    /// Lets a form through only with this session's CSRF token, compared in constant time.
    fn check_csrf(&self, given: Option<&str>) -> Result<(), CsrfRefused> {
        match given {
            Some(given) if bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes())) => Ok(()),
            _ => {
                tracing::warn!("operator page: form refused, missing or wrong CSRF token");
                Err(CsrfRefused)
            }
        }
    }
}

/// A form that changed nothing because its CSRF token was missing or wrong: `403`.
#[derive(Debug)]
struct CsrfRefused;

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        message_page(StatusCode::FORBIDDEN, "Refused", "the form's security token is missing or stale; reload the page and try again", None)
    }
}

impl FromRequestParts<Arc<Ui>> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Arc<Ui>) -> Result<Self, Response> {
        let id = session_cookie(&parts.headers).ok_or_else(to_login)?;
        let session = ui.sessions.get(id).ok_or_else(to_login)?;
        Ok(LoggedIn { id: id.to_owned(), csrf: session.csrf })
    }
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// The session id from the `Cookie` header(s), if one is there.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

fn session_cookie_header(id: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", SESSION_LIFETIME.as_secs()))
        .expect("a hex session id makes a valid header")
}

// ---------------------------------------------------------------------------------------------------------------
// Login and logout

#[derive(Deserialize)]
struct LoginForm {
    token: Option<String>,
}

async fn login_page(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    if session_cookie(&headers).and_then(|id| ui.sessions.get(id)).is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(StatusCode::OK, None)
}

async fn login(State(ui): State<Arc<Ui>>, extensions: axum::http::Extensions, form: Result<Form<LoginForm>, FormRejection>) -> Response {
    let client = super::listener::peer(&extensions).map(|addr| addr.ip());
    let now = Instant::now();
    if let Some(Err(locked)) = client.map(|ip| ui.app.guesses.check(ip, now)) {
        return super::too_many_guesses(locked, |status, message| login_form(status, Some(message)));
    }
    let token = form.ok().and_then(|Form(form)| form.token).unwrap_or_default();
    if token.is_empty() || !auth::token_matches(&ui.app.settings.admin_tokens, &token) {
        match client {
            Some(ip) => ui.app.guesses.failed(ip, "operator page login", now),
            None => tracing::warn!("operator page: login refused"),
        }
        return login_form(StatusCode::UNAUTHORIZED, Some("that is not an admin token"));
    }
    let id = ui.sessions.create();
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie_header(&id, ui.secure_cookie));
    response
}

fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    let error = error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e))).unwrap_or_default();
    let body = format!(
        r#"<main class="narrow">
<h1>healthset-responder</h1>
<p>Sign in with an admin token (the one in <code>data/credentials.toml</code>, or one of <code>[admin] tokens</code>).</p>
{error}
<form method="post" action="/login" class="stack">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
</main>"#
    );
    (status, Html(document("Sign in", false, "", &body))).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(State(ui): State<Arc<Ui>>, who: LoggedIn, form: Result<Form<CsrfForm>, FormRejection>) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(err) => return bad_form(err),
    };
    if let Err(refused) = who.check_csrf(form.csrf.as_deref()) {
        return refused.into_response();
    }
    ui.sessions.remove(&who.id);
    let mut response = Redirect::to("/login").into_response();
    let cleared = if ui.secure_cookie {
        "hsr_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
    } else {
        "hsr_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    };
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static(cleared));
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

async fn replay(State(ui): State<Arc<Ui>>, who: LoggedIn, Path(alert_id): Path<String>, form: Result<Form<ReplayForm>, FormRejection>) -> Response {
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

async fn pause(State(ui): State<Arc<Ui>>, who: LoggedIn, form: Result<Form<PauseForm>, FormRejection>) -> Response {
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

async fn resume(State(ui): State<Arc<Ui>>, who: LoggedIn, form: Result<Form<ResumeForm>, FormRejection>) -> Response {
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
        Some(path) if path.starts_with('/') && !path.starts_with("//") && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_?=&".contains(&b)) => path,
        _ => "/",
    }
}

fn bad_form(err: FormRejection) -> Response {
    message_page(StatusCode::BAD_REQUEST, "Bad form", &format!("the form could not be read: {}", err.body_text()), None)
}

// ---------------------------------------------------------------------------------------------------------------
// Pages

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
}

async fn index(State(ui): State<Arc<Ui>>, who: LoggedIn, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let wanted = query.ok().and_then(|Query(q)| q.state).filter(|s| !s.is_empty());
    let filter = match wanted.as_deref().map(|name| IncidentState::parse(name).ok_or(name)) {
        None => None,
        Some(Ok(state)) => Some(state),
        Some(Err(name)) => return error_page(&who, ApiError::bad_request(format!("state: {name:?} is not an incident state"))),
    };
    let (incidents, paused) = match tokio::try_join!(ui.app.store.list_incidents(filter, LIST_LIMIT, None), ui.app.store.paused()) {
        Ok(read) => read,
        Err(err) => return error_page(&who, err.into()),
    };
    let refresh = incidents.iter().any(|incident| !is_final(&incident.state));
    let back = match &filter {
        Some(state) => format!("/?state={state}"),
        None => "/".to_owned(),
    };
    let mut body = String::new();
    body.push_str("<main>\n<h1>Incidents</h1>\n<nav class=\"filters\" aria-label=\"filter by state\">");
    let _ = write!(body, r#"<a href="/"{}>all</a>"#, if filter.is_none() { r#" aria-current="page""# } else { "" });
    for state in IncidentState::ALL {
        let current = if filter == Some(*state) { r#" aria-current="page""# } else { "" };
        let _ = write!(body, r#" <a href="/?state={state}"{current}>{state}</a>"#);
    }
    body.push_str("</nav>\n");
    if incidents.is_empty() {
        body.push_str("<p class=\"empty\">No incidents yet. They appear here when an alerting system posts an alert.</p>\n");
    } else {
        body.push_str(
            "<table class=\"list\">\n<thead><tr><th>state</th><th>opened</th><th>server</th><th>monitor</th><th>reason</th><th>updated</th></tr></thead>\n<tbody>\n",
        );
        for incident in &incidents {
            let link = format!("/incidents/{}", escape(&incident.id));
            let _ = writeln!(
                body,
                r#"<tr><td data-label="state"><span><a href="{link}">{}</a>{}</span></td><td data-label="opened"><a href="{link}">{}</a></td><td data-label="server">{}</td><td data-label="monitor">{}</td><td data-label="reason">{}</td><td data-label="updated">{}</td></tr>"#,
                state_badge(&incident.state),
                if incident.dry_run { r#" <span class="tag">dry run</span>"# } else { "" },
                when(&incident.created_at),
                escape(&incident.server),
                escape(&monitor_name(incident)),
                escape(incident.reason.as_deref().unwrap_or("")),
                when(&incident.updated_at),
            );
        }
        body.push_str("</tbody>\n</table>\n");
    }
    body.push_str("</main>\n");
    let header = header_bar(&who, paused.as_deref(), &back);
    Html(document("Incidents", refresh, &header, &body)).into_response()
}

async fn incident_page(State(ui): State<Arc<Ui>>, who: LoggedIn, Path(id): Path<String>) -> Response {
    let store = &ui.app.store;
    let (incident, alerts, paused) = match tokio::try_join!(store.incident(id.clone()), store.incident_alerts(id.clone()), store.paused()) {
        Ok(read) => read,
        Err(err) => return error_page(&who, err.into()),
    };
    let back = format!("/incidents/{}", incident.id);
    let header = header_bar(&who, paused.as_deref(), &back);
    let title = format!("{} · {} on {}", incident.state, monitor_name(&incident), incident.server);
    let body = incident_body(&incident, &alerts, &who, ui.app.settings.executor.dry_run);
    Html(document(&title, !is_final(&incident.state), &header, &body)).into_response()
}

fn incident_body(incident: &IncidentView, alerts: &[AlertSummary], who: &LoggedIn, service_dry_run: bool) -> String {
    let mut body = String::from("<main>\n");
    let _ = writeln!(
        body,
        r#"<h1>{} {} on {}</h1>"#,
        state_badge(&incident.state),
        escape(&format!("{} {}", incident.health_set, monitor_name(incident))),
        escape(&incident.server)
    );
    if let Some(reason) = &incident.reason {
        let _ = writeln!(body, r#"<p class="reason">{}</p>"#, escape(reason));
    } else if !is_final(&incident.state) {
        body.push_str("<p class=\"reason\">In progress; this page refreshes itself every two seconds.</p>\n");
    }
    body.push_str("<dl class=\"facts\">\n");
    let mut fact = |name: &str, value: String| {
        let _ = writeln!(body, "<dt>{name}</dt><dd>{value}</dd>");
    };
    fact("incident", format!("<code>{}</code>", escape(&incident.id)));
    fact("server", escape(&incident.server));
    if let Some(hint) = &incident.mailbox_hint {
        fact("_Mbx: server", escape(hint));
    }
    fact("health set", escape(&incident.health_set));
    fact("monitor", escape(&monitor_name(incident)));
    fact("opened", when(&incident.created_at));
    fact("updated", when(&incident.updated_at));
    if incident.dry_run {
        fact("mode", "dry run: mutating steps were journaled, not run".to_owned());
    }
    if let Some(alert) = &incident.replay_of {
        fact("replay of", format!(r#"alert <a href="/alerts/{0}"><code>{0}</code></a>"#, escape(alert)));
    }
    if let Some(at) = &incident.resolved_notice_at {
        fact("resolved notice", when(at));
    }
    body.push_str("</dl>\n");

    body.push_str("<h2>Timeline</h2>\n");
    body.push_str(&timeline(incident.steps.as_deref().unwrap_or_default()));

    body.push_str("<h2>Alerts</h2>\n");
    if alerts.is_empty() {
        body.push_str("<p class=\"empty\">No alerts are linked to this incident.</p>\n");
    } else {
        body.push_str(
            "<table class=\"list\">\n<thead><tr><th>received</th><th>format</th><th>status</th><th>disposition</th><th>message</th></tr></thead>\n<tbody>\n",
        );
        for alert in alerts {
            let _ = writeln!(
                body,
                r#"<tr><td data-label="received"><a href="/alerts/{}">{}</a></td><td data-label="format">{}</td><td data-label="status">{}</td><td data-label="disposition">{}</td><td data-label="message"><span class="message">{}</span></td></tr>"#,
                escape(&alert.id),
                when(&alert.received_at),
                escape(&alert.format),
                escape(&alert.status),
                escape(&alert.disposition),
                escape(&alert.message),
            );
        }
        body.push_str("</tbody>\n</table>\n");
    }

    body.push_str("<h2>Emails</h2>\n");
    body.push_str(&emails(incident.notifications.as_deref().unwrap_or_default()));

    if let Some(first) = alerts.first() {
        body.push_str("<h2>Replay</h2>\n");
        body.push_str(&replay_form(&first.id, who, service_dry_run));
    }
    body.push_str("</main>\n");
    body
}

fn timeline(steps: &[StepView]) -> String {
    if steps.is_empty() {
        return "<p class=\"empty\">No step has run yet.</p>\n".to_owned();
    }
    let mut html = String::from(
        "<table class=\"list timeline\">\n<thead><tr><th>#</th><th>started</th><th>finished</th><th>server</th><th>action</th><th>outcome</th><th>detail and command</th></tr></thead>\n<tbody>\n",
    );
    for step in steps {
        let outcome = step.outcome.as_deref().map(outcome_badge).unwrap_or_else(|| r#"<span class="badge pending">running</span>"#.to_owned());
        let _ = writeln!(
            html,
            r##"<tr class="step"><td data-label="#">{}</td><td data-label="started">{}</td><td data-label="finished">{}</td><td data-label="server">{}</td><td data-label="action" class="action">{}</td><td data-label="outcome">{outcome}</td><td data-label="detail"><div><span class="message">{}</span><code class="command">{}</code></div></td></tr>"##,
            step.seq,
            clock(&step.started_at),
            step.finished_at.as_deref().map(clock).unwrap_or_default(),
            escape(&step.server),
            escape(&step.action),
            escape(&step.detail),
            escape(&step.command),
        );
    }
    html.push_str("</tbody>\n</table>\n");
    html
}

fn emails(notifications: &[NotificationView]) -> String {
    if notifications.is_empty() {
        return "<p class=\"empty\">No email for this incident.</p>\n".to_owned();
    }
    let mut html = String::from(
        "<table class=\"list\">\n<thead><tr><th>kind</th><th>to</th><th>status</th><th>attempts</th><th>subject</th><th>queued</th><th>sent</th><th>last error</th></tr></thead>\n<tbody>\n",
    );
    for email in notifications {
        let _ = writeln!(
            html,
            r#"<tr><td data-label="kind">{}</td><td data-label="to">{}</td><td data-label="status">{}</td><td data-label="attempts">{}</td><td data-label="subject">{}</td><td data-label="queued">{}</td><td data-label="sent">{}</td><td data-label="last error">{}</td></tr>"#,
            escape(&email.kind),
            escape(&email.to.join(", ")),
            email_badge(&email.status),
            email.attempts,
            escape(&email.subject),
            when(&email.created_at),
            email.sent_at.as_deref().map(when).unwrap_or_default(),
            escape(email.last_error.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</tbody>\n</table>\n");
    html
}

fn replay_form(alert_id: &str, who: &LoggedIn, service_dry_run: bool) -> String {
    let note = if service_dry_run {
        "<p class=\"note\">The service runs in dry-run mode: every replay is a dry run.</p>\n"
    } else {
        "<p class=\"note\">Opens a new incident from the stored alert, as if it had just arrived. Refused while an incident is open for the same server, health set and monitor.</p>\n"
    };
    format!(
        r#"{note}<form method="post" action="/alerts/{id}/replay" class="inline">
<input type="hidden" name="csrf" value="{csrf}">
<label><input type="checkbox" name="dry_run"> dry run (journal mutating steps, run none)</label>
<button type="submit" name="replay">Replay alert</button>
</form>
"#,
        id = escape(alert_id),
        csrf = escape(&who.csrf),
    )
}

async fn alert_page(State(ui): State<Arc<Ui>>, who: LoggedIn, Path(id): Path<String>) -> Response {
    let (alert, paused) = match tokio::try_join!(ui.app.store.alert(id), ui.app.store.paused()) {
        Ok(read) => read,
        Err(err) => return error_page(&who, err.into()),
    };
    let back = format!("/alerts/{}", alert.summary.id);
    let header = header_bar(&who, paused.as_deref(), &back);
    let body = alert_body(&alert, &who, ui.app.settings.executor.dry_run);
    Html(document(&format!("Alert on {}", alert.summary.server), false, &header, &body)).into_response()
}

fn alert_body(alert: &AlertDetail, who: &LoggedIn, service_dry_run: bool) -> String {
    let summary = &alert.summary;
    let mut body = String::from("<main>\n");
    let _ = writeln!(
        body,
        "<h1>Alert: {} {} on {}</h1>",
        escape(&summary.health_set),
        escape(summary.monitor.as_deref().unwrap_or("(no monitor)")),
        escape(&summary.server)
    );
    body.push_str("<dl class=\"facts\">\n");
    let mut fact = |name: &str, value: String| {
        let _ = writeln!(body, "<dt>{name}</dt><dd>{value}</dd>");
    };
    fact("alert", format!("<code>{}</code>", escape(&summary.id)));
    fact("received", when(&summary.received_at));
    fact("sender", escape(&summary.sender));
    fact("format", escape(&summary.format));
    fact("status", escape(&summary.status));
    fact("disposition", escape(&summary.disposition));
    if let Some(raised) = &summary.raised_at {
        fact("raised", when(raised));
    }
    if let Some(hint) = &summary.mailbox_hint {
        fact("_Mbx: server", escape(hint));
    }
    let incidents: Vec<String> = alert.incident_ids.iter().map(|id| format!(r#"<a href="/incidents/{0}"><code>{0}</code></a>"#, escape(id))).collect();
    fact("incidents", if incidents.is_empty() { "none".to_owned() } else { incidents.join("<br>") });
    fact("delivery", format!("<code>{}</code> (alert {} of the delivery)", escape(&alert.delivery_id), alert.position + 1));
    if let Some(webhook_id) = &alert.webhook_id {
        fact("webhook-id", format!("<code>{}</code>", escape(webhook_id)));
    }
    body.push_str("</dl>\n");
    let _ = writeln!(body, "<h2>Message</h2>\n<pre class=\"raw\">{}</pre>", escape(&summary.message));
    let _ = writeln!(body, "<h2>Raw body, as delivered</h2>\n<pre class=\"raw\">{}</pre>", escape(&alert.raw_body));
    body.push_str("<h2>Replay</h2>\n");
    body.push_str(&replay_form(&summary.id, who, service_dry_run));
    body.push_str("</main>\n");
    body
}

/// The bar on every page behind the login: home, the pause switch with its form, and log out.
fn header_bar(who: &LoggedIn, paused: Option<&str>, back: &str) -> String {
    let csrf = escape(&who.csrf);
    let back = escape(back);
    let switch = match paused {
        Some(reason) => format!(
            r#"<div class="switch paused"><span><strong>Automation paused</strong>: {reason}</span>
<form method="post" action="/automation/resume" class="inline"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="back" value="{back}"><button type="submit" name="resume">Resume</button></form></div>"#,
            reason = escape(reason)
        ),
        None => format!(
            r#"<div class="switch"><span>Automation running</span>
<form method="post" action="/automation/pause" class="inline"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="back" value="{back}"><input name="reason" placeholder="reason (optional)" aria-label="pause reason"><button type="submit" name="pause">Pause</button></form></div>"#
        ),
    };
    format!(
        r#"<header><a href="/" class="brand">healthset-responder</a>
{switch}
<form method="post" action="/logout" class="inline logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" name="logout">Log out</button></form>
</header>"#
    )
}

/// An error as a page: the status and the message the API would have given.
fn error_page(who: &LoggedIn, err: ApiError) -> Response {
    let title = match err.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Already open",
        status if status.is_server_error() => "Unavailable",
        _ => "Refused",
    };
    message_page(err.status, title, &err.message, Some(who))
}

fn message_page(status: StatusCode, title: &str, message: &str, who: Option<&LoggedIn>) -> Response {
    let header = match who {
        Some(who) => format!(
            r#"<header><a href="/" class="brand">healthset-responder</a>
<form method="post" action="/logout" class="inline logout"><input type="hidden" name="csrf" value="{}"><button type="submit" name="logout">Log out</button></form>
</header>"#,
            escape(&who.csrf)
        ),
        None => r#"<header><a href="/" class="brand">healthset-responder</a></header>"#.to_owned(),
    };
    let body = format!(
        r#"<main class="narrow"><h1>{}</h1><p class="error" role="alert">{}</p><p><a href="/">Back to the incidents</a></p></main>"#,
        escape(title),
        escape(message)
    );
    (status, Html(document(title, false, &header, &body))).into_response()
}

// ---------------------------------------------------------------------------------------------------------------
// HTML helpers

/// A stored time as date and time of day (UTC), keeping the exact value in the `datetime` attribute.
fn when(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => format!(r#"<time datetime="{}">{}</time>"#, escape(rfc3339), t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S")),
        Err(_) => escape(rfc3339),
    }
}

/// A step time as time of day with milliseconds (the incident header gives the date).
fn clock(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => format!(r#"<time datetime="{}">{}</time>"#, escape(rfc3339), t.with_timezone(&chrono::Utc).format("%H:%M:%S%.3f")),
        Err(_) => escape(rfc3339),
    }
}

fn monitor_name(incident: &IncidentView) -> String {
    incident.monitor.clone().unwrap_or_else(|| "(no monitor)".to_owned())
}

fn is_final(state: &str) -> bool {
    IncidentState::parse(state).is_some_and(IncidentState::is_final)
}

/// A state as a coloured badge; the colour says whether a person must act.
fn state_badge(state: &str) -> String {
    let tone = match IncidentState::parse(state) {
        Some(IncidentState::Transient | IncidentState::Recovered) => "good",
        Some(IncidentState::Escalated | IncidentState::Blocked) => "bad",
        Some(IncidentState::Queued | IncidentState::Running | IncidentState::Waiting) => "busy",
        Some(IncidentState::Suppressed) | None => "quiet",
    };
    format!(r#"<span class="badge state {tone}">{}</span>"#, escape(state))
}

fn outcome_badge(outcome: &str) -> String {
    let tone = match Outcome::parse(outcome).map(Outcome::sense) {
        Some(Sense::Good) => "good",
        Some(Sense::Bad) => "bad",
        Some(Sense::Pending) => "busy",
        None => "quiet",
    };
    format!(r#"<span class="badge {tone}">{}</span>"#, escape(outcome))
}

fn email_badge(status: &str) -> String {
    let tone = match status {
        "sent" => "good",
        "failed" => "bad",
        _ => "busy",
    };
    format!(r#"<span class="badge {tone}">{}</span>"#, escape(status))
}

/// A whole HTML document. `refresh` makes the browser reload it every two seconds (for incidents still running).
fn document(title: &str, refresh: bool, header: &str, body: &str) -> String {
    let refresh = if refresh { "<meta http-equiv=\"refresh\" content=\"2\">\n" } else { "" };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{title} · healthset-responder</title>
<style>{STYLE}</style>
</head>
<body>
{header}
{body}
<footer>Times are UTC.</footer>
</body>
</html>
"#,
        title = escape(title)
    )
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1d232a; --muted: #5c6670; --bg: #fff; --line: #d9dee3; --panel: #f4f6f8;
  --good: #17663a; --good-bg: #dcf3e4; --bad: #a0201b; --bad-bg: #fbe0de; --busy: #7a5200; --busy-bg: #fdf0cf; --quiet: #4b5563; --quiet-bg: #e8eaed; --link: #1558b0; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ec; --muted: #9aa4ae; --bg: #14181c; --line: #2c333a; --panel: #1c2127;
  --good: #7ddc9d; --good-bg: #163322; --bad: #ff9a93; --bad-bg: #3d1a18; --busy: #f5c867; --busy-bg: #3a2e12; --quiet: #c3c9d0; --quiet-bg: #2a3038; --link: #8ab8ff; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
a { color: var(--link); }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; padding: .6rem 1rem; border-bottom: 1px solid var(--line); background: var(--panel); }
header .brand { font-weight: 600; text-decoration: none; color: var(--fg); margin-right: auto; }
.switch { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; }
.switch.paused { color: var(--busy); }
main { padding: 1rem; max-width: 84rem; margin: 0 auto; }
main.narrow { max-width: 30rem; }
h1 { font-size: 1.35rem; margin: .2rem 0 .6rem; }
h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; }
.reason { font-size: 1.05rem; margin: 0 0 .8rem; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
table.list { border-collapse: collapse; width: 100%; }
.list th, .list td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid var(--line); }
.list th { font-weight: 600; color: var(--muted); font-size: 13px; }
.list td code { overflow-wrap: anywhere; }
.message { white-space: pre-wrap; overflow-wrap: anywhere; }
code.command { display: block; margin-top: .15rem; color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
pre.raw { background: var(--panel); border: 1px solid var(--line); padding: .7rem; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: .7rem; font-size: 13px; font-weight: 600; white-space: nowrap; }
.good { color: var(--good); background: var(--good-bg); }
.bad { color: var(--bad); background: var(--bad-bg); }
.busy { color: var(--busy); background: var(--busy-bg); }
.quiet, .pending { color: var(--quiet); background: var(--quiet-bg); }
time, .tag { white-space: nowrap; }
.tag { font-size: 12px; color: var(--muted); border: 1px solid var(--line); border-radius: .3rem; padding: 0 .3rem; }
.filters { margin: 0 0 .8rem; display: flex; flex-wrap: wrap; gap: .3rem .7rem; }
.filters a[aria-current] { font-weight: 700; color: var(--fg); text-decoration: none; }
.empty, .note, footer { color: var(--muted); }
footer { padding: 1rem; font-size: 13px; text-align: center; }
.error { color: var(--bad); background: var(--bad-bg); padding: .5rem .7rem; border-radius: .3rem; }
form.inline { display: inline-flex; flex-wrap: wrap; gap: .4rem; align-items: center; margin: 0; }
form.stack { display: flex; flex-direction: column; gap: .5rem; }
input, button { font: inherit; padding: .35rem .6rem; border-radius: .3rem; border: 1px solid var(--line); background: var(--bg); color: var(--fg); }
input[type=checkbox] { padding: 0; }
button { cursor: pointer; background: var(--panel); font-weight: 600; }
@media (max-width: 700px) {
  .list thead { display: none; }
  .list tr { display: block; border-bottom: 1px solid var(--line); padding: .4rem 0; }
  .list td { display: grid; grid-template-columns: 6.5rem 1fr; gap: .5rem; border: 0; padding: .1rem .3rem; }
  .list td::before { content: attr(data-label); color: var(--muted); font-size: 13px; }
  .list td > .badge { justify-self: start; }
  .facts { grid-template-columns: 1fr; }
  .facts dd { margin-bottom: .3rem; }
}
"#;

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

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark; hsr_session=abc123"));
        assert_eq!(session_cookie(&headers), Some("abc123"));
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("hsr_session_old=x; other=y"));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn sessions_expire_and_can_be_removed() {
        let sessions = Sessions::default();
        let id = sessions.create();
        let csrf = sessions.get(&id).expect("a fresh session").csrf;
        assert_ne!(csrf, id, "the CSRF token is not the session id");
        assert!(sessions.get("not-a-session").is_none());
        sessions.by_hash.lock().unwrap().get_mut(&hash(&id)).unwrap().expires_at = Instant::now() - Duration::from_secs(1);
        assert!(sessions.get(&id).is_none(), "an expired session is refused");
        let id = sessions.create();
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none(), "a removed session is refused");
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let who = LoggedIn { id: "s".into(), csrf: "0123abcd".into() };
        assert!(who.check_csrf(Some("0123abcd")).is_ok());
        for given in [None, Some(""), Some("0123abc"), Some("0123abcde"), Some("0123abce")] {
            assert_eq!(who.check_csrf(given).unwrap_err().into_response().status(), StatusCode::FORBIDDEN, "{given:?}");
        }
    }
}
