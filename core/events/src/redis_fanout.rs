//! The Redis fan-out: team events from any core node to every edge that holds the team.
//!
//! # Why Redis pub/sub rather than direct core → edge streams
//!
//! DESIGN.md §2 allows either. Redis pub/sub was chosen because:
//!
//! - **No routing in the core.** A core publishes each event once, to `confab:team:TEAM`,
//!   whichever node owns the channel's sequencer at that moment; Redis copies it to the
//!   nodes subscribed. With direct streams every core node would need a registry of which
//!   edges hold which team, a stream to each, and a story for edges following a channel
//!   whose ownership (lease) moves to another core node.
//! - **One order per team for every subscriber.** Redis handles publishes one at a time,
//!   so all subscribers of a channel see its messages in the same order, and a sequencer
//!   that publishes in `seq` order is seen in `seq` order.
//! - **Already there.** Presence at scale needs Redis anyway (DESIGN.md §2); this adds no
//!   new service to run.
//!
//! The costs, accepted: one more hop (well under a millisecond within a region), Redis as
//! a fan-out point (one instance moves a few hundred thousand messages a second; beyond
//! that, teams can be spread over several instances or Redis 7 sharded pub/sub, since no
//! channel spans teams), and edges need a connection to Redis. Pub/sub is at most once,
//! exactly what [`FanOut`] promises: an edge fills message gaps from the store by `seq`.
//!
//! # How it works in one process
//!
//! Publishing is a `PUBLISH` of the event's JSON. Receiving goes through one shared RESP3
//! pub/sub connection per [`RedisFanOut`], owned by a dispatcher task: it `SUBSCRIBE`s to
//! a team when the team's first local subscriber arrives, `UNSUBSCRIBE`s when the last
//! one goes (dropped or cut off), and hands each event to the local subscribers with
//! `try_send`; a full queue cuts that subscriber off, as in
//! [`MemoryFanOut`](crate::MemoryFanOut).
//!
//! A subscription starts at a **barrier**: after the team's `SUBSCRIBE`, the dispatcher
//! publishes a token on this instance's own channel and attaches the subscriber only when
//! the token comes back on the pub/sub connection. Redis delivers messages to a connection
//! in the order it handled the publishes, so the subscriber gets exactly the events
//! published after `subscribe` returns, never older ones still in flight, which would
//! otherwise reach a subscriber that joins a team the process already follows.
//!
//! When the pub/sub connection drops, events are lost for a while, so every local
//! subscription is ended: an edge then drops its cache of the team and its clients resume
//! (docs/design-notes.md, "Edge"), rather than silently missing updates. The connection
//! reconnects by itself and new subscriptions work again.

use crate::{EventsError, FanOut, Subscription};
use async_trait::async_trait;
use confab_proto::TeamId;
use confab_proto::event::TeamEvent;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ProtocolVersion, PushInfo, PushKind, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Prefix of the per-team channels; the rest of the name is the team id.
const TEAM_CHANNEL_PREFIX: &str = "confab:team:";
/// Counter handing each instance a number, so barrier channels never collide.
const INSTANCES_KEY: &str = "confab:fanout:instances";
/// Redis answers in well under a millisecond; this only has to outlast a busy test machine.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on `subscribe`; above the connection manager's reconnect backoff (about 6 s).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pushes read from the socket but not yet dispatched. Dispatching only does `try_send`s,
/// so this fills only if the dispatcher is starved; then events are lost and every
/// subscription is ended, as on a disconnect, instead of letting memory grow.
const PUSH_QUEUE: usize = 16 * 1024;

/// The pub/sub channel that carries `team`'s events.
pub fn team_channel(team: &TeamId) -> String {
    format!("{TEAM_CHANNEL_PREFIX}{team}")
}

fn unavailable(err: redis::RedisError) -> EventsError {
    EventsError::Unavailable(err.to_string())
}

fn stopped() -> EventsError {
    EventsError::Internal("fan-out dispatcher stopped".into())
}

/// Fan-out of team events through Redis pub/sub, across processes.
///
/// Opened with [`RedisFanOut::open`]. Dropping it stops its dispatcher, which ends every
/// subscription made through it.
pub struct RedisFanOut {
    publisher: ConnectionManager,
    commands: mpsc::UnboundedSender<Command>,
    /// Dropped with the fan-out, which ends the dispatcher.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for RedisFanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFanOut").finish_non_exhaustive()
    }
}

impl RedisFanOut {
    /// Connects to the Redis at `url` (`redis://host:port[/db]`) and starts the dispatcher
    /// on the current tokio runtime.
    pub async fn open(url: &str) -> Result<Arc<Self>, EventsError> {
        let client = Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut publisher = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(unavailable)?;
        let instance: u64 = redis::cmd("INCR")
            .arg(INSTANCES_KEY)
            .query_async(&mut publisher)
            .await
            .map_err(unavailable)?;
        let barrier_channel = format!("confab:fanout:barrier:{instance}");

        // Pub/sub messages arrive as RESP3 pushes on a connection of their own, which the
        // manager re-subscribes after a reconnect.
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let sub_client = Client::open(info.set_redis_settings(resp3)).map_err(unavailable)?;
        let (push_tx, pushes) = mpsc::channel(PUSH_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let on_push = {
            let overflowed = overflowed.clone();
            move |push: PushInfo| {
                push_tx
                    .try_send(push)
                    .map_err(|_| overflowed.store(true, Ordering::Release))
            }
        };
        let mut sub_conn = ConnectionManager::new_with_config(
            sub_client,
            config
                .set_push_sender(on_push)
                .set_automatic_resubscription(),
        )
        .await
        .map_err(unavailable)?;
        sub_conn
            .subscribe(&barrier_channel)
            .await
            .map_err(unavailable)?;

        let (commands, command_rx) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(());
        let dispatcher = Dispatcher {
            sub_conn,
            publisher: publisher.clone(),
            barrier_channel,
            overflowed,
            commands: commands.clone(),
            teams: HashMap::new(),
            waiting: VecDeque::new(),
            next_barrier: 0,
            next_id: 0,
        };
        tokio::spawn(dispatcher.run(pushes, command_rx, shutdown_rx));
        Ok(Arc::new(Self {
            publisher,
            commands,
            _shutdown: shutdown,
        }))
    }
}

#[async_trait]
impl FanOut for RedisFanOut {
    async fn publish(&self, event: Arc<TeamEvent>) -> Result<(), EventsError> {
        let payload =
            serde_json::to_vec(&*event).map_err(|err| EventsError::Internal(err.to_string()))?;
        // One multiplexed connection sends commands in call order, so the publishes of one
        // task reach Redis, and so every subscriber, in that order.
        let _receivers: u64 = redis::cmd("PUBLISH")
            .arg(team_channel(&event.team))
            .arg(payload)
            .query_async(&mut self.publisher.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn subscribe(&self, team: &TeamId, buffer: usize) -> Result<Subscription, EventsError> {
        // A zero-capacity channel does not exist; one slot is the closest meaning.
        let (tx, events) = mpsc::channel(buffer.max(1));
        let (done, attached) = oneshot::channel();
        self.commands
            .send(Command::Subscribe {
                team: team.clone(),
                tx,
                done,
            })
            .map_err(|_| stopped())?;
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, attached).await {
            Ok(Ok(Ok(()))) => Ok(Subscription {
                team: team.clone(),
                events,
            }),
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(stopped()),
            // Dropping `attached` tells the dispatcher not to attach it after all.
            Err(_) => Err(EventsError::Unavailable(format!(
                "subscribing to {team} took longer than {SUBSCRIBE_TIMEOUT:?}"
            ))),
        }
    }
}

enum Command {
    /// Attach `tx` to `team` at the next barrier and answer on `done`.
    Subscribe {
        team: TeamId,
        tx: mpsc::Sender<Arc<TeamEvent>>,
        done: oneshot::Sender<Result<(), EventsError>>,
    },
    /// The receiver of subscriber `id` was dropped.
    Gone { team: TeamId, id: u64 },
}

/// A team this process is subscribed to in Redis.
#[derive(Default)]
struct Team {
    live: Vec<Subscriber>,
    /// Subscribers waiting for their barrier; the team stays subscribed for them.
    waiting: usize,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<TeamEvent>>,
    /// Dropped with the subscriber, which ends its watcher task.
    _watcher: oneshot::Sender<()>,
}

struct Waiting {
    barrier: u64,
    team: TeamId,
    tx: mpsc::Sender<Arc<TeamEvent>>,
    done: oneshot::Sender<Result<(), EventsError>>,
}

/// Owns the pub/sub connection and every local subscriber. Redis commands are awaited in
/// line: they are rare (one per team joined or left) and keep SUBSCRIBE and UNSUBSCRIBE of
/// a team in order; pushes queue meanwhile (`PUSH_QUEUE`).
struct Dispatcher {
    sub_conn: ConnectionManager,
    publisher: ConnectionManager,
    barrier_channel: String,
    /// Set when a push was dropped because the push queue was full.
    overflowed: Arc<AtomicBool>,
    /// Handed to watcher tasks to report dropped receivers.
    commands: mpsc::UnboundedSender<Command>,
    teams: HashMap<TeamId, Team>,
    /// In barrier order, which is also the order the barriers come back in.
    waiting: VecDeque<Waiting>,
    next_barrier: u64,
    next_id: u64,
}

impl Dispatcher {
    async fn run(
        mut self,
        mut pushes: mpsc::Receiver<PushInfo>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut shutdown: watch::Receiver<()>,
    ) {
        loop {
            // Neither channel closes while the dispatcher lives: it holds a command sender,
            // and its connection manager the push callback that owns the push sender.
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(push) = pushes.recv() => self.on_push(push).await,
                Some(command) = commands.recv() => self.on_command(command).await,
            }
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Subscribe { team, tx, done } => self.subscribe(team, tx, done).await,
            Command::Gone { team, id } => {
                if let Some(entry) = self.teams.get_mut(&team) {
                    entry.live.retain(|s| s.id != id);
                }
                self.unsubscribe_if_unused(&team).await;
            }
        }
    }

    async fn subscribe(
        &mut self,
        team: TeamId,
        tx: mpsc::Sender<Arc<TeamEvent>>,
        done: oneshot::Sender<Result<(), EventsError>>,
    ) {
        if !self.teams.contains_key(&team) {
            if let Err(err) = self.sub_conn.subscribe(team_channel(&team)).await {
                let _ = done.send(Err(unavailable(err)));
                return;
            }
            self.teams.insert(team.clone(), Team::default());
        }
        if let Some(entry) = self.teams.get_mut(&team) {
            entry.waiting += 1;
        }
        let barrier = self.next_barrier;
        self.next_barrier += 1;
        let published = redis::cmd("PUBLISH")
            .arg(&self.barrier_channel)
            .arg(barrier)
            .query_async::<u64>(&mut self.publisher)
            .await;
        match published {
            Ok(_) => self.waiting.push_back(Waiting {
                barrier,
                team,
                tx,
                done,
            }),
            Err(err) => {
                let _ = done.send(Err(unavailable(err)));
                if let Some(entry) = self.teams.get_mut(&team) {
                    entry.waiting -= 1;
                }
                self.unsubscribe_if_unused(&team).await;
            }
        }
    }

    async fn on_push(&mut self, push: PushInfo) {
        if self.overflowed.swap(false, Ordering::Acquire) {
            self.cut_off_everyone("push queue overflowed").await;
        }
        match push.kind {
            PushKind::Message => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                else {
                    return;
                };
                if *channel == self.barrier_channel.as_bytes() {
                    let barrier = std::str::from_utf8(payload)
                        .ok()
                        .and_then(|s| s.parse().ok());
                    match barrier {
                        Some(barrier) => self.pass_barrier(barrier).await,
                        None => tracing::warn!("ignoring a malformed fan-out barrier"),
                    }
                } else if let Some(team) = channel.strip_prefix(TEAM_CHANNEL_PREFIX.as_bytes()) {
                    let team = TeamId::new(String::from_utf8_lossy(team));
                    self.deliver(team, payload).await;
                }
            }
            PushKind::Disconnection => self.cut_off_everyone("connection lost").await,
            _ => {}
        }
    }

    /// Attaches every subscriber whose barrier has come back.
    async fn pass_barrier(&mut self, barrier: u64) {
        while self.waiting.front().is_some_and(|w| w.barrier <= barrier) {
            let Some(Waiting { team, tx, done, .. }) = self.waiting.pop_front() else {
                break;
            };
            let Some(entry) = self.teams.get_mut(&team) else {
                continue;
            };
            entry.waiting -= 1;
            // A caller that gave up waiting has dropped `done`: it gets no subscription.
            if done.send(Ok(())).is_ok() {
                let id = self.next_id;
                self.next_id += 1;
                let (watcher, cancel) = oneshot::channel();
                tokio::spawn(watch_receiver(
                    tx.clone(),
                    cancel,
                    self.commands.clone(),
                    team.clone(),
                    id,
                ));
                entry.live.push(Subscriber {
                    id,
                    tx,
                    _watcher: watcher,
                });
            } else {
                self.unsubscribe_if_unused(&team).await;
            }
        }
    }

    async fn deliver(&mut self, team: TeamId, payload: &[u8]) {
        let Some(entry) = self.teams.get_mut(&team) else {
            // Still in flight when the team was unsubscribed.
            return;
        };
        if entry.live.is_empty() {
            return;
        }
        let event = match serde_json::from_slice::<TeamEvent>(payload) {
            Ok(event) if event.team == team => Arc::new(event),
            Ok(event) => {
                tracing::warn!(channel = %team, team = %event.team, "dropping an event published on another team's channel");
                return;
            }
            Err(err) => {
                tracing::warn!(team = %team, error = %err, "dropping an undecodable team event");
                return;
            }
        };
        entry.live.retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(team = %team, "fan-out subscriber fell behind, disconnecting");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        self.unsubscribe_if_unused(&team).await;
    }

    async fn unsubscribe_if_unused(&mut self, team: &TeamId) {
        if !self
            .teams
            .get(team)
            .is_some_and(|t| t.live.is_empty() && t.waiting == 0)
        {
            return;
        }
        self.teams.remove(team);
        if let Err(err) = self.sub_conn.unsubscribe(team_channel(team)).await {
            // Its messages are ignored while the team has no entry; a later subscribe
            // subscribes again, which Redis treats as a no-op.
            tracing::warn!(team = %team, error = %err, "fan-out unsubscribe failed");
        }
    }

    /// Events were lost (`why`): end every subscription rather than let an edge trust a
    /// stream with a hole in it.
    async fn cut_off_everyone(&mut self, why: &str) {
        let teams = std::mem::take(&mut self.teams);
        tracing::warn!(
            teams = teams.len(),
            "fan-out pub/sub {why}; ending its subscriptions"
        );
        for waiting in self.waiting.drain(..) {
            let _ = waiting.done.send(Err(EventsError::Unavailable(format!(
                "fan-out {why} while subscribing"
            ))));
        }
        let channels: Vec<String> = teams.keys().map(team_channel).collect();
        drop(teams);
        // After a disconnect the manager restores every subscription it knew; drop the
        // teams' ones again (the barrier channel stays).
        if !channels.is_empty()
            && let Err(err) = self.sub_conn.unsubscribe(&channels).await
        {
            tracing::warn!(error = %err, "fan-out unsubscribe after reconnect failed");
        }
    }
}

/// Reports the subscriber's receiver being dropped, so the team can be unsubscribed
/// without waiting for its next event. Ends early when the dispatcher drops the subscriber
/// (`cancel`), releasing its sender clone so the receiver sees the end of the stream.
async fn watch_receiver(
    tx: mpsc::Sender<Arc<TeamEvent>>,
    cancel: oneshot::Receiver<()>,
    commands: mpsc::UnboundedSender<Command>,
    team: TeamId,
    id: u64,
) {
    tokio::select! {
        () = tx.closed() => {
            let _ = commands.send(Command::Gone { team, id });
        }
        _ = cancel => {}
    }
}
