//! Escalation email end to end against a real SMTP server: mailin-embedded, run in this process on a loopback port,
//! with STARTTLS (OpenSSL, a certificate from a CA made here with rcgen) and AUTH PLAIN/LOGIN. The tests count what
//! the server accepted, parse it back with mail-parser, and read the outbox's record of each attempt from the API.
//!
//! The retry policy is shortened to tens of milliseconds through `[email] retry_initial` / `retry_max`; every wait
//! is bounded. The SMTP servers cannot be stopped (mailin-embedded serves until the process ends), so each test
//! starts its own on a fresh port and leaves it idle when done.

mod smtp;

use std::collections::VecDeque;
use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_parser::{MessageParser, MimeHeaders, PartType};
use mailin_embedded::response::{AUTH_OK, INVALID_CREDENTIALS, OK};
use mailin_embedded::{AuthMechanism, Handler, Response, Server, SslConfig};
use serde_json::{json, Value};

use crate::helpers::*;

use crate::pki::Pki;
use smtp::{free_port, SmtpServer};

const USER: &str = "healthset-responder";
const PASSWORD: &str = "correct horse battery staple";
const FROM: &str = "healthset-responder@contoso.com";
const ONCALL: &str = "oncall@contoso.com";
/// How long any one wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// The `[email]` settings for an SMTP server on `port`, retrying every few tens of milliseconds.
fn smtp_config(port: u16, tls: &str, extra_smtp: &str) -> String {
    format!(
        r#"
[email]
transport = "smtp"
from = "{FROM}"
to = ["{ONCALL}"]
retry_initial = "20ms"
retry_max = "100ms"

[email.smtp]
host = "127.0.0.1"
port = {port}
tls = "{tls}"
timeout = "5s"
{extra_smtp}
"#
    )
}

fn login_with_ca(pki: &Pki) -> String {
    format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"\nca_file = {:?}\n", pki.ca_file())
}

/// The simulator setup the tests share: these servers are never fixed, so their incidents escalate.
const NEVER_FIXED: &str = r#"
[simulator.servers."cas01.contoso.com"]
fault = "never"
[simulator.servers."cas02.contoso.com"]
fault = "never"
[simulator.servers."mbx02.contoso.com"]
fault = "never"
"#;

/// A CTP alert whose message tries to inject markup and headers, with the `_Mbx:` hint of a real one.
const HOSTILE_MESSAGE: &str = "<script>alert('owned')</script> & \"quoted\"\r\nBcc: evil@example.com\r\nSubject: pwned\r\n\r\n\
                               Diagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";

/// An alert that escalates at once: the proxy test has no documented recovery.
fn proxy_alert() -> String {
    json!({"health_set": "ActiveSync.Proxy", "server": "cas02.contoso.com", "monitor": "ActiveSyncProxyTestMonitor", "message": "proxy probe failed"})
        .to_string()
}

/// Polls until `probe` returns something, for at most [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The incident's one notification, as the API shows it.
async fn notification(app: &TestApp, incident_id: &str) -> Value {
    let (status, incident) = app.admin_get(&format!("/v1/incidents/{incident_id}")).await;
    assert_eq!(status, 200, "{incident}");
    let notifications = incident["notifications"].as_array().expect("notifications").clone();
    assert_eq!(notifications.len(), 1, "{incident:#}");
    notifications[0].clone()
}

/// Waits until the incident's notification satisfies `done`, and returns it.
async fn wait_notification(
    app: &TestApp,
    incident_id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{incident_id}")).await;
        if let Some(notification) =
            incident["notifications"].as_array().and_then(|n| n.first()).filter(|n| done(n))
        {
            return notification.clone();
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}: {incident:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attempts(notification: &Value) -> i64 {
    notification["attempts"].as_i64().unwrap()
}

/// A message read back: its headers, and both parts with line breaks normalised.
pub struct Parsed {
    pub subject: String,
    pub to: Vec<String>,
    pub text: String,
    pub html: String,
    header_block: String,
    has_bcc: bool,
}

pub fn parse(raw: &[u8]) -> Parsed {
    let message = MessageParser::default().parse(raw).expect("the message parses");
    let root = message.root_part().content_type().expect("a content type");
    assert_eq!((root.ctype(), root.subtype()), ("multipart", Some("alternative")));
    let mut text = None;
    let mut html = None;
    for part in &message.parts[1..] {
        match &part.body {
            PartType::Text(body) => text = Some(body.replace("\r\n", "\n")),
            PartType::Html(body) => html = Some(body.replace("\r\n", "\n")),
            other => panic!("unexpected part {other:?}"),
        }
    }
    let raw_text = String::from_utf8_lossy(raw).into_owned();
    Parsed {
        subject: message.subject().unwrap_or_default().to_owned(),
        to: message
            .to()
            .map(|to| to.iter().filter_map(|a| a.address().map(str::to_owned)).collect())
            .unwrap_or_default(),
        text: text.expect("a text part"),
        html: html.expect("an html part"),
        header_block: raw_text.split("\r\n\r\n").next().unwrap_or_default().to_owned(),
        has_bcc: message.bcc().is_some()
            || message
                .parts
                .iter()
                .any(|p| p.headers.iter().any(|h| h.name.as_str().eq_ignore_ascii_case("bcc"))),
    }
}

/// Asserts a fact is in the plain text as written and in the HTML as escaped.
fn in_both(parsed: &Parsed, fact: &str) {
    let escaped = fact
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    assert!(parsed.text.contains(fact), "the text part lacks {fact:?}:\n{}", parsed.text);
    assert!(parsed.html.contains(&escaped), "the html part lacks {escaped:?}:\n{}", parsed.html);
}

#[tokio::test]
async fn starttls_with_login_and_the_test_ca_delivers_everything_on_call_needs() {
    let pki = Pki::new();
    let smtp = SmtpServer::starttls(&pki);
    let app = spawn_app_with(&format!(
        "{INVENTORY}{NEVER_FIXED}{}",
        smtp_config(smtp.port, "starttls", &login_with_ca(&pki))
    ))
    .await;

    let ctp = app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", HOSTILE_MESSAGE)).await;
    let ctp_incident = app.wait_final(&ctp).await;
    assert_eq!(ctp_incident["state"], "escalated", "{ctp_incident:#}");
    smtp.wait_for(1).await;
    let self_test = json!({"health_set": "ActiveSync.Protocol", "server": "mbx02.contoso.com", "monitor": "ActiveSyncSelfTestMonitor", "message": "SelfTest probe failed"});
    let mbx = app.open(&self_test.to_string()).await;
    assert_eq!(app.wait_final(&mbx).await["state"], "escalated");
    let received = smtp.wait_for(2).await;

    // Over STARTTLS (the server offers AUTH only then), logged in, to the configured envelope.
    let ctp_mail = &received[0];
    assert_eq!(
        ctp_mail.user.as_deref(),
        Some(USER),
        "the message came in on an authenticated, encrypted connection"
    );
    assert_eq!(
        (ctp_mail.from.as_str(), ctp_mail.to.as_slice()),
        (FROM, [ONCALL.to_owned()].as_slice())
    );
    let sent = notification(&app, &ctp).await;
    assert_eq!(
        (sent["status"].as_str(), attempts(&sent), &sent["last_error"]),
        (Some("sent"), 1, &Value::Null),
        "{sent:#}"
    );
    assert_eq!(sent["kind"], "escalation");
    assert!(sent["sent_at"].is_string());

    // The subject names state, health set, monitor and server; the hostile text reached no header.
    let parsed = parse(&ctp_mail.raw);
    assert_eq!(
        parsed.subject,
        "[healthset-responder] ESCALATED: ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com"
    );
    assert_eq!(sent["subject"].as_str(), Some(parsed.subject.as_str()));
    assert_eq!(parsed.to, [ONCALL]);
    assert!(!parsed.has_bcc, "{}", parsed.header_block);
    assert!(
        !parsed.header_block.to_ascii_lowercase().contains("pwned")
            && !parsed.header_block.contains("evil@"),
        "{}",
        parsed.header_block
    );
    // ... and is shown, escaped, never as markup.
    assert!(!parsed.html.contains("<script>"), "{}", parsed.html);
    assert!(
        parsed.html.contains(
            "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;"
        ),
        "{}",
        parsed.html
    );
    assert!(parsed.text.contains("> <script>alert('owned')</script> & \"quoted\"\n  > Bcc: evil@example.com\n  > Subject: pwned"), "{}", parsed.text);

    // The alert: health set, monitor, server, _Mbx: server, message, when, from which sender.
    let alert_id = ctp_incident["alert_ids"][0].as_str().unwrap();
    for fact in [
        "ActiveSync",
        "ActiveSyncCTPMonitor",
        "cas01.contoso.com",
        "mbx01.contoso.com",
        "Diagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com",
        "scom (native format)",
        alert_id,
    ] {
        in_both(&parsed, fact);
    }
    assert!(parsed.text.contains("Mailbox server (_Mbx:): mbx01.contoso.com"), "{}", parsed.text);
    assert!(parsed.text.contains("Received:") && parsed.text.contains(" UTC"), "{}", parsed.text);
    // Every step with its time, server, command and outcome.
    let steps = ctp_incident["steps"].as_array().unwrap();
    assert!(steps.len() >= 5, "{ctp_incident:#}");
    for step in steps {
        let time = &step["started_at"].as_str().unwrap()[11..19];
        for field in ["server", "action", "command", "outcome"] {
            in_both(&parsed, step[field].as_str().unwrap());
        }
        in_both(&parsed, time);
    }
    // The final probe result.
    let final_probe = parsed.text.split("FINAL PROBE").nth(1).expect("a final probe section");
    assert!(
        final_probe
            .trim_start_matches(['-', '\n'])
            .starts_with("Outcome: failed on cas01.contoso.com"),
        "{final_probe}"
    );
    // What a human must know now.
    assert!(parsed.text.contains("WHAT YOU MUST KNOW NOW"));
    in_both(&parsed, "Already done by automation: recycle_app_pool on cas01.contoso.com");
    // Microsoft Support guidance.
    for fact in [
        "Microsoft Support professional",
        "organisation's own procedure",
        "Support for business",
        "https://support.microsoft.com/supportforbusiness/productselection",
    ] {
        in_both(&parsed, fact);
    }
    assert!(parsed.text.contains("Choose Servers > Exchange Server."));
    // The incident id and the replay command.
    in_both(&parsed, &ctp);
    in_both(&parsed, &format!("healthset-responder replay {alert_id}"));

    // The Mailbox server left with database activation disabled: said first, with the command to undo it.
    let parsed = parse(&received[1].raw);
    assert_eq!(parsed.subject, "[healthset-responder] ESCALATED: ActiveSync.Protocol ActiveSyncSelfTestMonitor on mbx02.contoso.com");
    let must_know = parsed
        .text
        .split("WHAT YOU MUST KNOW NOW")
        .nth(1)
        .unwrap()
        .split("FINAL PROBE")
        .next()
        .unwrap()
        .to_owned();
    assert!(
        must_know.contains("Database activation is still disabled on mbx02.contoso.com"),
        "{must_know}"
    );
    assert!(
        must_know.contains(
            "Set-MailboxServer mbx02.contoso.com -DatabaseCopyActivationDisabledAndMoveNow $false"
        ),
        "{must_know}"
    );
    assert_eq!(smtp.accepted().len(), 2, "nothing was sent twice");
}

#[tokio::test]
async fn without_the_internal_ca_the_certificate_is_refused_and_the_email_waits() {
    let pki = Pki::new();
    let smtp = SmtpServer::starttls(&pki);
    let login = format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"\n");
    let app = spawn_app_with(&format!(
        "{INVENTORY}{NEVER_FIXED}{}",
        smtp_config(smtp.port, "starttls", &login)
    ))
    .await;
    let incident = app.open(&proxy_alert()).await;
    let failing =
        wait_notification(&app, &incident, "two failed attempts", |n| attempts(n) >= 2).await;
    assert_eq!(failing["status"], "pending");
    let error = failing["last_error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("smtp 127.0.0.1:{}: STARTTLS: ", smtp.port))
            && error.contains("certificate"),
        "{error}"
    );
    assert!(smtp.accepted().is_empty());
}

#[tokio::test]
async fn implicit_tls_speaks_tls_from_the_first_byte() {
    // mailin-embedded offers only STARTTLS, so implicit TLS is shown by what a plain-text greeting does to it.
    let pki = Pki::new();
    let smtp = SmtpServer::starttls(&pki);
    let ca = format!("ca_file = {:?}\n", pki.ca_file());
    let app =
        spawn_app_with(&format!("{INVENTORY}{NEVER_FIXED}{}", smtp_config(smtp.port, "tls", &ca)))
            .await;
    let incident = app.open(&proxy_alert()).await;
    let failing =
        wait_notification(&app, &incident, "a failed attempt", |n| attempts(n) >= 1).await;
    let error = failing["last_error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("smtp 127.0.0.1:{}: connect: ", smtp.port))
            && error.contains("InvalidContentType"),
        "rustls read a plain-text greeting as a TLS record: {error}"
    );
    assert!(smtp.accepted().is_empty());
}

#[tokio::test]
async fn plain_smtp_routes_recipients_and_sends_recovered_notices_when_asked() {
    let smtp = SmtpServer::plain();
    let routes = r#"
notify_on = ["escalated", "blocked", "recovered"]

[[email.routes]]
servers = ["MBX*"]
to = ["mailbox-team@contoso.com", "dba@contoso.com"]

[[email.routes]]
health_sets = ["ActiveSync.Proxy"]
monitors = ["ActiveSyncProxyTestMonitor"]
to = ["cas-team@contoso.com"]
"#;
    // The route keys belong to [email]; they go right after its other keys.
    let config = smtp_config(smtp.port, "none", "")
        .replace("retry_max = \"100ms\"\n", &format!("retry_max = \"100ms\"\n{routes}"));
    let simulator = "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"\n";
    let app = spawn_app_with(
        &format!("{INVENTORY}{NEVER_FIXED}{config}")
            .replace("[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\"\n", simulator),
    )
    .await;

    // (alert, final state, notification kind, envelope recipients)
    let self_test = json!({"health_set": "ActiveSync.Protocol", "server": "mbx02.contoso.com", "monitor": "ActiveSyncSelfTestMonitor", "message": "x"});
    let cases = [
        (proxy_alert(), "escalated", "escalation", vec!["cas-team@contoso.com"]),
        (
            self_test.to_string(),
            "escalated",
            "escalation",
            vec!["mailbox-team@contoso.com", "dba@contoso.com"],
        ),
        (
            native("cas01.contoso.com", "ActiveSyncCTPMonitor", "probe failed"),
            "recovered",
            "recovered",
            vec![ONCALL],
        ),
    ];
    for (n, (alert, state, kind, to)) in cases.iter().enumerate() {
        let incident = app.open(alert).await;
        assert_eq!(app.wait_final(&incident).await["state"], *state);
        let received = smtp.wait_for(n + 1).await;
        let mail = received.last().unwrap();
        assert_eq!(mail.to, *to, "{alert}");
        assert_eq!(parse(&mail.raw).to, *to);
        let sent =
            wait_notification(&app, &incident, "the notification sent", |n| n["status"] == "sent")
                .await;
        assert_eq!(
            (sent["kind"].as_str(), sent["to"].clone()),
            (Some(*kind), json!(to)),
            "{sent:#}"
        );
        assert_eq!(mail.user, None, "plain SMTP offers no login");
    }
    let notice = parse(&smtp.accepted()[2].raw);
    assert_eq!(
        notice.subject,
        "[healthset-responder] RECOVERED: ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com"
    );
    assert!(notice.text.contains("Automation fixed this."), "{}", notice.text);
}

#[tokio::test]
async fn a_server_that_is_down_and_comes_back_gets_the_email_exactly_once() {
    let port = free_port();
    let app =
        spawn_app_with(&format!("{INVENTORY}{NEVER_FIXED}{}", smtp_config(port, "none", ""))).await;
    let incident = app.open(&proxy_alert()).await;
    let failing =
        wait_notification(&app, &incident, "three refused connections", |n| attempts(n) >= 3).await;
    assert_eq!(failing["status"], "pending");
    assert!(
        failing["last_error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("smtp 127.0.0.1:{port}: connect: ")),
        "{failing:#}"
    );

    let smtp = SmtpServer::plain_on(port);
    let sent =
        wait_notification(&app, &incident, "the notification sent", |n| n["status"] == "sent")
            .await;
    assert!(attempts(&sent) >= 4, "{sent:#}");
    assert!(
        sent["last_error"].as_str().unwrap().contains("connect"),
        "the error that delayed it stays visible: {sent:#}"
    );
    // Many retry periods later, still one message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.accepted().len(), 1);
    assert_eq!(smtp.data_attempts(), 1);
    assert_eq!(notification(&app, &incident).await, sent);
}

#[tokio::test]
async fn answers_4xx_are_retried_and_the_message_arrives_once() {
    let smtp = SmtpServer::plain();
    // Greylisted at RCPT TO, then refused for now at the end of DATA, then taken.
    smtp.answer_rcpt_with(&[(450, "4.2.0 greylisted, come back later")]);
    smtp.answer_data_with(&[(451, "4.3.0 mail server temporarily unavailable, try again later")]);
    // mailin does not answer the QUIT that follows a refused DATA, so the goodbye waits out this timeout.
    let config = smtp_config(smtp.port, "none", "").replace("timeout = \"5s\"", "timeout = \"1s\"");
    let app = spawn_app_with(&format!("{INVENTORY}{NEVER_FIXED}{config}")).await;
    let incident = app.open(&proxy_alert()).await;
    let greylisted =
        wait_notification(&app, &incident, "a first attempt", |n| attempts(n) >= 1).await;
    assert!(
        greylisted["last_error"].as_str().unwrap().ends_with(&format!(
            "RCPT TO:<{ONCALL}>: transient error (450): 4.2.0 greylisted, come back later"
        )),
        "{greylisted:#}"
    );
    let sent =
        wait_notification(&app, &incident, "the notification sent", |n| n["status"] == "sent")
            .await;
    assert_eq!(attempts(&sent), 3, "{sent:#}");
    let error = sent["last_error"].as_str().unwrap();
    assert!(error.ends_with("the message: transient error (451): 4.3.0 mail server temporarily unavailable, try again later"), "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((smtp.data_attempts(), smtp.accepted().len()), (2, 1));
}

#[tokio::test]
async fn a_permanent_refusal_is_kept_visible_retried_on_the_policy_and_sent_once_fixed() {
    let smtp = SmtpServer::plain();
    smtp.refuse_rcpt(Some((550, "5.7.1 relaying denied for oncall@contoso.com")));
    let config = smtp_config(smtp.port, "none", "")
        .replace("retry_initial = \"20ms\"", "retry_initial = \"50ms\"");
    let app = spawn_app_with(&format!("{INVENTORY}{NEVER_FIXED}{config}")).await;
    let incident = app.open(&proxy_alert()).await;
    let first = wait_notification(&app, &incident, "a refusal", |n| attempts(n) >= 1).await;
    let started = Instant::now();
    let failing = wait_notification(&app, &incident, "three refusals", |n| attempts(n) >= 3).await;
    assert_eq!(failing["status"], "pending", "{failing:#}");
    let error = failing["last_error"].as_str().unwrap();
    assert_eq!(error, format!("smtp 127.0.0.1:{}: RCPT TO:<{ONCALL}>: permanent error (550): 5.7.1 relaying denied for {ONCALL}", smtp.port));
    // Backed off: at least 50ms then 80ms (100ms less jitter) between the tries, not a tight loop.
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?} for {} more attempts",
        started.elapsed(),
        attempts(&failing) - attempts(&first)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = notification(&app, &incident).await;
    assert!(
        attempts(&later) > attempts(&failing) && attempts(&later) <= attempts(&failing) + 8,
        "{later:#}"
    );

    // The relay is fixed: the kept message goes out, once.
    smtp.refuse_rcpt(None);
    let sent =
        wait_notification(&app, &incident, "the notification sent", |n| n["status"] == "sent")
            .await;
    assert!(sent["last_error"].as_str().unwrap().contains("permanent error (550)"), "{sent:#}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.accepted().len(), 1);
}

#[tokio::test]
async fn a_restart_while_the_server_is_down_still_delivers_exactly_once() {
    let port = free_port();
    let mut app =
        spawn_app_with(&format!("{INVENTORY}{NEVER_FIXED}{}", smtp_config(port, "none", ""))).await;
    let incident = app.open(&proxy_alert()).await;
    let before =
        wait_notification(&app, &incident, "a refused connection", |n| attempts(n) >= 1).await;

    app.restart().await;
    let after = attempts(&notification(&app, &incident).await);
    assert!(after >= attempts(&before));
    wait_notification(&app, &incident, "a retry after the restart", |n| attempts(n) > after).await;

    let smtp = SmtpServer::plain_on(port);
    let sent =
        wait_notification(&app, &incident, "the notification sent", |n| n["status"] == "sent")
            .await;
    assert_eq!(sent["to"], json!([ONCALL]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((smtp.data_attempts(), smtp.accepted().len()), (1, 1));
    assert_eq!(parse(&smtp.accepted()[0].raw).subject, "[healthset-responder] ESCALATED: ActiveSync.Proxy ActiveSyncProxyTestMonitor on cas02.contoso.com");
}

/// Runs `healthset-responder check-config --send-test-email` with the given config, bounded in time.
async fn check_config_send_test_email(config: &Path) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_healthset-responder"));
    command
        .args(["check-config", "--send-test-email", "--config"])
        .arg(config)
        .env("HSR_SMTP_PASSWORD", PASSWORD)
        .env_remove("HSR_CONFIG")
        .kill_on_drop(true);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("check-config finishes")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_config_sends_a_test_email_and_reports_the_conversation() {
    let pki = Pki::new();
    let smtp = SmtpServer::starttls(&pki);
    let dir = tempfile::tempdir().unwrap();
    // The password comes from HSR_SMTP_PASSWORD, not the file.
    let smtp_keys = format!("username = \"{USER}\"\nca_file = {:?}\n", pki.ca_file());
    let config = dir.path().join("healthset-responder.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n{}",
            dir.path().join("data"),
            smtp_config(smtp.port, "starttls", &smtp_keys)
        ),
    )
    .unwrap();

    let (code, stdout, stderr) = check_config_send_test_email(&config).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "configuration OK",
        &format!("sending a test email from {FROM} to {ONCALL} through smtp 127.0.0.1:{} (starttls, login as {USER}, extra CA", smtp.port),
        &format!("connected to smtp 127.0.0.1:{}: the server (EHLO name \"server\") offers STARTTLS, 8BITMIME", smtp.port),
        "STARTTLS: encrypted, the certificate is valid for 127.0.0.1; the server now offers 8BITMIME, AUTH PLAIN LOGIN",
        &format!("AUTH as {USER}: 235 Authentication succeeded"),
        &format!("RCPT TO:<{ONCALL}>: 250 OK"),
        "test email accepted: 250 OK",
    ] {
        assert!(stdout.contains(line), "stdout lacks {line:?}:\n{stdout}");
    }
    let received = smtp.wait_for(1).await;
    assert_eq!(received[0].user.as_deref(), Some(USER));
    let message = MessageParser::default().parse(&received[0].raw).unwrap();
    assert!(
        message
            .subject()
            .unwrap()
            .starts_with("[healthset-responder] TEST: escalation email from "),
        "{:?}",
        message.subject()
    );
    assert!(message.body_text(0).unwrap().contains("check-config --send-test-email"));

    // A refusal: exit 1, and the server's own answer on stderr.
    smtp.refuse_rcpt(Some((550, "5.1.1 no such mailbox here")));
    let (code, stdout, stderr) = check_config_send_test_email(&config).await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(&format!("AUTH as {USER}: 235")), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "error: test email not sent: smtp 127.0.0.1:{}: RCPT TO:<{ONCALL}>: permanent error (550): 5.1.1 no such mailbox here",
            smtp.port
        )),
        "{stderr}"
    );
    assert_eq!(smtp.accepted().len(), 1);
}

#[tokio::test]
async fn a_relays_own_self_signed_certificate_is_trusted_when_pinned() {
    let exchange = Pki::self_signed();
    let smtp = SmtpServer::starttls(&exchange);
    let login = format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"\n");
    let pinned = format!("{login}pin_certificate = {:?}\n", exchange.server_certificate());
    let app = spawn_app_with(&format!(
        "{INVENTORY}{NEVER_FIXED}{}",
        smtp_config(smtp.port, "starttls", &pinned)
    ))
    .await;
    let incident = app.open(&proxy_alert()).await;
    let received = smtp.wait_for(1).await;
    assert_eq!(received[0].user.as_deref(), Some(USER), "AUTH ran over the pinned TLS connection");
    let sent =
        wait_notification(&app, &incident, "the escalation sent", |n| n["status"] == "sent").await;
    assert_eq!(sent["status"], "sent");
}

#[tokio::test]
async fn a_self_signed_relay_is_refused_as_a_ca_and_another_certificate_is_refused_when_pinned() {
    let exchange = Pki::self_signed();
    let smtp = SmtpServer::starttls(&exchange);
    let login = format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"\n");

    // What ca_file does with it: a CA certificate presented as the server's own is refused.
    let as_ca = format!("{login}ca_file = {:?}\n", exchange.ca_file());
    let app = spawn_app_with(&format!(
        "{INVENTORY}{NEVER_FIXED}{}",
        smtp_config(smtp.port, "starttls", &as_ca)
    ))
    .await;
    let incident = app.open(&proxy_alert()).await;
    let failing =
        wait_notification(&app, &incident, "a failed attempt", |n| attempts(n) >= 1).await;
    assert!(failing["last_error"].as_str().unwrap().contains("STARTTLS"), "{failing}");

    // Pinning some other certificate: the relay's is not it, and nothing is sent.
    let other = Pki::self_signed();
    let wrong_pin = format!("{login}pin_certificate = {:?}\n", other.server_certificate());
    let app = spawn_app_with(&format!(
        "{INVENTORY}{NEVER_FIXED}{}",
        smtp_config(smtp.port, "starttls", &wrong_pin)
    ))
    .await;
    let incident = app.open(&proxy_alert()).await;
    let failing =
        wait_notification(&app, &incident, "two failed attempts", |n| attempts(n) >= 2).await;
    assert_eq!(failing["status"], "pending");
    let error = failing["last_error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("smtp 127.0.0.1:{}: STARTTLS: ", smtp.port))
            && error.contains("pin_certificate"),
        "{error}"
    );
    assert!(smtp.accepted().is_empty(), "no message went to a relay that is not the pinned one");
}
