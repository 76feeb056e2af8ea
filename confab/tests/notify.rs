//! Push notifications end to end: a member who is not active gets exactly one push per
//! DM and @mention at the webhook sink they registered — with `confab dev` (worker in
//! process, embedded log) and with a cluster's `confab notify` process on Kafka, across
//! a kill -9 and restart of the worker.

use confab_test_support::{
    ClusterSpec, PushReceiver, RestClient, RtmClient, Session, TestCluster, TestNode,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

async fn register(rest: &RestClient, who: &Session, url: &str) -> String {
    let (status, body) = rest
        .post(
            "/v1/push/subscriptions",
            Some(&who.token),
            json!({ "url": url }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["subscription"]["id"].as_str().unwrap().to_string()
}

async fn open_dm(rest: &RestClient, by: &Session, with: &Session) -> String {
    let (status, body) = rest
        .post(
            "/v1/dms",
            Some(&by.token),
            json!({ "user_ids": [with.user_id] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["channel"]["id"].as_str().unwrap().to_string()
}

async fn say(rest: &RestClient, by: &Session, channel: &str, text: &str) -> Value {
    let id = confab_test_support::unique("n");
    let (status, body) = rest.post_message(by, channel, text, &id).await;
    assert_eq!(status, 201, "{body}");
    body["message"].clone()
}

/// Pushes by idempotency key; fails on any key seen twice.
fn by_key(pushes: &[confab_test_support::ReceivedPush]) -> BTreeMap<String, Value> {
    let mut keys = BTreeMap::new();
    for push in pushes {
        assert_eq!(push.body["id"], push.key.as_str(), "header and body agree");
        let again = keys.insert(push.key.clone(), push.body.clone());
        assert!(again.is_none(), "push {} delivered twice", push.key);
    }
    keys
}

/// The scenario both deployments run: DMs and mentions notify, other messages and
/// active users do not, and retries reach a sink that failed at first.
async fn dms_and_mentions_notify_only_inactive_members(
    rest: &RestClient,
    sink: &PushReceiver,
    alice: &Session,
    bob: &Session,
) {
    register(rest, bob, &sink.url()).await;
    let dm = open_dm(rest, alice, bob).await;
    let channel = rest.create_channel(alice, "notify", false).await;
    rest.add_member(alice, &channel, bob).await;

    // Bob never connected: away. The sink fails twice first; the worker retries.
    sink.fail_next(2);
    let m1 = say(rest, alice, &dm, "hello bob").await;
    let m2 = say(rest, alice, &channel, &format!("ping <@{}>", bob.user_id)).await;
    say(rest, alice, &channel, "no mention here").await;
    say(
        rest,
        alice,
        &channel,
        &format!("note to <@{}>", alice.user_id),
    )
    .await;
    say(rest, bob, &dm, "bob's own message").await;

    sink.wait_for(2, Duration::from_secs(30)).await;
    // Give a wrong extra push time to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pushes = by_key(&sink.received());
    assert_eq!(
        pushes.len(),
        2,
        "exactly the DM and the mention: {pushes:?}"
    );
    let reasons: Vec<(&str, &str)> = pushes
        .values()
        .map(|p| {
            (
                p["message_id"].as_str().unwrap(),
                p["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&(m1["id"].as_str().unwrap(), "dm")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(m2["id"].as_str().unwrap(), "mention")),
        "{reasons:?}"
    );
    for push in pushes.values() {
        assert_eq!(push["recipient"], bob.user_id.as_str());
    }
    assert_eq!(sink.failed.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// While Bob is connected (active), a DM sends no push; once he leaves, it does.
async fn active_members_get_no_push(
    rest: &RestClient,
    edge: std::net::SocketAddr,
    sink: &PushReceiver,
    alice: &Session,
    bob: &Session,
) {
    let dm = open_dm(rest, alice, bob).await;
    let before = sink.received().len();
    let rtm = RtmClient::connect(edge, rest.tls_config(), &bob.token).await;
    say(rest, alice, &dm, "you are here").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink.received().len(), before, "no push while active");
    rtm.close().await;
    // The closed session ends Bob's presence at once (not after the TTL).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = say(rest, alice, &dm, "now you are gone").await;
    let pushes = sink.wait_for(before + 1, Duration::from_secs(30)).await;
    assert_eq!(pushes.len(), before + 1);
    assert_eq!(pushes.last().unwrap().body["message_id"], gone["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confab_dev_pushes_dms_and_mentions() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let sink = PushReceiver::start().await;
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    dms_and_mentions_notify_only_inactive_members(&rest, &sink, &alice, &bob).await;
    active_members_get_no_push(&rest, node.addr, &sink, &alice, &bob).await;

    // Subscriptions are the caller's own: listed, and deleted only by their owner.
    let (status, body) = rest.get("/v1/push/subscriptions", Some(&bob.token)).await;
    assert_eq!(status, 200, "{body}");
    let id = body["subscriptions"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/push/subscriptions/{id}");
    let (status, _) = rest.raw("DELETE", &path, Some(&alice.token), None).await;
    assert_eq!(status, 404, "another user's subscription is not found");
    let (status, _) = rest.raw("DELETE", &path, Some(&bob.token), None).await;
    assert_eq!(status, 200);
    let (_, body) = rest.get("/v1/push/subscriptions", Some(&bob.token)).await;
    assert_eq!(body["subscriptions"], json!([]));

    // Bad URLs are refused with a clear error.
    for url in ["ftp://example.com/x", "not a url", "/relative", ""] {
        let (status, body) = rest
            .post(
                "/v1/push/subscriptions",
                Some(&bob.token),
                json!({ "url": url }),
            )
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_argument", "{url}: {body}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confab_notify_resumes_after_a_kill_without_missing_or_repeating() {
    let mut spec = ClusterSpec::new(env!("CARGO_BIN_EXE_confab"));
    spec.notify = true;
    // A namespace of its own: the worker's group starts at the topic's beginning.
    spec.namespace = format!("{}.", confab_test_support::unique("notify"));
    let mut cluster = TestCluster::start(spec).await;
    let edge = cluster.edges["edge-1"];
    let rest = RestClient::new(edge, &cluster.ca_path());
    let sink = PushReceiver::start().await;
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    dms_and_mentions_notify_only_inactive_members(&rest, &sink, &alice, &bob).await;

    // Down hard; messages keep coming; back up: each is pushed once.
    cluster.kill("notify-1");
    let dm = open_dm(&rest, &alice, &bob).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(say(&rest, &alice, &dm, &format!("while notify was down {i}")).await);
    }
    cluster.start_node("notify-1").await;
    sink.wait_for(2 + sent.len(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pushes = by_key(&sink.received());
    assert_eq!(pushes.len(), 2 + sent.len(), "{pushes:?}");
    for message in &sent {
        assert!(
            pushes.values().any(|p| p["message_id"] == message["id"]),
            "no push for {message}"
        );
    }

    // A graceful restart too.
    cluster.stop("notify-1");
    let late = say(&rest, &alice, &dm, "after a clean stop").await;
    cluster.start_node("notify-1").await;
    sink.wait_for(3 + sent.len(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pushes = by_key(&sink.received());
    assert_eq!(pushes.len(), 3 + sent.len());
    assert!(pushes.values().any(|p| p["message_id"] == late["id"]));
}
