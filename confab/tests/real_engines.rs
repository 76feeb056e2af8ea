//! End to end on every real engine at once: Cassandra store, Redis presence and fan-out,
//! Kafka event log, chosen through the same `NodeConfig` path `confab dev --config` uses.
//!
//! The engines come from `scripts/services/services.sh up all`, which writes their
//! addresses to `.services/endpoints.env`. Without those variables the test fails rather
//! than skips: a green run must mean the real engines were exercised.

use confab::config::NodeConfig;
use confab_store::SyncPolicy;
use confab_test_support::{RestClient, RtmClient, TestNode, require_engines, unique};
use serde_json::{Value, json};
use std::time::Duration;

/// The configuration under test: the file names the backends, the environment supplies
/// the addresses, exactly as an operator would split them. The Kafka namespace is fresh
/// per run so the `messages` topic holds only this run's records.
fn config() -> NodeConfig {
    require_engines();
    let namespace = format!("{}.", unique("e2e"));
    let text = format!(
        r#"
        [store]
        backend = "cassandra"
        keyspace = "confab_e2e"
        [presence]
        backend = "redis"
        [fanout]
        backend = "redis"
        [event_log]
        backend = "kafka"
        namespace = "{namespace}"
        partitions = 2
        "#
    );
    NodeConfig::from_toml_str(&text, "real_engines")
        .and_then(|config| config.apply_env(|name| std::env::var(name).ok()))
        .expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_on_cassandra_redis_and_kafka_survives_a_restart() {
    let config = config();
    let dir_for_backends = tempfile::tempdir().unwrap();
    // Embedded paths in `Backends` are unused here (every backend is real), so any
    // directory satisfies the signature.
    let backends = config
        .backends(dir_for_backends.path(), SyncPolicy::Fsync)
        .expect("backends");
    let description = backends.describe();
    for engine in ["cassandra", "redis", "kafka"] {
        assert!(description.contains(engine), "{description}");
    }
    let event_log_backend = backends.event_log.clone();
    let mut node = TestNode::start_with(|options| options.backends = Some(backends)).await;
    let rest = RestClient::new(node.addr, &node.ca_path);

    // Two users, one channel.
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    let channel = rest.create_channel(&alice, "engines", false).await;
    rest.add_member(&alice, &channel, &bob).await;

    // Presence through Redis: Alice subscribes to Bob, Bob comes online.
    let mut a = RtmClient::connect(node.addr, rest.tls_config(), &alice.token).await;
    let reply = a
        .request(json!({"type": "presence_sub", "ids": [bob.user_id]}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let mut b = RtmClient::connect(node.addr, rest.tls_config(), &bob.token).await;
    let change = a.next_event("presence_change").await;
    assert_eq!(
        change["users"],
        json!([{"id": bob.user_id, "presence": "active"}]),
        "{change}"
    );

    // Messages both ways, in order, with dense seqs; each reaches the other side through
    // the Redis fan-out.
    let mut sent = Vec::new();
    for i in 0..6u64 {
        let (from, to, name) = if i % 2 == 0 {
            (&mut a, &mut b, "alice")
        } else {
            (&mut b, &mut a, "bob")
        };
        let text = format!("{name} says {i}");
        let reply = from.send_message(&channel, &text, &format!("m{i}")).await;
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["message"]["seq"], json!(i + 1), "{reply}");
        // The receiver may also hold its own earlier messages as events; skip to this one.
        loop {
            let event = to.next_event("message").await;
            if event["seq"] == json!(i + 1) {
                assert_eq!(event["text"], json!(text), "{event}");
                break;
            }
            assert!(
                event["seq"].as_u64().unwrap() < i + 1,
                "out of order: {event}"
            );
        }
        sent.push(reply["message"].clone());
    }

    // A retried client_msg_id (REST, then RTM) yields the same single message.
    let key = unique("retry");
    let (status, first) = rest.post_message(&alice, &channel, "once", &key).await;
    assert_eq!(status, 201, "{first}");
    let (_, second) = rest.post_message(&alice, &channel, "once", &key).await;
    assert_eq!(first["message"], second["message"]);
    let third = a.send_message(&channel, "once", &key).await;
    assert_eq!(third["message"], first["message"]);
    assert_eq!(first["message"]["seq"], json!(7));
    sent.push(first["message"].clone());

    // History pages newest first, dense, exactly what was sent.
    let history = rest.full_history(&bob, &channel, 3).await;
    let mut expected = sent.clone();
    expected.reverse();
    assert_eq!(history, expected);

    // The side effects reach Kafka's `messages` topic, keyed by channel.
    let log = confab_events::open_event_log(&event_log_backend)
        .await
        .expect("open kafka log");
    let group = unique("e2e-reader");
    let wanted: Vec<String> = sent
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !wanted.iter().all(|text| seen.contains(text)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages missing from Kafka: wanted {wanted:?}, saw {seen:?}"
        );
        let records = log
            .poll(
                &group,
                confab_chat::service::MESSAGES_TOPIC,
                100,
                Duration::from_secs(2),
            )
            .await
            .expect("poll kafka");
        for record in records {
            assert_eq!(record.key, channel, "keyed by channel");
            let event: Value = serde_json::from_slice(&record.payload).expect("JSON event");
            let text = event.to_string();
            if let Some(found) = wanted.iter().find(|w| text.contains(w.as_str())) {
                seen.push(found.clone());
            }
        }
    }
    drop(log);
    a.close().await;
    b.close().await;

    // Restart on the same config: everything is still there, and sending continues the
    // sequence.
    node.restart().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let session = rest.login(&alice.domain, &alice.email).await;
    let history = rest.full_history(&session, &channel, 2).await;
    assert_eq!(history, expected, "history after restart");
    let mut a = RtmClient::connect(node.addr, rest.tls_config(), &session.token).await;
    let reply = a.send_message(&channel, "after restart", "m-after").await;
    assert_eq!(reply["message"]["seq"], json!(8), "{reply}");
    let again = a.send_message(&channel, "once", &key).await;
    assert_eq!(again["message"], first["message"], "dedup survives restart");
    a.close().await;
    node.stop().await;
}
