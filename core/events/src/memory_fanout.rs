//! The in-process fan-out: core and edges in one process (`confab dev`, one node).
//!
//! Each team has a list of subscriber queues. Publishing hands the same `Arc` to every
//! queue with `try_send`, so a slow subscriber costs the publisher nothing: its queue
//! fills up, it is dropped from the list, and its receiver ends after the buffered events
//! (DESIGN.md §8, slow consumers are cut off).

use crate::{EventsError, FanOut, Subscription};
use async_trait::async_trait;
use confab_proto::TeamId;
use confab_proto::event::TeamEvent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// Fan-out of team events within this process.
///
/// One lock covers all teams: publishing only does non-blocking `try_send`s under it, and
/// an edge subscribes once per team, so the per-team lists are short.
#[derive(Default)]
pub struct MemoryFanOut {
    teams: Mutex<HashMap<TeamId, Vec<mpsc::Sender<Arc<TeamEvent>>>>>,
}

impl std::fmt::Debug for MemoryFanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFanOut")
            .field("teams", &self.lock().len())
            .finish()
    }
}

impl MemoryFanOut {
    /// An empty fan-out, shared as an `Arc` by the core (publisher) and edges (subscribers).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// How many live subscriptions `team` has; dropped ones count until the next publish
    /// or subscribe of that team notices them.
    pub fn subscriber_count(&self, team: &TeamId) -> usize {
        self.lock().get(team).map_or(0, Vec::len)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TeamId, Vec<mpsc::Sender<Arc<TeamEvent>>>>> {
        // The map holds only senders; a panic elsewhere cannot leave it half-updated.
        self.teams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl FanOut for MemoryFanOut {
    async fn publish(&self, event: Arc<TeamEvent>) -> Result<(), EventsError> {
        let mut teams = self.lock();
        let Some(subscribers) = teams.get_mut(&event.team) else {
            return Ok(());
        };
        // Holding the lock across the sends keeps concurrent publishes of a team in one
        // order for every subscriber.
        subscribers.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(team = %event.team, "fan-out subscriber fell behind, disconnecting");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if subscribers.is_empty() {
            teams.remove(&event.team);
        }
        Ok(())
    }

    async fn subscribe(&self, team: &TeamId, buffer: usize) -> Result<Subscription, EventsError> {
        // A zero-capacity channel does not exist; one slot is the closest meaning.
        let (tx, events) = mpsc::channel(buffer.max(1));
        let mut teams = self.lock();
        let subscribers = teams.entry(team.clone()).or_default();
        // Teams that rarely publish would otherwise keep dropped subscriptions forever.
        subscribers.retain(|tx| !tx.is_closed());
        subscribers.push(tx);
        Ok(Subscription {
            team: team.clone(),
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_proto::UserId;
    use confab_proto::event::TeamEventBody;

    fn typing(team: &TeamId) -> Arc<TeamEvent> {
        Arc::new(TeamEvent {
            team: team.clone(),
            body: TeamEventBody::Typing {
                channel: "C1".into(),
                user: UserId::generate(),
            },
        })
    }

    #[tokio::test]
    async fn dropped_and_cut_off_subscribers_leave_the_list() {
        let fanout = MemoryFanOut::new();
        let team = TeamId::generate();
        let dropped = fanout.subscribe(&team, 4).await.unwrap();
        drop(dropped);
        let _slow = fanout.subscribe(&team, 1).await.unwrap();
        // Subscribing pruned the dropped one.
        assert_eq!(fanout.subscriber_count(&team), 1);

        fanout.publish(typing(&team)).await.unwrap();
        fanout.publish(typing(&team)).await.unwrap();
        assert_eq!(fanout.subscriber_count(&team), 0);
        assert!(fanout.lock().is_empty(), "empty team entry kept");
    }
}
