//! Deciding on approvals in a browser: from the operator's page (logged in, CSRF-protected forms) and from the
//! approval email's link (no login: the token in the path is the authority, and the page says so).
//!
//! `GET /approvals/{token}` only shows the proposal: mail scanners and link previews open links, so nothing a GET
//! does may decide. Both surfaces decide through [`admin::decide`].

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::html::{document, monitor_name, when};
use super::pages::{error_page, timeline};
use super::session::LoggedIn;
use super::{admin, bad_form, escape, Ui};
use crate::approval::{Token, Verdict, Via};
use crate::http::ApiError;
use crate::store::{ApprovalView, IncidentView, Target};

/// What a decision form sends.
#[derive(Deserialize)]
pub(super) struct DecisionForm {
    csrf: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
}

/// `?decision=approve|deny` on a link: which button the page offers first. It decides nothing.
#[derive(Deserialize)]
pub(super) struct Preselect {
    decision: Option<String>,
}

/// The proposal an incident waits on, for its page and the list: what would run, where, the exact commands and the
/// deadline; with `form` (the page's decision form, or the link's), the buttons.
pub(super) fn proposal(
    incident: &IncidentView,
    approval: &ApprovalView,
    form: Option<&str>,
) -> String {
    let mut html = String::from("<section class=\"proposal\">\n");
    let _ = writeln!(
        html,
        "<h2>Waiting for a decision</h2>\n<p>Automation wants to run <strong>{}</strong> on <strong>{}</strong> for {} {} on {}.</p>",
        escape(&approval.actions.join(", ")),
        escape(&approval.server),
        escape(&incident.health_set),
        escape(&monitor_name(incident)),
        escape(&incident.server),
    );
    let _ = writeln!(
        html,
        "<p class=\"note\">The exact commands:</p>\n<pre class=\"raw\">{}</pre>",
        escape(&approval.command)
    );
    let _ = writeln!(
        html,
        "<p>Asked {}. With no decision by {}, nothing runs: the incident ends blocked and on-call gets an escalation. After an approval automation checks again and runs these steps only if the problem persists.</p>",
        when(&approval.requested_at),
        when(&approval.expires_at),
    );
    if let Some(form) = form {
        html.push_str(form);
    }
    html.push_str("</section>\n");
    html
}

/// The decision buttons, posting to `action`; `hidden` holds the form's hidden fields (the CSRF token on the page).
fn buttons(action: &str, hidden: &str, first: Option<Verdict>) -> String {
    let (approve, deny) = match first {
        Some(Verdict::Deny) => ("", " autofocus"),
        _ => (" autofocus", ""),
    };
    format!(
        r#"<form method="post" action="{action}" class="stack decide">
{hidden}<label for="reason">Reason (optional; journaled with the decision)</label>
<input id="reason" name="reason" maxlength="1000" placeholder="e.g. checked with the DAG owner">
<div class="buttons"><button type="submit" name="decision" value="approve" class="approve"{approve}>Approve</button>
<button type="submit" name="decision" value="deny" class="deny"{deny}>Deny</button></div>
</form>
"#,
        action = escape(action),
    )
}

/// The page's decision form for an incident.
pub(super) fn page_form(incident_id: &str, who: &LoggedIn) -> String {
    let hidden = format!(r#"<input type="hidden" name="csrf" value="{}">"#, escape(&who.csrf));
    buttons(&format!("/incidents/{incident_id}/decide"), &hidden, None)
}

/// `POST /incidents/{id}/decide` from the operator's page.
pub(super) async fn decide_on_page(
    State(ui): State<Arc<Ui>>,
    who: LoggedIn,
    Path(id): Path<String>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(err) => return bad_form(err),
    };
    if let Err(refused) = who.check_csrf(form.csrf.as_deref()) {
        return refused.into_response();
    }
    let Some(verdict) = form.decision.as_deref().and_then(Verdict::parse) else {
        return error_page(
            &who,
            ApiError::bad_request("decision: must be \"approve\" or \"deny\""),
        );
    };
    match admin::decide(&ui.app, Target::Incident(id), verdict, Via::Page, form.reason).await {
        Ok(incident_id) => Redirect::to(&format!("/incidents/{incident_id}")).into_response(),
        Err(err) => error_page(&who, err),
    }
}

/// `GET /approvals/{token}`: the proposal and the buttons; changes nothing.
pub(super) async fn link_page(
    State(ui): State<Arc<Ui>>,
    Path(token): Path<String>,
    query: Result<Query<Preselect>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let found = match ui.app.store.approval_for_token(Token::hash(&token)).await {
        Ok(found) => found,
        Err(err) => {
            return link_message(
                ApiError::from(err).status,
                "Unavailable",
                "the store cannot be read now; try again in a minute",
            )
        }
    };
    let Some((incident, approval)) = found else { return gone() };
    let first = query.ok().and_then(|Query(q)| q.decision).as_deref().and_then(Verdict::parse);
    let form = buttons(&format!("/approvals/{token}"), "", first);
    let mut body = String::from("<main>\n");
    let _ = writeln!(
        body,
        "<h1>Approve or deny: {} on {}</h1>",
        escape(&approval.actions.join(", ")),
        escape(&approval.server)
    );
    body.push_str(
        "<p class=\"note\">No login is needed here: the link in the approval email is the authority, and it works once. Opening this page decides nothing.</p>\n",
    );
    body.push_str(&proposal(&incident, &approval, Some(&form)));
    body.push_str("<dl class=\"facts\">\n");
    let _ = writeln!(body, "<dt>incident</dt><dd><code>{}</code></dd>", escape(&incident.id));
    let _ = writeln!(body, "<dt>opened</dt><dd>{}</dd>", when(&incident.created_at));
    if let Some(hint) = &incident.mailbox_hint {
        let _ = writeln!(body, "<dt>_Mbx: server</dt><dd>{}</dd>", escape(hint));
    }
    body.push_str("</dl>\n<h2>Timeline so far</h2>\n");
    body.push_str(&timeline(incident.steps.as_deref().unwrap_or_default()));
    body.push_str("</main>\n");
    let title = format!("Approve {} on {}", approval.actions.join(", "), approval.server);
    Html(document(&title, false, BRAND, &body)).into_response()
}

/// `POST /approvals/{token}`: records the decision the link's holder made.
pub(super) async fn link_decide(
    State(ui): State<Arc<Ui>>,
    Path(token): Path<String>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(err) => return bad_form(err),
    };
    let Some(verdict) = form.decision.as_deref().and_then(Verdict::parse) else {
        return link_message(
            StatusCode::BAD_REQUEST,
            "Bad form",
            "decision: must be \"approve\" or \"deny\"",
        );
    };
    match admin::decide(
        &ui.app,
        Target::Token(Token::hash(&token)),
        verdict,
        Via::Link,
        form.reason,
    )
    .await
    {
        Ok(incident_id) => {
            let what = match verdict {
                Verdict::Approve => "Approved. Automation checks the problem again and runs the steps only if it persists.",
                Verdict::Deny => "Denied. Nothing runs; the incident ends blocked and on-call gets an escalation.",
            };
            let body = format!(
                "<main class=\"narrow\"><h1>Decision recorded</h1><p>{what}</p><p class=\"note\">Incident <code>{}</code>. This link no longer works.</p></main>",
                escape(&incident_id)
            );
            Html(document("Decision recorded", false, BRAND, &body)).into_response()
        }
        Err(err) if err.status == StatusCode::CONFLICT => gone(),
        Err(err) => link_message(err.status, "Refused", &err.message),
    }
}

const BRAND: &str = r#"<header><span class="brand">healthset-responder</span></header>"#;

/// `410`: the link's approval was decided, expired, or its incident ended.
fn gone() -> Response {
    link_message(
        StatusCode::GONE,
        "This approval link is no longer valid",
        "Its approval was already decided or has expired, or the incident has ended. Each link works once. The incident's page and the escalation email say what happened.",
    )
}

fn link_message(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        r#"<main class="narrow"><h1>{}</h1><p class="error" role="alert">{}</p></main>"#,
        escape(title),
        escape(message)
    );
    (status, Html(document(title, false, BRAND, &body))).into_response()
}
