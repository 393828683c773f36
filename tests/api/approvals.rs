//! Approvals end to end: `[approval] actions` makes the steps that hurt wait for a person, who decides from the
//! email's link (in a real browser), the operator's page, the admin API or the CLI; silence expires; the problem is
//! verified again after a yes; a Mailbox restart is asked about once; a token decides its own approval only; and a
//! crash, a pause and a restart lose no request and no decision.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{json, Value};
use sha2::Digest;

use crate::browser::{click, in_browser, read, read_until, save_screenshot, Read};
use crate::helpers::*;
use crate::mail::{parse, Parsed};
use crate::safety::relaxed_throttles;

/// The inventory, approvals for `actions` with `timeout`, and the simulator settings `simulator`.
fn approving(actions: &[&str], timeout: &str, simulator: &str) -> String {
    format!("{INVENTORY}\n[approval]\nactions = {actions:?}\ntimeout = \"{timeout}\"\n{simulator}")
}

/// A Mailbox server whose ActiveSync pool needs an IISReset: the recycle does not help.
fn needs_iis_reset(server: &str) -> String {
    format!("[simulator.servers.\"{server}\"]\nfault = \"iis_reset\"\n")
}

fn deep_test(server: &str) -> String {
    native(server, "ActiveSyncDeepTestMonitor", "ActiveSyncDeepTestProbe failed")
}

/// Polls an incident until it is in `state` (bounded: 20 s), and returns it.
pub async fn wait_state(app: &TestApp, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
        if incident["state"] == state {
            return incident;
        }
        assert!(Instant::now() < deadline, "incident {id} never reached {state}: {incident:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The approval request emails in the outbox, oldest first, once there are at least `count` (bounded: 20 s).
async fn requests(app: &TestApp, count: usize) -> Vec<Parsed> {
    mails(app, "APPROVAL NEEDED", count).await
}

/// The emails in the outbox whose subject holds `subject`, oldest first, once there are at least `count`
/// (bounded: 20 s).
async fn mails(app: &TestApp, subject: &str, count: usize) -> Vec<Parsed> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<Parsed> = outbox(app)
            .iter()
            .map(|file| parse(&std::fs::read(file).unwrap()))
            .filter(|mail| mail.subject.contains(subject))
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{count} email(s) about {subject:?} expected in the outbox, found {}",
            found.len()
        );
        // The service runs on this test's runtime: wait without blocking it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The token of the approval link in a request email.
fn token(mail: &Parsed) -> String {
    let line = mail
        .text
        .lines()
        .map(str::trim)
        .find(|l| l.contains("/approvals/") && l.ends_with("?decision=approve"))
        .expect("an approve link");
    line.split("/approvals/").nth(1).unwrap().trim_end_matches("?decision=approve").to_owned()
}

fn approvals(incident: &Value) -> Vec<String> {
    steps(incident).into_iter().filter(|s| s.starts_with("approval ")).collect()
}

fn step_detail(incident: &Value, outcome: &str) -> String {
    let steps = incident["steps"].as_array().unwrap();
    steps
        .iter()
        .find(|s| s["action"] == "approval" && s["outcome"] == outcome)
        .unwrap_or_else(|| panic!("no approval {outcome}: {incident:#}"))["detail"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_person_approves_from_the_email_link_in_a_real_browser() {
    let app =
        spawn_app_with(&approving(&["iis_reset"], "30m", &needs_iis_reset("mbx01.contoso.com")))
            .await;
    let id = app.open(&deep_test("mbx01.contoso.com")).await;
    let waiting = wait_state(&app, &id, "awaiting_approval").await;
    assert_eq!(
        steps(&waiting),
        [
            "probe mbx01.contoso.com failed",
            "ma_history mbx01.contoso.com none",
            "component_state mbx01.contoso.com active",
            "recycle_app_pool mbx01.contoso.com done",
            "probe mbx01.contoso.com failed",
            "approval mbx01.contoso.com requested",
        ],
        "the recycle ran unasked; the IISReset waits: {waiting:#}"
    );
    assert_eq!(waiting["approval"]["status"], "pending");
    assert_eq!(waiting["approval"]["actions"], json!(["iis_reset"]));

    // The request email: what, where, the exact command, the deadline, the links; to the escalation recipients.
    let mail = &requests(&app, 1).await[0];
    assert_eq!(
        mail.subject,
        "[healthset-responder] APPROVAL NEEDED: iis_reset on mbx01.contoso.com (ActiveSync ActiveSyncDeepTestMonitor alert on mbx01.contoso.com)"
    );
    assert_eq!(mail.to, ["oncall@localhost"]);
    for fact in [
        "Automation wants to run iis_reset on mbx01.contoso.com",
        "iisreset",
        "LATEST PROBE",
        "ActiveSyncDeepTestProbe",
        "?decision=deny",
    ] {
        assert!(mail.text.contains(fact), "{fact:?} in\n{}", mail.text);
    }
    assert!(
        mail.html.contains("decision=approve") && mail.html.contains(">Approve</a>"),
        "{}",
        mail.html
    );
    let token = token(mail);
    let link = format!("{}/approvals/{token}", app.url);

    // The store keeps the token's hash only, and drops the delivered email's body that carries it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.admin_get(&format!("/v1/incidents/{id}")).await.1["notifications"][0]["status"]
        != "sent"
    {
        assert!(Instant::now() < deadline, "the request was not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hash = sha2::Sha256::digest(token.as_bytes()).to_vec();
    let (hashes, emails, tokens) = match postgres_url(&app) {
        None => {
            let db =
                rusqlite::Connection::open(app.data_dir.path().join("healthset-responder.sqlite3"))
                    .unwrap();
            let count = |sql: &str, param: &dyn rusqlite::ToSql| {
                db.query_row(sql, [param], |r| r.get::<_, i64>(0)).unwrap()
            };
            (
                count("SELECT COUNT(*) FROM approvals WHERE token_sha256 = ?1", &hash),
                count("SELECT COUNT(*) FROM notifications WHERE instr(CAST(message AS TEXT), ?1) > 0", &token),
                count("SELECT COUNT(*) FROM approvals WHERE instr(CAST(token_sha256 AS TEXT), ?1) > 0", &token),
            )
        }
        Some(url) => {
            let db = crate::postgres::cluster::connect(&url).await;
            let count = |sql: &'static str, param: Vec<u8>| {
                let db = &db;
                async move { db.query_one(sql, &[&param]).await.unwrap().get::<_, i64>(0) }
            };
            let token = token.as_bytes().to_vec();
            (
                count("SELECT COUNT(*) FROM approvals WHERE token_sha256 = $1", hash.clone()).await,
                count(
                    "SELECT COUNT(*) FROM notifications WHERE position($1 in message) > 0",
                    token.clone(),
                )
                .await,
                count(
                    "SELECT COUNT(*) FROM approvals WHERE position($1 in token_sha256) > 0",
                    token,
                )
                .await,
            )
        }
    };
    assert_eq!(hashes, 1, "the approval keeps the token's hash");
    assert_eq!(emails, 0, "no stored email holds the token");
    assert_eq!(tokens, 0, "nor does the approval");

    // A mail scanner opening the links changes nothing.
    for _ in 0..2 {
        let scanned = app.http.get(format!("{link}?decision=approve")).send().await.unwrap();
        assert_eq!(scanned.status(), 200);
    }
    let (_, unchanged) = app.admin_get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(
        (unchanged["state"].clone(), steps(&unchanged)),
        (json!("awaiting_approval"), steps(&waiting))
    );

    let page = link.clone();
    in_browser(1000, move |c| async move {
        c.goto(&format!("{page}?decision=approve")).await.unwrap();
        let heading = read(&c, Locator::Css("h1"), Read::Text).await;
        assert_eq!(heading, ["Approve or deny: iis_reset on mbx01.contoso.com"]);
        let text = read(&c, Locator::Css("main"), Read::Text).await.join("\n");
        assert!(
            text.contains("No login is needed here")
                && text.contains("iisreset")
                && text.contains("Timeline so far"),
            "{text}"
        );
        c.find(Locator::Css("#reason"))
            .await
            .unwrap()
            .send_keys("checked the pool myself")
            .await
            .unwrap();
        save_screenshot(&c, "approval-page.png", 1000).await;
        click(&c, Locator::Css("button[value=approve]")).await;
        // The click submits the form; the answer is read once the browser has loaded it.
        let done = read_until(&c, Locator::Css("main"), Read::Text, |main| {
            main.iter().any(|text| text.contains("Decision recorded"))
        })
        .await
        .join("\n");
        assert!(done.contains("Decision recorded") && done.contains("Approved."), "{done}");
        // The link is single use: the browser now gets the 410 page.
        c.goto(&page).await.unwrap();
        let gone = read(&c, Locator::Css("h1"), Read::Text).await;
        assert_eq!(gone, ["This approval link is no longer valid"]);
    })
    .await;

    let incident = app.wait_final(&id).await;
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    let after: Vec<String> = steps(&incident).into_iter().skip(6).collect();
    assert_eq!(
        after,
        [
            "approval mbx01.contoso.com approved",
            "probe mbx01.contoso.com failed",
            "component_state mbx01.contoso.com active",
            "iis_reset mbx01.contoso.com done",
            "probe mbx01.contoso.com succeeded",
        ],
        "verified again, maintenance checked again, then the approved step: {incident:#}"
    );
    assert_eq!(
        step_detail(&incident, "approved"),
        "through the link in the approval email; reason: checked the pool myself"
    );
    assert_eq!(incident["approval"]["decided_via"], "link");
    for method in ["GET", "POST"] {
        let request = app.http.request(method.parse().unwrap(), &link);
        let response = if method == "POST" {
            request.form(&[("decision", "deny")]).send().await
        } else {
            request.send().await
        }
        .unwrap();
        assert_eq!(response.status(), 410, "{method} on a used link");
    }
    assert_eq!(
        app.admin_post(&format!("/v1/incidents/{id}/deny"), json!({})).await.0,
        409,
        "nothing left to decide"
    );
}

#[tokio::test]
async fn a_denial_through_the_api_blocks_and_escalates_saying_who_and_why() {
    let app =
        spawn_app_with(&approving(&["iis_reset"], "30m", &needs_iis_reset("mbx01.contoso.com")))
            .await;
    let id = app.open(&deep_test("mbx01.contoso.com")).await;
    wait_state(&app, &id, "awaiting_approval").await;

    let bad = app
        .admin_post(&format!("/v1/incidents/{id}/deny"), json!({"reason": "x".repeat(1001)}))
        .await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert!(
        bad.1["error"]["message"].as_str().unwrap().contains("reason: longer than 1000 characters"),
        "{}",
        bad.1
    );
    let unknown = app.admin_post(&format!("/v1/incidents/{id}/deny"), json!({"why": "typo"})).await;
    assert_eq!(unknown.0, 400, "an unknown field is refused: {}", unknown.1);
    assert_eq!(
        wait_state(&app, &id, "awaiting_approval").await["steps"].as_array().unwrap().len(),
        6,
        "a refused request changed nothing"
    );

    let (status, answer) = app
        .admin_post(
            &format!("/v1/incidents/{id}/deny"),
            json!({"reason": "change freeze until Monday"}),
        )
        .await;
    assert_eq!((status, answer), (200, json!({"incident_id": id, "decision": "denied"})));
    let (second, conflict) =
        app.admin_post(&format!("/v1/incidents/{id}/approve"), json!({})).await;
    assert_eq!(second, 409, "the first decision wins: {conflict}");
    let incident = app.wait_final(&id).await;
    assert_eq!(incident["state"], "blocked");
    let reason = incident["reason"].as_str().unwrap();
    assert_eq!(
        reason,
        "approval denied through the admin API (healthset-responder approve|deny, or a client of the API); reason: change freeze until Monday; iis_reset on mbx01.contoso.com was not run"
    );
    assert!(!steps(&incident).iter().any(|s| s.starts_with("iis_reset")), "{incident:#}");

    let escalation = mails(&app, "BLOCKED", 1).await.remove(0);
    assert!(
        escalation.text.contains("change freeze until Monday")
            && escalation.text.contains("approval denied"),
        "{}",
        escalation.text
    );
    assert_eq!(app.admin_post("/v1/incidents/no-such-incident/approve", json!({})).await.0, 404);
}

#[tokio::test]
async fn an_approval_nobody_gives_expires_blocked_with_an_escalation() {
    let app =
        spawn_app_with(&approving(&["iis_reset"], "1s", &needs_iis_reset("mbx01.contoso.com")))
            .await;
    let id = app.open(&deep_test("mbx01.contoso.com")).await;
    wait_state(&app, &id, "awaiting_approval").await;
    let token = token(&requests(&app, 1).await[0]);
    let incident = app.wait_final(&id).await;
    assert_eq!(incident["state"], "blocked", "{incident:#}");
    assert_eq!(
        approvals(&incident),
        ["approval mbx01.contoso.com requested", "approval mbx01.contoso.com expired"]
    );
    assert_eq!(incident["reason"], "approval expired because nobody decided within 1s (approval.timeout); iis_reset on mbx01.contoso.com was not run");
    let kinds: Vec<&str> = incident["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["approval_request", "escalation"]);
    let gone = app
        .http
        .post(format!("{}/approvals/{token}", app.url))
        .form(&[("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410, "an expired approval's link is void");
}

#[tokio::test]
async fn an_approval_given_after_the_problem_went_away_runs_nothing() {
    // The recycle fixes the pool, but it answers slowly for a while: the probe right after it fails, and the IISReset
    // is proposed. By the time the person says yes, the pool is warm.
    let simulator = "[timing]\nwarm_up = \"0s\"\n[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"app_pool\"\nwarm_up = \"1500ms\"\n";
    let app = spawn_app_with(&approving(&["iis_reset"], "30m", simulator)).await;
    let id = app.open(&deep_test("mbx01.contoso.com")).await;
    wait_state(&app, &id, "awaiting_approval").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.admin_post(&format!("/v1/incidents/{id}/approve"), json!({"reason": "go ahead"}))
            .await
            .0,
        200
    );
    let incident = app.wait_final(&id).await;
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    assert_eq!(steps(&incident).last().unwrap(), "probe mbx01.contoso.com succeeded");
    assert!(
        !steps(&incident).iter().any(|s| s.starts_with("iis_reset")),
        "the approved step did not run: {incident:#}"
    );
    assert!(
        incident["reason"].as_str().unwrap().contains(
            "an earlier remedy took effect, and iis_reset on mbx01.contoso.com was not run"
        ),
        "{incident:#}"
    );
}

#[tokio::test]
async fn a_mailbox_restart_is_asked_about_once_for_the_whole_procedure() {
    let simulator = "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nactive_copies = 2\ncopies_moved_per_failover = 2\n";
    let app = spawn_app_with(&approving(
        &["disable_activation", "restart_server", "enable_activation"],
        "30m",
        simulator,
    ))
    .await;
    let id = app.open(&deep_test("mbx01.contoso.com")).await;
    let waiting = wait_state(&app, &id, "awaiting_approval").await;
    assert!(
        !steps(&waiting).iter().any(|s| s.starts_with("disable_activation")),
        "asked before the failover: {waiting:#}"
    );
    assert_eq!(
        waiting["approval"]["actions"],
        json!(["disable_activation", "copy_status", "restart_server", "enable_activation"])
    );
    let mail = &requests(&app, 1).await[0];
    for command in [
        "-DatabaseCopyActivationDisabledAndMoveNow $true",
        "Get-MailboxDatabaseCopyStatus",
        "-DatabaseCopyActivationDisabledAndMoveNow $false",
    ] {
        assert!(mail.text.contains(command), "the request shows {command:?}:\n{}", mail.text);
    }
    assert_eq!(app.admin_post(&format!("/v1/incidents/{id}/approve"), json!({})).await.0, 200);
    let incident = app.wait_final(&id).await;
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    assert_eq!(
        approvals(&incident),
        ["approval mbx01.contoso.com requested", "approval mbx01.contoso.com approved"],
        "one question: {incident:#}"
    );
    for step in [
        "disable_activation mbx01.contoso.com done",
        "restart_server mbx01.contoso.com done",
        "enable_activation mbx01.contoso.com done",
    ] {
        assert!(steps(&incident).contains(&step.to_owned()), "{step}: {incident:#}");
    }
    assert_eq!(requests(&app, 1).await.len(), 1, "one request email");
}

#[tokio::test]
async fn a_token_decides_its_own_approval_once_and_nothing_else() {
    let simulator = format!(
        "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nactive_copies = 1\n{}",
        needs_iis_reset("mbx02.contoso.com")
    );
    let app = spawn_app_with(
        &(approving(&["iis_reset", "restart_server"], "30m", &simulator) + &relaxed_throttles()),
    )
    .await;
    let first = app.open(&deep_test("mbx01.contoso.com")).await;
    wait_state(&app, &first, "awaiting_approval").await;
    let token_first = token(&requests(&app, 1).await[0]);
    let second = app.open(&deep_test("mbx02.contoso.com")).await;
    let before = wait_state(&app, &second, "awaiting_approval").await;
    let token_second = token(&requests(&app, 2).await[1]);
    let decide = |token: String, decision: &'static str| {
        let http = app.http.clone();
        let url = format!("{}/approvals/{token}", app.url);
        async move {
            http.post(url).form(&[("decision", decision)]).send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(
        decide(format!("{token_first}x"), "approve").await,
        410,
        "a token that was never issued"
    );
    assert_eq!(decide(token_first.clone(), "maybe").await, 400, "a decision that is neither");

    // The first incident's token approves its IISReset, which does not help: it asks again, about the restart.
    assert_eq!(decide(token_first.clone(), "approve").await, 200);
    let asking_again = wait_state(&app, &first, "awaiting_approval").await;
    assert_eq!(approvals(&asking_again).len(), 3, "{asking_again:#}");
    let (_, untouched) = app.admin_get(&format!("/v1/incidents/{second}")).await;
    assert_eq!(
        (untouched["state"].clone(), steps(&untouched)),
        (json!("awaiting_approval"), steps(&before)),
        "the other incident is untouched"
    );
    assert_eq!(
        decide(token_first.clone(), "approve").await,
        410,
        "used once, it stays void while its incident asks again"
    );

    assert_eq!(decide(token_second, "deny").await, 200);
    assert_eq!(app.wait_final(&second).await["state"], "blocked");
    assert_eq!(
        wait_state(&app, &first, "awaiting_approval").await["state"],
        "awaiting_approval",
        "a denial of the other changed nothing here"
    );
    let token_restart = token(&requests(&app, 3).await[2]);
    assert_eq!(decide(token_restart, "approve").await, 200);
    assert_eq!(app.wait_final(&first).await["state"], "recovered");
}

#[tokio::test]
async fn a_crash_while_awaiting_loses_nothing_and_a_decision_made_while_paused_waits_for_resume() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let body = approving(&["iis_reset"], "30m", &needs_iis_reset("mbx01.contoso.com"));
    std::fs::write(
        &config,
        format!(
            "{}\n{}{}",
            base_config(&dir.path().join("data")),
            with_test_timing(&body),
            store_under_test(&body).await
        ),
    )
    .unwrap();
    let mut process = ServiceProcess::start(&config, None);
    let app = TestApp::attached(&process.url);
    let id = app.open(&deep_test("mbx01.contoso.com")).await;
    let waiting = wait_state(&app, &id, "awaiting_approval").await;
    // Killed once the request email is out (a kill between writing it and recording that would send it again).
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.admin_get(&format!("/v1/incidents/{id}")).await.1["notifications"][0]["status"]
        != "sent"
    {
        assert!(Instant::now() < deadline, "the request email was not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.child.kill().unwrap();
    process.child.wait().unwrap();

    let process = ServiceProcess::start(&config, None);
    let app = TestApp::attached(&process.url);
    let after_crash = wait_state(&app, &id, "awaiting_approval").await;
    assert_eq!(steps(&after_crash), steps(&waiting), "the request survived the kill as it was");
    let outbox = dir.path().join("data").join("outbox");
    let emails = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect()
    };
    let token = token(&parse(&std::fs::read(&emails()[0]).unwrap()));

    // Paused, the approval is recorded but nothing runs.
    assert_eq!(
        app.admin_post("/v1/automation/pause", json!({"reason": "change window"})).await.0,
        200
    );
    let approved = app
        .http
        .post(format!("{}/approvals/{token}", app.url))
        .form(&[("decision", "approve"), ("reason", "fine")])
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, paused) = app.admin_get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(paused["state"], "queued", "{paused:#}");
    assert_eq!(
        steps(&paused).last().unwrap(),
        "approval mbx01.contoso.com approved",
        "pause wins: nothing ran after the approval"
    );

    // The decision survives a restart, and counts once automation resumes.
    assert!(process.terminate().success());
    let mut process = ServiceProcess::start(&config, None);
    let app = TestApp::attached(&process.url);
    let (_, restarted) = app.admin_get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(steps(&restarted), steps(&paused));
    assert_eq!(app.admin_post("/v1/automation/resume", json!({})).await.0, 200);
    let incident = app.wait_final(&id).await;
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    assert_eq!(
        approvals(&incident).len(),
        2,
        "one request and one decision across a kill and a restart: {incident:#}"
    );
    let subjects: Vec<String> =
        emails().iter().map(|f| parse(&std::fs::read(f).unwrap()).subject).collect();
    assert_eq!(
        subjects.iter().filter(|s| s.contains("APPROVAL NEEDED")).count(),
        1,
        "one request email, none again after the kill: {subjects:?}"
    );
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}
