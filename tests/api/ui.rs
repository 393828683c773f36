//! The operator's page over plain HTTP (the browser test drives the same page in Chromium): login and its session
//! cookie, the CSRF token on every form that changes something, escaping, self-refresh and the security headers.

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::Response;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::replay::{app_pool_fault, held_alert, hold_incidents, CTP_MESSAGE};

const POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// A browser without a cookie jar: it sends the session cookie it was given and follows no redirect by itself.
struct Browser {
    http: reqwest::Client,
    url: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            http: reqwest::Client::builder().redirect(Policy::none()).build().unwrap(),
            url: app.url.clone(),
            cookie: None,
        }
    }

    async fn get(&self, path: &str) -> Response {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        let mut request = self.http.post(format!("{}{path}", self.url)).form(form);
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.unwrap()
    }

    /// Logs in through the form and keeps the session cookie.
    async fn login(&mut self) {
        let response = self.post("/login", &[("token", ADMIN_TOKEN)]).await;
        assert_eq!(response.status(), 303);
        let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap();
        self.cookie = Some(set_cookie.split(';').next().unwrap().to_owned());
    }

    /// The CSRF token the page puts in its forms.
    async fn csrf(&self) -> String {
        let page = self.get("/").await.text().await.unwrap();
        let start = page.find(r#"name="csrf" value=""#).expect("a form with a CSRF token")
            + r#"name="csrf" value=""#.len();
        page[start..start + page[start..].find('"').unwrap()].to_owned()
    }
}

fn location(response: &Response) -> &str {
    response.headers()[LOCATION].to_str().unwrap()
}

async fn paused(app: &TestApp) -> bool {
    app.admin_get("/readyz").await.1["paused"].as_bool().unwrap()
}

#[tokio::test]
async fn every_page_needs_a_session_and_login_sets_a_strict_cookie() {
    let app = spawn_app().await;
    let mut browser = Browser::new(&app);
    for path in [
        "/",
        "/incidents/0193aaaa-0000-7000-8000-000000000000",
        "/alerts/0193aaaa-0000-7000-8000-000000000000",
        "/?state=blocked",
    ] {
        let response = browser.get(path).await;
        assert_eq!((response.status().as_u16(), location(&response)), (303, "/login"), "{path}");
    }
    for path in ["/automation/pause", "/automation/resume", "/alerts/x/replay", "/logout"] {
        let response = browser.post(path, &[("csrf", "x")]).await;
        assert_eq!((response.status().as_u16(), location(&response)), (303, "/login"), "{path}");
    }
    assert!(!paused(&app).await);

    let response = browser.get("/login").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-security-policy"], POLICY);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(response.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(response
        .text()
        .await
        .unwrap()
        .contains(r#"<input id="token" name="token" type="password""#));

    let response = browser.post("/login", &[("token", "not-the-token")]).await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().get(SET_COOKIE).is_none());
    let page = response.text().await.unwrap();
    assert!(
        page.contains("that is not an admin token") && page.contains(r#"name="token""#),
        "the form again, with the error"
    );
    assert_eq!(browser.post("/login", &[]).await.status(), 401, "no token at all");

    let response = browser.post("/login", &[("token", ADMIN_TOKEN)]).await;
    assert_eq!((response.status().as_u16(), location(&response)), (303, "/"));
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap();
    let attributes: Vec<&str> = cookie.split("; ").skip(1).collect();
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&wanted), "{wanted} in {cookie}");
    }
    assert!(!cookie.contains(ADMIN_TOKEN), "the cookie is a session id, not the token");

    browser.login().await;
    let response = browser.get("/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-security-policy"], POLICY);
    assert!(response.text().await.unwrap().contains("<h1>Incidents</h1>"));
    assert_eq!(location(&browser.get("/login").await), "/", "a logged-in browser skips the form");

    let forged =
        Browser { cookie: Some("hsr_session=0123456789abcdef".into()), ..Browser::new(&app) };
    assert_eq!(location(&forged.get("/").await), "/login", "an unknown session id is no session");
}

#[tokio::test]
async fn forms_without_their_csrf_token_change_nothing() {
    let app = spawn_app_with(&app_pool_fault()).await;
    let alert_id =
        held_alert(&app, &native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE)).await;
    let mut browser = Browser::new(&app);
    browser.login().await;
    let csrf = browser.csrf().await;
    let replay = format!("/alerts/{alert_id}/replay");

    for form in [
        vec![("reason", "x")],
        vec![("reason", "x"), ("csrf", "")],
        vec![("reason", "x"), ("csrf", &csrf[..csrf.len() - 1])],
    ] {
        let response = browser.post("/automation/pause", &form).await;
        assert_eq!(response.status(), 403, "{form:?}");
        assert!(response.text().await.unwrap().contains("security token is missing or stale"));
    }
    assert!(!paused(&app).await, "no refused form paused automation");
    assert_eq!(browser.post(&replay, &[("dry_run", "on")]).await.status(), 403);
    assert_eq!(
        app.admin_get("/v1/incidents").await.1["incidents"],
        json!([]),
        "no refused form opened an incident"
    );
    assert_eq!(browser.post("/logout", &[]).await.status(), 403);
    assert_eq!(browser.get("/").await.status(), 200, "a refused logout ends no session");
    let other = {
        let mut other = Browser::new(&app);
        other.login().await;
        other.csrf().await
    };
    assert_ne!(other, csrf, "each session has its own token");
    assert_eq!(
        browser.post("/automation/pause", &[("csrf", &other)]).await.status(),
        403,
        "another session's token is refused"
    );

    let response = browser
        .post(
            "/automation/pause",
            &[("csrf", &csrf), ("reason", "patching"), ("back", "/?state=running")],
        )
        .await;
    assert_eq!((response.status().as_u16(), location(&response)), (303, "/?state=running"));
    assert_eq!(app.admin_get("/readyz").await.1["pause_reason"], "patching");
    let response = browser
        .post("/automation/resume", &[("csrf", &csrf), ("back", "https://elsewhere.example/")])
        .await;
    assert_eq!(
        (response.status().as_u16(), location(&response)),
        (303, "/"),
        "only local paths are followed back"
    );
    assert!(!paused(&app).await);

    let response = browser.post(&replay, &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), 303);
    let incident_id =
        location(&response).strip_prefix("/incidents/").expect("to the new incident").to_owned();
    let incident = app.wait_final(&incident_id).await;
    assert_eq!(
        (incident["replay_of"].as_str(), incident["dry_run"].as_bool()),
        (Some(alert_id.as_str()), Some(false))
    );

    let response = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!((response.status().as_u16(), location(&response)), (303, "/login"));
    assert!(response.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(location(&browser.get("/").await), "/login", "the session is over");
}

#[tokio::test]
async fn pages_escape_alert_text_and_refresh_while_the_incident_runs() {
    let app = spawn_app_with(INVENTORY).await;
    hold_incidents(&app).await;
    app.admin_post("/v1/automation/pause", json!({"reason": "<i>maintenance</i>"})).await;
    let body = native(
        "cas01.contoso.com",
        "ActiveSyncCTPMonitor",
        "<script>alert('x')</script> & \"more\"",
    );
    let answer: Value = app.post_signed("/v1/alerts", &body).await.json().await.unwrap();
    let incident_id = answer["alerts"][0]["incident_id"].as_str().unwrap();
    let alert_id = answer["alerts"][0]["alert_id"].as_str().unwrap();
    let mut browser = Browser::new(&app);
    browser.login().await;

    let page = browser.get(&format!("/incidents/{incident_id}")).await.text().await.unwrap();
    assert!(
        page.contains(r#"<meta http-equiv="refresh" content="2">"#),
        "a queued incident's page refreshes itself"
    );
    assert!(
        page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"),
        "{page}"
    );
    assert!(
        !page.contains("<script>") && !page.contains("<i>maintenance"),
        "nothing from outside is markup"
    );
    assert!(page.contains("<strong>Automation paused</strong>: &lt;i&gt;maintenance&lt;/i&gt;"));
    assert!(
        page.contains(&format!(r#"<form method="post" action="/alerts/{alert_id}/replay""#)),
        "the replay form posts the incident's first alert"
    );
    let list = browser.get("/").await.text().await.unwrap();
    assert!(
        list.contains(r#"http-equiv="refresh""#),
        "the list refreshes while an incident runs: {list}"
    );

    let page = browser.get(&format!("/alerts/{alert_id}")).await.text().await.unwrap();
    assert!(
        page.contains(r#"&quot;message&quot;:&quot;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; \&quot;more\&quot;&quot;"#),
        "the raw body, escaped: {page}"
    );
    assert!(!page.contains("<script>"));

    app.admin_post("/v1/automation/resume", json!({})).await;
    app.wait_final(incident_id).await;
    let page = browser.get(&format!("/incidents/{incident_id}")).await.text().await.unwrap();
    assert!(!page.contains(r#"http-equiv="refresh""#), "a final incident's page stays still");
    assert!(
        page.contains(r#"<td data-label="action" class="action">probe</td>"#),
        "the timeline is on the page"
    );

    // Paused, the replayed incident stays open, so a second replay meets it.
    app.admin_post("/v1/automation/pause", json!({})).await;
    let csrf = browser.csrf().await;
    let response = browser.post(&format!("/alerts/{alert_id}/replay"), &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), 303, "the finished incident no longer holds the key");
    let open = location(&response).strip_prefix("/incidents/").unwrap().to_owned();
    let response = browser.post(&format!("/alerts/{alert_id}/replay"), &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), 409);
    let page = response.text().await.unwrap();
    assert!(
        page.contains(&format!(
            "incident {open} is already open for cas01.contoso.com ActiveSync ActiveSyncCTPMonitor"
        )),
        "{page}"
    );

    let response = browser.get("/incidents/0193aaaa-0000-7000-8000-000000000000").await;
    assert_eq!(response.status(), 404);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("incident 0193aaaa-0000-7000-8000-000000000000 does not exist"));
    assert_eq!(browser.get("/?state=fixed").await.status(), 400);
}

#[tokio::test]
async fn failed_logins_are_limited_per_address_with_retry_after() {
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    for _ in 0..healthset_responder::http::guesses::MAX_FAILURES {
        assert_eq!(
            browser.post("/login", &[("token", "a-wrong-guess-0123456789")]).await.status(),
            401
        );
    }
    let locked = browser.post("/login", &[("token", "a-wrong-guess-0123456789")]).await;
    assert_eq!(locked.status(), 429);
    let retry_after: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 0 && retry_after <= healthset_responder::http::guesses::WINDOW.as_secs());
    assert!(locked.text().await.unwrap().contains("too many wrong admin tokens from this address"));
    // Not even the right token gets through now, and the admin API counts the same guesses.
    assert_eq!(browser.post("/login", &[("token", ADMIN_TOKEN)]).await.status(), 429);
    let (status, body) = app.admin_get("/v1/incidents").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attempts");
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_public_url_is_https() {
    let app = spawn_app_with_root("public_url = \"https://responder.contoso.com/\"", "").await;
    let response = Browser::new(&app).post("/login", &[("token", ADMIN_TOKEN)]).await;
    assert_eq!(response.status(), 303);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("; Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    let plain = spawn_app().await;
    let response = Browser::new(&plain).post("/login", &[("token", ADMIN_TOKEN)]).await;
    assert!(
        !response.headers()[SET_COOKIE].to_str().unwrap().contains("Secure"),
        "plain HTTP keeps a cookie the browser would drop otherwise"
    );
}

#[tokio::test]
async fn incidents_awaiting_a_decision_come_first_with_their_proposal_and_csrf_protected_buttons() {
    let faults = "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"iis_reset\"\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\"\n";
    let app =
        spawn_app_with(&format!("{INVENTORY}\n[approval]\nactions = [\"iis_reset\"]\n{faults}"))
            .await;
    let waiting = app.open(&native("mbx01.contoso.com", "ActiveSyncDeepTestMonitor", "deep")).await;
    crate::approvals::wait_state(&app, &waiting, "awaiting_approval").await;
    // A newer incident that needs nobody's decision: it still lists after the one that waits.
    let newer = app.open(&native("cas02.contoso.com", "ActiveSyncDeepTestMonitor", "deep")).await;
    app.wait_final(&newer).await;

    let mut browser = Browser::new(&app);
    browser.login().await;
    let index = browser.get("/").await;
    assert!(index.headers().get("refresh").is_none());
    let page = index.text().await.unwrap();
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "a page with a decision form does not reload itself"
    );
    let (proposal, first_row) =
        (page.find("Waiting for a decision").expect("the proposal"), page.find("<tbody>").unwrap());
    assert!(proposal < first_row, "the proposal comes before the list");
    let rows = &page[first_row..];
    assert!(
        rows.find(&waiting).unwrap() < rows.find(&newer).unwrap(),
        "the waiting incident lists first"
    );
    assert!(
        page.contains("iisreset")
            && page.contains(&format!("action=\"/incidents/{waiting}/decide\"")),
        "{page}"
    );

    let path = format!("/incidents/{waiting}/decide");
    let refused = browser.post(&path, &[("decision", "approve")]).await;
    assert_eq!(refused.status(), 403, "no CSRF token, no decision");
    assert_eq!(
        app.admin_get(&format!("/v1/incidents/{waiting}")).await.1["state"],
        "awaiting_approval"
    );

    let csrf = browser.csrf().await;
    let denied = browser
        .post(&path, &[("csrf", &csrf), ("decision", "deny"), ("reason", "not during month-end")])
        .await;
    assert_eq!(
        (denied.status().as_u16(), location(&denied)),
        (303, format!("/incidents/{waiting}").as_str())
    );
    let incident = app.wait_final(&waiting).await;
    assert_eq!(incident["state"], "blocked");
    assert_eq!(incident["approval"]["decided_via"], "page");
    assert!(
        incident["reason"]
            .as_str()
            .unwrap()
            .starts_with("approval denied on the operator's page; reason: not during month-end"),
        "{incident:#}"
    );
    let again = browser.post(&path, &[("csrf", &csrf), ("decision", "approve")]).await;
    assert_eq!(again.status(), 409, "nothing left to decide");
}
