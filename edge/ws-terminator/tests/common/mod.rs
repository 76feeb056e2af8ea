//! Test doubles shared by the edge's tests: an in-memory [`CoreApi`] that publishes team
//! events like the real core does, and token helpers. Unit-level only; end-to-end tests
//! against the real core live with the lead's suites.

#![allow(dead_code)]

use async_trait::async_trait;
use confab_auth::{Claims, SigningKeyPair, TokenIssuer, TokenVerifier};
use confab_chat::{Caller, CoreApi};
use confab_events::Subscription;
use confab_proto::event::{TeamEvent, TeamEventBody};
use confab_proto::rest::{
    BootChannel, CreateChannelRequest, CreatePushSubscriptionRequest, CreateTeamRequest,
    CreateTeamResponse, HistoryResponse, LoginRequest, LoginResponse, NewUser, PostMessageRequest,
    PushSubscriptionView, UserPresence,
};
use confab_proto::rtm::PresenceSetting;
use confab_proto::{
    ApiError, Channel, ChannelId, ChannelKind, ErrorCode, Message, MessageId, Presence, Team,
    TeamId, User, UserId,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

pub const TEAM: &str = "T1";

struct FakeChannel {
    channel: Channel,
    members: Vec<UserId>,
    messages: Vec<Message>,
    reads: HashMap<UserId, u64>,
}

#[derive(Default)]
struct FakeState {
    users: Vec<User>,
    channels: BTreeMap<ChannelId, FakeChannel>,
    subscribers: Vec<mpsc::Sender<Arc<TeamEvent>>>,
    presence: HashMap<UserId, Presence>,
}

/// A core with team T1 (users U1 admin, U2, U3, U4) and public channel C1 (U1, U2).
pub struct FakeCore {
    pub team: Team,
    state: Mutex<FakeState>,
    calls: Mutex<Vec<String>>,
    /// When set, every `messages_after` call waits for a permit.
    pub replay_gate: Mutex<Option<Arc<Semaphore>>>,
    /// Delays of the next `post_message` calls, in order.
    pub post_delays: Mutex<VecDeque<Duration>>,
    pub last_history_limit: Mutex<Option<usize>>,
}

pub fn user(id: &str) -> User {
    User {
        id: id.into(),
        team: TEAM.into(),
        name: format!("name-{id}"),
        email: format!("{id}@example.com"),
        is_admin: id == "U1",
    }
}

pub fn caller(user: &str) -> Caller {
    Caller {
        team: TEAM.into(),
        user: user.into(),
    }
}

fn not_found(channel: &ChannelId) -> ApiError {
    ApiError::new(ErrorCode::ChannelNotFound, format!("no channel {channel}"))
}

impl FakeCore {
    pub fn new() -> Arc<Self> {
        let mut state = FakeState {
            users: ["U1", "U2", "U3", "U4"].into_iter().map(user).collect(),
            ..FakeState::default()
        };
        state.channels.insert(
            "C1".into(),
            FakeChannel {
                channel: Channel {
                    id: "C1".into(),
                    name: "general".into(),
                    private: false,
                    kind: ChannelKind::Public,
                    members: None,
                },
                members: vec!["U1".into(), "U2".into()],
                messages: Vec::new(),
                reads: HashMap::new(),
            },
        );
        Arc::new(Self {
            team: Team {
                id: TEAM.into(),
                name: "Acme".into(),
                domain: "acme".into(),
            },
            state: Mutex::new(state),
            calls: Mutex::new(Vec::new()),
            replay_gate: Mutex::new(None),
            post_delays: Mutex::new(VecDeque::new()),
            last_history_limit: Mutex::new(None),
        })
    }

    fn record(&self, call: impl Into<String>) {
        self.calls.lock().push(call.into());
    }

    /// Calls made so far, e.g. `heartbeat U1`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    /// Sends an event to every subscriber, as the core's fan-out would.
    pub fn publish(&self, body: TeamEventBody) {
        let event = Arc::new(TeamEvent {
            team: TEAM.into(),
            body,
        });
        let mut state = self.state.lock();
        state
            .subscribers
            .retain(|tx| tx.try_send(event.clone()).is_ok());
    }

    /// Ends every subscription, as a core restart would.
    pub fn drop_subscribers(&self) {
        self.state.lock().subscribers.clear();
    }

    /// Stores a message without publishing it (a lost live event).
    pub fn store_message(&self, channel: &str, user: &str, text: &str) -> Message {
        let mut state = self.state.lock();
        let ch = state
            .channels
            .get_mut(&ChannelId::from(channel))
            .expect("channel exists");
        let seq = ch.messages.len() as u64 + 1;
        let message = Message {
            id: MessageId::new(format!("M{channel}-{seq}")),
            channel: channel.into(),
            user: user.into(),
            text: text.into(),
            seq,
            ts: format!("{seq}.000000"),
            client_msg_id: format!("c{seq}"),
            thread_ts: None,
            edited_ts: None,
            deleted: false,
        };
        ch.messages.push(message.clone());
        message
    }

    /// Stores and publishes a message.
    pub fn post(&self, channel: &str, user: &str, text: &str) -> Message {
        let message = self.store_message(channel, user, text);
        self.publish(TeamEventBody::Message {
            message: message.clone(),
        });
        message
    }

    /// Makes `user` a member in the store (events are the test's business).
    pub fn add_member(&self, channel: &str, user: &str) {
        let mut state = self.state.lock();
        let ch = state
            .channels
            .get_mut(&ChannelId::from(channel))
            .expect("channel exists");
        ch.members.push(user.into());
    }

    pub fn remove_member(&self, channel: &str, user: &str) {
        let mut state = self.state.lock();
        let ch = state
            .channels
            .get_mut(&ChannelId::from(channel))
            .expect("channel exists");
        ch.members.retain(|m| m.as_str() != user);
    }

    pub fn channel(&self, id: &str) -> Channel {
        self.state.lock().channels[&ChannelId::from(id)]
            .channel
            .clone()
    }

    fn member_check(&self, caller: &Caller, channel: &ChannelId) -> Result<(), ApiError> {
        let state = self.state.lock();
        let ch = state
            .channels
            .get(channel)
            .ok_or_else(|| not_found(channel))?;
        if ch.members.contains(&caller.user) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::NotInChannel, "not a member"))
        }
    }
}

fn unsupported<T>(what: &str) -> Result<T, ApiError> {
    Err(ApiError::new(
        ErrorCode::Internal,
        format!("fake core has no {what}"),
    ))
}

#[async_trait]
impl CoreApi for FakeCore {
    async fn create_team(&self, req: CreateTeamRequest) -> Result<CreateTeamResponse, ApiError> {
        self.record("create_team");
        if req.domain == "taken" {
            return Err(ApiError::new(ErrorCode::DomainTaken, "domain taken"));
        }
        Ok(CreateTeamResponse {
            team: Team {
                id: "T9".into(),
                name: req.name,
                domain: req.domain,
            },
            user: user("U9"),
            token: "token".into(),
        })
    }

    /// Accepts only the password `secret`; answers as U1 with the email given and the token
    /// `token-for-<team>`, so a test can tell the request body reached the core.
    async fn login(&self, req: LoginRequest) -> Result<LoginResponse, ApiError> {
        self.record("login");
        if req.password != "secret" {
            return Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "wrong password",
            ));
        }
        let mut user = user("U1");
        user.email = req.email;
        Ok(LoginResponse {
            token: format!("token-for-{}", req.team),
            user,
        })
    }

    async fn team(&self, _caller: &Caller) -> Result<Team, ApiError> {
        Ok(self.team.clone())
    }

    async fn create_user(&self, caller: &Caller, req: NewUser) -> Result<User, ApiError> {
        if caller.user.as_str() != "U1" {
            return Err(ApiError::new(ErrorCode::Forbidden, "admins only"));
        }
        let mut created = user("U5");
        created.email = req.email;
        created.name = req.name;
        Ok(created)
    }

    async fn users(&self, _caller: &Caller, ids: &[UserId]) -> Result<Vec<User>, ApiError> {
        self.record(format!("users {}", ids.len()));
        let state = self.state.lock();
        Ok(state
            .users
            .iter()
            .filter(|u| ids.contains(&u.id))
            .cloned()
            .collect())
    }

    async fn create_channel(
        &self,
        caller: &Caller,
        req: CreateChannelRequest,
    ) -> Result<Channel, ApiError> {
        let mut state = self.state.lock();
        if state.channels.values().any(|c| c.channel.name == req.name) {
            return Err(ApiError::new(ErrorCode::NameTaken, "name taken"));
        }
        let id = ChannelId::new(format!("C{}", state.channels.len() + 1));
        let channel = Channel {
            id: id.clone(),
            name: req.name,
            private: req.private,
            kind: if req.private {
                ChannelKind::Private
            } else {
                ChannelKind::Public
            },
            members: None,
        };
        state.channels.insert(
            id,
            FakeChannel {
                channel: channel.clone(),
                members: vec![caller.user.clone()],
                messages: Vec::new(),
                reads: HashMap::new(),
            },
        );
        Ok(channel)
    }

    async fn open_dm(&self, _caller: &Caller, _users: &[UserId]) -> Result<Channel, ApiError> {
        unsupported("dms")
    }

    async fn channel(&self, _caller: &Caller, channel: &ChannelId) -> Result<Channel, ApiError> {
        let state = self.state.lock();
        state
            .channels
            .get(channel)
            .map(|c| c.channel.clone())
            .ok_or_else(|| not_found(channel))
    }

    async fn list_channels(&self, _caller: &Caller) -> Result<Vec<Channel>, ApiError> {
        let state = self.state.lock();
        Ok(state.channels.values().map(|c| c.channel.clone()).collect())
    }

    async fn member_channels(&self, caller: &Caller) -> Result<Vec<Channel>, ApiError> {
        let state = self.state.lock();
        Ok(state
            .channels
            .values()
            .filter(|c| c.members.contains(&caller.user))
            .map(|c| c.channel.clone())
            .collect())
    }

    async fn channel_members(
        &self,
        _caller: &Caller,
        channel: &ChannelId,
    ) -> Result<Vec<UserId>, ApiError> {
        let state = self.state.lock();
        state
            .channels
            .get(channel)
            .map(|c| c.members.clone())
            .ok_or_else(|| not_found(channel))
    }

    async fn join_channel(
        &self,
        caller: &Caller,
        channel: &ChannelId,
    ) -> Result<Channel, ApiError> {
        let mut state = self.state.lock();
        let ch = state
            .channels
            .get_mut(channel)
            .ok_or_else(|| not_found(channel))?;
        if !ch.members.contains(&caller.user) {
            ch.members.push(caller.user.clone());
        }
        Ok(ch.channel.clone())
    }

    async fn add_members(
        &self,
        _caller: &Caller,
        _channel: &ChannelId,
        _users: &[UserId],
    ) -> Result<(), ApiError> {
        unsupported("add_members")
    }

    async fn leave_channel(&self, caller: &Caller, channel: &ChannelId) -> Result<(), ApiError> {
        let mut state = self.state.lock();
        let ch = state
            .channels
            .get_mut(channel)
            .ok_or_else(|| not_found(channel))?;
        ch.members.retain(|m| *m != caller.user);
        Ok(())
    }

    async fn post_message(
        &self,
        caller: &Caller,
        req: PostMessageRequest,
    ) -> Result<Message, ApiError> {
        let delay = self.post_delays.lock().pop_front();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if req.text.is_empty() {
            return Err(ApiError::new(ErrorCode::EmptyMessage, "empty"));
        }
        self.member_check(caller, &req.channel)?;
        let message = self.store_message(req.channel.as_str(), caller.user.as_str(), &req.text);
        let message = Message {
            client_msg_id: req.client_msg_id,
            ..message
        };
        {
            let mut state = self.state.lock();
            let ch = state.channels.get_mut(&req.channel).expect("checked");
            *ch.messages.last_mut().expect("just stored") = message.clone();
        }
        self.publish(TeamEventBody::Message {
            message: message.clone(),
        });
        Ok(message)
    }

    async fn history(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryResponse, ApiError> {
        *self.last_history_limit.lock() = Some(limit);
        self.member_check(caller, channel)?;
        let state = self.state.lock();
        let all = &state.channels[channel].messages;
        let mut older: Vec<Message> = all
            .iter()
            .filter(|m| before.is_none_or(|b| m.seq < b))
            .cloned()
            .collect();
        older.reverse();
        let has_more = older.len() > limit;
        older.truncate(limit);
        Ok(HistoryResponse {
            messages: older,
            has_more,
        })
    }

    async fn messages_after(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, ApiError> {
        let gate = self.replay_gate.lock().clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        self.record(format!("messages_after {channel} {after}"));
        self.member_check(caller, channel)?;
        let state = self.state.lock();
        Ok(state.channels[channel]
            .messages
            .iter()
            .filter(|m| m.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn mark_read(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        seq: u64,
    ) -> Result<(), ApiError> {
        self.member_check(caller, channel)?;
        let mut state = self.state.lock();
        state
            .channels
            .get_mut(channel)
            .expect("checked")
            .reads
            .insert(caller.user.clone(), seq);
        Ok(())
    }

    async fn channel_states(&self, caller: &Caller) -> Result<Vec<BootChannel>, ApiError> {
        let state = self.state.lock();
        Ok(state
            .channels
            .values()
            .filter(|c| c.members.contains(&caller.user))
            .map(|c| {
                let last_seq = c.messages.len() as u64;
                let last_read = c.reads.get(&caller.user).copied().unwrap_or(0);
                BootChannel {
                    id: c.channel.id.clone(),
                    name: c.channel.name.clone(),
                    kind: c.channel.kind,
                    private: c.channel.private,
                    last_seq,
                    last_read,
                    unread: last_seq.saturating_sub(last_read),
                    members: c.channel.members.clone(),
                }
            })
            .collect())
    }

    async fn typing(&self, caller: &Caller, channel: &ChannelId) -> Result<(), ApiError> {
        self.member_check(caller, channel)?;
        self.publish(TeamEventBody::Typing {
            channel: channel.clone(),
            user: caller.user.clone(),
        });
        Ok(())
    }

    async fn heartbeat(&self, caller: &Caller, _session: &str) -> Result<(), ApiError> {
        self.record(format!("heartbeat {}", caller.user));
        Ok(())
    }

    async fn end_session(&self, caller: &Caller, _session: &str) -> Result<(), ApiError> {
        self.record(format!("end_session {}", caller.user));
        Ok(())
    }

    async fn set_presence(
        &self,
        caller: &Caller,
        setting: PresenceSetting,
    ) -> Result<(), ApiError> {
        let presence = match setting {
            PresenceSetting::Auto => Presence::Active,
            PresenceSetting::Away => Presence::Away,
            PresenceSetting::Dnd => Presence::Dnd,
        };
        self.state
            .lock()
            .presence
            .insert(caller.user.clone(), presence);
        Ok(())
    }

    async fn presence(
        &self,
        _caller: &Caller,
        users: &[UserId],
    ) -> Result<Vec<UserPresence>, ApiError> {
        let state = self.state.lock();
        Ok(users
            .iter()
            .filter(|u| state.users.iter().any(|known| &known.id == *u))
            .map(|u| UserPresence {
                id: u.clone(),
                presence: state.presence.get(u).copied().unwrap_or(Presence::Away),
            })
            .collect())
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
        let (tx, rx) = mpsc::channel(4096);
        self.state.lock().subscribers.push(tx);
        Ok(Subscription {
            team: team.clone(),
            events: rx,
        })
    }
}

/// Signs tokens for the fake team, and verifies them.
pub struct Tokens {
    pub issuer: TokenIssuer,
    pub verifier: Arc<TokenVerifier>,
}

impl Tokens {
    pub fn new() -> Self {
        let keys = SigningKeyPair::generate().expect("key pair");
        Self {
            issuer: TokenIssuer::new(&keys, Duration::from_secs(3600)).expect("issuer"),
            verifier: Arc::new(
                TokenVerifier::from_public_pem(keys.public_pem()).expect("verifier"),
            ),
        }
    }

    pub fn token(&self, user: &str) -> String {
        self.issuer
            .issue(&TEAM.into(), &user.into())
            .expect("token")
    }

    pub fn expired(&self, user: &str) -> String {
        self.issuer
            .issue_claims(&Claims {
                user: user.into(),
                team: TEAM.into(),
                iat: 1_000,
                exp: 2_000,
            })
            .expect("token")
    }

    /// A token signed by some other key.
    pub fn forged(user: &str) -> String {
        Tokens::new().token(user)
    }
}
