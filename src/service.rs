//! Builds the running service from settings: store, engine, HTTP listener, and their shutdown.
//!
//! Tests and `demo` start it on port 0 and read the bound address back; `serve` runs it until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::shutdown::{self, Signal, Trigger};
use crate::store::{Store, StoreSettings};

/// How long in-flight requests and the running step get to finish once shutdown starts.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Prunes the store once at start and then every hour, until shutdown.
async fn prune(store: Store, retention: Duration, stopping: Signal) {
    loop {
        let cutoff = crate::store::now_ms() - retention.as_millis() as i64;
        match store.prune(cutoff).await {
            Ok(pruned) if pruned != crate::store::Pruned::default() => {
                tracing::info!(?pruned, ?retention, "pruned old records")
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "pruning failed; will try again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stopping.stopped() => return,
        }
    }
}

/// A started service.
pub struct Service {
    pub addr: SocketAddr,
    pub store: Store,
    shutdown: Trigger,
    http: JoinHandle<std::io::Result<()>>,
    engine: JoinHandle<()>,
}

impl Service {
    /// Opens the store, starts the engine and binds the listener.
    pub async fn start(settings: Settings) -> anyhow::Result<Service> {
        let settings = Arc::new(settings);
        let store =
            Store::connect(&settings.store, &settings.data_dir).await.with_context(|| {
                match &settings.store {
                    StoreSettings::Sqlite => {
                        format!("cannot open the store in {}", settings.data_dir.display())
                    }
                    StoreSettings::Postgres { .. } => "cannot open the PostgreSQL store".to_owned(),
                }
            })?;
        tracing::info!(store = %store.describe(), "store open");
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let (shutdown, stopping) = shutdown::channel();
        let metrics = Arc::new(Metrics::new());
        // The pause switch is read before the engine or the listener start, so no pause can slip between them.
        let paused = store.paused().await.context("cannot read the pause switch")?.is_some();
        let links = settings.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
        if settings.public_url.is_none() && !settings.approval.actions.is_empty() {
            tracing::warn!(%links, "public_url is not set: approval links are built on the listener's address, which people elsewhere may not reach");
        }
        let (engine, handle) =
            Engine::new(settings.clone(), store.clone(), metrics.clone(), paused, links)?;
        let engine = tokio::spawn(engine.run(stopping.clone()));
        tokio::spawn(prune(store.clone(), settings.retention, stopping.clone()));
        let state = Arc::new(AppState {
            settings,
            store: store.clone(),
            engine: handle,
            metrics,
            guesses: Default::default(),
        });
        let app = http::router(state.clone());
        let file_limit = http::listener::raise_file_limit();
        let limits = http::listener::Limits {
            header_timeout: state.settings.listener.header_timeout.0,
            max_connections: http::listener::connection_cap(
                state.settings.listener.max_connections,
                file_limit,
            ),
        };
        let http = tokio::spawn(http::listener::serve(listener, app, limits, async move {
            stopping.stopped().await
        }));
        tracing::info!(max_connections = limits.max_connections, header_timeout = ?limits.header_timeout, "accepting connections");
        Ok(Service { addr, store, shutdown, http, engine })
    }

    /// Stops accepting, lets in-flight requests and the running step finish within the deadline, then returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.stop();
        let store = self.store.clone();
        let finished = async {
            let http = self.http.await;
            let _ = self.engine.await;
            // Every driver has stopped: the incidents they held are free for another instance at once.
            if let Err(err) = store.release_claims().await {
                tracing::warn!(error = %err, "cannot give up this instance's claims; another instance takes them over once they lapse");
            }
            http
        };
        match tokio::time::timeout(SHUTDOWN_DEADLINE, finished).await {
            Ok(result) => {
                result.context("the HTTP task panicked")?.context("the HTTP server failed")
            }
            Err(_) => {
                tracing::warn!(deadline = ?SHUTDOWN_DEADLINE, "shutdown deadline passed; stopping now");
                Ok(())
            }
        }
    }
}
