//! The durable event log on Apache Kafka, for more than one node (DESIGN.md §2): one Kafka
//! topic per event kind, records keyed by channel, consumer-group offsets kept by Kafka.
//!
//! # Mapping
//!
//! - `append` produces with `acks=all` and the idempotent producer, so a record is
//!   acknowledged once every in-sync replica has it and a retried send after a lost ack
//!   is not written twice. The key (the channel id) picks the partition with murmur2,
//!   the Java client's partitioner, so producers in any language agree where a channel's
//!   records go. A channel's records stay in one partition, in order, as long as nobody
//!   adds partitions to the topic (that moves keys).
//! - `poll(group, topic)` reads through one consumer per (group, topic), created on first
//!   use and kept by this handle. It is a real member of the Kafka consumer group (the
//!   KIP-848 `consumer` protocol, GA since Kafka 4.0), with auto-commit off: it starts at
//!   the group's committed offset, or at the earliest record if the group never
//!   committed. Several processes polling one group therefore share its partitions, as
//!   several `confab notify` workers must, instead of each getting every record.
//! - `commit` commits `offset + 1` of the record's partition to Kafka synchronously,
//!   through the consumer that polled it (a group member's commit carries its epoch; a
//!   handle that never polled the topic joins the group first). Unlike the embedded log,
//!   a commit never moves this process's read position: Kafka consumers only read
//!   committed offsets when they are handed a partition.
//! - Topics are created on first use through the admin API, with the configured
//!   partition count or the broker's default.
//! - Names are prefixed with [`KafkaLogConfig::namespace`], so several deployments (or
//!   test cases) share a cluster; [`LogRecord::topic`] carries the unprefixed name.
//!
//! # Why group membership, and why the KIP-848 protocol
//!
//! Assigning every partition to each consumer by hand and reading the group's committed
//! offsets would skip the join and pass the conformance suite as fast, but then every
//! process polling a group would read every record: two notify workers would send every
//! push twice. Group membership is what makes a group a unit of work sharing.
//!
//! A handle holds a consumer per (group, topic), so one process can be two members of the
//! same group on different topics. Under the classic protocol every join rebalances the
//! whole group and the eager assignors revoke everything, waiting for every member to
//! poll before anyone gets partitions: a member on another topic that is not being polled
//! can stall the join for up to `max.poll.interval.ms`. With KIP-848 the broker assigns
//! partitions per member and a new member gets free partitions in its first heartbeat
//! answer, so a join takes one round trip and never disturbs the other members. The cost
//! is that session and heartbeat timeouts are broker settings: moving partitions from a
//! live member to a new one takes a heartbeat or two (`group.consumer.heartbeat.interval.ms`,
//! 5 s by default), and partitions of a process that died without leaving wait for
//! `group.consumer.session.timeout.ms` (45 s) before they get a new owner. Dropping a
//! handle leaves the groups cleanly, so a restart does not wait.
//!
//! # Why rdkafka (librdkafka)
//!
//! - `rskafka` (pure Rust, InfluxData) states "no support for offset tracking, consumer
//!   groups, transactions" and its source confirms it: OffsetCommit, OffsetFetch and the
//!   group APIs exist only as API-key numbers, with no request types; its producer sends
//!   `producer_id = -1` (no idempotence) and the caller picks partitions. Group offsets
//!   would have to live outside Kafka, which is exactly what the trait maps away from.
//! - `kafka` (kafka-rust) speaks version 0 of Produce, Fetch and the offset APIs; Kafka 4.0
//!   removed those versions (KIP-896), so it cannot talk to the 4.1 broker at all, and it
//!   has no idempotent producer either.
//! - `rdkafka` wraps librdkafka 2.12, the client Confluent ships and most non-Java clients
//!   build on: idempotent producer, group offsets in Kafka, KIP-848 groups, admin API.
//!
//! The cost is a C build. The `cmake-build` feature fails in librdkafka 2.12: with curl
//! off, CMake still defines `WITH_OAUTHBEARER_OIDC` (as 0) and `rdkafka_conf.c` tests it
//! with `#ifdef`, so it wants `curl/curl.h` (librdkafka issue #5135). The crate's default
//! build (librdkafka's own `./configure`, the vendored sources, static linking) has no such
//! bug and needs nothing beyond a C compiler and make, so confab uses it, with every
//! optional feature off: no TLS, SASL, zstd, zlib or curl (the brokers are on a trusted
//! network for now; the producer does not compress). Measured on this 2-core machine
//! while other cargo builds ran (load 4–8): building librdkafka takes about 80 CPU-seconds
//! (95 s wall at load 4–6, 255 s at load 7–8); it is cached by cargo afterwards. It adds
//! about 2.7 MB to a stripped binary.

use crate::{EventLog, EventsError, LogRecord};
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Longest Kafka topic name.
const MAX_TOPIC_LEN: usize = 249;
/// What this driver calls itself in broker logs and quotas.
const CLIENT_ID: &str = "confab-events";

/// Where and how the Kafka event log runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaLogConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Prefix of every topic and consumer-group name this log uses.
    pub namespace: String,
    /// Partitions of topics this log creates; `None` takes the broker's `num.partitions`.
    pub partitions: Option<u32>,
    /// Replication factor of topics this log creates; `None` takes the broker's
    /// `default.replication.factor`.
    pub replication: Option<u16>,
    /// Bound on a produce's delivery, a commit, a topic creation and the connection check:
    /// past it the call fails with [`EventsError::Unavailable`].
    pub timeout: Duration,
}

impl KafkaLogConfig {
    /// Defaults for `brokers`: no namespace, the broker's partition count and replication.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            namespace: String::new(),
            partitions: None,
            replication: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The durable event log on a Kafka cluster.
///
/// Cheap to clone (one shared state). Dropping the last clone closes every consumer,
/// which leaves its group so that a restarted process gets the partitions at once; that
/// drop blocks for the leave round trips.
#[derive(Clone)]
pub struct KafkaEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaLogConfig,
    producer: FutureProducer<Tracing>,
    admin: AdminClient<Tracing>,
    /// Prefixed names of topics known to exist, so creation is tried once per handle.
    topics: Mutex<HashSet<String>>,
    /// One group member per (group, topic), both unprefixed.
    readers: Mutex<HashMap<(String, String), Arc<Reader>>>,
}

/// A consumer of one topic for one group.
struct Reader {
    consumer: StreamConsumer<Tracing>,
    /// The prefixed topic name.
    topic: String,
    /// Held by a poll, so concurrent polls of one consumer return contiguous batches.
    turn: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KafkaEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaEventLog")
            .field("brokers", &self.inner.config.brokers)
            .field("namespace", &self.inner.config.namespace)
            .finish_non_exhaustive()
    }
}

/// Sends librdkafka's logs and client errors to `tracing`, which confab's roles
/// collect; rdkafka would send them to the `log` facade.
struct Tracing;

impl ClientContext for Tracing {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker connection losses land here; librdkafka reconnects by itself, and calls
        // that cannot complete report Unavailable, so this is only for the operator.
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl ConsumerContext for Tracing {}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only maps live behind these locks, each updated in one step.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Errors that go away when brokers come back, leaders move or coordinators load: the
/// caller should retry later.
fn is_transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::Resolve
            | C::AllBrokersDown
            | C::MessageTimedOut
            | C::OperationTimedOut
            | C::TimedOutQueue
            | C::QueueFull
            | C::WaitingForCoordinator
            | C::RequestTimedOut
            | C::BrokerNotAvailable
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::ReplicaNotAvailable
            | C::UnknownTopicOrPartition
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::CoordinatorLoadInProgress
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::RebalanceInProgress
            | C::IllegalGeneration
            | C::UnknownMemberId
            | C::StaleMemberEpoch
            | C::FencedMemberEpoch
            | C::KafkaStorageError
            | C::ThrottlingQuotaExceeded
    )
}

fn code_error(what: &str, code: RDKafkaErrorCode) -> EventsError {
    if is_transient(code) {
        EventsError::Unavailable(format!("kafka {what}: {code}"))
    } else {
        EventsError::Internal(format!("kafka {what}: {code}"))
    }
}

fn kafka_error(what: &str, err: KafkaError) -> EventsError {
    match err.rdkafka_error_code() {
        Some(code) => code_error(what, code),
        None => EventsError::Internal(format!("kafka {what}: {err}")),
    }
}

fn joined(err: tokio::task::JoinError) -> EventsError {
    EventsError::Internal(format!("kafka worker failed: {err}"))
}

/// The prefixed name, checked against Kafka's rules so a bad name fails here and not as
/// an obscure broker error.
fn full_name(namespace: &str, name: &str, kind: &str) -> Result<String, EventsError> {
    let full = format!("{namespace}{name}");
    let valid = !name.is_empty()
        && full.len() <= MAX_TOPIC_LEN
        && full
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(full)
    } else {
        Err(EventsError::Internal(format!(
            "invalid {kind} name {full:?}: use 1 to {MAX_TOPIC_LEN} of [A-Za-z0-9._-]"
        )))
    }
}

fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

/// The record as the trait hands it out, under its unprefixed topic name.
fn to_record(topic: &str, message: &BorrowedMessage<'_>) -> LogRecord {
    LogRecord {
        topic: topic.to_owned(),
        // Delivered records always have a partition and an offset, both >= 0.
        partition: message.partition().max(0) as u32,
        offset: message.offset().max(0) as u64,
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        payload: message.payload().unwrap_or_default().to_vec(),
    }
}

impl KafkaEventLog {
    /// Connects to the cluster and checks that a broker answers within the timeout.
    pub async fn connect(config: KafkaLogConfig) -> Result<Self, EventsError> {
        let timeout = millis(config.timeout);
        let mut common = ClientConfig::new();
        common
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", CLIENT_ID);

        let producer: FutureProducer<Tracing> = common
            .clone()
            // Idempotence implies acks=all; both are spelled out because durability rests
            // on them.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", &timeout)
            .set("request.timeout.ms", &timeout)
            .create_with_context(Tracing)
            .map_err(|err| kafka_error("producer", err))?;
        let admin: AdminClient<Tracing> = common
            .create_with_context(Tracing)
            .map_err(|err| kafka_error("admin client", err))?;

        let log = Self {
            inner: Arc::new(Inner {
                config,
                producer,
                admin,
                topics: Mutex::new(HashSet::new()),
                readers: Mutex::new(HashMap::new()),
            }),
        };
        // librdkafka connects lazily and retries forever; asking for metadata once makes
        // a wrong address or a down cluster fail at startup instead of at the first append.
        let check = log.clone();
        tokio::task::spawn_blocking(move || {
            let inner = &check.inner;
            inner
                .producer
                .client()
                .fetch_metadata(None, inner.config.timeout)
                .map(|_| ())
        })
        .await
        .map_err(joined)?
        .map_err(|err| {
            // Whatever the reason no broker answered, for the caller it is unavailable.
            EventsError::Unavailable(format!(
                "kafka brokers {} not reachable: {err}",
                log.inner.config.brokers
            ))
        })?;
        Ok(log)
    }

    /// The configuration this log runs with.
    pub fn config(&self) -> &KafkaLogConfig {
        &self.inner.config
    }

    /// Creates the (prefixed) topic unless this handle already knows it exists.
    async fn ensure_topic(&self, topic: &str) -> Result<(), EventsError> {
        if lock(&self.inner.topics).contains(topic) {
            return Ok(());
        }
        let config = &self.inner.config;
        // -1 asks the broker for its defaults (librdkafka >= 2.4 with brokers >= 2.4).
        let partitions = config.partitions.map_or(-1, |n| n as i32);
        let replication = config.replication.map_or(-1, i32::from);
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        // The operation timeout lets the controller finish the creation before it answers.
        let options = AdminOptions::new()
            .request_timeout(Some(config.timeout))
            .operation_timeout(Some(config.timeout));
        let results = self
            .inner
            .admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|err| kafka_error("create topic", err))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(code_error(&format!("create topic {name}"), code)),
            }
        }
        // Also when it already existed: another process may have created it a moment ago.
        self.await_partitions(topic).await?;
        lock(&self.inner.topics).insert(topic.to_owned());
        Ok(())
    }

    /// Waits until every partition of the topic answers a ListOffsets.
    ///
    /// The controller acknowledges a creation before the broker applies it, and the broker
    /// tells its group coordinator about new topics only after creating the partitions.
    /// A member that subscribes in between is given no partitions, and the coordinator
    /// looks again only at the member's next heartbeat, 5 s later by default: the first
    /// poll of a new topic would sit idle that long. Leaders in the metadata are not
    /// enough (they appear before the partitions exist); a partition that answers for its
    /// offsets exists.
    async fn await_partitions(&self, topic: &str) -> Result<(), EventsError> {
        let deadline = Instant::now() + self.inner.config.timeout;
        loop {
            let log = self.clone();
            let name = topic.to_owned();
            let ready = tokio::task::spawn_blocking(move || -> Result<bool, KafkaError> {
                let client = log.inner.producer.client();
                let timeout = log.inner.config.timeout;
                let metadata = client.fetch_metadata(Some(&name), timeout)?;
                let Some(found) = metadata.topics().iter().find(|t| t.name() == name) else {
                    return Ok(false);
                };
                if found.error().is_some() || found.partitions().is_empty() {
                    return Ok(false);
                }
                Ok(found
                    .partitions()
                    .iter()
                    .all(|p| client.fetch_watermarks(&name, p.id(), timeout).is_ok()))
            })
            .await
            .map_err(joined)?
            .map_err(|err| kafka_error("topic metadata", err))?;
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EventsError::Unavailable(format!(
                    "kafka topic {topic} not ready after {:?}",
                    self.inner.config.timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// This handle's consumer of `topic` for `group`, joining the group on first use.
    async fn reader(&self, group: &str, topic: &str) -> Result<Arc<Reader>, EventsError> {
        let slot = (group.to_owned(), topic.to_owned());
        if let Some(reader) = lock(&self.inner.readers).get(&slot) {
            return Ok(reader.clone());
        }
        let config = &self.inner.config;
        let full_topic = full_name(&config.namespace, topic, "topic")?;
        let full_group = full_name(&config.namespace, group, "group")?;
        // A member subscribed to a topic the broker does not know gets no partitions until
        // the topic shows up, so the topic exists before the consumer joins.
        self.ensure_topic(&full_topic).await?;

        let mut readers = lock(&self.inner.readers);
        // Two first uses may race past the check above; the first one in is kept.
        if let Some(reader) = readers.get(&slot) {
            return Ok(reader.clone());
        }
        let consumer: StreamConsumer<Tracing> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", CLIENT_ID)
            .set("group.id", &full_group)
            .set("group.protocol", "consumer")
            // Offsets move only on `commit`: at-least-once is the trait's contract.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create_with_context(Tracing)
            .map_err(|err| kafka_error("consumer", err))?;
        consumer
            .subscribe(&[&full_topic])
            .map_err(|err| kafka_error("subscribe", err))?;
        let reader = Arc::new(Reader {
            consumer,
            topic: full_topic,
            turn: tokio::sync::Mutex::new(()),
        });
        readers.insert(slot, reader.clone());
        Ok(reader)
    }
}

#[async_trait]
impl EventLog for KafkaEventLog {
    async fn append(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<(u32, u64), EventsError> {
        let full_topic = full_name(&self.inner.config.namespace, topic, "topic")?;
        self.ensure_topic(&full_topic).await?;
        let record = FutureRecord::to(&full_topic).key(key).payload(payload);
        // The queue timeout only covers a full local queue; delivery itself is bounded by
        // `message.timeout.ms`.
        let delivery = self
            .inner
            .producer
            .send(record, self.inner.config.timeout)
            .await
            .map_err(|(err, _)| kafka_error("produce", err))?;
        Ok((
            delivery.partition.max(0) as u32,
            delivery.offset.max(0) as u64,
        ))
    }

    async fn poll(
        &self,
        group: &str,
        topic: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LogRecord>, EventsError> {
        let deadline = Instant::now() + wait;
        let reader = self.reader(group, topic).await?;
        let _turn = reader.turn.lock().await;
        let mut records = Vec::new();
        // Consumption errors that may be passing (a broker restarting) are remembered, not
        // returned at once: records that still arrive within the wait win.
        let mut trouble = None;
        while records.len() < max {
            // The first record is waited for; after it, only what is already buffered.
            let until = if records.is_empty() {
                deadline
            } else {
                Instant::now()
            };
            match tokio::time::timeout_at(until, reader.consumer.recv()).await {
                Err(_) => break,
                Ok(Ok(message)) => {
                    debug_assert_eq!(message.topic(), reader.topic);
                    records.push(to_record(topic, &message));
                }
                Ok(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    return Err(EventsError::Internal(format!(
                        "kafka consumer failed for good: {code}"
                    )));
                }
                Ok(Err(err)) => {
                    tracing::warn!(group, topic, %err, "kafka poll");
                    trouble = Some(err);
                }
            }
        }
        match trouble {
            Some(err) if records.is_empty() => Err(kafka_error("poll", err)),
            _ => Ok(records),
        }
    }

    async fn commit(&self, group: &str, record: &LogRecord) -> Result<(), EventsError> {
        let reader = self.reader(group, &record.topic).await?;
        let partition = i32::try_from(record.partition).map_err(|_| {
            EventsError::Internal(format!("partition {} out of range", record.partition))
        })?;
        let next = i64::try_from(record.offset)
            .ok()
            .and_then(|offset| offset.checked_add(1))
            .ok_or_else(|| {
                EventsError::Internal(format!("offset {} out of range", record.offset))
            })?;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&reader.topic, partition, Offset::Offset(next))
            .map_err(|err| kafka_error("commit", err))?;
        // A synchronous commit blocks its thread until the coordinator answers.
        let committing =
            tokio::task::spawn_blocking(move || reader.consumer.commit(&offsets, CommitMode::Sync));
        match tokio::time::timeout(self.inner.config.timeout, committing).await {
            Err(_) => Err(EventsError::Unavailable(format!(
                "kafka commit: no answer within {:?}",
                self.inner.config.timeout
            ))),
            Ok(joined_commit) => joined_commit
                .map_err(joined)?
                .map_err(|err| kafka_error("commit", err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_checked() {
        assert_eq!(
            full_name("confab.", "messages", "topic").unwrap(),
            "confab.messages"
        );
        assert!(full_name("confab.", "", "topic").is_err());
        assert!(full_name("", "a/b", "group").is_err());
        assert!(full_name("x", &"y".repeat(MAX_TOPIC_LEN), "topic").is_err());
    }

    #[tokio::test]
    async fn no_broker_is_unavailable() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = KafkaLogConfig {
            timeout: Duration::from_millis(500),
            ..KafkaLogConfig::new(format!("127.0.0.1:{port}"))
        };
        let started = Instant::now();
        let err = KafkaEventLog::connect(config).await.unwrap_err();
        assert!(matches!(err, EventsError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn broker_trouble_is_unavailable_and_misuse_is_internal() {
        assert!(matches!(
            code_error("produce", RDKafkaErrorCode::AllBrokersDown),
            EventsError::Unavailable(_)
        ));
        assert!(matches!(
            code_error("produce", RDKafkaErrorCode::MessageTimedOut),
            EventsError::Unavailable(_)
        ));
        assert!(matches!(
            code_error("produce", RDKafkaErrorCode::MessageSizeTooLarge),
            EventsError::Internal(_)
        ));
    }
}
