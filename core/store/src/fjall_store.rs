//! The embedded [`Store`] driver: one fjall database (a pure-Rust LSM tree) in one
//! directory, owned by one process (DESIGN.md §2).
//!
//! # Layout
//!
//! One keyspace per query, mirroring the Cassandra tables of DESIGN.md §3; every key
//! starts with the team id, except the domain lookup and the time-ordered index of push
//! delivery claims (`fjall_store/key.rs` has the byte encoding). Values are JSON
//! records, ids, or big-endian integers.
//!
//! # Writes: one committer, group commit
//!
//! Every write is a `WriteOp` sent to a single committer thread. The committer takes
//! everything queued, applies each op as its own atomic fjall batch, then makes the whole
//! group durable with ONE `persist(SyncData)` and only then answers every caller. Many
//! channel sequencers appending at once therefore share fsyncs instead of queueing
//! behind each other's.
//!
//! Being the only writer also makes the committer the serialization point for
//! check-then-write: uniqueness of domains, emails, channel names and DM keys, channel
//! lease claims, the lease epoch an append is fenced by, the forward-only read marker,
//! push delivery claims and whether a deleted subscription existed, are decided there
//! against the live state, including ops earlier in the same group, so callers need no
//! lock of their own. Expired delivery claims are swept there too, a few per claim.
//!
//! # Leases
//!
//! A data directory has one owner process at a time, so a lease still held when the
//! store opens belongs to a process that is gone (it crashed): opening releases them,
//! keeping their epochs, and a restarted node takes its channels back at once.
//!
//! # Reads: only what is durable
//!
//! fjall makes a batch visible as soon as it is in the memtable, before our fsync. To
//! never show a message that a crash could still take back (a client would have seen a
//! `seq` that then gets reused), readers use a snapshot the committer publishes right
//! after each group's fsync. Since the committer is the only writer, that snapshot holds
//! exactly the durable state. A caller whose write returned `Ok` reads it back, because
//! the snapshot is published before callers are answered.
//!
//! Reads run on tokio's blocking pool: an LSM lookup that misses the block cache does
//! synchronous disk I/O, and parking a runtime worker on it would stall every connection
//! scheduled there. The hand-off costs microseconds, little next to a network round trip.
//! (`block_in_place` would be cheaper but panics on current-thread runtimes.)

mod key;

use crate::record::{check_holder, check_in_lease, fenced, lease_expiry, unix_ms_now};
use crate::{
    ChannelLease, ChannelRecord, Conflict, LeaseClaim, NewMessage, PushSubscription, Store,
    StoreError, UserRecord,
};
use async_trait::async_trait;
use confab_proto::{ChannelId, Message, Team, TeamId, UserId};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Slice, Snapshot};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// Most write requests one group commits before it syncs, so that the first caller of a
/// long queue is not kept waiting for everyone behind it.
const MAX_GROUP: usize = 1024;

/// Where and how durably the embedded store keeps its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FjallStoreOptions {
    /// The data directory; created if missing. One process owns it at a time.
    pub dir: PathBuf,
    pub sync: SyncPolicy,
}

/// When an acknowledged write reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync (SyncData) once per group commit before acknowledging
    Fsync,
    /// leave flushing to the OS (tests/benchmarks only; a power loss can lose acked writes)
    Os,
}

/// Counters of the committer since the store was opened; cheap to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Write requests (store calls) the committer answered.
    pub requests: u64,
    /// Groups that committed at least one batch; each ends with one persist.
    pub groups: u64,
    /// fsyncs issued (one per group under [`SyncPolicy::Fsync`], plus one per flush).
    pub syncs: u64,
}

/// The embedded store. See the module documentation.
pub struct FjallStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// `None` only while dropping.
    commands: Option<mpsc::Sender<Command>>,
    committer: Option<JoinHandle<()>>,
}

/// What the async front, the blocking readers and the committer share.
struct Shared {
    db: Database,
    ks: Keyspaces,
    /// The state as of the last durable group; all reads go through it.
    durable: RwLock<Arc<Snapshot>>,
    /// Set by `flush` or a failed persist: new writes are refused without queueing.
    closed: AtomicBool,
    requests: AtomicU64,
    groups: AtomicU64,
    syncs: AtomicU64,
}

/// The keyspaces, one per query (DESIGN.md §3).
struct Keyspaces {
    teams: Keyspace,
    team_domains: Keyspace,
    users: Keyspace,
    user_emails: Keyspace,
    channels: Keyspace,
    channel_names: Keyspace,
    public_channels: Keyspace,
    dm_keys: Keyspace,
    channel_members: Keyspace,
    member_channels: Keyspace,
    channel_leases: Keyspace,
    messages: Keyspace,
    message_dedup: Keyspace,
    read_state: Keyspace,
    push_subscriptions: Keyspace,
    push_deliveries: Keyspace,
    push_delivery_expiry: Keyspace,
}

/// Names a keyspace inside a [`WriteOp`], which is built before it reaches the thread
/// that owns the handles.
#[derive(Clone, Copy, Debug)]
enum Ks {
    Teams,
    TeamDomains,
    Users,
    UserEmails,
    Channels,
    ChannelNames,
    PublicChannels,
    DmKeys,
    ChannelMembers,
    MemberChannels,
    ChannelLeases,
    Messages,
    MessageDedup,
    ReadState,
    PushSubscriptions,
    PushDeliveries,
    PushDeliveryExpiry,
}

impl Keyspaces {
    fn open(db: &Database) -> fjall::Result<Self> {
        let open = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Self {
            teams: open("teams")?,
            team_domains: open("team_domains")?,
            users: open("users")?,
            user_emails: open("user_emails")?,
            channels: open("channels")?,
            channel_names: open("channel_names")?,
            public_channels: open("public_channels")?,
            dm_keys: open("dm_keys")?,
            channel_members: open("channel_members")?,
            member_channels: open("member_channels")?,
            channel_leases: open("channel_leases")?,
            messages: open("messages")?,
            message_dedup: open("message_dedup")?,
            read_state: open("read_state")?,
            push_subscriptions: open("push_subscriptions")?,
            push_deliveries: open("push_deliveries")?,
            push_delivery_expiry: open("push_delivery_expiry")?,
        })
    }

    fn get(&self, ks: Ks) -> &Keyspace {
        match ks {
            Ks::Teams => &self.teams,
            Ks::TeamDomains => &self.team_domains,
            Ks::Users => &self.users,
            Ks::UserEmails => &self.user_emails,
            Ks::Channels => &self.channels,
            Ks::ChannelNames => &self.channel_names,
            Ks::PublicChannels => &self.public_channels,
            Ks::DmKeys => &self.dm_keys,
            Ks::ChannelMembers => &self.channel_members,
            Ks::MemberChannels => &self.member_channels,
            Ks::ChannelLeases => &self.channel_leases,
            Ks::Messages => &self.messages,
            Ks::MessageDedup => &self.message_dedup,
            Ks::ReadState => &self.read_state,
            Ks::PushSubscriptions => &self.push_subscriptions,
            Ks::PushDeliveries => &self.push_deliveries,
            Ks::PushDeliveryExpiry => &self.push_delivery_expiry,
        }
    }
}

/// One row change. Keys and values are encoded by the caller, off the committer thread,
/// which is the one serial stage of every write.
struct Mutation {
    ks: Ks,
    key: Vec<u8>,
    /// `None` removes the row.
    value: Option<Vec<u8>>,
}

/// A write request, applied by the committer as one atomic batch.
enum WriteOp {
    /// Rows written as they are.
    Put(Vec<Mutation>),
    /// Rows written only if `unique` is absent; otherwise `conflict`, and nothing written.
    PutUnique {
        unique: (Ks, Vec<u8>),
        conflict: Conflict,
        rows: Vec<Mutation>,
    },
    /// A DM's rows, written only if its `dm_keys` row is absent; otherwise the existing
    /// channel is the answer.
    PutDm {
        team: TeamId,
        dm_key: Vec<u8>,
        rows: Vec<Mutation>,
    },
    /// A lease claim, decided against the channel's current lease (`key`). The expiry
    /// is counted from when the committer decides, not from when the caller asked.
    ClaimLease {
        team: TeamId,
        channel: ChannelId,
        key: Vec<u8>,
        holder: String,
        ttl: Duration,
    },
    /// Ends the lease at `key` if it still is `holder`'s at `epoch`.
    ReleaseLease {
        key: Vec<u8>,
        holder: String,
        epoch: u64,
    },
    /// Message rows, written only if the channel's lease (at `lease_key`) is still at
    /// the epoch of `lease`; otherwise `Fenced`, and nothing written.
    Append {
        lease: ChannelLease,
        lease_key: Vec<u8>,
        rows: Vec<Mutation>,
    },
    /// A read marker, written only if it moves forward.
    MarkRead { key: Vec<u8>, seq: u64 },
    /// Removes a row; answers whether it was there.
    DeleteExisting { ks: Ks, key: Vec<u8> },
    /// A push delivery claim of `delivery` in `team`, granted unless an earlier claim
    /// of it is still live; the expiry is counted from when the committer decides.
    ClaimDelivery {
        team: TeamId,
        delivery: String,
        ttl: Duration,
    },
}

/// What a successful write request produced.
enum Outcome {
    Written,
    /// `PutDm` found this channel (its JSON record) already there.
    ExistingDm(Slice),
    /// How `ClaimLease` was decided.
    Claimed(LeaseClaim),
    /// A yes or no decided against the live state: whether the row was there
    /// (`DeleteExisting`), whether the claim was granted (`ClaimDelivery`).
    Answer(bool),
}

/// A channel's lease as stored in `channel_leases`.
#[derive(serde::Serialize, serde::Deserialize)]
struct LeaseRow {
    /// `None` once released: whoever claims next gets the next epoch, even the holder
    /// that released it, so that appends under the released lease stay fenced.
    holder: Option<String>,
    epoch: u64,
    expires_at_ms: u64,
}

enum Command {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Outcome, StoreError>>,
    },
    /// Persist, answer, and stop: later writes are refused.
    Flush {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl FjallStore {
    /// Opens (or creates) the store in `options.dir` and starts its committer thread.
    /// Fails with `Unavailable` if another process (or another `FjallStore`) has the
    /// directory open.
    pub fn open(options: FjallStoreOptions) -> Result<FjallStore, StoreError> {
        std::fs::create_dir_all(&options.dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", options.dir.display()))
        })?;
        let db = Database::builder(&options.dir)
            // We persist once per group ourselves; without this fjall would also write
            // every batch through to the OS on its own.
            .manual_journal_persist(true);
        Self::start(options.dir, db.open().map_err(engine_error)?, options.sync)
    }

    /// Opens a store in a fresh directory under the system temp dir that is deleted
    /// when the store is dropped. For tests and benchmarks of code built on [`Store`].
    pub fn open_temporary(sync: SyncPolicy) -> Result<FjallStore, StoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "confab-store-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // `create_dir`, not `create_dir_all`: never adopt somebody else's directory.
        std::fs::create_dir(&dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let db = Database::builder(&dir)
            .manual_journal_persist(true)
            .temporary(true);
        match db.open() {
            Ok(db) => Self::start(dir, db, sync),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(engine_error(e))
            }
        }
    }

    fn start(dir: PathBuf, db: Database, sync: SyncPolicy) -> Result<FjallStore, StoreError> {
        let ks = Keyspaces::open(&db).map_err(engine_error)?;
        release_leases_of_earlier_processes(&db, &ks)?;
        // Whatever recovery found was on disk already, so it is durable.
        let durable = RwLock::new(Arc::new(db.snapshot()));
        let shared = Arc::new(Shared {
            db,
            ks,
            durable,
            closed: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        });
        let (commands, queue) = mpsc::channel();
        let committer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("confab-store-commit".into())
                .spawn(move || run_committer(&shared, sync, &queue))
                .map_err(|e| StoreError::Unavailable(format!("cannot start committer: {e}")))?
        };
        Ok(FjallStore {
            dir,
            shared,
            commands: Some(commands),
            committer: Some(committer),
        })
    }

    /// Counters of the committer, e.g. to check that concurrent writes share fsyncs.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            groups: self.shared.groups.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hands a write to the committer and waits until it is durable (or refused).
    async fn submit(&self, op: WriteOp) -> Result<Outcome, StoreError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .as_ref()
            .ok_or_else(closed)?
            .send(Command::Write { op, reply })
            .map_err(|_| closed())?;
        // A dropped reply means the committer stopped before reaching this request
        // (flush, or a panic): nothing of it was acknowledged.
        answer.await.map_err(|_| closed())?
    }

    /// Runs a read against the durable snapshot on the blocking pool (see module docs).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Snapshot, &Keyspaces) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let snapshot = Arc::clone(
                &shared
                    .durable
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            f(&snapshot, &shared.ks)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store read task failed: {e}")))?
    }
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("dir", &self.dir)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .field("stats", &self.commit_stats())
            .finish_non_exhaustive()
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        // Closing the queue stops the committer once it has answered what is queued;
        // joining it releases its database handle, so the directory can be reopened as
        // soon as this returns.
        drop(self.commands.take());
        if let Some(committer) = self.committer.take()
            && committer.join().is_err()
        {
            tracing::error!("store committer thread panicked");
        }
    }
}

#[async_trait]
impl Store for FjallStore {
    // ---- teams ----

    async fn create_team(&self, team: &Team, owner: &UserRecord) -> Result<(), StoreError> {
        if owner.user.team != team.id {
            return Err(StoreError::Internal(format!(
                "owner {} belongs to team {}, not {}",
                owner.user.id, owner.user.team, team.id
            )));
        }
        let domain = key::team_domain(&team.domain);
        let mut rows = vec![
            put(Ks::Teams, key::team(&team.id), json(team)?)?,
            put(Ks::TeamDomains, domain.clone(), team.id.as_str().into())?,
        ];
        rows.extend(user_rows(owner)?);
        self.submit(WriteOp::PutUnique {
            unique: (Ks::TeamDomains, domain),
            conflict: Conflict::TeamDomain,
            rows,
        })
        .await
        .map(drop)
    }

    async fn team(&self, team: &TeamId) -> Result<Option<Team>, StoreError> {
        let key = key::team(team);
        self.read(move |snap, ks| get_json(snap, &ks.teams, &key))
            .await
    }

    async fn team_by_domain(&self, domain: &str) -> Result<Option<Team>, StoreError> {
        let key = key::team_domain(domain);
        self.read(move |snap, ks| {
            let Some(id) = get_string(snap, &ks.team_domains, &key)? else {
                return Ok(None);
            };
            get_json(snap, &ks.teams, &key::team(&TeamId::new(id)))
        })
        .await
    }

    // ---- users ----

    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let email = key::user_email(&user.user.team, &user.user.email);
        self.submit(WriteOp::PutUnique {
            unique: (Ks::UserEmails, email),
            conflict: Conflict::UserEmail,
            rows: user_rows(user)?,
        })
        .await
        .map(drop)
    }

    async fn user(&self, team: &TeamId, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let key = key::user(team, user);
        self.read(move |snap, ks| get_json(snap, &ks.users, &key))
            .await
    }

    async fn user_by_email(
        &self,
        team: &TeamId,
        email: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let team = team.clone();
        let key = key::user_email(&team, email);
        self.read(move |snap, ks| {
            let Some(id) = get_string(snap, &ks.user_emails, &key)? else {
                return Ok(None);
            };
            get_json(snap, &ks.users, &key::user(&team, &UserId::new(id)))
        })
        .await
    }

    async fn users(&self, team: &TeamId, ids: &[UserId]) -> Result<Vec<UserRecord>, StoreError> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| key::user(team, id)).collect();
        self.read(move |snap, ks| {
            let mut users = Vec::with_capacity(keys.len());
            for key in &keys {
                users.extend(get_json(snap, &ks.users, key)?);
            }
            Ok(users)
        })
        .await
    }

    // ---- channels ----

    async fn create_channel(
        &self,
        channel: &ChannelRecord,
        members: &[UserId],
    ) -> Result<(), StoreError> {
        let kind = channel.channel.kind;
        if kind.is_direct() {
            return Err(StoreError::Internal(format!(
                "{} is a DM: create it with get_or_create_dm",
                channel.channel.id
            )));
        }
        let team = &channel.team;
        let id = &channel.channel.id;
        let name = key::channel_name(team, &channel.channel.name);
        let mut rows = vec![
            put(Ks::Channels, key::channel(team, id), json(channel)?)?,
            put(Ks::ChannelNames, name.clone(), id.as_str().into())?,
        ];
        if kind.is_listed() {
            rows.push(put(Ks::PublicChannels, name.clone(), id.as_str().into())?);
        }
        rows.extend(member_rows(team, id, members, true)?);
        self.submit(WriteOp::PutUnique {
            unique: (Ks::ChannelNames, name),
            conflict: Conflict::ChannelName,
            rows,
        })
        .await
        .map(drop)
    }

    async fn get_or_create_dm(
        &self,
        channel: &ChannelRecord,
        members: &[UserId],
    ) -> Result<ChannelRecord, StoreError> {
        let Some(dm_key) = channel.dm_key.as_deref() else {
            return Err(StoreError::Internal(format!(
                "{} has no dm_key: create it with create_channel",
                channel.channel.id
            )));
        };
        let team = &channel.team;
        let id = &channel.channel.id;
        let dm_key = key::dm_key(team, dm_key);
        let mut rows = vec![
            put(Ks::Channels, key::channel(team, id), json(channel)?)?,
            put(Ks::DmKeys, dm_key.clone(), id.as_str().into())?,
        ];
        rows.extend(member_rows(team, id, members, true)?);
        let op = WriteOp::PutDm {
            team: team.clone(),
            dm_key,
            rows,
        };
        match self.submit(op).await? {
            Outcome::Written => Ok(channel.clone()),
            Outcome::ExistingDm(record) => decode(&record),
            Outcome::Claimed(_) | Outcome::Answer(_) => Err(StoreError::Internal(
                "DM creation answered with something else".into(),
            )),
        }
    }

    async fn channel(
        &self,
        team: &TeamId,
        channel: &ChannelId,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let key = key::channel(team, channel);
        self.read(move |snap, ks| get_json(snap, &ks.channels, &key))
            .await
    }

    async fn public_channels(&self, team: &TeamId) -> Result<Vec<ChannelRecord>, StoreError> {
        let team = team.clone();
        self.read(move |snap, ks| {
            let mut channels = Vec::new();
            for row in snap.prefix(&ks.public_channels, key::team_prefix(&team)) {
                let id = ChannelId::new(utf8(&row.value().map_err(engine_error)?)?);
                // The name index and the record are written in one batch; a missing
                // record would be a bug, not a race, so skipping it only hides nothing.
                channels.extend(get_json(snap, &ks.channels, &key::channel(&team, &id))?);
            }
            Ok(channels)
        })
        .await
    }

    // ---- channel members ----

    async fn add_members(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        users: &[UserId],
    ) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let rows = member_rows(team, channel, users, true)?;
        self.submit(WriteOp::Put(rows)).await.map(drop)
    }

    async fn is_member(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        user: &UserId,
    ) -> Result<bool, StoreError> {
        let key = key::pair(team, channel.as_str(), user.as_str());
        self.read(move |snap, ks| {
            snap.contains_key(&ks.channel_members, &key)
                .map_err(engine_error)
        })
        .await
    }

    async fn channel_members(
        &self,
        team: &TeamId,
        channel: &ChannelId,
    ) -> Result<Vec<UserId>, StoreError> {
        let prefix = key::pair_prefix(team, channel.as_str());
        self.read(move |snap, ks| {
            scan_second(snap, &ks.channel_members, &prefix)
                .map(|ids| ids.into_iter().map(UserId::new).collect())
        })
        .await
    }

    async fn member_channels(
        &self,
        team: &TeamId,
        user: &UserId,
    ) -> Result<Vec<ChannelId>, StoreError> {
        let prefix = key::pair_prefix(team, user.as_str());
        self.read(move |snap, ks| {
            scan_second(snap, &ks.member_channels, &prefix)
                .map(|ids| ids.into_iter().map(ChannelId::new).collect())
        })
        .await
    }

    async fn remove_member(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        user: &UserId,
    ) -> Result<(), StoreError> {
        let rows = member_rows(team, channel, std::slice::from_ref(user), false)?;
        self.submit(WriteOp::Put(rows)).await.map(drop)
    }

    // ---- channel leases ----

    async fn claim_lease(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseClaim, StoreError> {
        check_holder(holder)?;
        let key = key::lease(team, channel);
        check_key(&key)?;
        let op = WriteOp::ClaimLease {
            team: team.clone(),
            channel: channel.clone(),
            key,
            holder: holder.to_owned(),
            ttl,
        };
        match self.submit(op).await? {
            Outcome::Claimed(claim) => Ok(claim),
            _ => Err(StoreError::Internal(
                "lease claim answered without a claim".into(),
            )),
        }
    }

    async fn release_lease(&self, lease: &ChannelLease) -> Result<(), StoreError> {
        let key = key::lease(&lease.team, &lease.channel);
        check_key(&key)?;
        let op = WriteOp::ReleaseLease {
            key,
            holder: lease.holder.clone(),
            epoch: lease.epoch,
        };
        self.submit(op).await.map(drop)
    }

    // ---- messages ----

    async fn append_messages(
        &self,
        lease: &ChannelLease,
        messages: &[NewMessage],
    ) -> Result<(), StoreError> {
        check_in_lease(lease, messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let lease_key = key::lease(&lease.team, &lease.channel);
        check_key(&lease_key)?;
        let mut rows = Vec::with_capacity(2 * messages.len());
        for NewMessage { team, message } in messages {
            let channel = &message.channel;
            rows.push(put(
                Ks::Messages,
                key::message(team, channel, message.seq),
                json(message)?,
            )?);
            rows.push(put(
                Ks::MessageDedup,
                key::dedup(team, channel, &message.client_msg_id),
                message.seq.to_be_bytes().to_vec(),
            )?);
        }
        let op = WriteOp::Append {
            lease: lease.clone(),
            lease_key,
            rows,
        };
        self.submit(op).await.map(drop)
    }

    async fn last_seq(&self, team: &TeamId, channel: &ChannelId) -> Result<u64, StoreError> {
        let prefix = key::message_prefix(team, channel);
        self.read(move |snap, ks| {
            let Some(row) = snap.prefix(&ks.messages, &prefix).next_back() else {
                return Ok(0);
            };
            let key = row.key().map_err(engine_error)?;
            key::message_seq(&key).ok_or_else(|| corrupt("message key"))
        })
        .await
    }

    async fn message_by_client_msg_id(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        client_msg_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let (team, channel) = (team.clone(), channel.clone());
        let key = key::dedup(&team, &channel, client_msg_id);
        self.read(move |snap, ks| {
            let Some(seq) = snap.get(&ks.message_dedup, &key).map_err(engine_error)? else {
                return Ok(None);
            };
            let seq = be_u64(&seq)?;
            get_json(snap, &ks.messages, &key::message(&team, &channel, seq))
        })
        .await
    }

    async fn history(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        // One reverse scan: keys order by (bucket, seq) = seq order, so it walks down
        // through bucket boundaries by itself.
        let lower = Bound::Included(key::message_prefix(team, channel));
        let upper = match before {
            Some(before) => Bound::Excluded(key::message(team, channel, before)),
            None => Bound::Included(key::message(team, channel, u64::MAX)),
        };
        self.read(move |snap, ks| {
            let rows = snap.range(&ks.messages, (lower, upper)).rev();
            collect_messages(rows, limit)
        })
        .await
    }

    async fn messages_after(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let lower = Bound::Excluded(key::message(team, channel, after));
        let upper = Bound::Included(key::message(team, channel, u64::MAX));
        self.read(move |snap, ks| {
            let rows = snap.range(&ks.messages, (lower, upper));
            collect_messages(rows, limit)
        })
        .await
    }

    // ---- read state ----

    async fn mark_read(
        &self,
        team: &TeamId,
        user: &UserId,
        channel: &ChannelId,
        seq: u64,
    ) -> Result<(), StoreError> {
        let key = key::pair(team, user.as_str(), channel.as_str());
        check_key(&key)?;
        self.submit(WriteOp::MarkRead { key, seq }).await.map(drop)
    }

    async fn read_markers(
        &self,
        team: &TeamId,
        user: &UserId,
    ) -> Result<Vec<(ChannelId, u64)>, StoreError> {
        let prefix = key::pair_prefix(team, user.as_str());
        self.read(move |snap, ks| {
            let mut markers = Vec::new();
            for row in snap.prefix(&ks.read_state, &prefix) {
                let (key, value) = row.into_inner().map_err(engine_error)?;
                let channel = key::pair_second(&key).ok_or_else(|| corrupt("read_state key"))?;
                markers.push((ChannelId::new(channel), be_u64(&value)?));
            }
            Ok(markers)
        })
        .await
    }

    // ---- push subscriptions ----

    async fn create_push_subscription(&self, sub: &PushSubscription) -> Result<(), StoreError> {
        let key = key::push_subscription(&sub.team, &sub.user, &sub.id);
        let row = put(Ks::PushSubscriptions, key, json(sub)?)?;
        self.submit(WriteOp::Put(vec![row])).await.map(drop)
    }

    async fn push_subscriptions(
        &self,
        team: &TeamId,
        user: &UserId,
    ) -> Result<Vec<PushSubscription>, StoreError> {
        let prefix = key::pair_prefix(team, user.as_str());
        self.read(move |snap, ks| {
            snap.prefix(&ks.push_subscriptions, &prefix)
                .map(|row| decode(&row.value().map_err(engine_error)?))
                .collect()
        })
        .await
    }

    async fn delete_push_subscription(
        &self,
        team: &TeamId,
        user: &UserId,
        id: &str,
    ) -> Result<bool, StoreError> {
        let key = key::push_subscription(team, user, id);
        check_key(&key)?;
        let op = WriteOp::DeleteExisting {
            ks: Ks::PushSubscriptions,
            key,
        };
        answer(self.submit(op).await?)
    }

    async fn claim_push_delivery(
        &self,
        team: &TeamId,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        check_key(&key::push_delivery(team, key))?;
        let op = WriteOp::ClaimDelivery {
            team: team.clone(),
            delivery: key.to_owned(),
            ttl,
        };
        answer(self.submit(op).await?)
    }

    async fn push_delivered(&self, team: &TeamId, key: &str) -> Result<bool, StoreError> {
        let row = key::push_delivery(team, key);
        check_key(&row)?;
        self.read(move |snap, ks| {
            match snap.get(&ks.push_deliveries, &row).map_err(engine_error)? {
                Some(until) => Ok(be_u64(&until)? >= unix_ms_now()),
                None => Ok(false),
            }
        })
        .await
    }

    // ---- lifecycle ----

    async fn flush(&self) -> Result<(), StoreError> {
        self.shared.closed.store(true, Ordering::Release);
        let (reply, answer) = oneshot::channel();
        let queued = self
            .commands
            .as_ref()
            .is_some_and(|commands| commands.send(Command::Flush { reply }).is_ok());
        if queued && let Ok(result) = answer.await {
            return result;
        }
        // An earlier flush stopped the committer after it persisted everything; persist
        // again anyway so that a failed engine still reports its failure.
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.db.persist(PersistMode::SyncAll))
            .await
            .map_err(|e| StoreError::Internal(format!("store flush task failed: {e}")))?
            .map_err(engine_error)
    }
}

/// Releases every lease still held, keeping its epoch. The directory has one owner
/// process at a time (fjall's lock), so such a lease belongs to a process that is gone:
/// a restarted node sequences its channels at once instead of waiting for the leases
/// of its previous life to run out, and appends under them stay fenced.
fn release_leases_of_earlier_processes(db: &Database, ks: &Keyspaces) -> Result<(), StoreError> {
    let mut batch = db.batch().durability(None);
    let mut released = 0usize;
    for row in ks.channel_leases.iter() {
        let (key, value) = row.into_inner().map_err(engine_error)?;
        let mut lease: LeaseRow = decode(&value)?;
        if lease.holder.take().is_some() {
            lease.expires_at_ms = 0;
            batch.insert(&ks.channel_leases, key, json(&lease)?);
            released += 1;
        }
    }
    if released > 0 {
        batch.commit().map_err(engine_error)?;
        db.persist(PersistMode::SyncData).map_err(engine_error)?;
        tracing::info!(released, "released channel leases of an earlier process");
    }
    Ok(())
}

// ---- the committer ----

/// Loops over groups until the queue closes (the store is dropped), a flush arrives or
/// a persist fails.
fn run_committer(shared: &Shared, sync: SyncPolicy, queue: &mpsc::Receiver<Command>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        if commit_group(shared, sync, group) {
            // Dropping the queue on return answers whatever is still in it with a
            // closed reply channel, i.e. `Unavailable`.
            return;
        }
    }
}

/// Applies each request of the group as its own batch, persists once, publishes the
/// durable snapshot, then answers. Returns whether to stop: after a flush, or after a
/// failed persist, which leaves fjall poisoned (and rows in its memtables that must
/// never be reported as written).
fn commit_group(shared: &Shared, sync: SyncPolicy, group: Vec<Command>) -> bool {
    let mut answers = Vec::with_capacity(group.len());
    let mut flushes = Vec::new();
    let mut committed = 0usize;
    for command in group {
        match command {
            Command::Write { op, reply } => {
                // Queue order is the order writes were refused in: whatever follows a
                // flush is "later" and must fail.
                let result = if flushes.is_empty() {
                    apply(shared, op, &mut committed)
                } else {
                    Err(closed())
                };
                answers.push((reply, result));
            }
            Command::Flush { reply } => flushes.push(reply),
        }
    }

    let mode = if !flushes.is_empty() {
        // Shutdown is rare: also sync file metadata.
        Some(PersistMode::SyncAll)
    } else if committed == 0 {
        None
    } else {
        Some(match sync {
            SyncPolicy::Fsync => PersistMode::SyncData,
            // Still hand the buffered journal to the OS, so a process crash loses nothing.
            SyncPolicy::Os => PersistMode::Buffer,
        })
    };
    let persisted = match mode {
        None => Ok(()),
        Some(mode) => {
            let result = shared.db.persist(mode);
            if mode != PersistMode::Buffer {
                shared.syncs.fetch_add(1, Ordering::Relaxed);
            }
            result
        }
    };

    match &persisted {
        Ok(()) => {
            if committed > 0 {
                let snapshot = Arc::new(shared.db.snapshot());
                *shared
                    .durable
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "store persist failed; refusing further writes");
            shared.closed.store(true, Ordering::Release);
        }
    }
    if committed > 0 {
        shared.groups.fetch_add(1, Ordering::Relaxed);
    }
    shared
        .requests
        .fetch_add(answers.len() as u64, Ordering::Relaxed);

    for (reply, result) in answers {
        let result = match (&persisted, result) {
            (Err(e), Ok(_)) => Err(StoreError::Unavailable(format!("persist failed: {e}"))),
            (_, result) => result,
        };
        // The caller may have given up waiting; its write stands regardless.
        let _ = reply.send(result);
    }
    let stop = !flushes.is_empty() || persisted.is_err();
    for reply in flushes {
        let _ = reply.send(
            persisted
                .as_ref()
                .map_err(|e| StoreError::Unavailable(format!("persist failed: {e}")))
                .copied(),
        );
    }
    stop
}

/// Checks the op's condition against the live state (which includes earlier requests of
/// this group) and commits its batch. Nothing of a failed request is written.
fn apply(shared: &Shared, op: WriteOp, committed: &mut usize) -> Result<Outcome, StoreError> {
    let ks = &shared.ks;
    let (rows, outcome) = match op {
        WriteOp::Put(rows) => (rows, Outcome::Written),
        WriteOp::PutUnique {
            unique: (unique_ks, unique_key),
            conflict,
            rows,
        } => {
            if ks
                .get(unique_ks)
                .contains_key(&unique_key)
                .map_err(engine_error)?
            {
                return Err(StoreError::Conflict(conflict));
            }
            (rows, Outcome::Written)
        }
        WriteOp::PutDm { team, dm_key, rows } => {
            if let Some(id) = ks.dm_keys.get(&dm_key).map_err(engine_error)? {
                let id = ChannelId::new(utf8(&id)?);
                let record = ks
                    .channels
                    .get(key::channel(&team, &id))
                    .map_err(engine_error)?
                    .ok_or_else(|| corrupt("DM without channel record"))?;
                return Ok(Outcome::ExistingDm(record));
            }
            (rows, Outcome::Written)
        }
        WriteOp::ClaimLease {
            team,
            channel,
            key,
            holder,
            ttl,
        } => {
            let now = unix_ms_now();
            let current = lease_row(ks, &key)?;
            let epoch = match &current {
                Some(row) if row.holder.as_deref() == Some(holder.as_str()) => row.epoch,
                Some(LeaseRow {
                    holder: Some(other),
                    expires_at_ms,
                    ..
                }) if *expires_at_ms >= now => {
                    return Ok(Outcome::Claimed(LeaseClaim::Held {
                        holder: other.clone(),
                        expires_at_ms: *expires_at_ms,
                    }));
                }
                Some(row) => row.epoch + 1,
                None => 1,
            };
            let expires_at_ms = lease_expiry(now, ttl);
            let row = LeaseRow {
                holder: Some(holder.clone()),
                epoch,
                expires_at_ms,
            };
            let lease = ChannelLease {
                team,
                channel,
                holder,
                epoch,
                expires_at_ms,
            };
            (
                vec![Mutation {
                    ks: Ks::ChannelLeases,
                    key,
                    value: Some(json(&row)?),
                }],
                Outcome::Claimed(LeaseClaim::Granted(lease)),
            )
        }
        WriteOp::ReleaseLease { key, holder, epoch } => {
            match lease_row(ks, &key)? {
                Some(row) if row.epoch == epoch && row.holder.as_deref() == Some(&holder) => {}
                _ => return Ok(Outcome::Written),
            }
            let row = LeaseRow {
                holder: None,
                epoch,
                expires_at_ms: 0,
            };
            let row = Mutation {
                ks: Ks::ChannelLeases,
                key,
                value: Some(json(&row)?),
            };
            (vec![row], Outcome::Written)
        }
        WriteOp::Append {
            lease,
            lease_key,
            rows,
        } => {
            let current = lease_row(ks, &lease_key)?.map_or(0, |row| row.epoch);
            if current != lease.epoch {
                return Err(fenced(&lease, current));
            }
            (rows, Outcome::Written)
        }
        WriteOp::MarkRead { key, seq } => {
            if let Some(current) = ks.read_state.get(&key).map_err(engine_error)?
                && be_u64(&current)? >= seq
            {
                return Ok(Outcome::Written);
            }
            let row = Mutation {
                ks: Ks::ReadState,
                key,
                value: Some(seq.to_be_bytes().to_vec()),
            };
            (vec![row], Outcome::Written)
        }
        WriteOp::DeleteExisting { ks: target, key } => {
            if !ks.get(target).contains_key(&key).map_err(engine_error)? {
                return Ok(Outcome::Answer(false));
            }
            let row = Mutation {
                ks: target,
                key,
                value: None,
            };
            (vec![row], Outcome::Answer(true))
        }
        WriteOp::ClaimDelivery {
            team,
            delivery,
            ttl,
        } => {
            let now = unix_ms_now();
            let key = key::push_delivery(&team, &delivery);
            if let Some(until) = ks.push_deliveries.get(&key).map_err(engine_error)?
                && be_u64(&until)? >= now
            {
                return Ok(Outcome::Answer(false));
            }
            let expires_at_ms = lease_expiry(now, ttl);
            // Sweeping first, so that its removals never follow this claim's rows.
            let mut rows = sweep_deliveries(ks, now, &key)?;
            rows.push(Mutation {
                ks: Ks::PushDeliveries,
                key,
                value: Some(expires_at_ms.to_be_bytes().to_vec()),
            });
            rows.push(Mutation {
                ks: Ks::PushDeliveryExpiry,
                key: key::push_delivery_expiry(expires_at_ms, &team, &delivery),
                value: Some(Vec::new()),
            });
            (rows, Outcome::Answer(true))
        }
    };

    let mut batch = shared.db.batch().durability(None);
    for Mutation {
        ks: target,
        key,
        value,
    } in rows
    {
        match value {
            Some(value) => batch.insert(ks.get(target), key, value),
            None => batch.remove(ks.get(target), key),
        }
    }
    // A failed commit wrote nothing to the memtables (fjall applies a batch only after
    // its journal write succeeded) and poisons the engine, so later groups fail too.
    batch.commit().map_err(engine_error)?;
    *committed += 1;
    Ok(outcome)
}

/// The channel's lease as the committer sees it (live state, not the durable snapshot).
fn lease_row(ks: &Keyspaces, key: &[u8]) -> Result<Option<LeaseRow>, StoreError> {
    ks.channel_leases
        .get(key)
        .map_err(engine_error)?
        .map(|value| decode(&value))
        .transpose()
}

/// Expired delivery claims removed along with each granted claim. More than the one
/// claim each adds, so the expired backlog shrinks whenever claims keep coming, while
/// no single claim pays for a long sweep.
const SWEEP_PER_CLAIM: usize = 4;

/// Removals of up to [`SWEEP_PER_CLAIM`] delivery claims that expired before `now`,
/// oldest first, found through `push_delivery_expiry`. A claim renewed since its index
/// entry was written keeps its row (only the stale entry goes), and so does `claiming`,
/// which the caller is about to rewrite.
fn sweep_deliveries(
    ks: &Keyspaces,
    now: u64,
    claiming: &[u8],
) -> Result<Vec<Mutation>, StoreError> {
    let mut rows = Vec::new();
    let expired = ks
        .push_delivery_expiry
        .range(..key::push_delivery_expiry_prefix(now))
        .take(SWEEP_PER_CLAIM);
    for entry in expired {
        let entry = entry.key().map_err(engine_error)?;
        let (expires_at_ms, team, delivery) =
            key::push_delivery_expiry_parts(&entry).ok_or_else(|| corrupt("delivery index key"))?;
        let claim = key::push_delivery(&team, &delivery);
        let current = ks.push_deliveries.get(&claim).map_err(engine_error)?;
        if claim != claiming
            && let Some(current) = current
            && be_u64(&current)? == expires_at_ms
        {
            rows.push(Mutation {
                ks: Ks::PushDeliveries,
                key: claim,
                value: None,
            });
        }
        rows.push(Mutation {
            ks: Ks::PushDeliveryExpiry,
            key: entry.to_vec(),
            value: None,
        });
    }
    Ok(rows)
}

/// The yes or no of a `DeleteExisting` or `ClaimDelivery`.
fn answer(outcome: Outcome) -> Result<bool, StoreError> {
    match outcome {
        Outcome::Answer(answer) => Ok(answer),
        _ => Err(StoreError::Internal(
            "a yes/no write answered with something else".into(),
        )),
    }
}

// ---- row builders (caller side) ----

/// fjall panics on keys above 64 KiB; refuse them before they reach the committer.
fn check_key(key: &[u8]) -> Result<(), StoreError> {
    if key.len() > usize::from(u16::MAX) {
        return Err(StoreError::Internal(format!(
            "key of {} bytes exceeds the engine limit",
            key.len()
        )));
    }
    Ok(())
}

fn put(ks: Ks, key: Vec<u8>, value: Vec<u8>) -> Result<Mutation, StoreError> {
    check_key(&key)?;
    Ok(Mutation {
        ks,
        key,
        value: Some(value),
    })
}

fn delete(ks: Ks, key: Vec<u8>) -> Result<Mutation, StoreError> {
    check_key(&key)?;
    Ok(Mutation {
        ks,
        key,
        value: None,
    })
}

/// The user row and its email index.
fn user_rows(user: &UserRecord) -> Result<Vec<Mutation>, StoreError> {
    let team = &user.user.team;
    Ok(vec![
        put(Ks::Users, key::user(team, &user.user.id), json(user)?)?,
        put(
            Ks::UserEmails,
            key::user_email(team, &user.user.email),
            user.user.id.as_str().into(),
        )?,
    ])
}

/// Membership rows in both directions, written (`add`) or removed.
fn member_rows(
    team: &TeamId,
    channel: &ChannelId,
    users: &[UserId],
    add: bool,
) -> Result<Vec<Mutation>, StoreError> {
    let mut rows = Vec::with_capacity(2 * users.len());
    for user in users {
        let by_channel = key::pair(team, channel.as_str(), user.as_str());
        let by_user = key::pair(team, user.as_str(), channel.as_str());
        if add {
            rows.push(put(Ks::ChannelMembers, by_channel, Vec::new())?);
            rows.push(put(Ks::MemberChannels, by_user, Vec::new())?);
        } else {
            rows.push(delete(Ks::ChannelMembers, by_channel)?);
            rows.push(delete(Ks::MemberChannels, by_user)?);
        }
    }
    Ok(rows)
}

// ---- read helpers (blocking pool) ----

fn get_json<T: serde::de::DeserializeOwned>(
    snap: &Snapshot,
    ks: &Keyspace,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    snap.get(ks, key)
        .map_err(engine_error)?
        .map(|value| decode(&value))
        .transpose()
}

fn get_string(snap: &Snapshot, ks: &Keyspace, key: &[u8]) -> Result<Option<String>, StoreError> {
    snap.get(ks, key)
        .map_err(engine_error)?
        .map(|value| utf8(&value))
        .transpose()
}

/// The last string component of every key under `prefix`, in key order.
fn scan_second(snap: &Snapshot, ks: &Keyspace, prefix: &[u8]) -> Result<Vec<String>, StoreError> {
    snap.prefix(ks, prefix)
        .map(|row| {
            let key = row.key().map_err(engine_error)?;
            key::pair_second(&key).ok_or_else(|| corrupt("membership key"))
        })
        .collect()
}

fn collect_messages(
    rows: impl Iterator<Item = fjall::Guard>,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    rows.take(limit)
        .map(|row| decode(&row.value().map_err(engine_error)?))
        .collect()
}

// ---- encoding and errors ----

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Internal(format!("cannot encode: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("cannot decode stored record: {e}")))
}

fn utf8(bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("id value"))
}

fn be_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("integer value"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("malformed {what} in store"))
}

fn closed() -> StoreError {
    StoreError::Unavailable("store is shut down".into())
}

/// I/O failures, a poisoned engine (after a failed sync) and a directory locked by
/// another process mean "cannot serve now": `Unavailable`. Data the engine cannot
/// decode is a bug or corruption: `Internal`.
fn engine_error(e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Locked => {
            StoreError::Unavailable("data directory is in use by another process".into())
        }
        fjall::Error::JournalRecovery(_)
        | fjall::Error::InvalidVersion(_)
        | fjall::Error::InvalidTrailer
        | fjall::Error::InvalidTag(_)
        | fjall::Error::Decompress(_)
        | fjall::Error::Unrecoverable => StoreError::Internal(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expired delivery claims do not pile up: later claims sweep them, a few each,
    /// and never a live one.
    #[tokio::test]
    async fn expired_delivery_claims_are_swept_by_later_claims() {
        let store = FjallStore::open_temporary(SyncPolicy::Os).unwrap();
        let team = TeamId::generate();
        // Long enough that none expires while the ten are claimed on a loaded machine
        // (an earlier claim expiring mid-loop would be swept by a later one).
        let ttl = Duration::from_secs(1);
        for i in 0..10 {
            let key = format!("expiring-{i}");
            assert!(store.claim_push_delivery(&team, &key, ttl).await.unwrap());
        }
        let rows = |ks: &Keyspace| ks.iter().count();
        let ks = &store.shared.ks;
        assert_eq!(
            (rows(&ks.push_deliveries), rows(&ks.push_delivery_expiry)),
            (10, 10)
        );
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        // Re-claiming an expired key sweeps its own stale index entry, not its new row.
        assert!(
            store
                .claim_push_delivery(&team, "expiring-0", Duration::from_secs(60))
                .await
                .unwrap()
        );
        for i in 0..2 {
            let key = format!("live-{i}");
            assert!(
                store
                    .claim_push_delivery(&team, &key, Duration::from_secs(60))
                    .await
                    .unwrap()
            );
        }
        // 3 claims × SWEEP_PER_CLAIM ≥ 10 expired entries: only the 3 live claims stay.
        assert_eq!(
            (rows(&ks.push_deliveries), rows(&ks.push_delivery_expiry)),
            (3, 3)
        );
        assert!(
            !store
                .claim_push_delivery(&team, "expiring-0", Duration::from_secs(60))
                .await
                .unwrap()
        );
    }
}
