//! The process-wide Prometheus metrics, served on the HTTP port's `/metrics`.
//!
//! One registry per process (a `OnceLock`), so the places that count need nothing passed in:
//! `Context` and its many constructors stay as they are.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FilterLabel {
    filter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FilterVerdictLabel {
    filter: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// How a password check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginResult {
    Ok,
    /// Unknown user or wrong password.
    Failed,
    /// The check could not be made (database down and the like).
    Error,
}

impl LoginResult {
    fn label(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Failed => "failed",
            LoginResult::Error => "error",
        }
    }
}

/// Protocols whose series exist from the start (at 0), so dashboards and rate() see them.
const PROTOCOLS: [&str; 3] = ["smtp", "imap", "pop3"];

struct Metrics {
    registry: Registry,
    connections: Family<ProtocolLabel, Counter>,
    open: Family<ProtocolLabel, Gauge>,
    deliveries: Family<ResultLabel, Counter>,
    delivered_bytes: Counter,
    logins: Family<ResultLabel, Counter>,
    refused: Family<ProtocolLabel, Counter>,
    tls_handshakes: Counter,
    pop3_locks: Gauge,
    pop3_in_use: Counter,
    filter_verdicts: Family<FilterVerdictLabel, Counter>,
    filter_failures: Family<FilterLabel, Counter>,
    filter_latency: Family<FilterLabel, Histogram>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("mailserver");
        let connections = Family::<ProtocolLabel, Counter>::default();
        let open = Family::<ProtocolLabel, Gauge>::default();
        let deliveries = Family::<ResultLabel, Counter>::default();
        let delivered_bytes = Counter::default();
        let logins = Family::<ResultLabel, Counter>::default();
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "connections",
            "Connections accepted, by protocol",
            connections.clone(),
        );
        registry.register(
            "connections_open",
            "Connections open now, by protocol",
            open.clone(),
        );
        registry.register(
            "deliveries",
            "Messages handed to the store for local mailboxes, by result",
            deliveries.clone(),
        );
        registry.register(
            "delivered_bytes",
            "Bytes of the messages the store delivered (once per message)",
            delivered_bytes.clone(),
        );
        registry.register(
            "logins",
            "Password checks, by result (ok, failed, error)",
            logins.clone(),
        );
        let refused = Family::<ProtocolLabel, Counter>::default();
        let tls_handshakes = Counter::default();
        registry.register(
            "connections_refused",
            "Connections refused by the per-IP cap, by protocol",
            refused.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed (implicit TLS and STARTTLS)",
            tls_handshakes.clone(),
        );
        let pop3_locks = Gauge::default();
        let pop3_in_use = Counter::default();
        registry.register(
            "pop3_maildrop_locks",
            "POP3 maildrop locks held by this process's sessions now",
            pop3_locks.clone(),
        );
        registry.register(
            "pop3_maildrop_in_use",
            "POP3 logins refused with [IN-USE]: another session held the maildrop",
            pop3_in_use.clone(),
        );
        let filter_verdicts = Family::<FilterVerdictLabel, Counter>::default();
        let filter_failures = Family::<FilterLabel, Counter>::default();
        // 5 ms to about 10 s: a scan on loopback takes milliseconds, a dead filter its timeout.
        let filter_latency = Family::<FilterLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.005, 2.0, 12,
            ))
        });
        registry.register(
            "filter_verdicts",
            "Answers of the content filters (rspamd, clamav), by filter and verdict",
            filter_verdicts.clone(),
        );
        registry.register(
            "filter_failures",
            "Content filter calls that failed (down, timeout, protocol error, circuit open)",
            filter_failures.clone(),
        );
        registry.register(
            "filter_latency_seconds",
            "Time a content filter took to answer, by filter",
            filter_latency.clone(),
        );
        // Creating a series is all that is wanted here; the returned read guards are dropped.
        for protocol in PROTOCOLS {
            let _ = connections.get_or_create(&ProtocolLabel { protocol });
            let _ = open.get_or_create(&ProtocolLabel { protocol });
        }
        for result in ["ok", "error"] {
            let _ = deliveries.get_or_create(&ResultLabel { result });
        }
        for result in [LoginResult::Ok, LoginResult::Failed, LoginResult::Error] {
            let _ = logins.get_or_create(&ResultLabel {
                result: result.label(),
            });
        }
        Self {
            registry,
            connections,
            open,
            deliveries,
            delivered_bytes,
            logins,
            refused,
            tls_handshakes,
            pop3_locks,
            pop3_in_use,
            filter_verdicts,
            filter_failures,
            filter_latency,
        }
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// An open connection, counted in `mailserver_connections_open` until dropped.
#[must_use = "the connection counts as open only while this lives"]
pub struct OpenConnection {
    protocol: &'static str,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics()
            .open
            .get_or_create(&ProtocolLabel {
                protocol: self.protocol,
            })
            .dec();
    }
}

/// Counts an accepted connection; it stays open (in the gauge) while the result lives.
pub fn connection_opened(protocol: &'static str) -> OpenConnection {
    let m = metrics();
    let label = ProtocolLabel { protocol };
    m.connections.get_or_create(&label).inc();
    m.open.get_or_create(&label).inc();
    OpenConnection { protocol }
}

/// Counts a connection refused by the per-IP cap.
pub fn connection_refused(protocol: &'static str) {
    metrics()
        .refused
        .get_or_create(&ProtocolLabel { protocol })
        .inc();
}

/// Counts a completed TLS handshake.
pub fn tls_handshake() {
    metrics().tls_handshakes.inc();
}

/// Counts one `Store::deliver` call: its result and, when it succeeded, the message's bytes.
pub fn delivery(ok: bool, bytes: usize) {
    let m = metrics();
    let result = if ok { "ok" } else { "error" };
    m.deliveries.get_or_create(&ResultLabel { result }).inc();
    if ok {
        m.delivered_bytes.inc_by(bytes as u64);
    }
}

/// Counts one password check.
pub fn login(result: LoginResult) {
    metrics()
        .logins
        .get_or_create(&ResultLabel {
            result: result.label(),
        })
        .inc();
}

/// A POP3 maildrop lock was taken (`true`) or given up (`false`) by this process.
pub fn pop3_lock(taken: bool) {
    let gauge = &metrics().pop3_locks;
    if taken {
        gauge.inc();
    } else {
        gauge.dec();
    }
}

/// Counts a POP3 login refused because the maildrop was locked.
pub fn pop3_in_use() {
    metrics().pop3_in_use.inc();
}

/// Counts a content filter's answer (`filter`: `rspamd`, `clamav`) and how long it took.
pub fn filter_verdict(filter: &'static str, verdict: &'static str, seconds: f64) {
    let m = metrics();
    m.filter_verdicts
        .get_or_create(&FilterVerdictLabel { filter, verdict })
        .inc();
    m.filter_latency
        .get_or_create(&FilterLabel { filter })
        .observe(seconds);
}

/// Counts a content filter call that got no answer.
pub fn filter_failure(filter: &'static str) {
    metrics()
        .filter_failures
        .get_or_create(&FilterLabel { filter })
        .inc();
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric in the text exposition format (OpenMetrics, which Prometheus scrapes).
pub fn encode() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a metric, and an
    // empty answer is better than a panic in the scrape.
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &metrics().registry) {
        tracing::error!(%err, "encoding metrics failed");
    }
    out
}

/// The value of the sample `series` (name and labels, as written in the exposition) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_exist_from_the_start() {
        let text = encode();
        for series in [
            "mailserver_connections_total{protocol=\"smtp\"}",
            "mailserver_connections_total{protocol=\"imap\"}",
            "mailserver_connections_total{protocol=\"pop3\"}",
            "mailserver_connections_open{protocol=\"smtp\"}",
            "mailserver_deliveries_total{result=\"ok\"}",
            "mailserver_deliveries_total{result=\"error\"}",
            "mailserver_delivered_bytes_total",
            "mailserver_logins_total{result=\"ok\"}",
            "mailserver_logins_total{result=\"failed\"}",
            "mailserver_logins_total{result=\"error\"}",
        ] {
            assert!(
                sample(&text, series).is_some(),
                "{series} missing in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE mailserver_connections_open gauge"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE mailserver_deliveries counter"),
            "{text}"
        );
    }

    #[test]
    fn open_connections_go_up_and_down() {
        // Only this test uses the label "test", so parallel tests cannot disturb the counts.
        let open = || sample(&encode(), "mailserver_connections_open{protocol=\"test\"}");
        let total = || sample(&encode(), "mailserver_connections_total{protocol=\"test\"}");
        let first = connection_opened("test");
        let second = connection_opened("test");
        assert_eq!(open(), Some(2.0));
        assert_eq!(total(), Some(2.0));
        drop(first);
        assert_eq!(open(), Some(1.0));
        drop(second);
        assert_eq!(open(), Some(0.0));
        assert_eq!(total(), Some(2.0));
    }

    #[test]
    fn samples() {
        let text = "# TYPE a counter\na_total{x=\"1\"} 3\na_total{x=\"12\"} 4.5\nb 7 123\n# EOF\n";
        for (series, want) in [
            ("a_total{x=\"1\"}", Some(3.0)),
            ("a_total{x=\"12\"}", Some(4.5)),
            ("b", Some(7.0)),
            ("a_total{x=\"2\"}", None),
            ("a_total", None),
            ("# TYPE a", None),
        ] {
            assert_eq!(sample(text, series), want, "{series}");
        }
    }
}
