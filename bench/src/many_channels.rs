//! The `many-channels` scenario: the shape of a real team — many small channels rather
//! than one big one. `channels` channels of `members` users each, drawn from `users`
//! users who are each on one connection in all their channels; every user with a channel
//! sends messages to random channels of theirs, together at a fixed `rate`. Who is in
//! which channel and who sends where come from fixed seeds, so runs (and servers) are
//! comparable.
//!
//! Against confab (RTM, membership made over REST) each send is durable before its reply
//! (the store fsyncs, with group commit across channels), so the send → reply latency is
//! what a user waits for the tick on their message; it is measured from the intended send
//! instant, so a slow server cannot hide it (coordinated omission). The same generator
//! drives the peer servers through [`crate::wire`]: centrifuge replies to publishes (from
//! memory, not durable); nchan, NATS and MQTT reply to nothing, so there the operations
//! are the sends and there is no ack latency. For every server alike: each member's
//! delivery of every accepted message (acknowledged, or sent where nothing is
//! acknowledged), its latency from the intended send instant, losses and duplicates.

use crate::net::{self, MAX_RATE_PER_SENDER, Result, Rng, Server};
use crate::payload::Payload;
use crate::peers::Peer;
use crate::wire::{Event, Wire};
use crate::{Report, latency_histogram};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Parameters of the many-channels scenario.
#[derive(Clone, Debug)]
pub struct ManyChannelsBench {
    pub channels: usize,
    /// Members per channel, its creator included.
    pub members: usize,
    /// Users the members are drawn from, each one connection (nchan: one per channel).
    pub users: usize,
    /// Messages per second over all senders.
    pub rate: f64,
    pub duration: Duration,
    /// How long connections may still receive after the last send.
    pub drain: Duration,
    pub server_bin: Option<PathBuf>,
    /// A running peer server (`bench/peers/peers.sh`) instead of a fresh confab.
    pub peer: Option<Peer>,
    /// Where `peers.sh` keeps the peers' CA.
    pub peers_dir: PathBuf,
}

/// Who is in which channel and who sends what, all drawn up front from fixed seeds.
struct Plan {
    /// Per channel, its members (user indices).
    membership: Vec<Vec<usize>>,
    /// Per user, its channels, in the order it joins them.
    channels_of: Vec<Vec<usize>>,
    /// The users with a channel: they all send.
    senders: Vec<usize>,
    per_sender_rate: f64,
    /// Per sender (as in `senders`), each send's channel as a position in the sender's
    /// `channels_of`.
    sends: Vec<Vec<usize>>,
}

impl Plan {
    fn draw(channels: usize, members: usize, users: usize, rate: f64, duration: Duration) -> Self {
        let mut rng = Rng::new(0x5eed_00c4);
        let membership: Vec<Vec<usize>> = (0..channels.max(1))
            .map(|_| rng.distinct(users, members, None))
            .collect();
        let mut channels_of: Vec<Vec<usize>> = vec![Vec::new(); users];
        for (k, members) in membership.iter().enumerate() {
            for &u in members {
                channels_of[u].push(k);
            }
        }
        let senders: Vec<usize> = (0..users).filter(|&u| !channels_of[u].is_empty()).collect();
        let per_sender_rate = rate / senders.len().max(1) as f64;
        let per_sender = (per_sender_rate * duration.as_secs_f64()).round() as usize;
        let sends = senders
            .iter()
            .map(|&u| {
                let mut pick = Rng::new(0x5eed_0000 + u as u64);
                let mine = channels_of[u].len() as u64;
                (0..per_sender).map(|_| pick.below(mine) as usize).collect()
            })
            .collect();
        Self {
            membership,
            channels_of,
            senders,
            per_sender_rate,
            sends,
        }
    }

    /// Refuses a rate above the edge's per-connection limit: it would measure the limiter.
    fn check_rate(&self, rate: f64) -> Result<()> {
        if self.per_sender_rate <= MAX_RATE_PER_SENDER {
            return Ok(());
        }
        Err(format!(
            "{rate:.0} msg/s over {} senders is {:.0}/s each, above the edge's RTM rate limit \
             of {MAX_RATE_PER_SENDER}/s per connection; add --users",
            self.senders.len(),
            self.per_sender_rate
        )
        .into())
    }

    /// Connections the users hold on `wire`: one each, or one per user and channel.
    fn connections(&self, wire: Wire) -> usize {
        if wire.multiplexes_channels() {
            self.channels_of.len()
        } else {
            self.channels_of.iter().map(Vec::len).sum()
        }
    }

    /// Sends planned to each channel.
    fn sends_per_channel(&self) -> Vec<u64> {
        let mut count = vec![0u64; self.membership.len()];
        for (&u, sends) in self.senders.iter().zip(&self.sends) {
            for &position in sends {
                count[self.channels_of[u][position]] += 1;
            }
        }
        count
    }

    /// What each of user `u`'s connections on `wire` waits for: the deliveries of its
    /// channels' messages, and replies to the sends that go out on it.
    fn expectations(&self, wire: Wire, u: usize, per_channel: &[u64]) -> Vec<Expect> {
        let mine = &self.channels_of[u];
        let mut expect = if wire.multiplexes_channels() {
            vec![Expect {
                deliveries: mine.iter().map(|&k| per_channel[k]).sum(),
                ..Expect::default()
            }]
        } else {
            mine.iter()
                .map(|&k| Expect {
                    deliveries: per_channel[k],
                    ..Expect::default()
                })
                .collect()
        };
        if wire.acknowledges_sends()
            && let Ok(s) = self.senders.binary_search(&u)
        {
            for &position in &self.sends[s] {
                expect[wire.sending_connection(position)].replies += 1;
            }
        }
        expect
    }
}

/// How many replies and deliveries a connection waits for.
#[derive(Clone, Copy, Debug, Default)]
struct Expect {
    replies: u64,
    deliveries: u64,
}

/// When a sender's sends are due, relative to the run's base instant: its readers use it
/// too, to time the reply to send `j`.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    start: Duration,
    interval: Duration,
}

impl Schedule {
    fn due(&self, j: u64) -> Duration {
        self.start + self.interval.mul_f64(j as f64)
    }
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    ack_us: Vec<u64>,
    delivery_us: Vec<u64>,
    rejected: u64,
    duplicates: u64,
    /// When the last reply came, in µs since the run's base.
    last_ack_us: u64,
    disconnected: bool,
}

/// Everything the connections saw, merged.
struct Totals {
    ack_us: Histogram<u64>,
    delivery_us: Histogram<u64>,
    rejected: u64,
    duplicates: u64,
    disconnected: u64,
    last_ack_us: u64,
}

impl Totals {
    fn new() -> Self {
        Self {
            ack_us: latency_histogram(),
            delivery_us: latency_histogram(),
            rejected: 0,
            duplicates: 0,
            disconnected: 0,
            last_ack_us: 0,
        }
    }

    fn add(&mut self, seen: Seen) -> Result<()> {
        for &us in &seen.ack_us {
            self.ack_us.record(us.max(1))?;
        }
        for &us in &seen.delivery_us {
            self.delivery_us.record(us.max(1))?;
        }
        self.rejected += seen.rejected;
        self.duplicates += seen.duplicates;
        self.disconnected += u64::from(seen.disconnected);
        self.last_ack_us = self.last_ack_us.max(seen.last_ack_us);
        Ok(())
    }
}

/// The server under test and how to reach each channel on it.
struct Setup {
    server: Option<Server>,
    target: net::Target,
    /// Per user, confab's bearer token (empty for peers).
    tokens: Vec<String>,
    /// Per channel, what the wire calls it: confab's channel id or a fresh peer name.
    channel_names: Vec<String>,
    /// How the time went, for the notes.
    took: String,
}

/// Runs the scenario against a fresh confab or a running peer.
pub async fn run(params: ManyChannelsBench) -> Result<Report> {
    let users = params.users.max(1);
    if params.members == 0 || params.members > users {
        return Err(format!(
            "--members {} must be between 1 and --users {users}",
            params.members
        )
        .into());
    }
    let plan = Plan::draw(
        params.channels,
        params.members,
        users,
        params.rate,
        params.duration,
    );
    plan.check_rate(params.rate)?;
    let wire = params.peer.map_or(Wire::Confab, Peer::wire);
    let connections = plan.connections(wire);
    let in_process = params.peer.is_none() && params.server_bin.is_none();
    net::check_open_files(connections, in_process)?;

    let setup_started = Instant::now();
    let setup = match params.peer {
        None => confab_setup(&params, &plan).await?,
        Some(peer) => peer_setup(&params, peer, &plan)?,
    };
    let names_of = Arc::new(setup.names_of(&plan));
    let joined = join_all(wire, &setup, Arc::clone(&names_of)).await?;
    let setup_took = setup_started.elapsed();

    let measured = measure(wire, &plan, &names_of, joined, params.drain).await?;
    if let Some(server) = setup.server {
        server.stop().await;
    }
    let setup_note = format!(
        "setup {:.1} s ({}{connections} connections{})",
        setup_took.as_secs_f64(),
        setup.took,
        if wire.multiplexes_channels() {
            ""
        } else {
            ": one per user and channel"
        }
    );
    Ok(report(&params, wire, &plan, &measured, setup_note))
}

impl Setup {
    /// Per user, the names of its channels in the plan's order.
    fn names_of(&self, plan: &Plan) -> Vec<Vec<String>> {
        plan.channels_of
            .iter()
            .map(|mine| {
                mine.iter()
                    .map(|&k| self.channel_names[k].clone())
                    .collect()
            })
            .collect()
    }
}

/// A fresh `confab dev`, a team of `users`, and the plan's channels with their members,
/// made over REST: the first member creates each channel and adds the rest.
async fn confab_setup(params: &ManyChannelsBench, plan: &Plan) -> Result<Setup> {
    let started = Instant::now();
    let (server, target) = Server::start(params.server_bin.as_deref()).await?;
    let sessions = Arc::new(net::team_with_users(&target, plan.channels_of.len()).await?);
    let users_took = started.elapsed();
    let membership = Arc::new(plan.membership.clone());
    let channel_ids = net::for_each_indexed(&target, membership.len(), 8, {
        let (sessions, membership) = (Arc::clone(&sessions), Arc::clone(&membership));
        move |mut http, k| {
            let (sessions, membership) = (Arc::clone(&sessions), Arc::clone(&membership));
            async move {
                let result = async {
                    let creator = &sessions[membership[k][0]];
                    let id = net::create_channel(&mut http, creator, &format!("mc{k}")).await?;
                    let others: Vec<String> = membership[k][1..]
                        .iter()
                        .map(|&u| sessions[u].user_id.clone())
                        .collect();
                    net::add_members(&mut http, creator, &id, &others).await?;
                    Ok(id)
                }
                .await;
                (http, result)
            }
        }
    })
    .await?;
    let channels_took = started.elapsed() - users_took;
    Ok(Setup {
        server: Some(server),
        target,
        tokens: sessions.iter().map(|s| s.token.clone()).collect(),
        channel_names: channel_ids,
        took: format!(
            "users {:.1} s, channels {:.1} s, ",
            users_took.as_secs_f64(),
            channels_took.as_secs_f64()
        ),
    })
}

/// A running peer and fresh channel names, so no buffer from an earlier run (nchan and
/// centrifuge keep history) is replayed into this one.
fn peer_setup(params: &ManyChannelsBench, peer: Peer, plan: &Plan) -> Result<Setup> {
    let run = std::process::id();
    Ok(Setup {
        server: None,
        target: peer.target(&params.peers_dir)?,
        tokens: vec![String::new(); plan.channels_of.len()],
        channel_names: (0..plan.membership.len())
            .map(|k| format!("mc{run}x{k}"))
            .collect(),
        took: String::new(),
    })
}

/// Every user's connections, joined to all its channels before the first send so no
/// member misses messages by arriving late.
async fn join_all(
    wire: Wire,
    setup: &Setup,
    names_of: Arc<Vec<Vec<String>>>,
) -> Result<Vec<Vec<net::Rtm>>> {
    let tokens = Arc::new(setup.tokens.clone());
    let target = setup.target.clone();
    net::map_indexed(tokens.len(), 32, move |u| {
        let (tokens, names_of, target) =
            (Arc::clone(&tokens), Arc::clone(&names_of), target.clone());
        async move { wire.join_many(&target, u, &tokens[u], &names_of[u]).await }
    })
    .await
}

/// What the sending and reading measured.
struct Measured {
    sent: u64,
    totals: Totals,
    /// From the first due send to the last reply (to the last send without replies).
    elapsed: Duration,
}

/// A user's write halves, one per connection.
type Sinks = Vec<SplitSink<net::Rtm, WsMessage>>;

/// Sends the plan over the joined connections and reads every connection until it has
/// what it expects or the drain time after the last send is over.
async fn measure(
    wire: Wire,
    plan: &Plan,
    names_of: &[Vec<String>],
    joined: Vec<Vec<net::Rtm>>,
    drain: Duration,
) -> Result<Measured> {
    let interval = Duration::from_secs_f64(1.0 / plan.per_sender_rate.max(0.001));
    // Stagger senders so their ticks interleave instead of landing together.
    let senders = plan.senders.len() as f64;
    let schedules: Vec<Schedule> = (0..plan.senders.len())
        .map(|s| Schedule {
            start: interval.mul_f64(s as f64 / senders),
            interval,
        })
        .collect();
    // Sends are due from `base` on; spawning the readers after it takes microseconds.
    let base = Instant::now();
    let (done_tx, done) = watch::channel(false);
    let template = Reader {
        wire,
        expect: Expect::default(),
        schedule: None,
        base,
        done,
        drain,
    };
    let (readers, mut sinks_of) = spawn_readers(&template, plan, &schedules, joined);

    let mut sending = Vec::with_capacity(plan.senders.len());
    for (s, (&u, sends)) in plan.senders.iter().zip(&plan.sends).enumerate() {
        let sender = Sender {
            wire,
            user: u,
            sinks: std::mem::take(&mut sinks_of[u]),
            channels: names_of[u].clone(),
            schedule: schedules[s],
            base,
        };
        sending.push(tokio::spawn(sender.send_all(sends.clone())));
    }
    let mut sent = 0u64;
    let mut held = Vec::with_capacity(sending.len());
    for task in sending {
        let (sinks, count) = task.await?;
        sent += count;
        held.push(sinks);
    }
    let sending_took = base.elapsed();
    let _ = done_tx.send(true);

    let mut totals = Totals::new();
    for reader in readers {
        totals.add(reader.await?)?;
    }
    // The write halves stay alive until every reader is done, as the connections must.
    drop((held, sinks_of));
    // Sending ends with the last reply; without any, with the last send.
    let elapsed = if totals.ack_us.is_empty() {
        sending_took
    } else {
        Duration::from_micros(totals.last_ack_us)
    };
    Ok(Measured {
        sent,
        totals,
        elapsed,
    })
}

/// Splits every connection and starts reading it, each reader a copy of `template` told
/// what its connection expects and (for a sender's) when its user's sends are due.
/// Returns the readers and each user's write halves.
fn spawn_readers(
    template: &Reader,
    plan: &Plan,
    schedules: &[Schedule],
    joined: Vec<Vec<net::Rtm>>,
) -> (Vec<tokio::task::JoinHandle<Seen>>, Vec<Sinks>) {
    let per_channel = plan.sends_per_channel();
    let mut readers = Vec::new();
    let mut sinks_of = Vec::with_capacity(joined.len());
    for (u, connections) in joined.into_iter().enumerate() {
        let schedule = plan.senders.binary_search(&u).ok().map(|s| schedules[s]);
        let expect = plan.expectations(template.wire, u, &per_channel);
        let mut sinks = Vec::with_capacity(connections.len());
        for (ws, expect) in connections.into_iter().zip(expect) {
            let (sink, stream) = ws.split();
            sinks.push(sink);
            let reader = Reader {
                expect,
                schedule,
                ..template.clone()
            };
            readers.push(tokio::spawn(reader.read(stream)));
        }
        sinks_of.push(sinks);
    }
    (readers, sinks_of)
}

/// One sending user: its connections' write halves and its channels' names, in the
/// plan's order.
struct Sender {
    wire: Wire,
    user: usize,
    sinks: Sinks,
    channels: Vec<String>,
    schedule: Schedule,
    base: Instant,
}

impl Sender {
    /// Sends to the channel at each position of `sends`, each at its due instant; returns
    /// the sinks (to keep the connections open) and how many went out.
    async fn send_all(mut self, sends: Vec<usize>) -> (Sinks, u64) {
        let mut sent = 0u64;
        for (j, position) in (0u64..).zip(sends) {
            let due = self.schedule.due(j);
            tokio::time::sleep_until((self.base + due).into()).await;
            let text = Payload {
                sender: self.user as u64,
                seq: j,
                sent_us: due.as_micros() as u64,
            }
            .text();
            let client_msg_id = format!("mc{}-{j}", self.user);
            let frame = self
                .wire
                .publish(&self.channels[position], j + 1, &client_msg_id, &text);
            let sink = &mut self.sinks[self.wire.sending_connection(position)];
            if sink.send(frame).await.is_err() {
                break;
            }
            sent += 1;
        }
        (self.sinks, sent)
    }
}

/// One connection's receive side.
#[derive(Clone)]
struct Reader {
    wire: Wire,
    expect: Expect,
    /// When its user's sends were due (none: the user sends nothing).
    schedule: Option<Schedule>,
    base: Instant,
    done: watch::Receiver<bool>,
    drain: Duration,
}

impl Reader {
    /// Reads replies to its user's sends (latency from the send's due instant) and
    /// deliveries of its channels' messages (latency from the instant in their text).
    /// Ends when it has everything it expects, or `drain` after the last send.
    async fn read(mut self, mut stream: SplitStream<net::Rtm>) -> Seen {
        let mut seen = Seen::default();
        let mut unique: HashSet<(u64, u64)> = HashSet::new();
        let mut replies = 0u64;
        let mut decoder = self.wire.decoder();
        let mut events = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        while replies < self.expect.replies || (unique.len() as u64) < self.expect.deliveries {
            let sleep = net::sleep_until_or_never(deadline);
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(frame)) => {
                        let now_us = self.base.elapsed().as_micros() as u64;
                        decoder.feed(&frame, &mut events);
                        for event in events.drain(..) {
                            replies += self.record(event, now_us, &mut seen, &mut unique);
                        }
                    }
                    Some(Err(_)) | None => {
                        seen.disconnected = true;
                        break;
                    }
                },
                changed = self.done.changed(), if deadline.is_none() => {
                    if changed.is_err() || *self.done.borrow() {
                        deadline = Some(tokio::time::Instant::now() + self.drain);
                    }
                }
                () = sleep => break,
            }
        }
        seen
    }

    /// Records one event; returns how many replies to this connection's sends it was.
    fn record(
        &self,
        event: Event,
        now_us: u64,
        seen: &mut Seen,
        unique: &mut HashSet<(u64, u64)>,
    ) -> u64 {
        match event {
            Event::Ack(seq) => {
                // `seq` numbers sends from 1; the schedule from 0.
                let Some(due) = self.schedule.map(|s| s.due(seq.saturating_sub(1))) else {
                    return 0;
                };
                seen.ack_us
                    .push(now_us.saturating_sub(due.as_micros() as u64));
                seen.last_ack_us = now_us;
                1
            }
            Event::Reject(seq) => {
                seen.rejected += 1;
                u64::from(seq.is_some())
            }
            Event::Message(text) => {
                if let Some(payload) = Payload::parse(&text) {
                    if unique.insert((payload.sender, payload.seq)) {
                        seen.delivery_us.push(payload.latency_us(now_us));
                    } else {
                        seen.duplicates += 1;
                    }
                }
                0
            }
        }
    }
}

/// The scenario's name for `peer` (none: confab), as fanout names its targets.
fn scenario(peer: Option<Peer>) -> &'static str {
    match peer {
        None => "many-channels",
        Some(Peer::Centrifuge) => "many-channels (centrifuge)",
        Some(Peer::Nchan) => "many-channels (nchan)",
        Some(Peer::Nats) => "many-channels (nats)",
        Some(Peer::Mosquitto) => "many-channels (mosquitto)",
    }
}

/// The report: acknowledged sends and their latency where the server replies to sends,
/// else the sends untimed; deliveries the same way for every server.
fn report(
    params: &ManyChannelsBench,
    wire: Wire,
    plan: &Plan,
    measured: &Measured,
    setup_note: String,
) -> Report {
    let totals = &measured.totals;
    let acknowledged = wire.acknowledges_sends();
    let (operations, latency_us) = if acknowledged {
        (totals.ack_us.len(), totals.ack_us.clone())
    } else {
        (measured.sent, latency_histogram())
    };
    let mut notes = vec![
        format!(
            "{} channels × {} members of {} users, {} senders at {:.1}/s each for {:?}",
            plan.membership.len(),
            params.members,
            plan.channels_of.len(),
            plan.senders.len(),
            plan.per_sender_rate,
            params.duration
        ),
        sends_note(params.rate, wire, measured),
    ];
    notes.extend(ack_meaning(params.peer));
    // Every member gets every accepted message: acknowledged ones, or all sent where
    // nothing is acknowledged.
    let accepted = if acknowledged {
        operations
    } else {
        measured.sent
    };
    notes.push(deliveries_note(accepted * params.members as u64, totals));
    notes.push(setup_note);
    Report {
        scenario: scenario(params.peer),
        operations,
        elapsed: measured.elapsed,
        latency_us,
        notes,
    }
}

/// Offered and achieved rate, sends, acknowledgements and refusals.
fn sends_note(rate: f64, wire: Wire, measured: &Measured) -> String {
    let totals = &measured.totals;
    let per_second = |n: u64| n as f64 / measured.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    if wire.acknowledges_sends() {
        let acked = totals.ack_us.len();
        format!(
            "offered {rate:.0} msg/s, achieved {:.0} acked/s; sent {}, acked {acked}, \
             rejected {}",
            per_second(acked),
            measured.sent,
            totals.rejected
        )
    } else {
        format!(
            "offered {rate:.0} msg/s, achieved {:.0} sent/s; sent {}, acked n/a (no replies \
             to sends: operations are sends, no ack latency), rejected {}",
            per_second(measured.sent),
            measured.sent,
            totals.rejected
        )
    }
}

/// What an acknowledgement promises, for the servers that send one.
fn ack_meaning(peer: Option<Peer>) -> Option<String> {
    match peer {
        None => Some("acks: durable (stored and fsynced before the reply)".to_owned()),
        Some(Peer::Centrifuge) => Some(
            "acks: centrifuge's publish replies, not durable (memory engine, nothing on disk)"
                .to_owned(),
        ),
        Some(_) => None,
    }
}

/// Losses, duplicates and delivery latency, computed alike for every server.
fn deliveries_note(expected: u64, totals: &Totals) -> String {
    let ms = |q: f64| totals.delivery_us.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "lost {} of {expected} deliveries, {} duplicates, {} disconnected; delivery p50 \
         {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
        expected.saturating_sub(totals.delivery_us.len()),
        totals.duplicates,
        totals.disconnected,
        ms(0.5),
        ms(0.99),
        ms(0.999)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::draw(20, 3, 12, 100.0, Duration::from_secs(1))
    }

    #[test]
    fn the_plan_is_the_same_every_time() {
        let (a, b) = (plan(), plan());
        assert_eq!(a.membership, b.membership);
        assert_eq!(a.sends, b.sends);
        assert!(a.membership.iter().all(|m| m.len() == 3));
    }

    #[test]
    fn every_delivery_is_expected_once_whatever_the_connections() {
        let plan = plan();
        let per_channel = plan.sends_per_channel();
        let sends: u64 = plan.sends.iter().map(|s| s.len() as u64).sum();
        for wire in [Wire::Confab, Wire::Centrifuge, Wire::Nchan, Wire::Nats] {
            let expect: Vec<Expect> = (0..plan.channels_of.len())
                .flat_map(|u| plan.expectations(wire, u, &per_channel))
                .collect();
            let deliveries: u64 = expect.iter().map(|e| e.deliveries).sum();
            let replies: u64 = expect.iter().map(|e| e.replies).sum();
            assert_eq!(deliveries, sends * 3, "{wire:?}");
            let acked = if wire.acknowledges_sends() { sends } else { 0 };
            assert_eq!(replies, acked, "{wire:?}");
        }
    }

    #[test]
    fn nchan_holds_one_connection_per_user_and_channel() {
        let plan = plan();
        let per_channel = plan.sends_per_channel();
        for u in 0..plan.channels_of.len() {
            let count = plan.expectations(Wire::Nchan, u, &per_channel).len();
            assert_eq!(count, plan.channels_of[u].len());
            assert_eq!(plan.expectations(Wire::Nats, u, &per_channel).len(), 1);
        }
    }
}
