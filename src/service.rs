//! Builds the running service from settings: store, engine, HTTP listener, and their shutdown.
//!
//! Tests and `demo` start it on port 0 and read the bound address back; `serve` runs it until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::store::Store;

/// How long in-flight requests and the running step get to finish once shutdown starts.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Resolves once shutdown has begun (or the sender is gone).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// A started service.
pub struct Service {
    pub addr: SocketAddr,
    pub store: Store,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    engine: JoinHandle<()>,
}

impl Service {
    /// Opens the store, starts the engine and binds the listener.
    pub async fn start(settings: Settings) -> anyhow::Result<Service> {
        let settings = Arc::new(settings);
        let store = Store::open(&settings.data_dir).with_context(|| format!("cannot open the store in {}", settings.data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(settings.listen).await.with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let (shutdown, stopping) = watch::channel(false);
        let (engine, handle) = Engine::new(settings.clone(), store.clone())?;
        let engine = tokio::spawn(engine.run(stopping.clone()));
        let state = Arc::new(AppState { settings, store: store.clone(), engine: handle });
        let app = http::router(state);
        let mut stop_http = stopping.clone();
        let http = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(async move { stopped(&mut stop_http).await }).await });
        tracing::info!(%addr, "listening");
        Ok(Service { addr, store, shutdown, http, engine })
    }

    /// Stops accepting, lets in-flight requests and the running step finish within the deadline, then returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let finished = async {
            let http = self.http.await;
            let _ = self.engine.await;
            http
        };
        match tokio::time::timeout(SHUTDOWN_DEADLINE, finished).await {
            Ok(result) => result.context("the HTTP task panicked")?.context("the HTTP server failed"),
            Err(_) => {
                tracing::warn!(deadline = ?SHUTDOWN_DEADLINE, "shutdown deadline passed; stopping now");
                Ok(())
            }
        }
    }
}
