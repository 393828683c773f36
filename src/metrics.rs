//! The service's Prometheus metrics: the registry, one typed family per metric, and their encoding for `/metrics`.
//!
//! The intake, the engine and the notifier share one [`Metrics`] (an `Arc` that [`crate::service::Service::start`]
//! creates) and count what they do through its methods; label values are the contract's own words (routes,
//! dispositions, states, actions, outcomes). The two gauges that describe the store (open incidents, the pause
//! switch) are read from it when Prometheus scrapes, and handed to [`Metrics::encode`]. This module knows nothing of
//! HTTP or SQL.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::alert::Format;
use crate::auth::AuthError;
use crate::executor::ExecutorGauges;
use crate::incident::{ActionKind, Outcome, State};
use crate::store::Disposition;

/// The `Content-Type` of [`Metrics::encode`]'s text: prometheus-client writes OpenMetrics.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the intake latency buckets, in seconds. A delivery waits for its group commit (an fsync), so the
/// answers that matter lie between half a millisecond and a second.
const INTAKE_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    route: &'static str,
    sender: String,
    disposition: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthFailureLabels {
    route: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EmailLabels {
    result: &'static str,
}

/// What the store says at scrape time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreGauges {
    /// Incidents that are not final (queued, running or waiting).
    pub open_incidents: usize,
    /// Whether the kill switch is on.
    pub automation_paused: bool,
}

/// The registry and every metric in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    auth_failures: Family<AuthFailureLabels, Counter>,
    intake_duration: Family<RouteLabels, Histogram>,
    incidents_finished: Family<StateLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    emails: Family<EmailLabels, Counter>,
    open_incidents: Gauge,
    automation_paused: Gauge,
    executor: ExecutorGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let deliveries = Family::default();
        registry.register(
            "hsr_deliveries",
            "Intake outcomes by route, sender and disposition: one per alert of an accepted delivery, one per rejected (422) delivery",
            deliveries.clone(),
        );
        let auth_failures = Family::default();
        registry.register(
            "hsr_auth_failures",
            "Deliveries refused with 401, by route and reason",
            auth_failures.clone(),
        );
        let intake_duration = Family::new_with_constructor(intake_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "hsr_intake_duration",
            "Time from the start of an intake request to its answer, by route",
            Unit::Seconds,
            intake_duration.clone(),
        );
        let incidents_finished = Family::default();
        registry.register(
            "hsr_incidents_finished",
            "Incidents that reached a final state, by that state",
            incidents_finished.clone(),
        );
        let actions = Family::default();
        registry.register(
            "hsr_actions",
            "Runbook steps that finished, by action and outcome",
            actions.clone(),
        );
        let emails = Family::default();
        registry.register(
            "hsr_emails",
            "Email delivery attempts, by result (sent or failed; a failed email is retried)",
            emails.clone(),
        );
        let open_incidents = Gauge::default();
        registry.register(
            "hsr_open_incidents",
            "Incidents that are not final (queued, running or waiting), read from the store",
            open_incidents.clone(),
        );
        let automation_paused = Gauge::default();
        registry.register(
            "hsr_automation_paused",
            "1 while automation is paused by the kill switch, else 0",
            automation_paused.clone(),
        );
        let executor = ExecutorGauges::default();
        registry.register(
            "hsr_executor_processes",
            "Executor processes (shells) running now; at most executor.max_parallel",
            executor.running.clone(),
        );
        registry.register(
            "hsr_executor_waiting",
            "Steps waiting for an executor process because executor.max_parallel are running",
            executor.waiting.clone(),
        );
        let metrics = Metrics {
            registry,
            deliveries,
            auth_failures,
            intake_duration,
            incidents_finished,
            actions,
            emails,
            open_incidents,
            automation_paused,
            executor,
        };
        // Series whose labels are known up front start at zero, so that a rate over them exists before the first event.
        for state in State::ALL.iter().filter(|state| state.is_final()) {
            metrics
                .incidents_finished
                .get_or_create(&StateLabels { state: state.as_str() })
                .inc_by(0);
        }
        for result in ["sent", "failed"] {
            metrics.emails.get_or_create(&EmailLabels { result }).inc_by(0);
        }
        metrics
    }

    /// One alert of an accepted delivery, and what became of it.
    pub fn delivery(&self, route: Format, sender: &str, disposition: Disposition) {
        self.count_delivery(route, sender, disposition_name(disposition));
    }

    /// An authenticated delivery that was not a valid alert (422), kept as a rejected delivery.
    pub fn rejected(&self, route: Format, sender: &str) {
        self.count_delivery(route, sender, "rejected");
    }

    fn count_delivery(&self, route: Format, sender: &str, disposition: &'static str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                route: route.as_str(),
                sender: sender.to_owned(),
                disposition,
            })
            .inc();
    }

    /// A delivery refused with 401.
    pub fn auth_failure(&self, route: Format, error: AuthError) {
        self.auth_failures
            .get_or_create(&AuthFailureLabels { route: route.as_str(), reason: error.reason() })
            .inc();
    }

    /// How long an intake request took to answer, whatever the answer.
    pub fn intake_duration(&self, route: Format, elapsed: Duration) {
        self.intake_duration
            .get_or_create(&RouteLabels { route: route.as_str() })
            .observe(elapsed.as_secs_f64());
    }

    /// An incident reached a final state.
    pub fn incident_finished(&self, state: State) {
        self.incidents_finished.get_or_create(&StateLabels { state: state.as_str() }).inc();
    }

    /// The gauges the executor keeps current.
    pub fn executor_gauges(&self) -> ExecutorGauges {
        self.executor.clone()
    }

    /// A runbook step finished (or was journaled without running: dry run, throttled).
    pub fn action(&self, action: ActionKind, outcome: Outcome) {
        self.actions
            .get_or_create(&ActionLabels { action: action.as_str(), outcome: outcome.as_str() })
            .inc();
    }

    /// The mail transport accepted an email.
    pub fn email_sent(&self) {
        self.emails.get_or_create(&EmailLabels { result: "sent" }).inc();
    }

    /// The mail transport refused an email, or could not be reached; it will be retried.
    pub fn email_failed(&self) {
        self.emails.get_or_create(&EmailLabels { result: "failed" }).inc();
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]), with the store's gauges as given.
    pub fn encode(&self, store: StoreGauges) -> String {
        self.open_incidents.set(i64::try_from(store.open_incidents).unwrap_or(i64::MAX));
        self.automation_paused.set(i64::from(store.automation_paused));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn intake_histogram() -> Histogram {
    Histogram::new(INTAKE_BUCKETS)
}

/// The disposition as the `202` answer spells it.
fn disposition_name(disposition: Disposition) -> &'static str {
    match disposition {
        Disposition::NewIncident => "new_incident",
        Disposition::Attached => "attached",
        Disposition::Suppressed => "suppressed",
        Disposition::Resolved => "resolved",
        Disposition::Duplicate => "duplicate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_are_spelled_as_the_answer_spells_them() {
        use Disposition::*;
        for disposition in [NewIncident, Attached, Suppressed, Resolved, Duplicate] {
            assert_eq!(serde_json::to_value(disposition).unwrap(), disposition_name(disposition));
        }
    }

    #[test]
    fn encodes_counters_histograms_and_gauges() {
        let metrics = Metrics::new();
        metrics.delivery(Format::Scom, "scom", Disposition::NewIncident);
        metrics.rejected(Format::Native, "scom");
        metrics.auth_failure(Format::Alertmanager, AuthError::Stale);
        metrics.intake_duration(Format::Native, Duration::from_millis(3));
        metrics.action(ActionKind::Probe, Outcome::Failed);
        metrics.incident_finished(State::Recovered);
        metrics.email_sent();
        let text = metrics.encode(StoreGauges { open_incidents: 2, automation_paused: true });
        for line in [
            r#"hsr_deliveries_total{route="scom",sender="scom",disposition="new_incident"} 1"#,
            r#"hsr_deliveries_total{route="native",sender="scom",disposition="rejected"} 1"#,
            r#"hsr_auth_failures_total{route="alertmanager",reason="stale"} 1"#,
            r#"hsr_intake_duration_seconds_bucket{le="0.0025",route="native"} 0"#,
            r#"hsr_intake_duration_seconds_bucket{le="0.005",route="native"} 1"#,
            r#"hsr_intake_duration_seconds_count{route="native"} 1"#,
            r#"hsr_actions_total{action="probe",outcome="failed"} 1"#,
            r#"hsr_incidents_finished_total{state="recovered"} 1"#,
            r#"hsr_incidents_finished_total{state="blocked"} 0"#,
            r#"hsr_emails_total{result="sent"} 1"#,
            r#"hsr_emails_total{result="failed"} 0"#,
            "hsr_open_incidents 2",
            "hsr_automation_paused 1",
            "# UNIT hsr_intake_duration_seconds seconds",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
