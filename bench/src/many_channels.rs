//! The `many-channels` scenario: the shape of a real team — many small channels rather
//! than one big one. `channels` channels of `members` users each, drawn from `users`
//! users who are each on one RTM connection; every user with a channel sends RTM
//! `message`s to random channels of theirs, together at a fixed `rate`. Each send is
//! durable before its reply (the store fsyncs, with group commit across channels), so the
//! send → reply latency is what a user waits for the tick on their message; it is measured
//! from the intended send instant, so a slow server cannot hide it (coordinated omission).
//! Also counted: every member's delivery of every acknowledged message, and its latency.

use crate::net::{self, MAX_RATE_PER_SENDER, Result, Rng, Server};
use crate::{Report, latency_histogram};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
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
    /// Users the members are drawn from, each one connection.
    pub users: usize,
    /// Messages per second over all senders.
    pub rate: f64,
    pub duration: Duration,
    /// How long connections may still receive after the last send.
    pub drain: Duration,
    pub server_bin: Option<PathBuf>,
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

/// How many replies and deliveries a connection waits for.
#[derive(Clone, Copy, Default)]
struct Expect {
    replies: u64,
    deliveries: u64,
}

/// Runs the scenario against a fresh server.
pub async fn run(params: ManyChannelsBench) -> Result<Report> {
    let users = params.users.max(1);
    if params.members == 0 || params.members > users {
        return Err(format!(
            "--members {} must be between 1 and --users {users}",
            params.members
        )
        .into());
    }
    net::check_open_files(users, params.server_bin.is_none())?;

    // Who is in which channel: fixed seeds, so runs are comparable.
    let mut rng = Rng::new(0x5eed_00c4);
    let membership: Vec<Vec<usize>> = (0..params.channels.max(1))
        .map(|_| rng.distinct(users, params.members, None))
        .collect();
    let mut channels_of: Vec<Vec<usize>> = vec![Vec::new(); users];
    for (k, members) in membership.iter().enumerate() {
        for &u in members {
            channels_of[u].push(k);
        }
    }
    let senders: Vec<usize> = (0..users).filter(|&u| !channels_of[u].is_empty()).collect();
    let per_sender_rate = params.rate / senders.len() as f64;
    if per_sender_rate > MAX_RATE_PER_SENDER {
        return Err(format!(
            "{:.0} msg/s over {} senders is {per_sender_rate:.0}/s each, above the edge's RTM \
             rate limit of {MAX_RATE_PER_SENDER}/s per connection; add --users",
            params.rate,
            senders.len()
        )
        .into());
    }
    // Every send planned up front, so each connection knows what to wait for.
    let per_sender = (per_sender_rate * params.duration.as_secs_f64()).round() as usize;
    let mut expect = vec![Expect::default(); users];
    let plans: Vec<Vec<usize>> = senders
        .iter()
        .map(|&u| {
            let mut pick = Rng::new(0x5eed_0000 + u as u64);
            let mine = &channels_of[u];
            let plan: Vec<usize> = (0..per_sender)
                .map(|_| mine[pick.below(mine.len() as u64) as usize])
                .collect();
            expect[u].replies = plan.len() as u64;
            for &k in &plan {
                for &m in &membership[k] {
                    expect[m].deliveries += 1;
                }
            }
            plan
        })
        .collect();

    let setup_started = Instant::now();
    let (server, target) = Server::start(params.server_bin.as_deref()).await?;
    let sessions = Arc::new(net::team_with_users(&target, users).await?);
    let users_took = setup_started.elapsed();
    let membership = Arc::new(membership);
    let channel_ids = net::for_each_indexed(&target, membership.len(), 8, {
        let (sessions, membership) = (Arc::clone(&sessions), Arc::clone(&membership));
        move |mut http, k| {
            let (sessions, membership) = (Arc::clone(&sessions), Arc::clone(&membership));
            async move {
                // The first member creates the channel and adds the rest in one request.
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
    let channels_took = setup_started.elapsed() - users_took;

    let connections = net::for_each_indexed(&target, users, 32, {
        let (sessions, target) = (Arc::clone(&sessions), target.clone());
        move |http, i| {
            let (sessions, target) = (Arc::clone(&sessions), target.clone());
            async move { (http, net::connect_rtm(&target, &sessions[i].token).await) }
        }
    })
    .await?;
    let setup = setup_started.elapsed();

    let base = Instant::now();
    let (done_tx, done_rx) = watch::channel(false);
    let mut readers = Vec::with_capacity(users);
    let mut sinks: Vec<Option<SplitSink<net::Rtm, WsMessage>>> = Vec::with_capacity(users);
    for (u, ws) in connections.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        sinks.push(Some(sink));
        readers.push(tokio::spawn(read_member(
            stream,
            expect[u],
            base,
            done_rx.clone(),
            params.drain,
        )));
    }

    let interval = Duration::from_secs_f64(1.0 / per_sender_rate.max(0.001));
    let send_started = Instant::now();
    let mut sending = Vec::with_capacity(senders.len());
    for (s, (&u, plan)) in senders.iter().zip(plans).enumerate() {
        let mut sink = sinks[u].take().expect("one sink per user");
        let channel_ids: Vec<String> = plan.iter().map(|&k| channel_ids[k].clone()).collect();
        // Stagger senders so their ticks interleave instead of landing together.
        let start = send_started + interval.mul_f64(s as f64 / senders.len() as f64);
        sending.push(tokio::spawn(async move {
            let mut sent = 0u64;
            for (j, channel) in channel_ids.iter().enumerate() {
                let due = start + interval.mul_f64(j as f64);
                tokio::time::sleep_until(due.into()).await;
                let sent_us = due.duration_since(base).as_micros() as u64;
                let frame = json!({"id": j + 1, "type": "message", "channel": channel,
                    "text": format!("mc {u} {j} {sent_us}"),
                    "client_msg_id": format!("mc{u}-{j}")});
                if sink.send(WsMessage::text(frame.to_string())).await.is_err() {
                    break;
                }
                sent += 1;
            }
            (sink, sent)
        }));
    }
    let mut sent = 0u64;
    let mut held = Vec::with_capacity(sending.len());
    for task in sending {
        let (sink, count) = task.await?;
        sent += count;
        held.push(sink);
    }
    let _ = done_tx.send(true);

    let (mut ack_us, mut delivery_us) = (latency_histogram(), latency_histogram());
    let (mut rejected, mut duplicates, mut disconnected, mut last_ack_us) = (0, 0, 0, 0);
    for reader in readers {
        let seen = reader.await?;
        for &us in &seen.ack_us {
            ack_us.record(us.max(1))?;
        }
        for &us in &seen.delivery_us {
            delivery_us.record(us.max(1))?;
        }
        rejected += seen.rejected;
        duplicates += seen.duplicates;
        disconnected += u64::from(seen.disconnected);
        last_ack_us = last_ack_us.max(seen.last_ack_us);
    }
    drop((held, sinks));
    server.stop().await;

    let acked = ack_us.len();
    let members = params.members as u64;
    let expected = acked * members;
    let delivered = delivery_us.len();
    // Sending ends with the last reply; without any, the whole wait counts.
    let elapsed =
        match (base + Duration::from_micros(last_ack_us)).checked_duration_since(send_started) {
            Some(elapsed) if acked > 0 => elapsed,
            _ => send_started.elapsed(),
        };
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        scenario: "many-channels",
        operations: acked,
        elapsed,
        latency_us: ack_us,
        notes: vec![
            format!(
                "{} channels × {members} members of {users} users, {} senders at {:.1}/s each \
                 for {:?}",
                membership.len(),
                senders.len(),
                per_sender_rate,
                params.duration
            ),
            format!(
                "offered {:.0} msg/s, achieved {:.0} acked/s; sent {sent}, acked {acked}, \
                 rejected {rejected}",
                params.rate,
                acked as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
            ),
            format!(
                "lost {} of {expected} deliveries, {duplicates} duplicates, {disconnected} \
                 disconnected; delivery p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
                expected.saturating_sub(delivered),
                ms(&delivery_us, 0.5),
                ms(&delivery_us, 0.99),
                ms(&delivery_us, 0.999)
            ),
            format!(
                "setup {:.0} s (users {:.0} s, channels {:.1} s)",
                setup.as_secs_f64(),
                users_took.as_secs_f64(),
                channels_took.as_secs_f64()
            ),
        ],
    })
}

/// One connection's receive loop: replies to its own sends (ack latency from the intended
/// send instant carried in the text) and deliveries of its channels' messages. Ends when
/// it has everything it expects, or `drain` after the last send.
async fn read_member(
    mut stream: SplitStream<net::Rtm>,
    expect: Expect,
    base: Instant,
    mut done: watch::Receiver<bool>,
    drain: Duration,
) -> Seen {
    let mut seen = Seen::default();
    let mut unique: HashSet<(u64, u64)> = HashSet::new();
    let mut replies = 0u64;
    let mut deadline: Option<tokio::time::Instant> = None;
    while replies < expect.replies || (unique.len() as u64) < expect.deliveries {
        let sleep = net::sleep_until_or_never(deadline);
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    let now_us = base.elapsed().as_micros() as u64;
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                    if frame.get("reply_to").is_some() {
                        replies += 1;
                        let text = frame["message"]["text"].as_str().unwrap_or_default();
                        match (frame["ok"] == json!(true), parse(text)) {
                            (true, Some((_, _, sent_us))) => {
                                seen.ack_us.push(now_us.saturating_sub(sent_us));
                                seen.last_ack_us = now_us;
                            }
                            _ => seen.rejected += 1,
                        }
                    } else if frame["type"] == "message"
                        && let Some((u, j, sent_us)) = parse(frame["text"].as_str().unwrap_or_default())
                    {
                        if unique.insert((u, j)) {
                            seen.delivery_us.push(now_us.saturating_sub(sent_us));
                        } else {
                            seen.duplicates += 1;
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    seen.disconnected = true;
                    break;
                }
            },
            changed = done.changed(), if deadline.is_none() => {
                if changed.is_err() || *done.borrow() {
                    deadline = Some(tokio::time::Instant::now() + drain);
                }
            }
            () = sleep => break,
        }
    }
    seen
}

/// Parses `mc U J SENT_US`.
fn parse(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.strip_prefix("mc ")?.split(' ');
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some((next()?, next()?, next()?))
}
