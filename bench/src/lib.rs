//! confab's benchmarks. Each scenario is a function returning a [`Report`] so the binary,
//! CI's `--quick` smoke runs and comparisons with other servers share one code path.

pub mod boot;
pub mod ceiling;
pub mod chart;
pub mod fanout;
pub mod history;
pub mod idle;
pub mod many_channels;
pub mod net;
pub mod payload;
pub mod peers;
pub mod presence;
pub mod presence_centrifuge;
pub mod search;
pub mod store;
pub mod wire;

use hdrhistogram::Histogram;
use std::time::Duration;

/// What a scenario measured.
#[derive(Debug)]
pub struct Report {
    pub scenario: &'static str,
    pub operations: u64,
    pub elapsed: Duration,
    /// Latency per operation, in microseconds; empty when the operations were not timed
    /// (sends to a server that never replies): printed as n/a, recorded as null.
    pub latency_us: Histogram<u64>,
    /// Free-form facts worth printing (e.g. fsyncs per operation).
    pub notes: Vec<String>,
}

impl Report {
    /// Operations per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile` in ms; `None` when nothing was timed.
    pub fn latency_ms(&self, quantile: f64) -> Option<f64> {
        (!self.latency_us.is_empty())
            .then(|| self.latency_us.value_at_quantile(quantile) as f64 / 1000.0)
    }

    /// One Markdown table row: scenario, ops, ops/s, p50/p99/p999 in ms (n/a untimed).
    pub fn markdown_row(&self) -> String {
        let ms = |q: f64| {
            self.latency_ms(q)
                .map_or_else(|| "n/a".to_owned(), |ms| format!("{ms:.2}"))
        };
        format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            self.scenario,
            self.operations,
            self.rate(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.notes.join("; ")
        )
    }
}

impl Report {
    /// The scenario and the server it ran against: a report's `scenario` is `NAME` (run
    /// against confab) or `NAME (TARGET)`.
    pub fn scenario_and_target(&self) -> (&'static str, &'static str) {
        match self.scenario.split_once(" (") {
            Some((name, target)) => (name, target.trim_end_matches(')')),
            None => (self.scenario, "confab"),
        }
    }

    /// One JSON line for `bench/results.jsonl`, from which `confab-bench chart` draws
    /// bench/charts/: what ran, where, at which setting (`label`), and what it measured.
    pub fn record(&self, label: &str, command: &str, recorded_unix_s: u64) -> serde_json::Value {
        let (scenario, target) = self.scenario_and_target();
        let ms = |q: f64| self.latency_ms(q);
        serde_json::json!({
            "scenario": scenario,
            "target": target,
            "label": label,
            "operations": self.operations,
            "ops_per_sec": (self.rate() * 10.0).round() / 10.0,
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "p999_ms": ms(0.999),
            "notes": self.notes,
            "command": command,
            "recorded_unix_s": recorded_unix_s,
        })
    }
}

/// A histogram of microseconds from 1 µs to 60 s with 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(latencies_us: &[u64]) -> Report {
        let mut latency_us = latency_histogram();
        for &us in latencies_us {
            latency_us.record(us).unwrap();
        }
        Report {
            scenario: "many-channels (nats)",
            operations: 10,
            elapsed: Duration::from_secs(1),
            latency_us,
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn untimed_operations_print_na_and_record_null() {
        let untimed = report(&[]);
        assert_eq!(
            untimed.markdown_row(),
            "| many-channels (nats) | 10 | 10 | n/a | n/a | n/a | a note |"
        );
        let line = untimed.record("label", "command", 0);
        assert_eq!(line["target"], "nats");
        assert!(
            line["p50_ms"].is_null() && line["p99_ms"].is_null(),
            "{line}"
        );
    }

    #[test]
    fn timed_operations_print_milliseconds() {
        let timed = report(&[2_000]);
        assert!(timed.markdown_row().contains("| 2.00 | 2.00 | 2.00 |"));
        assert_eq!(timed.record("label", "command", 0)["p50_ms"], 2.0);
    }
}
