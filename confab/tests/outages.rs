//! Engine outages: with Cassandra, Redis or Kafka stopped (for real, by the services
//! script), a send either fails with a clear `unavailable` error or is truly durable —
//! never a false ack — and the node recovers by itself when the engine returns.
//!
//! This binary stops and starts the shared services, so it holds one test only: cargo
//! runs test binaries one after another, so no other test sees the outage.

use confab::config::NodeConfig;
use confab_store::SyncPolicy;
use confab_test_support::{RestClient, RtmClient, Session, TestNode, require_engines, unique};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn services(action: &str, service: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services/services.sh");
    let status = Command::new("bash")
        .arg(script)
        .args([action, service])
        .status()
        .expect("run services.sh");
    assert!(status.success(), "services.sh {action} {service} failed");
}

/// Posts once; returns the acked message, or `None` after a clear 503.
async fn post_once(rest: &RestClient, by: &Session, channel: &str, id: &str) -> Option<Value> {
    let started = Instant::now();
    let (status, body) = rest.post_message(by, channel, id, id).await;
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "a send must answer, not hang ({:?})",
        started.elapsed()
    );
    match status {
        201 => Some(body["message"].clone()),
        503 => {
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            None
        }
        other => panic!("unexpected {other}: {body}"),
    }
}

/// Retries one `client_msg_id` until acked.
async fn post_until_acked(
    rest: &RestClient,
    by: &Session,
    channel: &str,
    id: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(message) = post_once(rest, by, channel, id).await {
            return message;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not acked within {within:?} after recovery"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn history_ids(rest: &RestClient, by: &Session, channel: &str) -> Vec<(u64, String)> {
    let (status, body) = rest
        .get(
            &format!("/v1/channels/{channel}/history?limit=200"),
            Some(&by.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<(u64, String)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["client_msg_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ids.reverse();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_fail_clearly_during_engine_outages_and_recover() {
    require_engines();
    let text = format!(
        "[store]\nbackend = \"cassandra\"\nkeyspace = \"confab_e2e\"\n\
         [presence]\nbackend = \"redis\"\n[fanout]\nbackend = \"redis\"\n\
         [event_log]\nbackend = \"kafka\"\nnamespace = \"{}.\"\n",
        unique("outage")
    );
    let dir = tempfile::tempdir().unwrap();
    let backends = NodeConfig::from_toml_str(&text, "outages")
        .and_then(|c| c.apply_env(|name| std::env::var(name).ok()))
        .and_then(|c| c.backends(dir.path(), SyncPolicy::Fsync))
        .expect("backends");
    let node = TestNode::start_with(|options| options.backends = Some(backends)).await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let alice = rest.create_team().await;
    let channel = rest.create_channel(&alice, "outages", false).await;
    let mut acked: BTreeSet<String> = BTreeSet::new();
    post_until_acked(&rest, &alice, &channel, "before", Duration::from_secs(10)).await;
    acked.insert("before".into());

    // ---- Cassandra: no durable store, so no ack at all.
    services("down", "cassandra");
    for i in 0..3 {
        let id = format!("cassandra-down-{i}");
        if post_once(&rest, &alice, &channel, &id).await.is_some() {
            panic!("{id} acked while the store was down");
        }
    }
    let (status, body) = rest
        .get(
            &format!("/v1/channels/{channel}/history"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 503, "history without a store: {body}");
    services("up", "cassandra");
    post_until_acked(
        &rest,
        &alice,
        &channel,
        "cassandra-back",
        Duration::from_secs(120),
    )
    .await;
    acked.insert("cassandra-back".into());

    // ---- Redis: presence and fan-out are gone; a post that is acked is durable.
    services("down", "redis");
    for i in 0..3 {
        let id = format!("redis-down-{i}");
        if post_once(&rest, &alice, &channel, &id).await.is_some() {
            acked.insert(id);
        }
    }
    services("up", "redis");
    // Real time works again: a new connection gets hello and its own sends back.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), async {
            let mut rtm =
                RtmClient::try_connect(node.addr, rest.tls_config(), Some(&alice.token), "/v1/rtm")
                    .await
                    .ok()?;
            let hello = rtm.next_frame().await?;
            if hello["type"] != "hello" {
                return None;
            }
            Some(rtm.send_message(&channel, "redis back", "redis-back").await)
        })
        .await;
        if let Ok(Some(reply)) = attempt
            && reply["ok"] == true
        {
            acked.insert("redis-back".into());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RTM did not recover after Redis came back"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // ---- Kafka: side effects wait; sends are durable and acked.
    services("down", "kafka");
    post_until_acked(
        &rest,
        &alice,
        &channel,
        "kafka-down",
        Duration::from_secs(30),
    )
    .await;
    acked.insert("kafka-down".into());
    services("up", "kafka");
    post_until_acked(
        &rest,
        &alice,
        &channel,
        "kafka-back",
        Duration::from_secs(60),
    )
    .await;
    acked.insert("kafka-back".into());

    // Every ack is in the history, once, with dense seqs; nothing unacked slipped in
    // except sends whose answer was an error *after* they became durable (none here).
    let history = history_ids(&rest, &alice, &channel).await;
    let seqs: Vec<u64> = history.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=history.len() as u64).collect::<Vec<_>>(),
        "dense: {history:?}"
    );
    let stored: BTreeSet<String> = history.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(stored.len(), history.len(), "no duplicates: {history:?}");
    for id in &acked {
        assert!(stored.contains(id), "acked {id} missing: {history:?}");
    }
    for id in &stored {
        assert!(
            !id.starts_with("cassandra-down"),
            "{id} stored though refused"
        );
    }
    node.stop().await;
}
