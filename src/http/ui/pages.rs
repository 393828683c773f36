//! The pages behind the login: the incidents, one incident with its timeline, alerts and emails, one alert, and
//! the pages an error becomes.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::approvals;
use super::html::{
    clock, document, email_badge, is_final, monitor_name, outcome_badge, state_badge, when,
};
use super::session::LoggedIn;
use super::{escape, Ui};
use crate::http::ApiError;
use crate::incident::State as IncidentState;
use crate::store::{AlertDetail, AlertSummary, IncidentView, NotificationView, StepView};

/// How many incidents the front page lists.
pub(super) const LIST_LIMIT: u32 = 100;
#[derive(Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
}

pub(super) async fn index(
    State(ui): State<Arc<Ui>>,
    who: LoggedIn,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let wanted = query.ok().and_then(|Query(q)| q.state).filter(|s| !s.is_empty());
    let filter = match wanted.as_deref().map(|name| IncidentState::parse(name).ok_or(name)) {
        None => None,
        Some(Ok(state)) => Some(state),
        Some(Err(name)) => {
            return error_page(
                &who,
                ApiError::bad_request(format!("state: {name:?} is not an incident state")),
            )
        }
    };
    let store = &ui.app.store;
    let awaiting = IncidentState::AwaitingApproval;
    let (mut incidents, deciding, paused) = match tokio::try_join!(
        store.list_incidents(filter, LIST_LIMIT, None),
        store.list_incidents(Some(awaiting), LIST_LIMIT, None),
        store.paused()
    ) {
        Ok(read) => read,
        Err(err) => return error_page(&who, err.into()),
    };
    // Incidents that wait for a person come first.
    incidents.sort_by_key(|incident| incident.state != awaiting.as_str());
    let deciding: Vec<&IncidentView> =
        deciding.iter().filter(|_| filter.is_none_or(|f| f == awaiting)).collect();
    // A page with a decision form does not reload itself: it would throw away a reason being typed.
    let refresh =
        deciding.is_empty() && incidents.iter().any(|incident| !is_final(&incident.state));
    let back = match &filter {
        Some(state) => format!("/?state={state}"),
        None => "/".to_owned(),
    };
    let mut body = String::new();
    body.push_str(
        "<main>\n<h1>Incidents</h1>\n<nav class=\"filters\" aria-label=\"filter by state\">",
    );
    let _ = write!(
        body,
        r#"<a href="/"{}>all</a>"#,
        if filter.is_none() { r#" aria-current="page""# } else { "" }
    );
    for state in IncidentState::ALL {
        let current = if filter == Some(*state) { r#" aria-current="page""# } else { "" };
        let _ = write!(body, r#" <a href="/?state={state}"{current}>{state}</a>"#);
    }
    body.push_str("</nav>\n");
    for incident in deciding {
        if let Some(approval) = incident.approval.as_ref().filter(|a| a.status == "pending") {
            let _ = writeln!(
                body,
                r#"<p><a href="/incidents/{0}">Incident <code>{0}</code></a></p>"#,
                escape(&incident.id)
            );
            body.push_str(&approvals::proposal(
                incident,
                approval,
                Some(&approvals::page_form(&incident.id, &who)),
            ));
        }
    }
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

pub(super) async fn incident_page(
    State(ui): State<Arc<Ui>>,
    who: LoggedIn,
    Path(id): Path<String>,
) -> Response {
    let store = &ui.app.store;
    let (incident, alerts, paused) = match tokio::try_join!(
        store.incident(id.clone()),
        store.incident_alerts(id.clone()),
        store.paused()
    ) {
        Ok(read) => read,
        Err(err) => return error_page(&who, err.into()),
    };
    let back = format!("/incidents/{}", incident.id);
    let header = header_bar(&who, paused.as_deref(), &back);
    let title = format!("{} · {} on {}", incident.state, monitor_name(&incident), incident.server);
    let body = incident_body(&incident, &alerts, &who, ui.app.settings.executor.dry_run);
    // A page with a decision form does not reload itself: it would throw away a reason being typed.
    let refresh =
        !is_final(&incident.state) && incident.state != IncidentState::AwaitingApproval.as_str();
    Html(document(&title, refresh, &header, &body)).into_response()
}

pub(super) fn incident_body(
    incident: &IncidentView,
    alerts: &[AlertSummary],
    who: &LoggedIn,
    service_dry_run: bool,
) -> String {
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
        body.push_str(
            "<p class=\"reason\">In progress; this page refreshes itself every two seconds.</p>\n",
        );
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
        fact(
            "replay of",
            format!(r#"alert <a href="/alerts/{0}"><code>{0}</code></a>"#, escape(alert)),
        );
    }
    if let Some(at) = &incident.resolved_notice_at {
        fact("resolved notice", when(at));
    }
    body.push_str("</dl>\n");
    if let Some(approval) = incident.approval.as_ref().filter(|a| {
        a.status == "pending" && incident.state == IncidentState::AwaitingApproval.as_str()
    }) {
        body.push_str(&approvals::proposal(
            incident,
            approval,
            Some(&approvals::page_form(&incident.id, who)),
        ));
    }

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

pub(super) fn timeline(steps: &[StepView]) -> String {
    if steps.is_empty() {
        return "<p class=\"empty\">No step has run yet.</p>\n".to_owned();
    }
    let mut html = String::from(
        "<table class=\"list timeline\">\n<thead><tr><th>#</th><th>started</th><th>finished</th><th>server</th><th>action</th><th>outcome</th><th>detail and command</th></tr></thead>\n<tbody>\n",
    );
    for step in steps {
        let outcome = step
            .outcome
            .as_deref()
            .map(outcome_badge)
            .unwrap_or_else(|| r#"<span class="badge pending">running</span>"#.to_owned());
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

pub(super) fn emails(notifications: &[NotificationView]) -> String {
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

pub(super) fn replay_form(alert_id: &str, who: &LoggedIn, service_dry_run: bool) -> String {
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

pub(super) async fn alert_page(
    State(ui): State<Arc<Ui>>,
    who: LoggedIn,
    Path(id): Path<String>,
) -> Response {
    let (alert, paused) = match tokio::try_join!(ui.app.store.alert(id), ui.app.store.paused()) {
        Ok(read) => read,
        Err(err) => return error_page(&who, err.into()),
    };
    let back = format!("/alerts/{}", alert.summary.id);
    let header = header_bar(&who, paused.as_deref(), &back);
    let body = alert_body(&alert, &who, ui.app.settings.executor.dry_run);
    Html(document(&format!("Alert on {}", alert.summary.server), false, &header, &body))
        .into_response()
}

pub(super) fn alert_body(alert: &AlertDetail, who: &LoggedIn, service_dry_run: bool) -> String {
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
    let incidents: Vec<String> = alert
        .incident_ids
        .iter()
        .map(|id| format!(r#"<a href="/incidents/{0}"><code>{0}</code></a>"#, escape(id)))
        .collect();
    fact(
        "incidents",
        if incidents.is_empty() { "none".to_owned() } else { incidents.join("<br>") },
    );
    fact(
        "delivery",
        format!(
            "<code>{}</code> (alert {} of the delivery)",
            escape(&alert.delivery_id),
            alert.position + 1
        ),
    );
    if let Some(webhook_id) = &alert.webhook_id {
        fact("webhook-id", format!("<code>{}</code>", escape(webhook_id)));
    }
    body.push_str("</dl>\n");
    let _ =
        writeln!(body, "<h2>Message</h2>\n<pre class=\"raw\">{}</pre>", escape(&summary.message));
    let _ = writeln!(
        body,
        "<h2>Raw body, as delivered</h2>\n<pre class=\"raw\">{}</pre>",
        escape(&alert.raw_body)
    );
    body.push_str("<h2>Replay</h2>\n");
    body.push_str(&replay_form(&summary.id, who, service_dry_run));
    body.push_str("</main>\n");
    body
}

/// The bar on every page behind the login: home, the pause switch with its form, and log out.
pub(super) fn header_bar(who: &LoggedIn, paused: Option<&str>, back: &str) -> String {
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
pub(super) fn error_page(who: &LoggedIn, err: ApiError) -> Response {
    let title = match err.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Already open",
        status if status.is_server_error() => "Unavailable",
        _ => "Refused",
    };
    message_page(err.status, title, &err.message, Some(who))
}

pub(super) fn message_page(
    status: StatusCode,
    title: &str,
    message: &str,
    who: Option<&LoggedIn>,
) -> Response {
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
