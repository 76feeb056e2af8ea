//! Moving events out of the core (DESIGN.md §1–2).
//!
//! - [`FanOut`]: real-time, at-most-once delivery of [`TeamEvent`]s from the core to the
//!   edges that hold connections of that team. Ordered per team. In-process broadcast
//!   for one node; Redis pub/sub ([`RedisFanOut`]) for several.
//! - [`EventLog`]: the durable, replayable log of side effects (push notifications, later
//!   search indexing) with consumer offsets. Embedded in fjall for one node; Kafka at scale.
//!
//! Each trait has one conformance suite in [`conformance`] that every driver passes.

pub mod conformance;
pub mod fjall_log;
pub mod kafka_log;
pub mod memory_fanout;
pub mod redis_fanout;

pub use fjall_log::FjallEventLog;
pub use kafka_log::{KafkaEventLog, KafkaLogConfig};
pub use memory_fanout::MemoryFanOut;
pub use redis_fanout::RedisFanOut;

use async_trait::async_trait;
use confab_proto::TeamId;
use confab_proto::event::TeamEvent;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Which fan-out carries events to edges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FanOutBackend {
    InProcess,
    /// Redis pub/sub at `url`, shared by every node that opens it.
    Redis {
        url: String,
    },
}

/// Which engine keeps the durable event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventLogBackend {
    /// fjall keyspaces in this directory.
    Embedded { dir: std::path::PathBuf },
    /// Kafka topics on these bootstrap brokers (`host:port,...`), every topic and group
    /// name prefixed with `namespace`; topics it creates get `partitions` (`None`: the
    /// broker's default).
    Kafka {
        brokers: String,
        namespace: String,
        partitions: Option<u32>,
    },
}

/// Opens the configured fan-out.
pub async fn open_fanout(backend: &FanOutBackend) -> Result<Arc<dyn FanOut>, EventsError> {
    match backend {
        FanOutBackend::InProcess => Ok(MemoryFanOut::new()),
        FanOutBackend::Redis { url } => Ok(RedisFanOut::open(url).await?),
    }
}

/// Opens the configured durable event log.
pub async fn open_event_log(backend: &EventLogBackend) -> Result<Arc<dyn EventLog>, EventsError> {
    match backend {
        EventLogBackend::Embedded { dir } => Ok(Arc::new(FjallEventLog::open(dir)?)),
        EventLogBackend::Kafka {
            brokers,
            namespace,
            partitions,
        } => {
            let config = KafkaLogConfig {
                namespace: namespace.clone(),
                partitions: *partitions,
                ..KafkaLogConfig::new(brokers.clone())
            };
            Ok(Arc::new(KafkaEventLog::connect(config).await?))
        }
    }
}

/// Why an event call failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("event backend unavailable: {0}")]
    Unavailable(String),
    #[error("event backend internal error: {0}")]
    Internal(String),
}

/// A subscription to one team's events. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub team: TeamId,
    pub events: mpsc::Receiver<Arc<TeamEvent>>,
}

/// Real-time fan-out of team events from the core to edges.
#[async_trait]
pub trait FanOut: Send + Sync + 'static {
    /// Delivers the event to every current subscriber of its team, in publish order.
    async fn publish(&self, event: Arc<TeamEvent>) -> Result<(), EventsError>;

    /// Subscribes to a team. A subscriber that falls `buffer` events behind is
    /// disconnected (its receiver ends) rather than slowing the publisher.
    async fn subscribe(&self, team: &TeamId, buffer: usize) -> Result<Subscription, EventsError>;
}

/// One record of the durable log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// Ordering key (the channel id): records of one key keep their order.
    pub key: String,
    pub payload: Vec<u8>,
}

/// A durable, append-only log of events, read by named consumer groups that commit
/// their progress (Kafka's model, so the Kafka driver maps one to one).
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends a record durably; returns its (partition, offset).
    async fn append(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<(u32, u64), EventsError>;

    /// Up to `max` records of `topic` after this consumer's position, oldest first,
    /// waiting up to `wait` for the first one. Polling advances the position held in this
    /// process; a freshly opened log (a restart) starts after the group's last commit, or
    /// at the beginning if it never committed: delivery is at least once.
    async fn poll(
        &self,
        group: &str,
        topic: &str,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<LogRecord>, EventsError>;

    /// Records that `group` has processed `record` and everything before it in its
    /// partition; the next `poll` (also after a restart) starts after it.
    async fn commit(&self, group: &str, record: &LogRecord) -> Result<(), EventsError>;
}
