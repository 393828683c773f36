//! The frame every page shares: the document, its style sheet, and how states, outcomes and times look.

use super::escape;
use crate::incident::{Outcome, Sense, State as IncidentState};
use crate::store::IncidentView;

/// A stored time as date and time of day (UTC), keeping the exact value in the `datetime` attribute.
pub(super) fn when(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => format!(
            r#"<time datetime="{}">{}</time>"#,
            escape(rfc3339),
            t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S")
        ),
        Err(_) => escape(rfc3339),
    }
}

/// A step time as time of day with milliseconds (the incident header gives the date).
pub(super) fn clock(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => format!(
            r#"<time datetime="{}">{}</time>"#,
            escape(rfc3339),
            t.with_timezone(&chrono::Utc).format("%H:%M:%S%.3f")
        ),
        Err(_) => escape(rfc3339),
    }
}

pub(super) fn monitor_name(incident: &IncidentView) -> String {
    incident.monitor.clone().unwrap_or_else(|| "(no monitor)".to_owned())
}

pub(super) fn is_final(state: &str) -> bool {
    IncidentState::parse(state).is_some_and(IncidentState::is_final)
}

/// A state as a coloured badge; the colour says whether a person must act.
pub(super) fn state_badge(state: &str) -> String {
    let tone = match IncidentState::parse(state) {
        Some(IncidentState::Transient | IncidentState::Recovered) => "good",
        Some(IncidentState::Escalated | IncidentState::Blocked) => "bad",
        Some(
            IncidentState::Queued
            | IncidentState::Running
            | IncidentState::Waiting
            | IncidentState::AwaitingApproval,
        ) => "busy",
        Some(IncidentState::Suppressed) | None => "quiet",
    };
    format!(r#"<span class="badge state {tone}">{}</span>"#, escape(state))
}

pub(super) fn outcome_badge(outcome: &str) -> String {
    let tone = match Outcome::parse(outcome).map(Outcome::sense) {
        Some(Sense::Good) => "good",
        Some(Sense::Bad) => "bad",
        Some(Sense::Pending) => "busy",
        None => "quiet",
    };
    format!(r#"<span class="badge {tone}">{}</span>"#, escape(outcome))
}

pub(super) fn email_badge(status: &str) -> String {
    let tone = match status {
        "sent" => "good",
        "failed" => "bad",
        _ => "busy",
    };
    format!(r#"<span class="badge {tone}">{}</span>"#, escape(status))
}

/// A whole HTML document. `refresh` makes the browser reload it every two seconds (for incidents still running).
pub(super) fn document(title: &str, refresh: bool, header: &str, body: &str) -> String {
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

pub(super) const STYLE: &str = r#"
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
.proposal { border: 2px solid var(--busy); background: var(--busy-bg); border-radius: .4rem; padding: .2rem 1rem .9rem; margin: .8rem 0 1.2rem; }
.proposal h2 { margin-top: .6rem; color: var(--busy); }
.proposal pre.raw { background: var(--bg); }
form.decide { max-width: 40rem; }
.buttons { display: flex; gap: .6rem; flex-wrap: wrap; }
button.approve { background: var(--good-bg); color: var(--good); border-color: var(--good); }
button.deny { background: var(--bad-bg); color: var(--bad); border-color: var(--bad); }
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
