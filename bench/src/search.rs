//! The max-load search over the fanout scenario: the highest send rate at which every
//! member still gets every message with end-to-end p99 under a limit (200 ms, the
//! design's delivery target), then a run at half that rate, where a deployment should
//! sit. Rates double from the starting rate until a run fails, then bisect between the
//! last pass and the first failure. Each step is a fresh fanout run (fresh server, fresh
//! channel), so one overloaded step cannot slow the next.

use crate::Report;
use crate::fanout::{self, Fanout, FanoutBench};
use crate::net::MAX_RATE_PER_SENDER;
use crate::net::Result;
use std::time::Duration;

/// Parameters of the search.
#[derive(Clone, Debug)]
pub struct SearchBench {
    /// The fanout run each step repeats; its `rate` is where the search starts.
    pub fanout: FanoutBench,
    /// The p99 a passing step stays under.
    pub p99_limit: Duration,
    /// Bisection steps after the first failure.
    pub refine_steps: usize,
    /// The search gives up doubling here (the box, not the server, is the limit beyond).
    pub max_rate: f64,
}

/// One step: the rate tried and whether it passed.
#[derive(Debug)]
struct Step {
    rate: f64,
    p99_ms: f64,
    passed: bool,
    why: String,
}

pub async fn run(params: SearchBench) -> Result<Report> {
    let mut steps = Vec::new();
    let mut rate = params.fanout.rate;
    let mut best: Option<f64> = None;
    let mut failed: Option<f64> = None;
    // Double until a failure (or the cap), then bisect.
    while failed.is_none() && rate <= params.max_rate {
        let step = try_rate(&params, rate).await?;
        eprintln!("search: {step:?}");
        if step.passed {
            best = Some(rate);
            rate *= 2.0;
        } else {
            failed = Some(rate);
        }
        steps.push(step);
    }
    if let (Some(mut low), Some(mut high)) = (best, failed) {
        for _ in 0..params.refine_steps {
            let mid = ((low + high) / 2.0).round();
            if mid <= low || mid >= high {
                break;
            }
            let step = try_rate(&params, mid).await?;
            eprintln!("search: {step:?}");
            if step.passed {
                low = mid;
            } else {
                high = mid;
            }
            steps.push(step);
        }
        best = Some(low);
    }
    let Some(max) = best else {
        return Err(format!(
            "even {:.0} msg/s fails ({}); start lower with --rate",
            params.fanout.rate,
            steps
                .first()
                .map(|s| s.why.as_str())
                .unwrap_or("no step ran")
        )
        .into());
    };
    let half = (max / 2.0).max(1.0);
    let at_half = fanout::measure(step_params(&params, half)).await?;
    let mut report = at_half.report;
    report.scenario = params.fanout.target.search_scenario();
    let members = params.fanout.members as f64;
    let capped = failed.is_none();
    report.notes.insert(
        0,
        format!(
            "max {max:.0} msg/s ({:.0} deliveries/s) with p99 ≤ {} ms and nothing lost{}; \
             this row is at half: {half:.0} msg/s",
            max * members,
            params.p99_limit.as_millis(),
            if capped { " (search cap reached)" } else { "" }
        ),
    );
    report.notes.push(format!(
        "steps: {}",
        steps
            .iter()
            .map(|s| format!(
                "{:.0}/s p99 {:.0} ms {}",
                s.rate,
                s.p99_ms,
                if s.passed { "pass" } else { "fail" }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(report)
}

/// The fanout run at `rate`, with enough senders to stay under the per-connection limit.
fn step_params(params: &SearchBench, rate: f64) -> FanoutBench {
    let needed = (rate / MAX_RATE_PER_SENDER).ceil() as usize;
    FanoutBench {
        rate,
        senders: params.fanout.senders.max(needed),
        ..params.fanout.clone()
    }
}

async fn try_rate(params: &SearchBench, rate: f64) -> Result<Step> {
    let step = step_params(params, rate);
    if step.senders > step.members {
        return Ok(Step {
            rate,
            p99_ms: 0.0,
            passed: false,
            why: format!("needs {} senders, more than the members", step.senders),
        });
    }
    let Fanout {
        report,
        lost,
        duplicates,
        disconnected,
        rejected,
    } = fanout::measure(step).await?;
    let p99_us = report.latency_us.value_at_quantile(0.99);
    let p99_ms = p99_us as f64 / 1000.0;
    let mut why = Vec::new();
    if p99_us > params.p99_limit.as_micros() as u64 {
        why.push(format!("p99 {p99_ms:.0} ms"));
    }
    for (count, what) in [
        (lost, "lost"),
        (duplicates, "duplicates"),
        (disconnected, "disconnected"),
        (rejected, "rejected"),
    ] {
        if count > 0 {
            why.push(format!("{count} {what}"));
        }
    }
    Ok(Step {
        rate,
        p99_ms,
        passed: why.is_empty(),
        why: why.join(", "),
    })
}
