//! healthset-responder runs Microsoft's Exchange 2013 ActiveSync health set recovery runbooks when an alerting
//! system reports the health set unhealthy, and escalates to on-call by email when automation is not enough.
//!
//! The modules, in the order an alert meets them:
//!
//! - [`config`]: typed settings from the TOML file, the environment and runbook files; the only place that reads them.
//! - [`http`]: routes, limits, error answers and the operator's page; the only module that knows HTTP.
//! - [`auth`]: Standard Webhooks, hub-signature and bearer checks over the raw bytes.
//! - [`alert`]: each source format parsed into one normalised [`alert::Alert`].
//! - [`domain`]: validated names (server, health set, monitor, ...) and the `_Mbx:` hint parser.
//! - [`store`]: SQLite, group-committed; the only module with SQL.
//! - [`engine`]: the worker that drives incidents through their runbooks, applying [`safety`]'s throttles.
//! - [`approval`]: which changes wait for a person, the tokens of the approval links, and how decisions are told.
//! - [`runbook`]: the runbook format, the built-in runbooks, and the pure planner that replays them over a journal.
//! - [`executor`]: the simulator and the PowerShell process executor, behind one `Action` -> `Report` interface.
//! - [`mailer`] and [`notifier`]: composing the escalation email, and delivering the stored outbox with retries.
//! - [`incident`]: the names of states, actions and outcomes.
//! - [`ma`]: Managed Availability's own recovery record, read before the first remedy on a server.
//! - [`metrics`]: the Prometheus counters the intake, the engine and the notifier move, served at `/metrics`.
//! - [`service`]: wires the pieces together and runs them until shutdown; [`demo`] runs it on the simulator.
//! - [`schemas`]: the JSON Schemas of the alert formats and of runbooks, generated from the types that read them.
//! - [`cli`] and [`client`]: the command line, and the admin API client it uses.
//! - [`text`]: HTML escaping and clipping, shared by the page, the email and the parsers.
//! - [`private_files`]: the data directory and its files, readable by the service's own user only.

pub mod alert;
pub mod approval;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod executor;
pub mod http;
pub mod incident;
pub mod inventory;
pub mod journal;
pub mod ma;
pub mod mailer;
pub mod metrics;
pub mod notifier;
pub mod private_files;
pub mod runbook;
pub mod safety;
pub mod schemas;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod text;
