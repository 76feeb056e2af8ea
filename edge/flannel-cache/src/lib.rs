//! Flannel, the edge's cache of workspace metadata (DESIGN.md §6).
//!
//! It answers `GET /v1/boot` and the lazy lookups (users by id, the caller's channels)
//! from memory, asking the core only on a miss. It stays fresh by following each team's
//! core event stream: an edge holds one core subscription per team, applies every event
//! to the cache, then re-broadcasts it to the edge's connections ([`Flannel::team_events`]).
//! The TTL is a safety net, not the freshness mechanism.
//!
//! Boot does not grow with team size: it carries the caller's channels and only the users
//! of the caller's DMs and group DMs, capped; everything else is fetched lazily.

mod membership;
mod metrics;
mod team;

use crate::membership::{Membership, UserSlot};
use crate::metrics::{CacheKind, metrics};
use crate::team::{TeamEntry, TeamKey, TeamLink};
use confab_chat::{Caller, CoreApi};
use confab_proto::event::{TeamEvent, TeamEventBody};
use confab_proto::rest::{BootChannel, BootResponse};
use confab_proto::{ApiError, ChannelId, ErrorCode, Team, TeamId, User, UserId};
use dashmap::DashMap;
use moka::future::Cache;
use moka::ops::compute::Op;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::broadcast;

/// How many times a load that raced an event is retried before it is served uncached.
const LOAD_ATTEMPTS: usize = 3;

/// How many times a lookup tries to get a live team link before giving up: a link can end
/// between being opened and being used, but not over and over unless the core is failing.
const LINK_ATTEMPTS: usize = 3;

/// Tuning of a [`Flannel`].
#[derive(Clone, Debug)]
pub struct FlannelConfig {
    /// Lifetime of a cache entry. Events keep entries fresh; this is the safety net. A
    /// team's core subscription with no receivers and no cache use for this long is ended.
    pub ttl: Duration,
    /// Bound on the entries of each of the cache's tables (users, teams, channel lists).
    pub max_entries: u64,
    /// Capacity of each team's event broadcast; a receiver that falls this far behind
    /// gets `Lagged` and should resume from the store.
    pub event_buffer: usize,
    /// Most users in a boot snapshot, the caller included.
    pub boot_user_limit: usize,
}

impl Default for FlannelConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10 * 60),
            max_entries: 500_000,
            event_buffer: 4096,
            boot_user_limit: 100,
        }
    }
}

/// Lookups of this Flannel served from memory (`hits`) or from the core (`misses`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlannelStats {
    pub hits: u64,
    pub misses: u64,
}

/// The edge's cache of workspace metadata. Cheap to share: wrap in the `Arc` [`Flannel::new`]
/// returns.
pub struct Flannel {
    core: Arc<dyn CoreApi>,
    config: FlannelConfig,
    this: Weak<Flannel>,
    teams: DashMap<TeamId, Arc<TeamEntry>>,
    next_generation: AtomicU64,
    team_meta: Cache<TeamKey, Team>,
    users: Cache<(TeamKey, UserId), User>,
    memberships: Cache<(TeamKey, UserId), Arc<UserSlot>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for Flannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flannel")
            .field("config", &self.config)
            .field("teams", &self.teams.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Flannel {
    /// A cache in front of `core`. Must be called within a Tokio runtime only once a
    /// lookup is made (team links are tasks).
    pub fn new(core: Arc<dyn CoreApi>, config: FlannelConfig) -> Arc<Flannel> {
        fn table<K, V>(name: &str, config: &FlannelConfig) -> Cache<K, V>
        where
            K: std::hash::Hash + Eq + Send + Sync + 'static,
            V: Clone + Send + Sync + 'static,
        {
            Cache::builder()
                .name(name)
                .max_capacity(config.max_entries)
                .time_to_live(config.ttl)
                .support_invalidation_closures()
                .build()
        }
        Arc::new_cyclic(|this| Flannel {
            core,
            team_meta: table("flannel_teams", &config),
            users: table("flannel_users", &config),
            memberships: table("flannel_memberships", &config),
            config,
            this: this.clone(),
            teams: DashMap::new(),
            next_generation: AtomicU64::new(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// What the caller's first screen needs: self, team, the caller's channels with
    /// `last_seq`/`last_read`/`unread`, and the users of the caller's DMs and group DMs
    /// (most recently active first, at most `boot_user_limit` users with the caller).
    pub async fn boot(&self, caller: &Caller) -> Result<BootResponse, ApiError> {
        let link = self.link(&caller.team).await?;
        let (team, memberships) = tokio::try_join!(
            self.team_of(&link, caller),
            self.memberships_of(&link, caller),
        )?;

        let channels: Vec<BootChannel> = memberships
            .into_iter()
            .map(|m| {
                // Every channel in a loaded list has a known seq (loads record it and joins of
                // unknown channels force a reload); 0 is only a defensive fallback.
                let last_seq = link.last_seq(&m.channel.id).unwrap_or(0);
                // As the core reports it: a marker never points past the last message.
                let last_read = m.last_read.min(last_seq);
                BootChannel {
                    id: m.channel.id,
                    name: m.channel.name,
                    kind: m.channel.kind,
                    private: m.channel.private,
                    last_seq,
                    last_read,
                    unread: last_seq - last_read,
                    members: m.channel.members,
                }
            })
            .collect();

        let partners = dm_partners(
            &channels,
            &caller.user,
            self.config.boot_user_limit.saturating_sub(1),
        );
        // Self and partners in one lookup: on a cold cache, one core call.
        let mut wanted = Vec::with_capacity(partners.len() + 1);
        wanted.push(caller.user.clone());
        wanted.extend(partners);
        let users = self.users_of(&link, caller, &wanted).await?;
        let self_user = users
            .first()
            .filter(|user| user.id == caller.user)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UserNotFound,
                    "the caller's user no longer exists",
                )
            })?;
        Ok(BootResponse {
            self_user,
            team,
            channels,
            users,
        })
    }

    /// The users of the caller's team among `ids`, in the order asked, each once; unknown
    /// ids are skipped. Misses are loaded in one core call.
    pub async fn users(&self, caller: &Caller, ids: &[UserId]) -> Result<Vec<User>, ApiError> {
        let link = self.link(&caller.team).await?;
        self.users_of(&link, caller, ids).await
    }

    /// The channels (of every kind) the caller is a member of, ordered by id.
    pub async fn member_channels(&self, caller: &Caller) -> Result<Vec<ChannelId>, ApiError> {
        let link = self.link(&caller.team).await?;
        let memberships = self.memberships_of(&link, caller).await?;
        Ok(memberships.into_iter().map(|m| m.channel.id).collect())
    }

    /// A receiver of the team's events, each applied to this cache before it is sent.
    ///
    /// All receivers of a team share one core subscription. When the core cuts that
    /// subscription off, the team's cache is dropped and the channel closes (`Closed`):
    /// the edge should then tell its connections to reconnect and resume; the next call
    /// subscribes anew. A receiver that falls `event_buffer` events behind gets `Lagged`.
    pub async fn team_events(
        &self,
        team: &TeamId,
    ) -> Result<broadcast::Receiver<Arc<TeamEvent>>, ApiError> {
        for _ in 0..LINK_ATTEMPTS {
            if let Some(receiver) = self.link(team).await?.subscribe() {
                return Ok(receiver);
            }
        }
        Err(unavailable(team))
    }

    /// Hits and misses of this Flannel's lookups so far.
    pub fn stats(&self) -> FlannelStats {
        FlannelStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    // ---- team links ----

    /// The team's live link, subscribing first if there is none. Every lookup goes through
    /// here before touching the cache, so nothing is loaded for a team that is not followed.
    async fn link(&self, team: &TeamId) -> Result<Arc<TeamLink>, ApiError> {
        for _ in 0..LINK_ATTEMPTS {
            let entry = self.teams.entry(team.clone()).or_default().clone();
            let link = entry
                .link
                .get_or_try_init(|| self.open_link(team, &entry))
                .await?;
            if link.is_live() {
                link.touch();
                return Ok(link.clone());
            }
            // The link ended between being opened and now: clear the slot for a fresh one.
            self.teams
                .remove_if(team, |_, current| Arc::ptr_eq(current, &entry));
        }
        Err(unavailable(team))
    }

    async fn open_link(
        &self,
        team: &TeamId,
        entry: &Arc<TeamEntry>,
    ) -> Result<Arc<TeamLink>, ApiError> {
        let subscription = self.core.subscribe(team).await?;
        let key = TeamKey {
            team: team.clone(),
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
        };
        let (sender, _) = broadcast::channel(self.config.event_buffer.max(1));
        let link = Arc::new(TeamLink::new(key, sender));
        let task = tokio::spawn(team::follow(
            self.this.clone(),
            entry.clone(),
            link.clone(),
            subscription,
            self.config.ttl,
        ));
        link.set_task(task.abort_handle());
        tracing::debug!(%team, "following team events");
        Ok(link)
    }

    /// Drops a team whose link ended: its map slot (if still this one) and its entries.
    pub(crate) fn forget_team(&self, entry: &Arc<TeamEntry>, key: &TeamKey) {
        self.teams
            .remove_if(&key.team, |_, current| Arc::ptr_eq(current, entry));
        // Generation-tagged keys already make the entries unreachable; this frees the memory.
        let dead = key.clone();
        let _ = self.team_meta.invalidate_entries_if(move |k, _| *k == dead);
        let dead = key.clone();
        let _ = self.users.invalidate_entries_if(move |k, _| k.0 == dead);
        let dead = key.clone();
        let _ = self
            .memberships
            .invalidate_entries_if(move |k, _| k.0 == dead);
    }

    /// Applies one event of a live link to the cache.
    pub(crate) async fn apply(&self, link: &TeamLink, event: &TeamEvent) {
        let key = &link.key;
        match &event.body {
            TeamEventBody::Message { message } => link.raise_seq(&message.channel, message.seq),
            TeamEventBody::ChannelCreated { channel } => link.created(&channel.id),
            TeamEventBody::MemberJoined { channel, user } => {
                if let Some(slot) = self.memberships.get(&(key.clone(), user.clone())).await {
                    slot.joined(channel, link.last_seq(&channel.id).is_some());
                }
            }
            TeamEventBody::MemberLeft { channel, user } => {
                if let Some(slot) = self.memberships.get(&(key.clone(), user.clone())).await {
                    slot.left(channel);
                }
            }
            TeamEventBody::ReadMarker { channel, user, seq } => {
                if let Some(slot) = self.memberships.get(&(key.clone(), user.clone())).await {
                    slot.marked(channel, *seq);
                }
            }
            TeamEventBody::UserChanged { user } => {
                if user.team != key.team {
                    return;
                }
                let user = user.clone();
                // Serialized per key with loads' insert-if-absent, so a load that started
                // before this change can never overwrite it.
                self.users
                    .entry((key.clone(), user.id.clone()))
                    .and_compute_with(|_| async move { Op::Put(user) })
                    .await;
            }
            TeamEventBody::Typing { .. } | TeamEventBody::Presence { .. } => {}
        }
    }

    // ---- lookups under a live link ----

    async fn team_of(&self, link: &TeamLink, caller: &Caller) -> Result<Team, ApiError> {
        if let Some(team) = self.team_meta.get(&link.key).await {
            self.count_hit(CacheKind::Team);
            return Ok(team);
        }
        self.count_miss(CacheKind::Team);
        self.team_meta
            .try_get_with(link.key.clone(), self.core.team(caller))
            .await
            .map_err(|e| (*e).clone())
    }

    async fn users_of(
        &self,
        link: &TeamLink,
        caller: &Caller,
        ids: &[UserId],
    ) -> Result<Vec<User>, ApiError> {
        let mut seen = HashSet::with_capacity(ids.len());
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            match self.users.get(&(link.key.clone(), id.clone())).await {
                Some(user) => {
                    self.count_hit(CacheKind::User);
                    found.insert(id.clone(), user);
                }
                None => {
                    self.count_miss(CacheKind::User);
                    missing.push(id.clone());
                }
            }
        }
        if !missing.is_empty() {
            for user in self.core.users(caller, &missing).await? {
                if user.team != caller.team {
                    continue;
                }
                let id = user.id.clone();
                // Insert only if absent: an entry present now came from an event at least as
                // new as this load.
                let cached = self
                    .users
                    .entry((link.key.clone(), id.clone()))
                    .and_compute_with(|existing| async move {
                        match existing {
                            Some(_) => Op::Nop,
                            None => Op::Put(user),
                        }
                    })
                    .await
                    .into_entry()
                    .map(|entry| entry.into_value());
                if let Some(user) = cached {
                    found.insert(id, user);
                }
            }
        }
        let mut ordered = Vec::with_capacity(found.len());
        for id in ids {
            if let Some(user) = found.remove(id) {
                ordered.push(user);
            }
        }
        Ok(ordered)
    }

    async fn memberships_of(
        &self,
        link: &TeamLink,
        caller: &Caller,
    ) -> Result<Vec<Membership>, ApiError> {
        let slot = self
            .memberships
            .get_with((link.key.clone(), caller.user.clone()), async {
                Arc::new(UserSlot::default())
            })
            .await;
        if let Some(memberships) = slot.snapshot() {
            self.count_hit(CacheKind::Memberships);
            return Ok(memberships);
        }
        let _loading = slot.load.lock().await;
        if let Some(memberships) = slot.snapshot() {
            // Another caller loaded it while this one waited.
            self.count_hit(CacheKind::Memberships);
            return Ok(memberships);
        }
        self.count_miss(CacheKind::Memberships);
        let mut latest = Vec::new();
        for _ in 0..LOAD_ATTEMPTS {
            slot.begin_load();
            let states = self.core.channel_states(caller).await?;
            for state in &states {
                link.raise_seq(&state.id, state.last_seq);
            }
            match slot.commit(states.into_iter().map(Membership::from).collect()) {
                Ok(memberships) => return Ok(memberships),
                Err(raced) => latest = raced,
            }
        }
        // Events for this user keep racing the load: serve the newest answer uncached.
        latest.sort_by(|a, b| a.channel.id.cmp(&b.channel.id));
        Ok(latest)
    }

    fn count_hit(&self, kind: CacheKind) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        metrics().hit(kind);
    }

    fn count_miss(&self, kind: CacheKind) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        metrics().miss(kind);
    }
}

impl Drop for Flannel {
    fn drop(&mut self) {
        // Team tasks only hold a weak reference; stop them now rather than at their next event.
        for entry in self.teams.iter() {
            if let Some(link) = entry.link.get() {
                link.abort();
            }
        }
    }
}

fn unavailable(team: &TeamId) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("the event stream of team {team} is not available"),
    )
}

/// The other members of the caller's DMs and group DMs, most recently active DM first,
/// each once, at most `limit`.
fn dm_partners(channels: &[BootChannel], me: &UserId, limit: usize) -> Vec<UserId> {
    let mut direct: Vec<&BootChannel> = channels.iter().filter(|c| c.kind.is_direct()).collect();
    direct.sort_by_key(|c| std::cmp::Reverse(c.last_seq));
    let mut seen = HashSet::new();
    direct
        .into_iter()
        .flat_map(|c| c.members.iter().flatten())
        .filter(|user| *user != me && seen.insert(*user))
        .take(limit)
        .cloned()
        .collect()
}
