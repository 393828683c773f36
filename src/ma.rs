//! Managed Availability's own recovery record: the finished actions in a server's
//! `Microsoft-Exchange-ManagedAvailability/RecoveryActionResults` event log (SPEC section 5, "Managed Availability";
//! section 6, the `ma_history` protocol fields), and how they bear on the responder's own remedies.
//!
//! Exchange's responders act before an alert reaches the responder (a DeepTest monitor's pool is recycled the moment
//! it turns Unhealthy), and their throttles never see the responder's actions. So before its first remedy on a
//! server the responder reads this record: a remedy Managed Availability already took there is not repeated, and
//! its actions count toward the responder's throttles.
//!
//! This module is vocabulary and pure decisions: it reads fields already taken from an event, never a log or a
//! clock. The executors fetch the record; the planner asks [`took`] what it means for a remedy.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Dur;
use crate::incident::ActionKind;

/// The longest name or result text kept from an event: they come from a log, not from a validated source.
const MAX_FIELD_CHARS: usize = 200;

/// One finished recovery action, with the fields of its event's `Event.UserData.EventXML`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryAction {
    /// The action id: `RecycleApplicationPool`, `RestartService`, `ForceReboot`, `ServerFailover`, ...
    pub id: String,
    /// What it acted on: the application pool, the service or the server.
    pub resource: String,
    /// The Managed Availability responder that asked for it.
    pub requestor: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// `Succeeded`, or the failure Managed Availability recorded.
    pub result: String,
}

impl RecoveryAction {
    /// Reads one event's fields (looked up by name); `Ok(None)` for an event of an action that has not finished (a
    /// start event carries a placeholder result and the expected end time, so only `Finished` ones count).
    pub fn from_event<'a>(
        field: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<RecoveryAction>, String> {
        let state = field("State").unwrap_or_default();
        if !state.eq_ignore_ascii_case("Finished") {
            return Ok(None);
        }
        let text = |name: &str| -> Result<String, String> {
            let value = field(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("a finished recovery action without {name}"))?;
            Ok(value.chars().take(MAX_FIELD_CHARS).collect())
        };
        let time = |name: &str| -> Result<DateTime<Utc>, String> {
            let raw = text(name)?;
            parse_time(&raw).ok_or_else(|| format!("{name} {raw:?} is not an ISO 8601 time"))
        };
        Ok(Some(RecoveryAction {
            id: text("Id")?,
            resource: field("ResourceName")
                .unwrap_or_default()
                .trim()
                .chars()
                .take(MAX_FIELD_CHARS)
                .collect(),
            requestor: field("RequestorName")
                .unwrap_or("an unnamed responder")
                .trim()
                .chars()
                .take(MAX_FIELD_CHARS)
                .collect(),
            started_at: time("StartTime")?,
            ended_at: time("EndTime")?,
            result: field("Result")
                .unwrap_or_default()
                .trim()
                .chars()
                .take(MAX_FIELD_CHARS)
                .collect(),
        }))
    }

    /// The responder's action kind whose throttles this action counts toward, if any: Managed Availability's
    /// recycle, service restart and reboot are the responder's own remedies, and its server failover moves the
    /// databases off as `disable_activation` does.
    pub fn counts_as(&self) -> Option<ActionKind> {
        match self.id.to_ascii_lowercase().as_str() {
            "recycleapplicationpool" => Some(ActionKind::RecycleAppPool),
            "restartservice" => Some(ActionKind::RestartService),
            "forcereboot" => Some(ActionKind::RestartServer),
            "serverfailover" => Some(ActionKind::DisableActivation),
            _ => None,
        }
    }

    /// One line for a person: what, on what, by whom, when, with what result.
    pub fn describe(&self) -> String {
        let on =
            if self.resource.is_empty() { String::new() } else { format!(" {}", self.resource) };
        let result =
            if self.result.is_empty() { String::new() } else { format!(" ({})", self.result) };
        format!(
            "{}{on} by {}, finished {}{result}",
            self.id,
            self.requestor,
            rfc3339(self.ended_at)
        )
    }
}

/// Reads an event time: RFC 3339, else an ISO 8601 time without an offset, which the log keeps in UTC.
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Some(time.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())
        .map(|t| t.and_utc())
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The actions that ended within `lookback` before `now`, newest first. Nothing that ends after `now` is
/// finished yet, whatever its event says.
pub fn recent(
    mut actions: Vec<RecoveryAction>,
    lookback: Duration,
    now: DateTime<Utc>,
) -> Vec<RecoveryAction> {
    let since = now - chrono::Duration::from_std(lookback).unwrap_or(chrono::Duration::MAX);
    actions.retain(|a| a.ended_at >= since && a.ended_at <= now);
    actions.sort_by_key(|a| std::cmp::Reverse(a.ended_at));
    actions.dedup();
    actions
}

/// A remedy as Managed Availability would have taken it.
#[derive(Debug, Clone, Copy)]
pub enum Remedy<'a> {
    Recycle(&'a str),
    RestartService(&'a str),
    Restart,
}

/// The latest of `actions` that already took `remedy` (a `ForceReboot` for a restart), if one did.
pub fn took<'a>(actions: &'a [RecoveryAction], remedy: Remedy<'_>) -> Option<&'a RecoveryAction> {
    let matches = |a: &&RecoveryAction| match remedy {
        Remedy::Recycle(pool) => {
            a.id.eq_ignore_ascii_case("RecycleApplicationPool")
                && a.resource.eq_ignore_ascii_case(pool)
        }
        Remedy::RestartService(service) => {
            a.id.eq_ignore_ascii_case("RestartService") && a.resource.eq_ignore_ascii_case(service)
        }
        Remedy::Restart => a.id.eq_ignore_ascii_case("ForceReboot"),
    };
    actions.iter().filter(matches).max_by_key(|a| a.ended_at)
}

/// Why a skipped step was not run, for its journal detail.
pub fn skipped(action: &RecoveryAction) -> String {
    format!("Managed Availability already did this: {}; not repeated", action.describe())
}

/// An entry of a simulated server's Managed Availability log (`[simulator.servers."s"] ma_log`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimRecoveryAction {
    /// The action id, e.g. `RecycleApplicationPool`.
    pub action: String,
    /// The application pool, service or server it acted on.
    #[serde(default)]
    pub resource: String,
    /// The responder that asked for it.
    #[serde(default = "default_requestor")]
    pub requestor: String,
    /// How long before the simulator started the action ended (or, unfinished, began).
    pub ago: Dur,
    /// `false`: only its start event is in the log; it never counts.
    #[serde(default = "yes")]
    pub finished: bool,
    #[serde(default = "succeeded")]
    pub result: String,
}

fn default_requestor() -> String {
    "SimulatedResponder".to_owned()
}

fn yes() -> bool {
    true
}

fn succeeded() -> String {
    "Succeeded".to_owned()
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;

    use super::*;

    fn event(fields: &[(&str, &str)]) -> Result<Option<RecoveryAction>, String> {
        RecoveryAction::from_event(|name| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
    }

    const RECYCLE: [(&str, &str); 7] = [
        ("Id", "RecycleApplicationPool"),
        ("ResourceName", "MSExchangeSyncAppPool"),
        ("RequestorName", "ActiveSyncDeepTestRecycleAppPool"),
        ("StartTime", "2026-11-26T10:02:01.1234567Z"),
        ("EndTime", "2026-11-26T10:02:11.7654321Z"),
        ("State", "Finished"),
        ("Result", "Succeeded"),
    ];

    #[test]
    fn only_finished_events_are_read_and_bad_times_are_named() {
        let action = event(&RECYCLE).unwrap().unwrap();
        assert_eq!(
            action.describe(),
            "RecycleApplicationPool MSExchangeSyncAppPool by ActiveSyncDeepTestRecycleAppPool, finished 2026-11-26T10:02:11Z (Succeeded)"
        );
        assert_eq!(action.counts_as(), Some(ActionKind::RecycleAppPool));
        let mut started = RECYCLE;
        started[5] = ("State", "Started");
        assert_eq!(event(&started).unwrap(), None, "a start event never counts");
        let mut local = RECYCLE;
        local[4] = ("EndTime", "2026-11-26 10:02:11");
        assert_eq!(
            event(&local).unwrap().unwrap().ended_at,
            action.ended_at.with_nanosecond(0).unwrap()
        );
        let mut bad = RECYCLE;
        bad[4] = ("EndTime", "yesterday");
        assert_eq!(event(&bad).unwrap_err(), "EndTime \"yesterday\" is not an ISO 8601 time");
    }

    #[test]
    fn the_lookback_window_and_matching() {
        let base = event(&RECYCLE).unwrap().unwrap();
        let at = |minutes: i64, id: &str, resource: &str| RecoveryAction {
            id: id.into(),
            resource: resource.into(),
            ended_at: base.ended_at + chrono::Duration::minutes(minutes),
            ..base.clone()
        };
        let now = base.ended_at + chrono::Duration::minutes(30);
        let log = vec![
            at(-120, "RecycleApplicationPool", "MSExchangeSyncAppPool"),
            at(0, "RecycleApplicationPool", "msexchangesyncapppool"),
            at(10, "RestartService", "MSExchangeIMAP4BE"),
            at(40, "ForceReboot", "mbx01"),
        ];
        let recent = recent(log, Duration::from_secs(3600), now);
        assert_eq!(recent.len(), 2, "too old, and not yet ended, are left out: {recent:?}");
        assert_eq!(
            took(&recent, Remedy::Recycle("MSExchangeSyncAppPool")).map(|a| a.ended_at),
            Some(base.ended_at)
        );
        assert!(took(&recent, Remedy::Recycle("MSExchangeOWAAppPool")).is_none());
        assert!(took(&recent, Remedy::RestartService("MSExchangeIMAP4BE")).is_some());
        assert!(took(&recent, Remedy::Restart).is_none());
    }
}
