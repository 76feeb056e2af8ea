//! The store conformance suite against the embedded fjall driver, plus what only an
//! embedded store has: reopening a directory, group commit, and the directory lock.

use confab_proto::{
    Channel, ChannelId, ChannelKind, Message, MessageId, Team, TeamId, User, UserId,
};
use confab_store::{
    ChannelLease, ChannelRecord, FjallStore, FjallStoreOptions, LeaseClaim, NewMessage, Store,
    StoreError, SyncPolicy, UserRecord,
};
use std::sync::Arc;
use std::time::Duration;

// Each case gets its own store in its own temp directory, removed when the case ends.
confab_store::store_conformance_tests!(|| async {
    Arc::new(FjallStore::open_temporary(SyncPolicy::Fsync).unwrap()) as Arc<dyn Store>
});

fn open(dir: &std::path::Path) -> FjallStore {
    FjallStore::open(FjallStoreOptions {
        dir: dir.to_path_buf(),
        sync: SyncPolicy::Fsync,
    })
    .unwrap()
}

fn team() -> (Team, UserRecord) {
    let team = Team {
        id: TeamId::generate(),
        name: "Acme".into(),
        domain: format!("acme-{}", TeamId::generate().as_str().to_lowercase()),
    };
    let owner = UserRecord {
        user: User {
            id: UserId::generate(),
            team: team.id.clone(),
            name: "owner".into(),
            email: "owner@example.com".into(),
            is_admin: true,
        },
        password_hash: "hash".into(),
    };
    (team, owner)
}

fn channel(team: &TeamId, name: &str, creator: &UserId) -> ChannelRecord {
    ChannelRecord {
        team: team.clone(),
        channel: Channel {
            id: ChannelId::generate(),
            name: name.into(),
            private: false,
            kind: ChannelKind::Public,
            members: None,
        },
        created_by: creator.clone(),
        dm_key: None,
    }
}

fn message(team: &TeamId, channel: &ChannelId, user: &UserId, seq: u64) -> NewMessage {
    NewMessage {
        team: team.clone(),
        message: Message {
            id: MessageId::generate(),
            channel: channel.clone(),
            user: user.clone(),
            text: format!("hello {seq}"),
            seq,
            ts: format!("1700000000.{seq:06}"),
            client_msg_id: format!("cm-{seq}"),
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
) -> ChannelLease {
    match store
        .claim_lease(team, channel, holder, Duration::from_secs(3600))
        .await
        .unwrap()
    {
        LeaseClaim::Granted(lease) => lease,
        held => panic!("lease of {channel} not granted: {held:?}"),
    }
}

#[tokio::test]
async fn data_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (team, owner) = team();
    let me = &owner.user.id;
    let general = channel(&team.id, "general", me);
    let id = &general.channel.id;
    let written: Vec<NewMessage> = (1..=5).map(|seq| message(&team.id, id, me, seq)).collect();
    let old_lease = {
        let store = open(dir.path());
        store.create_team(&team, &owner).await.unwrap();
        store
            .create_channel(&general, std::slice::from_ref(me))
            .await
            .unwrap();
        let lease = lease(&store, &team.id, id, "node-a").await;
        store.append_messages(&lease, &written).await.unwrap();
        store.mark_read(&team.id, me, id, 4).await.unwrap();
        // No flush: an acknowledged write is durable on its own.
        lease
    };
    let store = open(dir.path());
    assert_eq!(
        store.team_by_domain(&team.domain).await.unwrap(),
        Some(team.clone())
    );
    assert_eq!(store.user(&team.id, me).await.unwrap(), Some(owner.clone()));
    assert_eq!(
        store.channel(&team.id, id).await.unwrap(),
        Some(general.clone())
    );
    assert!(store.is_member(&team.id, id, me).await.unwrap());
    assert_eq!(store.last_seq(&team.id, id).await.unwrap(), 5);
    let history = store.history(&team.id, id, None, 10).await.unwrap();
    let expected: Vec<Message> = written.iter().rev().map(|m| m.message.clone()).collect();
    assert_eq!(history, expected);
    assert_eq!(
        store.read_markers(&team.id, me).await.unwrap(),
        vec![(id.clone(), 4)]
    );
    // Uniqueness survives the restart too.
    assert!(matches!(
        store
            .create_channel(&channel(&team.id, "general", me), &[])
            .await,
        Err(StoreError::Conflict(_))
    ));
    // The lease of the process that is gone (no flush, no release: a crash) is free at
    // once, and its epoch survives, so appends under it stay fenced.
    let taken_over = lease(&store, &team.id, id, "node-b").await;
    assert_eq!(taken_over.epoch, old_lease.epoch + 1);
    assert!(matches!(
        store
            .append_messages(&old_lease, &[message(&team.id, id, me, 6)])
            .await,
        Err(StoreError::Fenced(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_are_durable() {
    const CALLS: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let (team, owner) = team();
    let channels: Vec<ChannelId> = (0..CALLS).map(|_| ChannelId::generate()).collect();
    {
        let store = Arc::new(open(dir.path()));
        store.create_team(&team, &owner).await.unwrap();
        let mut leases = Vec::new();
        for channel in &channels {
            leases.push(lease(&*store, &team.id, channel, "node-a").await);
        }
        let before = store.commit_stats();
        // As many channel sequencers, each appending one message at the same moment.
        let tasks: Vec<_> = channels
            .iter()
            .zip(leases)
            .map(|(channel, lease)| {
                let store = Arc::clone(&store);
                let msg = message(&team.id, channel, &owner.user.id, 1);
                tokio::spawn(async move { store.append_messages(&lease, &[msg]).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let after = store.commit_stats();
        assert_eq!(after.requests - before.requests, CALLS);
        let groups = after.groups - before.groups;
        let syncs = after.syncs - before.syncs;
        assert!(
            (1..CALLS).contains(&groups),
            "{groups} groups for {CALLS} calls"
        );
        eprintln!("{CALLS} calls -> {groups} groups, {syncs} syncs");
        assert_eq!(syncs, groups, "one fsync per group under SyncPolicy::Fsync");
    }
    let store = open(dir.path());
    for channel in &channels {
        assert_eq!(store.last_seq(&team.id, channel).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn a_refused_append_leaves_nothing_visible() {
    let store = FjallStore::open_temporary(SyncPolicy::Fsync).unwrap();
    let (team, owner) = team();
    let id = ChannelId::generate();
    let lease = lease(&store, &team.id, &id, "node-a").await;
    let good = message(&team.id, &id, &owner.user.id, 1);
    let mut bad = message(&team.id, &id, &owner.user.id, 2);
    // Over the engine's 64 KiB key limit: the whole call must fail, not half of it.
    bad.message.client_msg_id = "x".repeat(70_000);
    assert!(store.append_messages(&lease, &[good, bad]).await.is_err());
    assert_eq!(store.last_seq(&team.id, &id).await.unwrap(), 0);
    assert_eq!(
        store.history(&team.id, &id, None, 10).await.unwrap(),
        vec![]
    );
    // The store keeps working afterwards.
    store
        .append_messages(&lease, &[message(&team.id, &id, &owner.user.id, 1)])
        .await
        .unwrap();
    assert_eq!(store.last_seq(&team.id, &id).await.unwrap(), 1);
}

#[tokio::test]
async fn a_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let second = FjallStore::open(FjallStoreOptions {
        dir: dir.path().to_path_buf(),
        sync: SyncPolicy::Fsync,
    });
    assert!(matches!(second, Err(StoreError::Unavailable(_))));
    drop(first);
    open(dir.path());
}

#[tokio::test]
async fn flushed_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (team, owner) = team();
    {
        let store = open(dir.path());
        store.create_team(&team, &owner).await.unwrap();
        store.flush().await.unwrap();
        assert!(store.flush().await.is_ok());
        // Reads keep working on a flushed store; only writes stop.
        assert_eq!(store.team(&team.id).await.unwrap(), Some(team.clone()));
    }
    let store = open(dir.path());
    assert_eq!(store.team(&team.id).await.unwrap(), Some(team));
}

#[tokio::test]
async fn os_sync_policy_works_and_skips_fsyncs() {
    let store = FjallStore::open_temporary(SyncPolicy::Os).unwrap();
    let (team, owner) = team();
    store.create_team(&team, &owner).await.unwrap();
    let id = ChannelId::generate();
    let lease = lease(&store, &team.id, &id, "node-a").await;
    store
        .append_messages(&lease, &[message(&team.id, &id, &owner.user.id, 1)])
        .await
        .unwrap();
    assert_eq!(store.last_seq(&team.id, &id).await.unwrap(), 1);
    let stats = store.commit_stats();
    // The team, the lease claim, the append.
    assert_eq!((stats.requests, stats.groups, stats.syncs), (3, 3, 0));
}

#[tokio::test]
async fn temporary_store_removes_its_directory() {
    let store = FjallStore::open_temporary(SyncPolicy::Os).unwrap();
    let dir = store.dir().to_path_buf();
    assert!(dir.exists());
    drop(store);
    assert!(!dir.exists());
}
