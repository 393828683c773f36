//! `[store]`: where the service keeps what it acknowledges. The embedded SQLite file in `data_dir` (the default,
//! for one instance), or a PostgreSQL database that several instances share (SPEC section 8).

use std::time::Duration;

use serde::Deserialize;

use super::postgres::{DEFAULT_LEASE, MIN_LEASE};
use crate::domain::Dur;

/// `[store]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    /// The PostgreSQL connection URL (`postgres://user:password@host:port/database`, or `key=value` pairs);
    /// `HSR_STORE_URL` takes its place.
    pub url: Option<String>,
    /// How long an instance's claim on an incident lasts unrenewed: how soon another instance takes over the
    /// incidents of one that died.
    pub lease: Dur,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { backend: Backend::Sqlite, url: None, lease: Dur(DEFAULT_LEASE) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `[store]`, checked: the store the service opens.
#[derive(Clone)]
pub enum StoreSettings {
    /// The SQLite file in `data_dir`.
    Sqlite,
    Postgres {
        /// The connection URL, which may hold a password: never printed.
        url: String,
        lease: Duration,
    },
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSettings::Sqlite => f.write_str("Sqlite"),
            StoreSettings::Postgres { lease, .. } => {
                f.debug_struct("Postgres").field("lease", lease).finish_non_exhaustive()
            }
        }
    }
}

/// What is wrong with `[store]`: the key, and why.
#[derive(Debug)]
pub struct BadStore {
    pub key: &'static str,
    pub message: String,
}

impl StoreConfig {
    /// Checks the section; `env_url` is `HSR_STORE_URL`, which replaces `url`.
    pub fn resolve(self, env_url: Option<String>) -> Result<StoreSettings, BadStore> {
        let from_env = env_url.filter(|url| !url.trim().is_empty());
        match self.backend {
            Backend::Sqlite if self.url.is_some() => Err(BadStore {
                key: "store.url",
                message: "is for backend = \"postgres\"; the SQLite store lives in data_dir".into(),
            }),
            Backend::Sqlite if from_env.is_some() => Err(BadStore {
                key: "store.backend",
                message: "is \"sqlite\" while HSR_STORE_URL names a PostgreSQL database; set backend = \"postgres\" to use it, or unset HSR_STORE_URL".into(),
            }),
            Backend::Sqlite => Ok(StoreSettings::Sqlite),
            Backend::Postgres => {
                let url = from_env.or(self.url).ok_or(BadStore {
                    key: "store.url",
                    message: "is needed for backend = \"postgres\" (or set HSR_STORE_URL)".into(),
                })?;
                super::postgres::describe_url(&url).map_err(|why| BadStore {
                    key: "store.url",
                    message: why.trim_start_matches("store.url: ").to_owned(),
                })?;
                if self.lease.0 < MIN_LEASE {
                    return Err(BadStore {
                        key: "store.lease",
                        message: format!(
                            "must be at least {}s: a claim is renewed every third of it",
                            MIN_LEASE.as_secs()
                        ),
                    });
                }
                Ok(StoreSettings::Postgres { url, lease: self.lease.0 })
            }
        }
    }
}
