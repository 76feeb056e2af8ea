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
pub mod peers;
pub mod presence;
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
    /// Latency per operation, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Free-form facts worth printing (e.g. fsyncs per operation).
    pub notes: Vec<String>,
}

impl Report {
    /// Operations per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    /// One Markdown table row: scenario, ops, ops/s, p50/p99/p999 in ms.
    pub fn markdown_row(&self) -> String {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
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
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
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
