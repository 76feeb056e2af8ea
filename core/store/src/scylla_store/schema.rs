//! The Cassandra schema of the store (DESIGN.md §3) as versioned migrations, and the
//! runner that applies each of them once per keyspace, however many processes start at
//! the same time.
//!
//! # Migrations
//!
//! [`MIGRATIONS`] lists versions in order; a version, once released, never changes: a
//! schema change is a new version at the end. Every statement of a migration must be
//! safe to run twice (`CREATE … IF NOT EXISTS`; an `ALTER TABLE t ADD c …` is skipped
//! when `system_schema.columns` already lists `c`, since CQL (ScyllaDB, Cassandra before
//! 5.0) has no `ADD IF NOT EXISTS`), because a starter that crashes half-way leaves its
//! version to be re-run by another.
//!
//! # Applying them once
//!
//! `schema_migrations` has one row per version. A starter claims a pending version with
//! `INSERT … IF NOT EXISTS` (a lightweight transaction, so exactly one claim wins), runs
//! its statements, waits for schema agreement, and marks the row applied. Starters that
//! lost the claim wait for that mark. A claim older than [`STALE_CLAIM`] without a mark
//! belongs to a starter that died: it is taken over, again by a conditional update, so
//! that only one starter takes it. Concurrent DDL of one table from several coordinators
//! is what this avoids: Cassandra (before transactional cluster metadata) can end up
//! with two table ids for one name that way.
//!
//! The keyspace and the `schema_migrations` table themselves are created by every
//! starter with `IF NOT EXISTS`; on a single node that is harmless, and on a cluster the
//! first start of a fresh keyspace should come from one process (later starts only read).

use super::cql;
use crate::StoreError;
use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::unprepared::Statement;
use scylla::value::CqlTimestamp;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// A claim this old without an `applied_at` is taken to belong to a dead starter. Far
/// above what a migration's DDL takes even on a loaded machine.
const STALE_CLAIM: Duration = Duration::from_secs(120);
/// How long a starter waits for versions claimed by others before giving up.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(250);

/// One schema version.
pub(super) struct Migration {
    pub(super) version: i32,
    pub(super) description: &'static str,
    pub(super) statements: &'static [&'static str],
}

/// Every version, oldest first. Tables follow DESIGN.md §3: one table per query, and
/// `team_id` first in every partition key except `team_domains`, the lookup that finds
/// the team in the first place (login by domain).
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "teams and users",
        statements: &[
            "CREATE TABLE IF NOT EXISTS teams (
                team_id text PRIMARY KEY,
                name text,
                domain text)",
            // Domain (lower-cased) → team: the uniqueness claim, written by LWT only.
            "CREATE TABLE IF NOT EXISTS team_domains (
                domain text PRIMARY KEY,
                team_id text)",
            "CREATE TABLE IF NOT EXISTS users (
                team_id text,
                user_id text,
                name text,
                email text,
                is_admin boolean,
                password_hash text,
                PRIMARY KEY ((team_id, user_id)))",
            // Email (lower-cased) → user: the per-team uniqueness claim.
            "CREATE TABLE IF NOT EXISTS user_emails (
                team_id text,
                email text,
                user_id text,
                PRIMARY KEY ((team_id, email)))",
        ],
    },
    Migration {
        version: 2,
        description: "channels, names, DM keys and membership",
        statements: &[
            "CREATE TABLE IF NOT EXISTS channels (
                team_id text,
                channel_id text,
                name text,
                private boolean,
                kind text,
                members list<text>,
                created_by text,
                dm_key text,
                PRIMARY KEY ((team_id, channel_id)))",
            // The name claim has its own partition per name, so that creating channels
            // of different names in one team never contends on one Paxos partition.
            "CREATE TABLE IF NOT EXISTS channel_names (
                team_id text,
                name text,
                channel_id text,
                PRIMARY KEY ((team_id, name)))",
            // The listing of public channels by name: one partition per team, sorted by
            // the clustering key, with the record denormalized so a listing is one read.
            "CREATE TABLE IF NOT EXISTS public_channels (
                team_id text,
                name text,
                channel_id text,
                private boolean,
                kind text,
                members list<text>,
                created_by text,
                dm_key text,
                PRIMARY KEY ((team_id), name))",
            // DM member set → channel. The claim carries the whole record, so a caller
            // that loses the race learns the winner's channel from the LWT's answer.
            "CREATE TABLE IF NOT EXISTS dm_keys (
                team_id text,
                dm_key text,
                channel_id text,
                name text,
                private boolean,
                kind text,
                members list<text>,
                created_by text,
                PRIMARY KEY ((team_id, dm_key)))",
            "CREATE TABLE IF NOT EXISTS channel_members (
                team_id text,
                channel_id text,
                user_id text,
                PRIMARY KEY ((team_id, channel_id), user_id))",
            "CREATE TABLE IF NOT EXISTS member_channels (
                team_id text,
                user_id text,
                channel_id text,
                PRIMARY KEY ((team_id, user_id), channel_id))",
        ],
    },
    Migration {
        version: 3,
        description: "messages, client_msg_id dedup and the per-channel commit mark",
        statements: &[
            // bucket = seq / BUCKET_SEQS (docs/design-notes.md): at most 4096 rows per
            // partition, newest first within it.
            "CREATE TABLE IF NOT EXISTS messages (
                team_id text,
                channel_id text,
                bucket bigint,
                seq bigint,
                message_id text,
                user_id text,
                client_msg_id text,
                body text,
                ts text,
                thread_ts text,
                edited_ts text,
                deleted boolean,
                PRIMARY KEY ((team_id, channel_id, bucket), seq))
             WITH CLUSTERING ORDER BY (seq DESC)",
            "CREATE TABLE IF NOT EXISTS message_dedup (
                team_id text,
                channel_id text,
                client_msg_id text,
                seq bigint,
                PRIMARY KEY ((team_id, channel_id, client_msg_id)))",
            // The highest committed seq of a channel (the commit mark). Since version 5
            // also the channel's lease, and written by LWT only (see scylla_store.rs).
            "CREATE TABLE IF NOT EXISTS channel_seq (
                team_id text,
                channel_id text,
                last_seq bigint,
                PRIMARY KEY ((team_id, channel_id)))",
        ],
    },
    Migration {
        version: 4,
        description: "read markers",
        statements: &[
            // Written by LWT only (forward-only marker).
            "CREATE TABLE IF NOT EXISTS read_state (
                team_id text,
                user_id text,
                channel_id text,
                seq bigint,
                PRIMARY KEY ((team_id, user_id), channel_id))",
        ],
    },
    Migration {
        version: 5,
        description: "channel leases with a fencing epoch on channel_seq",
        statements: &[
            // Who may sequence the channel (empty once released), the lease's epoch (the
            // fencing token appends are checked against) and its expiry (unix ms, by
            // the holder's clock). In the commit mark's row, so that one LWT partition
            // serializes claims and commits.
            "ALTER TABLE channel_seq ADD holder text",
            "ALTER TABLE channel_seq ADD epoch bigint",
            "ALTER TABLE channel_seq ADD lease_until bigint",
        ],
    },
    Migration {
        version: 6,
        description: "push subscriptions and push delivery claims",
        statements: &[
            // One partition per user, listed by id.
            "CREATE TABLE IF NOT EXISTS push_subscriptions (
                team_id text,
                user_id text,
                subscription_id text,
                url text,
                created_ts text,
                PRIMARY KEY ((team_id, user_id), subscription_id))",
            // A delivery's claim: written by `INSERT … IF NOT EXISTS USING TTL` only,
            // and gone (to be claimable again) when its TTL runs out. `claimant` is a
            // random token of the claiming call, so that a retry finds its own claim.
            "CREATE TABLE IF NOT EXISTS push_deliveries (
                team_id text,
                delivery_key text,
                claimant text,
                PRIMARY KEY ((team_id, delivery_key)))",
        ],
    },
];

/// Creates `schema_migrations` if needed and applies every pending version. Returns the
/// versions this call applied itself (others may have applied the rest).
pub(super) async fn migrate(session: &Session) -> Result<Vec<i32>, StoreError> {
    ddl(
        session,
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version int PRIMARY KEY,
            description text,
            applied_at timestamp,
            claimed_by text,
            claimed_at timestamp)",
    )
    .await?;

    // The common case, a migrated keyspace, costs this one read.
    let applied = applied_versions(session).await?;
    if let Some(newest) = applied.keys().next_back()
        && *newest > SCHEMA_VERSION
    {
        tracing::warn!(
            newest,
            known = SCHEMA_VERSION,
            "keyspace has schema versions this build does not know; a newer build migrated it"
        );
    }
    let pending: Vec<&Migration> = MIGRATIONS
        .iter()
        .filter(|m| !applied.get(&m.version).copied().unwrap_or(false))
        .collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }

    let me = starter_id();
    let mut ran = Vec::new();
    for migration in pending {
        if apply_once(session, migration, &me).await? {
            ran.push(migration.version);
        }
    }
    Ok(ran)
}

/// Version → whether it is marked applied.
async fn applied_versions(session: &Session) -> Result<BTreeMap<i32, bool>, StoreError> {
    let what = "read schema_migrations";
    let result = session
        .query_unpaged("SELECT version, applied_at FROM schema_migrations", ())
        .await
        .map_err(|e| cql::execution(what, e))?;
    let rows = result
        .into_rows_result()
        .map_err(|e| cql::decode(what, e))?;
    rows.rows::<(i32, Option<CqlTimestamp>)>()
        .map_err(|e| cql::decode(what, e))?
        .map(|row| {
            row.map(|(version, applied_at)| (version, applied_at.is_some()))
                .map_err(|e| cql::decode(what, e))
        })
        .collect()
}

/// The state of one version's row, read at LOCAL_SERIAL so that a claim in flight is
/// seen as soon as its Paxos round has committed.
struct VersionRow {
    applied: bool,
    claimed_by: Option<String>,
    claimed_at: Option<CqlTimestamp>,
}

async fn version_row(session: &Session, version: i32) -> Result<Option<VersionRow>, StoreError> {
    let what = "read schema_migrations row";
    let mut statement = Statement::new(
        "SELECT applied_at, claimed_by, claimed_at FROM schema_migrations WHERE version = ?",
    );
    statement.set_consistency(Consistency::LocalSerial);
    let result = session
        .query_unpaged(statement, (version,))
        .await
        .map_err(|e| cql::execution(what, e))?;
    let rows = result
        .into_rows_result()
        .map_err(|e| cql::decode(what, e))?;
    let row = rows
        .maybe_first_row::<(Option<CqlTimestamp>, Option<String>, Option<CqlTimestamp>)>()
        .map_err(|e| cql::decode(what, e))?;
    Ok(row.map(|(applied_at, claimed_by, claimed_at)| VersionRow {
        applied: applied_at.is_some(),
        claimed_by,
        claimed_at,
    }))
}

/// Applies `migration` unless another starter does; returns whether this one did.
async fn apply_once(
    session: &Session,
    migration: &Migration,
    me: &str,
) -> Result<bool, StoreError> {
    let version = migration.version;
    let deadline = Instant::now() + WAIT_FOR_OTHERS;
    loop {
        let claimed = match version_row(session, version).await? {
            Some(row) if row.applied => return Ok(false),
            None => claim(session, migration, me).await?,
            Some(row) => {
                let owner = row.claimed_by.unwrap_or_default();
                let age = row.claimed_at.map_or(Duration::MAX, since);
                if owner == me {
                    true
                } else if age > STALE_CLAIM {
                    tracing::warn!(version, %owner, "taking over a stale schema migration claim");
                    take_over(session, version, &owner, me).await?
                } else {
                    false
                }
            }
        };
        if claimed {
            if let Err(e) = run(session, migration).await {
                // Hand the version back at once, rather than leaving others to wait out
                // STALE_CLAIM; if this fails too, the claim goes stale by itself.
                if let Err(release_error) = release(session, version, me).await {
                    tracing::warn!(version, error = %release_error, "cannot release migration claim");
                }
                return Err(e);
            }
            if mark_applied(session, version, me).await? {
                tracing::info!(
                    version,
                    description = migration.description,
                    "applied schema migration"
                );
                return Ok(true);
            }
            // Someone judged us stale and took over; they will mark it.
        }
        if Instant::now() > deadline {
            return Err(StoreError::Unavailable(format!(
                "schema migration {version} was claimed by another starter and not applied within {WAIT_FOR_OTHERS:?}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn claim(session: &Session, migration: &Migration, me: &str) -> Result<bool, StoreError> {
    let statement = session
        .prepare(
            "INSERT INTO schema_migrations (version, description, claimed_by, claimed_at)
             VALUES (?, ?, ?, ?) IF NOT EXISTS",
        )
        .await
        .map_err(|e| cql::prepare("prepare migration claim", e))?;
    let values = (migration.version, migration.description, me, now());
    let answer = cql::conditional(session, &statement, &values, "claim schema migration").await?;
    // A re-run after contention finds our own claim.
    Ok(answer.applied || answer.text("claimed_by") == Some(me))
}

async fn take_over(
    session: &Session,
    version: i32,
    owner: &str,
    me: &str,
) -> Result<bool, StoreError> {
    let statement = session
        .prepare(
            "UPDATE schema_migrations SET claimed_by = ?, claimed_at = ?
             WHERE version = ? IF claimed_by = ? AND applied_at = null",
        )
        .await
        .map_err(|e| cql::prepare("prepare migration take-over", e))?;
    let values = (me, now(), version, owner);
    let answer =
        cql::conditional(session, &statement, &values, "take over schema migration").await?;
    Ok(answer.applied || answer.text("claimed_by") == Some(me))
}

async fn mark_applied(session: &Session, version: i32, me: &str) -> Result<bool, StoreError> {
    let statement = session
        .prepare("UPDATE schema_migrations SET applied_at = ? WHERE version = ? IF claimed_by = ?")
        .await
        .map_err(|e| cql::prepare("prepare migration mark", e))?;
    let answer = cql::conditional(
        session,
        &statement,
        &(now(), version, me),
        "mark schema migration",
    )
    .await?;
    Ok(answer.applied)
}

async fn release(session: &Session, version: i32, me: &str) -> Result<(), StoreError> {
    let statement = session
        .prepare("DELETE FROM schema_migrations WHERE version = ? IF claimed_by = ?")
        .await
        .map_err(|e| cql::prepare("prepare migration release", e))?;
    cql::conditional(
        session,
        &statement,
        &(version, me),
        "release schema migration",
    )
    .await?;
    Ok(())
}

async fn run(session: &Session, migration: &Migration) -> Result<(), StoreError> {
    for statement in migration.statements {
        if let Some((table, column)) = added_column(statement)
            && has_column(session, table, column).await?
        {
            // Added by an earlier, interrupted run of this version.
            continue;
        }
        ddl(session, statement).await?;
    }
    Ok(())
}

/// The table and column of an `ALTER TABLE t ADD c type` statement.
fn added_column(statement: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    match words.as_slice() {
        [alter, table_kw, table, add, column, _type, ..]
            if alter.eq_ignore_ascii_case("ALTER")
                && table_kw.eq_ignore_ascii_case("TABLE")
                && add.eq_ignore_ascii_case("ADD") =>
        {
            Some((*table, *column))
        }
        _ => None,
    }
}

/// Whether `table` of the session's keyspace has `column` already.
async fn has_column(session: &Session, table: &str, column: &str) -> Result<bool, StoreError> {
    let what = "read system_schema.columns";
    let keyspace = session
        .get_keyspace()
        .ok_or_else(|| StoreError::Internal(format!("{what}: the session has no keyspace")))?;
    let result = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns \
             WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
            (keyspace.as_str(), table, column),
        )
        .await
        .map_err(|e| cql::execution(what, e))?;
    let rows = result
        .into_rows_result()
        .map_err(|e| cql::decode(what, e))?;
    Ok(rows.rows_num() > 0)
}

/// Runs one schema change and waits until every node has the new schema, so that the
/// statements prepared next find their tables on whichever node they reach.
pub(super) async fn ddl(session: &Session, statement: &str) -> Result<(), StoreError> {
    let what = "schema change";
    session
        .query_unpaged(statement, ())
        .await
        .map_err(|e| cql::execution(what, e))?;
    session
        .await_schema_agreement()
        .await
        .map_err(|e| StoreError::Unavailable(format!("{what}: no schema agreement: {e}")))?;
    Ok(())
}

fn now() -> CqlTimestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    CqlTimestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn since(at: CqlTimestamp) -> Duration {
    Duration::from_millis(u64::try_from(now().0.saturating_sub(at.0)).unwrap_or(0))
}

/// Tells this process's claims from others': pid, start time and a random value.
fn starter_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{}-{:x}-{random:016x}", std::process::id(), now().0)
}
