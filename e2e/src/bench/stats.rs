//! Figures: percentiles of latencies, and messages of a given size.

use std::time::Duration;

/// The `p` quantile (0..=1) of sorted latencies, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `p50 … ms, p99 … ms, max … ms (n)` of unsorted latencies.
pub fn summary(latencies: &mut [Duration]) -> String {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} rounds",
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        latencies.len()
    )
}

/// A message of exactly `size` bytes (at least its headers), CRLF lines of 76 characters.
pub fn message(size: usize, to: &str, subject: &str) -> Vec<u8> {
    let mut out = format!(
        "From: load@sender.test\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@load.test>\r\n\r\n"
    )
    .into_bytes();
    let line = [b'x'; 76];
    while out.len() + 78 <= size {
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    while out.len() + 2 < size {
        out.push(b'y');
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_asked_size() {
        for size in [200, 1000, 10 * 1024, 100_000] {
            let m = message(size, "a@b.test", "load-7");
            assert_eq!(m.len(), size, "{size}");
            assert!(m.ends_with(b"\r\n"));
            assert!(!m.windows(5).any(|w| w == b"\r\n.\r\n"));
        }
    }

    #[test]
    fn percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&d, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
