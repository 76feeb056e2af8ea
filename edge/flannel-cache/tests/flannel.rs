//! Flannel against an in-test core: boot stays small whatever the team size, lookups hit
//! the cache after the first load, events keep it fresh, and a cut-off subscription drops
//! the team's cache. The fake core counts its calls so the tests can see what was cached.

use async_trait::async_trait;
use confab_chat::{Caller, CoreApi};
use confab_events::Subscription;
use confab_flannel_cache::{Flannel, FlannelConfig};
use confab_proto::event::{TeamEvent, TeamEventBody};
use confab_proto::rest::{
    BootChannel, CreateChannelRequest, CreatePushSubscriptionRequest, CreateTeamRequest,
    CreateTeamResponse, HistoryResponse, LoginRequest, LoginResponse, NewUser, PostMessageRequest,
    PushSubscriptionView, UserPresence,
};
use confab_proto::rtm::PresenceSetting;
use confab_proto::{
    ApiError, Channel, ChannelId, ChannelKind, ErrorCode, Message, MessageId, Team, TeamId, User,
    UserId,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc};

// ---------------------------------------------------------------------------------------
// A core with one team, kept in memory, counting the calls the edge cache makes.

#[derive(Default)]
struct Calls {
    team: AtomicUsize,
    users: AtomicUsize,
    user_ids: AtomicUsize,
    channel_states: AtomicUsize,
    subscribe: AtomicUsize,
}

struct FakeChannel {
    channel: Channel,
    members: Vec<UserId>,
    last_seq: u64,
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, User>,
    channels: BTreeMap<ChannelId, FakeChannel>,
    reads: HashMap<(UserId, ChannelId), u64>,
    subscribers: Vec<mpsc::Sender<Arc<TeamEvent>>>,
}

/// Holds a `channel_states` call after it has read the state, until released.
#[derive(Default)]
struct Gate {
    armed: Mutex<bool>,
    entered: Notify,
    release: Notify,
}

struct FakeCore {
    team: Team,
    state: Mutex<State>,
    calls: Calls,
    gate: Gate,
}

fn unsupported() -> ApiError {
    ApiError::new(ErrorCode::Internal, "not part of the fake")
}

impl FakeCore {
    fn new(team_size: usize) -> Arc<Self> {
        let team = Team {
            id: TeamId::new("T1"),
            name: "Acme".into(),
            domain: "acme".into(),
        };
        let mut state = State::default();
        for i in 0..team_size {
            let id = user_id(i);
            state.users.insert(
                id.clone(),
                User {
                    id,
                    team: team.id.clone(),
                    name: format!("user {i}"),
                    email: format!("u{i}@acme.example"),
                    is_admin: i == 0,
                },
            );
        }
        let everyone = (0..team_size).map(user_id).collect();
        let general = public_channel("C-general", "general");
        state.channels.insert(
            general.id.clone(),
            FakeChannel {
                channel: general,
                members: everyone,
                last_seq: 40,
            },
        );
        Arc::new(Self {
            team,
            state: Mutex::new(state),
            calls: Calls::default(),
            gate: Gate::default(),
        })
    }

    fn caller(&self, i: usize) -> Caller {
        Caller {
            team: self.team.id.clone(),
            user: user_id(i),
        }
    }

    fn publish(&self, body: TeamEventBody) {
        let event = Arc::new(TeamEvent {
            team: self.team.id.clone(),
            body,
        });
        let mut state = self.state.lock().unwrap();
        state
            .subscribers
            .retain(|s| s.try_send(event.clone()).is_ok());
    }

    /// A DM or group DM between `members`, with `last_seq` messages, made silently (as
    /// before any subscription).
    fn add_direct(&self, id: &str, members: &[usize], last_seq: u64) {
        let members: Vec<UserId> = members.iter().copied().map(user_id).collect();
        let channel = Channel {
            id: ChannelId::new(id),
            name: String::new(),
            private: true,
            kind: if members.len() == 2 {
                ChannelKind::Dm
            } else {
                ChannelKind::GroupDm
            },
            members: Some(members.clone()),
        };
        self.state.lock().unwrap().channels.insert(
            channel.id.clone(),
            FakeChannel {
                channel,
                members,
                last_seq,
            },
        );
    }

    fn post(&self, channel: &str, author: usize) -> Message {
        let message = {
            let mut state = self.state.lock().unwrap();
            let fake = state.channels.get_mut(&ChannelId::new(channel)).unwrap();
            fake.last_seq += 1;
            Message {
                id: MessageId::generate(),
                channel: fake.channel.id.clone(),
                user: user_id(author),
                text: "hello".into(),
                seq: fake.last_seq,
                ts: format!("{}.000000", fake.last_seq),
                client_msg_id: format!("c{}", fake.last_seq),
                thread_ts: None,
                edited_ts: None,
                deleted: false,
            }
        };
        self.publish(TeamEventBody::Message {
            message: message.clone(),
        });
        message
    }

    fn mark(&self, user: usize, channel: &str, seq: u64) {
        let channel = ChannelId::new(channel);
        self.state
            .lock()
            .unwrap()
            .reads
            .insert((user_id(user), channel.clone()), seq);
        self.publish(TeamEventBody::ReadMarker {
            channel,
            user: user_id(user),
            seq,
        });
    }

    /// Creates a public channel with `user` as its first member, publishing what the core
    /// publishes: `channel_created`, then `member_joined`.
    fn create_channel(&self, id: &str, user: usize) -> Channel {
        let channel = public_channel(id, id);
        self.state.lock().unwrap().channels.insert(
            channel.id.clone(),
            FakeChannel {
                channel: channel.clone(),
                members: vec![user_id(user)],
                last_seq: 0,
            },
        );
        self.publish(TeamEventBody::ChannelCreated {
            channel: channel.clone(),
        });
        self.publish(TeamEventBody::MemberJoined {
            channel: channel.clone(),
            user: user_id(user),
        });
        channel
    }

    fn leave(&self, user: usize, channel: &str) {
        let channel = ChannelId::new(channel);
        let mut state = self.state.lock().unwrap();
        state
            .channels
            .get_mut(&channel)
            .unwrap()
            .members
            .retain(|m| *m != user_id(user));
        drop(state);
        self.publish(TeamEventBody::MemberLeft {
            channel,
            user: user_id(user),
        });
    }

    fn rename(&self, user: usize, name: &str, publish: bool) -> User {
        let mut state = self.state.lock().unwrap();
        let record = state.users.get_mut(&user_id(user)).unwrap();
        record.name = name.into();
        let record = record.clone();
        drop(state);
        if publish {
            self.publish(TeamEventBody::UserChanged {
                user: record.clone(),
            });
        }
        record
    }

    /// The core drops every subscriber, as it does with one that fell behind.
    fn cut_off(&self) {
        self.state.lock().unwrap().subscribers.clear();
    }

    fn live_subscribers(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        state.subscribers.retain(|s| !s.is_closed());
        state.subscribers.len()
    }

    fn calls(&self) -> [usize; 4] {
        [
            self.calls.team.load(Ordering::SeqCst),
            self.calls.users.load(Ordering::SeqCst),
            self.calls.channel_states.load(Ordering::SeqCst),
            self.calls.subscribe.load(Ordering::SeqCst),
        ]
    }
}

fn user_id(i: usize) -> UserId {
    UserId::new(format!("U{i:06}"))
}

fn public_channel(id: &str, name: &str) -> Channel {
    Channel {
        id: ChannelId::new(id),
        name: name.into(),
        private: false,
        kind: ChannelKind::Public,
        members: None,
    }
}

#[async_trait]
impl CoreApi for FakeCore {
    async fn create_team(&self, _req: CreateTeamRequest) -> Result<CreateTeamResponse, ApiError> {
        Err(unsupported())
    }

    async fn login(&self, _req: LoginRequest) -> Result<LoginResponse, ApiError> {
        Err(unsupported())
    }

    async fn team(&self, caller: &Caller) -> Result<Team, ApiError> {
        self.calls.team.fetch_add(1, Ordering::SeqCst);
        assert_eq!(caller.team, self.team.id);
        Ok(self.team.clone())
    }

    async fn create_user(&self, _caller: &Caller, _req: NewUser) -> Result<User, ApiError> {
        Err(unsupported())
    }

    async fn users(&self, _caller: &Caller, ids: &[UserId]) -> Result<Vec<User>, ApiError> {
        self.calls.users.fetch_add(1, Ordering::SeqCst);
        self.calls.user_ids.fetch_add(ids.len(), Ordering::SeqCst);
        let state = self.state.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| state.users.get(id).cloned())
            .collect())
    }

    async fn create_channel(
        &self,
        _caller: &Caller,
        _req: CreateChannelRequest,
    ) -> Result<Channel, ApiError> {
        Err(unsupported())
    }

    async fn open_dm(&self, _caller: &Caller, _users: &[UserId]) -> Result<Channel, ApiError> {
        Err(unsupported())
    }

    async fn channel(&self, _caller: &Caller, _channel: &ChannelId) -> Result<Channel, ApiError> {
        Err(unsupported())
    }

    async fn list_channels(&self, _caller: &Caller) -> Result<Vec<Channel>, ApiError> {
        Err(unsupported())
    }

    async fn member_channels(&self, _caller: &Caller) -> Result<Vec<Channel>, ApiError> {
        Err(unsupported())
    }

    async fn channel_members(
        &self,
        _caller: &Caller,
        _channel: &ChannelId,
    ) -> Result<Vec<UserId>, ApiError> {
        Err(unsupported())
    }

    async fn join_channel(
        &self,
        _caller: &Caller,
        _channel: &ChannelId,
    ) -> Result<Channel, ApiError> {
        Err(unsupported())
    }

    async fn add_members(
        &self,
        _caller: &Caller,
        _channel: &ChannelId,
        _users: &[UserId],
    ) -> Result<(), ApiError> {
        Err(unsupported())
    }

    async fn leave_channel(&self, _caller: &Caller, _channel: &ChannelId) -> Result<(), ApiError> {
        Err(unsupported())
    }

    async fn post_message(
        &self,
        _caller: &Caller,
        _req: PostMessageRequest,
    ) -> Result<Message, ApiError> {
        Err(unsupported())
    }

    async fn history(
        &self,
        _caller: &Caller,
        _channel: &ChannelId,
        _before: Option<u64>,
        _limit: usize,
    ) -> Result<HistoryResponse, ApiError> {
        Err(unsupported())
    }

    async fn messages_after(
        &self,
        _caller: &Caller,
        _channel: &ChannelId,
        _after: u64,
        _limit: usize,
    ) -> Result<Vec<Message>, ApiError> {
        Err(unsupported())
    }

    async fn mark_read(
        &self,
        _caller: &Caller,
        _channel: &ChannelId,
        _seq: u64,
    ) -> Result<(), ApiError> {
        Err(unsupported())
    }

    async fn channel_states(&self, caller: &Caller) -> Result<Vec<BootChannel>, ApiError> {
        self.calls.channel_states.fetch_add(1, Ordering::SeqCst);
        let states: Vec<BootChannel> = {
            let state = self.state.lock().unwrap();
            state
                .channels
                .values()
                .filter(|c| c.members.contains(&caller.user))
                .map(|c| {
                    let last_read = state
                        .reads
                        .get(&(caller.user.clone(), c.channel.id.clone()))
                        .copied()
                        .unwrap_or(0);
                    BootChannel {
                        id: c.channel.id.clone(),
                        name: c.channel.name.clone(),
                        kind: c.channel.kind,
                        private: c.channel.private,
                        last_seq: c.last_seq,
                        last_read,
                        unread: c.last_seq.saturating_sub(last_read),
                        members: c.channel.members.clone(),
                    }
                })
                .collect()
        };
        let armed = std::mem::take(&mut *self.gate.armed.lock().unwrap());
        if armed {
            // The answer is already taken; let the test change the world before it arrives.
            self.gate.entered.notify_one();
            self.gate.release.notified().await;
        }
        Ok(states)
    }

    async fn typing(&self, _caller: &Caller, _channel: &ChannelId) -> Result<(), ApiError> {
        Err(unsupported())
    }

    async fn heartbeat(&self, _caller: &Caller, _session: &str) -> Result<(), ApiError> {
        Err(unsupported())
    }

    async fn end_session(&self, _caller: &Caller, _session: &str) -> Result<(), ApiError> {
        Err(unsupported())
    }

    async fn set_presence(
        &self,
        _caller: &Caller,
        _setting: PresenceSetting,
    ) -> Result<(), ApiError> {
        Err(unsupported())
    }

    async fn presence(
        &self,
        _caller: &Caller,
        _users: &[UserId],
    ) -> Result<Vec<UserPresence>, ApiError> {
        Err(unsupported())
    }

    async fn create_push_subscription(
        &self,
        _caller: &Caller,
        _req: CreatePushSubscriptionRequest,
    ) -> Result<PushSubscriptionView, ApiError> {
        Err(ApiError::new(
            ErrorCode::Internal,
            "not used by these tests",
        ))
    }

    async fn push_subscriptions(
        &self,
        _caller: &Caller,
    ) -> Result<Vec<PushSubscriptionView>, ApiError> {
        Ok(Vec::new())
    }

    async fn delete_push_subscription(&self, _caller: &Caller, _id: &str) -> Result<(), ApiError> {
        Err(ApiError::new(
            ErrorCode::NotFound,
            "no such push subscription",
        ))
    }

    async fn subscribe(&self, team: &TeamId) -> Result<Subscription, ApiError> {
        self.calls.subscribe.fetch_add(1, Ordering::SeqCst);
        // Slow enough that concurrent first callers overlap.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (sender, events) = mpsc::channel(1024);
        self.state.lock().unwrap().subscribers.push(sender);
        Ok(Subscription {
            team: team.clone(),
            events,
        })
    }
}

// ---------------------------------------------------------------------------------------

fn flannel(core: &Arc<FakeCore>) -> Arc<Flannel> {
    Flannel::new(core.clone(), FlannelConfig::default())
}

/// Waits until the flannel has applied (and re-broadcast) an event matching `want`.
async fn applied(
    events: &mut broadcast::Receiver<Arc<TeamEvent>>,
    want: impl Fn(&TeamEventBody) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.expect("event stream open");
            if want(&event.body) {
                return;
            }
        }
    })
    .await
    .expect("event applied in time");
}

fn channel<'a>(boot: &'a confab_proto::rest::BootResponse, id: &str) -> Option<&'a BootChannel> {
    boot.channels.iter().find(|c| c.id.as_str() == id)
}

#[tokio::test]
async fn boot_does_not_grow_with_team_size() {
    let mut sizes = Vec::new();
    for team_size in [1_500, 32_000] {
        let core = FakeCore::new(team_size);
        core.add_direct("D1", &[7, 1], 5);
        core.add_direct("D2", &[7, 2], 9);
        core.add_direct("G1", &[7, 3, 4, 5], 2);
        let flannel = flannel(&core);

        let boot = flannel.boot(&core.caller(7)).await.unwrap();

        assert_eq!(boot.self_user.id, user_id(7));
        assert_eq!(boot.team.domain, "acme");
        let users: Vec<&str> = boot.users.iter().map(|u| u.id.as_str()).collect();
        // Self, then DM partners by recency (D2, D1, then the group DM).
        assert_eq!(
            users,
            [
                "U000007", "U000002", "U000001", "U000003", "U000004", "U000005"
            ]
        );
        assert_eq!(boot.channels.len(), 4);
        assert!(
            core.calls.user_ids.load(Ordering::SeqCst) <= 6,
            "boot loaded users beyond the first screen"
        );
        sizes.push(serde_json::to_vec(&boot).unwrap().len());
    }
    assert_eq!(sizes[0], sizes[1], "boot size must not depend on team size");
}

#[tokio::test]
async fn boot_users_are_capped_most_recent_dms_first() {
    let core = FakeCore::new(400);
    for partner in 1..=300 {
        core.add_direct(&format!("D{partner:04}"), &[0, partner], partner as u64);
    }
    let flannel = Flannel::new(
        core.clone(),
        FlannelConfig {
            boot_user_limit: 50,
            ..FlannelConfig::default()
        },
    );
    let boot = flannel.boot(&core.caller(0)).await.unwrap();
    assert_eq!(boot.users.len(), 50);
    assert_eq!(boot.users[0].id, user_id(0));
    assert_eq!(
        boot.users[1].id,
        user_id(300),
        "most recently active DM first"
    );
    assert_eq!(boot.channels.len(), 301, "channels are not capped");
    assert_eq!(core.calls.user_ids.load(Ordering::SeqCst), 50);
}

#[tokio::test]
async fn lookups_hit_the_cache_after_the_first_load() {
    let core = FakeCore::new(100);
    core.add_direct("D1", &[7, 1], 5);
    let flannel = flannel(&core);
    let caller = core.caller(7);

    let first = flannel.boot(&caller).await.unwrap();
    let after_first = core.calls();
    assert_eq!(
        after_first,
        [1, 1, 1, 1],
        "team, users (self and DM partners at once), channel states, subscribe"
    );
    let misses = flannel.stats().misses;

    let second = flannel.boot(&caller).await.unwrap();
    assert_eq!(core.calls(), after_first, "second boot asked the core");
    assert_eq!(
        serde_json::to_value(&first).unwrap(),
        serde_json::to_value(&second).unwrap()
    );
    assert_eq!(flannel.stats().misses, misses);
    assert!(flannel.stats().hits >= 4);

    // Lazy user lookups: only the misses go to the core, in one call, order kept.
    let ids = [
        user_id(1),
        user_id(50),
        user_id(51),
        user_id(50),
        user_id(9_999),
    ];
    let users = flannel.users(&caller, &ids).await.unwrap();
    let names: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(names, ["U000001", "U000050", "U000051"]);
    assert_eq!(core.calls.users.load(Ordering::SeqCst), 2);
    flannel.users(&caller, &ids[..3]).await.unwrap();
    assert_eq!(
        core.calls.users.load(Ordering::SeqCst),
        2,
        "second lookup asked the core"
    );

    let channels = flannel.member_channels(&caller).await.unwrap();
    assert_eq!(
        channels,
        [ChannelId::new("C-general"), ChannelId::new("D1")]
    );
    assert_eq!(core.calls.channel_states.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_first_users_share_one_subscription() {
    let core = FakeCore::new(50);
    let flannel = flannel(&core);
    let team = core.team.id.clone();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let flannel = flannel.clone();
        let team = team.clone();
        let caller = core.caller(i);
        tasks.push(tokio::spawn(async move {
            let events = flannel.team_events(&team).await.unwrap();
            flannel.boot(&caller).await.unwrap();
            events
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(core.calls.subscribe.load(Ordering::SeqCst), 1);
    assert_eq!(core.calls.team.load(Ordering::SeqCst), 1);
    assert_eq!(core.live_subscribers(), 1);
}

#[tokio::test]
async fn events_keep_the_cache_fresh() {
    let core = FakeCore::new(20);
    let flannel = flannel(&core);
    let caller = core.caller(3);
    let mut events = flannel.team_events(&core.team.id).await.unwrap();
    core.mark(3, "C-general", 30);
    applied(&mut events, |b| {
        matches!(b, TeamEventBody::ReadMarker { .. })
    })
    .await;

    let boot = flannel.boot(&caller).await.unwrap();
    let general = channel(&boot, "C-general").unwrap();
    assert_eq!(
        (general.last_seq, general.last_read, general.unread),
        (40, 30, 10)
    );
    let loads = core.calls();

    // A message raises last_seq and unread.
    core.post("C-general", 5);
    applied(&mut events, |b| matches!(b, TeamEventBody::Message { .. })).await;
    let boot = flannel.boot(&caller).await.unwrap();
    let general = channel(&boot, "C-general").unwrap();
    assert_eq!(
        (general.last_seq, general.last_read, general.unread),
        (41, 30, 11)
    );

    // The user's read marker lowers unread.
    core.mark(3, "C-general", 39);
    applied(&mut events, |b| {
        matches!(b, TeamEventBody::ReadMarker { .. })
    })
    .await;
    let boot = flannel.boot(&caller).await.unwrap();
    assert_eq!(channel(&boot, "C-general").unwrap().unread, 2);

    // Another user's marker does not touch this user's state.
    core.mark(4, "C-general", 41);
    applied(&mut events, |b| {
        matches!(b, TeamEventBody::ReadMarker { .. })
    })
    .await;
    let boot = flannel.boot(&caller).await.unwrap();
    assert_eq!(channel(&boot, "C-general").unwrap().unread, 2);

    // Joining a new channel adds it; its messages count.
    core.create_channel("C-new", 3);
    applied(&mut events, |b| {
        matches!(b, TeamEventBody::MemberJoined { .. })
    })
    .await;
    core.post("C-new", 3);
    applied(&mut events, |b| matches!(b, TeamEventBody::Message { .. })).await;
    let channels = flannel.member_channels(&caller).await.unwrap();
    assert_eq!(
        channels,
        [ChannelId::new("C-general"), ChannelId::new("C-new")]
    );
    let boot = flannel.boot(&caller).await.unwrap();
    let new = channel(&boot, "C-new").unwrap();
    assert_eq!(
        (new.name.as_str(), new.last_seq, new.unread),
        ("C-new", 1, 1)
    );

    // Leaving removes it.
    core.leave(3, "C-general");
    applied(&mut events, |b| {
        matches!(b, TeamEventBody::MemberLeft { .. })
    })
    .await;
    let channels = flannel.member_channels(&caller).await.unwrap();
    assert_eq!(channels, [ChannelId::new("C-new")]);

    // A changed user replaces the cached one.
    let before = flannel.users(&caller, &[user_id(9)]).await.unwrap();
    assert_eq!(before[0].name, "user 9");
    let user_loads = core.calls.users.load(Ordering::SeqCst);
    core.rename(9, "Nine", true);
    applied(&mut events, |b| {
        matches!(b, TeamEventBody::UserChanged { .. })
    })
    .await;
    let after = flannel.users(&caller, &[user_id(9)]).await.unwrap();
    assert_eq!(after[0].name, "Nine");
    assert_eq!(core.calls.users.load(Ordering::SeqCst), user_loads);

    // All of it without reloading channel states or the team.
    let now = core.calls();
    assert_eq!(now[0], loads[0]);
    assert_eq!(now[2], loads[2]);
    assert_eq!(now[3], 1);
}

#[tokio::test]
async fn an_event_racing_a_load_is_not_lost() {
    let core = FakeCore::new(20);
    let flannel = flannel(&core);
    let caller = core.caller(3);
    let mut events = flannel.team_events(&core.team.id).await.unwrap();

    *core.gate.armed.lock().unwrap() = true;
    let loading = {
        let flannel = flannel.clone();
        let caller = caller.clone();
        tokio::spawn(async move { flannel.member_channels(&caller).await.unwrap() })
    };
    core.gate.entered.notified().await;
    // The load has its (now stale) answer; the user joins a channel before it lands.
    core.create_channel("C-late", 3);
    applied(&mut events, |b| {
        matches!(b, TeamEventBody::MemberJoined { .. })
    })
    .await;
    core.gate.release.notify_one();

    let channels = loading.await.unwrap();
    assert_eq!(
        channels,
        [ChannelId::new("C-general"), ChannelId::new("C-late")]
    );
    assert_eq!(
        core.calls.channel_states.load(Ordering::SeqCst),
        2,
        "the raced load was retried"
    );
    let channels = flannel.member_channels(&caller).await.unwrap();
    assert_eq!(
        channels,
        [ChannelId::new("C-general"), ChannelId::new("C-late")]
    );
    assert_eq!(core.calls.channel_states.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_cut_off_drops_the_team_cache_and_resubscribes() {
    let core = FakeCore::new(20);
    core.add_direct("D1", &[3, 9], 4);
    let flannel = flannel(&core);
    let caller = core.caller(3);
    let mut events = flannel.team_events(&core.team.id).await.unwrap();
    let boot = flannel.boot(&caller).await.unwrap();
    assert_eq!(boot.users[1].name, "user 9");

    core.cut_off();
    let closed = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("receivers learn of the cut-off");
    assert!(matches!(closed, Err(broadcast::error::RecvError::Closed)));

    // Changes the edge cannot have seen while cut off.
    core.rename(9, "Nine", false);
    core.mark(3, "D1", 4);
    let boot = flannel.boot(&caller).await.unwrap();
    assert_eq!(
        boot.users[1].name, "Nine",
        "stale user served after a cut-off"
    );
    assert_eq!(
        channel(&boot, "D1").unwrap().unread,
        0,
        "stale read state served after a cut-off"
    );
    assert_eq!(
        core.calls(),
        [2, 2, 2, 2],
        "everything reloaded under a new subscription"
    );
    assert_eq!(core.live_subscribers(), 1);

    // The new subscription keeps the new cache fresh.
    let mut events = flannel.team_events(&core.team.id).await.unwrap();
    core.post("D1", 9);
    applied(&mut events, |b| matches!(b, TeamEventBody::Message { .. })).await;
    let boot = flannel.boot(&caller).await.unwrap();
    assert_eq!(channel(&boot, "D1").unwrap().unread, 1);
    assert_eq!(core.calls()[2], 2);
}

#[tokio::test(start_paused = true)]
async fn an_idle_team_is_unsubscribed() {
    let core = FakeCore::new(10);
    let flannel = Flannel::new(
        core.clone(),
        FlannelConfig {
            ttl: Duration::from_secs(60),
            ..FlannelConfig::default()
        },
    );
    let events = flannel.team_events(&core.team.id).await.unwrap();
    flannel.boot(&core.caller(1)).await.unwrap();

    // A receiver keeps the team followed, however long it is quiet.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(core.live_subscribers(), 1);

    drop(events);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(core.live_subscribers(), 0, "idle team still subscribed");

    flannel.boot(&core.caller(1)).await.unwrap();
    assert_eq!(core.calls.subscribe.load(Ordering::SeqCst), 2);
    assert_eq!(core.live_subscribers(), 1);
}

#[tokio::test]
async fn dropping_the_flannel_ends_its_subscriptions() {
    let core = FakeCore::new(10);
    let flannel = flannel(&core);
    flannel.boot(&core.caller(1)).await.unwrap();
    assert_eq!(core.live_subscribers(), 1);
    drop(flannel);
    tokio::time::timeout(Duration::from_secs(5), async {
        while core.live_subscribers() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("subscription ended");
}
