use super::*;
use std::collections::BTreeMap;

use crate::domain::HealthSet;
use crate::inventory::InventoryEntry;
use crate::journal::ProbeRef;

pub(super) fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

/// Ten minutes to settle, a minute to warm up, two copy-status checks a minute apart after the first.
pub(super) const LIMITS: Limits = Limits {
    settle_wait: Duration::from_secs(600),
    warm_up: Duration::from_secs(60),
    restart_timeout: Duration::from_secs(1800),
    failover_timeout: Duration::from_secs(120),
    poll_interval: Duration::from_secs(60),
    ma_lookback: Duration::ZERO,
};

/// What a scenario answers for one action, given the journal so far.
pub(super) type Answer<'a> = &'a dyn Fn(&Action, &[Done]) -> (Outcome, Vec<&'static str>);

/// Feeds the planner the outcomes a scenario gives, step by step, and returns the steps and the ending.
/// `component_state` answers `active` unless the scenario says otherwise.
fn drive(
    server: &str,
    monitor: Option<&str>,
    hint: Option<&str>,
    answer: Answer,
) -> (Vec<String>, Ending) {
    drive_asking(server, monitor, hint, &[], Outcome::Approved, answer)
}

/// The servers the scenarios know: a CAS, a Mailbox server and a multi-role server.
pub(super) fn inventory() -> Inventory {
    BTreeMap::from([
        (
            name("cas01"),
            InventoryEntry { role: Role::Cas, group: "cas".into(), connection_uri: None },
        ),
        (
            name("mbx01"),
            InventoryEntry { role: Role::Mailbox, group: "dag".into(), connection_uri: None },
        ),
        (
            name("multi01"),
            InventoryEntry { role: Role::Multi, group: "dag".into(), connection_uri: None },
        ),
    ])
}

/// Like [`drive`] with `approval.actions` set to `approval`: a request is journaled `requested` (with the
/// proposal's steps in its detail), and a person answers each with `decision`.
fn drive_asking(
    server: &str,
    monitor: Option<&str>,
    hint: Option<&str>,
    approval: &[ActionKind],
    decision: Outcome,
    answer: Answer,
) -> (Vec<String>, Ending) {
    let runbooks = RunbookSet::load(None).unwrap();
    let inventory = inventory();
    let facts = Facts {
        server: name(server),
        health_set: HealthSet::parse("ActiveSync").unwrap(),
        monitor: monitor.map(|m| Monitor::parse(m).unwrap()),
        mailbox_hint: hint.map(name),
    };
    let limits = LIMITS;
    let ctx = Context {
        facts: &facts,
        runbooks: &runbooks,
        inventory: &inventory,
        limits: &limits,
        approval,
    };
    let (journal, ending) =
        run_planner(&ctx, answer, &|_, _| (Outcome::Done, Vec::new()), decision);
    (lines(&journal), ending)
}

/// Feeds the planner a scenario's outcomes until it ends: `answer` for each action, `history` for the
/// Managed Availability actions an `ma_history` step finds, `decision` for every approval asked for (its request
/// journaled with the proposal's steps in its detail). Skipped steps are journaled `skipped`.
pub(super) fn run_planner(
    ctx: &Context,
    answer: Answer,
    history: &dyn Fn(&Action, &[Done]) -> (Outcome, Vec<RecoveryAction>),
    decision: Outcome,
) -> (Vec<Done>, Ending) {
    let mut journal: Vec<Done> = Vec::new();
    loop {
        match next(ctx, &journal).decision {
            Decision::Finish(ending) => return (journal, ending),
            Decision::Skip(action, why) => {
                journal.push(Done { detail: why, ..done(&action, Outcome::Skipped, vec![]) })
            }
            Decision::Run(action @ Action::MaHistory { .. }) => {
                let (outcome, ma_actions) = history(&action, &journal);
                journal.push(Done { ma_actions, ..done(&action, outcome, vec![]) });
            }
            Decision::Ask(proposal) => {
                let covers: Vec<&str> = proposal.covers.iter().map(|a| a.kind().as_str()).collect();
                let mut request = done(
                    &Action::ComponentState { server: proposal.server.clone() },
                    Outcome::Requested,
                    vec![],
                );
                (request.action, request.detail) = (ActionKind::Approval, covers.join(","));
                journal.push(request);
            }
            Decision::Await => {
                let asked = journal.last().expect("a request comes first").clone();
                journal.push(Done {
                    outcome: decision,
                    detail: "on the operator's page; reason: checked".into(),
                    ..asked
                });
            }
            Decision::Run(action) => {
                let (outcome, unhealthy) = match (&action, answer(&action, &journal)) {
                    (Action::ComponentState { .. }, (Outcome::Done, _)) => {
                        (Outcome::Active, vec![])
                    }
                    (Action::MaHistory { .. }, _) => (Outcome::NoneFound, vec![]),
                    (_, answered) => answered,
                };
                journal.push(done(&action, outcome, unhealthy));
            }
        }
        assert!(journal.len() < 100, "the planner never ends: {:?}", lines(&journal));
    }
}

pub(super) fn done(action: &Action, outcome: Outcome, unhealthy: Vec<&str>) -> Done {
    Done {
        action: action.kind(),
        server: action.server().clone(),
        outcome,
        detail: String::new(),
        unhealthy: unhealthy.into_iter().map(|m| Monitor::parse(m).unwrap()).collect(),
        already_in_place: false,
        ma_actions: Vec::new(),
    }
}

pub(super) fn lines(journal: &[Done]) -> Vec<String> {
    journal
        .iter()
        .map(|d| match d.outcome {
            Outcome::Requested => format!("{} {} {} {}", d.action, d.server, d.outcome, d.detail),
            _ => format!("{} {} {}", d.action, d.server, d.outcome),
        })
        .collect()
}

/// Whether the journal has `action` done on `server`.
fn ran(journal: &[Done], action: ActionKind, server: &str) -> bool {
    journal
        .iter()
        .any(|d| d.action == action && d.server.as_str() == server && d.outcome == Outcome::Done)
}

const CTP: Option<&str> = Some("ActiveSyncCTPMonitor");
/// A Mailbox server's restart procedure as the journal shows it, from its failover to re-enabling activation.
const MBX01_RESTART: [&str; 8] = [
    "disable_activation mbx01 done",
    "copy_status mbx01 no_active_copies",
    "component_state mbx01 active",
    "restart_server mbx01 done",
    "wait mbx01 done",
    "wait mbx01 done",
    "probe mbx01 succeeded",
    "enable_activation mbx01 done",
];
const DEEP: &str = "ActiveSyncDeepTestMonitor";
const SELF_TEST: &str = "ActiveSyncSelfTestMonitor";

#[test]
fn ctp_with_an_unhealthy_mailbox_server_fixes_the_mailbox_first_and_checks_it_again_before_restarting_the_cas(
) {
    let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, journal| match action {
        Action::Probe { server, .. } if server.as_str() == "cas01" => (Outcome::Failed, vec![]),
        Action::Probe { .. } => (Outcome::Succeeded, vec![]),
        Action::ServerHealth { .. } if ran(journal, ActionKind::RecycleAppPool, "mbx01") => {
            (Outcome::Healthy, vec![])
        }
        Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP]),
        _ => (Outcome::Done, vec![]),
    });
    assert_eq!(
        steps,
        [
            "probe cas01 failed",
            "component_state cas01 active",
            "recycle_app_pool cas01 done",
            "wait cas01 done",
            "probe cas01 failed",
            "iis_reset cas01 done",
            "wait cas01 done",
            "probe cas01 failed",
            "server_health mbx01 unhealthy",
            "component_state mbx01 active",
            "recycle_app_pool mbx01 done",
            "wait mbx01 done",
            "probe mbx01 succeeded",
            "probe cas01 failed",
            "server_health mbx01 healthy",
            "component_state cas01 active",
            "restart_server cas01 done",
            "wait cas01 done",
            "wait cas01 done",
            "probe cas01 failed",
        ]
    );
    assert_eq!(ending.state, State::Escalated);
    assert_eq!(ending.reason, "probe still failing after all remedies");
}

#[test]
fn ctp_addresses_every_unhealthy_monitor_on_the_mailbox_server_without_repeating_a_remedy() {
    // Recycling fixes the DeepTest monitor; the SelfTest monitor needs a restart, whose failover comes first.
    let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, journal| {
        let restarted = ran(journal, ActionKind::RestartServer, "mbx01");
        match action {
            Action::Probe { server, .. } if server.as_str() == "cas01" => {
                (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![])
            }
            Action::Probe { probe, .. } if probe.probe.as_str() == "ActiveSyncDeepTestProbe" => {
                (Outcome::Succeeded, vec![])
            }
            Action::Probe { .. } => {
                (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![])
            }
            Action::ServerHealth { .. } if ran(journal, ActionKind::RecycleAppPool, "mbx01") => {
                (Outcome::Unhealthy, vec![SELF_TEST])
            }
            Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP, SELF_TEST]),
            Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
            _ => (Outcome::Done, vec![]),
        }
    });
    assert_eq!(
        steps[8..],
        [
            "server_health mbx01 unhealthy",
            "component_state mbx01 active",
            "recycle_app_pool mbx01 done",
            "wait mbx01 done",
            "probe mbx01 succeeded",
            "probe cas01 failed",
            "server_health mbx01 unhealthy",
            // The SelfTest runbook's recycle already ran on mbx01 for the DeepTest monitor: not again.
            "iis_reset mbx01 done",
            "wait mbx01 done",
            "probe mbx01 failed",
            "component_state mbx01 active",
        ]
        .into_iter()
        .chain(MBX01_RESTART)
        .chain(["probe cas01 succeeded"])
        .collect::<Vec<_>>()
    );
    assert_eq!(ending.state, State::Recovered);
    assert!(
        ending.reason.contains("ActiveSyncDeepTestMonitor on the Mailbox server mbx01")
            && ending.reason.contains("restarting mbx01 fixed it"),
        "{}",
        ending.reason
    );
    assert!(ending.activation_disabled.is_empty());
}

#[test]
fn a_ctp_incident_whose_mailbox_runbook_is_exhausted_escalates_without_restarting_the_cas() {
    let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, _| match action {
        Action::Probe { .. } => (Outcome::Failed, vec![]),
        Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP]),
        Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
        _ => (Outcome::Done, vec![]),
    });
    assert!(!steps.contains(&"restart_server cas01 done".to_owned()), "{steps:?}");
    assert_eq!(steps.last().unwrap(), "probe mbx01 failed");
    assert_eq!(ending.state, State::Escalated);
    assert_eq!(
        ending.reason,
        "the Mailbox server mbx01 could not be recovered: probe still failing after all remedies"
    );
    assert_eq!(
        ending.activation_disabled,
        [name("mbx01")],
        "a failed restart leaves activation disabled, and the email says so"
    );
}

#[test]
fn a_multi_role_server_named_as_its_own_mailbox_server_goes_on_to_the_restart() {
    let (steps, ending) = drive("multi01", CTP, Some("multi01"), &|action, journal| {
        let restarted = ran(journal, ActionKind::RestartServer, "multi01");
        match action {
            Action::Probe { .. } => {
                (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![])
            }
            Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP]),
            Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
            _ => (Outcome::Done, vec![]),
        }
    });
    assert_eq!(
        steps,
        [
            "probe multi01 failed",
            "component_state multi01 active",
            "recycle_app_pool multi01 done",
            "wait multi01 done",
            "probe multi01 failed",
            "iis_reset multi01 done",
            "wait multi01 done",
            "probe multi01 failed",
            "server_health multi01 unhealthy",
            "component_state multi01 active",
            "disable_activation multi01 done",
            "copy_status multi01 no_active_copies",
            "component_state multi01 active",
            "restart_server multi01 done",
            "wait multi01 done",
            "wait multi01 done",
            "probe multi01 succeeded",
            "enable_activation multi01 done",
            "probe multi01 succeeded",
        ]
    );
    assert_eq!(ending.state, State::Recovered);
}

#[test]
fn requests_queued_on_a_mailbox_and_a_multi_role_server_fail_over_before_the_restart() {
    for server in ["mbx01", "multi01"] {
        let (steps, ending) =
            drive(server, Some("RequestsQueuedGt500Monitor"), None, &|action, journal| {
                let restarted = journal.iter().any(|d| d.action == ActionKind::RestartServer);
                match action {
                    Action::ServerHealth { .. } if restarted => (Outcome::Healthy, vec![]),
                    Action::ServerHealth { .. } => {
                        (Outcome::Unhealthy, vec!["RequestsQueuedGt500Monitor"])
                    }
                    Action::CopyStatus { .. }
                        if journal
                            .iter()
                            .filter(|d| d.action == ActionKind::DisableActivation)
                            .count()
                            < 2 =>
                    {
                        (Outcome::ActiveCopies, vec![])
                    }
                    Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
                    _ => (Outcome::Done, vec![]),
                }
            });
        let s = |text: &str| text.replace("S", server);
        assert_eq!(
            steps,
            [
                "server_health S unhealthy",
                "component_state S active",
                "recycle_app_pool S done",
                "wait S done",
                "server_health S unhealthy",
                "iis_reset S done",
                "wait S done",
                "server_health S unhealthy",
                "component_state S active",
                "disable_activation S done",
                "copy_status S active_copies",
                "wait S done",
                "copy_status S active_copies",
                // Halfway through timing.failover_timeout: the remaining copies are moved explicitly.
                "disable_activation S done",
                "wait S done",
                "copy_status S no_active_copies",
                "component_state S active",
                "restart_server S done",
                "wait S done",
                "wait S done",
                "server_health S healthy",
                "enable_activation S done",
            ]
            .map(s),
            "{server}"
        );
        assert_eq!(
            (ending.state, ending.activation_disabled.len()),
            (State::Recovered, 0),
            "{server}"
        );
    }
}

#[test]
fn a_lost_restart_result_is_verified_not_repeated() {
    let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, journal| match action {
        Action::Probe { .. } => {
            (if journal.len() < 9 { Outcome::Failed } else { Outcome::Succeeded }, vec![])
        }
        Action::ServerHealth { .. } => (Outcome::Healthy, vec![]),
        Action::RestartServer { .. } => (Outcome::Interrupted, vec![]),
        _ => (Outcome::Done, vec![]),
    });
    assert_eq!(
        &steps[8..],
        [
            "server_health mbx01 healthy",
            "component_state cas01 active",
            "restart_server cas01 interrupted",
            // Until the server answers, then its warm-up: the restart may still be under way.
            "wait cas01 done",
            "wait cas01 done",
            "probe cas01 succeeded"
        ]
    );
    assert_eq!(ending.state, State::Recovered);
}

#[test]
fn a_mailbox_restart_whose_copies_never_move_escalates_with_activation_disabled() {
    let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, _| match action {
        Action::Probe { .. } => (Outcome::Failed, vec![]),
        Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP]),
        Action::CopyStatus { .. } => (Outcome::ActiveCopies, vec![]),
        _ => (Outcome::Done, vec![]),
    });
    // A check at once, then one a minute for the two minutes of timing.failover_timeout, with one push between.
    assert!(
        steps.ends_with(&[
            "disable_activation mbx01 done".into(),
            "copy_status mbx01 active_copies".into(),
            "wait mbx01 done".into(),
            "copy_status mbx01 active_copies".into(),
            "disable_activation mbx01 done".into(),
            "wait mbx01 done".into(),
            "copy_status mbx01 active_copies".into(),
        ]),
        "{steps:?}"
    );
    assert_eq!(ending.state, State::Escalated);
    assert!(
        ending
            .reason
            .contains("active database copies remain on mbx01 after 2m of copy-status checks"),
        "{}",
        ending.reason
    );
    assert_eq!(ending.activation_disabled, [name("mbx01")]);
}

#[test]
fn a_server_in_maintenance_is_never_changed() {
    // In maintenance from the start: nothing changes anywhere.
    let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, _| match action {
        Action::Probe { .. } => (Outcome::Failed, vec![]),
        Action::ComponentState { .. } => (Outcome::Inactive, vec![]),
        _ => (Outcome::Done, vec![]),
    });
    assert_eq!(steps, ["probe mbx01 failed", "component_state mbx01 inactive"]);
    assert_eq!(ending.state, State::Suppressed);
    assert!(ending.reason.starts_with("mbx01 is in maintenance"), "{}", ending.reason);

    // Put in maintenance while its databases moved: not restarted, and activation is reported as still off.
    let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, journal| match action {
        Action::Probe { .. } => (Outcome::Failed, vec![]),
        Action::ComponentState { .. } if ran(journal, ActionKind::DisableActivation, "mbx01") => {
            (Outcome::Inactive, vec![])
        }
        Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
        _ => (Outcome::Done, vec![]),
    });
    assert_eq!(
        &steps[steps.len() - 3..],
        [
            "disable_activation mbx01 done",
            "copy_status mbx01 no_active_copies",
            "component_state mbx01 inactive"
        ]
    );
    assert_eq!(ending.state, State::Suppressed);
    assert_eq!(ending.activation_disabled, [name("mbx01")]);
}

#[test]
fn activation_disabled_by_an_administrator_is_left_as_found() {
    let runbooks = RunbookSet::load(None).unwrap();
    let inventory = BTreeMap::from([(
        name("mbx01"),
        InventoryEntry { role: Role::Mailbox, group: "dag".into(), connection_uri: None },
    )]);
    let facts = Facts {
        server: name("mbx01"),
        health_set: HealthSet::parse("ActiveSync").unwrap(),
        monitor: Some(Monitor::parse(DEEP).unwrap()),
        mailbox_hint: None,
    };
    let limits = LIMITS;
    let ctx = Context {
        facts: &facts,
        runbooks: &runbooks,
        inventory: &inventory,
        limits: &limits,
        approval: &[],
    };
    let mut journal = Vec::new();
    let ending = loop {
        match next(&ctx, &journal).decision {
            Decision::Finish(ending) => break ending,
            Decision::Skip(..) => unreachable!("no Managed Availability history in this scenario"),
            Decision::Run(action) => {
                let restarted =
                    journal.iter().any(|d: &Done| d.action == ActionKind::RestartServer);
                let outcome = match &action {
                    Action::Probe { .. } if restarted => Outcome::Succeeded,
                    Action::Probe { .. } => Outcome::Failed,
                    Action::ComponentState { .. } => Outcome::Active,
                    Action::CopyStatus { .. } => Outcome::NoActiveCopies,
                    _ => Outcome::Done,
                };
                let mut step = done(&action, outcome, vec![]);
                step.already_in_place = action.kind() == ActionKind::DisableActivation;
                journal.push(step);
            }
            other => panic!("nobody is asked without approval.actions: {other:?}"),
        }
    };
    assert_eq!(ending.state, State::Recovered);
    assert!(
        !journal.iter().any(|d| d.action == ActionKind::EnableActivation),
        "{:?}",
        lines(&journal)
    );
    assert_eq!(
        (ending.activation_disabled.len(), ending.activation_left_as_found.clone()),
        (0, vec![name("mbx01")])
    );
}

#[test]
fn a_refused_failover_changes_nothing_and_a_refused_restart_undoes_the_failover() {
    let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, _| match action {
        Action::Probe { .. } => (Outcome::Failed, vec![]),
        Action::DisableActivation { .. } => (Outcome::Throttled, vec![]),
        _ => (Outcome::Done, vec![]),
    });
    assert_eq!(steps.last().unwrap(), "disable_activation mbx01 throttled");
    assert_eq!((ending.state, ending.activation_disabled.len()), (State::Blocked, 0));

    let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, _| match action {
        Action::Probe { .. } => (Outcome::Failed, vec![]),
        Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
        Action::RestartServer { .. } => (Outcome::Throttled, vec![]),
        _ => (Outcome::Done, vec![]),
    });
    assert_eq!(
        &steps[steps.len() - 2..],
        ["restart_server mbx01 throttled", "enable_activation mbx01 done"]
    );
    assert_eq!((ending.state, ending.activation_disabled.len()), (State::Blocked, 0));
    assert!(
        ending.reason.ends_with("the failover was undone (activation re-enabled on mbx01)"),
        "{}",
        ending.reason
    );
}

#[test]
fn a_dry_run_failover_does_not_wait_for_copies_nobody_asked_to_move() {
    let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, _| match action {
        Action::Probe { .. } => (Outcome::Failed, vec![]),
        Action::RecycleAppPool { .. }
        | Action::IisReset { .. }
        | Action::DisableActivation { .. } => (Outcome::DryRun, vec![]),
        Action::CopyStatus { .. } => (Outcome::ActiveCopies, vec![]),
        _ => (Outcome::Done, vec![]),
    });
    assert_eq!(
        &steps[steps.len() - 2..],
        ["disable_activation mbx01 dry_run", "copy_status mbx01 active_copies"]
    );
    assert_eq!(ending.state, State::Escalated);
    assert!(ending.reason.starts_with("dry run: activation was not disabled"), "{}", ending.reason);
    assert!(ending.activation_disabled.is_empty());
}

#[test]
fn an_interrupted_enable_activation_is_verified_then_repeated() {
    let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, journal| {
        let restarted = ran(journal, ActionKind::RestartServer, "mbx01");
        let enables = journal.iter().filter(|d| d.action == ActionKind::EnableActivation).count();
        match action {
            Action::Probe { .. } => {
                (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![])
            }
            Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
            Action::EnableActivation { .. } if enables == 0 => (Outcome::Interrupted, vec![]),
            _ => (Outcome::Done, vec![]),
        }
    });
    assert_eq!(
        &steps[steps.len() - 4..],
        [
            "probe mbx01 succeeded",
            "enable_activation mbx01 interrupted",
            "probe mbx01 succeeded",
            "enable_activation mbx01 done"
        ]
    );
    assert_eq!((ending.state, ending.activation_disabled.len()), (State::Recovered, 0));
}

#[test]
fn an_interrupted_failover_is_not_undone_blind_and_is_reported() {
    let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, journal| {
        let restarted = ran(journal, ActionKind::RestartServer, "mbx01");
        match action {
            Action::Probe { .. } => {
                (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![])
            }
            Action::DisableActivation { attempt: 1, .. } => (Outcome::Interrupted, vec![]),
            Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
            _ => (Outcome::Done, vec![]),
        }
    });
    assert_eq!(
        steps.last().unwrap(),
        "probe mbx01 succeeded",
        "whether activation was disabled before is unknown: it is not re-enabled"
    );
    assert_eq!(
        (ending.state, ending.activation_disabled.clone()),
        (State::Recovered, vec![name("mbx01")])
    );
}

#[test]
fn a_journal_that_no_longer_matches_the_runbook_ends_blocked() {
    let runbooks = RunbookSet::load(None).unwrap();
    let inventory = BTreeMap::from([(
        name("cas01"),
        InventoryEntry { role: Role::Cas, group: "cas".into(), connection_uri: None },
    )]);
    let facts = Facts {
        server: name("cas01"),
        health_set: HealthSet::parse("ActiveSync").unwrap(),
        monitor: CTP.map(|m| Monitor::parse(m).unwrap()),
        mailbox_hint: None,
    };
    let limits = LIMITS;
    let ctx = Context {
        facts: &facts,
        runbooks: &runbooks,
        inventory: &inventory,
        limits: &limits,
        approval: &[],
    };
    let probe = Action::Probe {
        server: name("cas01"),
        probe: ProbeRef::parse("ActiveSync\\ActiveSyncCTPProbe").unwrap(),
        backend: None,
    };
    let journal = [
        done(&probe, Outcome::Failed, vec![]),
        done(&Action::IisReset { server: name("cas01"), noforce: false }, Outcome::Done, vec![]),
    ];
    let Decision::Finish(ending) = next(&ctx, &journal).decision else {
        panic!("the planner must stop")
    };
    assert_eq!(ending.state, State::Blocked);
    assert!(
        ending
            .reason
            .starts_with("the journal no longer matches the runbook (step 2 was iis_reset on cas01, the runbook now asks for component_state on cas01)"),
        "{}",
        ending.reason
    );
}

#[test]
fn a_forced_ending_after_a_failover_keeps_what_the_journal_says_about_activation() {
    // A busy server or a silence ends the incident from outside the planner; the ending still reads the journal.
    let disable = Action::DisableActivation { server: name("mbx01"), attempt: 1 };
    let journal = [
        done(&disable, Outcome::Done, vec![]),
        done(&Action::CopyStatus { server: name("mbx01") }, Outcome::NoActiveCopies, vec![]),
    ];
    let ending = Ending::from_journal(State::Blocked, "mbx01 stayed busy", &journal);
    assert_eq!(ending.activation_disabled, [name("mbx01")]);
    let enable = done(&Action::EnableActivation { server: name("mbx01") }, Outcome::Done, vec![]);
    let ending = Ending::from_journal(
        State::Blocked,
        "x",
        &[journal[0].clone(), journal[1].clone(), enable],
    );
    assert!(ending.activation_disabled.is_empty());
}

mod approvals;
