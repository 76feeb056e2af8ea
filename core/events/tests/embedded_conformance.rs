//! Runs the fan-out and event-log conformance suites against the embedded drivers.

use confab_events::{EventLog, FanOut, FjallEventLog, MemoryFanOut};
use std::path::PathBuf;
use std::sync::Arc;

async fn make_fanout() -> Arc<dyn FanOut> {
    MemoryFanOut::new()
}

/// The same `name` opens the same directory again: a restart of the log. Directories go
/// under cargo's scratch space for integration tests, since a case reopens one after
/// dropping every handle and a `TempDir` would have to outlive the case's calls.
async fn make_log(name: &str) -> Arc<dyn EventLog> {
    let dir: PathBuf = [
        env!("CARGO_TARGET_TMPDIR"),
        "confab-events-conformance",
        name,
    ]
    .iter()
    .collect();
    let log = tokio::task::spawn_blocking(move || FjallEventLog::open(dir))
        .await
        .unwrap()
        .unwrap();
    Arc::new(log)
}

confab_events::fanout_conformance_tests!(make_fanout);
confab_events::event_log_conformance_tests!(make_log);
