//! The objects of the API as clients see them. Storage has richer records (password
//! hashes, membership indexes); these are the public projections.

use crate::ids::{ChannelId, MessageId, TeamId, UserId};
use serde::{Deserialize, Serialize};

/// A workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    /// Unique, lower-case name used to log in (`acme` in `acme.confab.example`).
    pub domain: String,
}

/// A member of a team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub team: TeamId,
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub is_admin: bool,
}

/// What kind of conversation a channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Anyone in the team can see and join it.
    Public,
    /// Visible to members only; others are added by a member.
    Private,
    /// A 1:1 conversation (or a note to self).
    Dm,
    /// A conversation between 3 to `MAX_GROUP_DM_MEMBERS` people.
    GroupDm,
}

impl ChannelKind {
    /// Whether non-members may see the channel exists.
    pub fn is_listed(self) -> bool {
        matches!(self, Self::Public)
    }

    /// DMs and group DMs have a fixed member set.
    pub fn is_direct(self) -> bool {
        matches!(self, Self::Dm | Self::GroupDm)
    }
}

/// A channel, DM or group DM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: ChannelId,
    /// Empty for DMs; clients name those after the other members.
    pub name: String,
    pub private: bool,
    pub kind: ChannelKind,
    /// Members of a DM or group DM (they are few and fixed); absent for channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<UserId>>,
}

/// Presence as shown next to a user's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Connected and recently heard from.
    Active,
    /// Not connected, idle, or set away by the user.
    Away,
    /// Do not disturb: connected or not, notifications are held.
    Dnd,
}

/// A message. `seq` is the channel's dense sequence number (1, 2, 3, … without gaps);
/// `ts` is a hybrid-logical-clock stamp `"SECONDS.MICROS"` that orders causally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub channel: ChannelId,
    pub user: UserId,
    pub text: String,
    pub seq: u64,
    pub ts: String,
    pub client_msg_id: String,
    /// `ts` of the thread parent, for replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ts: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}
