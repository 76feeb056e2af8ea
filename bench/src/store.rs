//! The `store` scenario: durable messages per second into the embedded fjall store, with
//! fsync on, from many concurrent channel sequencers — what group commit is for.

use crate::{Report, latency_histogram};
use confab_proto::{ChannelId, Message, MessageId, TeamId, UserId};
use confab_store::{FjallStore, FjallStoreOptions, LeaseClaim, NewMessage, Store, SyncPolicy};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parameters of the store scenario.
#[derive(Clone, Debug)]
pub struct StoreBench {
    /// Concurrent writers, one channel each (as the per-channel sequencers are).
    pub channels: usize,
    /// Messages per append call (a sequencer's batch).
    pub batch: usize,
    /// How long to write.
    pub duration: Duration,
    pub sync: SyncPolicy,
}

/// Runs the scenario in a temporary directory.
pub async fn run(params: StoreBench) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        FjallStore::open(FjallStoreOptions {
            dir: dir.path().to_path_buf(),
            sync: params.sync,
        })
        .expect("open store"),
    );
    let team = TeamId::generate();
    let user = UserId::generate();
    // One lease per channel, claimed before the clock starts, as a sequencer holds it.
    let mut leases = Vec::with_capacity(params.channels);
    for _ in 0..params.channels {
        let claim = store
            .claim_lease(&team, &ChannelId::generate(), "bench", params.duration * 2)
            .await
            .expect("claim lease");
        match claim {
            LeaseClaim::Granted(lease) => leases.push(lease),
            held => panic!("a fresh channel's lease is held: {held:?}"),
        }
    }
    let setup = store.commit_stats();
    let deadline = Instant::now() + params.duration;
    let started = Instant::now();
    let mut writers = Vec::new();
    for lease in leases {
        let store = Arc::clone(&store);
        let (team, user) = (team.clone(), user.clone());
        let batch = params.batch;
        writers.push(tokio::spawn(async move {
            let channel = lease.channel.clone();
            let mut histogram = latency_histogram();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let messages: Vec<NewMessage> = (0..batch)
                    .map(|_| {
                        seq += 1;
                        NewMessage {
                            team: team.clone(),
                            message: Message {
                                id: MessageId::generate(),
                                channel: channel.clone(),
                                user: user.clone(),
                                text: "a typical short chat message of some sixty bytes or so"
                                    .into(),
                                seq,
                                ts: format!("1700000000.{seq:06}"),
                                client_msg_id: format!("c{seq}"),
                                thread_ts: None,
                                edited_ts: None,
                                deleted: false,
                            },
                        }
                    })
                    .collect();
                let t = Instant::now();
                store
                    .append_messages(&lease, &messages)
                    .await
                    .expect("append");
                let micros = t.elapsed().as_micros() as u64;
                for _ in 0..batch {
                    histogram.record(micros.max(1)).expect("in range");
                }
            }
            histogram
        }));
    }
    let mut latency_us = latency_histogram();
    for writer in writers {
        latency_us
            .add(writer.await.expect("writer"))
            .expect("same bounds");
    }
    let elapsed = started.elapsed();
    let syncs = store.commit_stats().syncs - setup.syncs;
    let operations = latency_us.len();
    Report {
        scenario: "store",
        operations,
        elapsed,
        latency_us,
        notes: vec![
            format!(
                "{} writers, batch {}, {:?}",
                params.channels, params.batch, params.sync
            ),
            format!(
                "{} fsyncs ({:.1} messages per fsync)",
                syncs,
                operations as f64 / syncs.max(1) as f64
            ),
        ],
    }
}
