//! The `boot` scenario: a team of U users, the caller in K channels (one of them holding
//! every user, like #general) and some DMs; measures `GET /v1/boot` payload bytes and
//! latency, and compares the payload with a full snapshot (every user and channel), the
//! ratio the Flannel design (DESIGN.md §6) is about: boot must not grow with team size.

use crate::net::{self, Result, Server};
use crate::{Report, latency_histogram};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Parameters of the boot scenario.
#[derive(Clone, Debug)]
pub struct BootBench {
    /// Users in the team, the caller included.
    pub users: usize,
    /// Public channels the caller is in.
    pub channels: usize,
    /// DMs the caller has (their partners are users boot carries).
    pub dms: usize,
    /// Concurrent boot callers (all as the same user, so the edge cache is warm after one).
    pub concurrency: usize,
    pub duration: Duration,
    pub server_bin: Option<PathBuf>,
}

/// Runs the scenario against a fresh server.
pub async fn run(params: BootBench) -> Result<Report> {
    let (server, target) = Server::start(params.server_bin.as_deref()).await?;
    let setup_started = Instant::now();
    let admin = net::create_team(&target).await?;
    let users = net::create_users(&target, &admin, params.users.saturating_sub(1), 8).await?;
    let ids: Vec<String> = users.into_iter().map(|(id, _)| id).collect();
    let mut http = net::Http::connect(&target).await?;
    for k in 0..params.channels.max(1) {
        let channel = net::create_channel(&mut http, &admin, &format!("c{k}")).await?;
        if k == 0 {
            net::add_members(&mut http, &admin, &channel, &ids).await?;
        }
        // A message per channel so boot's last_seq/unread are not all zero.
        http.call(
            "POST",
            "/v1/messages",
            Some(&admin.token),
            Some(
                &json!({"channel": channel, "text": "hello", "client_msg_id": format!("boot{k}")}),
            ),
        )
        .await?;
    }
    for partner in ids.iter().take(params.dms) {
        http.call(
            "POST",
            "/v1/dms",
            Some(&admin.token),
            Some(&json!({"user_ids": [partner]})),
        )
        .await?;
    }
    let setup = setup_started.elapsed();

    // The naive alternative: every channel and every user, fetched at start.
    let (_, channels_body) = http
        .request("GET", "/v1/channels", Some(&admin.token), None)
        .await?;
    let mut snapshot_bytes = channels_body.len();
    let mut everyone = vec![admin.user_id.clone()];
    everyone.extend(ids.iter().cloned());
    for chunk in everyone.chunks(500) {
        let path = format!("/v1/users?ids={}", chunk.join(","));
        let (status, body) = http.request("GET", &path, Some(&admin.token), None).await?;
        if status != 200 {
            return Err(format!("GET /v1/users: {status}").into());
        }
        snapshot_bytes += body.len();
    }

    let deadline = Instant::now() + params.duration;
    let started = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..params.concurrency.max(1) {
        let (target, token) = (target.clone(), admin.token.clone());
        callers.push(tokio::spawn(async move {
            let mut http = net::Http::connect(&target).await?;
            let mut histogram = latency_histogram();
            let mut bytes = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let (status, body) = http.request("GET", "/v1/boot", Some(&token), None).await?;
                histogram.record((t.elapsed().as_micros() as u64).max(1))?;
                if status != 200 {
                    return Err(format!("GET /v1/boot: {status}").into());
                }
                bytes = body.len();
            }
            Ok::<_, net::Error>((histogram, bytes))
        }));
    }
    let mut latency_us = latency_histogram();
    let mut boot_bytes = 0;
    for caller in callers {
        let (histogram, bytes) = caller.await??;
        latency_us.add(histogram)?;
        boot_bytes = boot_bytes.max(bytes);
    }
    let elapsed = started.elapsed();
    server.stop().await;
    Ok(Report {
        scenario: "boot",
        operations: latency_us.len(),
        elapsed,
        latency_us,
        notes: vec![
            format!(
                "{} users, {} channels + {} DMs, {} callers",
                params.users, params.channels, params.dms, params.concurrency
            ),
            format!("boot {boot_bytes} bytes"),
            format!(
                "full snapshot {snapshot_bytes} bytes ({:.1}x boot)",
                snapshot_bytes as f64 / boot_bytes.max(1) as f64
            ),
            format!("setup {:.1} s", setup.as_secs_f64()),
        ],
    })
}
