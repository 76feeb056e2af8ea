//! `presence --target centrifuge`: the same question as the `presence` scenario — what
//! does one status change cost in a big channel — asked of the one peer with presence
//! events. Centrifuge announces a client's subscribe (`join`) and disconnect (`leave`) to
//! every subscriber of the channel: the naive design, which this measures rather than
//! assumes.
//!
//! `members` connections subscribe to one channel quietly (the peer announces only users
//! who ask for it at connect, so setting up 10k members is not itself a storm of 50M
//! joins; bench/peers/centrifuge/main.go). Then `changes` users, each connected ahead of
//! its turn with `{"join_leave":true}`, subscribe (online) and disconnect one second later
//! (offline), at `rate` per second: two status changes each, as in confab's run. Every
//! member counts the join/leave pushes for those users, each one exactly once; latency
//! runs from a change's intended instant to each member's receipt.

use crate::net::{self, Result, Target};
use crate::peers::Peer;
use crate::wire::Wire;
use crate::{Report, latency_histogram};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long each changing user stays online before it disconnects.
const HOLD: Duration = Duration::from_secs(1);

/// Between the members' subscriptions and the first change.
const SETTLE: Duration = Duration::from_secs(1);

/// Centrifuge's push types (protocol v1) for a subscribe and a disconnect.
const PUSH_JOIN: u64 = 1;
const PUSH_LEAVE: u64 = 2;

/// Parameters of the scenario against centrifuge.
#[derive(Clone, Debug)]
pub struct CentrifugePresenceBench {
    /// Quiet subscribers of the channel, each one connection.
    pub members: usize,
    /// Users who come online and go offline again: two status changes each.
    pub changes: usize,
    /// Users coming online per second.
    pub rate: f64,
    /// How long members may still receive after the last scheduled change.
    pub drain: Duration,
    pub peers_dir: PathBuf,
}

/// When each change is due, in µs since the run's base, and whose client id is whose.
struct Schedule {
    online_us: Vec<u64>,
    offline_us: Vec<u64>,
    /// Centrifuge's client id of each changer → its index; filled as changers connect,
    /// always before their first push.
    changer: RwLock<HashMap<String, usize>>,
}

/// What one member saw.
#[derive(Default)]
struct Seen {
    latency_us: Vec<u64>,
    entries: u64,
    delivered: u64,
    /// Of `delivered`, the leaves (the rest are joins).
    leaves: u64,
    duplicates: u64,
    /// Pushes about clients that are not changers of this run.
    unexpected: u64,
    disconnected: bool,
}

/// Runs the scenario against the running centrifuge peer.
pub async fn run(params: CentrifugePresenceBench) -> Result<Report> {
    let members = params.members.max(1);
    let changes = params.changes.max(1);
    // The peer is its own process: one descriptor per connection here.
    net::check_open_files(members + changes, false)?;
    let target = Peer::Centrifuge.target(&params.peers_dir)?;
    let channel = format!(
        "presence-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );

    let setup_started = Instant::now();
    let connections = net::map_indexed(members, 32, {
        let (target, channel) = (target.clone(), channel.clone());
        move |i| {
            let (target, channel) = (target.clone(), channel.clone());
            async move {
                let mut joined = Wire::Centrifuge
                    .join_many(&target, i, "", std::slice::from_ref(&channel))
                    .await?;
                joined
                    .pop()
                    .ok_or_else(|| "centrifuge join gave no connection".into())
            }
        }
    })
    .await?;
    let setup = setup_started.elapsed();

    let base = Instant::now();
    let start = SETTLE.as_micros() as u64;
    let gap_us = (1e6 / params.rate.max(0.001)) as u64;
    let online_us: Vec<u64> = (0..changes as u64).map(|k| start + k * gap_us).collect();
    let offline_us: Vec<u64> = online_us
        .iter()
        .map(|us| us + HOLD.as_micros() as u64)
        .collect();
    let end_us = *offline_us.last().expect("at least one change");
    let schedule = Arc::new(Schedule {
        online_us,
        offline_us,
        changer: RwLock::new(HashMap::new()),
    });

    let deadline = base + Duration::from_micros(end_us) + params.drain;
    let readers: Vec<_> = connections
        .into_iter()
        .map(|ws| {
            tokio::spawn(read_member(
                ws,
                Arc::clone(&schedule),
                changes,
                base,
                deadline,
            ))
        })
        .collect();
    let changers: Vec<_> = (0..changes)
        .map(|k| {
            let (target, channel, schedule) =
                (target.clone(), channel.clone(), Arc::clone(&schedule));
            tokio::spawn(async move { change(&target, &channel, k, &schedule, base).await })
        })
        .collect();
    let mut failed_changes = 0u64;
    for changer in changers {
        if let Err(e) = changer.await? {
            failed_changes += 1;
            eprintln!("presence (centrifuge): a changer failed: {e}");
        }
    }

    let mut latency_us = latency_histogram();
    let mut total = Seen::default();
    let mut disconnected = 0u64;
    for reader in readers {
        let seen = reader.await?;
        for &us in &seen.latency_us {
            latency_us.record(us.max(1))?;
        }
        total.entries += seen.entries;
        total.delivered += seen.delivered;
        total.leaves += seen.leaves;
        total.duplicates += seen.duplicates;
        total.unexpected += seen.unexpected;
        disconnected += u64::from(seen.disconnected);
    }
    let sent = 2 * changes as u64;
    let expected = sent * members as u64;
    let per_change = total.entries as f64 / sent as f64;
    Ok(Report {
        scenario: "presence (centrifuge)",
        operations: sent,
        elapsed: Duration::from_micros(end_us - start),
        latency_us,
        notes: vec![
            format!(
                "{members} members in one channel; {changes} users online and offline again = \
                 {sent} status changes at {:.0}/s (join on subscribe, leave on disconnect)",
                2.0 * params.rate
            ),
            format!(
                "{} entries = {per_change:.1} per change, naive fan-out to every member is {members}",
                total.entries
            ),
            format!(
                "missed {} of {expected} pushes ({} joins, {} leaves), {} duplicates, {} \
                 unexpected, {failed_changes} changes failed, {disconnected} disconnected",
                expected.saturating_sub(total.delivered),
                (expected / 2).saturating_sub(total.delivered - total.leaves),
                (expected / 2).saturating_sub(total.leaves),
                total.duplicates,
                total.unexpected
            ),
            format!("setup {:.1} s ({members} connections)", setup.as_secs_f64()),
        ],
    })
}

/// One changer: connects announcing itself, subscribes at its online instant and
/// disconnects at its offline instant.
async fn change(
    target: &Target,
    channel: &str,
    k: usize,
    schedule: &Schedule,
    base: Instant,
) -> Result<()> {
    let mut ws = net::connect_ws(target, "/connection/websocket", &[]).await?;
    let connect = json!({"id": 1, "method": 0, "params": {"data": {"join_leave": true}}});
    ws.send(WsMessage::text(connect.to_string())).await?;
    let client = loop {
        let Some(frame) = ws.next().await else {
            return Err("centrifuge closed a changer's connection".into());
        };
        let WsMessage::Text(text) = frame? else {
            continue;
        };
        if let Some(client) = replies(&text)
            .find(|reply| reply["id"] == 1)
            .and_then(|reply| reply["result"]["client"].as_str().map(str::to_owned))
        {
            break client;
        }
    };
    schedule
        .changer
        .write()
        .expect("changer map")
        .insert(client, k);

    let online = base + Duration::from_micros(schedule.online_us[k]);
    tokio::time::sleep_until(online.into()).await;
    let subscribe = json!({"id": 2, "method": 1, "params": {"channel": channel}});
    ws.send(WsMessage::text(subscribe.to_string())).await?;
    let offline = base + Duration::from_micros(schedule.offline_us[k]);
    // Read (and drop) whatever comes meanwhile, so the subscription is served normally.
    let _ = tokio::time::timeout_at(offline.into(), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    ws.close(None).await?;
    Ok(())
}

/// One member's receive loop until it has both pushes of every changer, or the deadline.
async fn read_member(
    mut ws: net::Rtm,
    schedule: Arc<Schedule>,
    changes: usize,
    base: Instant,
    deadline: Instant,
) -> Seen {
    let mut seen = Seen::default();
    // Per changer: bit 0 online seen, bit 1 offline seen.
    let mut progress = vec![0u8; changes];
    let wanted = 2 * changes as u64;
    while seen.delivered < wanted {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            () = tokio::time::sleep_until(deadline.into()) => break,
        };
        let text = match frame {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                seen.disconnected = true;
                break;
            }
        };
        let now_us = base.elapsed().as_micros() as u64;
        for push in replies(&text).filter(|reply| reply.get("id").is_none()) {
            let result = &push["result"];
            let bit = match result["type"].as_u64() {
                Some(PUSH_JOIN) => 1u8,
                Some(PUSH_LEAVE) => 2u8,
                _ => continue,
            };
            seen.entries += 1;
            let client = result["data"]["info"]["client"]
                .as_str()
                .unwrap_or_default();
            let Some(k) = schedule
                .changer
                .read()
                .expect("changer map")
                .get(client)
                .copied()
            else {
                seen.unexpected += 1;
                continue;
            };
            if progress[k] & bit != 0 {
                seen.duplicates += 1;
                continue;
            }
            progress[k] |= bit;
            seen.delivered += 1;
            seen.leaves += u64::from(bit == 2);
            let due = if bit == 1 {
                schedule.online_us[k]
            } else {
                schedule.offline_us[k]
            };
            seen.latency_us.push(now_us.saturating_sub(due));
        }
    }
    seen
}

/// The JSON replies and pushes in one of centrifuge's frames (one per line).
fn replies(text: &str) -> impl Iterator<Item = Value> + '_ {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| serde_json::from_str(line).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_may_carry_several_replies_and_pushes() {
        let frame = "{\"id\":2,\"result\":{}}\n{\"result\":{\"type\":1,\"channel\":\"c\",\
                     \"data\":{\"info\":{\"user\":\"presence-1\",\"client\":\"abc\"}}}}\n";
        let all: Vec<Value> = replies(frame).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1]["result"]["type"], PUSH_JOIN);
        assert_eq!(all[1]["result"]["data"]["info"]["client"], "abc");
    }
}
