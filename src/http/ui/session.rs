//! Who is logged in: sessions in memory, the login and logout, and the CSRF token every form carries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::html::document;
use super::pages::message_page;
use super::{bad_form, escape, Ui};
use crate::auth;

/// The session cookie's name.
pub(super) const COOKIE: &str = "hsr_session";
/// How long a login lasts; there is no sliding renewal, so a stolen cookie is worth at most this long.
pub(super) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Logged-in browsers, in memory only: a restart logs everyone out, which errs on the safe side.
///
/// Sessions are keyed by the SHA-256 of their id, so the map's lookup time says nothing useful about a guessed id.
/// A std `Mutex` is enough: it is held for a map operation and never across an `.await`.
#[derive(Default)]
pub(super) struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

#[derive(Clone)]
pub(super) struct Session {
    csrf: String,
    expires_at: Instant,
}

impl Sessions {
    /// Starts a session and returns its id (for the cookie); expired sessions are dropped on the way.
    pub(super) fn create(&self) -> String {
        let id = random_token();
        let session =
            Session { csrf: random_token(), expires_at: Instant::now() + SESSION_LIFETIME };
        let mut sessions = self.by_hash.lock().expect("the session map is never poisoned");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires_at > now);
        sessions.insert(hash(&id), session);
        id
    }

    pub(super) fn get(&self, id: &str) -> Option<Session> {
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

    pub(super) fn remove(&self, id: &str) {
        self.by_hash.lock().expect("the session map is never poisoned").remove(&hash(id));
    }
}

pub(super) fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub(super) fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// A request from a logged-in browser. Without a valid session the request is answered with a redirect to the
/// login page, and nothing else runs.
pub(super) struct LoggedIn {
    pub(super) id: String,
    pub(super) csrf: String,
}

impl LoggedIn {
    /// Lets a form through only with this session's CSRF token, compared in constant time.
    pub(super) fn check_csrf(&self, given: Option<&str>) -> Result<(), CsrfRefused> {
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
pub(super) struct CsrfRefused;

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        message_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "the form's security token is missing or stale; reload the page and try again",
            None,
        )
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

pub(super) fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// The session id from the `Cookie` header(s), if one is there.
pub(super) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
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

pub(super) fn session_cookie_header(id: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_LIFETIME.as_secs()
    ))
    .expect("a hex session id makes a valid header")
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: Option<String>,
}

pub(super) async fn login_page(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    if session_cookie(&headers).and_then(|id| ui.sessions.get(id)).is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(StatusCode::OK, None)
}

pub(super) async fn login(
    State(ui): State<Arc<Ui>>,
    extensions: axum::http::Extensions,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let client = crate::http::listener::peer(&extensions).map(|addr| addr.ip());
    let now = Instant::now();
    if let Some(Err(locked)) = client.map(|ip| ui.app.guesses.check(ip, now)) {
        return crate::http::too_many_guesses(locked, |status, message| {
            login_form(status, Some(message))
        });
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

pub(super) fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e)))
        .unwrap_or_default();
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
pub(super) struct CsrfForm {
    csrf: Option<String>,
}

pub(super) async fn logout(
    State(ui): State<Arc<Ui>>,
    who: LoggedIn,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        sessions.by_hash.lock().unwrap().get_mut(&hash(&id)).unwrap().expires_at =
            Instant::now() - Duration::from_secs(1);
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
            assert_eq!(
                who.check_csrf(given).unwrap_err().into_response().status(),
                StatusCode::FORBIDDEN,
                "{given:?}"
            );
        }
    }
}
