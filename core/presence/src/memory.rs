//! The in-process presence driver: right for one node (`confab dev`, a single core).
//!
//! Sessions live in a map keyed by `(team, user)`; each heartbeat pushes the session's new
//! deadline on a queue that one background sweeper task walks in deadline order, so a
//! session that stops heartbeating turns its user `away` about one TTL later without
//! anybody polling. All time comes from tokio, so the paused test clock drives it.

use crate::{PresenceChange, PresenceError, PresenceStore};
use async_trait::async_trait;
use confab_proto::rtm::PresenceSetting;
use confab_proto::{Presence, TeamId, UserId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

/// How many changes a slow `changes()` receiver may fall behind before it loses the oldest.
const CHANGES_CAPACITY: usize = 4096;

/// Presence kept in this process, with TTL-based liveness.
///
/// Created with [`MemoryPresence::new`], which starts the expiry sweeper; the sweeper ends
/// when the last `Arc` is dropped.
pub struct MemoryPresence {
    ttl: Duration,
    state: Mutex<State>,
    changes: broadcast::Sender<PresenceChange>,
    /// Wakes the sweeper: when the deadline queue stops being empty, and on drop.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for MemoryPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPresence")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

type UserKey = (TeamId, UserId);

#[derive(Default)]
struct State {
    users: HashMap<UserKey, UserState>,
    /// Session deadlines in the order they were set. Every session shares one TTL, so
    /// this is also deadline order; entries made stale by a later heartbeat or by
    /// `end_session` are skipped when they come up.
    deadlines: VecDeque<Deadline>,
}

struct Deadline {
    at: Instant,
    key: UserKey,
    session: String,
}

struct UserState {
    /// Live sessions and when each expires.
    sessions: HashMap<String, Instant>,
    manual: Option<Manual>,
    /// The presence last reported on the change channel, so each change goes out once.
    reported: Presence,
}

#[derive(Clone, Copy)]
enum Manual {
    Away,
    Dnd,
}

impl UserState {
    fn new() -> Self {
        Self {
            sessions: HashMap::new(),
            manual: None,
            reported: Presence::Away,
        }
    }

    /// Presence as of `now`; sessions past their deadline count as gone even when the
    /// sweeper has not reached them yet, so queries never report a dead session.
    fn effective(&self, now: Instant) -> Presence {
        match self.manual {
            Some(Manual::Dnd) => Presence::Dnd,
            Some(Manual::Away) => Presence::Away,
            None if self.sessions.values().any(|&at| at > now) => Presence::Active,
            None => Presence::Away,
        }
    }

    /// Nothing left that an absent entry would not also say.
    fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.manual.is_none() && self.reported == Presence::Away
    }
}

impl MemoryPresence {
    /// Creates the store and spawns its expiry sweeper on the current tokio runtime.
    ///
    /// A session counts as alive for `ttl` after its last heartbeat.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(ttl: Duration) -> Arc<Self> {
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let wake = Arc::new(Notify::new());
        let this = Arc::new(Self {
            ttl,
            state: Mutex::new(State::default()),
            changes,
            wake: wake.clone(),
        });
        tokio::spawn(sweep(Arc::downgrade(&this), wake));
        this
    }

    /// The TTL this store was created with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent
        // enough to serve presence, which is soft state anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Recomputes the user's presence after a mutation, reports it if it changed, and
    /// forgets the user once nothing about them differs from an unknown user.
    fn settle(&self, state: &mut State, key: &UserKey, now: Instant) {
        let Some(user) = state.users.get_mut(key) else {
            return;
        };
        let presence = user.effective(now);
        if presence != user.reported {
            user.reported = presence;
            // Sent under the lock so that changes of one user are seen in order; an
            // error only means nobody is listening right now.
            let _ = self.changes.send(PresenceChange {
                team: key.0.clone(),
                user: key.1.clone(),
                presence,
            });
        }
        if user.is_idle() {
            state.users.remove(key);
        }
    }

    /// Drops every session whose deadline has passed; returns the next deadline to wait
    /// for, if any.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        while let Some(front) = state.deadlines.front() {
            if front.at > now {
                return Some(front.at);
            }
            let Some(Deadline { key, session, .. }) = state.deadlines.pop_front() else {
                break;
            };
            let expired =
                state
                    .users
                    .get_mut(&key)
                    .is_some_and(|user| match user.sessions.get(&session) {
                        // A later heartbeat moved the deadline: this entry is stale.
                        Some(&at) if at <= now => user.sessions.remove(&session).is_some(),
                        _ => false,
                    });
            if expired {
                self.settle(&mut state, &key, now);
            }
        }
        None
    }
}

impl Drop for MemoryPresence {
    fn drop(&mut self) {
        // `notify_one` stores a permit, so the sweeper sees this even if it is not
        // waiting at this instant; it then fails to upgrade its Weak and ends.
        self.wake.notify_one();
    }
}

/// The expiry sweeper. Holds only a `Weak` between rounds so it never keeps the store alive.
async fn sweep(store: Weak<MemoryPresence>, wake: Arc<Notify>) {
    loop {
        let next = match store.upgrade() {
            Some(store) => store.expire(Instant::now()),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn heartbeat(
        &self,
        team: &TeamId,
        user: &UserId,
        session: &str,
    ) -> Result<(), PresenceError> {
        let now = Instant::now();
        let at = now + self.ttl;
        let key = (team.clone(), user.clone());
        let mut state = self.lock();
        state
            .users
            .entry(key.clone())
            .or_insert_with(UserState::new)
            .sessions
            .insert(session.to_owned(), at);
        let was_empty = state.deadlines.is_empty();
        state.deadlines.push_back(Deadline {
            at,
            key: key.clone(),
            session: session.to_owned(),
        });
        self.settle(&mut state, &key, now);
        drop(state);
        // Only an idle sweeper needs waking: one that is sleeping already waits for an
        // earlier deadline than this one.
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn presence(
        &self,
        team: &TeamId,
        users: &[UserId],
    ) -> Result<Vec<Presence>, PresenceError> {
        let now = Instant::now();
        let state = self.lock();
        Ok(users
            .iter()
            .map(|user| {
                state
                    .users
                    .get(&(team.clone(), user.clone()))
                    .map_or(Presence::Away, |u| u.effective(now))
            })
            .collect())
    }

    async fn set_manual(
        &self,
        team: &TeamId,
        user: &UserId,
        setting: PresenceSetting,
    ) -> Result<(), PresenceError> {
        let now = Instant::now();
        let key = (team.clone(), user.clone());
        let mut state = self.lock();
        let manual = match setting {
            PresenceSetting::Auto => None,
            PresenceSetting::Away => Some(Manual::Away),
            PresenceSetting::Dnd => Some(Manual::Dnd),
        };
        state
            .users
            .entry(key.clone())
            .or_insert_with(UserState::new)
            .manual = manual;
        self.settle(&mut state, &key, now);
        Ok(())
    }

    async fn end_session(
        &self,
        team: &TeamId,
        user: &UserId,
        session: &str,
    ) -> Result<(), PresenceError> {
        let now = Instant::now();
        let key = (team.clone(), user.clone());
        let mut state = self.lock();
        // Its deadline entry stays queued and is skipped when it comes up.
        if let Some(user) = state.users.get_mut(&key) {
            user.sessions.remove(session);
        }
        self.settle(&mut state, &key, now);
        Ok(())
    }

    fn changes(&self) -> broadcast::Receiver<PresenceChange> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle_tasks() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sweeper_expires_sessions_on_the_paused_clock_and_stops_on_drop() {
        let ttl = Duration::from_secs(30);
        let store = MemoryPresence::new(ttl);
        let mut changes = store.changes();
        let (team, user) = (TeamId::generate(), UserId::generate());

        store.heartbeat(&team, &user, "s1").await.unwrap();
        assert_eq!(changes.try_recv().unwrap().presence, Presence::Active);

        // A refresh halfway moves the deadline: the first one must be ignored.
        tokio::time::advance(ttl / 2).await;
        store.heartbeat(&team, &user, "s1").await.unwrap();
        tokio::time::advance(ttl / 2 + Duration::from_secs(1)).await;
        settle_tasks().await;
        assert!(changes.try_recv().is_err(), "expired despite a refresh");
        assert_eq!(
            store
                .presence(&team, std::slice::from_ref(&user))
                .await
                .unwrap(),
            [Presence::Active]
        );

        tokio::time::advance(ttl / 2).await;
        settle_tasks().await;
        let change = changes.try_recv().unwrap();
        assert_eq!(
            (change.user, change.presence),
            (user.clone(), Presence::Away)
        );
        assert!(store.lock().users.is_empty(), "idle user not forgotten");
        assert!(store.lock().deadlines.is_empty());

        let wake = store.wake.clone();
        drop(store);
        settle_tasks().await;
        assert_eq!(Arc::strong_count(&wake), 1, "sweeper outlived the store");
    }
}
