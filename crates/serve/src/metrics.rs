//! Prometheus metrics: counters kept with atomics on the request path and
//! rendered in the text exposition format by `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use credence_model::generate::GenerationOutput;

/// Upper bounds (seconds) of the latency buckets: 0.5 ms to 10 s.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// A cumulative latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let n = bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let count = self.count();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Per-model (base or adapter) request counters.
#[derive(Debug, Default, Clone, Copy)]
struct ModelCounters {
    requests: u64,
    failures: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// A per-model counter: name, help text, and how to read it.
type Series = (&'static str, &'static str, fn(&ModelCounters) -> u64);

/// Counters the request path updates.
#[derive(Debug, Default)]
pub struct Metrics {
    by_model: Mutex<BTreeMap<String, ModelCounters>>,
    /// Seconds from accepting a request to its first generated text.
    pub time_to_first_token: Histogram,
}

impl Metrics {
    /// A finished request for `model` (its id or alias as the client named it).
    pub fn record_done(&self, model: &str, output: &GenerationOutput) {
        self.update(model, |c| {
            c.requests += 1;
            c.prompt_tokens += output.prompt_tokens as u64;
            c.completion_tokens += output.completion_tokens as u64;
        });
    }

    /// A request for `model` that failed after it was accepted.
    pub fn record_failure(&self, model: &str) {
        self.update(model, |c| {
            c.requests += 1;
            c.failures += 1;
        });
    }

    fn update(&self, model: &str, f: impl FnOnce(&mut ModelCounters)) {
        let mut map = self.by_model.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(model.to_owned()).or_default());
    }

    /// Appends the per-model counters and request histograms.
    pub(crate) fn render(&self, out: &mut String) {
        let map = self
            .by_model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let series: [Series; 4] = [
            (
                "credence_requests_total",
                "Finished generation requests.",
                |c| c.requests,
            ),
            (
                "credence_request_failures_total",
                "Accepted requests that failed.",
                |c| c.failures,
            ),
            (
                "credence_prompt_tokens_total",
                "Prompt tokens processed.",
                |c| c.prompt_tokens,
            ),
            (
                "credence_completion_tokens_total",
                "Tokens generated.",
                |c| c.completion_tokens,
            ),
        ];
        for (name, help, get) in series {
            header(out, name, help, "counter");
            for (model, counters) in &map {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\"}} {}",
                    escape(model),
                    get(counters)
                );
            }
        }
        self.time_to_first_token.render(
            out,
            "credence_time_to_first_token_seconds",
            "Seconds from accepting a request to its first generated text.",
        );
    }
}

/// Writes `# HELP` and `# TYPE` lines.
pub(crate) fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One unlabelled sample with its header.
pub(crate) fn gauge(out: &mut String, name: &str, help: &str, kind: &str, value: impl ToString) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {}", value.to_string());
}

/// A histogram with its header.
pub(crate) fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    h.render(out, name, help);
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_count 2\n"), "{out}");
    }

    #[test]
    fn labels_are_escaped() {
        let m = Metrics::default();
        m.record_failure("a\"b");
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("credence_requests_total{model=\"a\\\"b\"} 1"),
            "{out}"
        );
    }
}
