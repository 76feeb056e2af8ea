//! The `presence` scenario: what one status change costs in a big channel (DESIGN.md §7).
//! Every member of one channel is on its own RTM connection and subscribes (`presence_sub`)
//! to the users a client has on screen — message authors and sidebar entries, modelled as
//! `visible` members drawn at random per connection. Then `changes` users each go away and
//! come back (`presence_set` `away`, then `auto`), at a fixed rate, and every connection
//! counts the `presence_change` frames and the user entries in them.
//!
//! The figure of merit is entries delivered per status change against the naive design,
//! which pushes every change to every other member of the channel (members − 1 entries).
//! Entries are checked, not just counted: each subscriber of a changing user must see both
//! transitions (an away and a return may be coalesced into one entry by the edge's flush
//! interval, which is counted apart), and nobody may get entries for users it did not
//! subscribe to. Latency runs from a change's intended send instant to each subscriber's
//! receipt, so it includes the edge's batching delay (at most one flush interval).
//!
//! Subscriptions are per user, not per channel, so the channel's size changes nothing for
//! confab: there is no large-channel threshold in the core or the edge; the bound is
//! `limits::MAX_PRESENCE_IDS` ids per `presence_sub`. Uniformly drawn subscriptions are
//! the kind case: a channel's recent authors are on every viewer's screen, and a change of
//! one of them reaches every member who looks at the channel.

use crate::net::{self, Result, Rng, Server};
use crate::{Report, latency_histogram};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long each changing user stays away: well above the edge's presence flush interval
/// (250 ms), so subscribers normally get the away and the return as two entries.
const HOLD: Duration = Duration::from_secs(1);

/// Between the last connection opening and the first change: connect-time presence (each
/// connection makes its user active) is flushed and ignored meanwhile.
const SETTLE: Duration = Duration::from_secs(1);

/// A connection that has every entry it expects still listens this long after the last
/// scheduled change, so entries nobody expected are counted too.
const QUIET: Duration = Duration::from_millis(750);

/// Idle sessions are kept alive with a `ping` this often: the core hears from a session
/// only on client frames and expires it 75 s after the last heartbeat.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// The longest change schedule: a changer sends nothing before its turn, so its session
/// must not expire (75 s) or idle out (120 s) meanwhile.
const MAX_SCHEDULE: Duration = Duration::from_secs(60);

/// Parameters of the presence scenario.
#[derive(Clone, Debug)]
pub struct PresenceBench {
    /// Channel members, each one connection.
    pub members: usize,
    /// Users each connection subscribes to.
    pub visible: usize,
    /// Users who go away and come back: two status changes each.
    pub changes: usize,
    /// Users going away per second.
    pub rate: f64,
    /// How long connections may still receive after the last scheduled change.
    pub drain: Duration,
    pub server_bin: Option<PathBuf>,
}

/// Both halves of a connection, kept to keep it open.
type Connection = (
    SplitStream<net::Rtm>,
    Option<SplitSink<net::Rtm, WsMessage>>,
);

/// The changes, known to every connection in advance so each can tell what it must see.
struct Schedule {
    /// Changing user id → index into the instants below.
    changer: HashMap<String, usize>,
    /// Intended instants, in µs since the run's base, of each changer's away and return.
    away_us: Vec<u64>,
    back_us: Vec<u64>,
    /// Measurement starts here: earlier entries are connect-time noise.
    start_us: u64,
    end_us: u64,
}

/// What one connection saw during the measurement.
#[derive(Default)]
struct Seen {
    latency_us: Vec<u64>,
    frames: u64,
    entries: u64,
    /// Transitions of subscribed changers: expected, delivered, and returns whose away
    /// was coalesced into them.
    expected: u64,
    delivered: u64,
    coalesced: u64,
    duplicates: u64,
    /// Entries for users this connection did not subscribe to.
    unexpected: u64,
    /// Entries for subscribed users that were not changing (a session expiring, or
    /// connect-time activity arriving late).
    other: u64,
    rejected: u64,
    disconnected: bool,
}

/// Runs the scenario against a fresh server.
pub async fn run(params: PresenceBench) -> Result<Report> {
    let members = params.members.max(2);
    let changes = params.changes.clamp(1, members);
    if params.visible > confab_proto::limits::MAX_PRESENCE_IDS {
        return Err(format!(
            "--visible {} exceeds the {} ids one presence_sub may name",
            params.visible,
            confab_proto::limits::MAX_PRESENCE_IDS
        )
        .into());
    }
    let interval = Duration::from_secs_f64(1.0 / params.rate.max(0.001));
    if interval.mul_f64(changes as f64) > MAX_SCHEDULE {
        return Err(format!(
            "{changes} changes at {}/s take longer than {MAX_SCHEDULE:?}: sessions of \
             changers waiting for their turn would expire; raise --rate",
            params.rate
        )
        .into());
    }
    net::check_open_files(members, params.server_bin.is_none())?;

    let setup_started = Instant::now();
    let (server, target) = Server::start(params.server_bin.as_deref()).await?;
    let sessions = net::team_with_users(&target, members).await?;
    let users_took = setup_started.elapsed();
    let ids: Vec<String> = sessions.iter().map(|s| s.user_id.clone()).collect();
    let mut http = net::Http::connect(&target).await?;
    let channel = net::create_channel(&mut http, &sessions[0], "presence").await?;
    net::add_members(&mut http, &sessions[0], &channel, &ids[1..]).await?;

    // Who is on whose screen, and who changes: fixed seeds, so runs are comparable.
    let mut rng = Rng::new(0x5eed_0007);
    let visible: Vec<Vec<usize>> = (0..members)
        .map(|i| rng.distinct(members, params.visible, Some(i)))
        .collect();
    let changers = rng.distinct(members, changes, None);
    let subscriptions = Arc::new(
        visible
            .iter()
            .map(|v| v.iter().map(|&u| ids[u].clone()).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
    );

    let tokens: Arc<Vec<String>> = Arc::new(sessions.into_iter().map(|s| s.token).collect());
    let connections = net::for_each_indexed(&target, members, 32, {
        let (tokens, subscriptions, target) = (
            Arc::clone(&tokens),
            Arc::clone(&subscriptions),
            target.clone(),
        );
        move |http, i| {
            let (tokens, subscriptions, target) = (
                Arc::clone(&tokens),
                Arc::clone(&subscriptions),
                target.clone(),
            );
            async move {
                let connected = async {
                    let mut ws = net::connect_rtm(&target, &tokens[i]).await?;
                    let sub = json!({"type": "presence_sub", "ids": subscriptions[i]});
                    net::rtm_command(&mut ws, 1, sub).await?;
                    Ok(ws)
                };
                (http, connected.await)
            }
        }
    })
    .await?;
    let setup = setup_started.elapsed();

    let base = Instant::now();
    let start = base + SETTLE;
    let start_us = SETTLE.as_micros() as u64;
    let away_us: Vec<u64> = (0..changes)
        .map(|c| start_us + interval.mul_f64(c as f64).as_micros() as u64)
        .collect();
    let back_us: Vec<u64> = away_us
        .iter()
        .map(|a| a + HOLD.as_micros() as u64)
        .collect();
    let schedule = Arc::new(Schedule {
        changer: changers
            .iter()
            .enumerate()
            .map(|(c, &u)| (ids[u].clone(), c))
            .collect(),
        end_us: back_us.last().copied().unwrap_or(start_us),
        away_us,
        back_us,
        start_us,
    });

    let changer_of: HashMap<usize, usize> =
        changers.iter().enumerate().map(|(c, &u)| (u, c)).collect();
    let mut sinks: Vec<Option<SplitSink<net::Rtm, WsMessage>>> =
        (0..changes).map(|_| None).collect();
    let mut readers = Vec::with_capacity(members);
    for (i, ws) in connections.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        // A changer's sink goes to the scheduler; everyone else keeps theirs for pings.
        let keep = match changer_of.get(&i) {
            Some(&c) => {
                sinks[c] = Some(sink);
                None
            }
            None => Some(sink),
        };
        let subscribed: HashSet<String> = subscriptions[i].iter().cloned().collect();
        readers.push(tokio::spawn(read_presence(
            stream,
            keep,
            subscribed,
            Arc::clone(&schedule),
            base,
            params.drain,
        )));
    }

    // Read once connect-time presence has been flushed, just before the first change.
    tokio::time::sleep_until((start - SETTLE / 4).into()).await;
    let before = presence_counters(&target).await;
    let mut plan: Vec<(u64, usize, &str)> = Vec::with_capacity(2 * changes);
    for c in 0..changes {
        plan.push((schedule.away_us[c], c, "away"));
        plan.push((schedule.back_us[c], c, "auto"));
    }
    plan.sort_unstable();
    let mut sent = 0u64;
    for (due_us, c, setting) in plan {
        // The intended instant is what latency is measured from (coordinated omission).
        tokio::time::sleep_until((base + Duration::from_micros(due_us)).into()).await;
        let id = if setting == "away" { 2 } else { 3 };
        let frame = json!({"id": id, "type": "presence_set", "presence": setting});
        if let Some(sink) = sinks[c].as_mut()
            && sink.send(WsMessage::text(frame.to_string())).await.is_ok()
        {
            sent += 1;
        }
    }
    let elapsed = start.elapsed();

    let mut latency_us = latency_histogram();
    let mut total = Seen::default();
    let mut disconnected = 0u64;
    // Connections stay open until the counters are read: a close makes its user away.
    let mut open = Vec::with_capacity(members);
    for reader in readers {
        let (seen, connection) = reader.await?;
        open.push(connection);
        for &us in &seen.latency_us {
            latency_us.record(us.max(1))?;
        }
        total.frames += seen.frames;
        total.entries += seen.entries;
        total.expected += seen.expected;
        total.delivered += seen.delivered;
        total.coalesced += seen.coalesced;
        total.duplicates += seen.duplicates;
        total.unexpected += seen.unexpected;
        total.other += seen.other;
        total.rejected += seen.rejected;
        disconnected += u64::from(seen.disconnected);
    }
    let after = presence_counters(&target).await;
    drop((open, sinks));
    server.stop().await;

    let naive = (members - 1) as f64;
    let per_change = total.entries as f64 / sent.max(1) as f64;
    let missed = total.expected - total.delivered - total.coalesced;
    let counters = match (before, after) {
        (Some((events0, frames0)), Some((events1, frames1))) => format!(
            "edge counters: {} presence events in, {} presence_change frames out",
            events1 - events0,
            frames1 - frames0
        ),
        _ => "edge counters unavailable".to_string(),
    };
    Ok(Report {
        scenario: "presence",
        operations: sent,
        elapsed,
        latency_us,
        notes: vec![
            format!(
                "{members} members in one channel, each subscribed to {} of them; {changes} \
                 users away and back = {sent} status changes at {:.0}/s",
                params.visible.min(members - 1),
                2.0 * params.rate
            ),
            format!(
                "{} entries = {per_change:.1} per change vs naive {} (members − 1): {:.0}× fewer",
                total.entries,
                members - 1,
                naive / per_change.max(f64::MIN_POSITIVE)
            ),
            format!(
                "{} presence_change frames ({:.2} entries/frame); {counters}",
                total.frames,
                total.entries as f64 / total.frames.max(1) as f64
            ),
            format!(
                "missed {missed} of {} transitions ({} away+return coalesced), {} duplicates, \
                 {} unexpected, {} other entries, {} rejected, {} disconnected",
                total.expected,
                total.coalesced,
                total.duplicates,
                total.unexpected,
                total.other,
                total.rejected,
                disconnected
            ),
            format!(
                "setup {:.0} s ({:.0} s creating and logging in {members} users, argon2-bound)",
                setup.as_secs_f64(),
                users_took.as_secs_f64()
            ),
        ],
    })
}

/// One connection's receive loop over the measurement; see [`Seen`]. Gives the
/// connection back, still open.
async fn read_presence(
    mut stream: SplitStream<net::Rtm>,
    mut keep: Option<SplitSink<net::Rtm, WsMessage>>,
    subscribed: HashSet<String>,
    schedule: Arc<Schedule>,
    base: Instant,
    drain: Duration,
) -> (Seen, Connection) {
    // Per subscribed changer: (away seen, return seen).
    let mut progress: HashMap<usize, (bool, bool)> = subscribed
        .iter()
        .filter_map(|id| schedule.changer.get(id))
        .map(|&c| (c, (false, false)))
        .collect();
    let mut seen = Seen {
        expected: 2 * progress.len() as u64,
        ..Seen::default()
    };
    let mut returned = 0;
    let end = base + Duration::from_micros(schedule.end_us);
    let mut keepalive = tokio::time::interval_at((Instant::now() + KEEPALIVE).into(), KEEPALIVE);
    let mut ping_id = 1000u64;
    loop {
        let deadline = if returned == progress.len() {
            end + QUIET
        } else {
            end + drain
        };
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    let now_us = base.elapsed().as_micros() as u64;
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                    if frame.get("reply_to").is_some() {
                        if frame["ok"] != json!(true) {
                            seen.rejected += 1;
                        }
                        continue;
                    }
                    if frame["type"] != "presence_change" || now_us < schedule.start_us {
                        continue;
                    }
                    seen.frames += 1;
                    for entry in frame["users"].as_array().into_iter().flatten() {
                        seen.entries += 1;
                        let id = entry["id"].as_str().unwrap_or_default();
                        if !subscribed.contains(id) {
                            seen.unexpected += 1;
                            continue;
                        }
                        let Some(&c) = schedule.changer.get(id) else {
                            seen.other += 1;
                            continue;
                        };
                        let state = progress.get_mut(&c).expect("subscribed changers are tracked");
                        match entry["presence"].as_str() {
                            Some("away") if !state.0 => {
                                state.0 = true;
                                seen.delivered += 1;
                                seen.latency_us.push(now_us.saturating_sub(schedule.away_us[c]));
                            }
                            Some("active") if !state.1 && now_us >= schedule.back_us[c] => {
                                state.1 = true;
                                returned += 1;
                                seen.delivered += 1;
                                // The away was folded into this entry by the flush interval.
                                seen.coalesced += u64::from(!state.0);
                                seen.latency_us.push(now_us.saturating_sub(schedule.back_us[c]));
                            }
                            Some("away") => seen.duplicates += 1,
                            Some("active") if state.1 => seen.duplicates += 1,
                            _ => seen.other += 1,
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    seen.disconnected = true;
                    break;
                }
            },
            _ = keepalive.tick(), if keep.is_some() => {
                ping_id += 1;
                let ping = json!({"id": ping_id, "type": "ping"}).to_string();
                if let Some(sink) = keep.as_mut() {
                    let _ = sink.send(WsMessage::text(ping)).await;
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    (seen, (stream, keep))
}

/// The edge's `confab_edge_presence_events_total` and `confab_edge_presence_frames_total`
/// from `GET /metrics`, if it answers.
async fn presence_counters(target: &net::Target) -> Option<(u64, u64)> {
    let mut http = net::Http::connect(target).await.ok()?;
    let (status, body) = http.request("GET", "/metrics", None, None).await.ok()?;
    if status != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    let counter = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some((
        counter("confab_edge_presence_events_total")?,
        counter("confab_edge_presence_frames_total")?,
    ))
}
