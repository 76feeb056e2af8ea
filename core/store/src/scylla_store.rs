//! The at-scale [`Store`] driver: Apache Cassandra or ScyllaDB through the `scylla`
//! crate (CQL protocol v4), DESIGN.md §2–3.
//!
//! # Schema
//!
//! One table per query, `team_id` first in every partition key (`scylla_store/schema.rs`
//! has the tables and the versioned migrations that create them at [`connect`]).
//! Messages live in `messages ((team_id, channel_id, bucket), seq DESC)` with
//! `bucket = seq / BUCKET_SEQS`, so a partition holds at most 4096 messages.
//!
//! # Uniqueness: claim first, then write
//!
//! Team domains, user emails (lower-cased), channel names (per team) and DM member sets
//! each have a claim table written only by `INSERT … IF NOT EXISTS`, a lightweight
//! transaction (Paxos), so of concurrent claimants exactly one wins. The record itself is
//! written only after the claim succeeded; a refused claim writes nothing. A claim whose
//! row already names the claimant's own id counts as won, which makes a retried create
//! (after a timeout left its outcome unknown) finish the job instead of conflicting with
//! itself. The price: a create that fails after its claim leaves the claim behind, taken
//! until the same id is created again.
//!
//! `get_or_create_dm` claims the key with the whole channel record in the claim row. A
//! caller that loses learns the winner's channel id from the LWT's answer and returns the
//! winner's record; if that record is not there yet (the winner is mid-write, or died
//! between claim and write), the loser writes the winner's rows itself, which are the
//! same rows, so the DM is complete whoever finishes.
//!
//! # Channel leases and messages: a commit mark moved under a fencing epoch
//!
//! `channel_seq (team_id, channel_id)` holds the channel's lease (`holder`, `epoch`,
//! `lease_until`) and its commit mark `last_seq`. It is written by LWT only, so one
//! Paxos partition serializes the claims, releases and commits of a channel.
//!
//! A claim reads the row at LOCAL_SERIAL and then changes it by a CAS on what it read:
//! `IF epoch = null` for a channel's first lease (no row yet, or a row from before
//! leases), `IF holder = ? AND epoch = ?` for a renewal (same epoch), `IF epoch = ?` to
//! take over an expired or released lease (epoch + 1). A CAS that is not applied lost
//! to another claim; the claim reads again, which answers `Held` (or `Granted` when the
//! winner was the same holder). A release empties `holder` and keeps the epoch.
//!
//! Reads never return a message above the mark: `history` and `messages_after` bound
//! their scans by it and `message_by_client_msg_id` checks it. An append
//!
//! 1. writes its message and dedup rows (plain writes, as single-partition unlogged
//!    batches and concurrent single inserts), all `USING TIMESTAMP 2^52 + epoch·2^32 +
//!    n`, where `n` counts this handle's appends;
//! 2. then moves the mark: `UPDATE channel_seq SET last_seq = ? … IF epoch = ?`. Not
//!    applied means the lease was taken over: the append fails with `Fenced`.
//!
//! Rows an append leaves without its commit (a failure in between, or a fenced holder)
//! stay invisible: above the mark no read looks, and the holder's next append reuses
//! those seqs (DESIGN.md §4) and replaces them. A fenced "zombie" may also write rows
//! at seqs the new holder has committed already; they lose to the new holder's rows
//! because a later epoch's timestamps are higher whatever the clocks say, whether the
//! zombie writes before or after the new holder. Within an epoch (one holder, one
//! handle), `n` makes a retried append replace what an earlier attempt left. Every
//! column is bound (an absent `thread_ts` or `edited_ts` as `''`), so a replacing row
//! keeps nothing of the replaced one. The timestamps start at 2^52 µs (the year 2112),
//! above any clock-stamped write, rows from before leases included; a later feature that
//! rewrites or deletes message rows must stamp its writes in the same scheme.
//!
//! The mark is no longer a max-register: only the current holder moves it, in the order
//! its sequencer commits (a commit whose answer timed out is finished by the next Paxos
//! round on the row, before that round's own change). Old marks, written `USING
//! TIMESTAMP <seq>`, lose to any LWT write, which carries its ballot's timestamp.
//!
//! The price, and the assumptions:
//!
//! - one LWT per appended batch (not per message: the sequencer batches), on top of the
//!   row writes: Cassandra's default Paxos (v1) takes four round trips from the
//!   coordinator to a quorum, so an append costs several milliseconds more than the one
//!   logged batch it used to be; renewals add one LWT per half lease;
//! - `n` starts at 0 per handle, so a holder name must belong to one handle: a restarted
//!   process that renewed its predecessor's lease under a fixed name could see a retry
//!   lose to its predecessor's leftovers (the sequencer's names are unique per process);
//! - at most 2^32 appends per handle and epoch;
//! - expiry compares the claimant's clock with the holder's: skew moves the moment a
//!   takeover becomes possible, but fencing depends on the epoch alone.
//!
//! `last_seq` is the mark (0 when absent), one single-row read; no bucket scan.
//!
//! Dedup rows (`message_dedup`, client_msg_id → seq) are plain upserts, with no
//! read-before-write inside the store: the channel's single sequencer looks the id up
//! before assigning a seq (docs/design-notes.md), so two messages never race for one id.
//! A lookup only returns a message at or below the mark whose stored `client_msg_id`
//! matches, so a dedup row left by a failed append never answers for another message.
//!
//! # Durability
//!
//! Every statement runs at LOCAL_QUORUM (LWTs at LOCAL_SERIAL): an append that returns
//! `Ok` is in the commit log of a quorum of the local data centre's replicas. Cassandra's
//! default `commitlog_sync: periodic` acknowledges before the commit log is fsynced (up
//! to `commitlog_sync_period`, 10 s, later), so a write survives a process crash of any
//! replica but a simultaneous power loss of a quorum can lose the last seconds; with RF 1
//! that is one machine. Deployments that need fsync-before-ack set `commitlog_sync: batch`
//! (or `group`). A statement that fails with a timeout may still be applied; for appends
//! the commit mark keeps such rows invisible unless the mark itself was written.
//!
//! Write timestamps come from the client (a monotonic generator per process), so one
//! process's successive writes to a row (e.g. a membership removed and added back) apply
//! in the order it made them, whichever coordinators they went through.
//!
//! # Read markers
//!
//! `read_state` is written by LWT only: `UPDATE … IF seq < ?`, falling back to `INSERT …
//! IF NOT EXISTS` for the first marker, so concurrent marks never move it backward.
//!
//! # Push subscriptions
//!
//! `push_subscriptions` has a partition per user, listed by id; a delete reads first to
//! answer whether the subscription existed. `push_deliveries` holds delivery claims,
//! each written by `INSERT … IF NOT EXISTS USING TTL`, so of concurrent claimants of
//! one key exactly one is applied, and the claim disappears (claimable again) when its
//! TTL, in whole seconds, runs out. A claim carries a random token of its call, so a
//! retried claim that finds its own earlier, timed-out write still counts as won.
//!
//! # Lifecycle
//!
//! [`flush`](Store::flush) waits for writes in flight (each holds a read guard on the
//! `closed` flag for its whole duration), then refuses new ones with `Unavailable`.
//! Acknowledged writes are already on the replicas, so there is nothing else to flush.
//!
//! [`connect`]: ScyllaStore::connect

mod cql;
mod schema;
mod statements;

pub use schema::SCHEMA_VERSION;

use crate::record::{check_holder, check_in_lease, fenced, lease_expiry, unix_ms_now};
use crate::{
    BUCKET_SEQS, ChannelLease, ChannelRecord, Conflict, LeaseClaim, NewMessage, PushSubscription,
    Store, StoreError, UserRecord, bucket_of,
};
use async_trait::async_trait;
use confab_proto::{
    Channel, ChannelId, ChannelKind, Message, MessageId, Team, TeamId, User, UserId,
};
use futures::{StreamExt, TryStreamExt};
use scylla::DeserializeRow;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::MaybeUnset;
use statements::Statements;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::{RwLock, RwLockReadGuard};

/// Largest estimated payload of a single-partition UNLOGGED batch (one bucket of one
/// channel): far under `batch_size_fail_threshold` (50 KiB by default), which Cassandra
/// enforces on every batch. The estimate errs high: a batch Cassandra measured at
/// 16 KiB was estimated at 17.5.
const PARTITION_BATCH_BYTES: usize = 24 * 1024;
/// Members written per logged batch (two rows each): about 2 KiB.
const MEMBERS_PER_BATCH: usize = 16;
/// Batches of one call in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// Single-row writes and reads kept in flight at once by one call.
const CONCURRENCY: usize = 32;
/// Read-then-CAS rounds of one lease claim. Two suffice against any number of
/// concurrent claimants (the loser's second read finds the winner); more only help
/// against a lease that keeps changing hands.
const LEASE_ROUNDS: usize = 4;
/// Lowest write timestamp of message rows, 2^52 µs (the year 2112): above any clock
/// reading, so that the epoch, not the clock, decides which write of a row wins.
const EPOCH_TIMESTAMP_BASE: i64 = 1 << 52;
/// Each epoch's span of write timestamps: room for 2^32 appends per handle and epoch.
const EPOCH_TIMESTAMP_SPAN: i64 = 1 << 32;
/// The longest TTL Cassandra accepts: 20 years.
const MAX_TTL_SECONDS: u64 = 630_720_000;

/// Where the cluster is and how the keyspace is replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaStoreOptions {
    /// Contact points, `host:port` (e.g. `127.0.0.1:9042`); the driver discovers the
    /// rest of the cluster from them.
    pub nodes: Vec<String>,
    /// Created if missing (letters, digits and `_`, at most 48, starting with a letter).
    pub keyspace: String,
    /// Replication factor of `SimpleStrategy` when the keyspace is created; an existing
    /// keyspace keeps its replication settings.
    pub replication_factor: u32,
}

/// The Cassandra/ScyllaDB store. See the module documentation.
pub struct ScyllaStore {
    session: Session,
    st: Statements,
    keyspace: String,
    /// Set by `flush`. Every write holds a read guard until it is answered, so `flush`
    /// (taking the write guard) waits for the writes in flight.
    closed: RwLock<bool>,
    /// Appends made by this handle: the low bits of their write timestamps, so that a
    /// retried append replaces what an earlier attempt at the same seqs left.
    appends: AtomicU32,
}

impl ScyllaStore {
    /// Connects, creates the keyspace if needed, applies pending schema migrations
    /// (once, even with concurrent starters) and prepares every statement. Fails with
    /// `Unavailable` when no node can be reached.
    pub async fn connect(options: ScyllaStoreOptions) -> Result<ScyllaStore, StoreError> {
        validate(&options)?;
        let ScyllaStoreOptions {
            nodes,
            keyspace,
            replication_factor,
        } = options;
        let profile = ExecutionProfile::builder()
            .consistency(Consistency::LocalQuorum)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .build();
        let session = SessionBuilder::new()
            .known_nodes(&nodes)
            .default_execution_profile_handle(profile.into_handle())
            .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
            // Only our keyspace's replication matters (for token-aware routing), not
            // the columns of every table in the cluster: a new session stays cheap,
            // which per-test sessions and restarts rely on.
            .keyspaces_to_fetch([keyspace.clone()])
            .fetch_full_schema_metadata(false)
            .build()
            .await
            .map_err(cql::new_session)?;

        schema::ddl(
            &session,
            &format!(
                "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
                 {{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}"
            ),
        )
        .await?;
        session
            .use_keyspace(keyspace.as_str(), false)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot use keyspace {keyspace}: {e}")))?;
        let applied = schema::migrate(&session).await?;
        if !applied.is_empty() {
            tracing::info!(%keyspace, versions = ?applied, "cassandra schema migrated");
        }
        let st = Statements::prepare(&session).await?;
        Ok(ScyllaStore {
            session,
            st,
            keyspace,
            closed: RwLock::new(false),
            appends: AtomicU32::new(0),
        })
    }

    /// The keyspace this store uses.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// A guard to hold for the duration of a write, or `Unavailable` after `flush`.
    async fn writable(&self) -> Result<RwLockReadGuard<'_, bool>, StoreError> {
        let closed = self.closed.read().await;
        if *closed {
            return Err(StoreError::Unavailable("store is shut down".into()));
        }
        Ok(closed)
    }

    /// The write timestamp of an append's rows under a lease of `epoch`:
    /// `2^52 + epoch·2^32 + n` for this handle's `n`th append. Rows of a later epoch
    /// always replace rows a fenced writer of an earlier epoch left (or writes after
    /// it was fenced), whatever the clocks say, and within one epoch (one holder, one
    /// handle) a later attempt replaces an earlier one.
    fn write_timestamp(&self, epoch: u64) -> Result<i64, StoreError> {
        let n = i64::from(self.appends.fetch_add(1, Ordering::Relaxed));
        i64::try_from(epoch)
            .ok()
            .and_then(|epoch| epoch.checked_mul(EPOCH_TIMESTAMP_SPAN))
            .and_then(|span| span.checked_add(EPOCH_TIMESTAMP_BASE + n))
            .ok_or_else(|| StoreError::Internal(format!("lease epoch {epoch} is too high")))
    }

    // ---- statement helpers ----

    /// The first row of a point read.
    async fn read_one<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        what: &str,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        let result = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(|e| cql::execution(what, e))?;
        let rows = result
            .into_rows_result()
            .map_err(|e| cql::decode(what, e))?;
        rows.maybe_first_row::<R>()
            .map_err(|e| cql::decode(what, e))
    }

    /// Up to `limit` rows of a read, fetched page by page.
    async fn read_many<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        limit: usize,
        what: &str,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>
            + Send
            + 'static,
    {
        let pager = self
            .session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| cql::pager(what, e))?;
        pager
            .rows_stream::<R>()
            .map_err(|e| cql::decode(what, e))?
            .take(limit)
            .map_err(|e| cql::next_row(what, e))
            .try_collect()
            .await
    }

    /// Runs `rows` as one batch of `kind`.
    async fn batch(
        &self,
        kind: BatchType,
        rows: Vec<Row<'_>>,
        what: &str,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new(kind);
        let mut values = Vec::with_capacity(rows.len());
        for row in rows {
            batch.append_statement(row.statement.clone());
            values.push(row.values);
        }
        // Batches hold upserts and deletes of fixed values only: re-running one changes
        // nothing, so the driver may retry it.
        batch.set_is_idempotent(true);
        self.session
            .batch(&batch, values)
            .await
            .map(drop)
            .map_err(|e| cql::execution(what, e))
    }

    /// Writes rows that need not be atomic together (an append's rows, made visible
    /// afterwards by its commit mark): message rows as unlogged batches of one
    /// partition each (one bucket of one channel, applied atomically by its replicas),
    /// everything else as single statements, `CONCURRENCY` at a time.
    async fn write_unbatched(&self, rows: Vec<Row<'_>>, what: &str) -> Result<(), StoreError> {
        let mut singles = Vec::new();
        let mut batches: Vec<(PartitionKey<'_>, usize, Vec<Row<'_>>)> = Vec::new();
        for row in rows {
            let Some(partition) = row.partition else {
                singles.push(row);
                continue;
            };
            match batches.last_mut() {
                Some((key, bytes, rows))
                    if *key == partition && *bytes + row.bytes <= PARTITION_BATCH_BYTES =>
                {
                    *bytes += row.bytes;
                    rows.push(row);
                }
                _ => batches.push((partition, row.bytes, vec![row])),
            }
        }
        // Futures are built into vectors before anything is awaited: stream adapters
        // holding closures over borrowed rows trip the `Send` check of `async_trait`.
        let batched: Vec<_> = batches
            .into_iter()
            .map(|(_, _, rows)| self.batch(BatchType::Unlogged, rows, what))
            .collect();
        let singles: Vec<_> = singles
            .into_iter()
            .map(|row| async move {
                self.session
                    .execute_unpaged(row.statement, row.values)
                    .await
                    .map(drop)
                    .map_err(|e| cql::execution(what, e))
            })
            .collect();
        futures::try_join!(
            bounded(batched, BATCHES_IN_FLIGHT),
            bounded(singles, CONCURRENCY)
        )?;
        Ok(())
    }

    // ---- row builders ----

    fn user_rows<'a>(&'a self, user: &'a UserRecord, with_email: bool) -> Vec<Row<'a>> {
        let u = &user.user;
        let mut rows = vec![Row::new(
            &self.st.insert_user,
            (
                u.team.as_str(),
                u.id.as_str(),
                u.name.as_str(),
                u.email.as_str(),
                u.is_admin,
                user.password_hash.as_str(),
            ),
        )];
        if with_email {
            rows.push(Row::new(
                &self.st.insert_email,
                (u.team.as_str(), u.email.to_lowercase(), u.id.as_str()),
            ));
        }
        rows
    }

    fn member_rows<'a>(
        &'a self,
        team: &'a TeamId,
        channel: &'a ChannelId,
        users: &'a [UserId],
        add: bool,
    ) -> Vec<Row<'a>> {
        let (by_channel, by_user) = if add {
            (&self.st.insert_member, &self.st.insert_member_channel)
        } else {
            (&self.st.delete_member, &self.st.delete_member_channel)
        };
        let (t, c) = (team.as_str(), channel.as_str());
        users
            .iter()
            .flat_map(|user| {
                let u = user.as_str();
                [
                    Row::new(by_channel, (t, c, u)),
                    Row::new(by_user, (t, u, c)),
                ]
            })
            .collect()
    }

    /// Writes a channel's record (and its listing when public) with its first members.
    /// The record goes in the last batch, so a channel is never found without them.
    async fn write_channel(
        &self,
        record: &ChannelRecord,
        members: &[UserId],
    ) -> Result<(), StoreError> {
        let (team, id) = (&record.team, &record.channel.id);
        let chunks: Vec<&[UserId]> = members.chunks(MEMBERS_PER_BATCH).collect();
        let (last, earlier) = match chunks.split_last() {
            Some((last, earlier)) => (*last, earlier),
            None => (&[][..], &[][..]),
        };
        let earlier: Vec<_> = earlier
            .iter()
            .map(|chunk| {
                let rows = self.member_rows(team, id, chunk, true);
                self.batch(BatchType::Logged, rows, "write channel members")
            })
            .collect();
        bounded(earlier, BATCHES_IN_FLIGHT).await?;
        let values = ChannelValues::new(record)?;
        let mut rows = self.member_rows(team, id, last, true);
        if record.channel.kind.is_listed() {
            rows.push(Row::new(&self.st.insert_public, values.clone().row()));
        }
        rows.push(Row::new(&self.st.insert_channel, values.row()));
        self.batch(BatchType::Logged, rows, "write channel").await
    }

    /// Message rows of one bucket, `want` at most, appended to `out`.
    async fn scan_bucket(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        channel: &ChannelId,
        want: usize,
        out: &mut Vec<Message>,
    ) -> Result<(), StoreError> {
        let rows: Vec<MessageRow> = self
            .read_many(statement, values, want, "read messages")
            .await?;
        for row in rows {
            out.push(row.into_message(channel)?);
        }
        Ok(())
    }
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("keyspace", &self.keyspace)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for ScyllaStore {
    // ---- teams ----

    async fn create_team(&self, team: &Team, owner: &UserRecord) -> Result<(), StoreError> {
        let _open = self.writable().await?;
        if owner.user.team != team.id {
            return Err(StoreError::Internal(format!(
                "owner {} belongs to team {}, not {}",
                owner.user.id, owner.user.team, team.id
            )));
        }
        let id = team.id.as_str();
        let claim = cql::conditional(
            &self.session,
            &self.st.claim_domain,
            &(team.domain.to_lowercase(), id),
            "claim team domain",
        )
        .await?;
        if !claim.applied && claim.text("team_id") != Some(id) {
            return Err(StoreError::Conflict(Conflict::TeamDomain));
        }
        // The owner's email needs no claim: nobody else can add users to a team that
        // does not exist yet.
        let mut rows = vec![Row::new(
            &self.st.insert_team,
            (id, team.name.as_str(), team.domain.as_str()),
        )];
        rows.extend(self.user_rows(owner, true));
        self.batch(BatchType::Logged, rows, "write team").await
    }

    async fn team(&self, team: &TeamId) -> Result<Option<Team>, StoreError> {
        let row: Option<(String, String, String)> = self
            .read_one(&self.st.select_team, (team.as_str(),), "read team")
            .await?;
        Ok(row.map(|(id, name, domain)| Team {
            id: TeamId::new(id),
            name,
            domain,
        }))
    }

    async fn team_by_domain(&self, domain: &str) -> Result<Option<Team>, StoreError> {
        let row: Option<(String,)> = self
            .read_one(
                &self.st.select_domain,
                (domain.to_lowercase(),),
                "read team domain",
            )
            .await?;
        match row {
            // A claim whose team write failed has no team behind it: not found.
            Some((id,)) => self.team(&TeamId::new(id)).await,
            None => Ok(None),
        }
    }

    // ---- users ----

    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let _open = self.writable().await?;
        let u = &user.user;
        let claim = cql::conditional(
            &self.session,
            &self.st.claim_email,
            &(u.team.as_str(), u.email.to_lowercase(), u.id.as_str()),
            "claim user email",
        )
        .await?;
        if !claim.applied && claim.text("user_id") != Some(u.id.as_str()) {
            return Err(StoreError::Conflict(Conflict::UserEmail));
        }
        self.batch(BatchType::Logged, self.user_rows(user, false), "write user")
            .await
    }

    async fn user(&self, team: &TeamId, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow> = self
            .read_one(
                &self.st.select_user,
                (team.as_str(), user.as_str()),
                "read user",
            )
            .await?;
        Ok(row.map(|row| row.into_record(team)))
    }

    async fn user_by_email(
        &self,
        team: &TeamId,
        email: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<(String,)> = self
            .read_one(
                &self.st.select_email,
                (team.as_str(), email.to_lowercase()),
                "read user email",
            )
            .await?;
        match row {
            Some((id,)) => self.user(team, &UserId::new(id)).await,
            None => Ok(None),
        }
    }

    async fn users(&self, team: &TeamId, ids: &[UserId]) -> Result<Vec<UserRecord>, StoreError> {
        // One partition per user: concurrent point reads, answers kept in `ids` order.
        let reads: Vec<_> = ids.iter().map(|id| self.user(team, id)).collect();
        let found = bounded(reads, CONCURRENCY).await?;
        Ok(found.into_iter().flatten().collect())
    }

    // ---- channels ----

    async fn create_channel(
        &self,
        channel: &ChannelRecord,
        members: &[UserId],
    ) -> Result<(), StoreError> {
        let _open = self.writable().await?;
        if channel.channel.kind.is_direct() {
            return Err(StoreError::Internal(format!(
                "{} is a DM: create it with get_or_create_dm",
                channel.channel.id
            )));
        }
        let id = channel.channel.id.as_str();
        let claim = cql::conditional(
            &self.session,
            &self.st.claim_name,
            &(channel.team.as_str(), channel.channel.name.as_str(), id),
            "claim channel name",
        )
        .await?;
        if !claim.applied && claim.text("channel_id") != Some(id) {
            return Err(StoreError::Conflict(Conflict::ChannelName));
        }
        self.write_channel(channel, members).await
    }

    async fn get_or_create_dm(
        &self,
        channel: &ChannelRecord,
        members: &[UserId],
    ) -> Result<ChannelRecord, StoreError> {
        let _open = self.writable().await?;
        let Some(dm_key) = channel.dm_key.as_deref() else {
            return Err(StoreError::Internal(format!(
                "{} has no dm_key: create it with create_channel",
                channel.channel.id
            )));
        };
        let team = &channel.team;
        let id = channel.channel.id.as_str();
        let values = ChannelValues::new(channel)?;
        let claim = cql::conditional(
            &self.session,
            &self.st.claim_dm,
            &(
                team.as_str(),
                dm_key,
                id,
                values.name,
                values.private,
                values.kind.as_str(),
                values.members.clone(),
                values.created_by,
            ),
            "claim DM key",
        )
        .await?;
        let winner = match claim.text("channel_id") {
            // Ours, possibly from an earlier attempt whose answer was lost.
            _ if claim.applied => None,
            Some(winner) if winner == id => None,
            Some(winner) => Some(ChannelId::new(winner)),
            None => {
                return Err(StoreError::Internal(format!(
                    "DM claim {dm_key} answered without its channel"
                )));
            }
        };
        let Some(winner) = winner else {
            self.write_channel(channel, members).await?;
            return Ok(channel.clone());
        };
        if let Some(existing) = self.channel(team, &winner).await? {
            return Ok(existing);
        }
        // The winner has not written its channel (yet, or ever): write the same rows
        // it would, from the record in its claim.
        let row: Option<ChannelRow> = self
            .read_one(&self.st.select_dm, (team.as_str(), dm_key), "read DM key")
            .await?;
        let record = row
            .ok_or_else(|| StoreError::Internal(format!("DM claim {dm_key} vanished")))?
            .into_record(team)?;
        let members = match &record.channel.members {
            Some(listed) => listed.clone(),
            None => members.to_vec(),
        };
        self.write_channel(&record, &members).await?;
        Ok(record)
    }

    async fn channel(
        &self,
        team: &TeamId,
        channel: &ChannelId,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let row: Option<ChannelRow> = self
            .read_one(
                &self.st.select_channel,
                (team.as_str(), channel.as_str()),
                "read channel",
            )
            .await?;
        row.map(|row| row.into_record(team)).transpose()
    }

    async fn public_channels(&self, team: &TeamId) -> Result<Vec<ChannelRecord>, StoreError> {
        let rows: Vec<ChannelRow> = self
            .read_many(
                &self.st.select_public,
                (team.as_str(),),
                usize::MAX,
                "read public channels",
            )
            .await?;
        rows.into_iter().map(|row| row.into_record(team)).collect()
    }

    // ---- channel members ----

    async fn add_members(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        users: &[UserId],
    ) -> Result<(), StoreError> {
        let _open = self.writable().await?;
        // Each batch is atomic; the call as a whole need not be, as re-adding is a no-op.
        let batches: Vec<_> = users
            .chunks(MEMBERS_PER_BATCH)
            .map(|chunk| {
                let rows = self.member_rows(team, channel, chunk, true);
                self.batch(BatchType::Logged, rows, "add members")
            })
            .collect();
        bounded(batches, BATCHES_IN_FLIGHT).await.map(drop)
    }

    async fn is_member(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        user: &UserId,
    ) -> Result<bool, StoreError> {
        let row: Option<(String,)> = self
            .read_one(
                &self.st.select_is_member,
                (team.as_str(), channel.as_str(), user.as_str()),
                "read membership",
            )
            .await?;
        Ok(row.is_some())
    }

    async fn channel_members(
        &self,
        team: &TeamId,
        channel: &ChannelId,
    ) -> Result<Vec<UserId>, StoreError> {
        let rows: Vec<(String,)> = self
            .read_many(
                &self.st.select_members,
                (team.as_str(), channel.as_str()),
                usize::MAX,
                "read channel members",
            )
            .await?;
        Ok(rows.into_iter().map(|(id,)| UserId::new(id)).collect())
    }

    async fn member_channels(
        &self,
        team: &TeamId,
        user: &UserId,
    ) -> Result<Vec<ChannelId>, StoreError> {
        let rows: Vec<(String,)> = self
            .read_many(
                &self.st.select_member_channels,
                (team.as_str(), user.as_str()),
                usize::MAX,
                "read member channels",
            )
            .await?;
        Ok(rows.into_iter().map(|(id,)| ChannelId::new(id)).collect())
    }

    async fn remove_member(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        user: &UserId,
    ) -> Result<(), StoreError> {
        let _open = self.writable().await?;
        let rows = self.member_rows(team, channel, std::slice::from_ref(user), false);
        self.batch(BatchType::Logged, rows, "remove member").await
    }

    // ---- channel leases ----

    async fn claim_lease(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseClaim, StoreError> {
        let _open = self.writable().await?;
        check_holder(holder)?;
        let (t, c) = (team.as_str(), channel.as_str());
        // Each round reads the lease and moves it by a CAS on what it read. A CAS that
        // is not applied lost to another claim (or release) in between: read again,
        // which then answers `Held`, or `Granted` if the winner was this holder.
        for _ in 0..LEASE_ROUNDS {
            let row: Option<LeaseColumns> = self
                .read_one(&self.st.select_lease, (t, c), "read channel lease")
                .await?;
            let (current, epoch, until) = row.unwrap_or_default();
            let current = current.unwrap_or_default();
            let now = unix_ms_now();
            let expires_at_ms = lease_expiry(now, ttl);
            let until_value = to_bigint(expires_at_ms)?;
            let (answer, epoch) = match epoch {
                None => {
                    let values = (holder, 1i64, until_value, t, c);
                    let answer = cql::conditional(
                        &self.session,
                        &self.st.claim_first_lease,
                        &values,
                        "claim channel lease",
                    )
                    .await?;
                    (answer, 1)
                }
                Some(epoch) if current == holder => {
                    let values = (until_value, t, c, holder, epoch);
                    let answer = cql::conditional(
                        &self.session,
                        &self.st.renew_lease,
                        &values,
                        "renew channel lease",
                    )
                    .await?;
                    (answer, epoch)
                }
                Some(_) if !current.is_empty() && until.unwrap_or(0) >= to_bigint(now)? => {
                    return Ok(LeaseClaim::Held {
                        holder: current,
                        expires_at_ms: from_bigint(until.unwrap_or(0))?,
                    });
                }
                Some(epoch) => {
                    let next = epoch
                        .checked_add(1)
                        .ok_or_else(|| StoreError::Internal("lease epoch overflow".into()))?;
                    let values = (holder, next, until_value, t, c, epoch);
                    let answer = cql::conditional(
                        &self.session,
                        &self.st.take_over_lease,
                        &values,
                        "take over channel lease",
                    )
                    .await?;
                    (answer, next)
                }
            };
            if answer.applied {
                return Ok(LeaseClaim::Granted(ChannelLease {
                    team: team.clone(),
                    channel: channel.clone(),
                    holder: holder.to_owned(),
                    epoch: from_bigint(epoch)?,
                    expires_at_ms,
                }));
            }
        }
        Err(StoreError::Unavailable(format!(
            "the lease of {t}/{c} kept changing under concurrent claims"
        )))
    }

    async fn release_lease(&self, lease: &ChannelLease) -> Result<(), StoreError> {
        let _open = self.writable().await?;
        if lease.holder.is_empty() {
            return Ok(());
        }
        let values = (
            lease.team.as_str(),
            lease.channel.as_str(),
            lease.holder.as_str(),
            to_bigint(lease.epoch)?,
        );
        // Not applied means the lease was no longer this one: nothing to release.
        cql::conditional(
            &self.session,
            &self.st.release_lease,
            &values,
            "release channel lease",
        )
        .await
        .map(drop)
    }

    // ---- messages ----

    async fn append_messages(
        &self,
        lease: &ChannelLease,
        messages: &[NewMessage],
    ) -> Result<(), StoreError> {
        let _open = self.writable().await?;
        check_in_lease(lease, messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let (t, c) = (lease.team.as_str(), lease.channel.as_str());
        let epoch = to_bigint(lease.epoch)?;
        let timestamp = self.write_timestamp(lease.epoch)?;
        let mut rows = Vec::with_capacity(2 * messages.len());
        let mut mark = 0;
        for NewMessage { message, .. } in messages {
            let seq = to_bigint(message.seq)?;
            let bucket = to_bigint(bucket_of(message.seq))?;
            // Every column is bound, absent ones as '' rather than left unset, so that
            // this row replaces all of a fenced or failed writer's row at this seq.
            let row = Row::new(
                &self.st.insert_message,
                (
                    t,
                    c,
                    bucket,
                    seq,
                    message.id.as_str(),
                    message.user.as_str(),
                    message.client_msg_id.as_str(),
                    message.text.as_str(),
                    message.ts.as_str(),
                    message.thread_ts.as_deref().unwrap_or(""),
                    message.edited_ts.as_deref().unwrap_or(""),
                    message.deleted,
                    timestamp,
                ),
            )
            .in_partition((t, c, bucket))
            .sized(
                message.text.len()
                    + message.id.as_str().len()
                    + message.user.as_str().len()
                    + message.client_msg_id.len()
                    + message.ts.len()
                    + message.thread_ts.as_ref().map_or(0, String::len)
                    + message.edited_ts.as_ref().map_or(0, String::len)
                    + t.len()
                    + c.len(),
            );
            let dedup = Row::new(
                &self.st.insert_dedup,
                (t, c, message.client_msg_id.as_str(), seq, timestamp),
            )
            .sized(t.len() + c.len() + message.client_msg_id.len());
            rows.push(row);
            rows.push(dedup);
            mark = mark.max(seq);
        }
        // The rows first: until the mark moves, no read returns them.
        self.write_unbatched(rows, "append messages").await?;
        let commit = cql::conditional(
            &self.session,
            &self.st.commit_seq,
            &(mark, t, c, epoch),
            "commit appended messages",
        )
        .await?;
        if !commit.applied {
            let current = commit.bigint("epoch").unwrap_or(0);
            return Err(fenced(lease, u64::try_from(current).unwrap_or(0)));
        }
        Ok(())
    }

    async fn last_seq(&self, team: &TeamId, channel: &ChannelId) -> Result<u64, StoreError> {
        let row: Option<(Option<i64>,)> = self
            .read_one(
                &self.st.select_last_seq,
                (team.as_str(), channel.as_str()),
                "read last seq",
            )
            .await?;
        match row {
            Some((Some(seq),)) => from_bigint(seq),
            _ => Ok(0),
        }
    }

    async fn message_by_client_msg_id(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        client_msg_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let (t, c) = (team.as_str(), channel.as_str());
        let dedup = self.read_one::<(i64,)>(
            &self.st.select_dedup,
            (t, c, client_msg_id),
            "read client_msg_id",
        );
        let (mark, dedup) = futures::try_join!(self.last_seq(team, channel), dedup)?;
        let Some((seq,)) = dedup else {
            return Ok(None);
        };
        let seq = from_bigint(seq)?;
        if seq > mark {
            // Left by an append that failed before its commit.
            return Ok(None);
        }
        let row: Option<MessageRow> = self
            .read_one(
                &self.st.select_message,
                (t, c, to_bigint(bucket_of(seq))?, to_bigint(seq)?),
                "read message",
            )
            .await?;
        // The seq may since hold another message (the failed append's seq was reused).
        match row {
            Some(row) if row.client_msg_id == client_msg_id => row.into_message(channel).map(Some),
            _ => Ok(None),
        }
    }

    async fn history(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mark = self.last_seq(team, channel).await?;
        // Exclusive upper bound. Clamping to the mark also keeps a `before` far beyond
        // the channel from walking down through empty buckets.
        let upper = before.unwrap_or(u64::MAX).min(mark.saturating_add(1));
        if upper <= 1 {
            return Ok(Vec::new());
        }
        let (t, c) = (team.as_str(), channel.as_str());
        let mut out = Vec::with_capacity(limit.min(BUCKET_SEQS as usize));
        let mut bucket = bucket_of(upper - 1);
        loop {
            let want = limit - out.len();
            let values = (t, c, to_bigint(bucket)?, to_bigint(upper)?, to_limit(want));
            self.scan_bucket(&self.st.select_before, values, channel, want, &mut out)
                .await?;
            if out.len() >= limit || bucket == 0 {
                return Ok(out);
            }
            bucket -= 1;
        }
    }

    async fn messages_after(
        &self,
        team: &TeamId,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mark = self.last_seq(team, channel).await?;
        if after >= mark {
            return Ok(Vec::new());
        }
        let (t, c) = (team.as_str(), channel.as_str());
        let mut out = Vec::with_capacity(limit.min(BUCKET_SEQS as usize));
        let mut bucket = bucket_of(after + 1);
        let last = bucket_of(mark);
        loop {
            let want = limit - out.len();
            let values = (
                t,
                c,
                to_bigint(bucket)?,
                to_bigint(after)?,
                to_bigint(mark)?,
                to_limit(want),
            );
            self.scan_bucket(&self.st.select_after, values, channel, want, &mut out)
                .await?;
            if out.len() >= limit || bucket >= last {
                return Ok(out);
            }
            bucket += 1;
        }
    }

    // ---- read state ----

    async fn mark_read(
        &self,
        team: &TeamId,
        user: &UserId,
        channel: &ChannelId,
        seq: u64,
    ) -> Result<(), StoreError> {
        let _open = self.writable().await?;
        let (t, u, c) = (team.as_str(), user.as_str(), channel.as_str());
        let seq = to_bigint(seq)?;
        // Rows are never deleted, so once one exists the conditional update decides;
        // the loop only runs again when another first marker won the insert.
        for _ in 0..3 {
            let advanced = cql::conditional(
                &self.session,
                &self.st.advance_read,
                &(seq, t, u, c, seq),
                "advance read marker",
            )
            .await?;
            if advanced.applied || advanced.bigint("seq").is_some() {
                // Moved forward, or already at or past `seq`.
                return Ok(());
            }
            let inserted = cql::conditional(
                &self.session,
                &self.st.insert_read,
                &(t, u, c, seq),
                "insert read marker",
            )
            .await?;
            if inserted.applied || inserted.bigint("seq").is_some_and(|current| current >= seq) {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(
            "read marker kept changing under concurrent updates".into(),
        ))
    }

    async fn read_markers(
        &self,
        team: &TeamId,
        user: &UserId,
    ) -> Result<Vec<(ChannelId, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = self
            .read_many(
                &self.st.select_read_state,
                (team.as_str(), user.as_str()),
                usize::MAX,
                "read markers",
            )
            .await?;
        rows.into_iter()
            .map(|(channel, seq)| Ok((ChannelId::new(channel), from_bigint(seq)?)))
            .collect()
    }

    // ---- push subscriptions ----

    async fn create_push_subscription(&self, sub: &PushSubscription) -> Result<(), StoreError> {
        let _open = self.writable().await?;
        let values = (
            sub.team.as_str(),
            sub.user.as_str(),
            sub.id.as_str(),
            sub.url.as_str(),
            sub.created_ts.as_str(),
        );
        self.session
            .execute_unpaged(&self.st.insert_push_subscription, values)
            .await
            .map(drop)
            .map_err(|e| cql::execution("write push subscription", e))
    }

    async fn push_subscriptions(
        &self,
        team: &TeamId,
        user: &UserId,
    ) -> Result<Vec<PushSubscription>, StoreError> {
        let rows: Vec<(String, String, String)> = self
            .read_many(
                &self.st.select_push_subscriptions,
                (team.as_str(), user.as_str()),
                usize::MAX,
                "read push subscriptions",
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, url, created_ts)| PushSubscription {
                team: team.clone(),
                user: user.clone(),
                id,
                url,
                created_ts,
            })
            .collect())
    }

    async fn delete_push_subscription(
        &self,
        team: &TeamId,
        user: &UserId,
        id: &str,
    ) -> Result<bool, StoreError> {
        let _open = self.writable().await?;
        let key = (team.as_str(), user.as_str(), id);
        // Read, then delete: `DELETE … IF EXISTS` would answer exactly, but an LWT's
        // ballot timestamp could shadow a re-registration of the same id written with a
        // client timestamp from a clock behind the coordinator's.
        let found: Option<(String,)> = self
            .read_one(
                &self.st.select_push_subscription,
                key,
                "read push subscription",
            )
            .await?;
        if found.is_none() {
            return Ok(false);
        }
        self.session
            .execute_unpaged(&self.st.delete_push_subscription, key)
            .await
            .map_err(|e| cql::execution("delete push subscription", e))?;
        Ok(true)
    }

    async fn claim_push_delivery(
        &self,
        team: &TeamId,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let _open = self.writable().await?;
        // CQL TTLs are whole seconds, at least 1 and at most 20 years.
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let seconds = i32::try_from(seconds.clamp(1, MAX_TTL_SECONDS)).unwrap_or(i32::MAX);
        // A retry after a timeout that was applied after all finds this token.
        let token = claim_token();
        let claim = cql::conditional(
            &self.session,
            &self.st.claim_push_delivery,
            &(team.as_str(), key, token.as_str(), seconds),
            "claim push delivery",
        )
        .await?;
        Ok(claim.applied || claim.text("claimant") == Some(token.as_str()))
    }

    async fn push_delivered(&self, team: &TeamId, key: &str) -> Result<bool, StoreError> {
        // The TTL removes an expired claim's row; a row read is a claim in force.
        let row: Option<(Option<String>,)> = self
            .read_one(
                &self.st.select_push_delivery,
                (team.as_str(), key),
                "read push delivery",
            )
            .await?;
        Ok(row.is_some())
    }

    // ---- lifecycle ----

    async fn flush(&self) -> Result<(), StoreError> {
        // Waits for the writes in flight; acknowledged writes are on the replicas already.
        *self.closed.write().await = true;
        Ok(())
    }
}

/// A random token telling one claiming call from every other.
fn claim_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:x}-{random:016x}", std::process::id())
}

/// Runs `futures` at most `limit` at a time, answers in order; stops at the first error.
async fn bounded<F, T>(futures: Vec<F>, limit: usize) -> Result<Vec<T>, StoreError>
where
    F: Future<Output = Result<T, StoreError>>,
{
    let mut out = Vec::with_capacity(futures.len());
    let mut pending = futures.into_iter();
    loop {
        let wave: Vec<F> = pending.by_ref().take(limit).collect();
        if wave.is_empty() {
            return Ok(out);
        }
        out.extend(futures::future::try_join_all(wave).await?);
    }
}

// ---- rows ----

/// `(team_id, channel_id, bucket)`: the partition of a message row.
type PartitionKey<'a> = (&'a str, &'a str, i64);

/// `holder, epoch, lease_until` of a `channel_seq` row.
type LeaseColumns = (Option<String>, Option<i64>, Option<i64>);

/// One statement of a write with its values.
struct Row<'a> {
    statement: &'a PreparedStatement,
    values: Box<dyn SerializeRow + Send + Sync + 'a>,
    /// Rough size of the mutation, for batch limits.
    bytes: usize,
    /// Set for message rows, which are batched per partition when unbatched.
    partition: Option<PartitionKey<'a>>,
}

impl<'a> Row<'a> {
    /// Per-row overhead on top of the values: keys, cell headers, timestamps.
    const OVERHEAD: usize = 64;

    fn new(statement: &'a PreparedStatement, values: impl SerializeRow + Send + Sync + 'a) -> Self {
        Row {
            statement,
            values: Box::new(values),
            bytes: Self::OVERHEAD,
            partition: None,
        }
    }

    fn sized(mut self, value_bytes: usize) -> Self {
        self.bytes = Self::OVERHEAD + value_bytes;
        self
    }

    fn in_partition(mut self, partition: PartitionKey<'a>) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// The bound values of a channel record after `team_id`, in `channel_columns!` order.
/// `None` is left unset rather than bound as null, which would write a tombstone.
#[derive(Clone)]
struct ChannelValues<'a> {
    id: &'a str,
    name: &'a str,
    private: bool,
    kind: String,
    members: MaybeUnset<Vec<&'a str>>,
    created_by: &'a str,
    dm_key: MaybeUnset<&'a str>,
    team: &'a str,
}

impl<'a> ChannelValues<'a> {
    fn new(record: &'a ChannelRecord) -> Result<Self, StoreError> {
        let channel = &record.channel;
        Ok(ChannelValues {
            id: channel.id.as_str(),
            name: channel.name.as_str(),
            private: channel.private,
            kind: kind_name(channel.kind)?,
            members: unset_if_none(
                channel
                    .members
                    .as_ref()
                    .map(|members| members.iter().map(UserId::as_str).collect()),
            ),
            created_by: record.created_by.as_str(),
            dm_key: unset_if_none(record.dm_key.as_deref()),
            team: record.team.as_str(),
        })
    }

    /// The values of `insert_channel` and `insert_public`.
    #[expect(clippy::type_complexity, reason = "the column list, spelled out")]
    fn row(
        self,
    ) -> (
        &'a str,
        &'a str,
        &'a str,
        bool,
        String,
        MaybeUnset<Vec<&'a str>>,
        &'a str,
        MaybeUnset<&'a str>,
    ) {
        (
            self.team,
            self.id,
            self.name,
            self.private,
            self.kind,
            self.members,
            self.created_by,
            self.dm_key,
        )
    }
}

#[derive(DeserializeRow)]
struct UserRow {
    user_id: String,
    name: String,
    email: String,
    is_admin: Option<bool>,
    password_hash: String,
}

impl UserRow {
    fn into_record(self, team: &TeamId) -> UserRecord {
        UserRecord {
            user: User {
                id: UserId::new(self.user_id),
                team: team.clone(),
                name: self.name,
                email: self.email,
                is_admin: self.is_admin.unwrap_or(false),
            },
            password_hash: self.password_hash,
        }
    }
}

#[derive(DeserializeRow)]
struct ChannelRow {
    channel_id: String,
    name: String,
    private: bool,
    kind: String,
    members: Option<Vec<String>>,
    created_by: String,
    dm_key: Option<String>,
}

impl ChannelRow {
    fn into_record(self, team: &TeamId) -> Result<ChannelRecord, StoreError> {
        Ok(ChannelRecord {
            team: team.clone(),
            channel: Channel {
                id: ChannelId::new(self.channel_id),
                name: self.name,
                private: self.private,
                kind: parse_kind(&self.kind)?,
                members: self
                    .members
                    .map(|members| members.into_iter().map(UserId::new).collect()),
            },
            created_by: UserId::new(self.created_by),
            dm_key: self.dm_key,
        })
    }
}

#[derive(DeserializeRow)]
struct MessageRow {
    seq: i64,
    message_id: String,
    user_id: String,
    client_msg_id: String,
    body: String,
    ts: String,
    thread_ts: Option<String>,
    edited_ts: Option<String>,
    deleted: Option<bool>,
}

impl MessageRow {
    fn into_message(self, channel: &ChannelId) -> Result<Message, StoreError> {
        Ok(Message {
            id: MessageId::new(self.message_id),
            channel: channel.clone(),
            user: UserId::new(self.user_id),
            text: self.body,
            seq: from_bigint(self.seq)?,
            ts: self.ts,
            client_msg_id: self.client_msg_id,
            // '' is how an append binds "none" (see `append_messages`); null is how
            // rows from before leases say it.
            thread_ts: self.thread_ts.filter(|ts| !ts.is_empty()),
            edited_ts: self.edited_ts.filter(|ts| !ts.is_empty()),
            deleted: self.deleted.unwrap_or(false),
        })
    }
}

// ---- conversions ----

fn validate(options: &ScyllaStoreOptions) -> Result<(), StoreError> {
    let ks = &options.keyspace;
    // The name is spliced into CREATE KEYSPACE, so it must be a plain identifier.
    let plain = ks.len() <= 48
        && ks.starts_with(|c: char| c.is_ascii_alphabetic())
        && ks.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain {
        return Err(StoreError::Internal(format!(
            "invalid keyspace name {ks:?}: letters, digits and _, at most 48, starting with a letter"
        )));
    }
    if options.nodes.is_empty() {
        return Err(StoreError::Internal("no cassandra nodes configured".into()));
    }
    if options.replication_factor == 0 {
        return Err(StoreError::Internal(
            "replication factor must be at least 1".into(),
        ));
    }
    Ok(())
}

/// CQL `bigint` is signed; seqs and buckets beyond `i64::MAX` cannot be stored.
fn to_bigint(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Internal(format!("{value} exceeds bigint")))
}

fn from_bigint(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Internal(format!("negative seq {value} in store")))
}

/// A CQL `LIMIT` is an `int`.
fn to_limit(want: usize) -> i32 {
    i32::try_from(want).unwrap_or(i32::MAX)
}

fn unset_if_none<T>(value: Option<T>) -> MaybeUnset<T> {
    MaybeUnset::from_option(value)
}

/// Channel kinds are stored under their API names (`public`, `group_dm`, …).
fn kind_name(kind: ChannelKind) -> Result<String, StoreError> {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        other => Err(StoreError::Internal(format!(
            "channel kind {kind:?} has no name: {other:?}"
        ))),
    }
}

fn parse_kind(name: &str) -> Result<ChannelKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| StoreError::Internal(format!("unknown channel kind {name:?} in store")))
}
