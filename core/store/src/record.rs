//! Stored records: the public models plus what only the core may see.

use confab_proto::{Channel, Message, TeamId, User, UserId};
use serde::{Deserialize, Serialize};

/// Messages per history bucket. A partition `(team, channel, bucket)` holds at most this
/// many messages, so no partition grows without bound, and the bucket of any `seq` is
/// known without an index: history paging starts at `bucket_of(before)` and walks down.
pub const BUCKET_SEQS: u64 = 4096;

/// The bucket a sequence number belongs to.
pub fn bucket_of(seq: u64) -> u64 {
    seq / BUCKET_SEQS
}

/// A user with the secrets that never leave the core.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user: User,
    /// PHC-format argon2 hash.
    pub password_hash: String,
}

/// A channel with its team and bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub team: TeamId,
    pub channel: Channel,
    pub created_by: UserId,
    /// For DMs and group DMs: the sorted member ids joined by `,`, unique in the team.
    pub dm_key: Option<String>,
}

/// A message to append, with the team that scopes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    pub team: TeamId,
    pub message: Message,
}
