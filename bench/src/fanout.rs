//! The `fanout` scenario: one channel, N members each on its own WSS connection, S of them
//! sending messages at a fixed total rate. Measures send → receive latency at every
//! member, delivered messages/s, and whether every member got every sent message. The
//! same generator drives confab, the bare ceiling server and every peer server through
//! [`crate::wire`].

use crate::ceiling::CeilingServer;
use crate::net::{self, MAX_RATE_PER_SENDER, Result, Server};
use crate::payload::Payload;
use crate::peers::Peer;
use crate::wire::{Event, Wire};
use crate::{Report, latency_histogram};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Parameters of the fanout scenario.
#[derive(Clone, Debug)]
pub struct FanoutBench {
    /// Channel members, each one connection (senders included).
    pub members: usize,
    pub senders: usize,
    /// Messages per second over all senders.
    pub rate: f64,
    pub duration: Duration,
    /// How long members may still receive after the last send before the rest is lost.
    pub drain: Duration,
    pub server_bin: Option<PathBuf>,
    pub target: FanoutTarget,
    /// Where `bench/peers/peers.sh` keeps the peers' CA (for [`FanoutTarget::Peer`]).
    pub peers_dir: PathBuf,
}

/// What the generator drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanoutTarget {
    /// `confab dev`: a team, users, a channel, RTM with durable, ordered sends.
    Confab,
    /// The bare broadcast server of [`crate::ceiling`]: the same wire, none of the work.
    Ceiling,
    /// A peer server already running (started by `bench/peers/peers.sh`).
    Peer(Peer),
}

impl FanoutTarget {
    /// `confab`, `ceiling` or a peer's name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "confab" => Some(Self::Confab),
            "ceiling" => Some(Self::Ceiling),
            peer => Peer::from_name(peer).map(Self::Peer),
        }
    }

    fn wire(self) -> Wire {
        match self {
            Self::Confab | Self::Ceiling => Wire::Confab,
            Self::Peer(peer) => peer.wire(),
        }
    }

    fn scenario(self) -> &'static str {
        match self {
            Self::Confab => "fanout",
            Self::Ceiling => "fanout (ceiling)",
            Self::Peer(Peer::Centrifuge) => "fanout (centrifuge)",
            Self::Peer(Peer::Nchan) => "fanout (nchan)",
            Self::Peer(Peer::Nats) => "fanout (nats)",
            Self::Peer(Peer::Mosquitto) => "fanout (mosquitto)",
        }
    }

    /// The scenario name of a [`crate::search`] over this target.
    pub fn search_scenario(self) -> &'static str {
        match self {
            Self::Confab => "fanout-search",
            Self::Ceiling => "fanout-search (ceiling)",
            Self::Peer(Peer::Centrifuge) => "fanout-search (centrifuge)",
            Self::Peer(Peer::Nchan) => "fanout-search (nchan)",
            Self::Peer(Peer::Nats) => "fanout-search (nats)",
            Self::Peer(Peer::Mosquitto) => "fanout-search (mosquitto)",
        }
    }
}

/// The server under test, stopped after the run (a peer keeps running: its script owns it).
enum Running {
    Confab(Server),
    Ceiling(CeilingServer),
    Peer,
}

/// What one member saw.
struct Received {
    latency_us: Histogram<u64>,
    /// Per sender, which message numbers arrived.
    seen: Vec<Vec<bool>>,
    duplicates: u64,
    disconnected: bool,
}

/// A fanout run: its report and the counts a load search judges it by.
#[derive(Debug)]
pub struct Fanout {
    pub report: Report,
    /// Deliveries that never arrived (sent × members − received).
    pub lost: u64,
    pub duplicates: u64,
    pub disconnected: u64,
    /// Sends the server refused.
    pub rejected: u64,
}

/// Runs the scenario against a fresh server.
pub async fn run(params: FanoutBench) -> Result<Report> {
    Ok(measure(params).await?.report)
}

/// Runs the scenario against a fresh server and keeps the counts apart from the report.
pub async fn measure(params: FanoutBench) -> Result<Fanout> {
    let senders = params.senders.clamp(1, params.members.max(1));
    let per_sender_rate = params.rate / senders as f64;
    if per_sender_rate > MAX_RATE_PER_SENDER {
        return Err(format!(
            "{per_sender_rate:.0} msg/s per sender exceeds the edge's RTM rate limit of \
             {MAX_RATE_PER_SENDER}/s; add --senders"
        )
        .into());
    }
    let setup_started = Instant::now();
    let (server, target, tokens, channel) = match params.target {
        FanoutTarget::Confab => {
            let (server, target) = Server::start(params.server_bin.as_deref()).await?;
            let (tokens, channel) = confab_setup(&target, params.members).await?;
            (Running::Confab(server), target, tokens, channel)
        }
        FanoutTarget::Ceiling => {
            let (server, target) = CeilingServer::start().await?;
            let tokens = vec![String::new(); params.members];
            (
                Running::Ceiling(server),
                target,
                tokens,
                "bench".to_string(),
            )
        }
        FanoutTarget::Peer(peer) => {
            let target = peer.target(&params.peers_dir)?;
            // A fresh channel name per run, so a peer's buffer from an earlier run (nchan,
            // centrifuge keep history) is never replayed into this one.
            let channel = format!("bench{}", std::process::id());
            (
                Running::Peer,
                target,
                vec![String::new(); params.members],
                channel,
            )
        }
    };
    let wire = params.target.wire();

    // Join everyone before the first send so no member misses messages by arriving late.
    let tokens = Arc::new(tokens);
    let connections = net::map_indexed(tokens.len(), 32, {
        let (tokens, target, channel) = (Arc::clone(&tokens), target.clone(), channel.clone());
        move |i| {
            let (tokens, target, channel) = (Arc::clone(&tokens), target.clone(), channel.clone());
            async move { wire.join(&target, i, &tokens[i], &channel).await }
        }
    })
    .await?;
    let setup = setup_started.elapsed();

    // Instants are embedded as microseconds since `base`; sender and receivers share this
    // process's monotonic clock, so no clock sync is involved.
    let base = Instant::now();
    let (total_tx, total_rx) = watch::channel(None::<u64>);
    let acked = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut sinks = Vec::new();
    for (i, ws) in connections.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        // Senders' sinks go to the sending tasks; the others stay with their reader,
        // because dropping a sink half would be a needless change of the connection.
        let keep = if i < senders {
            sinks.push(sink);
            None
        } else {
            Some(sink)
        };
        readers.push(tokio::spawn(read_member(
            stream,
            wire,
            keep,
            base,
            senders,
            total_rx.clone(),
            params.drain,
            Arc::clone(&rejected),
        )));
    }

    let per_sender = (per_sender_rate * params.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / per_sender_rate.max(0.001));
    let send_started = Instant::now();
    let mut sending = Vec::new();
    for (s, mut sink) in sinks.into_iter().enumerate() {
        let channel = channel.clone();
        // Stagger senders so their ticks interleave instead of landing together.
        let start = send_started + interval.mul_f64(s as f64 / senders as f64);
        sending.push(tokio::spawn(async move {
            for j in 0..per_sender {
                // The intended instant, not the actual one: a sender delayed by a slow
                // server must not hide that delay (coordinated omission).
                let due = start + interval.mul_f64(j as f64);
                tokio::time::sleep_until(due.into()).await;
                let text = Payload {
                    sender: s as u64,
                    seq: j,
                    sent_us: due.duration_since(base).as_micros() as u64,
                }
                .text();
                let frame = wire.publish(&channel, j + 1, &format!("b{s}-{j}"), &text);
                if sink.send(frame).await.is_err() {
                    return (sink, j);
                }
            }
            (sink, per_sender)
        }));
    }
    let mut sent_by = Vec::new();
    let mut sinks = Vec::new();
    for task in sending {
        let (sink, count) = task.await?;
        sent_by.push(count);
        sinks.push(sink);
    }
    let sent: u64 = sent_by.iter().sum();
    // Every send is answered (ok or error) on the sender's own connection; the readers
    // count the ok replies in `acked`. Expect each acknowledged message at every member.
    let _ = total_tx.send(Some(sent));
    let mut latency_us = latency_histogram();
    let (mut delivered, mut lost, mut duplicates, mut disconnected) = (0u64, 0u64, 0u64, 0u64);
    let mut outcomes = Vec::new();
    for reader in readers {
        outcomes.push(reader.await?);
    }
    let elapsed = send_started.elapsed();
    drop(sinks);
    for (received, acks) in outcomes {
        acked.fetch_add(acks, Ordering::Relaxed);
        latency_us.add(&received.latency_us)?;
        delivered += received.latency_us.len();
        duplicates += received.duplicates;
        disconnected += u64::from(received.disconnected);
        for (s, seen) in received.seen.iter().enumerate() {
            let expected = sent_by[s];
            let got = seen.iter().take(expected as usize).filter(|x| **x).count() as u64;
            lost += expected.saturating_sub(got);
        }
    }
    match server {
        Running::Confab(server) => server.stop().await,
        Running::Ceiling(server) => server.stop(),
        Running::Peer => {}
    }
    let members = params.members as u64;
    let rejected = rejected.load(Ordering::Relaxed);
    let acked = if wire.acknowledges_sends() {
        acked.load(Ordering::Relaxed).to_string()
    } else {
        "n/a (no replies to sends)".to_string()
    };
    let report = Report {
        scenario: params.target.scenario(),
        operations: delivered,
        elapsed,
        latency_us,
        notes: vec![
            format!(
                "{members} members, {senders} senders, {:.0} msg/s for {:?}",
                params.rate, params.duration
            ),
            format!("sent {sent}, acked {acked}, rejected {rejected}"),
            format!(
                "lost {lost} of {} deliveries, {duplicates} duplicates, {disconnected} disconnected",
                sent * members
            ),
            format!("setup {:.1} s", setup.as_secs_f64()),
        ],
    };
    Ok(Fanout {
        report,
        lost,
        duplicates,
        disconnected,
        rejected,
    })
}

/// A team of `members` users (the admin first) in one channel; their tokens and the
/// channel id.
async fn confab_setup(target: &net::Target, members: usize) -> Result<(Vec<String>, String)> {
    let admin = net::create_team(target).await?;
    let users = net::create_users(target, &admin, members.saturating_sub(1), 8).await?;
    let (ids, emails): (Vec<String>, Vec<String>) = users.into_iter().unzip();
    let mut sessions = vec![admin.clone()];
    sessions.extend(net::login_all(target, &admin.domain, emails, 8).await?);
    let mut http = net::Http::connect(target).await?;
    let channel = net::create_channel(&mut http, &admin, "fanout").await?;
    net::add_members(&mut http, &admin, &channel, &ids).await?;
    Ok((sessions.into_iter().map(|s| s.token).collect(), channel))
}

/// One member's receive loop: records latency of every message, counts ok replies to its
/// own sends, and ends when it has everything or the drain time is over.
#[allow(clippy::too_many_arguments)]
async fn read_member(
    mut stream: futures::stream::SplitStream<net::Rtm>,
    wire: Wire,
    _keep: Option<futures::stream::SplitSink<net::Rtm, WsMessage>>,
    base: Instant,
    senders: usize,
    mut total: watch::Receiver<Option<u64>>,
    drain: Duration,
    rejected: Arc<AtomicU64>,
) -> (Received, u64) {
    let mut received = Received {
        latency_us: latency_histogram(),
        seen: vec![Vec::new(); senders],
        duplicates: 0,
        disconnected: false,
    };
    let mut acks = 0u64;
    let mut decoder = wire.decoder();
    let mut events = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut expected: Option<u64> = None;
    loop {
        let unique: u64 = received.latency_us.len();
        if expected.is_some_and(|e| unique >= e) {
            break;
        }
        let sleep = net::sleep_until_or_never(deadline);
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(frame)) => {
                    let now_us = base.elapsed().as_micros() as u64;
                    decoder.feed(&frame, &mut events);
                    for event in events.drain(..) {
                        match event {
                            Event::Ack(_) => acks += 1,
                            Event::Reject(_) => {
                                rejected.fetch_add(1, Ordering::Relaxed);
                            }
                            Event::Message(text) => record(&mut received, &text, now_us),
                        }
                    }
                }
                Some(Err(_)) | None => {
                    received.disconnected = true;
                    break;
                }
            },
            changed = total.changed(), if expected.is_none() => {
                if changed.is_err() {
                    break;
                }
                if let Some(sent) = *total.borrow() {
                    // `unique` counts distinct arrivals, so duplicates cannot end it early.
                    expected = Some(sent);
                    deadline = Some(tokio::time::Instant::now() + drain);
                }
            }
            () = sleep => break,
        }
    }
    (received, acks)
}

/// Records one arrival of a generator message (anything else is ignored).
fn record(received: &mut Received, text: &str, now_us: u64) {
    let Some(payload) = Payload::parse(text) else {
        return;
    };
    let (Ok(s), Ok(j)) = (
        usize::try_from(payload.sender),
        usize::try_from(payload.seq),
    ) else {
        return;
    };
    let Some(seen) = received.seen.get_mut(s) else {
        return;
    };
    if seen.len() <= j {
        seen.resize(j + 1, false);
    }
    if seen[j] {
        received.duplicates += 1;
        return;
    }
    seen[j] = true;
    let _ = received.latency_us.record(payload.latency_us(now_us));
}
