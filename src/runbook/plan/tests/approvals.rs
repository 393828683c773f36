//! The planner with approval: which steps it asks a person about, once, and what a decision does.

use super::*;

const HURTS: &[ActionKind] = &[ActionKind::DisableActivation, ActionKind::RestartServer];

#[test]
fn a_mailbox_restart_is_approved_once_before_its_failover_for_the_whole_procedure() {
    let (steps, ending) =
        drive_asking("mbx01", Some(DEEP), None, HURTS, Outcome::Approved, &|action, journal| {
            match action {
                Action::Probe { .. } => (
                    if ran(journal, ActionKind::RestartServer, "mbx01") {
                        Outcome::Succeeded
                    } else {
                        Outcome::Failed
                    },
                    vec![],
                ),
                Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
                _ => (Outcome::Done, vec![]),
            }
        });
    let asked =
        "approval mbx01 requested disable_activation,copy_status,restart_server,enable_activation";
    let at = steps.iter().position(|s| s == asked).expect("asked before the failover");
    assert_eq!(steps[at - 1], "probe mbx01 failed", "asked once the IISReset had not helped");
    // Verified again after the decision, and the maintenance state read again before the change.
    let decided =
        [asked, "approval mbx01 approved", "probe mbx01 failed", "component_state mbx01 active"];
    assert_eq!(steps[at..], [&decided[..], &MBX01_RESTART[..]].concat());
    assert_eq!(
        steps.iter().filter(|s| s.starts_with("approval")).count(),
        2,
        "one request, one decision: {steps:?}"
    );
    assert_eq!(ending.state, State::Recovered);
    assert!(
        steps[..at].iter().all(|s| !s.starts_with("approval")),
        "the recycle and IISReset were not asked about: {steps:?}"
    );
}

#[test]
fn a_denied_or_expired_approval_runs_nothing_and_ends_blocked_naming_the_decision() {
    for decision in [Outcome::Denied, Outcome::Expired] {
        let (steps, ending) = drive_asking(
            "cas01",
            Some("ActiveSyncCTPMonitor"),
            Some("mbx01"),
            &[ActionKind::IisReset],
            decision,
            &|action, _| match action {
                Action::Probe { .. } => (Outcome::Failed, vec![]),
                _ => (Outcome::Done, vec![]),
            },
        );
        assert_eq!(
            steps[steps.len() - 2..],
            ["approval cas01 requested iis_reset".to_owned(), format!("approval cas01 {decision}")]
        );
        assert!(!steps.iter().any(|s| s.starts_with("iis_reset")), "{steps:?}");
        assert_eq!(ending.state, State::Blocked);
        assert_eq!(ending.reason, format!("approval {decision} on the operator's page; reason: checked; iis_reset on cas01 was not run"));
    }
}

#[test]
fn an_approval_given_after_the_problem_went_away_does_nothing_more() {
    // The probe fails until the person has been asked, and succeeds when checked after the decision.
    let asked = |journal: &[Done]| journal.iter().any(|d| d.action == ActionKind::Approval);
    let answer = |action: &Action, journal: &[Done]| match action {
        Action::Probe { .. } if asked(journal) => (Outcome::Succeeded, vec![]),
        Action::Probe { .. } => (Outcome::Failed, vec![]),
        _ => (Outcome::Done, vec![]),
    };
    let (steps, ending) = drive_asking(
        "cas01",
        Some("ActiveSyncCTPMonitor"),
        Some("mbx01"),
        &[ActionKind::RecycleAppPool],
        Outcome::Approved,
        &answer,
    );
    assert_eq!(
        steps,
        [
            "probe cas01 failed",
            "component_state cas01 active",
            "approval cas01 requested recycle_app_pool",
            "approval cas01 approved",
            "probe cas01 succeeded"
        ]
    );
    assert_eq!(ending.state, State::Transient, "nothing was changed: {}", ending.reason);
    assert!(
        ending
            .reason
            .contains("the problem went away by itself, and recycle_app_pool on cas01 was not run"),
        "{}",
        ending.reason
    );

    let (steps, ending) = drive_asking(
        "cas01",
        Some("ActiveSyncCTPMonitor"),
        Some("mbx01"),
        &[ActionKind::IisReset],
        Outcome::Approved,
        &answer,
    );
    assert_eq!(steps.last().unwrap(), "probe cas01 succeeded");
    assert!(steps.contains(&"recycle_app_pool cas01 done".to_owned()));
    assert_eq!(
        ending.state,
        State::Recovered,
        "the recycle before the request changed the server: {}",
        ending.reason
    );
    assert!(
        ending.reason.contains("an earlier remedy took effect, and iis_reset on cas01 was not run"),
        "{}",
        ending.reason
    );
}

#[test]
fn nobody_is_asked_to_approve_what_a_throttle_or_maintenance_refuses() {
    // The engine records a throttled proposal as its first step, `throttled`, instead of asking.
    let ctx_journal = |outcome: Outcome| {
        vec![
            done(
                &Action::Probe {
                    server: name("cas01"),
                    probe: ProbeRef::parse("ActiveSync\\ActiveSyncCTPProbe").unwrap(),
                    backend: Some(name("mbx01")),
                },
                Outcome::Failed,
                vec![],
            ),
            done(&Action::ComponentState { server: name("cas01") }, outcome, vec![]),
        ]
    };
    let runbooks = RunbookSet::load(None).unwrap();
    let inventory = BTreeMap::from([(
        name("cas01"),
        InventoryEntry { role: Role::Cas, group: "cas".into(), connection_uri: None },
    )]);
    let facts = Facts {
        server: name("cas01"),
        health_set: HealthSet::parse("ActiveSync").unwrap(),
        monitor: Some(Monitor::parse("ActiveSyncCTPMonitor").unwrap()),
        mailbox_hint: Some(name("mbx01")),
    };
    let approval = [ActionKind::RecycleAppPool];
    let ctx = Context {
        facts: &facts,
        runbooks: &runbooks,
        inventory: &inventory,
        limits: &LIMITS,
        approval: &approval,
    };
    let mut journal = ctx_journal(Outcome::Active);
    journal.push(done(
        &Action::RecycleAppPool {
            server: name("cas01"),
            app_pools: vec![AppPool::parse("MSExchangeSyncAppPool").unwrap()],
        },
        Outcome::Throttled,
        vec![],
    ));
    match next(&ctx, &journal).decision {
        Decision::Finish(ending) => assert_eq!(ending.state, State::Blocked),
        other => panic!("a throttled proposal ends the incident: {other:?}"),
    }
    match next(&ctx, &ctx_journal(Outcome::Inactive)).decision {
        Decision::Finish(ending) => assert_eq!(
            ending.state,
            State::Suppressed,
            "a server in maintenance is not asked about"
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(next(&ctx, &ctx_journal(Outcome::Active)).decision, Decision::Ask(_)),
        "an active server with room in its throttles is asked about"
    );
}
