//! Throttles: whether a mutating action may run now, given what the journal says already ran.
//!
//! The limits are Exchange Managed Availability's own recovery-action throttles (SPEC section 6): a minimum time
//! between two runs and a maximum per day, on one server and in its group (the DAG or the CAS array), plus at most
//! one server restart in flight per group. This is a pure decision; the store gathers the history inside the same
//! transaction that records the step, so two incidents cannot both pass the same limit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::Dur;
use crate::incident::ActionKind;

/// `[safety]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    pub escalation_min_interval: Dur,
    /// Managed Availability's own recovery actions this recent are read before the first remedy on a server, not
    /// repeated, and counted toward the throttles; zero reads none.
    pub ma_lookback: Dur,
    pub recycle_app_pool: Throttle,
    pub iis_reset: Throttle,
    pub disable_activation: Throttle,
    pub restart_server: Throttle,
    pub restart_service: Throttle,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        let remedy = Throttle {
            server_min_interval: Dur::minutes(60),
            server_max_per_day: 1,
            group_min_interval: Dur::minutes(60),
            group_max_per_day: 4,
        };
        SafetyConfig {
            escalation_min_interval: Dur::minutes(240),
            ma_lookback: Dur::minutes(60),
            recycle_app_pool: remedy.clone(),
            restart_service: remedy.clone(),
            iis_reset: remedy.clone(),
            disable_activation: remedy,
            restart_server: Throttle {
                server_min_interval: Dur::minutes(720),
                server_max_per_day: 1,
                group_min_interval: Dur::minutes(600),
                group_max_per_day: 4,
            },
        }
    }
}

/// Managed Availability's own limits for one kind of recovery action.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    pub server_min_interval: Dur,
    pub server_max_per_day: u32,
    pub group_min_interval: Dur,
    pub group_max_per_day: u32,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// What the journal says about one action kind, for one server and its group, over the last day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub server_last: Option<i64>,
    pub server_today: u32,
    pub group_last: Option<i64>,
    pub group_today: u32,
    /// Runs of this action in the group that started and have not finished.
    pub group_in_flight: u32,
    /// How many of the runs counted above were Managed Availability's own recovery actions (SPEC section 5).
    pub managed_availability: u32,
}

/// The start of the window the per-day limits count over.
pub fn window_start(now_ms: i64) -> i64 {
    now_ms - DAY_MS
}

/// The throttle for an action kind, if it has one.
pub fn rule(safety: &SafetyConfig, kind: ActionKind) -> Option<&Throttle> {
    match kind {
        ActionKind::RecycleAppPool => Some(&safety.recycle_app_pool),
        ActionKind::IisReset => Some(&safety.iis_reset),
        ActionKind::DisableActivation => Some(&safety.disable_activation),
        ActionKind::RestartServer => Some(&safety.restart_server),
        ActionKind::RestartService => Some(&safety.restart_service),
        _ => None,
    }
}

/// `Ok` when the action may run; else the reason, naming the limit as its configuration key, and saying when
/// Managed Availability's own actions were among those counted.
pub fn check(
    kind: ActionKind,
    rule: &Throttle,
    server: &str,
    group: &str,
    history: &History,
    now_ms: i64,
) -> Result<(), String> {
    limit(kind, rule, server, group, history, now_ms).map_err(|reason| {
        match history.managed_availability {
            0 => reason,
            n => format!(
                "{reason} (counting {n} recovery action(s) Managed Availability took itself)"
            ),
        }
    })
}

fn limit(
    kind: ActionKind,
    rule: &Throttle,
    server: &str,
    group: &str,
    history: &History,
    now_ms: i64,
) -> Result<(), String> {
    let key = format!("safety.{kind}");
    // A step another driver started after `now_ms` was read (while this one waited for the throttle's lock) ran
    // no time ago, not a negative time: an interval of zero never refuses it.
    let since = |at: i64| (now_ms - at).max(0);
    let ago = |at: i64| {
        humantime::format_duration(Duration::from_secs((since(at) / 1000) as u64)).to_string()
    };
    let every = |d: Duration| humantime::format_duration(d).to_string();
    if kind == ActionKind::RestartServer && history.group_in_flight > 0 {
        return Err(format!("{key}: a server restart is already in flight in group {group}; one at a time per group"));
    }
    if let Some(last) =
        history.server_last.filter(|&at| since(at) < rule.server_min_interval.0.as_millis() as i64)
    {
        return Err(format!(
            "{key}.server_min_interval: {kind} ran on {server} {} ago; at most once every {}",
            ago(last),
            every(rule.server_min_interval.0)
        ));
    }
    if history.server_today >= rule.server_max_per_day {
        return Err(format!(
            "{key}.server_max_per_day: {kind} already ran {} time(s) on {server} in the last 24h",
            history.server_today
        ));
    }
    if let Some(last) =
        history.group_last.filter(|&at| since(at) < rule.group_min_interval.0.as_millis() as i64)
    {
        return Err(format!(
            "{key}.group_min_interval: {kind} ran in group {group} {} ago; at most once every {}",
            ago(last),
            every(rule.group_min_interval.0)
        ));
    }
    if history.group_today >= rule.group_max_per_day {
        return Err(format!("{key}.group_max_per_day: {kind} already ran {} time(s) in group {group} in the last 24h", history.group_today));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600 * 1000;

    #[test]
    fn managed_availability_limits() {
        let safety = SafetyConfig::default();
        let restart = rule(&safety, ActionKind::RestartServer).unwrap();
        let recycle = rule(&safety, ActionKind::RecycleAppPool).unwrap();
        let now = 100 * DAY_MS;
        let cases: &[(ActionKind, &Throttle, History, Result<(), &str>)] = &[
            (ActionKind::RestartServer, restart, History::default(), Ok(())),
            (
                ActionKind::RestartServer,
                restart,
                History { server_last: Some(now - 11 * HOUR), server_today: 1, ..History::default() },
                Err("safety.restart_server.server_min_interval: restart_server ran on mbx01 11h ago; at most once every 12h"),
            ),
            (
                ActionKind::RestartServer,
                restart,
                History { group_last: Some(now - 9 * HOUR), group_today: 1, ..History::default() },
                Err("safety.restart_server.group_min_interval"),
            ),
            (
                ActionKind::RestartServer,
                restart,
                History { group_last: Some(now - 11 * HOUR), group_today: 4, ..History::default() },
                Err("safety.restart_server.group_max_per_day"),
            ),
            (ActionKind::RestartServer, restart, History { group_in_flight: 1, ..History::default() }, Err("already in flight in group dag1")),
            (
                ActionKind::RecycleAppPool,
                recycle,
                History { server_last: Some(now - 61 * 60 * 1000), server_today: 1, ..History::default() },
                Err("safety.recycle_app_pool.server_max_per_day"),
            ),
            (ActionKind::RecycleAppPool, recycle, History { group_last: Some(now - 2 * HOUR), group_today: 3, ..History::default() }, Ok(())),
        ];
        for (kind, rule, history, expected) in cases {
            let got = check(*kind, rule, "mbx01", "dag1", history, now);
            match (got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(reason), Err(want)) => assert!(
                    reason.starts_with(want) || reason.contains(want),
                    "{history:?}: {reason}"
                ),
                (got, want) => panic!("{kind} {history:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// Two drivers in one group: the second read the time, then waited for the throttle's lock while the first
    /// started its step. With no interval set, the second still runs; with one, it is refused as having run just now.
    #[test]
    fn a_step_started_after_the_time_was_read_ran_no_time_ago() {
        let now = 100 * DAY_MS;
        let history = History { group_last: Some(now + 5), group_today: 1, ..History::default() };
        let mut unlimited =
            rule(&SafetyConfig::default(), ActionKind::RecycleAppPool).unwrap().clone();
        unlimited.group_min_interval = Dur(Duration::ZERO);
        assert_eq!(
            check(ActionKind::RecycleAppPool, &unlimited, "mbx01", "dag1", &history, now),
            Ok(())
        );
        let mut spaced = unlimited.clone();
        spaced.group_min_interval = Dur::minutes(1);
        let refused =
            check(ActionKind::RecycleAppPool, &spaced, "mbx02", "dag1", &history, now).unwrap_err();
        assert!(refused.contains("ran in group dag1 0s ago; at most once every 1m"), "{refused}");
    }
}
