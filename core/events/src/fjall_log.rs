//! The embedded durable event log: an append-only log per topic in its own fjall
//! database, with consumer-group offsets, for one node (DESIGN.md §2).
//!
//! Layout: one keyspace per topic (`topic.NAME`), records keyed by their offset as a
//! big-endian `u64` so keys sort in log order; one keyspace `consumer_offsets` mapping
//! (group, topic) to the offset of the group's last committed record. Every topic has the
//! single partition 0.
//!
//! Durability uses group commit: an append (or commit) writes into fjall's journal, takes a
//! ticket, then queues for the sync lock; whoever holds it runs one `fdatasync` that covers
//! every write ticketed before it started, and the writers queued behind find their ticket
//! already covered and return without syncing again. Consumers only see records that are
//! durable, as Kafka's consumers only see committed ones.

use crate::{EventLog, EventsError, LogRecord};
use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// The only partition of an embedded topic.
const PARTITION: u32 = 0;
/// Longest topic name; Kafka allows 249, and the keyspace name adds a prefix.
const MAX_TOPIC_LEN: usize = 200;
const OFFSETS_KEYSPACE: &str = "consumer_offsets";

/// The durable event log kept in a fjall database directory of its own.
///
/// Cheap to clone (one shared state). Dropping the last clone closes the database, after
/// which the directory can be opened again (a restart).
#[derive(Clone)]
pub struct FjallEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    db: Database,
    offsets: Keyspace,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Tickets handed to journal writes, in write order; a write takes its ticket only
    /// after it is in the journal, so a sync that starts after ticket N covers 1..=N.
    written: AtomicU64,
    /// The group-commit lock, guarding the highest ticket known to be on disk.
    synced: tokio::sync::Mutex<u64>,
    /// How many syncs ran, to see how well group commit batches.
    syncs: AtomicU64,
    /// Read positions (next offset to deliver) per (group, topic), in this process only.
    positions: Mutex<HashMap<(String, String), u64>>,
}

struct Topic {
    records: Keyspace,
    /// The next offset to hand out. Held while inserting, so records enter the keyspace
    /// in offset order and a reader never sees offset n+1 before n.
    next: Mutex<u64>,
    /// Offsets below this are durable, hence visible to consumers.
    durable_end: AtomicU64,
    /// Wakes polls waiting for new durable records.
    appended: Notify,
}

impl std::fmt::Debug for FjallEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallEventLog")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn storage(err: fjall::Error) -> EventsError {
    EventsError::Unavailable(format!("event log storage: {err}"))
}

fn joined(err: tokio::task::JoinError) -> EventsError {
    EventsError::Internal(format!("event log worker failed: {err}"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only maps and counters live behind these locks, each updated in one step.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Topic names follow Kafka's rules so that both drivers accept the same names.
fn check_topic(topic: &str) -> Result<(), EventsError> {
    let valid = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(EventsError::Internal(format!(
            "invalid topic name {topic:?}: use 1 to {MAX_TOPIC_LEN} of [A-Za-z0-9._-]"
        )))
    }
}

/// The consumer-offset key: length-prefixed group, then topic, so no two pairs collide.
fn offset_key(group: &str, topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + group.len() + topic.len());
    key.extend_from_slice(&(group.len() as u32).to_be_bytes());
    key.extend_from_slice(group.as_bytes());
    key.extend_from_slice(topic.as_bytes());
    key
}

/// A record value: the ordering key, length-prefixed, then the payload.
fn encode_record(key: &str, payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(4 + key.len() + payload.len());
    value.extend_from_slice(&(key.len() as u32).to_be_bytes());
    value.extend_from_slice(key.as_bytes());
    value.extend_from_slice(payload);
    value
}

fn decode_u64(bytes: &[u8]) -> Result<u64, EventsError> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| EventsError::Internal(format!("corrupt offset of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_record(topic: &str, offset: u64, value: &[u8]) -> Result<LogRecord, EventsError> {
    let corrupt = || EventsError::Internal(format!("corrupt record {topic}/{offset}"));
    let (len, rest) = value.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(corrupt());
    }
    let (key, payload) = rest.split_at(len);
    Ok(LogRecord {
        topic: topic.to_owned(),
        partition: PARTITION,
        offset,
        key: String::from_utf8(key.to_vec()).map_err(|_| corrupt())?,
        payload: payload.to_vec(),
    })
}

impl FjallEventLog {
    /// Opens (or creates) the log in `dir`, a directory used by nothing else.
    ///
    /// Blocks on disk I/O (recovery); call it before serving, or from `spawn_blocking`.
    /// Fails if another open log holds the directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, EventsError> {
        let dir = dir.as_ref().to_path_buf();
        let db = Database::builder(&dir).open().map_err(storage)?;
        let offsets = db
            .keyspace(OFFSETS_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(storage)?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                db,
                offsets,
                topics: Mutex::new(HashMap::new()),
                written: AtomicU64::new(0),
                synced: tokio::sync::Mutex::new(0),
                syncs: AtomicU64::new(0),
                positions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many disk syncs this handle has run; with group commit, concurrent appends
    /// and commits share them, so this grows slower than the number of writes.
    pub fn sync_count(&self) -> u64 {
        self.inner.syncs.load(Ordering::Relaxed)
    }

    /// The topic's state, opening its keyspace on first use.
    async fn topic(&self, name: &str) -> Result<Arc<Topic>, EventsError> {
        if let Some(topic) = lock(&self.inner.topics).get(name) {
            return Ok(topic.clone());
        }
        check_topic(name)?;
        let inner = self.inner.clone();
        let keyspace_name = format!("topic.{name}");
        let opened = tokio::task::spawn_blocking(move || -> Result<Topic, EventsError> {
            let records = inner
                .db
                .keyspace(&keyspace_name, KeyspaceCreateOptions::default)
                .map_err(storage)?;
            let end = match records.last_key_value() {
                Some(last) => decode_u64(&last.key().map_err(storage)?)? + 1,
                None => 0,
            };
            Ok(Topic {
                records,
                next: Mutex::new(end),
                // Whatever survived a restart was synced or at least recovered from the
                // journal, so all of it is readable.
                durable_end: AtomicU64::new(end),
                appended: Notify::new(),
            })
        })
        .await
        .map_err(joined)??;
        // Two first uses may race; the first one in wins so there is one offset counter.
        let mut topics = lock(&self.inner.topics);
        Ok(topics
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(opened))
            .clone())
    }

    /// Waits until every journal write ticketed up to `ticket` is on disk.
    async fn sync(&self, ticket: u64) -> Result<(), EventsError> {
        // tokio's mutex is fair: writers queue in order behind the syncing leader.
        let mut synced = self.inner.synced.lock().await;
        if *synced >= ticket {
            return Ok(());
        }
        let covers = self.inner.written.load(Ordering::Acquire);
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || db.persist(PersistMode::SyncData))
            .await
            .map_err(joined)?
            .map_err(storage)?;
        self.inner.syncs.fetch_add(1, Ordering::Relaxed);
        *synced = covers;
        Ok(())
    }

    /// Records of `topic` from `group`'s position on, at most `max`, advancing the position.
    fn take(
        &self,
        group: &str,
        name: &str,
        topic: &Topic,
        max: usize,
    ) -> Result<Vec<LogRecord>, EventsError> {
        let mut positions = lock(&self.inner.positions);
        let slot = (group.to_owned(), name.to_owned());
        let from = match positions.get(&slot) {
            Some(&from) => from,
            None => match self
                .inner
                .offsets
                .get(offset_key(group, name))
                .map_err(storage)?
            {
                Some(committed) => decode_u64(&committed)? + 1,
                None => 0,
            },
        };
        let end = topic
            .durable_end
            .load(Ordering::Acquire)
            .min(from.saturating_add(max as u64));
        let mut records = Vec::new();
        if from < end {
            // Reads run inline: they are bounded by `max` and consumers read near the
            // tail, which fjall serves from memory.
            for entry in topic.records.range(from.to_be_bytes()..end.to_be_bytes()) {
                let (key, value) = entry.into_inner().map_err(storage)?;
                records.push(decode_record(name, decode_u64(&key)?, &value)?);
            }
        }
        let next = records.last().map_or(from, |last| last.offset + 1);
        positions.insert(slot, next);
        Ok(records)
    }
}

#[async_trait]
impl EventLog for FjallEventLog {
    async fn append(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<(u32, u64), EventsError> {
        let state = self.topic(topic).await?;
        let value = encode_record(key, payload);
        let (inner, topic_state) = (self.inner.clone(), state.clone());
        let (offset, ticket) = tokio::task::spawn_blocking(move || -> Result<_, EventsError> {
            let mut next = lock(&topic_state.next);
            let offset = *next;
            topic_state
                .records
                .insert(offset.to_be_bytes(), value)
                .map_err(storage)?;
            *next += 1;
            let ticket = inner.written.fetch_add(1, Ordering::AcqRel) + 1;
            Ok((offset, ticket))
        })
        .await
        .map_err(joined)??;
        self.sync(ticket).await?;
        // A later offset may have become durable first (same sync, faster wake-up):
        // max keeps the visible end from moving back.
        state.durable_end.fetch_max(offset + 1, Ordering::AcqRel);
        state.appended.notify_waiters();
        Ok((PARTITION, offset))
    }

    async fn poll(
        &self,
        group: &str,
        topic: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<LogRecord>, EventsError> {
        let state = self.topic(topic).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an append between the look and the wait
            // still wakes this poll.
            let appended = state.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let records = self.take(group, topic, &state, max)?;
            if !records.is_empty() || max == 0 {
                return Ok(records);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&self, group: &str, record: &LogRecord) -> Result<(), EventsError> {
        if record.partition != PARTITION {
            return Err(EventsError::Internal(format!(
                "embedded topic {} has no partition {}",
                record.topic, record.partition
            )));
        }
        check_topic(&record.topic)?;
        let key = offset_key(group, &record.topic);
        let inner = self.inner.clone();
        let offset = record.offset;
        let ticket = tokio::task::spawn_blocking(move || -> Result<u64, EventsError> {
            inner
                .offsets
                .insert(key, offset.to_be_bytes())
                .map_err(storage)?;
            Ok(inner.written.fetch_add(1, Ordering::AcqRel) + 1)
        })
        .await
        .map_err(joined)??;
        self.sync(ticket).await?;
        // Kafka semantics: a commit never rewinds this process's position, but a commit
        // ahead of it (another consumer's progress) moves it forward.
        let slot = (group.to_owned(), record.topic.clone());
        if let Some(position) = lock(&self.inner.positions).get_mut(&slot) {
            *position = (*position).max(offset + 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_values_round_trip() {
        let value = encode_record("C123", b"{\"x\":1}");
        let record = decode_record("t", 7, &value).unwrap();
        assert_eq!(
            (record.key.as_str(), record.payload.as_slice()),
            ("C123", &b"{\"x\":1}"[..])
        );
        assert!(decode_record("t", 7, &value[..3]).is_err());
    }

    #[test]
    fn offset_keys_do_not_collide() {
        assert_ne!(offset_key("ab", "c"), offset_key("a", "bc"));
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic("notify.messages-v1_x").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("a/b").is_err());
        assert!(check_topic(&"x".repeat(MAX_TOPIC_LEN + 1)).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_syncs_and_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let log = FjallEventLog::open(dir.path()).unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append("t", "k", format!("{i}").as_bytes()).await })
            })
            .collect();
        let mut offsets = Vec::new();
        for task in tasks {
            offsets.push(task.await.unwrap().unwrap().1);
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..64).collect::<Vec<_>>());
        assert_eq!(
            *log.inner.synced.lock().await,
            64,
            "not every write was synced"
        );
        let syncs = log.sync_count();
        assert!(
            syncs < 64,
            "{syncs} syncs for 64 concurrent appends: none shared"
        );

        drop(log);
        let log = FjallEventLog::open(dir.path()).unwrap();
        let all = log.poll("g", "t", 100, Duration::ZERO).await.unwrap();
        assert_eq!(all.len(), 64);
        assert_eq!(log.append("t", "k", b"next").await.unwrap(), (0, 64));
    }
}
