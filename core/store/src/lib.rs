//! Storage of messages and workspace metadata (DESIGN.md §2–3).
//!
//! [`Store`] is the capability the core needs, expressed as domain queries rather than
//! bytes so that each engine can lay its data out the way it wants: the embedded
//! [`fjall`](crate::fjall_store) driver for one machine, the
//! [Scylla/Cassandra](crate::scylla_store) driver at scale.
//! Every driver must pass the one [`conformance`] suite.

pub mod conformance;
pub mod fjall_store;
mod record;
pub mod scylla_store;

pub use fjall_store::{CommitStats, FjallStore, FjallStoreOptions, SyncPolicy};
pub use record::{
    BUCKET_SEQS, ChannelLease, ChannelRecord, LeaseClaim, NewMessage, PushSubscription, UserRecord,
    bucket_of,
};
pub use scylla_store::{ScyllaStore, ScyllaStoreOptions};

use async_trait::async_trait;
use confab_proto::{ChannelId, Message, Team, TeamId, UserId};
use std::time::Duration;

/// Which engine holds the data. Chosen explicitly in configuration, never sniffed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreBackend {
    /// fjall LSM tree in one local directory.
    Embedded(FjallStoreOptions),
    /// Apache Cassandra or ScyllaDB cluster, reached through the `scylla` driver.
    Cassandra(ScyllaStoreOptions),
}

/// Opens the configured store.
pub async fn open(backend: &StoreBackend) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match backend {
        StoreBackend::Embedded(options) => {
            Ok(std::sync::Arc::new(FjallStore::open(options.clone())?))
        }
        StoreBackend::Cassandra(options) => Ok(std::sync::Arc::new(
            ScyllaStore::connect(options.clone()).await?,
        )),
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated; nothing was written.
    #[error("{0} already exists")]
    Conflict(Conflict),
    /// The engine cannot be reached or refused the write; nothing was acknowledged.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded, or another bug.
    #[error("store internal error: {0}")]
    Internal(String),
    /// The writer's channel lease was taken over; nothing was written.
    #[error("fenced: {0}")]
    Fenced(String),
}

/// Which uniqueness rule a write ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    TeamDomain,
    UserEmail,
    ChannelName,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TeamDomain => "team domain",
            Self::UserEmail => "user email",
            Self::ChannelName => "channel name",
        })
    }
}

/// Messages and workspace metadata. Every query is scoped by team: a team's data is
/// unreachable through another team's id. Methods are grouped by table in
/// create-read-update-delete order; every driver implements them in this order.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- teams ----

    /// Creates a team together with its first (admin) user. Fails with
    /// `Conflict(TeamDomain)` if the domain is taken; then nothing is written.
    async fn create_team(&self, team: &Team, owner: &UserRecord) -> Result<(), StoreError>;

    /// The team with this id.
    async fn team(&self, team: &TeamId) -> Result<Option<Team>, StoreError>;

    /// The team with this (lower-case) domain.
    async fn team_by_domain(&self, domain: &str) -> Result<Option<Team>, StoreError>;

    // ---- users ----

    /// Adds a user to its team. Fails with `Conflict(UserEmail)` if the email is taken
    /// in that team (emails compare lower-cased).
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;

    /// One user of the team.
    async fn user(&self, team: &TeamId, user: &UserId) -> Result<Option<UserRecord>, StoreError>;

    /// The user of the team with this email (compared lower-cased).
    async fn user_by_email(
        &self,
        team: &TeamId,
        email: &str,
    ) -> Result<Option<UserRecord>, StoreError>;

    /// The users of the team among `ids`, in the order of `ids`; unknown ids are skipped.
    async fn users(&self, team: &TeamId, ids: &[UserId]) -> Result<Vec<UserRecord>, StoreError>;

    // ---- channels ----

    /// Creates a public or private channel with its first members. Fails with
    /// `Conflict(ChannelName)` if a channel of that name exists in the team.
    async fn create_channel(
        &self,
        channel: &ChannelRecord,
        members: &[UserId],
    ) -> Result<(), StoreError>;

    /// Returns the DM or group DM for `channel.dm_key`, creating it with `members` if
    /// none exists. Concurrent calls for one key all get the same channel.
    async fn get_or_create_dm(
        &self,
        channel: &ChannelRecord,
        members: &[UserId],
    ) -> Result<ChannelRecord, StoreError>;

    /// One channel of the team.
    async fn channel(
        &self,
        team: &TeamId,
        channel: &ChannelId,
    ) -> Result<Option<ChannelRecord>, StoreError>;

    /// The public channels of the team, by name.
    async fn public_channels(&self, team: &TeamId) -> Result<Vec<ChannelRecord>, StoreError>;

    // ---- channel members (both directions: channel → users, user → channels) ----

    /// Makes `users` members of the channel; already-members are left as they are.
    async fn add_members(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        users: &[UserId],
    ) -> Result<(), StoreError>;

    /// Whether `user` is a member of the channel.
    async fn is_member(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        user: &UserId,
    ) -> Result<bool, StoreError>;

    /// The members of a channel.
    async fn channel_members(
        &self,
        team: &TeamId,
        channel: &ChannelId,
    ) -> Result<Vec<UserId>, StoreError>;

    /// The channels `user` is a member of.
    async fn member_channels(
        &self,
        team: &TeamId,
        user: &UserId,
    ) -> Result<Vec<ChannelId>, StoreError>;

    /// Ends a membership; a no-op for non-members.
    async fn remove_member(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        user: &UserId,
    ) -> Result<(), StoreError>;

    // ---- channel leases ----

    /// Claims the right to sequence the channel for `ttl` from now, or renews it. At
    /// most one holder has a live lease of a channel at a time; concurrent claimants of
    /// a free lease get one `Granted` and the others `Held`.
    ///
    /// - No lease yet, or an expired one (`expires_at_ms` < now) of another holder (or a
    ///   released one): `Granted` with the previous epoch + 1 (1 for the first).
    /// - The caller's own lease, live or expired but not taken over: a renewal,
    ///   `Granted` with the same epoch and the new expiry.
    /// - Another holder's live lease: `Held`, and nothing is written.
    ///
    /// `holder` must be non-empty and unique to one process (and one store handle): two
    /// processes using one name would renew each other's lease.
    async fn claim_lease(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseClaim, StoreError>;

    /// Gives the lease up, so that another holder can claim it at once (with the next
    /// epoch, which also fences this lease's appends). A no-op when `lease` (its holder
    /// and epoch) is no longer the channel's current lease.
    async fn release_lease(&self, lease: &ChannelLease) -> Result<(), StoreError>;

    // ---- messages ----

    /// Writes messages (with their `client_msg_id` dedup rows) atomically and durably,
    /// under `lease`: when this returns `Ok`, all of them survive a crash; on `Err`,
    /// none is visible. The caller (the channel's single sequencer) assigns dense
    /// `seq`s. Every message must belong to the lease's team and channel (`Internal`
    /// otherwise). Fails with `Fenced`, writing nothing visible, when the lease's epoch
    /// is no longer the channel's current one. Expiry is not checked here: the epoch is
    /// the fencing token, and the holder renews before its lease runs out.
    async fn append_messages(
        &self,
        lease: &ChannelLease,
        messages: &[NewMessage],
    ) -> Result<(), StoreError>;

    /// The highest `seq` stored in the channel, 0 when empty.
    async fn last_seq(&self, team: &TeamId, channel: &ChannelId) -> Result<u64, StoreError>;

    /// The message a `client_msg_id` produced, if any.
    async fn message_by_client_msg_id(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        client_msg_id: &str,
    ) -> Result<Option<Message>, StoreError>;

    /// Up to `limit` messages with `seq < before` (all when `None`), newest first.
    async fn history(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// Up to `limit` messages with `seq > after`, oldest first (for `resume`).
    async fn messages_after(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    // ---- read state ----

    /// Moves the user's read marker of the channel forward to `seq` (never backward).
    async fn mark_read(
        &self,
        team: &TeamId,
        user: &UserId,
        channel: &ChannelId,
        seq: u64,
    ) -> Result<(), StoreError>;

    /// The user's read markers, for channels where one was set.
    async fn read_markers(
        &self,
        team: &TeamId,
        user: &UserId,
    ) -> Result<Vec<(ChannelId, u64)>, StoreError>;

    // ---- push subscriptions ----

    /// Registers a push subscription of `sub.user`; one of the same id replaces it.
    async fn create_push_subscription(&self, sub: &PushSubscription) -> Result<(), StoreError>;

    /// The user's push subscriptions, by id.
    async fn push_subscriptions(
        &self,
        team: &TeamId,
        user: &UserId,
    ) -> Result<Vec<PushSubscription>, StoreError>;

    /// Removes one of the user's push subscriptions; returns whether it existed. (Two
    /// concurrent deletes of one subscription may both answer `true`.)
    async fn delete_push_subscription(
        &self,
        team: &TeamId,
        user: &UserId,
        id: &str,
    ) -> Result<bool, StoreError>;

    /// Claims the one delivery of a push notification, named by `key` (say, message
    /// and subscription ids) within the team: `true` for the first claim, `false` for
    /// every other while that claim lasts (`ttl`; drivers may round it up to a whole
    /// second), so that of nodes or retries racing to send it exactly one does. Once
    /// `ttl` is over, the key can be claimed again.
    async fn claim_push_delivery(
        &self,
        team: &TeamId,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Whether a claim of `key` in the team is in force (made and not yet expired).
    async fn push_delivered(&self, team: &TeamId, key: &str) -> Result<bool, StoreError>;

    // ---- lifecycle ----

    /// Makes every acknowledged write durable and stops accepting new ones; called on
    /// graceful shutdown.
    async fn flush(&self) -> Result<(), StoreError>;
}
