//! [`CoreCluster`]: the core nodes an edge (or a peer core) talks to, behind the
//! [`CoreApi`] trait. Calls of one team prefer the same node (rendezvous hashing over
//! the nodes of the caller's own region first), so a team's load spreads over the
//! cluster while each node sees a stable set of teams; a node that cannot be reached is
//! skipped for a moment and the call goes to the next one. Which node sequences a
//! channel is the cores' business (channel leases): any node accepts any post.

use crate::client::{CallError, LinkClient};
use crate::wire::Call;
use async_trait::async_trait;
use confab_chat::{Caller, CoreApi};
use confab_events::Subscription;
use confab_proto::rest::{
    BootChannel, CreateChannelRequest, CreatePushSubscriptionRequest, CreateTeamRequest,
    CreateTeamResponse, HistoryResponse, LoginRequest, LoginResponse, NewUser, PostMessageRequest,
    PushSubscriptionView, UserPresence,
};
use confab_proto::rtm::PresenceSetting;
use confab_proto::{ApiError, Channel, ChannelId, ErrorCode, Message, Team, TeamId, User, UserId};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a node that could not be reached is passed over.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// One node of the cluster and how near it is.
#[derive(Debug)]
pub struct ClusterNode {
    pub client: Arc<LinkClient>,
    /// Lower is preferred: 0 for the caller's own region.
    pub rank: u8,
}

/// Several core nodes behind one [`CoreApi`].
pub struct CoreCluster {
    nodes: Vec<ClusterNode>,
    down_until: Mutex<Vec<Option<Instant>>>,
}

impl std::fmt::Debug for CoreCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreCluster")
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|n| n.client.node())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl CoreCluster {
    /// A cluster of `nodes` (at least one).
    pub fn new(nodes: Vec<ClusterNode>) -> Arc<Self> {
        assert!(!nodes.is_empty(), "a core cluster needs at least one node");
        let down_until = Mutex::new(vec![None; nodes.len()]);
        Arc::new(Self { nodes, down_until })
    }

    /// The nodes, in the order a call keyed by `key` tries them: reachable before
    /// recently unreachable, nearer before farther, then by rendezvous score.
    fn order(&self, key: &str) -> Vec<usize> {
        let now = Instant::now();
        let down = self.down_until.lock().clone();
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by_key(|&i| {
            let is_down = down[i].is_some_and(|until| until > now);
            let mut hasher = DefaultHasher::new();
            (self.nodes[i].client.node(), key).hash(&mut hasher);
            (
                is_down,
                self.nodes[i].rank,
                std::cmp::Reverse(hasher.finish()),
            )
        });
        order
    }

    fn mark_down(&self, index: usize) {
        self.down_until.lock()[index] = Some(Instant::now() + DOWN_FOR);
    }

    fn mark_up(&self, index: usize) {
        self.down_until.lock()[index] = None;
    }

    /// Sends `call` to the first node that takes it. A call whose answer was lost goes
    /// to the next node only if running it twice is harmless.
    async fn route<T: DeserializeOwned>(&self, key: &str, call: Call) -> Result<T, ApiError> {
        let mut last = None;
        for index in self.order(key) {
            match self.nodes[index].client.request(call.clone()).await {
                Ok(answer) => {
                    self.mark_up(index);
                    return Ok(answer);
                }
                Err(CallError::Api(e)) => return Err(e),
                Err(e @ CallError::Unreachable { .. }) => {
                    self.mark_down(index);
                    last = Some(e);
                }
                Err(e @ CallError::Lost { .. }) => {
                    self.mark_down(index);
                    if !call.is_idempotent() {
                        return Err(e.into());
                    }
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(e) => ApiError::new(
                ErrorCode::Unavailable,
                format!("no core node answered; last: {e}"),
            ),
            None => ApiError::new(ErrorCode::Unavailable, "no core node configured"),
        })
    }
}

fn team_key(caller: &Caller) -> &str {
    caller.team.as_str()
}

#[async_trait]
impl CoreApi for CoreCluster {
    async fn create_team(&self, req: CreateTeamRequest) -> Result<CreateTeamResponse, ApiError> {
        let key = req.domain.clone();
        self.route(&key, Call::CreateTeam { req }).await
    }

    async fn login(&self, req: LoginRequest) -> Result<LoginResponse, ApiError> {
        let key = req.team.clone();
        self.route(&key, Call::Login { req }).await
    }

    async fn team(&self, caller: &Caller) -> Result<Team, ApiError> {
        let call = Call::Team {
            caller: caller.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn create_user(&self, caller: &Caller, req: NewUser) -> Result<User, ApiError> {
        let call = Call::CreateUser {
            caller: caller.clone(),
            req,
        };
        self.route(team_key(caller), call).await
    }

    async fn users(&self, caller: &Caller, ids: &[UserId]) -> Result<Vec<User>, ApiError> {
        let call = Call::Users {
            caller: caller.clone(),
            ids: ids.to_vec(),
        };
        self.route(team_key(caller), call).await
    }

    async fn create_channel(
        &self,
        caller: &Caller,
        req: CreateChannelRequest,
    ) -> Result<Channel, ApiError> {
        let call = Call::CreateChannel {
            caller: caller.clone(),
            req,
        };
        self.route(team_key(caller), call).await
    }

    async fn open_dm(&self, caller: &Caller, users: &[UserId]) -> Result<Channel, ApiError> {
        let call = Call::OpenDm {
            caller: caller.clone(),
            users: users.to_vec(),
        };
        self.route(team_key(caller), call).await
    }

    async fn channel(&self, caller: &Caller, channel: &ChannelId) -> Result<Channel, ApiError> {
        let call = Call::Channel {
            caller: caller.clone(),
            channel: channel.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn list_channels(&self, caller: &Caller) -> Result<Vec<Channel>, ApiError> {
        let call = Call::ListChannels {
            caller: caller.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn member_channels(&self, caller: &Caller) -> Result<Vec<Channel>, ApiError> {
        let call = Call::MemberChannels {
            caller: caller.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn channel_members(
        &self,
        caller: &Caller,
        channel: &ChannelId,
    ) -> Result<Vec<UserId>, ApiError> {
        let call = Call::ChannelMembers {
            caller: caller.clone(),
            channel: channel.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn join_channel(
        &self,
        caller: &Caller,
        channel: &ChannelId,
    ) -> Result<Channel, ApiError> {
        let call = Call::JoinChannel {
            caller: caller.clone(),
            channel: channel.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn add_members(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        users: &[UserId],
    ) -> Result<(), ApiError> {
        let call = Call::AddMembers {
            caller: caller.clone(),
            channel: channel.clone(),
            users: users.to_vec(),
        };
        self.route(team_key(caller), call).await
    }

    async fn leave_channel(&self, caller: &Caller, channel: &ChannelId) -> Result<(), ApiError> {
        let call = Call::LeaveChannel {
            caller: caller.clone(),
            channel: channel.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn post_message(
        &self,
        caller: &Caller,
        req: PostMessageRequest,
    ) -> Result<Message, ApiError> {
        let call = Call::PostMessage {
            caller: caller.clone(),
            req,
        };
        self.route(team_key(caller), call).await
    }

    async fn sequence_message(
        &self,
        caller: &Caller,
        req: PostMessageRequest,
    ) -> Result<Message, ApiError> {
        let call = Call::SequenceMessage {
            caller: caller.clone(),
            req,
        };
        self.route(team_key(caller), call).await
    }

    async fn history(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryResponse, ApiError> {
        let call = Call::History {
            caller: caller.clone(),
            channel: channel.clone(),
            before,
            limit,
        };
        self.route(team_key(caller), call).await
    }

    async fn messages_after(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, ApiError> {
        let call = Call::MessagesAfter {
            caller: caller.clone(),
            channel: channel.clone(),
            after,
            limit,
        };
        self.route(team_key(caller), call).await
    }

    async fn mark_read(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        seq: u64,
    ) -> Result<(), ApiError> {
        let call = Call::MarkRead {
            caller: caller.clone(),
            channel: channel.clone(),
            seq,
        };
        self.route(team_key(caller), call).await
    }

    async fn channel_states(&self, caller: &Caller) -> Result<Vec<BootChannel>, ApiError> {
        let call = Call::ChannelStates {
            caller: caller.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn typing(&self, caller: &Caller, channel: &ChannelId) -> Result<(), ApiError> {
        let call = Call::Typing {
            caller: caller.clone(),
            channel: channel.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn heartbeat(&self, caller: &Caller, session: &str) -> Result<(), ApiError> {
        let call = Call::Heartbeat {
            caller: caller.clone(),
            session: session.to_string(),
        };
        self.route(team_key(caller), call).await
    }

    async fn end_session(&self, caller: &Caller, session: &str) -> Result<(), ApiError> {
        let call = Call::EndSession {
            caller: caller.clone(),
            session: session.to_string(),
        };
        self.route(team_key(caller), call).await
    }

    async fn set_presence(
        &self,
        caller: &Caller,
        setting: PresenceSetting,
    ) -> Result<(), ApiError> {
        let call = Call::SetPresence {
            caller: caller.clone(),
            setting,
        };
        self.route(team_key(caller), call).await
    }

    async fn presence(
        &self,
        caller: &Caller,
        users: &[UserId],
    ) -> Result<Vec<UserPresence>, ApiError> {
        let call = Call::Presence {
            caller: caller.clone(),
            users: users.to_vec(),
        };
        self.route(team_key(caller), call).await
    }

    async fn create_push_subscription(
        &self,
        caller: &Caller,
        req: CreatePushSubscriptionRequest,
    ) -> Result<PushSubscriptionView, ApiError> {
        let call = Call::CreatePushSubscription {
            caller: caller.clone(),
            req,
        };
        self.route(team_key(caller), call).await
    }

    async fn push_subscriptions(
        &self,
        caller: &Caller,
    ) -> Result<Vec<PushSubscriptionView>, ApiError> {
        let call = Call::PushSubscriptions {
            caller: caller.clone(),
        };
        self.route(team_key(caller), call).await
    }

    async fn delete_push_subscription(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        let call = Call::DeletePushSubscription {
            caller: caller.clone(),
            id: id.to_string(),
        };
        self.route(team_key(caller), call).await
    }

    async fn subscribe(&self, team: &TeamId) -> Result<Subscription, ApiError> {
        let mut last = None;
        for index in self.order(team.as_str()) {
            match self.nodes[index].client.subscribe_team(team).await {
                Ok(subscription) => {
                    self.mark_up(index);
                    return Ok(subscription);
                }
                Err(CallError::Api(e)) => return Err(e),
                Err(e) => {
                    self.mark_down(index);
                    last = Some(e);
                }
            }
        }
        Err(ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "no core node took the subscription; last: {}",
                last.map_or_else(|| "none configured".to_string(), |e| e.to_string())
            ),
        ))
    }
}
