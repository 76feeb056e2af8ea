//! The `history` scenario: fill one channel with M messages as fast as durable acks allow
//! (concurrent REST posts, each answered only once its message is on disk), then measure
//! `GET /v1/channels/{id}/history?limit=50&before=SEQ` from C concurrent readers at random
//! points — the scroll-back path.

use crate::net::{self, Result, Rng, Server};
use crate::{Report, latency_histogram};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Parameters of the history scenario.
#[derive(Clone, Debug)]
pub struct HistoryBench {
    /// Messages in the channel before reading starts.
    pub messages: u64,
    /// Concurrent posting connections during the fill.
    pub writers: usize,
    /// Concurrent reading connections.
    pub readers: usize,
    pub duration: Duration,
    pub server_bin: Option<PathBuf>,
}

/// Page size of every read, as a client scrolling back asks for.
const PAGE: u64 = 50;

/// Runs the scenario against a fresh server.
pub async fn run(params: HistoryBench) -> Result<Report> {
    let (server, target) = Server::start(params.server_bin.as_deref()).await?;
    let admin = net::create_team(&target).await?;
    let mut http = net::Http::connect(&target).await?;
    let channel = net::create_channel(&mut http, &admin, "history").await?;

    // Fill: one REST connection per writer, each posting its next message when the last
    // one is durable, so the channel sequencer always has up to `writers` sends to batch.
    let fill_started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..params.writers.max(1) {
        let (target, admin, channel, next) = (
            target.clone(),
            admin.clone(),
            channel.clone(),
            Arc::clone(&next),
        );
        let total = params.messages;
        writers.push(tokio::spawn(async move {
            let mut http = net::Http::connect(&target).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, net::Error>(());
                }
                let body = json!({"channel": channel, "client_msg_id": format!("h{i}"),
                    "text": format!("history filler message number {i}, about sixty bytes")});
                http.call("POST", "/v1/messages", Some(&admin.token), Some(&body))
                    .await?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let fill = fill_started.elapsed();
    let fill_rate = params.messages as f64 / fill.as_secs_f64();

    // Reads: each reader on its own keep-alive connection, uniformly random `before`.
    let deadline = Instant::now() + params.duration;
    let read_started = Instant::now();
    let short_pages = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..params.readers.max(1) {
        let (target, admin, channel) = (target.clone(), admin.clone(), channel.clone());
        let (total, short_pages) = (params.messages, Arc::clone(&short_pages));
        readers.push(tokio::spawn(async move {
            let mut http = net::Http::connect(&target).await?;
            let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15 ^ (r as u64 + 1));
            let mut histogram = latency_histogram();
            // Seqs run 1..=total; `before` in PAGE+1..=total+1 always leaves a full page.
            let span = total.saturating_sub(PAGE).max(1);
            while Instant::now() < deadline {
                let before = PAGE + 1 + rng.below(span);
                let path = format!("/v1/channels/{channel}/history?limit={PAGE}&before={before}");
                let t = Instant::now();
                let page: Value = http.call("GET", &path, Some(&admin.token), None).await?;
                histogram.record((t.elapsed().as_micros() as u64).max(1))?;
                let got = page["messages"].as_array().map_or(0, Vec::len) as u64;
                if got < PAGE.min(total) {
                    short_pages.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, net::Error>(histogram)
        }));
    }
    let mut latency_us = latency_histogram();
    for reader in readers {
        latency_us.add(reader.await??)?;
    }
    let elapsed = read_started.elapsed();
    server.stop().await;
    Ok(Report {
        scenario: "history",
        operations: latency_us.len(),
        elapsed,
        latency_us,
        notes: vec![
            format!(
                "{} messages filled at {fill_rate:.0} msg/s by {} writers ({:.1} s)",
                params.messages,
                params.writers,
                fill.as_secs_f64()
            ),
            format!("{} readers, limit={PAGE}", params.readers),
            format!("{} short pages", short_pages.load(Ordering::Relaxed)),
        ],
    })
}
