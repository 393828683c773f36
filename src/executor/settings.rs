//! `[executor]`: which executor runs the steps, and how the PowerShell one starts its shell.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::Dur;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    pub kind: ExecutorKind,
    pub dry_run: bool,
    pub program: String,
    pub args: Vec<String>,
    pub connection_uri: String,
    pub authentication: String,
    pub timeout: Dur,
    /// At most this many executor processes at once; other steps wait their turn, in order.
    pub max_parallel: usize,
    /// Read-only steps are tried this often on executor errors before the incident ends `blocked`.
    pub read_attempts: u32,
    /// The wait before a read-only step's second try; it doubles with each further try.
    pub read_backoff: Dur,
    pub scripts: BTreeMap<String, String>,
    /// Environment variables the shell receives besides the platform's basics; `HSR_*` never reach it.
    pub pass_env: Vec<String>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            kind: ExecutorKind::Simulator,
            dry_run: false,
            program: "pwsh".into(),
            args: ["-NoLogo", "-NoProfile", "-NonInteractive", "-Command", "-"]
                .map(String::from)
                .to_vec(),
            connection_uri: "http://{server}/PowerShell/".into(),
            authentication: "Kerberos".into(),
            timeout: Dur::minutes(10),
            max_parallel: 8,
            read_attempts: 3,
            read_backoff: Dur(Duration::from_secs(5)),
            scripts: BTreeMap::new(),
            pass_env: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    Simulator,
    Powershell,
}

/// A value of `[executor]` that the executor cannot work with, with the key it concerns; configuration reports it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BadSetting {
    pub key: String,
    pub message: String,
}

impl BadSetting {
    pub fn new(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        BadSetting { key: key.into(), message: message.to_string() }
    }
}
