//! The credentials file: the webhook secret and admin token `serve` generates when none are configured, kept in
//! the data directory so that a restart keeps them and client commands find them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{is_secret_key, parse_toml, ConfigError, Dur, Settings};
use crate::auth::{self, Secret};

/// Credentials that `serve` generated because none were configured; client commands read them by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub url: Option<String>,
    pub webhook_secret: Option<String>,
    pub admin_token: Option<String>,
}

/// Why `serve` cannot use the credentials file. An unreadable or invalid file is never replaced: new secrets would
/// lock out every sender that holds the old ones.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file is there but cannot be read or is not valid (exit 2: a person must look at it).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Writing the file failed (exit 1).
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

impl Credentials {
    pub const FILE_NAME: &'static str = "credentials.toml";

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(Self::FILE_NAME)
    }

    /// The credentials file, for client commands: `None` when it is missing or cannot be used.
    pub fn read(data_dir: &Path) -> Option<Credentials> {
        Self::load(data_dir).ok().flatten()
    }

    /// The credentials file: `Ok(None)` when there is none, an error naming the file and the problem when it cannot
    /// be read, is not valid, or is empty (which only a write cut short leaves behind). Secrets in it never appear
    /// in the error.
    pub fn load(data_dir: &Path) -> Result<Option<Credentials>, ConfigError> {
        let path = Self::path(data_dir);
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(ConfigError::new(
                    name,
                    format!(
                        "cannot read the credentials file: {err}; fix it (serve never replaces it)"
                    ),
                ))
            }
        };
        let creds: Credentials = parse_toml(&text, is_secret_key).map_err(|err| {
            ConfigError::new(
                name.clone(),
                format!("not a valid credentials file: {}: {}; fix it or restore it (serve never replaces it)", err.key, err.message),
            )
        })?;
        if creds == Credentials::default() {
            return Err(ConfigError::new(name, "the credentials file is empty; restore it, or delete it to have new credentials generated"));
        }
        Ok(Some(creds))
    }

    /// Fills in a webhook sender and an admin token where the settings have none, reusing the ones generated on an
    /// earlier start. Returns the credentials file's path when it was used.
    pub fn ensure(settings: &mut Settings) -> Result<Option<PathBuf>, CredentialsError> {
        if !settings.senders.is_empty() && !settings.admin_tokens.is_empty() {
            return Ok(None);
        }
        let path = Self::path(&settings.data_dir);
        let mut creds = Self::load(&settings.data_dir)?.unwrap_or_default();
        let before = creds.clone();
        if settings.senders.is_empty() {
            let secret = creds.webhook_secret.get_or_insert_with(Secret::generate_whsec);
            let key = Secret::parse_whsec(secret).map_err(|e| {
                ConfigError::new(path.display().to_string(), format!("webhook_secret {e}"))
            })?;
            settings.senders.push(auth::Sender {
                name: "default".into(),
                method: auth::Method::StandardWebhooks {
                    keys: vec![key],
                    tolerance: Dur::minutes(5).0,
                },
            });
        }
        if settings.admin_tokens.is_empty() {
            let token =
                creds.admin_token.get_or_insert_with(|| hex::encode(rand::random::<[u8; 24]>()));
            settings.admin_tokens.push(Secret::new(token.as_bytes().to_vec()));
        }
        if creds != before {
            creds
                .write(&settings.data_dir)
                .map_err(|source| CredentialsError::Write { path: path.clone(), source })?;
        }
        Ok(Some(path))
    }

    /// Records where the service listens, once it is bound, so that client commands find it (a wildcard address
    /// becomes loopback).
    pub fn record_url(data_dir: &Path, addr: std::net::SocketAddr) -> Result<(), CredentialsError> {
        let Some(mut creds) = Self::load(data_dir)? else { return Ok(()) };
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let url = format!("http://{addr}");
        if creds.url.as_deref() == Some(url.as_str()) {
            return Ok(());
        }
        creds.url = Some(url);
        creds
            .write(data_dir)
            .map_err(|source| CredentialsError::Write { path: Self::path(data_dir), source })
    }

    fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        crate::private_files::private_dir(data_dir)?;
        let text = format!(
            "# Generated by healthset-responder serve because no sender or admin token was configured.\n{}",
            toml::to_string(self).expect("credentials serialise")
        );
        crate::private_files::write_private(&Self::path(data_dir), text.as_bytes())
    }
}
