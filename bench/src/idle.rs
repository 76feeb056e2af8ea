//! The `idle` scenario: K RTM connections that only stay open, and what they cost the
//! server in memory. Connections are spread over a few users (several sessions per user
//! are normal: desktop, phone, tabs). Reports the server's resident memory before and
//! after, per connection, and how long each connection took to open (TLS + upgrade +
//! `hello`). Meaningful with `--server-bin` (the server in its own process); in-process
//! the figure includes the generator's side of every connection too. With `--target PEER`
//! the same count of connections joins one channel of a peer server (bench/peers/), whose
//! memory is read from its process tree (nginx's workers included).

use crate::net::{self, Result, Server};
use crate::peers::Peer;
use crate::{Report, latency_histogram};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parameters of the idle scenario.
#[derive(Clone, Debug)]
pub struct IdleBench {
    pub connections: usize,
    /// Users the connections are spread over.
    pub users: usize,
    /// How long the connections stay open before memory is read (lets allocators settle).
    pub settle: Duration,
    pub server_bin: Option<PathBuf>,
    /// A running peer to measure instead of confab, and where its state lives.
    pub peer: Option<(Peer, PathBuf)>,
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: Option<u32>) -> Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(&path)?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in {path}").into())
}

/// Resident memory of a process and all its descendants, in KiB.
pub fn rss_tree_kib(pid: u32) -> Result<u64> {
    let mut total = rss_kib(Some(pid))?;
    for child in children(pid) {
        total += rss_tree_kib(child).unwrap_or(0);
    }
    Ok(total)
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The pid `peers.sh` recorded for `peer`.
fn peer_pid(peer: Peer, peers_dir: &Path) -> Result<u32> {
    let file = peers_dir
        .join(peer.name())
        .join(format!("{}.pid", peer.name()));
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("{}: {e} (is the peer up?)", file.display()))?;
    Ok(text.trim().parse()?)
}

pub async fn run(params: IdleBench) -> Result<Report> {
    match params.peer.clone() {
        Some((peer, dir)) => run_peer(params, peer, &dir).await,
        None => run_confab(params).await,
    }
}

/// The same measurement against a peer: every connection joins one fresh channel.
async fn run_peer(params: IdleBench, peer: Peer, peers_dir: &Path) -> Result<Report> {
    let target = peer.target(peers_dir)?;
    let pid = peer_pid(peer, peers_dir)?;
    let before = rss_tree_kib(pid)?;
    let channel = format!("idle{}", std::process::id());
    let wire = peer.wire();
    let started = Instant::now();
    let opened = net::map_indexed(params.connections, 32, move |i| {
        let (target, channel) = (target.clone(), channel.clone());
        async move {
            let t = Instant::now();
            let ws = wire.join(&target, i, "", &channel).await?;
            Ok((ws, t.elapsed()))
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let (latency_us, connections) = opening_times(opened)?;
    tokio::time::sleep(params.settle).await;
    let after = rss_tree_kib(pid)?;
    let open = connections.len() as u64;
    drop(connections);
    let scenario = match peer {
        Peer::Centrifuge => "idle (centrifuge)",
        Peer::Nchan => "idle (nchan)",
        Peer::Nats => "idle (nats)",
        Peer::Mosquitto => "idle (mosquitto)",
    };
    Ok(Report {
        scenario,
        operations: open,
        elapsed,
        latency_us,
        notes: vec![
            format!("{open} connections in one channel (latency: open + join)"),
            memory_note(before, after, open, ""),
        ],
    })
}

fn opening_times<T>(opened: Vec<(T, Duration)>) -> Result<(hdrhistogram::Histogram<u64>, Vec<T>)> {
    let mut latency_us = latency_histogram();
    let mut connections = Vec::with_capacity(opened.len());
    for (ws, took) in opened {
        latency_us.record((took.as_micros() as u64).max(1))?;
        connections.push(ws);
    }
    Ok((latency_us, connections))
}

fn memory_note(before: u64, after: u64, open: u64, caveat: &str) -> String {
    let per_conn = (after.saturating_sub(before) as f64 * 1024.0) / open.max(1) as f64;
    format!(
        "server RSS {:.1} MiB before, {:.1} MiB after: {:.1} KiB per connection{caveat}",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per_conn / 1024.0,
    )
}

async fn run_confab(params: IdleBench) -> Result<Report> {
    let (server, target) = Server::start(params.server_bin.as_deref()).await?;
    let pid = server.pid();
    let admin = net::create_team(&target).await?;
    let users = params.users.clamp(1, params.connections.max(1));
    let created = net::create_users(&target, &admin, users.saturating_sub(1), 8).await?;
    let mut tokens = vec![admin.token.clone()];
    let emails: Vec<String> = created.into_iter().map(|(_, email)| email).collect();
    tokens.extend(
        net::login_all(&target, &admin.domain, emails, 8)
            .await?
            .into_iter()
            .map(|s| s.token),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;

    let tokens = Arc::new(tokens);
    let started = Instant::now();
    let opened = net::for_each_indexed(&target, params.connections, 32, {
        let (tokens, target) = (Arc::clone(&tokens), target.clone());
        move |http, i| {
            let (tokens, target) = (Arc::clone(&tokens), target.clone());
            async move {
                let t = Instant::now();
                let ws = net::connect_rtm(&target, &tokens[i % tokens.len()]).await;
                (http, ws.map(|ws| (ws, t.elapsed())))
            }
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let (latency_us, connections) = opening_times(opened)?;
    tokio::time::sleep(params.settle).await;
    let after = rss_kib(pid)?;
    let open = connections.len() as u64;
    drop(connections);
    server.stop().await;
    Ok(Report {
        scenario: "idle",
        operations: open,
        elapsed,
        latency_us,
        notes: vec![
            format!("{open} connections over {users} users (latency: open + hello)"),
            memory_note(
                before,
                after,
                open,
                if pid.is_none() {
                    " (in-process: includes the client side)"
                } else {
                    ""
                },
            ),
        ],
    })
}
