//! One sequencer per channel (DESIGN.md §4): a task that owns the channel's next `seq`,
//! so `seq`s are dense and strictly increasing without locks on the hot path.
//!
//! Sends queue to the channel's task; it takes every send waiting (up to a batch size),
//! drops retries of a known `client_msg_id`, numbers the rest, writes them in ONE atomic
//! durable store call, and only then answers and publishes them in `seq` order. A failed
//! write consumes no `seq`: nothing of the batch is visible and every sender gets an
//! error, so a `seq` is never skipped. An idle sequencer ends and is recreated on demand
//! from the store's `last_seq`.
//!
//! Across nodes, a sequencer writes only under the channel's lease (see
//! [`Store::claim_lease`]): claimed with its first batch, renewed once less than half
//! of it is left, released when the task ends. While another node holds it, sends fail
//! with `Unavailable` naming that node; when the store fences an append (the lease was
//! taken over meanwhile), the batch fails and the task ends.

use crate::hlc::{Hlc, format_ts};
use confab_proto::{ApiError, ChannelId, ErrorCode, Message, MessageId, TeamId, UserId};
use confab_store::{ChannelLease, LeaseClaim, NewMessage, Store, StoreError};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// A message to be numbered and stored.
#[derive(Debug)]
pub struct Draft {
    pub user: UserId,
    pub text: String,
    pub client_msg_id: String,
}

/// Receives every batch right after it became durable, in `seq` order, from within the
/// channel's sequencer: the next batch waits until this returns.
#[async_trait::async_trait]
pub trait CommitListener: Send + Sync + 'static {
    async fn committed(&self, team: &TeamId, messages: &[Message]);
}

/// Tuning of the sequencers.
#[derive(Clone, Debug)]
pub struct SequencerConfig {
    /// Most sends written in one store call.
    pub max_batch: usize,
    /// Queue depth per channel before senders wait.
    pub queue: usize,
    /// A channel's task ends after this long without sends.
    pub idle: Duration,
    /// This node's name in channel leases: unique per process, as a store handle's
    /// leases must not be renewed by another process.
    pub holder: String,
    /// How long a claimed channel lease lasts; renewed when less than half is left.
    pub lease_ttl: Duration,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            queue: 4096,
            idle: Duration::from_secs(60),
            holder: format!("node-{}", ulid::Ulid::new()),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// Why a send was not sequenced here.
#[derive(Clone, Debug)]
pub enum SequenceError {
    /// Another node holds the channel's lease until `until_ms` (unix ms): the send
    /// belongs there.
    HeldBy { holder: String, until_ms: u64 },
    /// It failed; nothing of it is stored.
    Failed(ApiError),
}

impl From<ApiError> for SequenceError {
    fn from(error: ApiError) -> Self {
        Self::Failed(error)
    }
}

impl From<SequenceError> for ApiError {
    fn from(error: SequenceError) -> Self {
        match error {
            SequenceError::Failed(e) => e,
            SequenceError::HeldBy { holder, .. } => ApiError::new(
                ErrorCode::Unavailable,
                format!("the channel is sequenced by {holder}; retry"),
            ),
        }
    }
}

type Reply = oneshot::Sender<Result<Message, SequenceError>>;
type Key = (TeamId, ChannelId);

struct Request {
    draft: Draft,
    reply: Reply,
}

/// Why a batch was not written.
struct BatchFailure {
    error: SequenceError,
    /// The channel's lease was taken over: this task must not write again.
    fenced: bool,
}

impl From<SequenceError> for BatchFailure {
    fn from(error: SequenceError) -> Self {
        Self {
            error,
            fenced: false,
        }
    }
}

impl From<ApiError> for BatchFailure {
    fn from(error: ApiError) -> Self {
        SequenceError::Failed(error).into()
    }
}

/// The sequencers of this node.
pub struct Sequencers {
    store: Arc<dyn Store>,
    clock: Arc<Hlc>,
    listener: Arc<dyn CommitListener>,
    config: SequencerConfig,
    channels: DashMap<Key, mpsc::Sender<Request>>,
    /// Each running sequencer holds a clone; `drain` waits until all are gone.
    running: parking_lot::Mutex<Option<mpsc::Sender<()>>>,
    all_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl std::fmt::Debug for Sequencers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencers")
            .field("active_channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl Sequencers {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<Hlc>,
        listener: Arc<dyn CommitListener>,
        config: SequencerConfig,
    ) -> Arc<Self> {
        let (done_tx, done_rx) = mpsc::channel(1);
        Arc::new(Self {
            store,
            clock,
            listener,
            config,
            channels: DashMap::new(),
            running: parking_lot::Mutex::new(Some(done_tx)),
            all_done: tokio::sync::Mutex::new(done_rx),
        })
    }

    /// Numbers, stores and publishes one message; returns it once durable. A draft whose
    /// `client_msg_id` was already stored in the channel returns the stored message.
    /// While another node holds the channel's lease: [`SequenceError::HeldBy`].
    pub async fn submit(
        self: &Arc<Self>,
        team: &TeamId,
        channel: &ChannelId,
        draft: Draft,
    ) -> Result<Message, SequenceError> {
        let key = (team.clone(), channel.clone());
        let (reply, answer) = oneshot::channel();
        let mut request = Request { draft, reply };
        loop {
            let sender = self.sender_for(&key)?;
            match sender.send(request).await {
                Ok(()) => break,
                // The task ended (idle) between lookup and send: forget it, start anew.
                Err(mpsc::error::SendError(returned)) => {
                    request = returned;
                    self.channels
                        .remove_if(&key, |_, current| current.same_channel(&sender));
                }
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(SequenceError::Failed(ApiError::new(
                ErrorCode::Unavailable,
                "the channel sequencer stopped; retry",
            )))
        })
    }

    fn sender_for(self: &Arc<Self>, key: &Key) -> Result<mpsc::Sender<Request>, ApiError> {
        if let Some(sender) = self.channels.get(key) {
            return Ok(sender.clone());
        }
        let Some(done) = self.running.lock().clone() else {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "the server is shutting down",
            ));
        };
        let entry = self.channels.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.config.queue);
            let this = Arc::clone(self);
            let key = key.clone();
            tokio::spawn(async move {
                this.run(key, rx).await;
                drop(done);
            });
            tx
        });
        Ok(entry.clone())
    }

    /// Stops taking sends and waits (at most `grace`) for every queued send to finish.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.running.lock().take();
        self.channels.clear();
        let mut done = self.all_done.lock().await;
        tokio::time::timeout(grace, done.recv()).await.is_ok()
    }

    async fn run(&self, key: Key, mut queue: mpsc::Receiver<Request>) {
        let (team, channel) = &key;
        // `None` until known: (re)read from the store, also after a failed write and
        // whenever the lease's epoch changed (another node may have written).
        let mut next_seq: Option<u64> = None;
        let mut lease: Option<ChannelLease> = None;
        // Another node's lease as last read: sends are turned away without asking the
        // store again until it runs out.
        let mut held: Option<(String, u64)> = None;
        let mut batch: Vec<Request> = Vec::with_capacity(self.config.max_batch);
        loop {
            let first = match tokio::time::timeout(self.config.idle, queue.recv()).await {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(_idle) => {
                    // Close first so that racing senders get their request back and
                    // retry with a new task, then answer whatever already got in.
                    queue.close();
                    self.channels
                        .remove_if(&key, |_, sender| sender.is_closed());
                    match queue.recv().await {
                        Some(request) => request,
                        None => break,
                    }
                }
            };
            batch.push(first);
            while batch.len() < self.config.max_batch {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let written = match self
                .current_lease(team, channel, &mut lease, &mut held, &mut next_seq)
                .await
            {
                Ok(current) => self.write_batch(&current, &mut next_seq, &mut batch).await,
                Err(error) => Err(error.into()),
            };
            let Err(BatchFailure { error, fenced }) = written else {
                continue;
            };
            match &error {
                SequenceError::HeldBy { holder, .. } => {
                    tracing::debug!(%team, %channel, %holder, "channel held by another node");
                }
                SequenceError::Failed(error) => {
                    tracing::warn!(%team, %channel, %error, "message batch not written");
                }
            }
            next_seq = None;
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(error.clone()));
            }
            if fenced {
                // Another node sequences the channel now. Refuse what is queued and
                // stop, so that the next send starts a task that claims anew.
                lease = None;
                queue.close();
                self.channels
                    .remove_if(&key, |_, sender| sender.is_closed());
                while let Some(request) = queue.recv().await {
                    let _ = request.reply.send(Err(error.clone()));
                }
                break;
            }
        }
        if let Some(lease) = lease
            && let Err(error) = self.store.release_lease(&lease).await
        {
            // It runs out by itself; another node just waits until then.
            tracing::debug!(%team, %channel, %error, "channel lease not released");
        }
    }

    /// The lease to write the next batch under: claimed when there is none, renewed
    /// when less than half of its ttl is left. Held by another node: `HeldBy`.
    async fn current_lease(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        lease: &mut Option<ChannelLease>,
        held: &mut Option<(String, u64)>,
        next_seq: &mut Option<u64>,
    ) -> Result<ChannelLease, SequenceError> {
        let half_ttl = u64::try_from(self.config.lease_ttl.as_millis() / 2).unwrap_or(u64::MAX);
        let now = unix_ms();
        if let Some(current) = lease.as_ref()
            && current.expires_at_ms.saturating_sub(now) > half_ttl
        {
            return Ok(current.clone());
        }
        if let Some((holder, until_ms)) = held.as_ref()
            && *until_ms > now
        {
            return Err(SequenceError::HeldBy {
                holder: holder.clone(),
                until_ms: *until_ms,
            });
        }
        let claim = self
            .store
            .claim_lease(team, channel, &self.config.holder, self.config.lease_ttl)
            .await
            .map_err(store_error)?;
        match claim {
            LeaseClaim::Granted(granted) => {
                if lease.as_ref().is_none_or(|old| old.epoch != granted.epoch) {
                    *next_seq = None;
                    tracing::info!(%team, %channel, epoch = granted.epoch, "took the channel's lease");
                }
                *held = None;
                *lease = Some(granted.clone());
                Ok(granted)
            }
            LeaseClaim::Held {
                holder,
                expires_at_ms,
            } => {
                *lease = None;
                *held = Some((holder.clone(), expires_at_ms));
                Err(SequenceError::HeldBy {
                    holder,
                    until_ms: expires_at_ms,
                })
            }
        }
    }

    async fn write_batch(
        &self,
        lease: &ChannelLease,
        next_seq: &mut Option<u64>,
        batch: &mut Vec<Request>,
    ) -> Result<(), BatchFailure> {
        let (team, channel) = (&lease.team, &lease.channel);
        let mut seq = match *next_seq {
            Some(seq) => seq,
            None => {
                self.store
                    .last_seq(team, channel)
                    .await
                    .map_err(store_error)?
                    + 1
            }
        };
        let mut fresh: Vec<NewMessage> = Vec::with_capacity(batch.len());
        // Where each request's answer comes from: a new message or an earlier one.
        let mut answers: Vec<Message> = Vec::with_capacity(batch.len());
        let mut in_batch: HashMap<&str, usize> = HashMap::new();
        for request in batch.iter() {
            let draft = &request.draft;
            if let Some(&index) = in_batch.get(draft.client_msg_id.as_str()) {
                answers.push(fresh[index].message.clone());
                continue;
            }
            if let Some(existing) = self
                .store
                .message_by_client_msg_id(team, channel, &draft.client_msg_id)
                .await
                .map_err(store_error)?
            {
                answers.push(existing);
                continue;
            }
            let message = Message {
                id: MessageId::generate(),
                channel: channel.clone(),
                user: draft.user.clone(),
                text: draft.text.clone(),
                seq,
                ts: format_ts(self.clock.now()),
                client_msg_id: draft.client_msg_id.clone(),
                thread_ts: None,
                edited_ts: None,
                deleted: false,
            };
            seq += 1;
            in_batch.insert(draft.client_msg_id.as_str(), fresh.len());
            answers.push(message.clone());
            fresh.push(NewMessage {
                team: team.clone(),
                message,
            });
        }
        if !fresh.is_empty() {
            self.store
                .append_messages(lease, &fresh)
                .await
                .map_err(|error| BatchFailure {
                    fenced: matches!(error, StoreError::Fenced(_)),
                    error: SequenceError::Failed(store_error(error)),
                })?;
            metrics::observe_batch(fresh.len());
            let messages: Vec<Message> = fresh.into_iter().map(|m| m.message).collect();
            self.listener.committed(team, &messages).await;
        }
        *next_seq = Some(seq);
        for (request, message) in batch.drain(..).zip(answers) {
            let _ = request.reply.send(Ok(message));
        }
        Ok(())
    }
}

/// How storage failures look to clients: nothing was acknowledged.
pub fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Conflict(conflict) => ApiError::new(
            ErrorCode::InvalidArgument,
            format!("{conflict} already exists"),
        ),
        StoreError::Unavailable(msg) => ApiError::new(
            ErrorCode::Unavailable,
            format!("storage unavailable: {msg}"),
        ),
        StoreError::Internal(msg) => {
            tracing::error!(%msg, "store internal error");
            ApiError::new(ErrorCode::Internal, "internal storage error")
        }
        StoreError::Fenced(msg) => ApiError::new(
            ErrorCode::Unavailable,
            format!("the channel moved to another node; retry ({msg})"),
        ),
    }
}

/// Now in unix milliseconds, the clock lease expiries are given in.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

mod metrics {
    //! Sequencer metrics on the default Prometheus registry.
    use prometheus::{Histogram, HistogramOpts};
    use std::sync::LazyLock;

    static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
        let histogram = Histogram::with_opts(
            HistogramOpts::new(
                "confab_sequencer_batch_messages",
                "Messages written per durable sequencer batch",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid histogram");
        let _ = prometheus::register(Box::new(histogram.clone()));
        histogram
    });

    pub fn observe_batch(size: usize) {
        BATCH_SIZE.observe(size as f64);
    }
}
