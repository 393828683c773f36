//! Runbooks as data: the declarative format (`schemas/runbook.schema.json`), the built-in runbooks that ship inside
//! the binary, and the set in force once the configured runbook directory has added or replaced some.
//!
//! A runbook says how to verify a monitor's problem and which remedies to try in order; [`plan`] turns a runbook
//! and an incident's journal into the next step. Nothing here does IO but reading runbook files at start.

pub mod plan;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{AppPool, HealthSet, HealthSetPattern, Monitor, ServiceName};
use crate::inventory::Role;
use crate::journal::ProbeRef;

/// How to recover from one monitor's alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "healthset-responder runbook")]
pub struct Runbook {
    /// The monitor whose alerts this runbook answers, e.g. `ActiveSyncCTPMonitor`.
    #[schemars(with = "String")]
    pub monitor: Monitor,
    /// The health set the monitor belongs to, e.g. `ActiveSync`.
    #[schemars(with = "String")]
    pub health_set: HealthSet,
    /// The role of server the alert is typically raised on (informational; the inventory decides the restart path).
    #[serde(default)]
    pub typical_role: Option<Role>,
    /// One sentence on what the runbook does, for operators.
    #[serde(default)]
    pub summary: String,
    /// The Microsoft page and section the runbook follows, e.g. `Troubleshooting OWA Health Set, "OwaCtpMonitor
    /// Recovery Actions"`; `healthset-responder runbooks` lists it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// How to tell whether the problem still exists: first, and again after every remedy.
    pub verify: Verify,
    /// The remedies, in order. Each is followed by verification; the first that makes it pass ends the incident
    /// `recovered`. When none does, the incident is escalated.
    #[serde(default)]
    pub remedies: Vec<Remedy>,
}

/// A check that the monitor's problem still exists. Give exactly one of `probe` and `server_health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// Rerun this probe, `<health set>\<probe>`: `Invoke-MonitoringProbe <probe> -Server <server>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub probe: Option<ProbeRef>,
    /// Ask `Get-ServerHealth` about the health sets matching this pattern (e.g. `ActiveSync*`); the incident's
    /// monitor must not be Unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub server_health: Option<HealthSetPattern>,
    /// Wait `timing.settle_wait` before each check that follows a remedy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settle: bool,
}

/// One remedy. `roles`, when given, limits it to servers of those inventory roles (the role of the alert's server);
/// it is skipped on others. `on = "mailbox_hint"` runs it on the `_Mbx:` Mailbox server instead of the alert's
/// server (IMAP's CTP runbook restarts the back-end service there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Remedy {
    /// Recycle IIS application pools on the server: `app_pool` names one, `app_pools` several (one step).
    RecycleAppPool {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(with = "Option<String>")]
        app_pool: Option<AppPool>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[schemars(with = "Vec<String>")]
        app_pools: Vec<AppPool>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<Role>,
        #[serde(default, skip_serializing_if = "Target::is_alert_server")]
        on: Target,
    },
    /// Restart IIS on the server: `iisreset`, or with `noforce = true` `iisreset /noforce`, as the page says.
    IisReset {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        noforce: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<Role>,
        #[serde(default, skip_serializing_if = "Target::is_alert_server")]
        on: Target,
    },
    /// Restart a Windows service by name, e.g. `MSExchangeIMAP4BE` (the back-end service) or `MSExchangeIMAP4`.
    RestartService {
        #[schemars(with = "String")]
        service: ServiceName,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<Role>,
        #[serde(default, skip_serializing_if = "Target::is_alert_server")]
        on: Target,
    },
    /// Check the `_Mbx:` Mailbox server's health for the matching health sets. Where monitors are unhealthy, run
    /// their runbooks' remedies on the Mailbox server first, then verify here again; where all are healthy, go on.
    /// Without an `_Mbx:` hint the incident stops `blocked` rather than restart blind.
    CheckMailbox {
        #[schemars(with = "String")]
        health_sets: HealthSetPattern,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<Role>,
    },
    /// Restart the server and wait until it answers. On a Mailbox or multi-role server, first disable database
    /// activation and confirm no active copies remain (repeating a bounded number of times), and re-enable
    /// activation once verification passes.
    RestartServer {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<Role>,
    },
}

/// Which server a remedy runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The server the alert names.
    #[default]
    AlertServer,
    /// The Mailbox server the alert's `_Mbx:` hint names; without a hint the incident stops `blocked`.
    MailboxHint,
}

impl Target {
    fn is_alert_server(&self) -> bool {
        *self == Target::AlertServer
    }
}

impl Remedy {
    pub fn applies_to(&self, role: Role) -> bool {
        let roles = match self {
            Remedy::RecycleAppPool { roles, .. }
            | Remedy::IisReset { roles, .. }
            | Remedy::RestartService { roles, .. }
            | Remedy::CheckMailbox { roles, .. }
            | Remedy::RestartServer { roles } => roles,
        };
        roles.is_empty() || roles.contains(&role)
    }

    /// The application pools a recycle names, in order.
    pub fn app_pools(&self) -> Vec<AppPool> {
        match self {
            Remedy::RecycleAppPool { app_pool, app_pools, .. } => {
                app_pool.iter().chain(app_pools).cloned().collect()
            }
            _ => Vec::new(),
        }
    }

    /// Which server the remedy runs on.
    pub fn target(&self) -> Target {
        match self {
            Remedy::RecycleAppPool { on, .. }
            | Remedy::IisReset { on, .. }
            | Remedy::RestartService { on, .. } => *on,
            Remedy::CheckMailbox { .. } | Remedy::RestartServer { .. } => Target::AlertServer,
        }
    }
}

impl Serialize for ProbeRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProbeRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        ProbeRef::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Where a runbook in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::BuiltIn => f.write_str("built-in"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A runbook file that cannot be used, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct RunbookError {
    pub file: String,
    pub field: String,
    pub message: String,
}

const BUILT_IN: &[(&str, &str)] = &[
    ("ActiveSyncDeepTestMonitor.toml", include_str!("builtin/ActiveSyncDeepTestMonitor.toml")),
    ("ActiveSyncSelfTestMonitor.toml", include_str!("builtin/ActiveSyncSelfTestMonitor.toml")),
    ("ActiveSyncCTPMonitor.toml", include_str!("builtin/ActiveSyncCTPMonitor.toml")),
    ("RequestsQueuedGt500Monitor.toml", include_str!("builtin/RequestsQueuedGt500Monitor.toml")),
    ("ActiveSyncProxyTestMonitor.toml", include_str!("builtin/ActiveSyncProxyTestMonitor.toml")),
    (
        "autodiscover/AutodiscoverCtpMonitor.toml",
        include_str!("builtin/autodiscover/AutodiscoverCtpMonitor.toml"),
    ),
    ("ecp/EacDeepTestMonitor.toml", include_str!("builtin/ecp/EacDeepTestMonitor.toml")),
    ("ecp/EacSelfTestMonitor.toml", include_str!("builtin/ecp/EacSelfTestMonitor.toml")),
    ("ews/EWSDeepTestMonitor.toml", include_str!("builtin/ews/EWSDeepTestMonitor.toml")),
    ("ews/EWSSelfTestMonitor.toml", include_str!("builtin/ews/EWSSelfTestMonitor.toml")),
    ("ews/EwsCtpMonitor.toml", include_str!("builtin/ews/EwsCtpMonitor.toml")),
    (
        "imap/AverageCommandProcessingTimeGt60sMonitor.toml",
        include_str!("builtin/imap/AverageCommandProcessingTimeGt60sMonitor.toml"),
    ),
    ("imap/ImapCTPMonitor.toml", include_str!("builtin/imap/ImapCTPMonitor.toml")),
    ("imap/ImapProxyTestMonitor.toml", include_str!("builtin/imap/ImapProxyTestMonitor.toml")),
    ("imap/ImapSelfTestMonitor.toml", include_str!("builtin/imap/ImapSelfTestMonitor.toml")),
    ("imap/ImapTestDeepMonitor.toml", include_str!("builtin/imap/ImapTestDeepMonitor.toml")),
    (
        "imap/RequestsQueuedGt500Monitor.toml",
        include_str!("builtin/imap/RequestsQueuedGt500Monitor.toml"),
    ),
    (
        "outlook/OutlookProxyTestMonitor.toml",
        include_str!("builtin/outlook/OutlookProxyTestMonitor.toml"),
    ),
    (
        "outlook/OutlookRpcCtpMonitor.toml",
        include_str!("builtin/outlook/OutlookRpcCtpMonitor.toml"),
    ),
    (
        "outlook/OutlookRpcDeepTestMonitor.toml",
        include_str!("builtin/outlook/OutlookRpcDeepTestMonitor.toml"),
    ),
    (
        "outlook/OutlookRpcSelfTestMonitor.toml",
        include_str!("builtin/outlook/OutlookRpcSelfTestMonitor.toml"),
    ),
    ("owa/OWAProxyTestMonitor.toml", include_str!("builtin/owa/OWAProxyTestMonitor.toml")),
    ("owa/OwaCtpMonitor.toml", include_str!("builtin/owa/OwaCtpMonitor.toml")),
    (
        "pop/AverageCommandProcessingTimeGt60sMonitor.toml",
        include_str!("builtin/pop/AverageCommandProcessingTimeGt60sMonitor.toml"),
    ),
    ("pop/PopCTPMonitor.toml", include_str!("builtin/pop/PopCTPMonitor.toml")),
    ("pop/PopProxyTestMonitor.toml", include_str!("builtin/pop/PopProxyTestMonitor.toml")),
    ("pop/PopSelfTestMonitor.toml", include_str!("builtin/pop/PopSelfTestMonitor.toml")),
    ("pop/PopTestDeepMonitor.toml", include_str!("builtin/pop/PopTestDeepMonitor.toml")),
];

/// The built-in runbooks, parsed once: the responder's own knowledge of which health set each monitor belongs to.
pub fn built_in() -> &'static RunbookSet {
    static SET: std::sync::OnceLock<RunbookSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| RunbookSet::load(None).expect("the built-in runbooks parse"))
}

/// The runbooks in force, by health set and monitor (case-insensitive): a monitor's name is not unique across
/// health sets (`RequestsQueuedGt500Monitor` is ActiveSync's and IMAP's).
#[derive(Debug, Clone)]
pub struct RunbookSet {
    by_key: BTreeMap<(String, String), (Runbook, Origin)>,
}

fn key(health_set: &str, monitor: &str) -> (String, String) {
    (health_set.to_ascii_lowercase(), monitor.to_ascii_lowercase())
}

/// A health set's family: `IMAP.Protocol` and `IMAP.Proxy` are IMAP's.
fn family(health_set: &str) -> String {
    health_set.split('.').next().unwrap_or(health_set).to_ascii_lowercase()
}

impl RunbookSet {
    /// The built-in runbooks, plus every `*.toml` file in `dir`, which add runbooks or replace built-in ones by
    /// health set and monitor.
    pub fn load(dir: Option<&Path>) -> Result<RunbookSet, RunbookError> {
        let mut set = RunbookSet { by_key: BTreeMap::new() };
        for (name, text) in BUILT_IN {
            let runbook = parse(text, &format!("built-in {name}"))?;
            set.insert(runbook, Origin::BuiltIn);
        }
        let Some(dir) = dir else { return Ok(set) };
        if !dir.exists() {
            return Ok(set);
        }
        let io_error = |e: std::io::Error| RunbookError {
            file: dir.display().to_string(),
            field: "runbook_dir".into(),
            message: e.to_string(),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_error)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        files.sort();
        let mut from_files: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
        for path in files {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| RunbookError {
                file: file.clone(),
                field: "file".into(),
                message: e.to_string(),
            })?;
            let runbook = parse(&text, &file)?;
            if let Some(other) = from_files
                .insert(key(runbook.health_set.as_str(), runbook.monitor.as_str()), path.clone())
            {
                return Err(RunbookError {
                    file,
                    field: "monitor".into(),
                    message: format!(
                        "{} ({}) is also the monitor of {}",
                        runbook.monitor,
                        runbook.health_set,
                        other.display()
                    ),
                });
            }
            set.insert(runbook, Origin::File(path));
        }
        Ok(set)
    }

    fn insert(&mut self, runbook: Runbook, origin: Origin) {
        self.by_key
            .insert(key(runbook.health_set.as_str(), runbook.monitor.as_str()), (runbook, origin));
    }

    /// Every runbook for a monitor, in whichever health set.
    pub fn for_monitor(&self, monitor: &str) -> Vec<&(Runbook, Origin)> {
        self.by_key.values().filter(|(runbook, _)| runbook.monitor.matches(monitor)).collect()
    }

    /// The runbook for an alert's monitor: the one of its health set, else of the health set's family (an alert
    /// may name `IMAP` for a monitor of `IMAP.Protocol`), else the monitor's only runbook.
    pub fn get(&self, health_set: &HealthSet, monitor: &Monitor) -> Option<&Runbook> {
        if let Some((runbook, _)) = self.by_key.get(&key(health_set.as_str(), monitor.as_str())) {
            return Some(runbook);
        }
        let candidates: Vec<&Runbook> =
            self.for_monitor(monitor.as_str()).into_iter().map(|(r, _)| r).collect();
        candidates
            .iter()
            .find(|r| family(r.health_set.as_str()) == family(health_set.as_str()))
            .or(candidates.first().filter(|_| candidates.len() == 1))
            .copied()
    }

    /// The runbook for a monitor `Get-ServerHealth` reported Unhealthy when asked about `pattern`.
    pub fn get_in(&self, pattern: &HealthSetPattern, monitor: &Monitor) -> Option<&Runbook> {
        let candidates: Vec<&Runbook> =
            self.for_monitor(monitor.as_str()).into_iter().map(|(r, _)| r).collect();
        candidates
            .iter()
            .find(|r| pattern.matches(r.health_set.as_str()))
            .or(candidates.first().filter(|_| candidates.len() == 1))
            .copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Runbook, Origin)> {
        self.by_key.values()
    }

    /// Which health sets each monitor belongs to.
    pub fn health_sets(&self) -> std::collections::HashMap<String, Vec<String>> {
        let mut map: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for (runbook, _) in self.iter() {
            map.entry(runbook.monitor.to_string())
                .or_default()
                .push(runbook.health_set.to_string());
        }
        map
    }

    /// The health sets of the runbooks in force, dotted ones first (`ActiveSync` on its own is also a product's
    /// name, so it is the weakest evidence), each once.
    pub fn health_set_names(&self) -> Vec<&HealthSet> {
        let mut names: Vec<&HealthSet> = Vec::new();
        for (runbook, _) in self.iter() {
            if !names.iter().any(|n| n.matches(runbook.health_set.as_str())) {
                names.push(&runbook.health_set);
            }
        }
        names.sort_by_key(|n| (!n.as_str().contains('.'), std::cmp::Reverse(n.as_str().len())));
        names
    }
}

/// Reads one runbook; the error names the file and the field.
pub fn parse(text: &str, file: &str) -> Result<Runbook, RunbookError> {
    let runbook: Runbook = serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|err| {
            let field = err.path().to_string();
            RunbookError {
                file: file.to_owned(),
                field: if field == "." { "runbook".into() } else { field },
                message: err.into_inner().message().trim().to_owned(),
            }
        })?;
    let verify = &runbook.verify;
    let invalid = |field: &str, message: &str| RunbookError {
        file: file.to_owned(),
        field: field.to_owned(),
        message: message.to_owned(),
    };
    match (&verify.probe, &verify.server_health) {
        (Some(_), Some(_)) => {
            return Err(invalid("verify", "give either probe or server_health, not both"))
        }
        (None, None) => return Err(invalid("verify", "give probe or server_health")),
        _ => {}
    }
    for (index, remedy) in runbook.remedies.iter().enumerate() {
        let field = format!("remedies[{index}]");
        if let Remedy::RecycleAppPool { app_pool, app_pools, .. } = remedy {
            if app_pool.is_some() != app_pools.is_empty() {
                return Err(invalid(
                    &field,
                    "give app_pool (one pool) or app_pools (several), not both and not neither",
                ));
            }
            let pools = remedy.app_pools();
            if let Some(twice) = pools
                .iter()
                .enumerate()
                .find(|(i, p)| pools[..*i].iter().any(|q| q.matches(p.as_str())))
            {
                return Err(invalid(
                    &format!("{field}.app_pools"),
                    &format!("{} is named twice", twice.1),
                ));
            }
        }
    }
    Ok(runbook)
}

/// The TOML text of a runbook, as `runbooks show` prints it.
pub fn to_toml(runbook: &Runbook) -> String {
    toml::to_string(runbook).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWA: &str = r#"
monitor = "OWACTPMonitor"
health_set = "OWA"
typical_role = "cas"
summary = "Recycle MSExchangeOWAAppPool, then IISReset, re-probing after each."
verify = { probe = 'OWA\OWACTPProbe' }

[[remedies]]
action = "recycle_app_pool"
app_pool = "MSExchangeOWAAppPool"

[[remedies]]
action = "iis_reset"
roles = ["cas", "multi"]
"#;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn files_add_runbooks_and_replace_built_in_ones_by_monitor() {
        let replacement =
            "monitor = \"activesyncctpmonitor\"\nhealth_set = \"ActiveSync\"\nverify = { probe = 'ActiveSync\\ActiveSyncCTPProbe' }\nremedies = []\n";
        let dir = dir_with(&[
            ("owa.toml", OWA),
            ("ctp.toml", replacement),
            ("notes.txt", "not a runbook"),
        ]);
        let set = RunbookSet::load(Some(dir.path())).unwrap();
        let (owa, origin) = set.for_monitor("OWACTPMonitor")[0];
        assert_eq!(
            origin,
            &Origin::File(dir.path().join("owa.toml")),
            "the file replaced the built-in OwaCtpMonitor runbook"
        );
        assert_eq!(owa.remedies.len(), 2);
        assert!(
            !owa.remedies[1].applies_to(Role::Mailbox) && owa.remedies[1].applies_to(Role::Cas)
        );
        let (ctp, origin) = set.for_monitor("ActiveSyncCTPMonitor")[0];
        assert!(ctp.remedies.is_empty(), "the file replaced the built-in CTP runbook");
        assert_eq!(origin, &Origin::File(dir.path().join("ctp.toml")));
        assert_eq!(set.iter().count(), BUILT_IN.len());
    }

    #[test]
    fn a_monitor_of_several_health_sets_is_found_by_the_alerts_health_set() {
        let set = built_in();
        let hs = |name: &str| HealthSet::parse(name).unwrap();
        let queued = Monitor::parse("RequestsQueuedGt500Monitor").unwrap();
        assert_eq!(set.for_monitor("requestsqueuedgt500monitor").len(), 2);
        assert_eq!(
            set.get(&hs("IMAP"), &queued).unwrap().verify.server_health.as_ref().unwrap().as_str(),
            "IMAP*"
        );
        assert_eq!(set.get(&hs("activesync"), &queued).unwrap().health_set.as_str(), "ActiveSync");
        assert!(set.get(&hs("Exchange"), &queued).is_none(), "ambiguous without the health set");
        let deep = Monitor::parse("ImapTestDeepMonitor").unwrap();
        assert_eq!(
            set.get(&hs("IMAP"), &deep).unwrap().health_set.as_str(),
            "IMAP.Protocol",
            "IMAP is IMAP.Protocol's family"
        );
        let pattern = HealthSetPattern::parse("IMAP*").unwrap();
        assert_eq!(set.get_in(&pattern, &queued).unwrap().health_set.as_str(), "IMAP");
    }

    #[test]
    fn every_built_in_runbook_names_its_page_and_a_probe_of_its_own_health_set_family() {
        for (runbook, _) in built_in().iter() {
            assert!(
                runbook.source.starts_with("Troubleshooting "),
                "{}: {}",
                runbook.monitor,
                runbook.source
            );
            if let Some(probe) = &runbook.verify.probe {
                assert_eq!(
                    family(probe.health_set.as_str()),
                    family(runbook.health_set.as_str()),
                    "{}",
                    runbook.monitor
                );
            }
        }
        let names: Vec<&str> =
            built_in().health_set_names().into_iter().map(HealthSet::as_str).collect();
        for health_set in [
            "OWA",
            "OWA.Proxy",
            "ECP",
            "EWS",
            "EWS.Protocol",
            "Outlook",
            "Outlook.Protocol",
            "Outlook.Proxy",
            "IMAP",
            "POP",
            "Autodiscover",
        ] {
            assert!(names.contains(&health_set), "{health_set} in {names:?}");
        }
        assert!(
            names.iter().position(|n| *n == "ActiveSync")
                > names.iter().position(|n| *n == "ActiveSync.Protocol"),
            "dotted names first"
        );
    }

    #[test]
    fn a_bad_runbook_file_is_refused_naming_the_file_and_the_field() {
        let cases = [
            (
                OWA.replace("recycle_app_pool", "reboot"),
                "remedies[0].action",
                "unknown variant `reboot`",
            ),
            (
                OWA.replace("MSExchangeOWAAppPool", "MSExchange OWA"),
                "remedies[0]",
                "\"MSExchange OWA\" is not an application pool name",
            ),
            (
                OWA.replace(
                    "verify = { probe = 'OWA\\OWACTPProbe' }",
                    "verify = { probe = 'OWACTPProbe' }",
                ),
                "verify.probe",
                "not <health set>",
            ),
            (
                OWA.replace(
                    "verify = { probe = 'OWA\\OWACTPProbe' }",
                    "verify = { probe = 'OWA\\OWACTPProbe', server_health = 'OWA*' }",
                ),
                "verify",
                "not both",
            ),
            (
                OWA.replace("typical_role = \"cas\"", "typical_role = \"edge\""),
                "typical_role",
                "unknown variant",
            ),
            (OWA.replace("summary", "sumary"), "sumary", "unknown field `sumary`"),
            (
                OWA.replace(
                    "app_pool = \"MSExchangeOWAAppPool\"",
                    "app_pool = \"A\"\napp_pools = [\"B\"]",
                ),
                "remedies[0]",
                "or app_pools (several), not both",
            ),
            (OWA.replace("app_pool = \"MSExchangeOWAAppPool\"", ""), "remedies[0]", "not neither"),
            (
                OWA.replace("app_pool = \"MSExchangeOWAAppPool\"", "app_pools = [\"A\", \"a\"]"),
                "remedies[0].app_pools",
                "a is named twice",
            ),
            (
                OWA.replace("roles = [\"cas\", \"multi\"]", "noforce = \"yes\""),
                "remedies[1]",
                "invalid type: string \"yes\", expected a boolean",
            ),
            (
                OWA.replace("roles = [\"cas\", \"multi\"]", "on = \"mbx01\""),
                "remedies[1]",
                "`mbx01`, expected `alert_server` or `mailbox_hint`",
            ),
            (
                OWA.replace(
                    "action = \"iis_reset\"",
                    "action = \"restart_service\"\nservice = \"MSExchange IMAP4\"",
                ),
                "remedies[1]",
                "\"MSExchange IMAP4\" is not a Windows service name",
            ),
            (
                OWA.replace("action = \"iis_reset\"", "action = \"restart_service\""),
                "remedies[1]",
                "missing field `service`",
            ),
        ];
        for (text, field, message) in cases {
            let dir = dir_with(&[("owa.toml", &text)]);
            let err = RunbookSet::load(Some(dir.path())).unwrap_err();
            assert!(err.file.ends_with("owa.toml"), "{err}");
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains(message), "{err}");
        }
        let dir = dir_with(&[("a.toml", OWA), ("b.toml", OWA)]);
        let err = RunbookSet::load(Some(dir.path())).unwrap_err();
        assert!(
            err.to_string().contains("b.toml: monitor: OWACTPMonitor (OWA) is also the monitor of"),
            "{err}"
        );
    }
}
