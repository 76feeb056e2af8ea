//! A real cluster end to end: two `confab core` and two `confab edge` processes in two
//! regions, on the real engines (Cassandra, Redis, Kafka from
//! `scripts/services/services.sh`). Each edge prefers its own region's core, so posts
//! through the two edges enter through different cores and meet at the channel's lease
//! holder.

use confab_test_support::{ClusterSpec, RestClient, RtmClient, Session, TestCluster};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn spec() -> ClusterSpec {
    ClusterSpec::new(env!("CARGO_BIN_EXE_confab"))
}

/// Every message of a channel, oldest first.
async fn full_history(rest: &RestClient, by: &Session, channel: &str) -> Vec<Value> {
    let mut all = rest.full_history(by, channel, 200).await;
    all.reverse();
    all
}

/// The `seq`s of the message events `rtm` receives until it has `count` (or 20 s pass).
async fn live_seqs(rtm: &mut RtmClient, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seqs.len() < count && Instant::now() < deadline {
        for event in rtm
            .drain_events("message", Duration::from_millis(200))
            .await
        {
            seqs.push(event["seq"].as_u64().unwrap());
        }
    }
    seqs
}

/// Posts over REST until acknowledged, retrying the same `client_msg_id` on 503 (a core
/// going away) for up to `patience`. Returns the acked message.
async fn post_until_acked(
    rest: &RestClient,
    by: &Session,
    channel: &str,
    text: &str,
    client_msg_id: &str,
    patience: Duration,
) -> Value {
    let deadline = Instant::now() + patience;
    loop {
        let (status, body) = rest.post_message(by, channel, text, client_msg_id).await;
        if status == 201 {
            return body["message"].clone();
        }
        assert_eq!(status, 503, "only unavailability may fail a post: {body}");
        assert!(
            Instant::now() < deadline,
            "{client_msg_id} not acked within {patience:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain HTTP GET of an operator endpoint; the whole response as text.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn assert_dense_and_unique(history: &[Value], expected: usize) {
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=expected as u64).collect::<Vec<_>>(),
        "dense seqs"
    );
    let ids: BTreeSet<&str> = history
        .iter()
        .map(|m| m["client_msg_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), expected, "no client_msg_id twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_edges_share_one_dense_order() {
    let cluster = TestCluster::start(spec()).await;
    let ca = cluster.ca_path();
    let rest_a = Arc::new(RestClient::new(cluster.edges["edge-1"], &ca));
    let rest_b = Arc::new(RestClient::new(cluster.edges["edge-2"], &ca));

    let alice = rest_a.create_team().await;
    let bob = rest_a.create_user(&alice, "bob").await;
    // Bob's session comes from the other edge (and through it, the other core).
    let bob = rest_b.login(&bob.domain, &bob.email).await;
    let channel = rest_a.create_channel(&alice, "general", false).await;
    rest_a.add_member(&alice, &channel, &bob).await;

    let mut alice_rtm =
        RtmClient::connect(cluster.edges["edge-1"], rest_a.tls_config(), &alice.token).await;
    let mut bob_rtm =
        RtmClient::connect(cluster.edges["edge-2"], rest_b.tls_config(), &bob.token).await;

    let reply = alice_rtm
        .send_message(&channel, "hi from edge 1", "a-1")
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let seen = bob_rtm.next_event("message").await;
    assert_eq!(seen["text"], "hi from edge 1");
    let reply = bob_rtm
        .send_message(&channel, "hi from edge 2", "b-1")
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["message"]["seq"], 2, "{reply}");
    // Alice's socket shows her own message first, then Bob's.
    let own = alice_rtm.next_event("message").await;
    assert_eq!(own["text"], "hi from edge 1");
    let seen = alice_rtm.next_event("message").await;
    assert_eq!(seen["text"], "hi from edge 2");

    // Concurrent senders through both edges (so both cores): one dense order.
    const PER_SENDER: usize = 25;
    let mut senders = Vec::new();
    let routes = [
        (&rest_a, &alice),
        (&rest_a, &alice),
        (&rest_b, &bob),
        (&rest_b, &bob),
    ];
    for (i, (rest, who)) in routes.into_iter().enumerate() {
        let (rest, who, channel) = (Arc::clone(rest), who.clone(), channel.clone());
        senders.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..PER_SENDER {
                let id = format!("s{i}-{n}");
                let message =
                    post_until_acked(&rest, &who, &channel, &id, &id, Duration::from_secs(20))
                        .await;
                seqs.push(message["seq"].as_u64().unwrap());
            }
            seqs
        }));
    }
    for sender in senders {
        let seqs = sender.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one sender's acks in order: {seqs:?}"
        );
    }
    let total = 2 + 4 * PER_SENDER;
    let history = full_history(&rest_b, &bob, &channel).await;
    assert_dense_and_unique(&history, total);

    // Both cores took posts from their edges; core-2 (edge 2's) handed its share to
    // the lease holder, core-1, where Alice's first message put the channel. /metrics
    // says so.
    for core in ["core-1", "core-2"] {
        let metrics = http_get(cluster.ops[core], "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{core}: {metrics}");
        assert!(
            metrics.contains(r#"confab_link_calls_total{call="post_message",outcome="ok"}"#),
            "{core} took no posts: {metrics}"
        );
    }
    let core2 = http_get(cluster.ops["core-2"], "/metrics").await;
    let forwarded: u64 = core2
        .lines()
        .find_map(|l| l.strip_prefix("confab_chat_posts_forwarded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        forwarded >= 2 * PER_SENDER as u64,
        "core-2 forwarded {forwarded}: {core2}"
    );

    // Each client saw every message live, in seq order, once.
    for (rtm, name) in [(&mut alice_rtm, "alice"), (&mut bob_rtm, "bob")] {
        let seqs = live_seqs(rtm, total - 1).await;
        let first = seqs.first().copied().unwrap_or(0);
        assert_eq!(
            seqs,
            (first..first + seqs.len() as u64).collect::<Vec<_>>(),
            "{name} sees one gapless order"
        );
        assert_eq!(
            seqs.last().copied(),
            Some(total as u64),
            "{name} saw the last message"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lease_holder_under_load_loses_and_duplicates_nothing() {
    let mut cluster = TestCluster::start(spec()).await;
    let ca = cluster.ca_path();
    let rest_a = Arc::new(RestClient::new(cluster.edges["edge-1"], &ca));
    let rest_b = Arc::new(RestClient::new(cluster.edges["edge-2"], &ca));
    let alice = rest_a.create_team().await;
    let bob = rest_a.create_user(&alice, "bob").await;
    let bob = rest_b.login(&bob.domain, &bob.email).await;
    let channel = rest_a.create_channel(&alice, "load", false).await;
    rest_a.add_member(&alice, &channel, &bob).await;

    // Through edge 1, so core-1 (edge 1's own region) claims the channel's lease.
    post_until_acked(
        &rest_a,
        &alice,
        &channel,
        "first",
        "first",
        Duration::from_secs(10),
    )
    .await;

    // A watcher on edge 2 whose region's core stays up, and one on edge 1 whose core dies.
    let mut watcher =
        RtmClient::connect(cluster.edges["edge-2"], rest_b.tls_config(), &bob.token).await;
    let mut cut_off =
        RtmClient::connect(cluster.edges["edge-1"], rest_a.tls_config(), &alice.token).await;

    const PER_SENDER: usize = 40;
    let mut senders = Vec::new();
    for (i, (rest, who)) in [
        (Arc::clone(&rest_a), alice.clone()),
        (Arc::clone(&rest_b), bob.clone()),
    ]
    .into_iter()
    .enumerate()
    {
        let channel = channel.clone();
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut longest = Duration::ZERO;
            for n in 0..PER_SENDER {
                let id = format!("k{i}-{n}");
                let started = Instant::now();
                let message =
                    post_until_acked(&rest, &who, &channel, &id, &id, Duration::from_secs(30))
                        .await;
                longest = longest.max(started.elapsed());
                acked.push(id);
                assert_eq!(message["client_msg_id"], acked.last().unwrap().as_str());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, longest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed_at = Instant::now();
    cluster.kill("core-1");

    let mut acked = BTreeSet::new();
    let mut longest = Duration::ZERO;
    for sender in senders {
        let (ids, wait) = sender.await.unwrap();
        acked.extend(ids);
        longest = longest.max(wait);
    }
    let recovered_in = killed_at.elapsed();
    eprintln!(
        "longest wait for one ack across the kill: {longest:?}; senders done {recovered_in:?} \
         after it (lease ttl {:?})",
        spec().lease_ttl
    );
    let history = full_history(&rest_b, &bob, &channel).await;
    assert_dense_and_unique(&history, 1 + 2 * PER_SENDER);
    let stored: BTreeSet<String> = history
        .iter()
        .map(|m| m["client_msg_id"].as_str().unwrap().to_string())
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "acked {id} lost");
    }
    // The survivor took the channel over (before the kill it forwarded to core-1).
    let survivor = cluster.log("core-2");
    assert!(
        survivor
            .lines()
            .any(|line| line.contains("took the channel's lease") && line.contains(&channel)),
        "core-2 never took {channel} over; its log:\n{survivor}"
    );
    // No send waited much longer than the lease takes to run out.
    assert!(
        longest < spec().lease_ttl * 2 + Duration::from_secs(5),
        "a send waited {longest:?} across the kill"
    );

    // The watcher on the surviving side saw every message once, in order.
    let seqs = live_seqs(&mut watcher, 2 * PER_SENDER).await;
    assert_eq!(seqs, (2..=1 + 2 * PER_SENDER as u64).collect::<Vec<_>>());

    // The edge-1 watcher's stream went through core-1: it was told goodbye (or went
    // quiet). What it saw live is a gapless prefix; it reconnects, resumes from there,
    // and ends with every message exactly once.
    let mut seen = Vec::new();
    while let Some(frame) = cut_off.next_frame().await {
        if frame["type"] == "message" && frame.get("reply_to").is_none() {
            seen.push(frame["seq"].as_u64().unwrap());
        }
    }
    let last = seen.last().copied().unwrap_or(1);
    assert_eq!(seen, (2..=last).collect::<Vec<_>>(), "live part is gapless");
    let deadline = Instant::now() + Duration::from_secs(30);
    let replayed = loop {
        let edge1 = cluster.edges["edge-1"];
        if let Ok(mut again) =
            RtmClient::try_connect(edge1, rest_a.tls_config(), Some(&alice.token), "/v1/rtm").await
            && again
                .next_frame()
                .await
                .is_some_and(|f| f["type"] == "hello")
        {
            let id = again
                .send(serde_json::json!({"type": "resume", "cursors": {channel.as_str(): last}}))
                .await;
            let reply = again.reply(id).await;
            if reply["ok"] == true {
                let replayed: Vec<u64> = again
                    .events
                    .drain(..)
                    .filter(|e| e["type"] == "message")
                    .map(|e| e["seq"].as_u64().unwrap())
                    .collect();
                break replayed;
            }
        }
        assert!(
            Instant::now() < deadline,
            "edge 1 did not take the client back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "edge-1 client: {} messages live before its stream ended, {} replayed on resume",
        seen.len(),
        replayed.len()
    );
    let mut all = seen;
    all.extend(replayed);
    assert_eq!(
        all,
        (2..=1 + 2 * PER_SENDER as u64).collect::<Vec<_>>(),
        "resumed exactly once"
    );
}
