//! The integration tests: one binary that drives the real service over HTTP on loopback.

mod approvals;
mod browser;
mod changes;
mod cli;
mod exchange;
mod files;
mod healthsets;
mod helpers;
mod intake;
mod listener;
mod mail;
mod metrics;
mod pki;
mod postgres;
mod powershell;
mod replay;
mod runbooks;
mod safety;
mod senders;
mod store;
mod tidy;
mod ui;
