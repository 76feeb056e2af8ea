//! The Redis presence driver: presence shared by every core node of a deployment.
//!
//! # Key layout
//!
//! Every key of a user starts with the team, inside a Redis hash tag so a future Redis
//! Cluster keeps a team's keys in one slot (DESIGN.md §3: the team is the shard):
//!
//! - `confab:presence:{TEAM}:USER:sessions`: a sorted set, session id → the instant (ms,
//!   Redis server clock) at which that session dies unless it heartbeats again. The key
//!   itself carries `PEXPIREAT` of its latest deadline, so Redis drops it on its own even
//!   if no node is left to clean up.
//! - `confab:presence:{TEAM}:USER:state`: a hash with `manual` (`away` or `dnd`; absent is
//!   auto) and `reported` (the presence last published; absent is `away`). No TTL: a
//!   manual setting outlives sessions, as Slack's does.
//! - `confab:presence:deadlines`: one sorted set for the whole server, `{TEAM}:USER` →
//!   the latest session deadline of that user, i.e. when they turn away unless someone
//!   heartbeats. Only users with sessions are in it.
//!
//! One sorted set per user rather than one key per session: "is any session alive" is one
//! `ZCOUNT`, ending a session needs no scan, and the deadline of the user's last session
//! is the set's top score, which is exactly what the deadline index needs.
//!
//! A `}` or `%` in a team id is percent-escaped in keys (`%7D`, `%25`), so the hash tag is
//! always the whole team and no two `(team, user)` pairs share a key.
//!
//! # Reporting each change exactly once
//!
//! Every mutation is one Lua script (atomic in Redis). It drops the user's dead sessions,
//! applies the mutation, computes the effective presence, compares it with `reported` and,
//! when they differ, updates `reported` and `PUBLISH`es the change on
//! `confab:presence:changes` from inside the script. Whoever runs the script that moves
//! the state publishes; a second script sees `reported` already equal and stays silent.
//! Each node's subscriber task turns those messages into [`PresenceStore::changes`].
//!
//! Expiry uses a sweeper, not keyspace notifications: every node runs the sweep script
//! every `ttl / 10` (50 ms to 1 s). It claims the users whose deadline has passed in
//! `confab:presence:deadlines`, removes them from it and settles them, all in one script,
//! so exactly one node reports each expiry however many sweep. Keyspace notifications
//! (`notify-keyspace-events Ex`) were rejected: they are fire-and-forget (an expiry while
//! no node listens is lost for good, leaving `reported` stuck at active), Redis emits them
//! when it gets round to evicting the key, which can lag the TTL under load, every node
//! would receive every expiry, and managed Redis offerings often forbid `CONFIG SET`.
//!
//! All times come from Redis's `TIME`, so node clocks may drift without moving deadlines.
//!
//! # Limits
//!
//! The sweep script derives user keys from the deadline index, so it assumes one Redis
//! primary (standalone or Sentinel); Redis Cluster would need one deadline index per slot.
//! Changes published while a node's subscriber connection is down are lost for that node's
//! `changes()` receivers (pub/sub is at most once); the connection resubscribes by itself.

use crate::{PresenceChange, PresenceError, PresenceStore};
use async_trait::async_trait;
use confab_proto::rtm::PresenceSetting;
use confab_proto::{Presence, TeamId, UserId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ProtocolVersion, PushKind, Script, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// How many changes a slow `changes()` receiver may fall behind before it loses the oldest.
const CHANGES_CAPACITY: usize = 4096;
/// The pub/sub channel every change is published on.
pub const CHANGES_CHANNEL: &str = "confab:presence:changes";
/// Prefix of every presence key.
const KEY_PREFIX: &str = "confab:presence:";
/// The deadline index that sweepers claim expired users from.
const DEADLINES_KEY: &str = "confab:presence:deadlines";
/// Users settled per sweep script call: bounds how long one call blocks Redis.
const SWEEP_BATCH: usize = 256;
/// Redis answers in well under a millisecond; this only has to outlast a busy test machine.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Helpers shared by the scripts. Each script is self-contained (EVALSHA has no includes),
/// so this is prepended to every one of them.
const LUA_PRELUDE: &str = r"
-- The Redis server clock, in ms: the one clock all nodes agree on.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drops dead sessions and keeps the key's TTL and the user's deadline at the last live
-- session. Returns whether any session is alive.
local function prune(sessions, deadlines, member, now)
  redis.call('ZREMRANGEBYSCORE', sessions, '-inf', now)
  local last = redis.call('ZRANGE', sessions, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIREAT', sessions, last[2])
    redis.call('ZADD', deadlines, last[2], member)
    return true
  end
  redis.call('ZREM', deadlines, member)
  return false
end

-- Publishes the user's effective presence if it differs from the one last published.
local function settle(state, live, channel, member)
  local effective = redis.call('HGET', state, 'manual')
  if not effective then
    if live then effective = 'active' else effective = 'away' end
  end
  local reported = redis.call('HGET', state, 'reported') or 'away'
  if effective ~= reported then
    redis.call('PUBLISH', channel, effective .. ' ' .. member)
  end
  -- Away is the absent value, so an idle user leaves no hash behind.
  if effective == 'away' then
    redis.call('HDEL', state, 'reported')
  else
    redis.call('HSET', state, 'reported', effective)
  end
end
";

/// KEYS: sessions, state, deadlines. ARGV: member, channel, session, ttl ms.
const LUA_HEARTBEAT: &str = r"
local now = now_ms()
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[3])
local live = prune(KEYS[1], KEYS[3], ARGV[1], now)
settle(KEYS[2], live, ARGV[2], ARGV[1])
return 1
";

/// KEYS: sessions, state, deadlines. ARGV: member, channel, `away` | `dnd` | `` (auto).
const LUA_SET_MANUAL: &str = r"
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[2], 'manual')
else
  redis.call('HSET', KEYS[2], 'manual', ARGV[3])
end
local live = prune(KEYS[1], KEYS[3], ARGV[1], now_ms())
settle(KEYS[2], live, ARGV[2], ARGV[1])
return 1
";

/// KEYS: sessions, state, deadlines. ARGV: member, channel, session.
const LUA_END_SESSION: &str = r"
redis.call('ZREM', KEYS[1], ARGV[3])
local live = prune(KEYS[1], KEYS[3], ARGV[1], now_ms())
settle(KEYS[2], live, ARGV[2], ARGV[1])
return 1
";

/// KEYS: deadlines. ARGV: key prefix, channel, batch size. Returns how many users it
/// settled; a full batch means more may be due.
const LUA_SWEEP: &str = r"
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  local base = ARGV[1] .. member
  local live = prune(base .. ':sessions', KEYS[1], member, now)
  settle(base .. ':state', live, ARGV[2], member)
end
return #due
";

/// KEYS: sessions and state of each asked user, in pairs. Returns one presence per pair.
/// Sessions past their deadline count as dead even before a sweeper removes them.
const LUA_PRESENCE: &str = r"
local now = now_ms()
local out = {}
for i = 1, #KEYS, 2 do
  local p = redis.call('HGET', KEYS[i + 1], 'manual')
  if not p then
    if redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf') > 0 then p = 'active' else p = 'away' end
  end
  out[#out + 1] = p
end
return out
";

struct Scripts {
    heartbeat: Script,
    set_manual: Script,
    end_session: Script,
    sweep: Script,
    presence: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
        Self {
            heartbeat: with_prelude(LUA_HEARTBEAT),
            set_manual: with_prelude(LUA_SET_MANUAL),
            end_session: with_prelude(LUA_END_SESSION),
            sweep: with_prelude(LUA_SWEEP),
            presence: with_prelude(LUA_PRESENCE),
        }
    }
}

/// Presence kept in Redis, shared by every node that opens the same server.
///
/// Opened with [`RedisPresence::open`], which also starts this node's change subscriber
/// and expiry sweeper; both end when the store is dropped.
pub struct RedisPresence {
    ttl: Duration,
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    changes: broadcast::Sender<PresenceChange>,
    /// Dropped with the store, which ends the background tasks.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The keys and index member of one user.
struct UserKeys {
    member: String,
    sessions: String,
    state: String,
}

impl UserKeys {
    fn new(team: &TeamId, user: &UserId) -> Self {
        let member = format!("{{{}}}:{}", escape_team(team.as_str()), user.as_str());
        Self {
            sessions: format!("{KEY_PREFIX}{member}:sessions"),
            state: format!("{KEY_PREFIX}{member}:state"),
            member,
        }
    }
}

/// Keeps `}` out of the hash tag; `%` is escaped too so the mapping stays one to one.
fn escape_team(team: &str) -> String {
    team.replace('%', "%25").replace('}', "%7D")
}

fn unescape_team(escaped: &str) -> String {
    // Every `%` of an escaped team starts `%25` or `%7D`, so `%7D` cannot be half of `%25`.
    escaped.replace("%7D", "}").replace("%25", "%")
}

/// Parses a change message (`PRESENCE {TEAM}:USER`) as the scripts publish it.
fn parse_change(payload: &[u8]) -> Option<PresenceChange> {
    let text = std::str::from_utf8(payload).ok()?;
    let (presence, member) = text.split_once(' ')?;
    let presence = match presence {
        "active" => Presence::Active,
        "away" => Presence::Away,
        "dnd" => Presence::Dnd,
        _ => return None,
    };
    let (team, user) = member.strip_prefix('{')?.split_once("}:")?;
    Some(PresenceChange {
        team: TeamId::new(unescape_team(team)),
        user: UserId::new(user),
        presence,
    })
}

fn unavailable(err: redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(err.to_string())
}

impl RedisPresence {
    /// Connects to the Redis at `url` (`redis://host:port[/db]`), subscribes to changes and
    /// starts the expiry sweeper on the current tokio runtime.
    ///
    /// A session counts as alive for `ttl` after its last heartbeat. Changes made by any
    /// node after this returns reach [`PresenceStore::changes`].
    pub async fn open(url: &str, ttl: Duration) -> Result<Arc<Self>, PresenceError> {
        let client = Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(unavailable)?;

        // Pub/sub messages arrive as RESP3 pushes on a connection of their own, so a slow
        // script on the command connection never delays them and vice versa.
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let sub_client = Client::open(info.set_redis_settings(resp3)).map_err(unavailable)?;
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let mut sub_conn = ConnectionManager::new_with_config(
            sub_client,
            config
                .set_push_sender(push_tx)
                .set_automatic_resubscription(),
        )
        .await
        .map_err(unavailable)?;
        // Once SUBSCRIBE has returned, every later PUBLISH reaches this node.
        sub_conn
            .subscribe(CHANGES_CHANNEL)
            .await
            .map_err(unavailable)?;

        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let (shutdown, shutdown_rx) = watch::channel(());
        let scripts = Arc::new(Scripts::new());
        tokio::spawn(forward_changes(
            sub_conn,
            push_rx,
            changes.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(sweep(
            conn.clone(),
            scripts.clone(),
            sweep_interval(ttl),
            shutdown_rx,
        ));
        Ok(Arc::new(Self {
            ttl,
            conn,
            scripts,
            changes,
            _shutdown: shutdown,
        }))
    }

    /// The TTL this store was opened with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Runs one of the per-user mutation scripts, whose KEYS and first ARGVs are the same.
    async fn mutate(
        &self,
        script: &Script,
        team: &TeamId,
        user: &UserId,
        extra: &[&str],
    ) -> Result<(), PresenceError> {
        let keys = UserKeys::new(team, user);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&keys.sessions)
            .key(&keys.state)
            .key(DEADLINES_KEY)
            .arg(&keys.member)
            .arg(CHANGES_CHANNEL);
        for arg in extra {
            invocation.arg(*arg);
        }
        let _: i64 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Often enough that an expiry is reported within a tenth of the TTL, never more often
/// than 20 times a second per node however short the TTL.
fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Turns change messages into `changes()` broadcasts until the store is dropped.
async fn forward_changes(
    // Owned here so the subscription lives exactly as long as this task.
    mut sub_conn: ConnectionManager,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    changes: broadcast::Sender<PresenceChange>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let push = tokio::select! {
            _ = shutdown.changed() => return,
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
        };
        match push.kind {
            PushKind::Message => {
                let payload = match push.data.get(1) {
                    Some(Value::BulkString(bytes)) => bytes.as_slice(),
                    _ => &[],
                };
                match parse_change(payload) {
                    // An error only means nobody is listening right now.
                    Some(change) => drop(changes.send(change)),
                    None => tracing::warn!("ignoring a malformed presence change message"),
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("presence change subscription lost; reconnecting");
                if !reconnect(&mut sub_conn, &mut shutdown).await {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// Pings until the connection is back (the manager re-subscribes as it reconnects), or
/// returns false on shutdown. The manager retries a reconnect only a few times by itself
/// and otherwise waits for a command, which this subscription-only connection never sends.
async fn reconnect(conn: &mut ConnectionManager, shutdown: &mut watch::Receiver<()>) -> bool {
    loop {
        let ping = redis::cmd("PING");
        tokio::select! {
            _ = shutdown.changed() => return false,
            pong = ping.query_async::<String>(&mut *conn) => if pong.is_ok() {
                tracing::info!("presence change subscription restored");
                return true;
            },
        }
        tokio::select! {
            _ = shutdown.changed() => return false,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Claims and reports expired users until the store is dropped. Every node runs one; the
/// claim is atomic, so they never report the same expiry twice.
async fn sweep(
    mut conn: ConnectionManager,
    scripts: Arc<Scripts>,
    every: Duration,
    mut shutdown: watch::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {}
        }
        loop {
            let settled: Result<usize, _> = scripts
                .sweep
                .key(DEADLINES_KEY)
                .arg(KEY_PREFIX)
                .arg(CHANGES_CHANNEL)
                .arg(SWEEP_BATCH)
                .invoke_async(&mut conn)
                .await;
            match settled {
                Ok(n) if n == SWEEP_BATCH => continue,
                Ok(_) => break,
                Err(err) => {
                    // Another node (or this one, next tick) claims the users later.
                    tracing::warn!(error = %err, "presence sweep failed");
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn heartbeat(
        &self,
        team: &TeamId,
        user: &UserId,
        session: &str,
    ) -> Result<(), PresenceError> {
        // At least 1 ms: a zero TTL would make the session dead on arrival.
        let ttl_ms = self.ttl.as_millis().max(1).to_string();
        self.mutate(
            &self.scripts.heartbeat,
            team,
            user,
            &[session, ttl_ms.as_str()],
        )
        .await
    }

    async fn presence(
        &self,
        team: &TeamId,
        users: &[UserId],
    ) -> Result<Vec<Presence>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.scripts.presence.prepare_invoke();
        for user in users {
            let keys = UserKeys::new(team, user);
            invocation.key(keys.sessions).key(keys.state);
        }
        let got: Vec<String> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if got.len() != users.len() {
            return Err(PresenceError::Unavailable(format!(
                "presence script answered {} values for {} users",
                got.len(),
                users.len()
            )));
        }
        Ok(got
            .iter()
            .map(|p| match p.as_str() {
                "active" => Presence::Active,
                "dnd" => Presence::Dnd,
                _ => Presence::Away,
            })
            .collect())
    }

    async fn set_manual(
        &self,
        team: &TeamId,
        user: &UserId,
        setting: PresenceSetting,
    ) -> Result<(), PresenceError> {
        let manual = match setting {
            PresenceSetting::Auto => "",
            PresenceSetting::Away => "away",
            PresenceSetting::Dnd => "dnd",
        };
        self.mutate(&self.scripts.set_manual, team, user, &[manual])
            .await
    }

    async fn end_session(
        &self,
        team: &TeamId,
        user: &UserId,
        session: &str,
    ) -> Result<(), PresenceError> {
        self.mutate(&self.scripts.end_session, team, user, &[session])
            .await
    }

    fn changes(&self) -> broadcast::Receiver<PresenceChange> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_start_with_the_team_and_stay_unambiguous() {
        let keys = UserKeys::new(&TeamId::new("T1"), &UserId::new("U1"));
        assert_eq!(keys.sessions, "confab:presence:{T1}:U1:sessions");
        assert_eq!(keys.state, "confab:presence:{T1}:U1:state");

        // Without escaping these two would share `{a}:b}:c`.
        let one = UserKeys::new(&TeamId::new("a}:b"), &UserId::new("c"));
        let two = UserKeys::new(&TeamId::new("a"), &UserId::new("b}:c"));
        assert_ne!(one.sessions, two.sessions);
    }

    #[test]
    fn change_messages_round_trip_odd_ids() {
        for team in ["T1", "a}:b", "100%", "%7D", "{x}"] {
            let user = UserId::new("U 1}:x");
            let keys = UserKeys::new(&TeamId::new(team), &user);
            let change = parse_change(format!("dnd {}", keys.member).as_bytes()).unwrap();
            assert_eq!(change.team.as_str(), team);
            assert_eq!(change.user, user);
            assert_eq!(change.presence, Presence::Dnd);
        }
        assert!(parse_change(b"busy {T1}:U1").is_none());
        assert!(parse_change(b"away T1:U1").is_none());
    }

    #[test]
    fn sweep_interval_is_bounded() {
        assert_eq!(
            sweep_interval(Duration::from_millis(500)),
            Duration::from_millis(50)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(75)),
            Duration::from_secs(1)
        );
    }
}
