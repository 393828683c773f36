//! The command line's shape: the flags and subcommands clap parses, with the help text each shows.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::alert::Format;

#[derive(Parser, Debug)]
#[command(
    name = "healthset-responder",
    version,
    about = "Runs Microsoft's Exchange ActiveSync health set recovery runbooks when an alert arrives"
)]
pub(super) struct Cli {
    /// The configuration file (default: $HSR_CONFIG, else ./healthset-responder.toml if present, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(super) command: Command,
}

/// Where a client command finds the service and its admin token, and how it prints the answer. The flags may come
/// before or after the subcommand (`incidents list --json`).
#[derive(clap::Args, Debug)]
pub(super) struct Connection {
    /// The service's base URL (default: the one in credentials.toml, else http://127.0.0.1:8080).
    #[arg(long, global = true, value_name = "URL")]
    pub(super) url: Option<String>,
    /// An admin token (default: $HSR_ADMIN_TOKEN, else the one in credentials.toml).
    #[arg(long, global = true, env = "HSR_ADMIN_TOKEN", hide_env_values = true, value_name = "T")]
    pub(super) token: Option<String>,
    /// Print the API's JSON answer instead of text for a person (for scripts).
    #[arg(long, global = true)]
    pub(super) json: bool,
}

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Run the service.
    Serve,
    /// Run a self-contained demonstration on a simulated Exchange organisation, then exit.
    Demo,
    /// Print the runbooks in force (offline).
    Runbooks {
        #[command(subcommand)]
        command: Option<RunbooksCommand>,
    },
    /// Validate a configuration file without starting anything.
    CheckConfig {
        /// Also send a test message to email.to through the configured mail transport, and report how the SMTP
        /// conversation went (exit 1 with the server's answer when it fails).
        #[arg(long)]
        send_test_email: bool,
    },
    /// Sign alert files and post them to the service.
    Send {
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// A Standard Webhooks secret, whsec_... (default: $HSR_WEBHOOK_SECRET, else credentials.toml).
        #[arg(
            long,
            env = "HSR_WEBHOOK_SECRET",
            hide_env_values = true,
            conflicts_with = "token",
            value_name = "S"
        )]
        secret: Option<String>,
        /// Send a bearer token instead of signing.
        #[arg(long, value_name = "T")]
        token: Option<String>,
        #[arg(long, value_enum, default_value_t = FormatArg::Native)]
        format: FormatArg,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List or show stored alerts.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// List or show incidents.
    Incidents {
        #[command(subcommand)]
        command: IncidentsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Open a new incident from a stored alert, as if it had just arrived.
    Replay {
        #[arg(value_name = "ALERT_ID")]
        alert_id: String,
        /// Journal mutating steps as dry_run instead of running them.
        #[arg(long)]
        dry_run: bool,
        /// Follow the incident, printing each step as it completes; exit 0 only if it ends transient or recovered.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Approve the step an incident waits on (awaiting_approval): automation checks again and runs it only if the
    /// problem persists.
    Approve {
        #[command(flatten)]
        decision: DecisionArgs,
    },
    /// Deny the step an incident waits on: nothing runs, and the incident ends blocked with an escalation.
    Deny {
        #[command(flatten)]
        decision: DecisionArgs,
    },
    /// Pause automation: new incidents wait queued and nothing mutating runs.
    Pause {
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Resume automation.
    Resume {
        #[command(flatten)]
        connection: Connection,
    },
    /// Maintenance windows: alerts for a silenced server are stored but open no incident.
    Silences {
        #[command(subcommand)]
        command: SilencesCommand,
        #[command(flatten)]
        connection: Connection,
    },
}

/// What `approve` and `deny` take.
#[derive(Args, Debug)]
pub(super) struct DecisionArgs {
    #[arg(value_name = "INCIDENT_ID")]
    pub(super) incident_id: String,
    /// Why; journaled with the decision and quoted in the escalation a denial sends.
    #[arg(long, value_name = "TEXT")]
    pub(super) reason: Option<String>,
    #[command(flatten)]
    pub(super) connection: Connection,
}

#[derive(Subcommand, Debug)]
pub(super) enum SilencesCommand {
    /// The silences in force.
    List,
    /// Silence a server until a time (RFC 3339) or for a while ("2h", "90m").
    Add {
        server: String,
        #[arg(long, value_name = "TIME|DURATION")]
        until: String,
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// End a silence now.
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
pub(super) enum RunbooksCommand {
    /// Print one runbook in full.
    Show { monitor: String },
}

#[derive(Subcommand, Debug)]
pub(super) enum AlertsCommand {
    /// Newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Show rejected deliveries instead.
        #[arg(long)]
        rejected: bool,
    },
    /// One alert with its raw body as delivered.
    Show { id: String },
}

#[derive(Subcommand, Debug)]
pub(super) enum IncidentsCommand {
    /// Newest first.
    List {
        /// Only incidents in this state (queued, running, waiting, transient, recovered, escalated, blocked, suppressed).
        #[arg(long, value_name = "S")]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One incident with its timeline and emails.
    Show { id: String },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(super) enum FormatArg {
    Native,
    Scom,
    Alertmanager,
}

impl From<FormatArg> for Format {
    fn from(arg: FormatArg) -> Format {
        match arg {
            FormatArg::Native => Format::Native,
            FormatArg::Scom => Format::Scom,
            FormatArg::Alertmanager => Format::Alertmanager,
        }
    }
}
