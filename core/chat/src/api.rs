//! [`CoreApi`]: what an edge may ask of the core. Every call except team creation and
//! login names the [`Caller`] (from a verified token) and is scoped to the caller's team:
//! other teams' ids behave as if they did not exist.

use async_trait::async_trait;
use confab_events::Subscription;
use confab_proto::rest::{
    BootChannel, CreateChannelRequest, CreatePushSubscriptionRequest, CreateTeamRequest,
    CreateTeamResponse, HistoryResponse, LoginRequest, LoginResponse, NewUser, PostMessageRequest,
    PushSubscriptionView, UserPresence,
};
use confab_proto::rtm::PresenceSetting;
use confab_proto::{ApiError, Channel, ChannelId, Message, Team, TeamId, User, UserId};

/// Who is asking: the user and team named by a verified token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    pub team: TeamId,
    pub user: UserId,
}

/// The core's operations, one per REST endpoint or RTM command plus the lookups the
/// edge cache loads from. Errors are client-facing [`ApiError`]s.
#[async_trait]
pub trait CoreApi: Send + Sync + 'static {
    // ---- teams and sessions ----

    /// `POST /v1/teams`: a new team, its admin, and a token for the admin.
    async fn create_team(&self, req: CreateTeamRequest) -> Result<CreateTeamResponse, ApiError>;

    /// `POST /v1/auth/login`.
    async fn login(&self, req: LoginRequest) -> Result<LoginResponse, ApiError>;

    /// The caller's team.
    async fn team(&self, caller: &Caller) -> Result<Team, ApiError>;

    // ---- users ----

    /// `POST /v1/users` (team admins only).
    async fn create_user(&self, caller: &Caller, req: NewUser) -> Result<User, ApiError>;

    /// `GET /v1/users?ids=`: users of the caller's team among `ids` (others skipped).
    async fn users(&self, caller: &Caller, ids: &[UserId]) -> Result<Vec<User>, ApiError>;

    // ---- channels ----

    /// `POST /v1/channels`: the caller becomes the first member.
    async fn create_channel(
        &self,
        caller: &Caller,
        req: CreateChannelRequest,
    ) -> Result<Channel, ApiError>;

    /// `POST /v1/dms`: the one DM or group DM for the caller plus `users`.
    async fn open_dm(&self, caller: &Caller, users: &[UserId]) -> Result<Channel, ApiError>;

    /// A channel the caller may see (public, or one they are in).
    async fn channel(&self, caller: &Caller, channel: &ChannelId) -> Result<Channel, ApiError>;

    /// `GET /v1/channels`: public channels and those the caller is in.
    async fn list_channels(&self, caller: &Caller) -> Result<Vec<Channel>, ApiError>;

    /// The channels (of every kind) the caller is a member of.
    async fn member_channels(&self, caller: &Caller) -> Result<Vec<Channel>, ApiError>;

    /// Members of a channel the caller may see.
    async fn channel_members(
        &self,
        caller: &Caller,
        channel: &ChannelId,
    ) -> Result<Vec<UserId>, ApiError>;

    /// `POST /v1/channels/{id}/join` (public channels only).
    async fn join_channel(&self, caller: &Caller, channel: &ChannelId)
    -> Result<Channel, ApiError>;

    /// `POST /v1/channels/{id}/members`: a member adds users of the team.
    async fn add_members(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        users: &[UserId],
    ) -> Result<(), ApiError>;

    /// `POST /v1/channels/{id}/leave` (not DMs).
    async fn leave_channel(&self, caller: &Caller, channel: &ChannelId) -> Result<(), ApiError>;

    // ---- messages ----

    /// `POST /v1/messages` and the RTM `message` command: returns once the message is
    /// durable; a retry with the same `client_msg_id` returns the original.
    async fn post_message(
        &self,
        caller: &Caller,
        req: PostMessageRequest,
    ) -> Result<Message, ApiError>;

    /// A post forwarded by another core node to this one because this node holds the
    /// channel's lease: sequenced here, never forwarded again. Single-node cores
    /// sequence every post themselves, so it is the same as [`CoreApi::post_message`].
    async fn sequence_message(
        &self,
        caller: &Caller,
        req: PostMessageRequest,
    ) -> Result<Message, ApiError> {
        self.post_message(caller, req).await
    }

    /// `GET /v1/channels/{id}/history`: newest first, `seq < before`.
    async fn history(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryResponse, ApiError>;

    /// Messages with `seq > after`, oldest first, at most `limit` (RTM `resume`).
    async fn messages_after(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, ApiError>;

    // ---- read state ----

    /// The RTM `mark` command: moves the caller's read marker forward.
    async fn mark_read(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        seq: u64,
    ) -> Result<(), ApiError>;

    /// For each channel the caller is in: `last_seq`, `last_read`, `unread`.
    async fn channel_states(&self, caller: &Caller) -> Result<Vec<BootChannel>, ApiError>;

    // ---- ephemeral: typing and presence ----

    /// The RTM `typing` command (members only).
    async fn typing(&self, caller: &Caller, channel: &ChannelId) -> Result<(), ApiError>;

    /// A sign of life from one RTM session of the caller.
    async fn heartbeat(&self, caller: &Caller, session: &str) -> Result<(), ApiError>;

    /// An RTM session of the caller ended.
    async fn end_session(&self, caller: &Caller, session: &str) -> Result<(), ApiError>;

    /// The RTM `presence_set` command.
    async fn set_presence(&self, caller: &Caller, setting: PresenceSetting)
    -> Result<(), ApiError>;

    /// The RTM `presence_query` command: users outside the team are skipped.
    async fn presence(
        &self,
        caller: &Caller,
        users: &[UserId],
    ) -> Result<Vec<UserPresence>, ApiError>;

    // ---- push subscriptions ----

    /// `POST /v1/push/subscriptions`: registers a webhook URL for the caller's pushes.
    async fn create_push_subscription(
        &self,
        caller: &Caller,
        req: CreatePushSubscriptionRequest,
    ) -> Result<PushSubscriptionView, ApiError>;

    /// `GET /v1/push/subscriptions`: the caller's registered sinks.
    async fn push_subscriptions(
        &self,
        caller: &Caller,
    ) -> Result<Vec<PushSubscriptionView>, ApiError>;

    /// `DELETE /v1/push/subscriptions/{id}`: `not_found` unless it is the caller's.
    async fn delete_push_subscription(&self, caller: &Caller, id: &str) -> Result<(), ApiError>;

    // ---- events ----

    /// The team's event stream (messages, membership, users, presence, typing), for edges.
    async fn subscribe(&self, team: &TeamId) -> Result<Subscription, ApiError>;
}

/// The other core nodes of a cluster, as the chat service needs them: to hand a post to
/// the node that holds its channel's lease.
#[async_trait]
pub trait Peers: Send + Sync + std::fmt::Debug + 'static {
    /// Has `node` sequence the post ([`CoreApi::sequence_message`] there).
    async fn sequence_at(
        &self,
        node: &str,
        caller: &Caller,
        req: PostMessageRequest,
    ) -> Result<Message, PeerError>;
}

/// Why a peer could not take a forwarded post.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// No connection to the node (it may be down; its lease will expire).
    #[error("core node {0} unreachable")]
    Unreachable(String),
    /// The node may have sequenced the post but its answer was lost; sending it again is
    /// safe (the `client_msg_id` dedups it).
    #[error("core node {0} did not answer")]
    Lost(String),
    /// The node answered with an error.
    #[error("{}", .0.msg)]
    Api(ApiError),
}
