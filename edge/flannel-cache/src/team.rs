//! The link between a Flannel and the core's event stream of one team.
//!
//! A team's cache entries are only trusted while its link is live: the link subscribes
//! before anything of the team is loaded, applies every event to the cache before passing
//! it on, and when the core cuts it off, the team's entries are dropped (every cache key
//! carries the link's generation, so nothing loaded under a dead link is ever read again,
//! not even a load that finishes after the cut).

use crate::Flannel;
use crate::metrics::metrics;
use confab_events::Subscription;
use confab_proto::event::TeamEvent;
use confab_proto::{ChannelId, TeamId};
use dashmap::DashMap;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A team as seen through one link: the prefix of every cache key of the team.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TeamKey {
    pub(crate) team: TeamId,
    pub(crate) generation: u64,
}

/// The map slot of a team. The cell makes concurrent first users share one subscribe call.
#[derive(Debug, Default)]
pub(crate) struct TeamEntry {
    pub(crate) link: tokio::sync::OnceCell<Arc<TeamLink>>,
}

/// A live (or just ended) subscription to one team's events.
#[derive(Debug)]
pub(crate) struct TeamLink {
    pub(crate) key: TeamKey,
    /// Taken when the link ends, which closes the channel for every receiver.
    sender: Mutex<Option<broadcast::Sender<Arc<TeamEvent>>>>,
    /// Highest `seq` seen per channel, from loads and `message` events. Both only raise it,
    /// so their order does not matter. Kept outside the bounded caches because a message
    /// must be O(1) to apply, whatever the number of members of its channel.
    last_seq: DashMap<ChannelId, u64>,
    born: Instant,
    last_used_ms: AtomicU64,
    task: OnceLock<AbortHandle>,
}

impl TeamLink {
    pub(crate) fn new(key: TeamKey, sender: broadcast::Sender<Arc<TeamEvent>>) -> Self {
        metrics().teams.inc();
        Self {
            key,
            sender: Mutex::new(Some(sender)),
            last_seq: DashMap::new(),
            born: Instant::now(),
            last_used_ms: AtomicU64::new(0),
            task: OnceLock::new(),
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        self.sender.lock().is_some()
    }

    /// Records a use of the team's cache, which keeps the link from idling out.
    pub(crate) fn touch(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        self.last_used_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_used_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    /// A receiver of the team's events, or `None` once the link has ended.
    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<Arc<TeamEvent>>> {
        self.sender
            .lock()
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    fn receiver_count(&self) -> usize {
        self.sender
            .lock()
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    fn broadcast(&self, event: Arc<TeamEvent>) {
        if let Some(sender) = self.sender.lock().as_ref() {
            // No receivers is normal: the cache still follows the team.
            let _ = sender.send(event);
        }
    }

    fn close(&self) {
        self.sender.lock().take();
    }

    pub(crate) fn set_task(&self, task: AbortHandle) {
        let _ = self.task.set(task);
    }

    pub(crate) fn abort(&self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }

    pub(crate) fn raise_seq(&self, channel: &ChannelId, seq: u64) {
        let mut entry = self.last_seq.entry(channel.clone()).or_insert(seq);
        *entry = (*entry).max(seq);
    }

    /// A channel created while subscribed has no messages yet.
    pub(crate) fn created(&self, channel: &ChannelId) {
        self.last_seq.entry(channel.clone()).or_insert(0);
    }

    pub(crate) fn last_seq(&self, channel: &ChannelId) -> Option<u64> {
        self.last_seq.get(channel).map(|seq| *seq)
    }
}

impl Drop for TeamLink {
    fn drop(&mut self) {
        metrics().teams.dec();
    }
}

/// Why a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The core ended the subscription (this edge fell behind, or the core went away).
    CutOff,
    /// No receivers and no cache use for the idle period.
    Idle,
    /// The Flannel itself is gone.
    Dropped,
}

/// Follows one team's core subscription until it ends, applying each event to the cache
/// before re-broadcasting it, so an edge reacting to an event already reads fresh data.
///
/// A link with no receivers and no cache use for `idle_after` ends itself. `idle_after` is
/// the cache TTL: by then every entry of the team has expired anyway, so ending the
/// subscription loses nothing and spares the core a subscriber.
pub(crate) async fn follow(
    flannel: Weak<Flannel>,
    entry: Arc<TeamEntry>,
    link: Arc<TeamLink>,
    mut subscription: Subscription,
    idle_after: Duration,
) {
    let period = (idle_after / 2).clamp(Duration::from_millis(10), Duration::from_secs(60));
    let mut idle_check = tokio::time::interval_at(Instant::now() + period, period);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            event = subscription.events.recv() => {
                let Some(event) = event else { break Ended::CutOff };
                let Some(flannel) = flannel.upgrade() else { break Ended::Dropped };
                if event.team != link.key.team {
                    tracing::warn!(team = %link.key.team, other = %event.team, "event of another team on a team subscription");
                    continue;
                }
                flannel.apply(&link, &event).await;
                link.broadcast(event);
            }
            _ = idle_check.tick() => {
                if flannel.strong_count() == 0 {
                    break Ended::Dropped;
                }
                if link.receiver_count() == 0 && link.idle_for() >= idle_after {
                    break Ended::Idle;
                }
            }
        }
    };
    // Unsubscribe from the core before anything else: the link is no longer trusted.
    drop(subscription);
    link.close();
    if ended == Ended::CutOff {
        metrics().cutoffs.inc();
        tracing::info!(team = %link.key.team, "core cut off the team event stream; dropping the team's cache");
    } else {
        tracing::debug!(team = %link.key.team, reason = ?ended, "team event stream closed");
    }
    if let Some(flannel) = flannel.upgrade() {
        flannel.forget_team(&entry, &link.key);
    }
}
