//! The store conformance suite against a real Apache Cassandra (or ScyllaDB), plus what
//! only this driver has: versioned schema migrations, the per-channel commit mark moved
//! under a lease epoch, epoch-stamped message rows, and forward-only read markers
//! decided by lightweight transactions.
//!
//! Needs a running node: `scripts/services/services.sh up cassandra`, then
//! `source .services/endpoints.env` (it sets `CONFAB_CASSANDRA_NODES`). Without that
//! variable every test here fails, never skips: a green run must mean the driver ran.

use confab_proto::{ChannelId, Message, MessageId, TeamId, UserId};
use confab_store::scylla_store::SCHEMA_VERSION;
use confab_store::{
    ChannelLease, LeaseClaim, NewMessage, ScyllaStore, ScyllaStoreOptions, Store, StoreError,
};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::value::CqlTimestamp;
use std::sync::Arc;
use std::time::Duration;

/// The keyspace the conformance cases share. Cases use random team ids, so they (and
/// earlier runs) never see each other's data.
const KEYSPACE: &str = "confab_test";

fn nodes() -> Vec<String> {
    let nodes = std::env::var("CONFAB_CASSANDRA_NODES").unwrap_or_default();
    let nodes: Vec<String> = nodes
        .split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(String::from)
        .collect();
    assert!(
        !nodes.is_empty(),
        "CONFAB_CASSANDRA_NODES is not set: run scripts/services/services.sh up cassandra, \
         then source .services/endpoints.env (these tests need a real Cassandra node)"
    );
    nodes
}

fn options(keyspace: &str) -> ScyllaStoreOptions {
    ScyllaStoreOptions {
        nodes: nodes(),
        keyspace: keyspace.into(),
        replication_factor: 1,
    }
}

async fn connect(keyspace: &str) -> ScyllaStore {
    match ScyllaStore::connect(options(keyspace)).await {
        Ok(store) => store,
        Err(e) => panic!("cannot connect to cassandra at {:?}: {e}", nodes()),
    }
}

// A fresh session per case (the flush case shuts its handle down) on the shared,
// already-migrated keyspace.
confab_store::store_conformance_tests!(|| async {
    Arc::new(connect(KEYSPACE).await) as Arc<dyn Store>
});

/// A plain driver session for looking under the store.
async fn raw_session(keyspace: &str) -> Session {
    let session = SessionBuilder::new()
        .known_nodes(nodes())
        .build()
        .await
        .unwrap();
    session.use_keyspace(keyspace, false).await.unwrap();
    session
}

/// A keyspace no other test or run uses, for tests that need an empty one.
fn fresh_keyspace(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        UserId::generate().as_str()[1..].to_lowercase()
    )
}

fn message(team: &TeamId, channel: &ChannelId, seq: u64, text: &str) -> NewMessage {
    let id = MessageId::generate();
    NewMessage {
        team: team.clone(),
        message: Message {
            client_msg_id: format!("cm-{}", id.as_str()),
            id,
            channel: channel.clone(),
            user: UserId::new("U1"),
            text: text.into(),
            seq,
            ts: format!("1700000000.{seq:06}"),
            thread_ts: None,
            edited_ts: None,
            deleted: false,
        },
    }
}

/// The channel's lease for `holder`, which must be free to take.
async fn lease(
    store: &dyn Store,
    team: &TeamId,
    channel: &ChannelId,
    holder: &str,
    ttl: Duration,
) -> ChannelLease {
    match store.claim_lease(team, channel, holder, ttl).await.unwrap() {
        LeaseClaim::Granted(lease) => lease,
        held => panic!("lease of {channel} not granted: {held:?}"),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// The body and write timestamp of the stored row at `seq`, whether committed or not.
async fn raw_message(
    session: &Session,
    team: &TeamId,
    channel: &ChannelId,
    seq: i64,
) -> Option<(String, i64)> {
    session
        .query_unpaged(
            "SELECT body, WRITETIME(body) FROM messages \
             WHERE team_id = ? AND channel_id = ? AND bucket = 0 AND seq = ?",
            (team.as_str(), channel.as_str(), seq),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .maybe_first_row::<(String, i64)>()
        .unwrap()
}

/// Applied versions and how often each is listed, read straight from the table.
async fn listed_versions(session: &Session) -> Vec<(i32, bool)> {
    let rows = session
        .query_unpaged("SELECT version, applied_at FROM schema_migrations", ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut versions: Vec<(i32, bool)> = rows
        .rows::<(i32, Option<CqlTimestamp>)>()
        .unwrap()
        .map(|row| {
            let (version, applied_at) = row.unwrap();
            (version, applied_at.is_some())
        })
        .collect();
    versions.sort_unstable();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_with_concurrent_starters_and_on_restart() {
    let keyspace = fresh_keyspace("confab_migrations");
    // Three processes starting at once against an empty keyspace, then a restart.
    let starters: Vec<_> = (0..3)
        .map(|_| {
            let keyspace = keyspace.clone();
            tokio::spawn(async move { connect(&keyspace).await })
        })
        .collect();
    let mut stores = Vec::new();
    for starter in starters {
        stores.push(starter.await.unwrap());
    }
    let again = connect(&keyspace).await;

    let session = raw_session(&keyspace).await;
    let expected: Vec<(i32, bool)> = (1..=SCHEMA_VERSION).map(|v| (v, true)).collect();
    assert_eq!(listed_versions(&session).await, expected);

    // Every store works on the migrated schema.
    let team = TeamId::generate();
    let channel = ChannelId::generate();
    let first = lease(&stores[0], &team, &channel, "node-a", HOUR).await;
    stores[0]
        .append_messages(&first, &[message(&team, &channel, 1, "hi")])
        .await
        .unwrap();
    assert_eq!(again.last_seq(&team, &channel).await.unwrap(), 1);

    // A starter that died after adding some of version 5's columns leaves it to be
    // re-run: the columns already there are skipped, not an error.
    session
        .query_unpaged("DELETE FROM schema_migrations WHERE version = 5", ())
        .await
        .unwrap();
    session
        .query_unpaged("ALTER TABLE channel_seq DROP lease_until", ())
        .await
        .unwrap();
    let rerun = connect(&keyspace).await;
    assert_eq!(listed_versions(&session).await, expected);
    assert_eq!(
        lease(&rerun, &team, &ChannelId::generate(), "node-b", HOUR)
            .await
            .epoch,
        1
    );

    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .unwrap();
}

#[tokio::test]
async fn connecting_to_a_dead_node_is_unavailable() {
    let result = ScyllaStore::connect(ScyllaStoreOptions {
        // Port 1 on loopback: nothing listens there.
        nodes: vec!["127.0.0.1:1".into()],
        keyspace: KEYSPACE.into(),
        replication_factor: 1,
    })
    .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn rejects_a_keyspace_name_that_is_not_an_identifier() {
    let result = ScyllaStore::connect(options("bad-name; DROP KEYSPACE x")).await;
    assert!(matches!(result, Err(StoreError::Internal(_))), "{result:?}");
}

/// Rows an append wrote without reaching its commit (a failure between the rows and the
/// mark) are never read, and the next append over the same seqs replaces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_above_the_commit_mark_stay_invisible() {
    let store = connect(KEYSPACE).await;
    let session = raw_session(KEYSPACE).await;
    let team = TeamId::generate();
    let channel = ChannelId::generate();
    let committed: Vec<NewMessage> = (1..=2)
        .map(|seq| message(&team, &channel, seq, "ok"))
        .collect();
    let lease = lease(&store, &team, &channel, "node-a", HOUR).await;
    store.append_messages(&lease, &committed).await.unwrap();

    // What a failed append of seq 3 leaves behind: its message and dedup rows only,
    // with a thread_ts the next message at seq 3 must not inherit.
    let orphan = message(&team, &channel, 3, "lost");
    session
        .query_unpaged(
            "INSERT INTO messages (team_id, channel_id, bucket, seq, message_id, user_id, \
             client_msg_id, body, ts, thread_ts, deleted) \
             VALUES (?, ?, 0, 3, ?, 'U1', ?, 'lost', 'x', '1700000000.000001', false)",
            (
                team.as_str(),
                channel.as_str(),
                orphan.message.id.as_str(),
                orphan.message.client_msg_id.as_str(),
            ),
        )
        .await
        .unwrap();
    session
        .query_unpaged(
            "INSERT INTO message_dedup (team_id, channel_id, client_msg_id, seq) \
             VALUES (?, ?, ?, 3)",
            (
                team.as_str(),
                channel.as_str(),
                orphan.message.client_msg_id.as_str(),
            ),
        )
        .await
        .unwrap();

    assert_eq!(store.last_seq(&team, &channel).await.unwrap(), 2);
    let seqs = |messages: Vec<Message>| messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.history(&team, &channel, None, 10).await.unwrap()),
        vec![2, 1]
    );
    assert_eq!(
        seqs(store.history(&team, &channel, Some(10), 10).await.unwrap()),
        vec![2, 1]
    );
    assert_eq!(
        seqs(store.messages_after(&team, &channel, 0, 10).await.unwrap()),
        vec![1, 2]
    );
    let lookup = store
        .message_by_client_msg_id(&team, &channel, &orphan.message.client_msg_id)
        .await
        .unwrap();
    assert_eq!(lookup, None);

    // The sequencer reuses seq 3 for the next send.
    let next = message(&team, &channel, 3, "next");
    store
        .append_messages(&lease, std::slice::from_ref(&next))
        .await
        .unwrap();
    let newest = store.history(&team, &channel, None, 1).await.unwrap();
    assert_eq!(newest, vec![next.message.clone()]);
    // The orphan's dedup row now points at another message: still not an answer.
    let lookup = store
        .message_by_client_msg_id(&team, &channel, &orphan.message.client_msg_id)
        .await
        .unwrap();
    assert_eq!(lookup, None);
}

/// A holder whose lease ran out and was taken over (a "zombie": paused, partitioned)
/// goes on appending at seqs the new holder also uses. Its rows are written before its
/// commit is refused, so they do land in the table, but they never show up: at a seq
/// the new holder wrote, the new holder's row wins by its later epoch's timestamp even
/// when the zombie writes last; above the mark, reads never look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_zombie_never_shows_up() {
    // Two nodes, each with its own handle (and its own append counter).
    let zombie_node = connect(KEYSPACE).await;
    let new_node = connect(KEYSPACE).await;
    let session = raw_session(KEYSPACE).await;
    let team = TeamId::generate();
    let channel = ChannelId::generate();
    let old = lease(
        &zombie_node,
        &team,
        &channel,
        "node-a",
        Duration::from_millis(300),
    )
    .await;
    // Many appends: the zombie's counter runs far ahead of the new node's.
    for seq in 1..=5 {
        zombie_node
            .append_messages(&old, &[message(&team, &channel, seq, "early")])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = lease(&new_node, &team, &channel, "node-b", HOUR).await;
    assert_eq!(new.epoch, old.epoch + 1);

    // seq 6: the zombie first, then the new holder. seq 7: the other way round.
    let fenced = |result: Result<(), StoreError>| {
        assert!(
            matches!(result, Err(StoreError::Fenced(_))),
            "expected Fenced, got {result:?}"
        );
    };
    let zombie_6 = message(&team, &channel, 6, "zombie 6");
    fenced(
        zombie_node
            .append_messages(&old, std::slice::from_ref(&zombie_6))
            .await,
    );
    assert_eq!(
        raw_message(&session, &team, &channel, 6)
            .await
            .map(|(body, _)| body),
        Some("zombie 6".into()),
        "the zombie's row is in the table, above the mark"
    );
    let new_6 = message(&team, &channel, 6, "new 6");
    let new_7 = message(&team, &channel, 7, "new 7");
    new_node
        .append_messages(&new, &[new_6.clone(), new_7.clone()])
        .await
        .unwrap();
    let zombie_7 = message(&team, &channel, 7, "zombie 7");
    fenced(
        zombie_node
            .append_messages(&old, std::slice::from_ref(&zombie_7))
            .await,
    );

    for (seq, body) in [(6, "new 6"), (7, "new 7")] {
        let (stored, timestamp) = raw_message(&session, &team, &channel, seq).await.unwrap();
        assert_eq!(stored, body);
        let epoch = i64::try_from(new.epoch).unwrap();
        assert!(
            timestamp >= (1 << 52) + (epoch << 32),
            "seq {seq} written at {timestamp}, below epoch {epoch}'s timestamps"
        );
    }
    assert_eq!(new_node.last_seq(&team, &channel).await.unwrap(), 7);
    let newest = new_node.history(&team, &channel, None, 2).await.unwrap();
    assert_eq!(newest, vec![new_7.message.clone(), new_6.message.clone()]);
    for zombie in [&zombie_6, &zombie_7] {
        assert_eq!(
            new_node
                .message_by_client_msg_id(&team, &channel, &zombie.message.client_msg_id)
                .await
                .unwrap(),
            None
        );
    }
}

/// A channel with messages from before leases (its mark written `USING TIMESTAMP seq`,
/// its rows with clock timestamps and null optional columns) gets epoch 1 and goes on
/// from its mark; the LWT-written mark replaces the old one.
#[tokio::test]
async fn a_channel_from_before_leases_gets_its_first_lease() {
    let store = connect(KEYSPACE).await;
    let session = raw_session(KEYSPACE).await;
    let team = TeamId::generate();
    let channel = ChannelId::generate();
    let old = message(&team, &channel, 5, "from before");
    session
        .query_unpaged(
            "INSERT INTO messages (team_id, channel_id, bucket, seq, message_id, user_id, \
             client_msg_id, body, ts, deleted) VALUES (?, ?, 0, 5, ?, 'U1', ?, 'from before', ?, false)",
            (
                team.as_str(),
                channel.as_str(),
                old.message.id.as_str(),
                old.message.client_msg_id.as_str(),
                old.message.ts.as_str(),
            ),
        )
        .await
        .unwrap();
    session
        .query_unpaged(
            "UPDATE channel_seq USING TIMESTAMP 5 SET last_seq = 5 \
             WHERE team_id = ? AND channel_id = ?",
            (team.as_str(), channel.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(store.last_seq(&team, &channel).await.unwrap(), 5);

    let lease = lease(&store, &team, &channel, "node-a", HOUR).await;
    assert_eq!(lease.epoch, 1);
    let next = message(&team, &channel, 6, "after");
    store
        .append_messages(&lease, std::slice::from_ref(&next))
        .await
        .unwrap();
    assert_eq!(store.last_seq(&team, &channel).await.unwrap(), 6);
    assert_eq!(
        store.history(&team, &channel, None, 10).await.unwrap(),
        vec![next.message, old.message]
    );
}

/// A sequencer's batch is written whole both when it is small and when it is larger than
/// Cassandra lets any batch be (`batch_size_fail_threshold`, 50 KiB).
#[tokio::test]
async fn appends_of_any_size_are_written_whole() {
    let store = connect(KEYSPACE).await;
    let team = TeamId::generate();
    // Message rows go in unlogged batches per bucket, the long ones split into several.
    for (count, text_len) in [(3u64, 100), (40, 100), (200, 2000)] {
        let channel = ChannelId::generate();
        let text = "x".repeat(text_len);
        let all: Vec<NewMessage> = (1..=count)
            .map(|seq| message(&team, &channel, seq, &format!("{seq}{text}")))
            .collect();
        let lease = lease(&store, &team, &channel, "node-a", HOUR).await;
        store.append_messages(&lease, &all).await.unwrap();
        assert_eq!(store.last_seq(&team, &channel).await.unwrap(), count);
        let read = store.messages_after(&team, &channel, 0, 500).await.unwrap();
        let written: Vec<Message> = all.into_iter().map(|m| m.message).collect();
        assert_eq!(read, written, "{count} messages of {text_len} bytes");
    }
}

/// Concurrent marks of one user and channel leave the highest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_marks_keep_the_highest() {
    let store = Arc::new(connect(KEYSPACE).await);
    let team = TeamId::generate();
    let user = UserId::generate();
    let channel = ChannelId::generate();
    let marks: Vec<_> = [7u64, 3, 12, 1, 9, 12, 5, 11]
        .into_iter()
        .map(|seq| {
            let (store, team, user, channel) =
                (store.clone(), team.clone(), user.clone(), channel.clone());
            tokio::spawn(async move { store.mark_read(&team, &user, &channel, seq).await })
        })
        .collect();
    for mark in marks {
        mark.await.unwrap().unwrap();
    }
    assert_eq!(
        store.read_markers(&team, &user).await.unwrap(),
        vec![(channel, 12)]
    );
}
