//! The command line: flags are parsed by clap, each subcommand runs, and the result becomes an exit code
//! (0 success, 1 the operation failed, 2 usage or configuration error).
//!
//! Client commands print for a person by default (tables and timelines, coloured only on a terminal that has not
//! asked for `NO_COLOR`; the text itself comes from [`render`]) and the API's own JSON with `--json`.

mod args;
mod render;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use self::args::{
    AlertsCommand, Cli, Command, Connection, DecisionArgs, IncidentsCommand, RunbooksCommand,
    SilencesCommand,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use self::render::Palette;

use crate::client::{self, Client, ClientError, Signer, Target};
use crate::config::{
    Config, ConfigError, Credentials, CredentialsError, LogFormat, Settings, Source,
};
use crate::incident::State;
use crate::runbook;
use crate::service::Service;
use crate::store::{AlertDetail, AlertSummary, IncidentView, RejectedDelivery};

/// How often `replay --wait` asks about the incident it follows.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(300);

/// Why a command failed, which decides the exit code.
enum Failure {
    Usage(String),
    Failed(anyhow::Error),
    /// The command ran and has already said on stdout why it did not succeed (an incident that ended badly).
    Reported,
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
        Err(Failure::Reported) => ExitCode::from(1),
    }
}

fn settings(config: Option<&Path>) -> Result<(Settings, Source), Failure> {
    let (config, source) = Config::load(config)?;
    Ok((config.resolve(|name| std::env::var(name).ok())?, source))
}

/// The settings a service runs on: as [`settings`], and refusing the example configuration's placeholder secrets.
fn service_settings(config: Option<&Path>) -> Result<(Settings, Source), Failure> {
    let (config, source) = Config::load(config)?;
    config.refuse_placeholders()?;
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
                    // By health set, then monitor: every health set covered, each monitor with the page it follows.
                    println!(
                        "{:<16} {:<42} {:<8} {:<10} source",
                        "health set", "monitor", "role", "origin"
                    );
                    let mut rows: Vec<_> = runbooks.iter().collect();
                    rows.sort_by_key(|(r, _)| {
                        (
                            r.health_set.as_str().to_ascii_lowercase(),
                            r.monitor.as_str().to_ascii_lowercase(),
                        )
                    });
                    for (runbook, origin) in rows {
                        let role = runbook
                            .typical_role
                            .map(|r| r.to_string())
                            .unwrap_or_else(|| "-".into());
                        let source =
                            if runbook.source.is_empty() { "-" } else { runbook.source.as_str() };
                        println!(
                            "{:<16} {:<42} {:<8} {:<10} {source}",
                            runbook.health_set.as_str(),
                            runbook.monitor.as_str(),
                            role,
                            origin.to_string()
                        );
                    }
                }
                Some(RunbooksCommand::Show { monitor }) => {
                    let found = runbooks.for_monitor(&monitor);
                    if found.is_empty() {
                        let known: Vec<&str> =
                            runbooks.iter().map(|(r, _)| r.monitor.as_str()).collect();
                        return Err(Failure::Usage(format!(
                            "no runbook for monitor {monitor:?}; runbooks in force: {}",
                            known.join(", ")
                        )));
                    }
                    // A monitor of several health sets (RequestsQueuedGt500Monitor) has a runbook in each.
                    for (runbook, origin) in found {
                        println!("# {origin}\n{}", runbook::to_toml(runbook));
                    }
                }
            }
            Ok(())
        }
        Command::CheckConfig { send_test_email } => {
            let (settings, source) = service_settings(config)?;
            let from = match source {
                Source::File(path) => path.display().to_string(),
                Source::Defaults => "built-in defaults".to_owned(),
            };
            println!(
                "configuration OK ({from}): listening on {}, {} sender(s), {} inventory server(s), {} runbook(s), executor {}{}",
                settings.listen,
                settings.senders.len(),
                settings.inventory.len(),
                settings.runbooks.iter().count(),
                format!("{:?}", settings.executor.kind).to_lowercase(),
                if settings.executor.dry_run { " (dry run)" } else { "" }
            );
            match &settings.store {
                crate::config::StoreSettings::Sqlite => {
                    println!("  store: SQLite in {}", settings.data_dir.display())
                }
                crate::config::StoreSettings::Postgres { url, lease } => println!(
                    "  store: PostgreSQL {}, shared with other instances; claims last {} unrenewed",
                    crate::store::postgres::describe_url(url).unwrap_or_default(),
                    humantime::format_duration(*lease)
                ),
            }
            if settings.executor.kind == crate::config::ExecutorKind::Powershell {
                // What each server's Exchange steps will connect to; IIS and restart steps go to the server itself.
                let shell = crate::executor::powershell::PowerShell::new(
                    &settings.executor,
                    settings.timing.restart_timeout.0,
                )
                .map_err(ConfigError::from)?
                .with_inventory(&settings.inventory);
                for server in settings.inventory.keys() {
                    println!("  {server}: Exchange steps connect to {}; IIS and restart steps to {server} over WinRM", shell.endpoint(server));
                }
            }
            if send_test_email {
                test_email(&settings).await?;
            }
            Ok(())
        }
        Command::Send { url, secret, token, format, files } => {
            let target = Target::resolve(url, None, secret, &data_dir(config)?);
            let signer = Signer::from_target(&target, token)?;
            let mut failed = 0;
            for file in &files {
                let body = std::fs::read(file)
                    .map_err(|e| Failure::Usage(format!("{}: cannot read: {e}", file.display())))?;
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
                n => {
                    Err(Failure::Failed(anyhow::anyhow!("{n} of {} file(s) refused", files.len())))
                }
            }
        }
        Command::Alerts { command, connection } => {
            let (client, output) = connect(connection, config)?;
            match command {
                AlertsCommand::List { limit, rejected: false } => {
                    let answer = client.get(&format!("/v1/alerts?limit={limit}")).await?;
                    output.show(&answer, |palette| {
                        Ok(render::alerts(palette, &field::<Vec<AlertSummary>>(&answer, "alerts")?))
                    })
                }
                AlertsCommand::List { limit, rejected: true } => {
                    let answer =
                        client.get(&format!("/v1/alerts?limit={limit}&rejected=true")).await?;
                    output.show(&answer, |palette| {
                        Ok(render::rejected(
                            palette,
                            &field::<Vec<RejectedDelivery>>(&answer, "rejected")?,
                        ))
                    })
                }
                AlertsCommand::Show { id } => {
                    let answer = client.get(&format!("/v1/alerts/{}", path_segment(&id)?)).await?;
                    output.show(&answer, |palette| {
                        Ok(render::alert(palette, &parse_answer::<AlertDetail>(&answer)?))
                    })
                }
            }
        }
        Command::Incidents { command, connection } => {
            let (client, output) = connect(connection, config)?;
            match command {
                IncidentsCommand::List { state, limit } => {
                    let state = match state.as_deref() {
                        None => String::new(),
                        Some(name) => match State::parse(name) {
                            Some(state) => format!("&state={state}"),
                            None => {
                                let known: Vec<&str> =
                                    State::ALL.iter().map(|s| s.as_str()).collect();
                                return Err(Failure::Usage(format!(
                                    "--state: {name:?} is not one of {}",
                                    known.join(", ")
                                )));
                            }
                        },
                    };
                    let answer = client.get(&format!("/v1/incidents?limit={limit}{state}")).await?;
                    output.show(&answer, |palette| {
                        Ok(render::incidents(
                            palette,
                            &field::<Vec<IncidentView>>(&answer, "incidents")?,
                        ))
                    })
                }
                IncidentsCommand::Show { id } => {
                    let answer =
                        client.get(&format!("/v1/incidents/{}", path_segment(&id)?)).await?;
                    output.show(&answer, |palette| {
                        Ok(render::incident(palette, &parse_answer::<IncidentView>(&answer)?))
                    })
                }
            }
        }
        Command::Replay { alert_id, dry_run, wait, connection } => {
            let (client, output) = connect(connection, config)?;
            let answer = client
                .post(
                    &format!("/v1/alerts/{}/replay", path_segment(&alert_id)?),
                    &json!({ "dry_run": dry_run }),
                )
                .await?;
            let incident_id = answer["incident_id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("the service's answer names no incident: {answer}"))?
                .to_owned();
            if !wait {
                return output
                    .show(&answer, |_| Ok(render::replayed(&alert_id, &incident_id, dry_run)));
            }
            if let Output::Text(_) = output {
                emit(&render::replayed(&alert_id, &incident_id, dry_run));
            }
            follow(&client, &output, &incident_id).await
        }
        Command::Approve { decision } => decide(decision, "approve", config).await,
        Command::Deny { decision } => decide(decision, "deny", config).await,
        Command::Pause { reason, connection } => {
            let (client, output) = connect(connection, config)?;
            let answer = client.post("/v1/automation/pause", &json!({ "reason": reason })).await?;
            output.show(&answer, |_| {
                Ok(format!("automation paused: {}\n", answer["reason"].as_str().unwrap_or("")))
            })
        }
        Command::Resume { connection } => {
            let (client, output) = connect(connection, config)?;
            let answer = client.post("/v1/automation/resume", &json!({})).await?;
            output.show(&answer, |_| Ok("automation resumed\n".to_owned()))
        }
        Command::Silences { command, connection } => {
            let (client, output) = connect(connection, config)?;
            let line = |s: &Value| {
                format!(
                    "{}  {}  until {}  {}\n",
                    text(&s["id"]),
                    text(&s["server"]),
                    text(&s["until"]),
                    text(&s["reason"])
                )
            };
            match command {
                SilencesCommand::List => {
                    let answer = client.get("/v1/silences").await?;
                    output.show(&answer, |_| {
                        let rows = answer["silences"]
                            .as_array()
                            .map(|rows| rows.iter().map(line).collect::<String>())
                            .unwrap_or_default();
                        Ok(if rows.is_empty() { "no silences in force\n".to_owned() } else { rows })
                    })
                }
                SilencesCommand::Add { server, until, reason } => {
                    let until = until_time(&until)?;
                    let answer = client
                        .post(
                            "/v1/silences",
                            &json!({ "server": server, "until": until, "reason": reason }),
                        )
                        .await?;
                    output.show(&answer, |_| Ok(format!("silenced: {}", line(&answer))))
                }
                SilencesCommand::Delete { id } => {
                    let answer =
                        client.delete(&format!("/v1/silences/{}", path_segment(&id)?)).await?;
                    output.show(&answer, |_| Ok(format!("silence {id} ended\n")))
                }
            }
        }
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// `--until` takes an RFC 3339 time, or a duration from now.
fn until_time(raw: &str) -> Result<String, Failure> {
    if chrono::DateTime::parse_from_rfc3339(raw).is_ok() {
        return Ok(raw.to_owned());
    }
    let duration = humantime::parse_duration(raw).map_err(|_| {
        Failure::Usage(format!(
            "--until: {raw:?} is neither an RFC 3339 time nor a duration like \"2h\""
        ))
    })?;
    let until = chrono::Utc::now()
        + chrono::Duration::from_std(duration)
            .map_err(|_| Failure::Usage(format!("--until: {raw:?} is too far away")))?;
    Ok(until.to_rfc3339())
}

/// `approve` and `deny`: one decision on the approval an incident waits on, through the admin API.
async fn decide(args: DecisionArgs, verdict: &str, config: Option<&Path>) -> Result<(), Failure> {
    let (client, output) = connect(args.connection, config)?;
    let path = format!("/v1/incidents/{}/{verdict}", path_segment(&args.incident_id)?);
    let answer = client.post(&path, &json!({ "reason": args.reason })).await?;
    output.show(&answer, |_| {
        let next = if verdict == "approve" {
            "automation checks again and runs the steps only if the problem persists"
        } else {
            "nothing runs; the incident ends blocked and escalates"
        };
        Ok(format!(
            "{} incident {}: {next}\n",
            answer["decision"].as_str().unwrap_or(verdict),
            render::clean(&args.incident_id)
        ))
    })
}

/// Follows an incident until it is final, printing each step once it has finished (and, at the end, any step the
/// incident stopped in). Succeeds only when the incident ends `transient` or `recovered`.
async fn follow(client: &Client, output: &Output, incident_id: &str) -> Result<(), Failure> {
    let path = format!("/v1/incidents/{}", path_segment(incident_id)?);
    let mut printed = 0_i64;
    let mut told_awaiting = false;
    if let Output::Text(palette) = output {
        emit(&render::step_heading(*palette));
    }
    loop {
        let answer = client.get(&path).await?;
        let incident: IncidentView = parse_answer(&answer)?;
        let state = State::parse(&incident.state).ok_or_else(|| {
            anyhow::anyhow!("the service reports an unknown state {:?}", incident.state)
        })?;
        if let Output::Text(palette) = output {
            for step in incident.steps.iter().flatten() {
                if step.seq > printed && (step.finished_at.is_some() || state.is_final()) {
                    emit(&render::step(*palette, step));
                    printed = step.seq;
                }
            }
        }
        if state == State::AwaitingApproval && !told_awaiting {
            told_awaiting = true;
            if let Output::Text(_) = output {
                let id = render::clean(incident_id);
                emit(&format!("waiting for a person's decision: healthset-responder approve {id} (or deny {id}), or the link in the approval email\n"));
            }
        }
        if state.is_final() {
            match output {
                Output::Json => print_json(&answer),
                Output::Text(palette) => emit(&render::ending(*palette, &incident)),
            }
            return match state {
                State::Transient | State::Recovered => Ok(()),
                _ => Err(Failure::Reported),
            };
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

/// How a client command prints: the API's JSON, or text for a person in a palette.
enum Output {
    Json,
    Text(Palette),
}

impl Output {
    /// Prints an answer: as JSON, or as the text `render` makes of it.
    fn show(
        &self,
        answer: &Value,
        render: impl FnOnce(Palette) -> Result<String, Failure>,
    ) -> Result<(), Failure> {
        match self {
            Output::Json => print_json(answer),
            Output::Text(palette) => emit(&render(*palette)?),
        }
        Ok(())
    }
}

/// Colour only for a terminal, and only when the person has not asked for none (https://no-color.org).
fn palette() -> Palette {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    if std::io::stdout().is_terminal() && !no_color {
        Palette::Ansi
    } else {
        Palette::Plain
    }
}

/// `check-config --send-test-email`: one message to `email.to` through the configured transport, told step by step.
async fn test_email(settings: &Settings) -> Result<(), Failure> {
    use crate::mailer::{self, MailError, Mailer};
    let mail_failure = |err: MailError| match err {
        MailError::Config { .. } => Failure::Usage(err.to_string()),
        MailError::Message(_) => Failure::Failed(err.into()),
    };
    let email = &settings.email;
    let mailer = Mailer::new(email, settings.smtp_password.as_ref(), &settings.data_dir)
        .map_err(mail_failure)?;
    let message =
        mailer::compose_test(&email.from, &email.to, &mailer.describe()).map_err(mail_failure)?;
    println!(
        "sending a test email from {} to {} through {}",
        email.from,
        email.to.join(", "),
        mailer.describe()
    );
    let conversation = mailer.converse(&email.from, &email.to, &message.formatted()).await;
    for step in &conversation.steps {
        println!("  {step}");
    }
    match conversation.result {
        Ok(accepted) => {
            println!("test email accepted: {}", accepted.reply);
            Ok(())
        }
        Err(err) => Err(Failure::Failed(anyhow::anyhow!("test email not sent: {}", err.message))),
    }
}

fn connect(connection: Connection, config: Option<&Path>) -> Result<(Client, Output), Failure> {
    let client =
        Client::new(&Target::resolve(connection.url, connection.token, None, &data_dir(config)?));
    let output = if connection.json { Output::Json } else { Output::Text(palette()) };
    Ok((client, output))
}

/// Reads an answer into the API shape it should have.
fn parse_answer<T: DeserializeOwned>(answer: &Value) -> Result<T, Failure> {
    T::deserialize(answer).map_err(|err| {
        Failure::Failed(anyhow::anyhow!("the service's answer has an unexpected shape: {err}"))
    })
}

/// Reads one field of an answer (`{"incidents": [...]}`) into the API shape it should have.
fn field<T: DeserializeOwned>(answer: &Value, name: &str) -> Result<T, Failure> {
    parse_answer(answer.get(name).unwrap_or(&Value::Null))
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
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
    emit(&format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default()));
}

async fn serve(config: Option<&Path>) -> Result<(), Failure> {
    let (mut settings, source) = service_settings(config)?;
    init_logging(settings.log_format, "info");
    if let Source::File(path) = &source {
        tracing::info!(config = %path.display(), "configuration read");
    }
    let generated = Credentials::ensure(&mut settings).map_err(credentials_failure)?;
    if let Some(path) = &generated {
        tracing::info!(file = %path.display(), "no sender or admin token configured: using generated credentials (client commands read this file)");
    }
    let data_dir = settings.data_dir.clone();
    let service = Service::start(settings).await?;
    if generated.is_some() {
        if let Err(err) = Credentials::record_url(&data_dir, service.addr) {
            let _ = service.stop().await;
            return Err(credentials_failure(err));
        }
    }
    // Announced once the credentials file names the address, so a client started on this line finds the service.
    tracing::info!(addr = %service.addr, "listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    service.stop().await?;
    Ok(())
}

/// An unreadable or invalid credentials file is the operator's to fix (exit 2); a failed write is an I/O failure.
fn credentials_failure(err: CredentialsError) -> Failure {
    match err {
        CredentialsError::Invalid(err) => Failure::Usage(err.to_string()),
        err @ CredentialsError::Write { .. } => Failure::Failed(err.into()),
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| format!("{default_level},tower_http=warn").into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler installs");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
