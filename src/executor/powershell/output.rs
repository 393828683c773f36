//! Reads what a script reported (SPEC section 6, "PowerShell executor protocol") into a [`Report`]: the exit code,
//! and the one JSON document on standard output made of the cmdlet's own objects.
//!
//! This module is pure: it sees bytes the process wrote, never the process. Any answer it cannot read is an
//! `error`, never a success: a probe whose result cannot be read did not succeed.

use serde_json::{Map, Value};

use super::process::Capture;
use crate::domain::{HealthSetPattern, Monitor, ServerName};
use crate::incident::Outcome;
use crate::journal::{Action, Report};
use crate::ma::RecoveryAction;

/// How much of a probe's error text a step keeps: enough for the `Diagnostics header` line and the `_Mbx:` hint.
const PROBE_ERROR_CHARS: usize = 2000;
/// How much of standard error an `error` step keeps, from its end, where PowerShell's error record is.
const STDERR_CHARS: usize = 1000;
/// How much of unreadable standard output an `error` step shows.
const STDOUT_CHARS: usize = 300;

/// What a `wait` reports: the engine keeps waits, and no shell is started for one.
pub(super) const NO_SCRIPT: &str = "no script: the engine keeps waits";

type Object = Map<String, Value>;

/// The report for a script that exited by itself with `code` (`None`: a signal ended it).
pub(super) fn interpret(
    action: &Action,
    code: Option<i32>,
    stdout: &Capture,
    stderr: &Capture,
) -> Report {
    match code {
        Some(0) => {}
        Some(code) => {
            return Report::new(
                Outcome::Error,
                with_stderr(format!("the script exited with code {code}"), stderr),
            )
        }
        None => {
            return Report::new(
                Outcome::Error,
                with_stderr("the shell was killed by a signal".into(), stderr),
            )
        }
    }
    let objects = match documents(stdout) {
        Ok(objects) => objects,
        Err(problem) => return Report::new(Outcome::Error, with_stderr(problem, stderr)),
    };
    let read = match action {
        Action::Probe { probe, .. } => probe_result(&probe.to_string(), &objects),
        Action::ServerHealth { server, health_sets } => {
            server_health(server, health_sets, &objects)
        }
        Action::CopyStatus { server } => copy_status(server, &objects),
        Action::RecycleAppPool { server, app_pools } => {
            let names: Vec<&str> = app_pools.iter().map(|p| p.as_str()).collect();
            Ok(Report::new(Outcome::Done, format!("{} recycled on {server}", names.join(", "))))
        }
        Action::IisReset { server, .. } => {
            Ok(Report::new(Outcome::Done, iis_reset(server, &objects)))
        }
        Action::RestartService { server, service } => {
            restart_service(server, service.as_str(), &objects)
        }
        Action::MaHistory { server, lookback } => ma_history(server, *lookback, &objects),
        Action::DisableActivation { server, attempt } => {
            disable_activation(server, *attempt, &objects)
        }
        Action::ComponentState { server } => component_state(server, &objects),
        Action::EnableActivation { server } => Ok(Report::new(
            Outcome::Done,
            format!("DatabaseCopyActivationDisabledAndMoveNow set to False on {server}"),
        )),
        Action::RestartServer { server } => Ok(Report::new(
            Outcome::Done,
            format!("{server} restarted and answering PowerShell remoting"),
        )),
        Action::Wait { .. } => Ok(Report::new(Outcome::Done, NO_SCRIPT)),
    };
    read.unwrap_or_else(|problem| Report::new(Outcome::Error, problem))
}

/// The process's standard error, last part first in importance, after a summary of what went wrong.
pub(super) fn with_stderr(summary: String, stderr: &Capture) -> String {
    let text = stderr.text();
    let text = text.trim();
    if text.is_empty() {
        return format!("{summary}; no error output");
    }
    let (tail, cut) = last_chars(text, STDERR_CHARS);
    let ellipsis = if cut || stderr.truncated { "..." } else { "" };
    format!("{summary}: {ellipsis}{tail}")
}

/// The objects of the one JSON document on standard output: one object, or an array of them.
///
/// When the whole output is not JSON, its last non-empty line is tried: a shell may print a warning before the
/// document, and `-Compress` keeps the document on one line. Windows PowerShell 5.1 sometimes writes an array as
/// `{"value": [...], "Count": n}`; that is read as the array.
fn documents(stdout: &Capture) -> Result<Vec<Object>, String> {
    if stdout.truncated {
        return Err(format!(
            "the script printed more than {} bytes on standard output",
            stdout.bytes.len()
        ));
    }
    let text = stdout.text();
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "the script printed nothing on standard output, where one JSON document was expected"
                .into(),
        );
    }
    let value: Value = serde_json::from_str(text)
        .or_else(|err| {
            text.lines()
                .rev()
                .find(|line| !line.trim().is_empty())
                .and_then(|line| serde_json::from_str(line.trim()).ok())
                .ok_or(err)
        })
        .map_err(|err| {
            format!(
                "the script's standard output is not JSON ({err}): {}",
                first_chars(text, STDOUT_CHARS)
            )
        })?;
    let items = match value {
        Value::Object(mut object)
            if object.len() == 2
                && object.contains_key("Count")
                && object.get("value").is_some_and(Value::is_array) =>
        {
            vec![object.remove("value").expect("checked above")]
        }
        Value::Object(object) => return Ok(vec![object]),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "the script's standard output is JSON but neither an object nor an array: {}",
                first_chars(&other.to_string(), STDOUT_CHARS)
            ))
        }
    };
    items
        .into_iter()
        .flat_map(|item| match item {
            Value::Array(inner) => inner,
            other => vec![other],
        })
        .map(|item| match item {
            Value::Object(object) => Ok(object),
            other => Err(format!(
                "the script's JSON array holds {}, not an object",
                first_chars(&other.to_string(), STDOUT_CHARS)
            )),
        })
        .collect()
}

/// A field by name, as PowerShell finds properties: ignoring case.
fn field<'a>(object: &'a Object, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    })
}

/// A text field; `Ok(None)` when absent or null, `Err` when it holds something else.
fn text_field<'a>(object: &'a Object, name: &str, cmdlet: &str) -> Result<Option<&'a str>, String> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!("{cmdlet} output's {name} is {other}, not text (convert it with [string] before ConvertTo-Json)")),
    }
}

fn required_text<'a>(object: &'a Object, name: &str, cmdlet: &str) -> Result<&'a str, String> {
    text_field(object, name, cmdlet)?
        .ok_or_else(|| format!("{cmdlet} output has an object without {name}"))
}

fn probe_result(probe: &str, results: &[Object]) -> Result<Report, String> {
    const CMDLET: &str = "Invoke-MonitoringProbe";
    if results.is_empty() {
        return Err(format!("{CMDLET} returned no result for {probe}"));
    }
    let mut first_failure = None;
    for result in results {
        let result_type = match text_field(result, "ResultType", CMDLET)? {
            Some(text) => text,
            None => text_field(result, "Result", CMDLET)?.ok_or_else(|| {
                format!("{CMDLET} output has a result without ResultType or Result")
            })?,
        };
        if !result_type.eq_ignore_ascii_case("Succeeded") && first_failure.is_none() {
            first_failure = Some((result, result_type));
        }
    }
    let Some((result, result_type)) = first_failure else {
        return Ok(Report::new(Outcome::Succeeded, format!("{probe}: ResultType Succeeded")));
    };
    let mut error_text = String::new();
    for name in ["Error", "Exception"] {
        if let Some(text) =
            text_field(result, name, CMDLET)?.map(str::trim).filter(|text| !text.is_empty())
        {
            error_text.push_str(&format!("; {name}: {text}"));
        }
    }
    let (kept, cut) = first_chars_cut(&error_text, PROBE_ERROR_CHARS);
    Ok(Report::new(
        Outcome::Failed,
        format!("{probe}: ResultType {result_type}{kept}{}", if cut { "..." } else { "" }),
    ))
}

fn server_health(
    server: &ServerName,
    pattern: &HealthSetPattern,
    monitors: &[Object],
) -> Result<Report, String> {
    const CMDLET: &str = "Get-ServerHealth";
    let mut unhealthy: Vec<Monitor> = Vec::new();
    let mut unreadable_names = Vec::new();
    let mut others: Vec<String> = Vec::new();
    let mut considered = 0;
    for monitor in monitors {
        let name = required_text(monitor, "Name", CMDLET)?;
        let health_set = required_text(monitor, "HealthSetName", CMDLET)?;
        let alert_value = required_text(monitor, "AlertValue", CMDLET)?;
        // The script filters with -like already; an administrator's may not, and the pattern is what was asked.
        if !pattern.matches(health_set) {
            continue;
        }
        considered += 1;
        if alert_value.eq_ignore_ascii_case("Unhealthy") {
            // The same monitor is listed once per target resource; it is one monitor to fix.
            match Monitor::parse(name) {
                Ok(monitor) if !unhealthy.iter().any(|m| m.matches(name)) => {
                    unhealthy.push(monitor)
                }
                Ok(_) => {}
                Err(_) => unreadable_names.push(name.to_owned()),
            }
        } else if !alert_value.eq_ignore_ascii_case("Healthy") {
            others.push(format!("{name} {alert_value}"));
        }
    }
    if considered == 0 {
        return Err(format!("{CMDLET} reported no monitor of health set {pattern} on {server}"));
    }
    let mut names: Vec<&str> = unhealthy.iter().map(Monitor::as_str).collect();
    names.extend(unreadable_names.iter().map(String::as_str));
    let (outcome, mut detail) = if names.is_empty() {
        (
            Outcome::Healthy,
            format!("no {pattern} monitor Unhealthy on {server} ({considered} reported)"),
        )
    } else {
        (Outcome::Unhealthy, format!("Unhealthy: {}", names.join(", ")))
    };
    if !others.is_empty() {
        detail.push_str(&format!("; also {}", others.join(", ")));
    }
    Ok(Report { unhealthy, ..Report::new(outcome, detail) })
}

fn copy_status(server: &ServerName, groups: &[Object]) -> Result<Report, String> {
    const CMDLET: &str = "Get-MailboxDatabaseCopyStatus | Group Status";
    let counts = groups
        .iter()
        .map(|group| {
            let status = required_text(group, "Name", CMDLET)?;
            let count = field(group, "Count")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("{CMDLET} output has a group without a numeric Count"))?;
            Ok((status, count))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Report::copy_status(server, &counts))
}

/// `Get-MailboxServer` as it was before activation was disabled: whether an administrator had disabled it already.
fn disable_activation(
    server: &ServerName,
    attempt: u32,
    objects: &[Object],
) -> Result<Report, String> {
    const FIELD: &str = "DatabaseCopyActivationDisabledAndMoveNow";
    let before = objects
        .iter()
        .find_map(|object| field(object, FIELD))
        .ok_or_else(|| format!("Get-MailboxServer output has no {FIELD}, so whether activation was disabled before is unknown"))?;
    let already = before.as_bool().ok_or_else(|| {
        format!("Get-MailboxServer output's {FIELD} is {before}, not true or false")
    })?;
    Ok(Report::activation_disabled(server, attempt, already))
}

/// `Get-ServerComponentState -Component ServerWideOffline`: only `Active` lets the responder change the server.
fn component_state(server: &ServerName, objects: &[Object]) -> Result<Report, String> {
    const CMDLET: &str = "Get-ServerComponentState";
    let object =
        objects.first().ok_or_else(|| format!("{CMDLET} returned nothing for {server}"))?;
    let state = required_text(object, "State", CMDLET)?;
    if state.eq_ignore_ascii_case("Active") {
        Ok(Report::new(Outcome::Active, format!("ServerWideOffline is Active on {server}")))
    } else {
        Ok(Report::new(
            Outcome::Inactive,
            format!("ServerWideOffline is {state} on {server}: the server is in maintenance"),
        ))
    }
}

/// `Restart-Service` through `Invoke-Command`: the service's status once it was asked to start again.
fn restart_service(
    server: &ServerName,
    service: &str,
    objects: &[Object],
) -> Result<Report, String> {
    let status = objects
        .iter()
        .find_map(|object| text_field(object, "Status", "Restart-Service").transpose())
        .transpose()?
        .unwrap_or("unknown");
    if !status.eq_ignore_ascii_case("Running") {
        return Err(format!(
            "{service} on {server} is {status} after Restart-Service, not Running"
        ));
    }
    Ok(Report::new(Outcome::Done, format!("{service} restarted on {server}; Status Running")))
}

/// The events of `Microsoft-Exchange-ManagedAvailability/RecoveryActionResults`, one object each with the fields
/// of its `EventXML`; only finished actions are kept. The caller applies the lookback window by the clock.
fn ma_history(
    server: &ServerName,
    lookback: std::time::Duration,
    objects: &[Object],
) -> Result<Report, String> {
    const LOG: &str = "RecoveryActionResults";
    let mut actions = Vec::new();
    for object in objects {
        let fields: Vec<(&str, Option<&str>)> =
            ["Id", "ResourceName", "RequestorName", "StartTime", "EndTime", "State", "Result"]
                .into_iter()
                .map(|name| text_field(object, name, LOG).map(|value| (name, value)))
                .collect::<Result<_, _>>()?;
        let field = |name: &str| fields.iter().find(|(n, _)| *n == name).and_then(|(_, v)| *v);
        if let Some(action) = RecoveryAction::from_event(field)
            .map_err(|problem| format!("{LOG} on {server}: {problem}"))?
        {
            actions.push(action);
        }
    }
    Ok(Report::ma_history(server, lookback, actions))
}

/// `iisreset` says what it did in its last line ("Internet services successfully restarted").
fn iis_reset(server: &ServerName, objects: &[Object]) -> String {
    let said = objects
        .iter()
        .find_map(|object| text_field(object, "Output", "iisreset").ok().flatten())
        .and_then(|output| output.lines().rev().find(|l| !l.trim().is_empty()));
    let forced = objects
        .iter()
        .any(|object| text_field(object, "Mode", "iisreset").ok().flatten() == Some("forced"));
    let how = if forced {
        "iisreset (IIS did not stop with /noforce, so it was forced)"
    } else {
        "iisreset /noforce"
    };
    match said {
        Some(line) => format!("{how} on {server}: {}", first_chars(line.trim(), STDOUT_CHARS)),
        None => format!("{how} done on {server}"),
    }
}

fn first_chars(text: &str, max: usize) -> String {
    let (kept, cut) = first_chars_cut(text, max);
    if cut {
        format!("{kept}...")
    } else {
        kept.to_owned()
    }
}

fn first_chars_cut(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    }
}

fn last_chars(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().rev().nth(max.saturating_sub(1)) {
        Some((at, _)) if at > 0 => (&text[at..], true),
        _ => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AppPool;
    use crate::journal::ProbeRef;

    fn server() -> ServerName {
        ServerName::parse("mbx01.contoso.com").unwrap()
    }

    fn capture(text: &str) -> Capture {
        Capture { bytes: text.as_bytes().to_vec(), truncated: false }
    }

    fn check(action: &Action, stdout: &str) -> Report {
        interpret(action, Some(0), &capture(stdout), &capture(""))
    }

    fn probe() -> Action {
        Action::Probe {
            server: server(),
            probe: ProbeRef::parse("ActiveSync.Protocol\\ActiveSyncDeepTestProbe").unwrap(),
            backend: None,
        }
    }

    fn health(pattern: &str) -> Action {
        Action::ServerHealth {
            server: server(),
            health_sets: HealthSetPattern::parse(pattern).unwrap(),
        }
    }

    #[test]
    fn probe_results_as_invoke_monitoring_probe_reports_them() {
        let failed = r#"[{"Server":"MBX01","ResultType":"Failed","Error":"Error occurred:\r\n\r\nUser: eas\r\nResponse: 503\r\nDiagnostics header:_Cas:CAS01_Mbx:MBX01.contoso.com_","Exception":""}]"#;
        let cases: &[(&str, Outcome, &str)] = &[
            (r#"[{"ResultType":"Succeeded","Error":""}]"#, Outcome::Succeeded, "ActiveSync.Protocol\\ActiveSyncDeepTestProbe: ResultType Succeeded"),
            (r#"{"Result":"succeeded"}"#, Outcome::Succeeded, "ResultType Succeeded"),
            (
                failed,
                Outcome::Failed,
                "ResultType Failed; Error: Error occurred:\r\n\r\nUser: eas\r\nResponse: 503\r\nDiagnostics header:_Cas:CAS01_Mbx:MBX01.contoso.com_",
            ),
            (
                r#"[{"ResultType":"Succeeded"},{"ResultType":"Timeout","Exception":"System.TimeoutException: probe ran out of time"}]"#,
                Outcome::Failed,
                "ResultType Timeout; Exception: System.TimeoutException",
            ),
            (r#"{"value":[{"ResultType":"Poisoned"}],"Count":1}"#, Outcome::Failed, "ResultType Poisoned"),
            ("WARNING: proxy settings ignored\n[{\"resulttype\":\"Quarantined\"}]\n", Outcome::Failed, "ResultType Quarantined"),
            (r#"[{"ResultType":3}]"#, Outcome::Error, "ResultType is 3, not text"),
            (r#"[{"Error":"x"}]"#, Outcome::Error, "without ResultType or Result"),
            ("[]", Outcome::Error, "returned no result"),
            ("", Outcome::Error, "printed nothing on standard output"),
            ("Invoke-MonitoringProbe : The term is not recognized", Outcome::Error, "not JSON"),
            ("\"Succeeded\"", Outcome::Error, "neither an object nor an array"),
            ("[\"Succeeded\"]", Outcome::Error, "not an object"),
        ];
        for (stdout, outcome, detail) in cases {
            let report = check(&probe(), stdout);
            assert_eq!(
                (report.outcome, report.detail.contains(detail)),
                (*outcome, true),
                "{stdout:?}: {}",
                report.detail
            );
        }
    }

    #[test]
    fn probe_error_text_is_bounded() {
        let stdout =
            serde_json::json!([{"ResultType": "Failed", "Error": "é".repeat(5000)}]).to_string();
        let report = check(&probe(), &stdout);
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(
            report.detail.chars().count() < PROBE_ERROR_CHARS + 100
                && report.detail.ends_with("..."),
            "{}",
            report.detail.len()
        );
    }

    #[test]
    fn server_health_names_the_unhealthy_monitors_of_the_asked_health_sets() {
        let monitors = r#"[
            {"Server":"MBX01","CurrentHealthSetState":"NotApplicable","Name":"ActiveSyncDeepTestMonitor","TargetResource":"DB01","HealthSetName":"ActiveSync","AlertValue":"Unhealthy","LastTransitionTime":"2026-11-26T10:00:00"},
            {"Server":"MBX01","Name":"ActiveSyncDeepTestMonitor","TargetResource":"DB02","HealthSetName":"ActiveSync","AlertValue":"Unhealthy"},
            {"Server":"MBX01","Name":"ActiveSyncSelfTestMonitor","HealthSetName":"ActiveSync.Protocol","AlertValue":"Degraded"},
            {"Server":"MBX01","Name":"ActiveSyncCTPMonitor","HealthSetName":"ActiveSync","AlertValue":"Healthy"},
            {"Server":"MBX01","Name":"OwaDeepTestMonitor","HealthSetName":"OWA.Protocol","AlertValue":"Unhealthy"}
        ]"#;
        let report = check(&health("ActiveSync*"), monitors);
        assert_eq!(report.outcome, Outcome::Unhealthy);
        assert_eq!(report.unhealthy, [Monitor::parse("ActiveSyncDeepTestMonitor").unwrap()]);
        assert_eq!(
            report.detail,
            "Unhealthy: ActiveSyncDeepTestMonitor; also ActiveSyncSelfTestMonitor Degraded"
        );

        let report = check(&health("ActiveSync.Protocol"), monitors);
        assert_eq!(
            (report.outcome, report.unhealthy.len()),
            (Outcome::Healthy, 0),
            "{}",
            report.detail
        );
        assert!(
            report.detail.starts_with(
                "no ActiveSync.Protocol monitor Unhealthy on mbx01.contoso.com (1 reported)"
            ),
            "{}",
            report.detail
        );

        assert!(check(&health("ECP"), monitors).detail.contains("no monitor of health set ECP"));
        assert_eq!(
            check(&health("ECP"), monitors).outcome,
            Outcome::Error,
            "no monitor at all is no evidence of health"
        );
        assert!(check(&health("ActiveSync"), r#"[{"Name":"A","HealthSetName":"ActiveSync"}]"#)
            .detail
            .contains("without AlertValue"));
    }

    #[test]
    fn copy_status_counts_active_copies() {
        let cases: &[(&str, Outcome, &str)] = &[
            (r#"[{"Count":2,"Name":"Mounted"},{"Count":3,"Name":"Healthy"}]"#, Outcome::ActiveCopies, "Mounted: 2, Healthy: 3; not passive: Mounted"),
            (r#"[{"Count":3,"Name":"Healthy"},{"Count":1,"Name":"Failed"}]"#, Outcome::NoActiveCopies, "Healthy: 3, Failed: 1"),
            (r#"{"Count":1,"Name":"Mounting"}"#, Outcome::ActiveCopies, "Mounting: 1; not passive: Mounting"),
            (
                r#"[{"Count":2,"Name":"ServiceDown"},{"Count":1,"Name":"Seeding"}]"#,
                Outcome::ActiveCopies,
                "ServiceDown: 2, Seeding: 1; not passive: ServiceDown",
            ),
            (
                r#"[{"Count":1,"Name":"Dismounting"},{"Count":1,"Name":"Dismounted"}]"#,
                Outcome::ActiveCopies,
                "Dismounting: 1, Dismounted: 1; not passive: Dismounting, Dismounted",
            ),
            (r#"[{"Count":1,"Name":"SinglePageRestore"}]"#, Outcome::ActiveCopies, "SinglePageRestore: 1; not passive: SinglePageRestore"),
            (
                r#"[{"Count":1,"Name":"Suspended"},{"Count":1,"Name":"FailedAndSuspended"},{"Count":1,"Name":"Initializing"},{"Count":1,"Name":"Resynchronizing"},{"Count":1,"Name":"DisconnectedAndHealthy"},{"Count":1,"Name":"DisconnectedAndResynchronizing"}]"#,
                Outcome::NoActiveCopies,
                "Suspended: 1, FailedAndSuspended: 1, Initializing: 1, Resynchronizing: 1, DisconnectedAndHealthy: 1, DisconnectedAndResynchronizing: 1",
            ),
            (r#"[{"Count":0,"Name":"Mounted"}]"#, Outcome::NoActiveCopies, "Mounted: 0"),
            ("[]", Outcome::NoActiveCopies, "no database copies on mbx01.contoso.com"),
            (r#"[{"Count":"2","Name":"Mounted"}]"#, Outcome::Error, "Get-MailboxDatabaseCopyStatus | Group Status output has a group without a numeric Count"),
        ];
        for (stdout, outcome, detail) in cases {
            let report = check(&Action::CopyStatus { server: server() }, stdout);
            assert_eq!((report.outcome, report.detail.as_str()), (*outcome, *detail), "{stdout:?}");
        }
    }

    #[test]
    fn mutating_actions_are_done_on_exit_zero_with_json_and_an_error_otherwise() {
        let recycle = Action::RecycleAppPool {
            server: server(),
            app_pools: vec![AppPool::parse("MSExchangeSyncAppPool").unwrap()],
        };
        let done = check(
            &recycle,
            r#"{"Server":"mbx01.contoso.com","AppPool":"MSExchangeSyncAppPool","Recycled":true}"#,
        );
        assert_eq!(
            (done.outcome, done.detail.as_str()),
            (Outcome::Done, "MSExchangeSyncAppPool recycled on mbx01.contoso.com")
        );
        let reset = check(
            &Action::IisReset { server: server(), noforce: false },
            r#"{"ExitCode":0,"Output":"Attempting stop...\r\nInternet services successfully restarted\r\n"}"#,
        );
        assert_eq!(
            reset.detail,
            "iisreset /noforce on mbx01.contoso.com: Internet services successfully restarted"
        );
        let forced = check(
            &Action::IisReset { server: server(), noforce: false },
            r#"{"ExitCode":0,"Mode":"forced","Output":"Attempting stop...\r\nIIS did not stop\r\nInternet services successfully restarted"}"#,
        );
        assert!(
            forced.detail.starts_with("iisreset (IIS did not stop with /noforce, so it was forced) on mbx01.contoso.com: Internet services"),
            "{}",
            forced.detail
        );
        assert_eq!(check(&recycle, "done").outcome, Outcome::Error);

        let stderr = capture(&format!("{}Set-MailboxServer : Access is denied.", "x".repeat(3000)));
        let failed = interpret(
            &Action::EnableActivation { server: server() },
            Some(1),
            &capture(""),
            &stderr,
        );
        assert_eq!(failed.outcome, Outcome::Error);
        assert!(
            failed.detail.starts_with("the script exited with code 1: ...x")
                && failed.detail.ends_with("Set-MailboxServer : Access is denied."),
            "{}",
            failed.detail
        );
        assert!(failed.detail.chars().count() < STDERR_CHARS + 50);
        let killed = interpret(
            &Action::EnableActivation { server: server() },
            None,
            &capture("{}"),
            &capture(""),
        );
        assert_eq!(
            (killed.outcome, killed.detail.as_str()),
            (Outcome::Error, "the shell was killed by a signal; no error output")
        );
    }

    #[test]
    fn disabling_activation_records_whether_it_was_disabled_before() {
        let disable = Action::DisableActivation { server: server(), attempt: 1 };
        let fresh =
            check(&disable, r#"{"Name":"MBX01","DatabaseCopyActivationDisabledAndMoveNow":false}"#);
        assert_eq!(
            (fresh.outcome, fresh.already_in_place),
            (Outcome::Done, false),
            "{}",
            fresh.detail
        );
        let found =
            check(&disable, r#"{"Name":"MBX01","DatabaseCopyActivationDisabledAndMoveNow":true}"#);
        assert_eq!((found.outcome, found.already_in_place), (Outcome::Done, true));
        assert!(
            found.detail.contains("already disabled on mbx01.contoso.com before this failover"),
            "{}",
            found.detail
        );
        let unknown = check(&disable, r#"{"Name":"MBX01"}"#);
        assert_eq!(
            unknown.outcome,
            Outcome::Error,
            "a prior state that cannot be read is not taken as enabled"
        );
        assert!(
            unknown.detail.contains("no DatabaseCopyActivationDisabledAndMoveNow"),
            "{}",
            unknown.detail
        );
    }

    #[test]
    fn component_state_active_only_lets_the_server_be_changed() {
        let action = Action::ComponentState { server: server() };
        let cases: &[(&str, Outcome, &str)] = &[
            (
                r#"{"Identity":"MBX01","Component":"ServerWideOffline","State":"Active"}"#,
                Outcome::Active,
                "ServerWideOffline is Active",
            ),
            (
                r#"{"Identity":"MBX01","Component":"ServerWideOffline","State":"Inactive"}"#,
                Outcome::Inactive,
                "ServerWideOffline is Inactive on mbx01.contoso.com",
            ),
            (
                r#"[{"Component":"ServerWideOffline","State":"Draining"}]"#,
                Outcome::Inactive,
                "Draining",
            ),
            (
                r#"{"Component":"ServerWideOffline","State":1}"#,
                Outcome::Error,
                "State is 1, not text",
            ),
            ("[]", Outcome::Error, "returned nothing"),
        ];
        for (stdout, outcome, detail) in cases {
            let report = check(&action, stdout);
            assert_eq!(
                (report.outcome, report.detail.contains(detail)),
                (*outcome, true),
                "{stdout:?}: {}",
                report.detail
            );
        }
    }

    #[test]
    fn output_over_the_limit_is_an_error() {
        let stdout = Capture { bytes: b"[{\"ResultType\":\"Succeeded\"".to_vec(), truncated: true };
        let report = interpret(&probe(), Some(0), &stdout, &capture(""));
        assert_eq!(report.outcome, Outcome::Error);
        assert!(report.detail.contains("more than"), "{}", report.detail);
    }
}
