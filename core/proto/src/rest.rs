//! Request and response bodies of REST v1 (DESIGN.md §5).

use crate::ids::{ChannelId, UserId};
use crate::model::{Channel, ChannelKind, Message, Presence, Team, User};
use serde::{Deserialize, Serialize};

/// Credentials of a new user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub password: String,
}

/// `POST /v1/teams`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateTeamRequest {
    pub name: String,
    pub domain: String,
    pub owner: NewUser,
}

/// Answer to `POST /v1/teams` (201).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateTeamResponse {
    pub team: Team,
    pub user: User,
    pub token: String,
}

/// `POST /v1/auth/login`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The team's domain.
    pub team: String,
    pub email: String,
    pub password: String,
}

/// Answer to `POST /v1/auth/login`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub user: User,
}

/// `POST /v1/users` is a [`NewUser`]; the answer (201) is this.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserResponse {
    pub user: User,
}

/// Answer to `GET /v1/users?ids=`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UsersResponse {
    pub users: Vec<User>,
}

/// `POST /v1/channels`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateChannelRequest {
    pub name: String,
    #[serde(default)]
    pub private: bool,
}

/// Answer to channel creation, join, and `POST /v1/dms`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelResponse {
    pub channel: Channel,
}

/// Answer to `GET /v1/channels`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelsResponse {
    pub channels: Vec<Channel>,
}

/// `POST /v1/channels/{id}/members` and `POST /v1/dms`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserIdsRequest {
    pub user_ids: Vec<UserId>,
}

/// `POST /v1/messages`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PostMessageRequest {
    pub channel: ChannelId,
    pub text: String,
    pub client_msg_id: String,
}

/// Answer to `POST /v1/messages` (201).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessageResponse {
    pub message: Message,
}

/// Answer to `GET /v1/channels/{id}/history`: newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// One channel of the boot snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootChannel {
    pub id: ChannelId,
    pub name: String,
    pub kind: ChannelKind,
    pub private: bool,
    pub last_seq: u64,
    pub last_read: u64,
    pub unread: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<UserId>>,
}

/// Answer to `GET /v1/boot`: what the first screen needs and no more.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BootResponse {
    #[serde(rename = "self")]
    pub self_user: User,
    pub team: Team,
    pub channels: Vec<BootChannel>,
    /// Only the users the first screen shows: the caller and DM partners.
    pub users: Vec<User>,
}

/// Presence of one user, in `presence_change` events and query replies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub id: UserId,
    pub presence: Presence,
}

/// `POST /v1/ok`-style empty success.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OkResponse {
    pub ok: bool,
}

/// Body of `POST /v1/push/subscriptions`: where to POST the caller's push notifications.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatePushSubscriptionRequest {
    /// An absolute `https://` (or `http://`) URL.
    pub url: String,
}

/// A registered push sink of the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscriptionView {
    pub id: String,
    pub url: String,
    pub created_ts: String,
}

/// Answer to `POST /v1/push/subscriptions` (201).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushSubscriptionResponse {
    pub subscription: PushSubscriptionView,
}

/// Answer to `GET /v1/push/subscriptions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushSubscriptionsResponse {
    pub subscriptions: Vec<PushSubscriptionView>,
}
