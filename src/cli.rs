//! The command line: flags are parsed by clap, each subcommand runs, and the result becomes an exit code
//! (0 success, 1 the operation failed, 2 usage or configuration error).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::alert::Format;
use crate::client::{self, Client, ClientError, Signer, Target};
use crate::config::{Config, ConfigError, Credentials, LogFormat, Settings, Source};
use crate::runbook;
use crate::service::Service;

#[derive(Parser, Debug)]
#[command(name = "healthset-responder", version, about = "Runs Microsoft's Exchange ActiveSync health set recovery runbooks when an alert arrives")]
struct Cli {
    /// The configuration file (default: $HSR_CONFIG, else ./healthset-responder.toml if present, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Where a client command finds the service and its admin token.
#[derive(clap::Args, Debug)]
struct Connection {
    /// The service's base URL (default: the one in credentials.toml, else http://127.0.0.1:8080).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// An admin token (default: $HSR_ADMIN_TOKEN, else the one in credentials.toml).
    #[arg(long, env = "HSR_ADMIN_TOKEN", hide_env_values = true, value_name = "T")]
    token: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    CheckConfig,
    /// Sign alert files and post them to the service.
    Send {
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// A Standard Webhooks secret, whsec_... (default: $HSR_WEBHOOK_SECRET, else credentials.toml).
        #[arg(long, env = "HSR_WEBHOOK_SECRET", hide_env_values = true, conflicts_with = "token", value_name = "S")]
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
}

#[derive(Subcommand, Debug)]
enum RunbooksCommand {
    /// Print one runbook in full.
    Show { monitor: String },
}

#[derive(Subcommand, Debug)]
enum AlertsCommand {
    /// Newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Show rejected deliveries instead.
        #[arg(long)]
        rejected: bool,
    },
    Show {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum IncidentsCommand {
    /// Newest first.
    List {
        #[arg(long, value_name = "S")]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    Show {
        id: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
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

/// Why a command failed, which decides the exit code.
enum Failure {
    Usage(String),
    Failed(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(err: ConfigError) -> Self {
        Failure::Usage(err.to_string())
    }
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Usage(message) => Failure::Usage(message),
            other => Failure::Failed(other.into()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Failed(err)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn settings(config: Option<&Path>) -> Result<(Settings, Source), Failure> {
    let (config, source) = Config::load(config)?;
    Ok((config.resolve(|name| std::env::var(name).ok())?, source))
}

/// Client commands need only the data directory (for credentials.toml); a broken config still fails clearly.
fn data_dir(config: Option<&Path>) -> Result<PathBuf, Failure> {
    Ok(Config::load(config)?.0.data_dir)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Demo => {
            init_logging(LogFormat::Text, "warn");
            crate::demo::run().await.map_err(Failure::Failed)
        }
        Command::Runbooks { command } => {
            let (settings, _) = settings(config)?;
            let runbooks = &settings.runbooks;
            match command {
                None => {
                    println!("{:<28} {:<20} {:<8} {:<10} summary", "monitor", "health set", "role", "origin");
                    for (runbook, origin) in runbooks.iter() {
                        let role = runbook.typical_role.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
                        println!("{:<28} {:<20} {:<8} {:<10} {}", runbook.monitor.as_str(), runbook.health_set.as_str(), role, origin, runbook.summary);
                    }
                }
                Some(RunbooksCommand::Show { monitor }) => {
                    let (runbook, origin) = runbooks.get_with_origin(&monitor).ok_or_else(|| {
                        let known: Vec<&str> = runbooks.iter().map(|(r, _)| r.monitor.as_str()).collect();
                        Failure::Usage(format!("no runbook for monitor {monitor:?}; runbooks in force: {}", known.join(", ")))
                    })?;
                    println!("# {origin}\n{}", runbook::to_toml(runbook));
                }
            }
            Ok(())
        }
        Command::CheckConfig => {
            let (settings, source) = settings(config)?;
            let from = match source {
                Source::File(path) => path.display().to_string(),
                Source::Defaults => "built-in defaults".to_owned(),
            };
            println!(
                "configuration OK ({from}): listening on {}, {} sender(s), {} inventory server(s), {} runbook(s), executor {:?}{}",
                settings.listen,
                settings.senders.len(),
                settings.inventory.len(),
                settings.runbooks.iter().count(),
                settings.executor.kind,
                if settings.executor.dry_run { " (dry run)" } else { "" }
            );
            Ok(())
        }
        Command::Send { url, secret, token, format, files } => {
            let target = Target::resolve(url, None, secret, &data_dir(config)?);
            let signer = Signer::from_target(&target, token)?;
            let mut failed = 0;
            for file in &files {
                let body = std::fs::read(file).map_err(|e| Failure::Usage(format!("{}: cannot read: {e}", file.display())))?;
                match client::post_alert(&target.url, format.into(), &signer, body).await {
                    Ok(answer) => println!("{}: {}", file.display(), answer),
                    Err(err @ ClientError::Unreachable { .. }) => return Err(err.into()),
                    Err(err) => {
                        eprintln!("{}: {err}", file.display());
                        failed += 1;
                    }
                }
            }
            match failed {
                0 => Ok(()),
                n => Err(Failure::Failed(anyhow::anyhow!("{n} of {} file(s) refused", files.len()))),
            }
        }
        Command::Alerts { command, connection } => {
            let client = connect(connection, config)?;
            let answer = match command {
                AlertsCommand::List { limit, rejected } => client.get(&format!("/v1/alerts?limit={limit}&rejected={rejected}")).await?,
                AlertsCommand::Show { id } => client.get(&format!("/v1/alerts/{}", path_segment(&id)?)).await?,
            };
            print_json(&answer);
            Ok(())
        }
        Command::Incidents { command, connection } => {
            let client = connect(connection, config)?;
            let answer = match command {
                IncidentsCommand::List { state, limit } => {
                    let state = state.map(|s| format!("&state={}", path_segment(&s).unwrap_or_default())).unwrap_or_default();
                    client.get(&format!("/v1/incidents?limit={limit}{state}")).await?
                }
                IncidentsCommand::Show { id } => client.get(&format!("/v1/incidents/{}", path_segment(&id)?)).await?,
            };
            print_json(&answer);
            Ok(())
        }
        Command::Pause { reason, connection } => {
            let answer = connect(connection, config)?.post("/v1/automation/pause", &json!({ "reason": reason })).await?;
            println!("automation paused: {}", answer["reason"].as_str().unwrap_or(""));
            Ok(())
        }
        Command::Resume { connection } => {
            connect(connection, config)?.post("/v1/automation/resume", &json!({})).await?;
            println!("automation resumed");
            Ok(())
        }
    }
}

fn connect(connection: Connection, config: Option<&Path>) -> Result<Client, Failure> {
    Ok(Client::new(&Target::resolve(connection.url, connection.token, None, &data_dir(config)?)))
}

/// Ids go into URL paths; refuse anything that could change the path.
fn path_segment(id: &str) -> Result<String, Failure> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(id.to_owned())
    } else {
        Err(Failure::Usage(format!("{id:?} is not an id (letters, digits, '-' and '_')")))
    }
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

async fn serve(config: Option<&Path>) -> Result<(), Failure> {
    let (mut settings, source) = settings(config)?;
    init_logging(settings.log_format, "info");
    if let Source::File(path) = &source {
        tracing::info!(config = %path.display(), "configuration read");
    }
    let generated = Credentials::ensure(&mut settings).map_err(|e| Failure::Failed(anyhow::anyhow!("cannot write the credentials file: {e}")))?;
    if let Some(path) = generated {
        tracing::info!(file = %path.display(), "no sender or admin token configured: using generated credentials (client commands read this file)");
    }
    let service = Service::start(settings).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    service.stop().await?;
    Ok(())
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| format!("{default_level},tower_http=warn").into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
