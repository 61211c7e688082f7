//! `mail_operator_*` metrics: reconciles, errors and reconcile duration per kind.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub error: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<KindLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mail_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0])
        });
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed", errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took",
            duration.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `kind`; the returned timer records its duration when dropped.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&KindLabel { kind }).inc();
        ReconcileTimer {
            metrics: self,
            kind,
            start: Instant::now(),
        }
    }

    pub fn error(&self, kind: &'static str, error: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { kind, error })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&KindLabel { kind: self.kind })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_times_per_kind() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("Mailbox"));
        metrics.error("Mailbox", "Database");
        let text = metrics.encode();
        assert!(
            text.contains("mail_operator_reconciles_total{kind=\"Mailbox\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "mail_operator_reconcile_errors_total{kind=\"Mailbox\",error=\"Database\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("mail_operator_reconcile_duration_seconds_count{kind=\"Mailbox\"} 1"),
            "{text}"
        );
    }
}
