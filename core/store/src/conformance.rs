//! The one conformance suite every [`Store`] driver must pass unchanged (DESIGN.md §2):
//! the embedded fjall driver in a temp directory, and at-scale drivers against a real,
//! long-lived server.
//!
//! Each behaviour is a `pub async fn` taking a fresh `Arc<dyn Store>`, and
//! [`store_conformance_tests!`](crate::store_conformance_tests) turns them into one
//! `#[tokio::test]` each:
//!
//! ```ignore
//! use confab_store::Store;
//! use std::sync::Arc;
//!
//! confab_store::store_conformance_tests!(|| async {
//!     Arc::new(MyStore::connect(ADDR).await.unwrap()) as Arc<dyn Store>
//! });
//! ```
//!
//! Rules that let the suite share one database between cases and between runs:
//!
//! - every case creates its own teams with random ids and domains, and random emails,
//!   so it never sees another case's (or an earlier run's) data;
//! - the constructor passed to the macro is called once per case and must return a fresh
//!   handle each time: [`flush_then_writes_fail`] shuts its handle down, which must not
//!   affect other cases. (It may point at the same database.)
//!
//! The crate using the macro needs `tokio` (with `macros` and `rt-multi-thread`) among
//! its dev-dependencies.

use crate::record::unix_ms_now;
use crate::{
    BUCKET_SEQS, ChannelLease, ChannelRecord, Conflict, LeaseClaim, NewMessage, PushSubscription,
    Store, StoreError, UserRecord,
};
use confab_proto::{
    Channel, ChannelId, ChannelKind, Message, MessageId, Team, TeamId, User, UserId,
};
use std::sync::Arc;
use std::time::Duration;

/// Expands to one `#[tokio::test]` per conformance case. `$make` is a closure or fn
/// returning a future of a fresh `Arc<dyn Store>` (see the module documentation).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            team_create_and_read,
            team_domain_conflict_writes_nothing,
            user_create_and_lookup,
            user_email_conflict_is_case_insensitive,
            user_email_unique_per_team_only,
            users_in_requested_order_within_team,
            channel_create_and_read,
            channel_name_conflict_in_team_only,
            channel_name_conflict_under_concurrency,
            public_channels_lists_only_public,
            dm_get_or_create_is_idempotent,
            dm_concurrent_get_or_create_yields_one_channel,
            members_both_directions,
            lease_granted_then_held_for_another_holder,
            lease_renewal_keeps_epoch_and_extends_expiry,
            lease_expiry_lets_another_holder_take_over,
            lease_release_lets_another_holder_claim_at_once,
            concurrent_lease_claims_grant_exactly_one,
            append_with_a_superseded_lease_is_fenced,
            append_outside_the_lease_channel_fails,
            append_messages_and_last_seq,
            history_pages_newest_first_across_buckets,
            messages_after_ascending_across_buckets,
            message_by_client_msg_id,
            read_markers_move_forward_only,
            push_subscriptions_create_list_delete,
            push_subscriptions_are_per_team,
            push_delivery_claimed_once_until_ttl,
            concurrent_push_delivery_claims_grant_exactly_one,
            team_isolation,
            flush_then_writes_fail,
        );
    };
    (@cases $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store: ::std::sync::Arc<dyn $crate::Store> = ($make)().await;
                $crate::conformance::$case(store).await;
            }
        )+
    };
}

// ---- fixtures ----

/// A string no other case or run will produce.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", UserId::generate().as_str().to_lowercase())
}

fn new_team_record() -> Team {
    Team {
        id: TeamId::generate(),
        name: "Acme".into(),
        domain: unique("acme"),
    }
}

fn new_user(team: &TeamId, name: &str) -> UserRecord {
    UserRecord {
        user: User {
            id: UserId::generate(),
            team: team.clone(),
            name: name.into(),
            email: format!("{}@example.com", unique(name)),
            is_admin: false,
        },
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    }
}

/// Creates a team with an admin owner.
async fn create_team(store: &dyn Store) -> (Team, UserRecord) {
    let team = new_team_record();
    let mut owner = new_user(&team.id, "owner");
    owner.user.is_admin = true;
    store.create_team(&team, &owner).await.unwrap();
    (team, owner)
}

async fn create_user(store: &dyn Store, team: &TeamId, name: &str) -> UserRecord {
    let user = new_user(team, name);
    store.create_user(&user).await.unwrap();
    user
}

fn new_channel(team: &TeamId, name: &str, private: bool, creator: &UserId) -> ChannelRecord {
    ChannelRecord {
        team: team.clone(),
        channel: Channel {
            id: ChannelId::generate(),
            name: name.into(),
            private,
            kind: if private {
                ChannelKind::Private
            } else {
                ChannelKind::Public
            },
            members: None,
        },
        created_by: creator.clone(),
        dm_key: None,
    }
}

async fn create_channel(
    store: &dyn Store,
    team: &TeamId,
    name: &str,
    private: bool,
    members: &[UserId],
) -> ChannelRecord {
    let channel = new_channel(team, name, private, &members[0]);
    store.create_channel(&channel, members).await.unwrap();
    channel
}

/// A DM (two members) or group DM record with a fresh id and the canonical key.
fn new_dm(team: &TeamId, members: &[UserId]) -> ChannelRecord {
    let mut sorted = members.to_vec();
    sorted.sort();
    let dm_key = sorted
        .iter()
        .map(UserId::as_str)
        .collect::<Vec<_>>()
        .join(",");
    ChannelRecord {
        team: team.clone(),
        channel: Channel {
            id: ChannelId::generate_dm(),
            name: String::new(),
            private: true,
            kind: if sorted.len() > 2 {
                ChannelKind::GroupDm
            } else {
                ChannelKind::Dm
            },
            members: Some(sorted),
        },
        created_by: members[0].clone(),
        dm_key: Some(dm_key),
    }
}

fn new_message(team: &TeamId, channel: &ChannelId, user: &UserId, seq: u64) -> NewMessage {
    NewMessage {
        team: team.clone(),
        message: Message {
            id: MessageId::generate(),
            channel: channel.clone(),
            user: user.clone(),
            text: format!("message {seq}"),
            seq,
            ts: format!("{}.{:06}", 1_700_000_000 + seq, seq % 1_000_000),
            client_msg_id: unique(&format!("cm{seq}")),
            thread_ts: None,
            edited_ts: None,
            deleted: false,
        },
    }
}

/// Long enough for any case: leases that must run out use [`SHORT_TTL`].
const LONG_TTL: Duration = Duration::from_secs(3600);
/// A lease that runs out within a case; cases sleep [`PAST_SHORT_TTL`] to get past it.
const SHORT_TTL: Duration = Duration::from_millis(300);
const PAST_SHORT_TTL: Duration = Duration::from_millis(500);

/// A claim that must be granted.
fn granted(claim: LeaseClaim) -> ChannelLease {
    match claim {
        LeaseClaim::Granted(lease) => lease,
        held => panic!("expected a granted lease, got {held:?}"),
    }
}

/// Claims the channel's lease under a fresh holder name, as a sequencer does before it
/// appends.
async fn lease_for(store: &dyn Store, team: &TeamId, channel: &ChannelId) -> ChannelLease {
    granted(
        store
            .claim_lease(team, channel, &unique("node"), LONG_TTL)
            .await
            .unwrap(),
    )
}

/// Appends `seqs` in calls of `per_call` messages, as a sequencer batching sends would.
async fn append_seqs(
    store: &dyn Store,
    team: &TeamId,
    channel: &ChannelId,
    user: &UserId,
    seqs: std::ops::RangeInclusive<u64>,
    per_call: usize,
) -> Vec<Message> {
    let lease = lease_for(store, team, channel).await;
    let all: Vec<NewMessage> = seqs
        .map(|seq| new_message(team, channel, user, seq))
        .collect();
    for chunk in all.chunks(per_call) {
        store.append_messages(&lease, chunk).await.unwrap();
    }
    all.into_iter().map(|m| m.message).collect()
}

fn seqs_of(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: Conflict) {
    match result {
        Err(StoreError::Conflict(conflict)) if conflict == expected => {}
        other => panic!("expected Conflict({expected:?}), got {other:?}"),
    }
}

// ---- teams ----

/// A created team is found by id and domain, and its owner is created with it.
pub async fn team_create_and_read(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    assert_eq!(store.team(&team.id).await.unwrap(), Some(team.clone()));
    assert_eq!(
        store.team_by_domain(&team.domain).await.unwrap(),
        Some(team.clone())
    );
    assert_eq!(
        store.user(&team.id, &owner.user.id).await.unwrap(),
        Some(owner.clone())
    );
    assert_eq!(
        store
            .user_by_email(&team.id, &owner.user.email)
            .await
            .unwrap(),
        Some(owner)
    );
    assert_eq!(store.team(&TeamId::generate()).await.unwrap(), None);
    assert_eq!(store.team_by_domain(&unique("none")).await.unwrap(), None);
}

/// A taken domain fails with `Conflict(TeamDomain)` and writes neither team nor owner.
pub async fn team_domain_conflict_writes_nothing(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let mut second = new_team_record();
    second.domain = team.domain.clone();
    let second_owner = new_user(&second.id, "owner2");
    assert_conflict(
        store.create_team(&second, &second_owner).await,
        Conflict::TeamDomain,
    );
    assert_eq!(store.team(&second.id).await.unwrap(), None);
    assert_eq!(
        store.user(&second.id, &second_owner.user.id).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .user_by_email(&second.id, &second_owner.user.email)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.team_by_domain(&team.domain).await.unwrap(),
        Some(team)
    );
}

// ---- users ----

/// A user is found by id and by email in any letter case.
pub async fn user_create_and_lookup(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let mut user = new_user(&team.id, "ann");
    user.user.email = format!("Ann.Lee-{}@Example.COM", unique("x"));
    store.create_user(&user).await.unwrap();
    assert_eq!(
        store.user(&team.id, &user.user.id).await.unwrap(),
        Some(user.clone())
    );
    for email in [
        user.user.email.clone(),
        user.user.email.to_lowercase(),
        user.user.email.to_uppercase(),
    ] {
        assert_eq!(
            store.user_by_email(&team.id, &email).await.unwrap(),
            Some(user.clone()),
            "lookup by {email}"
        );
    }
    assert_eq!(
        store.user(&team.id, &UserId::generate()).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .user_by_email(&team.id, "nobody@example.com")
            .await
            .unwrap(),
        None
    );
}

/// An email differing only in case is taken; the second user is not written.
pub async fn user_email_conflict_is_case_insensitive(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let first = create_user(&*store, &team.id, "ann").await;
    let mut second = new_user(&team.id, "ann2");
    second.user.email = first.user.email.to_uppercase();
    assert_conflict(store.create_user(&second).await, Conflict::UserEmail);
    assert_eq!(store.user(&team.id, &second.user.id).await.unwrap(), None);
    assert_eq!(
        store
            .user_by_email(&team.id, &second.user.email)
            .await
            .unwrap(),
        Some(first)
    );
}

/// The same email may exist once in each team.
pub async fn user_email_unique_per_team_only(store: Arc<dyn Store>) {
    let (a, _) = create_team(&*store).await;
    let (b, _) = create_team(&*store).await;
    let in_a = create_user(&*store, &a.id, "ann").await;
    let mut in_b = new_user(&b.id, "ann");
    in_b.user.email = in_a.user.email.clone();
    store.create_user(&in_b).await.unwrap();
    let email = &in_a.user.email.clone();
    assert_eq!(store.user_by_email(&a.id, email).await.unwrap(), Some(in_a));
    assert_eq!(store.user_by_email(&b.id, email).await.unwrap(), Some(in_b));
}

/// `users` follows the order asked for, skips unknown ids and never crosses teams.
pub async fn users_in_requested_order_within_team(store: Arc<dyn Store>) {
    let (a, _) = create_team(&*store).await;
    let (b, _) = create_team(&*store).await;
    let u1 = create_user(&*store, &a.id, "u1").await;
    let u2 = create_user(&*store, &a.id, "u2").await;
    let u3 = create_user(&*store, &a.id, "u3").await;
    let other = create_user(&*store, &b.id, "other").await;
    let ids = [
        u3.user.id.clone(),
        UserId::generate(),
        u1.user.id.clone(),
        other.user.id.clone(),
        u2.user.id.clone(),
    ];
    assert_eq!(store.users(&a.id, &ids).await.unwrap(), vec![u3, u1, u2]);
    assert_eq!(store.users(&a.id, &[]).await.unwrap(), vec![]);
    assert_eq!(store.users(&b.id, &ids).await.unwrap(), vec![other]);
}

// ---- channels ----

/// A created channel is readable and its first members are members.
pub async fn channel_create_and_read(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let me = owner.user.id;
    let public = create_channel(
        &*store,
        &team.id,
        "general",
        false,
        std::slice::from_ref(&me),
    )
    .await;
    let private =
        create_channel(&*store, &team.id, "secret", true, std::slice::from_ref(&me)).await;
    for channel in [public, private] {
        let id = &channel.channel.id;
        assert_eq!(
            store.channel(&team.id, id).await.unwrap(),
            Some(channel.clone())
        );
        assert!(store.is_member(&team.id, id, &me).await.unwrap());
        assert_eq!(
            store.channel_members(&team.id, id).await.unwrap(),
            vec![me.clone()]
        );
    }
    assert_eq!(
        store
            .channel(&team.id, &ChannelId::generate())
            .await
            .unwrap(),
        None
    );
}

/// Names are unique within a team, across public and private channels, and free in
/// other teams; a refused channel leaves no trace.
pub async fn channel_name_conflict_in_team_only(store: Arc<dyn Store>) {
    let (a, owner_a) = create_team(&*store).await;
    let (b, owner_b) = create_team(&*store).await;
    let me = owner_a.user.id;
    create_channel(&*store, &a.id, "general", false, std::slice::from_ref(&me)).await;
    for private in [false, true] {
        let again = new_channel(&a.id, "general", private, &me);
        assert_conflict(
            store
                .create_channel(&again, std::slice::from_ref(&me))
                .await,
            Conflict::ChannelName,
        );
        let id = &again.channel.id;
        assert_eq!(store.channel(&a.id, id).await.unwrap(), None);
        assert!(!store.is_member(&a.id, id, &me).await.unwrap());
        assert!(
            !store
                .member_channels(&a.id, &me)
                .await
                .unwrap()
                .contains(id)
        );
    }
    assert_eq!(store.public_channels(&a.id).await.unwrap().len(), 1);
    create_channel(&*store, &b.id, "general", false, &[owner_b.user.id]).await;
}

/// Of concurrent creations of one name, exactly one succeeds.
pub async fn channel_name_conflict_under_concurrency(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let me = owner.user.id;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let channel = new_channel(&team.id, "race", false, &me);
            let members = vec![me.clone()];
            tokio::spawn(async move { store.create_channel(&channel, &members).await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => created += 1,
            Err(StoreError::Conflict(Conflict::ChannelName)) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.public_channels(&team.id).await.unwrap().len(), 1);
    assert_eq!(store.member_channels(&team.id, &me).await.unwrap().len(), 1);
}

/// `public_channels` lists the public channels by name, never private ones or DMs.
pub async fn public_channels_lists_only_public(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let other = create_user(&*store, &team.id, "other").await;
    let me = owner.user.id;
    let zeta = create_channel(&*store, &team.id, "zeta", false, std::slice::from_ref(&me)).await;
    create_channel(&*store, &team.id, "middle", true, std::slice::from_ref(&me)).await;
    let alpha = create_channel(&*store, &team.id, "alpha", false, std::slice::from_ref(&me)).await;
    let members = [me.clone(), other.user.id];
    store
        .get_or_create_dm(&new_dm(&team.id, &members), &members)
        .await
        .unwrap();
    assert_eq!(
        store.public_channels(&team.id).await.unwrap(),
        vec![alpha, zeta]
    );
    assert_eq!(
        store.public_channels(&TeamId::generate()).await.unwrap(),
        vec![]
    );
}

/// A second call for the same member set returns the first DM and creates nothing.
pub async fn dm_get_or_create_is_idempotent(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let b = create_user(&*store, &team.id, "b").await.user.id;
    let c = create_user(&*store, &team.id, "c").await.user.id;
    let a = owner.user.id;
    for members in [
        vec![a.clone(), b.clone()],
        vec![c.clone(), a.clone(), b.clone()],
    ] {
        let first = new_dm(&team.id, &members);
        assert_eq!(
            store.get_or_create_dm(&first, &members).await.unwrap(),
            first
        );
        let again = new_dm(&team.id, &members);
        assert_eq!(
            store.get_or_create_dm(&again, &members).await.unwrap(),
            first
        );
        let id = &first.channel.id;
        assert_eq!(
            store.channel(&team.id, id).await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(
            store.channel(&team.id, &again.channel.id).await.unwrap(),
            None
        );
        assert_eq!(
            sorted(store.channel_members(&team.id, id).await.unwrap()),
            sorted(members.clone())
        );
        for member in &members {
            assert!(store.is_member(&team.id, id, member).await.unwrap());
        }
    }
    // The 1:1 and the group DM are different channels.
    assert_eq!(store.member_channels(&team.id, &a).await.unwrap().len(), 2);
}

/// Concurrent calls for one member set all get the same channel.
pub async fn dm_concurrent_get_or_create_yields_one_channel(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let other = create_user(&*store, &team.id, "other").await.user.id;
    let members = vec![owner.user.id.clone(), other];
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let dm = new_dm(&team.id, &members);
            let members = members.clone();
            tokio::spawn(async move { store.get_or_create_dm(&dm, &members).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap().channel.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "all callers must get one channel: {ids:?}");
    assert_eq!(
        store
            .member_channels(&team.id, &owner.user.id)
            .await
            .unwrap(),
        ids
    );
}

// ---- channel members ----

/// Membership is visible from both sides, adding is idempotent, removing ends it.
pub async fn members_both_directions(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let t = &team.id;
    let a = owner.user.id;
    let b = create_user(&*store, t, "b").await.user.id;
    let c = create_user(&*store, t, "c").await.user.id;
    let one = create_channel(&*store, t, "one", false, std::slice::from_ref(&a))
        .await
        .channel
        .id;
    let two = create_channel(&*store, t, "two", true, std::slice::from_ref(&b))
        .await
        .channel
        .id;

    store
        .add_members(t, &one, &[b.clone(), c.clone(), a.clone()])
        .await
        .unwrap();
    store.add_members(t, &one, &[]).await.unwrap();
    assert_eq!(
        sorted(store.channel_members(t, &one).await.unwrap()),
        sorted(vec![a.clone(), b.clone(), c.clone()])
    );
    assert_eq!(
        sorted(store.member_channels(t, &b).await.unwrap()),
        sorted(vec![one.clone(), two.clone()])
    );
    assert!(store.is_member(t, &one, &b).await.unwrap());
    assert!(!store.is_member(t, &two, &a).await.unwrap());

    store.remove_member(t, &one, &b).await.unwrap();
    assert!(!store.is_member(t, &one, &b).await.unwrap());
    assert_eq!(
        sorted(store.channel_members(t, &one).await.unwrap()),
        sorted(vec![a.clone(), c.clone()])
    );
    assert_eq!(
        store.member_channels(t, &b).await.unwrap(),
        vec![two.clone()]
    );
    // Removing a non-member is a no-op.
    store.remove_member(t, &one, &b).await.unwrap();
    store.remove_member(t, &two, &a).await.unwrap();
    assert_eq!(store.channel_members(t, &two).await.unwrap(), vec![b]);
    assert_eq!(
        store
            .channel_members(t, &ChannelId::generate())
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        store.member_channels(t, &UserId::generate()).await.unwrap(),
        vec![]
    );
}

// ---- channel leases ----

/// A free channel's lease goes to the first claimant (epoch 1); another holder is told
/// who has it until when. Leases are per channel and per team.
pub async fn lease_granted_then_held_for_another_holder(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let t = &team.id;
    let channel = ChannelId::generate();
    let before = unix_ms_now();
    let lease = granted(
        store
            .claim_lease(t, &channel, "node-a", LONG_TTL)
            .await
            .unwrap(),
    );
    let after = unix_ms_now();
    let ttl_ms = u64::try_from(LONG_TTL.as_millis()).unwrap();
    assert_eq!(
        (
            &lease.team,
            &lease.channel,
            lease.holder.as_str(),
            lease.epoch
        ),
        (t, &channel, "node-a", 1)
    );
    assert!(
        (before + ttl_ms..=after + ttl_ms).contains(&lease.expires_at_ms),
        "expiry {} not within [{}, {}]",
        lease.expires_at_ms,
        before + ttl_ms,
        after + ttl_ms
    );

    assert_eq!(
        store
            .claim_lease(t, &channel, "node-b", LONG_TTL)
            .await
            .unwrap(),
        LeaseClaim::Held {
            holder: "node-a".into(),
            expires_at_ms: lease.expires_at_ms,
        }
    );
    // Another channel, and the same channel id in another team, are free.
    let other = granted(
        store
            .claim_lease(t, &ChannelId::generate(), "node-b", LONG_TTL)
            .await
            .unwrap(),
    );
    assert_eq!(other.epoch, 1);
    let (stranger, _) = create_team(&*store).await;
    let foreign = granted(
        store
            .claim_lease(&stranger.id, &channel, "node-b", LONG_TTL)
            .await
            .unwrap(),
    );
    assert_eq!((foreign.epoch, foreign.team), (1, stranger.id));

    match store.claim_lease(t, &channel, "", LONG_TTL).await {
        Err(StoreError::Internal(_)) => {}
        other => panic!("an empty holder name: expected Internal, got {other:?}"),
    }
}

/// The holder's own claim renews its lease: same epoch, later expiry, even after the
/// lease ran out, as long as nobody took it meanwhile.
pub async fn lease_renewal_keeps_epoch_and_extends_expiry(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let t = &team.id;
    let channel = ChannelId::generate();
    let first = granted(
        store
            .claim_lease(t, &channel, "node-a", SHORT_TTL)
            .await
            .unwrap(),
    );
    let renewed = granted(
        store
            .claim_lease(t, &channel, "node-a", LONG_TTL)
            .await
            .unwrap(),
    );
    assert_eq!(renewed.epoch, first.epoch);
    assert!(renewed.expires_at_ms > first.expires_at_ms);
    assert_eq!(
        store
            .claim_lease(t, &channel, "node-b", SHORT_TTL)
            .await
            .unwrap(),
        LeaseClaim::Held {
            holder: "node-a".into(),
            expires_at_ms: renewed.expires_at_ms,
        }
    );

    // Let a short lease run out untouched: its holder renews it, epoch unchanged.
    let short = granted(
        store
            .claim_lease(t, &channel, "node-a", SHORT_TTL)
            .await
            .unwrap(),
    );
    assert_eq!(short.epoch, first.epoch);
    tokio::time::sleep(PAST_SHORT_TTL).await;
    let late = granted(
        store
            .claim_lease(t, &channel, "node-a", LONG_TTL)
            .await
            .unwrap(),
    );
    assert_eq!(late.epoch, first.epoch);
    assert!(late.expires_at_ms > short.expires_at_ms);
}

/// Once a lease has run out, another holder gets it with the next epoch, and the
/// former holder is then told it is held.
pub async fn lease_expiry_lets_another_holder_take_over(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let t = &team.id;
    let channel = ChannelId::generate();
    let first = granted(
        store
            .claim_lease(t, &channel, "node-a", SHORT_TTL)
            .await
            .unwrap(),
    );
    assert!(matches!(
        store
            .claim_lease(t, &channel, "node-b", LONG_TTL)
            .await
            .unwrap(),
        LeaseClaim::Held { .. }
    ));
    tokio::time::sleep(PAST_SHORT_TTL).await;
    let second = granted(
        store
            .claim_lease(t, &channel, "node-b", LONG_TTL)
            .await
            .unwrap(),
    );
    assert_eq!(second.epoch, first.epoch + 1);
    assert_eq!(second.holder, "node-b");
    assert_eq!(
        store
            .claim_lease(t, &channel, "node-a", LONG_TTL)
            .await
            .unwrap(),
        LeaseClaim::Held {
            holder: "node-b".into(),
            expires_at_ms: second.expires_at_ms,
        }
    );
}

/// A released lease can be claimed at once, with the next epoch, by anyone (its former
/// holder too); releasing a lease that is no longer current changes nothing.
pub async fn lease_release_lets_another_holder_claim_at_once(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let t = &team.id;
    let channel = ChannelId::generate();
    let first = granted(
        store
            .claim_lease(t, &channel, "node-a", LONG_TTL)
            .await
            .unwrap(),
    );
    store.release_lease(&first).await.unwrap();
    let second = granted(
        store
            .claim_lease(t, &channel, "node-b", LONG_TTL)
            .await
            .unwrap(),
    );
    assert_eq!(second.epoch, first.epoch + 1);

    // The stale lease's release is a no-op: node-b keeps the channel.
    store.release_lease(&first).await.unwrap();
    assert_eq!(
        store
            .claim_lease(t, &channel, "node-c", LONG_TTL)
            .await
            .unwrap(),
        LeaseClaim::Held {
            holder: "node-b".into(),
            expires_at_ms: second.expires_at_ms,
        }
    );

    // Even its own holder's next claim gets a new epoch, which fences the old one.
    store.release_lease(&second).await.unwrap();
    let third = granted(
        store
            .claim_lease(t, &channel, "node-b", LONG_TTL)
            .await
            .unwrap(),
    );
    assert_eq!(third.epoch, second.epoch + 1);
}

/// Of concurrent claimants of a free lease exactly one gets it; the others are told
/// it is held by the winner.
pub async fn concurrent_lease_claims_grant_exactly_one(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let channel = ChannelId::generate();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let (team, channel) = (team.id.clone(), channel.clone());
            tokio::spawn(async move {
                store
                    .claim_lease(&team, &channel, &format!("node-{i}"), LONG_TTL)
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut told = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            LeaseClaim::Granted(lease) => winners.push(lease),
            LeaseClaim::Held { holder, .. } => told.push(holder),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    let winner = &winners[0];
    assert_eq!(winner.epoch, 1);
    assert!(
        told.iter().all(|holder| *holder == winner.holder),
        "{told:?}"
    );
}

/// An append under a superseded lease fails with `Fenced` and leaves no trace, also
/// when it comes after the new holder wrote the same seq; the new holder's appends at
/// those seqs are what reads return.
pub async fn append_with_a_superseded_lease_is_fenced(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let channel = create_channel(&*store, t, "chat", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    let old = lease_for(&*store, t, &channel).await;
    let early: Vec<NewMessage> = (1..=2).map(|s| new_message(t, &channel, me, s)).collect();
    store.append_messages(&old, &early).await.unwrap();
    store.release_lease(&old).await.unwrap();
    let new = lease_for(&*store, t, &channel).await;
    assert_eq!(new.epoch, old.epoch + 1);

    let assert_fenced = |what: &str, result: Result<(), StoreError>| match result {
        Err(StoreError::Fenced(_)) => {}
        other => panic!("{what}: expected Fenced, got {other:?}"),
    };
    // The old holder, not knowing, appends seq 3 (and 4) before the new one does...
    let zombie: Vec<NewMessage> = (3..=4).map(|s| new_message(t, &channel, me, s)).collect();
    assert_fenced(
        "append before the new holder",
        store.append_messages(&old, &zombie).await,
    );
    assert_eq!(store.last_seq(t, &channel).await.unwrap(), 2);
    assert_eq!(
        seqs_of(&store.history(t, &channel, None, 10).await.unwrap()),
        vec![2, 1]
    );
    assert_eq!(
        seqs_of(&store.messages_after(t, &channel, 0, 10).await.unwrap()),
        vec![1, 2]
    );

    // ...the new holder appends seq 3...
    let third = new_message(t, &channel, me, 3);
    store
        .append_messages(&new, std::slice::from_ref(&third))
        .await
        .unwrap();
    // ...and the old holder tries seq 3 again, afterwards.
    let late_zombie = new_message(t, &channel, me, 3);
    assert_fenced(
        "append after the new holder",
        store
            .append_messages(&old, std::slice::from_ref(&late_zombie))
            .await,
    );

    assert_eq!(store.last_seq(t, &channel).await.unwrap(), 3);
    let mut expected: Vec<Message> = early.into_iter().map(|m| m.message).collect();
    expected.push(third.message.clone());
    assert_eq!(
        store.messages_after(t, &channel, 0, 10).await.unwrap(),
        expected
    );
    expected.reverse();
    assert_eq!(
        store.history(t, &channel, None, 10).await.unwrap(),
        expected
    );
    assert_eq!(
        store
            .message_by_client_msg_id(t, &channel, &third.message.client_msg_id)
            .await
            .unwrap(),
        Some(third.message)
    );
    for lost in zombie.iter().chain([&late_zombie]) {
        assert_eq!(
            store
                .message_by_client_msg_id(t, &channel, &lost.message.client_msg_id)
                .await
                .unwrap(),
            None,
            "fenced message {} must not be found",
            lost.message.seq
        );
    }
}

/// A lease fences one channel: messages of another channel (or team) are refused, and
/// nothing of the call is written.
pub async fn append_outside_the_lease_channel_fails(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let (stranger, _) = create_team(&*store).await;
    let channel = ChannelId::generate();
    let other = ChannelId::generate();
    let lease = lease_for(&*store, t, &channel).await;
    lease_for(&*store, t, &other).await;
    let refused = [
        vec![new_message(t, &other, me, 1)],
        vec![
            new_message(t, &channel, me, 1),
            new_message(t, &other, me, 1),
        ],
        vec![new_message(&stranger.id, &channel, me, 1)],
    ];
    for messages in refused {
        match store.append_messages(&lease, &messages).await {
            Err(StoreError::Internal(_)) => {}
            other => panic!("expected Internal, got {other:?}"),
        }
    }
    assert_eq!(store.last_seq(t, &channel).await.unwrap(), 0);
    assert_eq!(store.last_seq(t, &other).await.unwrap(), 0);
    assert_eq!(store.last_seq(&stranger.id, &channel).await.unwrap(), 0);
    assert_eq!(store.history(t, &other, None, 10).await.unwrap(), vec![]);
}

// ---- messages ----

/// Appended messages round-trip field for field, and `last_seq` follows them.
pub async fn append_messages_and_last_seq(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let channel = create_channel(&*store, t, "chat", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    let quiet = create_channel(&*store, t, "quiet", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    assert_eq!(store.last_seq(t, &channel).await.unwrap(), 0);
    let lease = lease_for(&*store, t, &channel).await;
    store.append_messages(&lease, &[]).await.unwrap();

    let mut batch: Vec<NewMessage> = (1..=3).map(|s| new_message(t, &channel, me, s)).collect();
    batch[1].message.thread_ts = Some(batch[0].message.ts.clone());
    batch[2].message.edited_ts = Some("1700000100.000001".into());
    batch[2].message.deleted = true;
    batch[2].message.text = "ünïcødé \u{1F600} \0 text".into();
    store.append_messages(&lease, &batch).await.unwrap();
    assert_eq!(store.last_seq(t, &channel).await.unwrap(), 3);
    let fourth = new_message(t, &channel, me, 4);
    store
        .append_messages(&lease, std::slice::from_ref(&fourth))
        .await
        .unwrap();
    assert_eq!(store.last_seq(t, &channel).await.unwrap(), 4);

    let mut expected: Vec<Message> = batch.into_iter().map(|m| m.message).collect();
    expected.push(fourth.message);
    expected.reverse();
    assert_eq!(
        store.history(t, &channel, None, 10).await.unwrap(),
        expected
    );
    assert_eq!(store.last_seq(t, &quiet).await.unwrap(), 0);
    assert_eq!(store.history(t, &quiet, None, 10).await.unwrap(), vec![]);
}

/// `history` pages newest first with `before`, seamlessly across a bucket boundary.
pub async fn history_pages_newest_first_across_buckets(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let channel = create_channel(&*store, t, "busy", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    let last = BUCKET_SEQS + 20;
    let written = append_seqs(&*store, t, &channel, me, 1..=last, 500).await;
    assert_eq!(store.last_seq(t, &channel).await.unwrap(), last);

    let newest = store.history(t, &channel, None, 5).await.unwrap();
    assert_eq!(
        seqs_of(&newest),
        (last - 4..=last).rev().collect::<Vec<_>>()
    );
    let idx = |seq: u64| usize::try_from(seq - 1).unwrap();
    assert_eq!(newest[0], written[idx(last)]);

    let across = store
        .history(t, &channel, Some(BUCKET_SEQS + 3), 10)
        .await
        .unwrap();
    let want: Vec<u64> = (BUCKET_SEQS - 7..=BUCKET_SEQS + 2).rev().collect();
    assert_eq!(seqs_of(&across), want);
    assert_eq!(across[5], written[idx(BUCKET_SEQS - 3)]);

    // Walk everything the way a client scrolls back.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.history(t, &channel, before, 200).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 200);
        before = page.last().map(|m| m.seq);
        seen.extend(seqs_of(&page));
    }
    assert_eq!(seen, (1..=last).rev().collect::<Vec<_>>());

    assert_eq!(
        store.history(t, &channel, Some(1), 10).await.unwrap(),
        vec![]
    );
    assert_eq!(store.history(t, &channel, None, 0).await.unwrap(), vec![]);
    assert_eq!(
        seqs_of(
            &store
                .history(t, &channel, Some(last + 100), 3)
                .await
                .unwrap()
        ),
        vec![last, last - 1, last - 2]
    );
}

/// `messages_after` returns ascending `seq`s, seamlessly across a bucket boundary.
pub async fn messages_after_ascending_across_buckets(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let channel = create_channel(&*store, t, "busy", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    let last = BUCKET_SEQS + 20;
    let written = append_seqs(&*store, t, &channel, me, 1..=last, 500).await;

    let across = store
        .messages_after(t, &channel, BUCKET_SEQS - 3, 6)
        .await
        .unwrap();
    assert_eq!(
        seqs_of(&across),
        (BUCKET_SEQS - 2..=BUCKET_SEQS + 3).collect::<Vec<_>>()
    );
    assert_eq!(
        across[0],
        written[usize::try_from(BUCKET_SEQS - 3).unwrap()]
    );
    assert_eq!(
        seqs_of(&store.messages_after(t, &channel, 0, 3).await.unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(
        seqs_of(
            &store
                .messages_after(t, &channel, last - 2, 10)
                .await
                .unwrap()
        ),
        vec![last - 1, last]
    );
    assert_eq!(
        store.messages_after(t, &channel, last, 10).await.unwrap(),
        vec![]
    );
    assert_eq!(
        store.messages_after(t, &channel, 0, 0).await.unwrap(),
        vec![]
    );

    // Walk everything the way `resume` catches up.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.messages_after(t, &channel, after, 500).await.unwrap();
        let Some(tail) = page.last() else { break };
        after = tail.seq;
        seen.extend(seqs_of(&page));
    }
    assert_eq!(seen, (1..=last).collect::<Vec<_>>());
}

/// The message a `client_msg_id` produced is found in its channel only.
pub async fn message_by_client_msg_id(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let channel = create_channel(&*store, t, "chat", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    let other = create_channel(&*store, t, "other", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    let written = append_seqs(&*store, t, &channel, me, 1..=3, 3).await;
    let wanted = &written[1];
    assert_eq!(
        store
            .message_by_client_msg_id(t, &channel, &wanted.client_msg_id)
            .await
            .unwrap(),
        Some(wanted.clone())
    );
    assert_eq!(
        store
            .message_by_client_msg_id(t, &channel, "never-sent")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .message_by_client_msg_id(t, &other, &wanted.client_msg_id)
            .await
            .unwrap(),
        None
    );
}

// ---- read state ----

/// Read markers move forward only, per user and channel.
pub async fn read_markers_move_forward_only(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let other = create_user(&*store, t, "other").await.user.id;
    let one = create_channel(&*store, t, "one", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    let two = create_channel(&*store, t, "two", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    assert_eq!(store.read_markers(t, me).await.unwrap(), vec![]);

    store.mark_read(t, me, &one, 5).await.unwrap();
    store.mark_read(t, me, &one, 3).await.unwrap();
    assert_eq!(
        store.read_markers(t, me).await.unwrap(),
        vec![(one.clone(), 5)]
    );
    store.mark_read(t, me, &one, 8).await.unwrap();
    store.mark_read(t, me, &two, 2).await.unwrap();
    store.mark_read(t, &other, &two, 1).await.unwrap();
    assert_eq!(
        sorted(store.read_markers(t, me).await.unwrap()),
        sorted(vec![(one, 8), (two.clone(), 2)])
    );
    assert_eq!(store.read_markers(t, &other).await.unwrap(), vec![(two, 1)]);
}

// ---- push subscriptions ----

fn new_push_subscription(team: &TeamId, user: &UserId, id: &str) -> PushSubscription {
    PushSubscription {
        team: team.clone(),
        user: user.clone(),
        id: id.into(),
        url: format!("https://push.example.com/{}", unique(id)),
        created_ts: "1700000000.000001".into(),
    }
}

/// A user's subscriptions are listed by id; one of an existing id replaces it; a
/// delete says whether there was something to delete.
pub async fn push_subscriptions_create_list_delete(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let other = create_user(&*store, t, "other").await.user.id;
    assert_eq!(store.push_subscriptions(t, me).await.unwrap(), vec![]);

    let c = new_push_subscription(t, me, "sub-c");
    let a = new_push_subscription(t, me, "sub-a");
    let b = new_push_subscription(t, me, "sub-b");
    for sub in [&c, &a, &b] {
        store.create_push_subscription(sub).await.unwrap();
    }
    let theirs = new_push_subscription(t, &other, "sub-a");
    store.create_push_subscription(&theirs).await.unwrap();
    assert_eq!(
        store.push_subscriptions(t, me).await.unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );

    let mut moved = a.clone();
    moved.url = "https://push.example.com/moved".into();
    moved.created_ts = "1700000100.000002".into();
    store.create_push_subscription(&moved).await.unwrap();
    assert_eq!(
        store.push_subscriptions(t, me).await.unwrap(),
        vec![moved.clone(), b.clone(), c.clone()]
    );

    assert!(
        store
            .delete_push_subscription(t, me, "sub-b")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_push_subscription(t, me, "sub-b")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_push_subscription(t, me, "never")
            .await
            .unwrap()
    );
    assert_eq!(
        store.push_subscriptions(t, me).await.unwrap(),
        vec![moved, c]
    );
    assert_eq!(
        store.push_subscriptions(t, &other).await.unwrap(),
        vec![theirs]
    );
}

/// Another team can neither list nor delete a team's subscriptions, even when it uses
/// the same user and subscription ids.
pub async fn push_subscriptions_are_per_team(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let (stranger, _) = create_team(&*store).await;
    let s = &stranger.id;
    let mine = new_push_subscription(t, me, "sub-1");
    store.create_push_subscription(&mine).await.unwrap();

    assert_eq!(store.push_subscriptions(s, me).await.unwrap(), vec![]);
    assert!(
        !store
            .delete_push_subscription(s, me, "sub-1")
            .await
            .unwrap()
    );
    let theirs = new_push_subscription(s, me, "sub-1");
    store.create_push_subscription(&theirs).await.unwrap();
    assert!(
        store
            .delete_push_subscription(s, me, "sub-1")
            .await
            .unwrap()
    );
    assert_eq!(store.push_subscriptions(s, me).await.unwrap(), vec![]);
    assert_eq!(store.push_subscriptions(t, me).await.unwrap(), vec![mine]);
}

/// A delivery key is granted once while its claim lasts, per team; after the ttl it
/// can be claimed again, and claiming expired keys never releases a live claim.
pub async fn push_delivery_claimed_once_until_ttl(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let (stranger, _) = create_team(&*store).await;
    let t = &team.id;
    let key = unique("M1:sub-1");
    assert!(!store.push_delivered(t, &key).await.unwrap());
    assert!(store.claim_push_delivery(t, &key, LONG_TTL).await.unwrap());
    assert!(store.push_delivered(t, &key).await.unwrap());
    assert!(!store.push_delivered(&stranger.id, &key).await.unwrap());
    assert!(!store.claim_push_delivery(t, &key, LONG_TTL).await.unwrap());
    assert!(
        store
            .claim_push_delivery(&stranger.id, &key, LONG_TTL)
            .await
            .unwrap(),
        "claims are per team"
    );

    // Some drivers count ttls in whole seconds: one second, then wait two.
    let second = Duration::from_secs(1);
    let (first, next) = (unique("M2:sub-1"), unique("M3:sub-1"));
    assert!(store.claim_push_delivery(t, &first, second).await.unwrap());
    assert!(store.claim_push_delivery(t, &next, second).await.unwrap());
    assert!(!store.claim_push_delivery(t, &first, second).await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!store.push_delivered(t, &first).await.unwrap(), "expired");
    assert!(
        store
            .claim_push_delivery(t, &first, LONG_TTL)
            .await
            .unwrap()
    );
    assert!(store.claim_push_delivery(t, &next, LONG_TTL).await.unwrap());
    assert!(
        !store
            .claim_push_delivery(t, &first, LONG_TTL)
            .await
            .unwrap()
    );
    assert!(!store.claim_push_delivery(t, &next, LONG_TTL).await.unwrap());
    assert!(!store.claim_push_delivery(t, &key, LONG_TTL).await.unwrap());
}

/// Of concurrent claims of one delivery exactly one is granted.
pub async fn concurrent_push_delivery_claims_grant_exactly_one(store: Arc<dyn Store>) {
    let (team, _) = create_team(&*store).await;
    let key = unique("M1:sub-1");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let (team, key) = (team.id.clone(), key.clone());
            tokio::spawn(async move { store.claim_push_delivery(&team, &key, LONG_TTL).await })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 1);
}

// ---- isolation ----

/// Every query made with another team's id finds nothing of this team, and writes made
/// under another team's id do not touch it.
pub async fn team_isolation(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let (stranger_team, stranger) = create_team(&*store).await;
    let s = &stranger_team.id;
    let friend = create_user(&*store, t, "friend").await.user.id;
    let channel = create_channel(&*store, t, "general", false, std::slice::from_ref(me)).await;
    let id = &channel.channel.id;
    let pair = [me.clone(), friend.clone()];
    let dm = store
        .get_or_create_dm(&new_dm(t, &pair), &pair)
        .await
        .unwrap();
    let written = append_seqs(&*store, t, id, me, 1..=3, 3).await;
    store.mark_read(t, me, id, 2).await.unwrap();

    assert_eq!(store.user(s, me).await.unwrap(), None);
    assert_eq!(
        store.user_by_email(s, &owner.user.email).await.unwrap(),
        None
    );
    assert_eq!(store.users(s, &pair).await.unwrap(), vec![]);
    assert_eq!(store.channel(s, id).await.unwrap(), None);
    assert_eq!(store.channel(s, &dm.channel.id).await.unwrap(), None);
    assert_eq!(store.public_channels(s).await.unwrap(), vec![]);
    assert!(!store.is_member(s, id, me).await.unwrap());
    assert_eq!(store.channel_members(s, id).await.unwrap(), vec![]);
    assert_eq!(store.member_channels(s, me).await.unwrap(), vec![]);
    assert_eq!(store.last_seq(s, id).await.unwrap(), 0);
    assert_eq!(
        store
            .message_by_client_msg_id(s, id, &written[0].client_msg_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.history(s, id, None, 10).await.unwrap(), vec![]);
    assert_eq!(store.messages_after(s, id, 0, 10).await.unwrap(), vec![]);
    assert_eq!(store.read_markers(s, me).await.unwrap(), vec![]);

    // The stranger's team can reuse the ids' names without reaching this team.
    let stranger_id = stranger.user.id;
    store
        .add_members(s, id, std::slice::from_ref(&stranger_id))
        .await
        .unwrap();
    store.remove_member(s, id, me).await.unwrap();
    let mut foreign = new_message(s, id, &stranger_id, 4);
    foreign.message.client_msg_id = written[0].client_msg_id.clone();
    let foreign_lease = lease_for(&*store, s, id).await;
    assert_eq!(foreign_lease.epoch, 1, "leases are per team");
    store
        .append_messages(&foreign_lease, &[foreign])
        .await
        .unwrap();
    store.mark_read(s, me, id, 9).await.unwrap();

    assert!(!store.is_member(t, id, &stranger_id).await.unwrap());
    assert!(store.is_member(t, id, me).await.unwrap());
    assert_eq!(
        store.channel_members(t, id).await.unwrap(),
        vec![me.clone()]
    );
    assert_eq!(store.last_seq(t, id).await.unwrap(), 3);
    assert_eq!(
        store
            .message_by_client_msg_id(t, id, &written[0].client_msg_id)
            .await
            .unwrap(),
        Some(written[0].clone())
    );
    assert_eq!(
        store.read_markers(t, me).await.unwrap(),
        vec![(id.clone(), 2)]
    );
    assert_eq!(store.users(t, &[stranger_id]).await.unwrap(), vec![]);
}

// ---- lifecycle ----

/// After `flush`, acknowledged writes stay and every later write fails with
/// `Unavailable`. Shuts its handle down: the macro's constructor must return a fresh one.
pub async fn flush_then_writes_fail(store: Arc<dyn Store>) {
    let (team, owner) = create_team(&*store).await;
    let (t, me) = (&team.id, &owner.user.id);
    let channel = create_channel(&*store, t, "chat", false, std::slice::from_ref(me))
        .await
        .channel
        .id;
    let lease = lease_for(&*store, t, &channel).await;
    store
        .append_messages(
            &lease,
            &[
                new_message(t, &channel, me, 1),
                new_message(t, &channel, me, 2),
            ],
        )
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.last_seq(t, &channel).await.unwrap(), 2);

    let unavailable = |what: &str, result: Result<(), StoreError>| match result {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("{what} after flush: expected Unavailable, got {other:?}"),
    };
    unavailable("create_user", store.create_user(&new_user(t, "late")).await);
    unavailable(
        "append_messages",
        store
            .append_messages(&lease, &[new_message(t, &channel, me, 3)])
            .await,
    );
    unavailable(
        "claim_lease",
        store
            .claim_lease(t, &channel, &lease.holder, LONG_TTL)
            .await
            .map(drop),
    );
    unavailable("release_lease", store.release_lease(&lease).await);
    unavailable(
        "create_push_subscription",
        store
            .create_push_subscription(&new_push_subscription(t, me, "late"))
            .await,
    );
    unavailable(
        "claim_push_delivery",
        store
            .claim_push_delivery(t, "late", LONG_TTL)
            .await
            .map(drop),
    );
    unavailable(
        "add_members",
        store.add_members(t, &channel, &[UserId::generate()]).await,
    );
    unavailable("mark_read", store.mark_read(t, me, &channel, 1).await);
    let late_team = new_team_record();
    let late_owner = new_user(&late_team.id, "late");
    unavailable(
        "create_team",
        store.create_team(&late_team, &late_owner).await,
    );
    // Shutdown paths may flush twice.
    store.flush().await.unwrap();
}
