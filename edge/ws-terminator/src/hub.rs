//! The hub routes a team's core events to that team's RTM connections on this edge.
//!
//! One event stream per team (from Flannel, after the cache applied the event), followed
//! while the team has connections here. Events are serialized once and fanned out by
//! index: channel → connections of its members, user → that user's connections, user →
//! connections subscribed to their presence. Delivery never blocks the team: each
//! connection has a bounded queue, and a connection whose queue is full is cut off as a
//! slow consumer rather than allowed to hold memory or stall everyone else (§8).
//!
//! Presence does not go through the queue at all: changes are written into a small
//! per-connection map that the connection flushes as one `presence_change` per interval
//! (§7), so a storm of changes costs one frame per connection per interval.

use crate::metrics;
use confab_chat::Caller;
use confab_flannel_cache::Flannel;
use confab_proto::event::{TeamEvent, TeamEventBody};
use confab_proto::rest::UserPresence;
use confab_proto::rtm::ServerEvent;
use confab_proto::{ApiError, ChannelId, ErrorCode, Presence, TeamId, UserId};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Identifies one RTM connection on this edge.
pub type ConnId = u64;

/// `goodbye` reason when the hub fell behind the team's events.
pub const REASON_RESYNC: &str = "resync";
/// `goodbye` reason when the connection's queue filled up.
pub const REASON_SLOW_CONSUMER: &str = "slow_consumer";
/// `goodbye` reason when the core's event stream for the team ended.
pub const REASON_UPSTREAM_CLOSED: &str = "upstream_closed";

/// A live message, serialized once and shared by every member's connection: handing it
/// to a thousand connections costs a thousand reference counts, not a thousand copies.
#[derive(Debug, PartialEq)]
pub struct LiveMessage {
    pub channel: ChannelId,
    pub seq: u64,
    pub frame: Utf8Bytes,
}

/// What the hub hands a connection, already serialized.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnEvent {
    /// A live message; the connection delivers it after its exactly-once check.
    Message(Arc<LiveMessage>),
    /// The connection's user left `channel`: its cursor is forgotten, then `frame` sent.
    ChannelLeft {
        channel: ChannelId,
        frame: Utf8Bytes,
    },
    /// Any other event, forwarded as is.
    Frame(Utf8Bytes),
}

/// State a connection shares with the hub outside its queue.
#[derive(Debug, Default)]
pub struct ConnShared {
    kick: Mutex<Option<String>>,
    kicked: Notify,
    presence: Mutex<HashMap<UserId, Presence>>,
    presence_pending: Notify,
}

impl ConnShared {
    /// Asks the connection to say goodbye with `reason` and close; the first reason wins.
    pub fn kick(&self, reason: &str) {
        let mut kick = self.kick.lock();
        if kick.is_none() {
            *kick = Some(reason.to_owned());
            self.kicked.notify_one();
        }
    }

    /// Resolves with the reason once the connection is kicked.
    pub async fn kicked(&self) -> String {
        loop {
            if let Some(reason) = self.kick.lock().clone() {
                return reason;
            }
            // A kick between the check and here leaves a permit, so it is not lost.
            self.kicked.notified().await;
        }
    }

    /// Why the connection was kicked, if it was.
    pub fn kick_reason(&self) -> Option<String> {
        self.kick.lock().clone()
    }

    fn push_presence(&self, user: &UserId, presence: Presence) {
        let mut pending = self.presence.lock();
        let was_empty = pending.is_empty();
        pending.insert(user.clone(), presence);
        if was_empty {
            self.presence_pending.notify_one();
        }
    }

    /// Resolves when presence changes wait to be flushed (possibly spuriously).
    pub async fn presence_pending(&self) {
        self.presence_pending.notified().await;
    }

    /// Whether presence changes wait to be flushed.
    pub fn has_pending_presence(&self) -> bool {
        !self.presence.lock().is_empty()
    }

    /// The latest presence of every user that changed since the last call, by user id.
    pub fn take_presence(&self) -> Vec<UserPresence> {
        let mut users: Vec<UserPresence> = self
            .presence
            .lock()
            .drain()
            .map(|(id, presence)| UserPresence { id, presence })
            .collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users
    }
}

/// Routes team events to connections. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("teams", &self.inner.teams.lock().len())
            .finish_non_exhaustive()
    }
}

struct HubInner {
    flannel: Arc<Flannel>,
    teams: Mutex<HashMap<TeamId, Arc<TeamHub>>>,
    next_conn: AtomicU64,
    queue_frames: usize,
}

/// The hub of one team.
struct TeamHub {
    team: TeamId,
    /// Registrations holding this hub, changed under `HubInner::teams` only, so that the
    /// last one leaving and a new one arriving cannot race.
    refs: AtomicUsize,
    ready: watch::Receiver<Option<Result<(), ApiError>>>,
    state: RwLock<TeamState>,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for TeamHub {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
        metrics::HUB_TEAMS.dec();
    }
}

struct ConnEntry {
    user: UserId,
    tx: mpsc::Sender<ConnEvent>,
    shared: Arc<ConnShared>,
    channels: HashSet<ChannelId>,
    presence_sub: HashSet<UserId>,
}

impl ConnEntry {
    fn send(&self, event: ConnEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.shared.kick(REASON_SLOW_CONSUMER),
            // The connection is on its way out and will unregister.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[derive(Default)]
struct TeamState {
    conns: HashMap<ConnId, ConnEntry>,
    by_user: HashMap<UserId, HashSet<ConnId>>,
    by_channel: HashMap<ChannelId, HashSet<ConnId>>,
    presence_subs: HashMap<UserId, HashSet<ConnId>>,
}

fn frame(event: &ServerEvent) -> Utf8Bytes {
    Utf8Bytes::from(event.to_frame())
}

impl TeamState {
    fn remove(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        unindex(&mut self.by_user, &entry.user, conn);
        for channel in &entry.channels {
            unindex(&mut self.by_channel, channel, conn);
        }
        for user in &entry.presence_sub {
            unindex(&mut self.presence_subs, user, conn);
        }
    }

    fn add_channel(&mut self, conn: ConnId, channel: &ChannelId) -> bool {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return false;
        };
        if !entry.channels.insert(channel.clone()) {
            return false;
        }
        self.by_channel
            .entry(channel.clone())
            .or_default()
            .insert(conn);
        true
    }

    fn conns_in<'a, K: std::hash::Hash + Eq>(
        &'a self,
        index: &'a HashMap<K, HashSet<ConnId>>,
        key: &K,
    ) -> impl Iterator<Item = &'a ConnEntry> + 'a {
        index
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.conns.get(id))
    }

    fn kick_all(&self, reason: &str) {
        for entry in self.conns.values() {
            entry.shared.kick(reason);
        }
    }

    /// Events that only read the indexes.
    fn fan_out(&self, event: &TeamEvent) {
        match &event.body {
            TeamEventBody::Message { message } => {
                let event = ConnEvent::Message(Arc::new(LiveMessage {
                    channel: message.channel.clone(),
                    seq: message.seq,
                    frame: frame(&ServerEvent::Message(message.clone())),
                }));
                for entry in self.conns_in(&self.by_channel, &message.channel) {
                    entry.send(event.clone());
                }
            }
            TeamEventBody::Typing { channel, user } => {
                let event = ConnEvent::Frame(frame(&ServerEvent::UserTyping {
                    channel: channel.clone(),
                    user: user.clone(),
                }));
                for entry in self.conns_in(&self.by_channel, channel) {
                    if &entry.user != user {
                        entry.send(event.clone());
                    }
                }
            }
            // Its members follow as `MemberJoined`, which is what connections act on.
            TeamEventBody::ChannelCreated { .. } => {}
            TeamEventBody::UserChanged { user } => {
                let event =
                    ConnEvent::Frame(frame(&ServerEvent::UserChange { user: user.clone() }));
                for entry in self.conns.values() {
                    entry.send(event.clone());
                }
            }
            TeamEventBody::Presence { user, presence } => {
                metrics::PRESENCE_EVENTS.inc();
                for entry in self.conns_in(&self.presence_subs, user) {
                    entry.shared.push_presence(user, *presence);
                }
            }
            TeamEventBody::ReadMarker { channel, user, seq } => {
                let event = ConnEvent::Frame(frame(&ServerEvent::ChannelMarked {
                    channel: channel.clone(),
                    seq: *seq,
                }));
                for entry in self.conns_in(&self.by_user, user) {
                    entry.send(event.clone());
                }
            }
            TeamEventBody::MemberJoined { .. } | TeamEventBody::MemberLeft { .. } => {}
        }
    }

    /// Membership events: they change which connections get a channel's events, in the
    /// same step as telling the connections, so no message slips between the two.
    fn apply_membership(&mut self, event: &TeamEvent) {
        match &event.body {
            TeamEventBody::MemberJoined { channel, user } => {
                let to_members = ConnEvent::Frame(frame(&ServerEvent::MemberJoinedChannel {
                    channel: channel.id.clone(),
                    user: user.clone(),
                }));
                for entry in self.conns_in(&self.by_channel, &channel.id) {
                    if &entry.user != user {
                        entry.send(to_members.clone());
                    }
                }
                let to_joiner = ConnEvent::Frame(frame(&ServerEvent::ChannelJoined {
                    channel: channel.clone(),
                }));
                let joiner_conns: Vec<ConnId> = self
                    .by_user
                    .get(user)
                    .into_iter()
                    .flatten()
                    .copied()
                    .collect();
                for conn in joiner_conns {
                    // A connection that already has the channel (it registered after the
                    // cache saw the join) has it in its boot data.
                    if self.add_channel(conn, &channel.id) {
                        self.conns[&conn].send(to_joiner.clone());
                    }
                }
            }
            TeamEventBody::MemberLeft { channel, user } => {
                let leaver_conns: Vec<ConnId> = self
                    .by_user
                    .get(user)
                    .into_iter()
                    .flatten()
                    .copied()
                    .collect();
                let to_leaver = ConnEvent::ChannelLeft {
                    channel: channel.clone(),
                    frame: frame(&ServerEvent::ChannelLeft {
                        channel: channel.clone(),
                    }),
                };
                for conn in leaver_conns {
                    let Some(entry) = self.conns.get_mut(&conn) else {
                        continue;
                    };
                    if entry.channels.remove(channel) {
                        entry.send(to_leaver.clone());
                        unindex(&mut self.by_channel, channel, conn);
                    }
                }
                let to_members = ConnEvent::Frame(frame(&ServerEvent::MemberLeftChannel {
                    channel: channel.clone(),
                    user: user.clone(),
                }));
                for entry in self.conns_in(&self.by_channel, channel) {
                    entry.send(to_members.clone());
                }
            }
            _ => {}
        }
    }
}

fn unindex<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, HashSet<ConnId>>,
    key: &K,
    conn: ConnId,
) {
    if let Some(set) = index.get_mut(key) {
        set.remove(&conn);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// Whether the team's event dispatch needs the write lock (it changes indexes).
fn changes_membership(event: &TeamEvent) -> bool {
    matches!(
        event.body,
        TeamEventBody::MemberJoined { .. } | TeamEventBody::MemberLeft { .. }
    )
}

impl Hub {
    /// A hub over the edge cache; `queue_frames` bounds each connection's event queue.
    pub fn new(flannel: Arc<Flannel>, queue_frames: usize) -> Self {
        metrics::init();
        Self {
            inner: Arc::new(HubInner {
                flannel,
                teams: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                queue_frames: queue_frames.max(1),
            }),
        }
    }

    /// The edge cache this hub reads from.
    pub fn flannel(&self) -> &Arc<Flannel> {
        &self.inner.flannel
    }

    /// Teams whose events this hub follows.
    pub fn team_count(&self) -> usize {
        self.inner.teams.lock().len()
    }

    /// Kicks every connection (used when the edge is cut short).
    pub fn kick_all(&self, reason: &str) {
        let teams: Vec<Arc<TeamHub>> = self.inner.teams.lock().values().cloned().collect();
        for team in teams {
            team.state.read().kick_all(reason);
        }
    }

    /// Adds a connection of `caller`, following the team's events first if this edge did
    /// not yet. When this returns, every later event of the team reaches the connection.
    pub async fn register(&self, caller: &Caller) -> Result<Registration, ApiError> {
        let team_hub = {
            let mut teams = self.inner.teams.lock();
            let team_hub = teams
                .entry(caller.team.clone())
                .or_insert_with(|| TeamHub::spawn(&self.inner, caller.team.clone()))
                .clone();
            team_hub.refs.fetch_add(1, Ordering::Relaxed);
            team_hub
        };
        // Until the registration exists, this guard gives the reference back on any exit.
        let mut held = HeldRef {
            hub: self.inner.clone(),
            team_hub: Some(team_hub.clone()),
        };
        let mut ready = team_hub.ready.clone();
        let status = ready
            .wait_for(Option::is_some)
            .await
            .map(|status| status.clone())
            .map_err(|_| ApiError::new(ErrorCode::Unavailable, "team event stream ended"))?;
        if let Some(Err(e)) = status {
            return Err(e);
        }
        let conn = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, events) = mpsc::channel(self.inner.queue_frames);
        let shared = Arc::new(ConnShared::default());
        {
            let mut state = team_hub.state.write();
            state.conns.insert(
                conn,
                ConnEntry {
                    user: caller.user.clone(),
                    tx,
                    shared: shared.clone(),
                    channels: HashSet::new(),
                    presence_sub: HashSet::new(),
                },
            );
            state
                .by_user
                .entry(caller.user.clone())
                .or_default()
                .insert(conn);
        }
        held.team_hub = None;
        Ok(Registration {
            hub: self.inner.clone(),
            team_hub,
            conn,
            events: Some(events),
            shared,
        })
    }
}

impl TeamHub {
    fn spawn(hub: &Arc<HubInner>, team: TeamId) -> Arc<TeamHub> {
        let (ready_tx, ready) = watch::channel(None);
        let team_hub = Arc::new(TeamHub {
            team: team.clone(),
            refs: AtomicUsize::new(0),
            ready,
            state: RwLock::new(TeamState::default()),
            task: Mutex::new(None),
        });
        metrics::HUB_TEAMS.inc();
        let weak_team = Arc::downgrade(&team_hub);
        let weak_hub = Arc::downgrade(hub);
        let flannel = hub.flannel.clone();
        let task = tokio::spawn(async move {
            let mut events = match flannel.team_events(&team).await {
                Ok(events) => {
                    ready_tx.send_replace(Some(Ok(())));
                    events
                }
                Err(e) => {
                    tracing::warn!(team = %team, error = %e, "cannot follow team events");
                    ready_tx.send_replace(Some(Err(e)));
                    forget_team(&weak_hub, &weak_team);
                    return;
                }
            };
            loop {
                let received = events.recv().await;
                let Some(team_hub) = weak_team.upgrade() else {
                    return;
                };
                match received {
                    Ok(event) => {
                        if changes_membership(&event) {
                            team_hub.state.write().apply_membership(&event);
                        } else {
                            team_hub.state.read().fan_out(&event);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // Skipped events may include messages: the connections could not
                        // be exactly-once any more, so they reconnect and resume.
                        tracing::warn!(team = %team_hub.team, missed, "hub lagged behind team events");
                        team_hub.state.read().kick_all(REASON_RESYNC);
                    }
                    Err(RecvError::Closed) => {
                        tracing::warn!(team = %team_hub.team, "team event stream closed");
                        // Forgotten first: whoever registers after the kick below gets a
                        // fresh hub, whoever registered before is kicked with the rest.
                        forget_team(&weak_hub, &weak_team);
                        team_hub.state.read().kick_all(REASON_UPSTREAM_CLOSED);
                        return;
                    }
                }
            }
        });
        *team_hub.task.lock() = Some(task.abort_handle());
        team_hub
    }
}

/// Removes a team's hub from the map if it is still the one there, so the next
/// registration follows the team afresh.
fn forget_team(hub: &Weak<HubInner>, team_hub: &Weak<TeamHub>) {
    let (Some(hub), Some(team_hub)) = (hub.upgrade(), team_hub.upgrade()) else {
        return;
    };
    let mut teams = hub.teams.lock();
    if teams
        .get(&team_hub.team)
        .is_some_and(|current| Arc::ptr_eq(current, &team_hub))
    {
        teams.remove(&team_hub.team);
    }
}

/// Gives back a reference on a team hub; the last one out stops following the team.
fn release(hub: &HubInner, team_hub: &Arc<TeamHub>) {
    let mut teams = hub.teams.lock();
    if team_hub.refs.fetch_sub(1, Ordering::Relaxed) == 1
        && teams
            .get(&team_hub.team)
            .is_some_and(|current| Arc::ptr_eq(current, team_hub))
    {
        teams.remove(&team_hub.team);
    }
}

struct HeldRef {
    hub: Arc<HubInner>,
    team_hub: Option<Arc<TeamHub>>,
}

impl Drop for HeldRef {
    fn drop(&mut self) {
        if let Some(team_hub) = self.team_hub.take() {
            release(&self.hub, &team_hub);
        }
    }
}

/// A connection's place in the hub; dropping it unregisters the connection.
pub struct Registration {
    hub: Arc<HubInner>,
    team_hub: Arc<TeamHub>,
    conn: ConnId,
    events: Option<mpsc::Receiver<ConnEvent>>,
    shared: Arc<ConnShared>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("team", &self.team_hub.team)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// This connection's id.
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }

    /// What the connection shares with the hub (kick signal, pending presence).
    pub fn shared(&self) -> &Arc<ConnShared> {
        &self.shared
    }

    /// The connection's event queue; can be taken once.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<ConnEvent>> {
        self.events.take()
    }

    /// Subscribes the connection to messages of these channels (its memberships).
    pub fn add_channels(&self, channels: impl IntoIterator<Item = ChannelId>) {
        let mut state = self.team_hub.state.write();
        for channel in channels {
            state.add_channel(self.conn, &channel);
        }
    }

    /// Whether the connection receives the channel's events.
    pub fn is_subscribed(&self, channel: &ChannelId) -> bool {
        self.team_hub
            .state
            .read()
            .conns
            .get(&self.conn)
            .is_some_and(|entry| entry.channels.contains(channel))
    }

    /// Replaces the users whose presence changes this connection receives; pending changes
    /// of users no longer in view are dropped.
    pub fn set_presence_sub(&self, users: &[UserId]) {
        let wanted: HashSet<UserId> = users.iter().cloned().collect();
        let mut guard = self.team_hub.state.write();
        let state = &mut *guard;
        let Some(entry) = state.conns.get_mut(&self.conn) else {
            return;
        };
        let old = std::mem::replace(&mut entry.presence_sub, wanted.clone());
        for user in old.difference(&wanted) {
            unindex(&mut state.presence_subs, user, self.conn);
        }
        for user in wanted.difference(&old) {
            state
                .presence_subs
                .entry(user.clone())
                .or_default()
                .insert(self.conn);
        }
        self.shared
            .presence
            .lock()
            .retain(|user, _| wanted.contains(user));
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.team_hub.state.write().remove(self.conn);
        release(&self.hub, &self.team_hub);
    }
}
