//! Asking a person: the approval step and its request email, and the expiry of approvals nobody decided.

use super::*;

/// The throttles of later steps that `action` commits to: a failover is started only when the restart it leads to
/// would be allowed now.
pub(super) fn commits_to(
    safety: &crate::safety::SafetyConfig,
    action: &Action,
) -> Vec<(ActionKind, crate::safety::Throttle)> {
    match action {
        Action::DisableActivation { attempt: 1, .. } => {
            vec![(ActionKind::RestartServer, safety.restart_server.clone())]
        }
        _ => Vec::new(),
    }
}

/// Asks a person to approve `proposal`, unless a throttle refuses one of its steps now (then the first is journaled
/// `throttled` and nobody is asked). The request email, with the links on the approval page, is queued in the
/// same transaction as the `approval` step; only the token's hash is stored.
pub(super) async fn ask(shared: &Shared, id: &str, proposal: Proposal) -> anyhow::Result<()> {
    let settings = &shared.settings;
    let policy = &settings.approval;
    let (server, first) = (proposal.server.clone(), proposal.covers[0].kind());
    let mut rules = Vec::new();
    for action in &proposal.covers {
        if let Some(rule) = action
            .is_throttled()
            .then(|| crate::safety::rule(&settings.safety, action.kind()))
            .flatten()
        {
            rules.push((
                action.kind(),
                rule.clone(),
                "; nobody was asked to approve it".to_owned(),
            ));
        }
        for (kind, rule) in commits_to(&settings.safety, action) {
            rules.push((
                kind,
                rule,
                format!("; {} was not started, since the {kind} it leads to would be refused; nobody was asked to approve it", action.kind()),
            ));
        }
    }
    let commands: Vec<String> =
        proposal.covers.iter().map(|action| shared.executor.command(action)).collect();
    let command = commands.join("\n");
    let names: Vec<&str> = proposal.covers.iter().map(|action| action.kind().as_str()).collect();
    let what = match names.as_slice() {
        [one] => (*one).to_owned(),
        _ => format!("the restart procedure ({})", names.join(", ")),
    };
    let token = Token::random();
    let expires_at = now_ms() + policy.timeout.as_millis() as i64;
    let deadline = crate::store::rfc3339(expires_at);
    let link = format!("{}/approvals/{}", shared.links, token.as_str());
    let request = mailer::Request {
        proposal: &what,
        server: server.as_str(),
        commands: &command,
        deadline: &deadline,
        link: &link,
    };
    let (notification, to) = approval_request(shared, id, &request).await?;
    let detail = format!(
        "asked {} to approve {what} on {server}; no decision by {deadline} counts as a denial",
        to.join(", ")
    );
    let approval = NewApproval {
        first_command: commands[0].clone(),
        command,
        group: settings.inventory.get(&server).map(|e| e.group.clone()),
        rules,
        token_sha256: Token::hash(token.as_str()),
        expires_at,
        detail,
        notification,
        covers: proposal.covers,
    };
    match shared.store.request_approval(id.to_owned(), approval).await? {
        Requested::Asked => {
            tracing::info!(%server, proposal = %what, %deadline, "approval requested; the incident waits for a person");
            shared.metrics.action(ActionKind::Approval, Outcome::Requested);
            shared.mail.notify_one();
        }
        Requested::Throttled(reason) => {
            tracing::warn!(%server, %reason, "a throttle refuses the step; nobody is asked to approve it");
            shared.metrics.action(first, Outcome::Throttled);
        }
    }
    Ok(())
}

/// Records the expiry of every approval past its deadline, and drives those incidents on (they end `blocked`).
pub(super) async fn expire_approvals(shared: &Shared) {
    let expired = match shared.store.expired_approvals().await {
        Ok(expired) => expired,
        Err(err) => {
            tracing::warn!(error = %err, "cannot look for approvals past their deadline");
            return;
        }
    };
    for id in expired {
        let timeout = shared.settings.approval.timeout;
        let decision = NewDecision {
            outcome: Outcome::Expired,
            via: None,
            reason: None,
            detail: crate::approval::expired_detail(timeout),
        };
        match shared.store.decide(Target::Incident(id.clone()), decision).await {
            Ok(Decided::Recorded { .. }) => {
                tracing::warn!(incident = %id, "nobody decided on the approval in time; the incident ends blocked");
                shared.metrics.action(ActionKind::Approval, Outcome::Expired);
                let _ = shared.wake.send(Wake::Incident(id));
            }
            Ok(Decided::Nothing(_)) => {}
            Err(err) => {
                tracing::warn!(incident = %id, error = %err, "cannot record an expired approval; trying again")
            }
        }
    }
}

/// The email asking for a decision on `request`, and who it goes to: `approval.to`, else the escalation recipients.
async fn approval_request(
    shared: &Shared,
    id: &str,
    request: &mailer::Request<'_>,
) -> anyhow::Result<(NewNotification, Vec<String>)> {
    let incident = shared.store.incident(id.to_owned()).await?;
    let alerts = shared.store.incident_alerts(id.to_owned()).await?;
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &[],
        activation_left_as_found: &[],
        suppressed_escalations: 0,
    };
    let policy = &shared.settings.approval;
    let to = if policy.to.is_empty() {
        recipients(shared, &incident, &alerts).to_vec()
    } else {
        policy.to.clone()
    };
    let from = &shared.settings.email.from;
    let message = mailer::compose_request(
        &escalation,
        request,
        from,
        &to,
        shared.settings.public_url.as_deref(),
    )?;
    let subject = mailer::request_subject(&escalation, request);
    Ok((
        NewNotification {
            kind: mailer::REQUEST_KIND.into(),
            from: from.clone(),
            to: to.clone(),
            subject,
            message: message.formatted(),
            held: false,
        },
        to,
    ))
}
