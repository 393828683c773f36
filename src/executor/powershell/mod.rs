//! The PowerShell executor: runs each action as a script in a shell (`pwsh`, or `powershell.exe` on a Windows
//! host) against the real Exchange servers (SPEC section 6, `[executor]` and "PowerShell executor protocol").
//!
//! One action is one process: the script arrives on standard input, opens a session to the server's Exchange
//! Management Shell where it needs one, runs the cmdlet and prints one JSON document; the exit code and that
//! document become the [`Report`]. The modules: [`template`] builds the script text, [`process`] runs it under a
//! deadline, [`output`] reads what it printed.
//!
//! **Invariant:** every value in a script is a validated name or a configuration value inserted as a single-quoted
//! literal by [`ps_quote`]; scripts hold no secret (authentication is the shell's own: Kerberos by default), so the
//! journal may record them whole.

mod output;
mod process;
mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use self::process::Ended;
use self::template::{Slot, Template};
use super::ExecutorGauges;
use crate::domain::ServerName;
use crate::executor::{BadSetting, ExecutorConfig};
use crate::incident::{ActionKind, Outcome};
use crate::inventory::Inventory;
use crate::journal::{Action, Report};

pub use self::template::ps_quote;

/// The values `New-PSSession -Authentication` takes (`System.Management.Automation.Runspaces.AuthenticationMechanism`).
const AUTHENTICATION_MECHANISMS: [&str; 7] = [
    "Default",
    "Basic",
    "Negotiate",
    "NegotiateWithImplicitCredential",
    "Credssp",
    "Digest",
    "Kerberos",
];

pub struct PowerShell {
    program: String,
    args: Vec<String>,
    /// Per action; `restart_server` has `restart_timeout` on top, since `Restart-Computer -Wait` takes that long.
    timeout: Duration,
    restart_timeout: Duration,
    connection_uri: String,
    /// Servers with an endpoint of their own (`[[servers]] connection_uri`).
    endpoints: BTreeMap<ServerName, String>,
    authentication: &'static str,
    templates: HashMap<ActionKind, Template>,
    /// One permit per process that may run at once (`executor.max_parallel`); tokio's semaphore queues waiters in
    /// order, so incidents on different servers take turns.
    slots: Arc<Semaphore>,
    gauges: ExecutorGauges,
    /// What the shell's environment is: the platform's basics and `executor.pass_env`, taken from the service's
    /// own environment once, at start.
    environment: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

/// Checks an Exchange Management Shell endpoint: an `http://` or `https://` URL, with or without `{server}`. What
/// else it holds reaches scripts only as a quoted literal.
pub fn check_connection_uri(uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .ok_or_else(|| format!("{uri:?} is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{uri:?} names no host"));
    }
    Ok(())
}

impl PowerShell {
    /// Checks the `[executor]` settings and every script template. `restart_timeout` is `timing.restart_timeout`:
    /// how long `Restart-Computer` waits for the server to answer again.
    pub fn new(
        config: &ExecutorConfig,
        restart_timeout: Duration,
    ) -> Result<PowerShell, BadSetting> {
        if config.program.trim().is_empty() {
            return Err(BadSetting::new("executor.program", "is empty"));
        }
        check_connection_uri(&config.connection_uri)
            .map_err(|e| BadSetting::new("executor.connection_uri", e))?;
        if config.timeout.0.is_zero() {
            return Err(BadSetting::new("executor.timeout", "must be more than zero"));
        }
        let authentication = AUTHENTICATION_MECHANISMS
            .into_iter()
            .find(|m| m.eq_ignore_ascii_case(&config.authentication))
            .ok_or_else(|| {
                BadSetting::new(
                    "executor.authentication",
                    format!(
                        "{:?} is not one of {}",
                        config.authentication,
                        AUTHENTICATION_MECHANISMS.join(", ")
                    ),
                )
            })?;
        let scripted = || ActionKind::ALL.iter().copied().filter(|kind| kind.runs_script());
        for key in config.scripts.keys() {
            if !scripted().any(|kind| kind.as_str() == key) {
                let known = scripted().map(ActionKind::as_str).collect::<Vec<_>>().join(", ");
                return Err(BadSetting::new(
                    format!("executor.scripts.{key}"),
                    format!("unknown action {key:?}; scripts are for {known}"),
                ));
            }
        }
        let mut templates = HashMap::new();
        for kind in scripted() {
            let text = config
                .scripts
                .get(kind.as_str())
                .cloned()
                .or_else(|| Template::builtin_text(kind))
                .expect("every scripted action has a built-in script");
            let template = Template::parse(kind, &text)
                .map_err(|message| BadSetting::new(format!("executor.scripts.{kind}"), message))?;
            templates.insert(kind, template);
        }
        Ok(PowerShell {
            program: config.program.clone(),
            args: config.args.clone(),
            timeout: config.timeout.0,
            restart_timeout,
            connection_uri: config.connection_uri.clone(),
            endpoints: BTreeMap::new(),
            authentication,
            templates,
            slots: Arc::new(Semaphore::new(config.max_parallel.max(1))),
            gauges: ExecutorGauges::default(),
            environment: process::environment(&config.pass_env, std::env::vars_os()),
        })
    }

    /// Takes each inventory server's own endpoint, where it has one.
    pub fn with_inventory(mut self, inventory: &Inventory) -> PowerShell {
        self.endpoints = inventory
            .iter()
            .filter_map(|(name, entry)| entry.connection_uri.clone().map(|uri| (name.clone(), uri)))
            .collect();
        self
    }

    /// Keeps these gauges current: processes running, steps waiting for one.
    pub fn with_gauges(mut self, gauges: ExecutorGauges) -> PowerShell {
        self.gauges = gauges;
        self
    }

    /// The Exchange Management Shell endpoint a server's Exchange steps connect to.
    pub fn endpoint(&self, server: &ServerName) -> String {
        match self.endpoints.get(server) {
            Some(uri) => uri.replace("{server}", server.as_str()),
            None => self.connection_uri.replace("{server}", server.as_str()),
        }
    }

    /// The exact script [`PowerShell::run`] sends for this action; the journal records it.
    pub fn command(&self, action: &Action) -> String {
        match self.templates.get(&action.kind()) {
            Some(template) => template.render(|slot| self.value(slot, action)),
            None => action.command(),
        }
    }

    pub async fn run(&self, action: &Action) -> Report {
        if let Action::Wait { .. } = action {
            return Report::new(Outcome::Done, output::NO_SCRIPT);
        }
        let script = self.command(action);
        let deadline = match action {
            Action::RestartServer { .. } => self.timeout + self.restart_timeout,
            _ => self.timeout,
        };
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::info!(server = %action.server(), action = %action.kind(), "all executor.max_parallel shells are busy; the step waits its turn");
                self.gauges.waiting.inc();
                let permit = self
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                self.gauges.waiting.dec();
                permit
            }
        };
        self.gauges.running.inc();
        let ended =
            process::run(&self.program, &self.args, &self.environment, &script, deadline).await;
        self.gauges.running.dec();
        drop(permit);
        let mut report = match ended {
            Ended::Exited { code, stdout, stderr } => {
                output::interpret(action, code, &stdout, &stderr)
            }
            Ended::TimedOut { stderr } => {
                tracing::warn!(server = %action.server(), action = %action.kind(), "the script ran past its deadline; its process tree was killed");
                let summary = format!(
                    "timed out after {}; the shell and everything it started were killed",
                    humantime::format_duration(deadline)
                );
                Report::new(Outcome::Error, output::with_stderr(summary, &stderr))
            }
            Ended::Failed(err) => {
                Report::new(Outcome::Error, format!("could not run {}: {err}", self.program))
            }
        };
        // Managed Availability's window is applied by the clock here, whatever the script's own filter let through.
        if let (Action::MaHistory { server, lookback }, false) =
            (action, report.outcome == Outcome::Error)
        {
            let actions = std::mem::take(&mut report.ma_actions);
            report = Report::ma_history(
                server,
                *lookback,
                crate::ma::recent(actions, *lookback, chrono::Utc::now()),
            );
        }
        report.command = Some(script);
        report
    }

    /// A placeholder's value for this action. Templates are checked against their action kind when parsed, so the
    /// action always has the value a slot asks for.
    fn value(&self, slot: Slot, action: &Action) -> Vec<String> {
        let server = action.server();
        if let (Slot::AppPool, Action::RecycleAppPool { app_pools, .. }) = (slot, action) {
            return app_pools.iter().map(ToString::to_string).collect();
        }
        let one = match (slot, action) {
            (Slot::Server, _) => server.to_string(),
            (Slot::ConnectionUri, _) => self.endpoint(server),
            (Slot::Authentication, _) => self.authentication.to_owned(),
            (Slot::Probe, Action::Probe { probe, .. }) => probe.to_string(),
            (Slot::HealthSets, Action::ServerHealth { health_sets, .. }) => health_sets.to_string(),
            (Slot::RestartTimeoutSeconds, Action::RestartServer { .. }) => {
                self.restart_timeout.as_secs().to_string()
            }
            (Slot::Attempt, Action::DisableActivation { attempt, .. }) => attempt.to_string(),
            (Slot::Noforce, Action::IisReset { noforce, .. }) => noforce.to_string(),
            (Slot::Service, Action::RestartService { service, .. }) => service.to_string(),
            (Slot::LookbackSeconds, Action::MaHistory { lookback, .. }) => {
                lookback.as_secs().to_string()
            }
            (slot, action) => {
                unreachable!("template for {} uses {slot:?}, which parsing refuses", action.kind())
            }
        };
        vec![one]
    }
}
