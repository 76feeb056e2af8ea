//! Prometheus metrics of the Flannel cache. They live in the process-wide default registry
//! and are registered once, so several `Flannel`s in one process (tests, benchmarks) add
//! to the same series; per-instance numbers are in [`crate::FlannelStats`].

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use std::sync::OnceLock;

/// What a hit or miss was looking for, the `cache` label.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CacheKind {
    User,
    Team,
    Memberships,
}

impl CacheKind {
    fn label(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Team => "team",
            Self::Memberships => "memberships",
        }
    }
}

pub(crate) struct Metrics {
    hits: IntCounterVec,
    misses: IntCounterVec,
    /// Teams with a live core subscription.
    pub(crate) teams: IntGauge,
    /// Core subscriptions that ended because the core cut this edge off.
    pub(crate) cutoffs: IntCounter,
}

impl Metrics {
    pub(crate) fn hit(&self, kind: CacheKind) {
        self.hits.with_label_values(&[kind.label()]).inc();
    }

    pub(crate) fn miss(&self, kind: CacheKind) {
        self.misses.with_label_values(&[kind.label()]).inc();
    }
}

/// The process's Flannel metrics, registered on first use.
pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = Metrics {
            hits: IntCounterVec::new(
                Opts::new(
                    "confab_flannel_cache_hits_total",
                    "Flannel lookups served from the cache",
                ),
                &["cache"],
            )
            .expect("valid metric"),
            misses: IntCounterVec::new(
                Opts::new(
                    "confab_flannel_cache_misses_total",
                    "Flannel lookups that went to the core",
                ),
                &["cache"],
            )
            .expect("valid metric"),
            teams: IntGauge::new(
                "confab_flannel_teams",
                "Teams whose core event stream this edge follows",
            )
            .expect("valid metric"),
            cutoffs: IntCounter::new(
                "confab_flannel_team_cutoffs_total",
                "Team event streams the core cut off (the team's cache was dropped)",
            )
            .expect("valid metric"),
        };
        let registry = prometheus::default_registry();
        let registered = [
            registry.register(Box::new(metrics.hits.clone())),
            registry.register(Box::new(metrics.misses.clone())),
            registry.register(Box::new(metrics.teams.clone())),
            registry.register(Box::new(metrics.cutoffs.clone())),
        ];
        for result in registered {
            // Counting still works unregistered; a clash only means /metrics lacks the series.
            if let Err(e) = result {
                tracing::warn!(error = %e, "flannel metric not registered");
            }
        }
        metrics
    })
}
