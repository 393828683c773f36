//! Composes realistic incidents, parses the formatted bytes back with an independent MIME parser, and checks what
//! SPEC section 7 promises is in both parts; sends through the outbox end to end.

use std::path::Path;

use mail_parser::{HeaderName as ParsedHeader, MessageParser, MimeHeaders, PartType};

use super::content::escape;
use super::EmailConfig;
use super::*;
use crate::store::StepView;

const INCIDENT_ID: &str = "0193a6d2-7c1e-7b3a-9f00-1234567890ab";
const FIRST_ALERT: &str = "0193a6d2-7a00-7000-8000-00000000a001";
const MESSAGE: &str = "ActiveSync CTP probe failed on CAS01. Diagnostics: \
                       _Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_FAIL/HTTP:503 Größe ü";

fn step(
    seq: i64,
    action: &str,
    server: &str,
    command: &str,
    times: (&str, &str),
    outcome: &str,
    detail: &str,
) -> StepView {
    StepView {
        seq,
        action: action.into(),
        server: server.into(),
        command: command.into(),
        started_at: format!("2026-11-26T{}.000Z", times.0),
        finished_at: Some(format!("2026-11-26T{}.000Z", times.1)),
        outcome: Some(outcome.into()),
        detail: detail.into(),
        managed_availability: Vec::new(),
    }
}

fn probe(
    seq: i64,
    server: &str,
    probe: &str,
    times: (&str, &str),
    outcome: &str,
    detail: &str,
) -> StepView {
    step(
        seq,
        "probe",
        server,
        &format!("Invoke-MonitoringProbe {probe} -Server {server} | Format-List"),
        times,
        outcome,
        detail,
    )
}

const CTP: &str = r"ActiveSync\ActiveSyncCTPProbe";
const DEEP: &str = r"ActiveSync.Protocol\ActiveSyncDeepTestProbe";

/// A CTP incident as the engine leaves it: the CAS recycled and reset, the Mailbox server's own runbook up to a
/// restart whose probe still fails (activation stays disabled), the CAS still failing.
fn ctp_steps() -> Vec<StepView> {
    let cas = "cas01.contoso.com";
    let mbx = "mbx01.contoso.com";
    let failed = |p: &str| {
        format!("{p}: ResultType Failed; Error occurred: Response: 503 Service Unavailable")
    };
    vec![
        probe(1, cas, CTP, ("10:00:03", "10:00:07"), "failed", &failed(CTP)),
        step(
            2,
            "recycle_app_pool",
            cas,
            "Invoke-Command -ComputerName cas01.contoso.com { Restart-WebAppPool -Name MSExchangeSyncAppPool }",
            ("10:00:08", "10:00:20"),
            "done",
            "MSExchangeSyncAppPool recycled",
        ),
        probe(3, cas, CTP, ("10:00:21", "10:00:25"), "failed", &failed(CTP)),
        step(4, "iis_reset", cas, "Invoke-Command -ComputerName cas01.contoso.com { iisreset }", ("10:00:26", "10:01:02"), "done", "IIS restarted"),
        probe(5, cas, CTP, ("10:01:03", "10:01:07"), "failed", &failed(CTP)),
        step(
            6,
            "server_health",
            mbx,
            "Get-ServerHealth mbx01.contoso.com | ?{$_.HealthSetName -like \"ActiveSync*\"}",
            ("10:01:08", "10:01:10"),
            "unhealthy",
            "Unhealthy: ActiveSyncDeepTestMonitor",
        ),
        step(
            7,
            "disable_activation",
            mbx,
            "Set-MailboxServer mbx01.contoso.com -DatabaseCopyActivationDisabledAndMoveNow $true",
            ("10:01:11", "10:01:40"),
            "done",
            "3 active copies moved",
        ),
        step(
            8,
            "copy_status",
            mbx,
            "Get-MailboxDatabaseCopyStatus -Server mbx01.contoso.com | Group Status",
            ("10:01:41", "10:01:43"),
            "no_active_copies",
            "Mounted: 0, Healthy: 3",
        ),
        step(
            9,
            "restart_server",
            mbx,
            "Restart-Computer -ComputerName mbx01.contoso.com -Force -Wait -For WinRM",
            ("10:01:44", "10:09:12"),
            "done",
            "mbx01.contoso.com restarted and answering",
        ),
        probe(10, mbx, DEEP, ("10:09:13", "10:09:18"), "failed", &failed(DEEP)),
        probe(11, cas, CTP, ("10:09:19", "10:09:24"), "failed", "ActiveSync\\ActiveSyncCTPProbe: ResultType Failed; the final word"),
    ]
}

fn alert(id: &str, sender: &str, format: &str, received: &str, message: &str) -> AlertSummary {
    AlertSummary {
        id: id.into(),
        received_at: received.into(),
        sender: sender.into(),
        format: format.into(),
        health_set: "ActiveSync".into(),
        server: "cas01.contoso.com".into(),
        monitor: Some("ActiveSyncCTPMonitor".into()),
        mailbox_hint: Some("mbx01.contoso.com".into()),
        message: message.into(),
        status: "firing".into(),
        raised_at: Some("2026-11-26T09:59:30Z".into()),
        incident_id: Some(INCIDENT_ID.into()),
        disposition: "new_incident".into(),
    }
}

fn alerts() -> Vec<AlertSummary> {
    vec![
        alert(FIRST_ALERT, "scom", "scom", "2026-11-26T10:00:02.120Z", MESSAGE),
        alert(
            "0193a6d2-7a00-7000-8000-00000000a002",
            "alertmanager",
            "alertmanager",
            "2026-11-26T10:05:00.000Z",
            "still failing",
        ),
    ]
}

fn incident(state: &str, reason: &str, steps: Vec<StepView>) -> IncidentView {
    IncidentView {
        id: INCIDENT_ID.into(),
        state: state.into(),
        dry_run: false,
        health_set: "ActiveSync".into(),
        monitor: Some("ActiveSyncCTPMonitor".into()),
        server: "cas01.contoso.com".into(),
        mailbox_hint: Some("mbx01.contoso.com".into()),
        alert_ids: vec![FIRST_ALERT.into(), "0193a6d2-7a00-7000-8000-00000000a002".into()],
        created_at: "2026-11-26T10:00:02.130Z".into(),
        updated_at: "2026-11-26T10:09:24.500Z".into(),
        reason: Some(reason.into()),
        resolved_notice_at: None,
        replay_of: None,
        steps: Some(steps),
        notifications: None,
        approval: None,
    }
}

fn mbx01() -> Vec<ServerName> {
    vec![ServerName::parse("mbx01.contoso.com").unwrap()]
}

/// The formatted message, and its decoded plain text and HTML parts, checked to be exactly one of each inside
/// `multipart/alternative`.
struct Parsed {
    raw: Vec<u8>,
    subject: String,
    text: String,
    html: String,
}

fn parse(raw: Vec<u8>) -> Parsed {
    let message = MessageParser::default().parse(&raw).expect("the message parses");
    let root = message.root_part().content_type().expect("a content type");
    assert_eq!((root.ctype(), root.subtype()), ("multipart", Some("alternative")));
    assert_eq!(message.parts.len(), 3, "multipart/alternative with two parts");
    let mut text = None;
    let mut html = None;
    for part in &message.parts[1..] {
        let ct = part.content_type().unwrap();
        assert_eq!(ct.attribute("charset").map(str::to_ascii_lowercase).as_deref(), Some("utf-8"));
        match (&part.body, ct.subtype()) {
            (PartType::Text(body), Some("plain")) => text = Some(body.replace("\r\n", "\n")),
            (PartType::Html(body), Some("html")) => html = Some(body.replace("\r\n", "\n")),
            other => panic!("unexpected part {other:?}"),
        }
    }
    Parsed {
        subject: message.subject().unwrap().to_owned(),
        text: text.expect("a text part"),
        html: html.expect("an html part"),
        raw: raw.clone(),
    }
}

fn compose_parsed(escalation: &Escalation) -> Parsed {
    let message = compose(
        escalation,
        "healthset-responder@contoso.com",
        &["oncall@contoso.com".into(), "exchange-team@contoso.com".into()],
    )
    .unwrap();
    parse(message.formatted())
}

/// Asserts a fact is in the plain text as written and in the HTML as escaped.
fn in_both(parsed: &Parsed, fact: &str) {
    assert!(parsed.text.contains(fact), "text part lacks {fact:?}:\n{}", parsed.text);
    assert!(parsed.html.contains(&escape(fact)), "html part lacks {fact:?}:\n{}", parsed.html);
}

#[test]
fn an_escalated_ctp_incident_carries_everything_section_7_lists() {
    let incident = incident("escalated", "probe still failing after all remedies", ctp_steps());
    let alerts = alerts();
    let disabled = mbx01();
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &disabled,
        activation_left_as_found: &[],
        suppressed_escalations: 0,
    };
    let parsed = compose_parsed(&escalation);

    // Headers.
    let expected_subject =
        "[healthset-responder] ESCALATED: ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com";
    assert_eq!(subject(&escalation), expected_subject);
    assert_eq!(parsed.subject, expected_subject);
    assert_eq!(kind(&escalation), "escalation");
    let message = MessageParser::default().parse(&parsed.raw).unwrap();
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("healthset-responder@contoso.com"));
    assert_eq!(from.name(), Some("healthset-responder"));
    let to: Vec<_> = message.to().unwrap().iter().filter_map(|a| a.address()).collect();
    assert_eq!(to, ["oncall@contoso.com", "exchange-team@contoso.com"]);
    assert!(message.date().is_some());
    assert!(message.message_id().unwrap().ends_with("@contoso.com"));
    assert_eq!(message.header_raw("Auto-Submitted").map(str::trim), Some("auto-generated"));
    assert_eq!(message.header_raw("Importance").map(str::trim), Some("high"));
    assert_eq!(
        message.header_raw("X-Healthset-Responder-Incident").map(str::trim),
        Some(INCIDENT_ID)
    );

    // The alert: health set, monitor, server, _Mbx: server, message, when, from which sender.
    for fact in
        ["ActiveSync", "ActiveSyncCTPMonitor", "cas01.contoso.com", "mbx01.contoso.com", MESSAGE]
    {
        in_both(&parsed, fact);
    }
    in_both(&parsed, "2026-11-26 09:59:30 UTC"); // raised
    in_both(&parsed, "2026-11-26 10:00:02 UTC"); // received
    in_both(&parsed, "scom (scom format)");
    in_both(&parsed, FIRST_ALERT);
    in_both(&parsed, "alertmanager"); // the second alert is listed
                                      // The reason.
    in_both(&parsed, "probe still failing after all remedies");
    // Every step: time, server, action, command, outcome, detail.
    for step in ctp_steps() {
        let time = &step.started_at[11..19];
        for fact in [
            time,
            &step.server,
            &step.action,
            &step.command,
            step.outcome.as_deref().unwrap(),
            &step.detail,
        ] {
            in_both(&parsed, fact);
        }
        in_both(&parsed, &format!("#{}", step.seq));
    }
    in_both(&parsed, "7m 28s"); // how long the restart took
                                // The final probe result: the last probe, not an earlier one.
    assert!(parsed.text.contains("\nFINAL PROBE\n") && parsed.html.contains(">Final probe</h2>"));
    let final_section =
        parsed.text.split("FINAL PROBE").nth(1).unwrap().split("THE ALERT").next().unwrap();
    assert!(
        final_section.contains("Outcome: failed on cas01.contoso.com at 2026-11-26 10:09:24 UTC"),
        "{final_section}"
    );
    assert!(final_section.contains("the final word"), "{final_section}");
    // What a human must know now.
    assert!(
        parsed.text.contains("WHAT YOU MUST KNOW NOW")
            && parsed.html.contains("What you must know now")
    );
    in_both(&parsed, "Database activation is still disabled on mbx01.contoso.com. When it is healthy, re-enable it with:");
    in_both(
        &parsed,
        "Set-MailboxServer mbx01.contoso.com -DatabaseCopyActivationDisabledAndMoveNow $false",
    );
    in_both(&parsed, "Already done by automation: recycle_app_pool on cas01.contoso.com, iis_reset on cas01.contoso.com, disable_activation on mbx01.contoso.com, restart_server on mbx01.contoso.com.");
    // Microsoft Support guidance.
    for fact in [
        "Microsoft Support professional",
        "Microsoft Product Support Services",
        "organisation's own procedure",
        "Support for business",
        content::SUPPORT_URL,
    ] {
        in_both(&parsed, fact);
    }
    assert!(parsed.text.contains("Choose Servers > Exchange Server."));
    assert!(parsed
        .html
        .contains("Choose <strong>Servers</strong> &gt; <strong>Exchange Server</strong>."));
    assert!(parsed.html.contains(&format!("<a href=\"{}\"", content::SUPPORT_URL)));
    // The incident id and the replay command.
    in_both(&parsed, INCIDENT_ID);
    in_both(&parsed, &format!("healthset-responder replay {FIRST_ALERT}"));
    in_both(&parsed, &format!("healthset-responder replay {FIRST_ALERT} --dry-run"));
    in_both(&parsed, &format!("healthset-responder incidents show {INCIDENT_ID}"));
    // Not a dry run, nothing held back.
    assert!(!parsed.text.contains("dry run") && !parsed.text.contains("held back"));
    // Phone-ready HTML.
    assert!(parsed
        .html
        .contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"));
}

#[test]
fn alert_text_is_escaped_in_html_and_never_reaches_a_header() {
    let evil = "<script>alert('x')</script> & \"quotes\"\r\nBcc: evil@example.com\r\n\r\nbody?";
    let mut incident =
        incident("escalated", "probe still failing\r\nBcc: evil@example.com", ctp_steps());
    incident.monitor = Some("ActiveSyncCTPMonitor\r\nBcc: evil@example.com".into());
    let mut alerts = alerts();
    alerts[0].message = evil.into();
    alerts[0].sender = "scom<b>".into();
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &[],
        activation_left_as_found: &[],
        suppressed_escalations: 0,
    };
    let parsed = compose_parsed(&escalation);

    assert!(!parsed.html.contains("<script>") && !parsed.html.contains("scom<b>"));
    assert!(parsed
        .html
        .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quotes&quot;"));
    assert!(parsed.html.contains("scom&lt;b&gt;"));
    // The plain text keeps the words, quoted, with the line break normalised.
    assert!(
        parsed
            .text
            .contains("  > <script>alert('x')</script> & \"quotes\"\n  > Bcc: evil@example.com"),
        "{}",
        parsed.text
    );

    // No Bcc header anywhere: not in the message, not in a part, not in the raw header block.
    let message = MessageParser::default().parse(&parsed.raw).unwrap();
    assert!(message.bcc().is_none());
    for part in &message.parts {
        assert!(
            part.headers.iter().all(
                |h| h.name != ParsedHeader::Bcc && !h.name.as_str().eq_ignore_ascii_case("bcc")
            ),
            "{:?}",
            part.headers
        );
    }
    let raw = String::from_utf8(parsed.raw.clone()).unwrap();
    let header_block = raw.split("\r\n\r\n").next().unwrap();
    assert!(
        header_block.lines().all(|l| !l.trim_start().to_ascii_lowercase().starts_with("bcc")),
        "{header_block}"
    );
    assert!(!subject(&escalation).contains(['\r', '\n']));
    assert_eq!(parsed.subject, "[healthset-responder] ESCALATED: ActiveSync ActiveSyncCTPMonitorBcc:evil@example.com on cas01.contoso.com");
    // The envelope is only what compose was given.
    let composed = compose(&escalation, "hsr@contoso.com", &["oncall@contoso.com".into()]).unwrap();
    assert_eq!(
        composed.envelope().to().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        ["oncall@contoso.com"]
    );
}

#[test]
fn a_dry_run_says_so_in_the_subject_and_the_body() {
    let mut incident = incident("escalated", "probe still failing after all remedies", ctp_steps());
    incident.dry_run = true;
    let alerts = alerts();
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &[],
        activation_left_as_found: &[],
        suppressed_escalations: 0,
    };
    assert_eq!(subject(&escalation), "[healthset-responder] DRY RUN ESCALATED: ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com");
    let parsed = compose_parsed(&escalation);
    assert!(parsed.subject.starts_with("[healthset-responder] DRY RUN ESCALATED: "));
    in_both(&parsed, "This was a dry run: nothing was changed on any server.");
    in_both(&parsed, "escalated (dry run)");
}

#[test]
fn activation_left_disabled_is_a_warning_with_the_command() {
    let incident = incident("escalated", "probe still failing after all remedies", ctp_steps());
    let alerts = alerts();
    let disabled = vec![
        ServerName::parse("mbx01.contoso.com").unwrap(),
        ServerName::parse("MBX02.contoso.com").unwrap(),
    ];
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &disabled,
        activation_left_as_found: &[],
        suppressed_escalations: 0,
    };
    let parsed = compose_parsed(&escalation);
    for server in ["mbx01.contoso.com", "mbx02.contoso.com"] {
        in_both(&parsed, &format!("Database activation is still disabled on {server}. When it is healthy, re-enable it with:"));
        in_both(
            &parsed,
            &format!("Set-MailboxServer {server} -DatabaseCopyActivationDisabledAndMoveNow $false"),
        );
    }
    // It comes before everything else the reader must know.
    let notes = parsed.text.split("WHAT YOU MUST KNOW NOW").nth(1).unwrap();
    assert!(
        notes
            .trim_start_matches(['-', '\n'])
            .starts_with("* Database activation is still disabled on mbx01.contoso.com"),
        "{notes}"
    );
}

#[test]
fn a_blocked_incident_says_what_blocked_it() {
    let steps = vec![
        probe(1, "cas01.contoso.com", CTP, ("10:00:03", "10:00:07"), "failed", "ActiveSync\\ActiveSyncCTPProbe: ResultType Failed"),
        step(
            2,
            "restart_server",
            "cas01.contoso.com",
            "Restart-Computer -ComputerName cas01.contoso.com -Force -Wait -For WinRM",
            ("10:00:08", "10:00:08"),
            "throttled",
            "restart_server: at most 1 per day on cas01.contoso.com, last at 2026-11-26 02:10:00 UTC",
        ),
    ];
    let incident = incident("blocked", "throttled: restart_server on cas01.contoso.com", steps);
    let alerts = alerts();
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &[],
        activation_left_as_found: &[],
        suppressed_escalations: 2,
    };
    assert_eq!(
        subject(&escalation),
        "[healthset-responder] BLOCKED: ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com"
    );
    let parsed = compose_parsed(&escalation);
    in_both(&parsed, "What blocked automation: throttled: restart_server on cas01.contoso.com.");
    in_both(
        &parsed,
        "The restart_server step on cas01.contoso.com was not run: a safety throttle forbids it",
    );
    in_both(&parsed, "Restart-Computer -ComputerName cas01.contoso.com -Force -Wait -For WinRM");
    in_both(&parsed, "2 more escalations for ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com were held back since the last email");
    in_both(&parsed, content::SUPPORT_URL);
}

#[test]
fn a_blocked_incident_without_steps_or_alerts_still_reads() {
    let mut incident = incident(
        "blocked",
        "no _Mbx: hint in the alert; cannot verify the Mailbox server",
        Vec::new(),
    );
    incident.mailbox_hint = None;
    incident.monitor = None;
    let escalation = Escalation {
        incident: &incident,
        alerts: &[],
        activation_disabled: &[],
        activation_left_as_found: &[],
        suppressed_escalations: 1,
    };
    assert_eq!(
        subject(&escalation),
        "[healthset-responder] BLOCKED: ActiveSync on cas01.contoso.com"
    );
    let parsed = compose_parsed(&escalation);
    in_both(&parsed, "No probe or health check ran before automation stopped.");
    in_both(&parsed, "none in the alert message");
    in_both(&parsed, "1 more escalation for ActiveSync on cas01.contoso.com was held back");
    // Without stored alerts the replay command falls back to the incident's alert ids.
    in_both(&parsed, &format!("healthset-responder replay {FIRST_ALERT}"));
}

#[test]
fn a_recovered_notice_is_calm() {
    let steps = ctp_steps()
        .into_iter()
        .take(2)
        .chain([probe(3, "cas01.contoso.com", CTP, ("10:00:21", "10:00:25"), "succeeded", "ok")])
        .collect();
    let incident = incident("recovered", "recycle_app_pool on cas01.contoso.com fixed it", steps);
    let alerts = alerts();
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &[],
        activation_left_as_found: &[],
        suppressed_escalations: 0,
    };
    assert_eq!(kind(&escalation), "recovered");
    let parsed = compose_parsed(&escalation);
    assert!(parsed.subject.starts_with("[healthset-responder] RECOVERED: "));
    in_both(&parsed, "Automation fixed this. Nothing needs doing.");
    assert!(!parsed.text.contains("Microsoft Support professional"));
    let message = MessageParser::default().parse(&parsed.raw).unwrap();
    assert!(message.header_raw("Importance").is_none());
}

#[test]
fn bad_addresses_name_the_key() {
    let incident = incident("escalated", "x", Vec::new());
    let escalation = Escalation {
        incident: &incident,
        alerts: &[],
        activation_disabled: &[],
        activation_left_as_found: &[],
        suppressed_escalations: 0,
    };
    let err = compose(&escalation, "not an address", &["oncall@contoso.com".into()])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("email.from: "), "{err}");
    let err =
        compose(&escalation, "hsr@contoso.com", &["oncall@contoso.com".into(), "nobody".into()])
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("email.to[1]: "), "{err}");
    let err = compose(&escalation, "hsr@contoso.com", &[]).unwrap_err().to_string();
    assert_eq!(err, "email.to: is empty; escalations need a recipient");
    // A display name in the setting is kept.
    let message = compose(
        &escalation,
        "Exchange automation <hsr@contoso.com>",
        &["oncall@contoso.com".into()],
    )
    .unwrap();
    let parsed = MessageParser::default()
        .parse(&message.formatted())
        .unwrap()
        .from()
        .unwrap()
        .first()
        .unwrap()
        .name()
        .map(str::to_owned);
    assert_eq!(parsed.as_deref(), Some("Exchange automation"));
}

#[test]
fn the_test_message_says_where_it_came_from_and_how() {
    let message = compose_test(
        "hsr@contoso.com",
        &["oncall@contoso.com".into()],
        "smtp smtp.contoso.com:587 (starttls)",
    )
    .unwrap();
    let raw = message.formatted();
    let parsed = MessageParser::default().parse(&raw).unwrap();
    assert!(
        parsed.subject().unwrap().starts_with("[healthset-responder] TEST: escalation email from "),
        "{:?}",
        parsed.subject()
    );
    assert_eq!(parsed.header_raw("Auto-Submitted").map(str::trim), Some("auto-generated"));
    let body = parsed.body_text(0).unwrap();
    assert!(body.contains("healthset-responder check-config --send-test-email"), "{body}");
    assert!(body.contains("through smtp smtp.contoso.com:587 (starttls)."), "{body}");
    let err = compose_test("hsr@contoso.com", &[], "outbox").unwrap_err().to_string();
    assert_eq!(err, "email.to: is empty; escalations need a recipient");
}

#[tokio::test]
async fn the_outbox_writes_one_eml_per_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(&EmailConfig::default(), None, dir.path()).unwrap();
    let outbox = dir.path().join("outbox");
    assert_eq!(mailer.describe(), format!("outbox {}", outbox.display()));
    assert_eq!(mailer.outbox(), Some(outbox.as_path()));

    let incident = incident("escalated", "probe still failing after all remedies", ctp_steps());
    let alerts = alerts();
    let disabled = mbx01();
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &disabled,
        activation_left_as_found: &[],
        suppressed_escalations: 0,
    };
    let to = vec!["oncall@contoso.com".to_owned()];
    let raw = compose(&escalation, "healthset-responder@contoso.com", &to).unwrap().formatted();

    mailer.deliver("healthset-responder@contoso.com", &to, &raw).await.unwrap();
    let files = eml_files(&outbox);
    assert_eq!(files.len(), 1);
    let written = std::fs::read(&files[0]).unwrap();
    assert_eq!(written, raw);
    let parsed = parse(written);
    assert_eq!(parsed.subject, subject(&escalation));
    in_both(
        &parsed,
        "Set-MailboxServer mbx01.contoso.com -DatabaseCopyActivationDisabledAndMoveNow $false",
    );

    mailer
        .deliver("Healthset Responder <healthset-responder@contoso.com>", &to, &raw)
        .await
        .unwrap();
    let files = eml_files(&outbox);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_ne!(files[0], files[1]);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&outbox).unwrap().count(), 2);
}

fn eml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        // 20261126T100314.123Z-1a2b3c4d.eml
        assert_eq!(name.len(), "20261126T100314.123Z-1a2b3c4d.eml".len(), "{name}");
        assert!(name.as_bytes()[8] == b'T' && name.ends_with(".eml"), "{name}");
    }
    files
}

#[test]
fn with_a_public_url_the_email_links_the_incident_and_its_commands_name_the_service() {
    let incident = incident("escalated", "probe still failing after all remedies", ctp_steps());
    let alerts = alerts();
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &[],
        activation_left_as_found: &[],
        suppressed_escalations: 0,
    };
    let message = compose_for(
        &escalation,
        "hsr@contoso.com",
        &["oncall@contoso.com".into()],
        Some("https://responder.contoso.com"),
    )
    .unwrap();
    let parsed = parse(message.formatted());
    in_both(&parsed, &format!("https://responder.contoso.com/incidents/{INCIDENT_ID}"));
    assert!(
        parsed.html.contains(&format!(
            "<a href=\"https://responder.contoso.com/incidents/{INCIDENT_ID}\">"
        )),
        "{}",
        parsed.html
    );
    in_both(
        &parsed,
        &format!("healthset-responder replay {FIRST_ALERT} --url https://responder.contoso.com"),
    );
    in_both(
        &parsed,
        &format!(
            "healthset-responder incidents show {INCIDENT_ID} --url https://responder.contoso.com"
        ),
    );

    // Without one, the commands are as before and nothing links anywhere.
    let parsed = compose_parsed(&escalation);
    assert!(
        !parsed.text.contains("--url") && !parsed.html.contains("/incidents/"),
        "{}",
        parsed.text
    );
}
