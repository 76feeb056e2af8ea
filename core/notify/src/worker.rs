//! The notify loop: poll the `messages` topic as consumer group `notify`, push to the
//! recipients who are not active, record each delivery, then commit the record's offset.
//!
//! Exactly once per (message, subscription), across restarts: a record is committed only
//! after every push it causes was delivered (or given up on) and recorded, so a restart
//! replays at most the records in flight, and their recorded deliveries are skipped.
//! The one window left — the process dies after the sink answered 2xx and before the
//! delivery was recorded — is covered by the `Idempotency-Key` the sink sees twice.
//! A backend outage (store, presence, log) stops the loop without committing; it retries
//! the same records when they come back.

use crate::recipients::{Reason, mentions};
use crate::webhook::{DeliveryError, PushSink};
use bytes::Bytes;
use confab_events::{EventLog, EventsError, LogRecord};
use confab_presence::PresenceStore;
use confab_proto::event::{TeamEvent, TeamEventBody};
use confab_proto::{ChannelId, ChannelKind, Message, MessageId, Presence, TeamId, UserId};
use confab_store::{PushSubscription, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The topic the chat service appends new messages to.
pub const MESSAGES_TOPIC: &str = "messages";

/// Settings of the notify worker.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// The consumer group: every worker of one deployment shares it (partitions are
    /// divided among them).
    pub group: String,
    /// Records taken per poll.
    pub batch: usize,
    /// Delivery attempts per push before giving up on it.
    pub attempts: u32,
    /// Wait before the second attempt; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a recorded delivery is remembered (longer than any redelivery).
    pub dedup_ttl: Duration,
    /// Longest message text put in a push; longer text is cut at a character boundary.
    pub max_text_bytes: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            group: "notify".to_string(),
            batch: 64,
            attempts: 6,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            dedup_ttl: Duration::from_secs(7 * 24 * 3600),
            max_text_bytes: 512,
        }
    }
}

/// What a sink receives (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPayload {
    /// Stable across retries and redeliveries; also the `Idempotency-Key` header.
    pub id: String,
    pub reason: Reason,
    pub team: TeamId,
    pub recipient: UserId,
    pub subscription: String,
    pub channel: ChannelId,
    pub message_id: MessageId,
    pub seq: u64,
    pub author: UserId,
    pub text: String,
    pub ts: String,
}

/// Why a record could not be handled now (it is retried, not skipped).
#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("presence: {0}")]
    Presence(#[from] confab_presence::PresenceError),
}

/// The notify worker.
pub struct Notifier {
    store: Arc<dyn Store>,
    presence: Arc<dyn PresenceStore>,
    log: Arc<dyn EventLog>,
    sink: Arc<dyn PushSink>,
    config: NotifyConfig,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(
        store: Arc<dyn Store>,
        presence: Arc<dyn PresenceStore>,
        log: Arc<dyn EventLog>,
        sink: Arc<dyn PushSink>,
        config: NotifyConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            presence,
            log,
            sink,
            config,
        })
    }

    /// Runs until `stop` turns true; the record in hand is finished first.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.config.first_backoff;
        while !*stop.borrow() {
            let polled = tokio::select! {
                _ = stop.changed() => break,
                polled = self.log.poll(&self.config.group, MESSAGES_TOPIC, self.config.batch, Duration::from_secs(1)) => polled,
            };
            let outcome = match polled {
                Ok(records) => self.handle_all(&records, &mut stop).await,
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => backoff = self.config.first_backoff,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "notify paused: a backend is unavailable");
                    metrics::backend_errors();
                    tokio::select! {
                        _ = stop.changed() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
        tracing::info!("notify worker stopped");
    }

    /// Handles records in order, committing each once done. The poll position in this
    /// process has already moved past them, so a record that fails (a backend is down)
    /// is retried here until it succeeds or the worker stops; a stopped worker leaves it
    /// uncommitted and the log hands it out again after the restart.
    async fn handle_all(
        &self,
        records: &[LogRecord],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        for record in records {
            let mut wait = self.config.first_backoff;
            loop {
                match self.handle(record).await {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(%error, offset = record.offset, retry_in = ?wait, "notify: record not handled yet");
                        metrics::backend_errors();
                        tokio::select! {
                            _ = stop.changed() => return Ok(()),
                            () = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(self.config.max_backoff);
                    }
                }
            }
            self.commit(record).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn commit(&self, record: &LogRecord) -> Result<(), EventsError> {
        let mut wait = self.config.first_backoff;
        for _ in 0..self.config.attempts {
            match self.log.commit(&self.config.group, record).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "notify: offset commit failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.config.max_backoff);
                }
            }
        }
        self.log.commit(&self.config.group, record).await
    }

    async fn handle(&self, record: &LogRecord) -> Result<(), HandleError> {
        let event: TeamEvent = match serde_json::from_slice(&record.payload) {
            Ok(event) => event,
            Err(e) => {
                // Not ours to fix and never going to parse: skip it, loudly.
                tracing::error!(error = %e, offset = record.offset, "notify: undecodable record skipped");
                return Ok(());
            }
        };
        let TeamEventBody::Message { message } = &event.body else {
            return Ok(());
        };
        let targets = self.recipients(&event.team, message).await?;
        if targets.is_empty() {
            return Ok(());
        }
        let users: Vec<UserId> = targets.iter().map(|(u, _)| u.clone()).collect();
        let presence = self.presence.presence(&event.team, &users).await?;
        for ((user, reason), presence) in targets.into_iter().zip(presence) {
            // Active users see it live; DND holds notifications.
            if presence != Presence::Away {
                continue;
            }
            for subscription in self.store.push_subscriptions(&event.team, &user).await? {
                self.push(&event.team, message, &user, reason, &subscription)
                    .await?;
            }
        }
        Ok(())
    }

    /// Who the message notifies, each once, never its author.
    async fn recipients(
        &self,
        team: &TeamId,
        message: &Message,
    ) -> Result<Vec<(UserId, Reason)>, HandleError> {
        let Some(channel) = self.store.channel(team, &message.channel).await? else {
            return Ok(Vec::new());
        };
        let members = self.store.channel_members(team, &message.channel).await?;
        let found: Vec<(UserId, Reason)> = match channel.channel.kind {
            ChannelKind::Dm | ChannelKind::GroupDm => {
                members.into_iter().map(|user| (user, Reason::Dm)).collect()
            }
            _ => mentions(&message.text)
                .into_iter()
                .filter(|user| members.contains(user))
                .map(|user| (user, Reason::Mention))
                .collect(),
        };
        Ok(found
            .into_iter()
            .filter(|(user, _)| *user != message.user)
            .collect())
    }

    async fn push(
        &self,
        team: &TeamId,
        message: &Message,
        recipient: &UserId,
        reason: Reason,
        subscription: &PushSubscription,
    ) -> Result<(), HandleError> {
        let key = format!("{}.{}", message.id, subscription.id);
        if self.store.push_delivered(team, &key).await? {
            metrics::skipped_duplicates();
            return Ok(());
        }
        let payload = PushPayload {
            id: key.clone(),
            reason,
            team: team.clone(),
            recipient: recipient.clone(),
            subscription: subscription.id.clone(),
            channel: message.channel.clone(),
            message_id: message.id.clone(),
            seq: message.seq,
            author: message.user.clone(),
            text: truncate(&message.text, self.config.max_text_bytes),
            ts: message.ts.clone(),
        };
        let body = Bytes::from(serde_json::to_vec(&payload).expect("payload serializes"));
        let mut wait = self.config.first_backoff;
        for attempt in 1..=self.config.attempts {
            match self
                .sink
                .deliver(&subscription.url, &key, body.clone())
                .await
            {
                Ok(()) => {
                    self.store
                        .claim_push_delivery(team, &key, self.config.dedup_ttl)
                        .await?;
                    metrics::delivered();
                    return Ok(());
                }
                Err(DeliveryError::Gone(why)) => {
                    tracing::info!(%why, subscription = %subscription.id, "push subscription gone; removing it");
                    self.store
                        .delete_push_subscription(team, recipient, &subscription.id)
                        .await?;
                    metrics::failed();
                    return Ok(());
                }
                Err(DeliveryError::Permanent(why)) => {
                    tracing::warn!(%why, subscription = %subscription.id, "push refused; not retried");
                    metrics::failed();
                    return Ok(());
                }
                Err(DeliveryError::Retry(why)) if attempt < self.config.attempts => {
                    tracing::debug!(%why, attempt, "push failed; retrying");
                    metrics::retried();
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.config.max_backoff);
                }
                Err(DeliveryError::Retry(why)) => {
                    tracing::warn!(%why, attempts = attempt, subscription = %subscription.id, "push given up");
                    metrics::failed();
                }
            }
        }
        Ok(())
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

mod metrics {
    //! Notify counters on the default Prometheus registry.
    use prometheus::{IntCounterVec, Opts};
    use std::sync::LazyLock;

    static PUSHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
        let counter = IntCounterVec::new(
            Opts::new("confab_notify_pushes_total", "Push deliveries by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let _ = prometheus::default_registry().register(Box::new(counter.clone()));
        counter
    });

    pub fn delivered() {
        PUSHES.with_label_values(&["delivered"]).inc();
    }
    pub fn retried() {
        PUSHES.with_label_values(&["retried"]).inc();
    }
    pub fn failed() {
        PUSHES.with_label_values(&["failed"]).inc();
    }
    pub fn skipped_duplicates() {
        PUSHES.with_label_values(&["duplicate_skipped"]).inc();
    }
    pub fn backend_errors() {
        PUSHES.with_label_values(&["backend_error"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncates_at_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
