//! Presence (DESIGN.md §7): who is active, away or in do-not-disturb.
//!
//! A user is `active` while at least one of their sessions (RTM connections) has sent a
//! heartbeat within the TTL; `away` otherwise or when set by hand; `dnd` when set by hand.
//! [`PresenceStore`] keeps that state and reports each change once per team; batching
//! and per-viewport subscriptions happen at the edge, which subscribes once per team.

pub mod conformance;
pub mod memory;
pub mod redis;

pub use self::redis::RedisPresence;
pub use memory::MemoryPresence;

use async_trait::async_trait;
use confab_proto::rtm::PresenceSetting;
use confab_proto::{Presence, TeamId, UserId};
use std::time::Duration;
use tokio::sync::broadcast;

/// Which engine keeps presence. Chosen explicitly in configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceBackend {
    /// In this process; right for one node.
    InProcess { ttl: Duration },
    /// In Redis at `url`, shared by every node that opens it; `ttl` as for `InProcess`.
    Redis { url: String, ttl: Duration },
}

/// Opens the configured presence backend.
pub async fn open(
    backend: &PresenceBackend,
) -> Result<std::sync::Arc<dyn PresenceStore>, PresenceError> {
    match backend {
        PresenceBackend::InProcess { ttl } => Ok(MemoryPresence::new(*ttl)),
        PresenceBackend::Redis { url, ttl } => Ok(RedisPresence::open(url, *ttl).await?),
    }
}

/// A change of one user's effective presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceChange {
    pub team: TeamId,
    pub user: UserId,
    pub presence: Presence,
}

/// Why a presence call failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence backend unavailable: {0}")]
    Unavailable(String),
}

/// Presence state with TTL-based liveness.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Records that `session` of `user` is alive, for the next TTL.
    async fn heartbeat(
        &self,
        team: &TeamId,
        user: &UserId,
        session: &str,
    ) -> Result<(), PresenceError>;

    /// The effective presence of each of `users`, in that order.
    async fn presence(
        &self,
        team: &TeamId,
        users: &[UserId],
    ) -> Result<Vec<Presence>, PresenceError>;

    /// Sets the user's manual presence (`auto` clears it).
    async fn set_manual(
        &self,
        team: &TeamId,
        user: &UserId,
        setting: PresenceSetting,
    ) -> Result<(), PresenceError>;

    /// Ends a session now (its connection closed) instead of waiting for the TTL.
    async fn end_session(
        &self,
        team: &TeamId,
        user: &UserId,
        session: &str,
    ) -> Result<(), PresenceError>;

    /// Every change of effective presence in any team, each reported once, including
    /// sessions that expire by TTL. Lagging receivers lose the oldest changes.
    fn changes(&self) -> broadcast::Receiver<PresenceChange>;
}
