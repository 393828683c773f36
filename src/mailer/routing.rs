//! Who is told about an incident, and whether at all: the `[[email.routes]]` decision (first matching route picks
//! the recipients, else `email.to`) and the `email.notify_on` decision (which final states send an email).
//!
//! Pure functions over checked values: no IO, no clock, no configuration reading. `config` builds the [`Route`]s
//! (naming the key of anything wrong); the engine asks [`recipients`] and [`notifies`] when an incident ends.

use super::NotifyOn;
use crate::incident::State;

/// A name pattern of a route: an exact name, or a prefix followed by `*`; compared without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// Lower-cased, without the `*`.
    text: String,
    prefix: bool,
}

impl Pattern {
    /// Accepts `cas01.contoso.com`, `cas*`, `ActiveSync*` or `*`; refuses an empty pattern, white space, control
    /// characters and a `*` anywhere but at the end.
    pub fn parse(raw: &str) -> Result<Pattern, String> {
        if raw.is_empty() {
            return Err("is empty".to_owned());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{raw:?} holds white space or control characters"));
        }
        let (text, prefix) = match raw.strip_suffix('*') {
            Some(head) => (head, true),
            None => (raw, false),
        };
        if text.contains('*') {
            return Err(format!("{raw:?} has a '*' before its end; only a trailing '*' (a prefix wildcard) is allowed"));
        }
        Ok(Pattern { text: text.to_ascii_lowercase(), prefix })
    }

    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if self.prefix {
            name.starts_with(&self.text)
        } else {
            name == self.text
        }
    }
}

/// One `[[email.routes]]` entry: conditions on the incident's names, and who is told when they all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// A condition left out (`None`) holds for any name; at least one is set.
    health_sets: Option<Vec<Pattern>>,
    monitors: Option<Vec<Pattern>>,
    servers: Option<Vec<Pattern>>,
    /// At least one address.
    to: Vec<String>,
}

/// Why a route cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("sets none of health_sets, monitors and servers, so it would match every incident; use email.to for that")]
    NoCondition,
    #[error("a condition list is empty, so the route could never match; leave the key out to match any name")]
    EmptyCondition,
    #[error("is empty; a route needs a recipient")]
    NoRecipient,
}

impl Route {
    pub fn new(
        health_sets: Option<Vec<Pattern>>,
        monitors: Option<Vec<Pattern>>,
        servers: Option<Vec<Pattern>>,
        to: Vec<lettre::Address>,
    ) -> Result<Route, RouteError> {
        let conditions = [&health_sets, &monitors, &servers];
        if conditions.iter().all(|c| c.is_none()) {
            return Err(RouteError::NoCondition);
        }
        if conditions.iter().any(|c| c.as_ref().is_some_and(Vec::is_empty)) {
            return Err(RouteError::EmptyCondition);
        }
        if to.is_empty() {
            return Err(RouteError::NoRecipient);
        }
        Ok(Route {
            health_sets,
            monitors,
            servers,
            to: to.iter().map(ToString::to_string).collect(),
        })
    }
}

/// What a route is matched against: the incident's names.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    pub health_set: &'a str,
    /// None when neither the alert nor `Get-ServerHealth` named one: then a route with `monitors` does not match.
    pub monitor: Option<&'a str>,
    pub server: &'a str,
}

impl Route {
    /// Every condition the route sets holds (any one pattern of a list is enough).
    pub fn matches(&self, names: &Names) -> bool {
        let holds = |patterns: &Option<Vec<Pattern>>, name: Option<&str>| match (patterns, name) {
            (None, _) => true,
            (Some(patterns), Some(name)) => patterns.iter().any(|p| p.matches(name)),
            (Some(_), None) => false,
        };
        holds(&self.health_sets, Some(names.health_set))
            && holds(&self.monitors, names.monitor)
            && holds(&self.servers, Some(names.server))
    }
}

/// The recipients of an incident's email: those of the first route that matches, else `fallback` (`email.to`).
pub fn recipients<'a>(routes: &'a [Route], fallback: &'a [String], names: &Names) -> &'a [String] {
    routes
        .iter()
        .find(|route| route.matches(names))
        .map(|route| route.to.as_slice())
        .unwrap_or(fallback)
}

/// Whether an incident that ended in `state` sends an email under `email.notify_on`.
pub fn notifies(notify_on: &[NotifyOn], state: State) -> bool {
    let wanted = match state {
        State::Escalated => NotifyOn::Escalated,
        State::Blocked => NotifyOn::Blocked,
        State::Recovered => NotifyOn::Recovered,
        _ => return false,
    };
    notify_on.contains(&wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Option<Vec<Pattern>> {
        Some(list.iter().map(|p| Pattern::parse(p).unwrap()).collect())
    }

    fn route(health_sets: &[&str], monitors: &[&str], servers: &[&str], to: &str) -> Route {
        let some = |list: &[&str]| if list.is_empty() { None } else { patterns(list) };
        Route::new(some(health_sets), some(monitors), some(servers), vec![to.parse().unwrap()])
            .unwrap()
    }

    #[test]
    fn the_first_matching_route_picks_the_recipients() {
        let routes = [
            route(&[], &[], &["mbx*"], "mailbox-team@contoso.com"),
            route(&["ActiveSync.Proxy"], &[], &[], "proxy@contoso.com"),
            route(
                &["ActiveSync*"],
                &["ActiveSyncCTPMonitor"],
                &["cas01.contoso.com", "cas02*"],
                "cas-ctp@contoso.com",
            ),
            route(&["activesync"], &["*"], &[], "any-monitor@contoso.com"),
        ];
        let fallback = vec!["oncall@contoso.com".to_owned()];
        // (health set, monitor, server) -> the one recipient expected.
        let cases: &[(&str, Option<&str>, &str, &str)] = &[
            (
                "ActiveSync",
                Some("ActiveSyncCTPMonitor"),
                "MBX01.contoso.com",
                "mailbox-team@contoso.com",
            ),
            (
                "ActiveSync.Proxy",
                Some("ActiveSyncCTPMonitor"),
                "mbx02.contoso.com",
                "mailbox-team@contoso.com",
            ),
            (
                "ActiveSync.Proxy",
                Some("ActiveSyncProxyTestMonitor"),
                "cas01.contoso.com",
                "proxy@contoso.com",
            ),
            (
                "ActiveSync",
                Some("activesyncctpmonitor"),
                "cas01.contoso.com",
                "cas-ctp@contoso.com",
            ),
            (
                "ActiveSync.Protocol",
                Some("ActiveSyncCTPMonitor"),
                "CAS02b.contoso.com",
                "cas-ctp@contoso.com",
            ),
            // An exact server pattern is not a prefix.
            (
                "ActiveSync",
                Some("ActiveSyncCTPMonitor"),
                "cas01.contoso.com.au",
                "any-monitor@contoso.com",
            ),
            (
                "ActiveSync",
                Some("RequestsQueuedGt500Monitor"),
                "cas01.contoso.com",
                "any-monitor@contoso.com",
            ),
            // A route with monitors needs a monitor, even "*".
            ("ActiveSync", None, "cas01.contoso.com", "oncall@contoso.com"),
            (
                "ActiveSync.Protocol",
                Some("ActiveSyncSelfTestMonitor"),
                "cas03.contoso.com",
                "oncall@contoso.com",
            ),
            ("OWA", Some("OWACTPMonitor"), "cas01.contoso.com", "oncall@contoso.com"),
        ];
        for &(health_set, monitor, server, want) in cases {
            let names = Names { health_set, monitor, server };
            assert_eq!(recipients(&routes, &fallback, &names), [want.to_owned()], "{names:?}");
        }
        assert_eq!(
            recipients(
                &[],
                &fallback,
                &Names { health_set: "ActiveSync", monitor: None, server: "cas01" }
            ),
            fallback
        );
    }

    #[test]
    fn a_route_needs_a_condition_and_a_recipient() {
        let to = || vec!["oncall@contoso.com".parse().unwrap()];
        assert_eq!(Route::new(None, None, None, to()), Err(RouteError::NoCondition));
        assert_eq!(
            Route::new(patterns(&["ActiveSync"]), Some(Vec::new()), None, to()),
            Err(RouteError::EmptyCondition)
        );
        assert_eq!(
            Route::new(None, None, patterns(&["cas*"]), Vec::new()),
            Err(RouteError::NoRecipient)
        );
    }

    #[test]
    fn patterns_are_exact_or_a_trailing_prefix() {
        let cases: &[(&str, Result<&[(&str, bool)], &str>)] = &[
            (
                "cas01.contoso.com",
                Ok(&[
                    ("CAS01.contoso.com", true),
                    ("cas01.contoso.com.au", false),
                    ("cas01", false),
                ]),
            ),
            (
                "cas*",
                Ok(&[
                    ("cas01.contoso.com", true),
                    ("CASARRAY", true),
                    ("cas", true),
                    ("mbx01", false),
                ]),
            ),
            ("*", Ok(&[("anything", true), ("", true)])),
            ("", Err("is empty")),
            ("cas 01", Err("white space")),
            ("*.contoso.com", Err("only a trailing '*'")),
            ("ca*s*", Err("only a trailing '*'")),
        ];
        for (raw, want) in cases {
            match (Pattern::parse(raw), want) {
                (Ok(pattern), Ok(names)) => {
                    for (name, matches) in names.iter() {
                        assert_eq!(pattern.matches(name), *matches, "{raw:?} against {name:?}");
                    }
                }
                (Err(err), Err(want)) => {
                    assert!(err.contains(want), "{raw:?}: {err:?} lacks {want:?}")
                }
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn notify_on_decides_which_endings_send_email() {
        let default = [NotifyOn::Escalated, NotifyOn::Blocked];
        let with_recovered = [NotifyOn::Escalated, NotifyOn::Blocked, NotifyOn::Recovered];
        // (state, under the default, with "recovered" added)
        let cases = [
            (State::Escalated, true, true),
            (State::Blocked, true, true),
            (State::Recovered, false, true),
            (State::Transient, false, false),
            (State::Suppressed, false, false),
            (State::Running, false, false),
        ];
        for (state, by_default, when_asked) in cases {
            assert_eq!(notifies(&default, state), by_default, "{state} by default");
            assert_eq!(notifies(&with_recovered, state), when_asked, "{state} with recovered");
        }
    }
}
