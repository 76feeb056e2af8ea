//! Stored records: the public models plus what only the core may see.

use crate::StoreError;
use confab_proto::{Channel, ChannelId, Message, TeamId, User, UserId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

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

/// A node's right to sequence one channel (assign seqs and append messages) until
/// `expires_at_ms`. The `epoch` is the fencing token: it goes up whenever the lease
/// changes hands, and an append carrying an older epoch is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelLease {
    pub team: TeamId,
    pub channel: ChannelId,
    /// Who holds it: a name unique to one process (see [`Store::claim_lease`]).
    ///
    /// [`Store::claim_lease`]: crate::Store::claim_lease
    pub holder: String,
    /// 1 for the first lease of a channel, +1 for every later holder.
    pub epoch: u64,
    /// Unix milliseconds, by the holder's clock.
    pub expires_at_ms: u64,
}

/// The answer to a lease claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseClaim {
    /// The caller holds the lease (new, or renewed).
    Granted(ChannelLease),
    /// Another holder has it until `expires_at_ms` (unix milliseconds, its clock).
    Held { holder: String, expires_at_ms: u64 },
}

/// Where to send a user's push notifications: one endpoint registered by one of their
/// clients (e.g. a Web Push subscription).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscription {
    pub team: TeamId,
    pub user: UserId,
    /// Unique among the user's subscriptions.
    pub id: String,
    /// The push service endpoint.
    pub url: String,
    /// When it was registered, as a message `ts` is written (`"SECONDS.MICROS"`).
    pub created_ts: String,
}

// ---- lease rules every driver shares ----

/// Now in unix milliseconds: the clock lease expiries are written and compared in.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When a lease claimed at `now_ms` for `ttl` expires.
pub(crate) fn lease_expiry(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// Refuses an empty holder name: drivers may use it to mark a released lease.
pub(crate) fn check_holder(holder: &str) -> Result<(), StoreError> {
    if holder.is_empty() {
        return Err(StoreError::Internal("a lease holder needs a name".into()));
    }
    Ok(())
}

/// Refuses an append with a message outside the lease's channel: a lease fences one
/// channel only.
pub(crate) fn check_in_lease(
    lease: &ChannelLease,
    messages: &[NewMessage],
) -> Result<(), StoreError> {
    match messages
        .iter()
        .find(|m| m.team != lease.team || m.message.channel != lease.channel)
    {
        Some(stray) => Err(StoreError::Internal(format!(
            "message {} of {}/{} appended under the lease of {}/{}",
            stray.message.id, stray.team, stray.message.channel, lease.team, lease.channel
        ))),
        None => Ok(()),
    }
}

/// The error of an append whose lease was superseded.
pub(crate) fn fenced(lease: &ChannelLease, current_epoch: u64) -> StoreError {
    StoreError::Fenced(format!(
        "lease epoch {} of {} on {}/{} was superseded (current epoch {current_epoch}); nothing written",
        lease.epoch, lease.holder, lease.team, lease.channel
    ))
}
