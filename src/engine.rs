//! The runbook engine: takes queued incidents and drives them to a final state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// How the rest of the service talks to the engine: it is told which incidents to look at.
#[derive(Clone)]
pub struct EngineHandle {
    wake: mpsc::UnboundedSender<Wake>,
    running: Arc<AtomicBool>,
}

#[derive(Debug)]
enum Wake {
    Incident(String),
    All,
}

impl EngineHandle {
    pub fn wake(&self, incident_id: &str) {
        let _ = self.wake.send(Wake::Incident(incident_id.to_owned()));
    }

    pub fn wake_all(&self) {
        let _ = self.wake.send(Wake::All);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

/// The worker that owns incident execution.
pub struct Engine {
    wakes: mpsc::UnboundedReceiver<Wake>,
    running: Arc<AtomicBool>,
}

impl Engine {
    pub fn new(_settings: Arc<crate::config::Settings>, _store: crate::store::Store) -> anyhow::Result<(Engine, EngineHandle)> {
        let (wake, wakes) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicBool::new(true));
        Ok((Engine { wakes, running: running.clone() }, EngineHandle { wake, running }))
    }

    pub async fn run(mut self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => break,
                wake = self.wakes.recv() => match wake {
                    None => break,
                    Some(wake) => tracing::debug!(?wake, "incident waiting for the runbook engine"),
                },
            }
        }
        self.running.store(false, Ordering::Relaxed);
    }
}
