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

use crate::config::Role;
use crate::domain::{AppPool, HealthSet, HealthSetPattern, Monitor};
use crate::executor::ProbeRef;

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

/// One remedy. `roles`, when given, limits it to servers of those inventory roles; it is skipped on others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Remedy {
    /// Recycle an IIS application pool on the server.
    RecycleAppPool {
        #[schemars(with = "String")]
        app_pool: AppPool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<Role>,
    },
    /// Restart IIS on the server (`iisreset`).
    IisReset {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        roles: Vec<Role>,
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

impl Remedy {
    pub fn applies_to(&self, role: Role) -> bool {
        let roles = match self {
            Remedy::RecycleAppPool { roles, .. } | Remedy::IisReset { roles } | Remedy::CheckMailbox { roles, .. } | Remedy::RestartServer { roles } => roles,
        };
        roles.is_empty() || roles.contains(&role)
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
];

/// The built-in runbooks, parsed once: the responder's own knowledge of which health set each monitor belongs to.
pub fn built_in() -> &'static RunbookSet {
    static SET: std::sync::OnceLock<RunbookSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| RunbookSet::load(None).expect("the built-in runbooks parse"))
}

/// The runbooks in force, by monitor (case-insensitive).
#[derive(Debug, Clone)]
pub struct RunbookSet {
    by_monitor: BTreeMap<String, (Runbook, Origin)>,
}

impl RunbookSet {
    /// The built-in runbooks, plus every `*.toml` file in `dir`, which add runbooks or replace built-in ones by monitor.
    pub fn load(dir: Option<&Path>) -> Result<RunbookSet, RunbookError> {
        let mut set = RunbookSet { by_monitor: BTreeMap::new() };
        for (name, text) in BUILT_IN {
            let runbook = parse(text, &format!("built-in {name}"))?;
            set.insert(runbook, Origin::BuiltIn);
        }
        let Some(dir) = dir else { return Ok(set) };
        if !dir.exists() {
            return Ok(set);
        }
        let io_error = |e: std::io::Error| RunbookError { file: dir.display().to_string(), field: "runbook_dir".into(), message: e.to_string() };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_error)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        files.sort();
        let mut from_files: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in files {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| RunbookError { file: file.clone(), field: "file".into(), message: e.to_string() })?;
            let runbook = parse(&text, &file)?;
            let key = runbook.monitor.as_str().to_ascii_lowercase();
            if let Some(other) = from_files.insert(key, path.clone()) {
                return Err(RunbookError { file, field: "monitor".into(), message: format!("{} is also the monitor of {}", runbook.monitor, other.display()) });
            }
            set.insert(runbook, Origin::File(path));
        }
        Ok(set)
    }

    fn insert(&mut self, runbook: Runbook, origin: Origin) {
        self.by_monitor.insert(runbook.monitor.as_str().to_ascii_lowercase(), (runbook, origin));
    }

    pub fn get(&self, monitor: &Monitor) -> Option<&Runbook> {
        self.by_monitor.get(&monitor.as_str().to_ascii_lowercase()).map(|(runbook, _)| runbook)
    }

    pub fn get_with_origin(&self, monitor: &str) -> Option<&(Runbook, Origin)> {
        self.by_monitor.get(&monitor.to_ascii_lowercase())
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Runbook, Origin)> {
        self.by_monitor.values()
    }

    /// Which health set each monitor belongs to.
    pub fn health_sets(&self) -> std::collections::HashMap<String, String> {
        self.iter().map(|(r, _)| (r.monitor.to_string(), r.health_set.to_string())).collect()
    }
}

/// Reads one runbook; the error names the file and the field.
pub fn parse(text: &str, file: &str) -> Result<Runbook, RunbookError> {
    let runbook: Runbook = serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|err| {
        let field = err.path().to_string();
        RunbookError {
            file: file.to_owned(),
            field: if field == "." { "runbook".into() } else { field },
            message: err.into_inner().message().trim().to_owned(),
        }
    })?;
    let verify = &runbook.verify;
    let invalid = |field: &str, message: &str| RunbookError { file: file.to_owned(), field: field.to_owned(), message: message.to_owned() };
    match (&verify.probe, &verify.server_health) {
        (Some(_), Some(_)) => return Err(invalid("verify", "give either probe or server_health, not both")),
        (None, None) => return Err(invalid("verify", "give probe or server_health")),
        _ => {}
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
        let dir = dir_with(&[("owa.toml", OWA), ("ctp.toml", replacement), ("notes.txt", "not a runbook")]);
        let set = RunbookSet::load(Some(dir.path())).unwrap();
        let (owa, origin) = set.get_with_origin("OWACTPMonitor").unwrap();
        assert_eq!(origin, &Origin::File(dir.path().join("owa.toml")));
        assert_eq!(owa.remedies.len(), 2);
        assert!(!owa.remedies[1].applies_to(Role::Mailbox) && owa.remedies[1].applies_to(Role::Cas));
        let (ctp, origin) = set.get_with_origin("ActiveSyncCTPMonitor").unwrap();
        assert!(ctp.remedies.is_empty(), "the file replaced the built-in CTP runbook");
        assert_eq!(origin, &Origin::File(dir.path().join("ctp.toml")));
        assert_eq!(set.iter().count(), 6);
    }

    #[test]
    fn a_bad_runbook_file_is_refused_naming_the_file_and_the_field() {
        let cases = [
            (OWA.replace("recycle_app_pool", "reboot"), "remedies[0].action", "unknown variant `reboot`"),
            (OWA.replace("MSExchangeOWAAppPool", "MSExchange OWA"), "remedies[0]", "\"MSExchange OWA\" is not an application pool name"),
            (OWA.replace("verify = { probe = 'OWA\\OWACTPProbe' }", "verify = { probe = 'OWACTPProbe' }"), "verify.probe", "not <health set>"),
            (OWA.replace("verify = { probe = 'OWA\\OWACTPProbe' }", "verify = { probe = 'OWA\\OWACTPProbe', server_health = 'OWA*' }"), "verify", "not both"),
            (OWA.replace("typical_role = \"cas\"", "typical_role = \"edge\""), "typical_role", "unknown variant"),
            (OWA.replace("summary", "sumary"), "sumary", "unknown field `sumary`"),
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
        assert!(err.to_string().contains("b.toml: monitor: OWACTPMonitor is also the monitor of"), "{err}");
    }
}
