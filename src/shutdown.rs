//! The shutdown signal. The service raises it once ([`Trigger::stop`]); the engine and its drivers, the notifier,
//! retention and the listener each hold a [`Signal`] and end what they do when it is raised.

use tokio::sync::watch;

/// A trigger and the signal it raises.
pub fn channel() -> (Trigger, Signal) {
    let (raise, raised) = watch::channel(false);
    (Trigger(raise), Signal(raised))
}

/// Raises the signal; the service holds it.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// What a worker holds to learn that shutdown has begun; cheap to clone.
#[derive(Debug, Clone)]
pub struct Signal(watch::Receiver<bool>);

impl Signal {
    /// Whether shutdown has begun.
    pub fn is_raised(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun (or the trigger is gone).
    pub async fn stopped(&self) {
        let _ = self.0.clone().wait_for(|raised| *raised).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_is_raised_by_its_trigger_and_by_the_trigger_going_away() {
        let (trigger, signal) = channel();
        assert!(!signal.is_raised());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.stopped().await }
        });
        trigger.stop();
        waiting.await.unwrap();
        assert!(signal.is_raised());

        let (trigger, signal) = channel();
        drop(trigger);
        signal.stopped().await;
        assert!(
            !signal.is_raised(),
            "a dropped trigger ends the wait without claiming a shutdown was asked for"
        );
    }
}
