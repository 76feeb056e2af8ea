//! Prometheus metrics of the edge (DESIGN.md §9), registered once per process on the
//! default registry so `GET /metrics` shows them next to every other crate's. Several
//! edges started in one process (tests) share them, which is why they are statics.

use prometheus::{
    Encoder, HistogramVec, IntCounter, IntCounterVec, IntGauge, TextEncoder,
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
};
use std::sync::LazyLock;

/// RTM WebSocket connections currently open.
pub static OPEN_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "confab_edge_rtm_connections",
        "RTM WebSocket connections currently open"
    )
    .expect("metric registers once")
});

/// RTM text and binary frames received from clients.
pub static FRAMES_IN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "confab_edge_rtm_frames_in_total",
        "RTM frames received from clients"
    )
    .expect("metric registers once")
});

/// RTM frames written to clients (events and replies).
pub static FRAMES_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "confab_edge_rtm_frames_out_total",
        "RTM frames written to clients"
    )
    .expect("metric registers once")
});

/// Time from reading an RTM command to queueing its reply, by command type.
pub static COMMAND_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "confab_edge_rtm_command_seconds",
        "RTM command latency from receipt to reply, by command type",
        &["type"],
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
        ]
    )
    .expect("metric registers once")
});

/// Connections closed because the client did not read fast enough.
pub static SLOW_CONSUMER_DISCONNECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "confab_edge_rtm_slow_consumer_disconnects_total",
        "RTM connections cut off because their bounded send buffer filled up"
    )
    .expect("metric registers once")
});

/// Why RTM connections ended, as the `goodbye` reason or the close cause.
pub static CONNECTION_ENDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "confab_edge_rtm_connection_ends_total",
        "RTM connections ended, by cause",
        &["cause"]
    )
    .expect("metric registers once")
});

/// Commands rejected by the per-connection rate limit.
pub static RATE_LIMITED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "confab_edge_rtm_rate_limited_total",
        "RTM frames rejected by the per-connection rate limit"
    )
    .expect("metric registers once")
});

/// Presence change frames sent; compared with presence events received, this shows the
/// saving of batching (DESIGN.md §7).
pub static PRESENCE_FRAMES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "confab_edge_presence_frames_total",
        "presence_change frames sent to RTM connections"
    )
    .expect("metric registers once")
});

/// Presence events received by the edge's hubs.
pub static PRESENCE_EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "confab_edge_presence_events_total",
        "presence events received from the core"
    )
    .expect("metric registers once")
});

/// Teams whose event stream a hub currently follows.
pub static HUB_TEAMS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "confab_edge_hub_teams",
        "teams whose core event stream this edge follows"
    )
    .expect("metric registers once")
});

/// REST requests, by route pattern (never raw paths: ids would explode cardinality) and
/// status, over HTTP/1.1 and HTTP/3 alike.
pub static REST_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "confab_edge_rest_requests_total",
        "REST requests by route and status",
        &["route", "status"]
    )
    .expect("metric registers once")
});

/// Touches every metric so they appear (at zero) from the first scrape on.
pub fn init() {
    LazyLock::force(&OPEN_CONNECTIONS);
    LazyLock::force(&FRAMES_IN);
    LazyLock::force(&FRAMES_OUT);
    LazyLock::force(&COMMAND_SECONDS);
    LazyLock::force(&SLOW_CONSUMER_DISCONNECTS);
    LazyLock::force(&CONNECTION_ENDS);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&PRESENCE_FRAMES);
    LazyLock::force(&PRESENCE_EVENTS);
    LazyLock::force(&HUB_TEAMS);
    LazyLock::force(&REST_REQUESTS);
}

/// Every metric of the default registry in the Prometheus text format.
pub fn render() -> Vec<u8> {
    let mut buffer = Vec::new();
    // Encoding into a Vec only fails on metric families that are malformed, which the
    // registry refuses at registration; an empty answer would then be the least harm.
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buffer);
    buffer
}
