//! Events the core publishes per team, consumed by edges (to update their caches and push
//! RTM events to connections) and by side-effect consumers such as notify. They cross
//! process boundaries, so they are plain serde data like the rest of the protocol.

use crate::ids::{ChannelId, TeamId, UserId};
use crate::model::{Channel, Message, Presence, User};
use serde::{Deserialize, Serialize};

/// One change in a team, in the order the core made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamEvent {
    pub team: TeamId,
    pub body: TeamEventBody,
}

/// What changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TeamEventBody {
    /// A durable new message.
    Message { message: Message },
    /// A member is typing in a channel.
    Typing { channel: ChannelId, user: UserId },
    /// A channel, DM or group DM was created (its creator/members follow as `member_joined`).
    ChannelCreated { channel: Channel },
    /// `user` became a member of `channel`.
    MemberJoined { channel: Channel, user: UserId },
    /// `user` is no longer a member of `channel`.
    MemberLeft { channel: ChannelId, user: UserId },
    /// A user was created or changed.
    UserChanged { user: User },
    /// A user's presence changed.
    Presence { user: UserId, presence: Presence },
    /// A user moved their read marker (other connections of the same user follow it).
    ReadMarker {
        channel: ChannelId,
        user: UserId,
        seq: u64,
    },
}

impl TeamEvent {
    /// The channel the event is about, if any: the key that orders it in the event log.
    pub fn channel(&self) -> Option<&ChannelId> {
        match &self.body {
            TeamEventBody::Message { message } => Some(&message.channel),
            TeamEventBody::Typing { channel, .. }
            | TeamEventBody::MemberLeft { channel, .. }
            | TeamEventBody::ReadMarker { channel, .. } => Some(channel),
            TeamEventBody::ChannelCreated { channel }
            | TeamEventBody::MemberJoined { channel, .. } => Some(&channel.id),
            TeamEventBody::UserChanged { .. } | TeamEventBody::Presence { .. } => None,
        }
    }
}
