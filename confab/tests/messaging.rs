//! End to end through `confab dev`'s real stack (TLS, Pingora, WebSocket, fjall): members
//! exchange messages in order, retries are idempotent, history pages, resume fills gaps.

use confab_test_support::{RestClient, RtmClient, TestNode, unique};
use serde_json::json;
use std::time::Duration;

async fn setup() -> (TestNode, RestClient) {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    (node, rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_exchange_messages() {
    let (_node, rest) = setup().await;
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    let channel = rest.create_channel(&alice, "general", false).await;
    let (status, _) = rest
        .post(
            &format!("/v1/channels/{channel}/join"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);

    let mut a = RtmClient::connect(rest.addr, rest.tls_config(), &alice.token).await;
    let mut b = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;

    let reply = a.send_message(&channel, "hello bob", "c-1").await;
    assert_eq!(reply["ok"], true, "{reply}");
    let sent = &reply["message"];
    assert_eq!(sent["seq"], 1);
    assert_eq!(sent["user"], json!(alice.user_id));
    assert!(sent["ts"].as_str().unwrap().contains('.'));

    let got = b.next_event("message").await;
    assert_eq!(got["text"], "hello bob");
    assert_eq!(got["seq"], 1);
    assert_eq!(got["id"], sent["id"]);

    let reply = b.send_message(&channel, "hi alice", "c-2").await;
    assert_eq!(reply["message"]["seq"], 2);
    let got = a.next_event("message").await;
    // Alice also receives her own message as an event; skip to Bob's.
    let got = if got["seq"] == 1 {
        a.next_event("message").await
    } else {
        got
    };
    assert_eq!(got["text"], "hi alice");
    assert!(got["ts"].as_str().unwrap() > sent["ts"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_sends_are_acked_dense_and_seen_in_order() {
    let (_node, rest) = setup().await;
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    let channel = rest.create_channel(&alice, "firehose", false).await;
    rest.add_member(&alice, &channel, &bob).await;
    let mut a = RtmClient::connect(rest.addr, rest.tls_config(), &alice.token).await;
    let mut b = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;

    const N: u64 = 200;
    let mut ids = Vec::new();
    for i in 0..N {
        let id = a
            .send(json!({"type":"message","channel":channel,"text":format!("m{i}"),"client_msg_id":format!("k{i}")}))
            .await;
        ids.push(id);
    }
    for (i, id) in ids.into_iter().enumerate() {
        let reply = a.reply(id).await;
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(
            reply["message"]["seq"],
            json!(i as u64 + 1),
            "acks are dense and in send order"
        );
        assert_eq!(reply["message"]["text"], json!(format!("m{i}")));
    }
    for i in 0..N {
        let event = b.next_event("message").await;
        assert_eq!(event["seq"], json!(i + 1));
        assert_eq!(event["text"], json!(format!("m{i}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_client_msg_id_yields_one_message() {
    let (_node, rest) = setup().await;
    let alice = rest.create_team().await;
    let channel = rest.create_channel(&alice, "retry", false).await;
    let key = unique("k");

    let (status, first) = rest.post_message(&alice, &channel, "once", &key).await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = rest.post_message(&alice, &channel, "once", &key).await;
    assert_eq!(status, 201);
    assert_eq!(
        first["message"], second["message"],
        "a retry returns the original"
    );

    let mut a = RtmClient::connect(rest.addr, rest.tls_config(), &alice.token).await;
    let third = a.send_message(&channel, "once", &key).await;
    assert_eq!(third["message"], first["message"]);
    // Concurrent retries over RTM in one burst still make one message.
    let burst_key = unique("b");
    let ids: Vec<u64> = futures_ids(&mut a, &channel, &burst_key, 5).await;
    let mut seqs = Vec::new();
    for id in ids {
        seqs.push(a.reply(id).await["message"]["seq"].clone());
    }
    assert!(seqs.windows(2).all(|w| w[0] == w[1]), "{seqs:?}");

    let (_, history) = rest
        .get(
            &format!("/v1/channels/{channel}/history"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        2,
        "{history}"
    );
}

async fn futures_ids(client: &mut RtmClient, channel: &str, key: &str, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            client
                .send(json!({"type":"message","channel":channel,"text":"dup","client_msg_id":key}))
                .await,
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_newest_first() {
    let (_node, rest) = setup().await;
    let alice = rest.create_team().await;
    let channel = rest.create_channel(&alice, "paged", false).await;
    let mut a = RtmClient::connect(rest.addr, rest.tls_config(), &alice.token).await;
    for i in 1..=25 {
        a.send_message(&channel, &format!("m{i}"), &format!("k{i}"))
            .await;
    }
    let mut seen: Vec<u64> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/v1/channels/{channel}/history?limit=10&before={b}"),
            None => format!("/v1/channels/{channel}/history?limit=10"),
        };
        let (status, page) = rest.get(&path, Some(&alice.token)).await;
        assert_eq!(status, 200, "{page}");
        let seqs: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] == w[1] + 1),
            "newest first, dense: {seqs:?}"
        );
        seen.extend(&seqs);
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        before = seqs.last().copied();
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_exactly_what_was_missed() {
    let (_node, rest) = setup().await;
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    let channel = rest.create_channel(&alice, "resume", false).await;
    rest.add_member(&alice, &channel, &bob).await;

    let mut b = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;
    for i in 1..=3 {
        rest.post_message(&alice, &channel, &format!("seen {i}"), &format!("s{i}"))
            .await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = b.next_event("message").await["seq"].as_u64().unwrap();
    }
    assert_eq!(last, 3);
    b.close().await;

    for i in 4..=9 {
        rest.post_message(&alice, &channel, &format!("missed {i}"), &format!("s{i}"))
            .await;
    }
    let mut b = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;
    let id = b
        .send(json!({"type":"resume","cursors":{channel.clone(): last}}))
        .await;
    let reply = b.reply(id).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let replayed: Vec<u64> = b
        .events
        .drain(..)
        .filter(|e| e["type"] == "message")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        replayed,
        (4..=9).collect::<Vec<u64>>(),
        "exactly the missed messages, in order"
    );

    // Live delivery continues after the replay without duplicates.
    rest.post_message(&alice, &channel, "live", "s10").await;
    let live = b.next_event("message").await;
    assert_eq!(live["seq"], 10);
    let extra = b.drain_events("message", Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "no duplicates: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_are_idempotent_per_member_set() {
    let (_node, rest) = setup().await;
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    let carol = rest.create_user(&alice, "carol").await;

    let open = |by: &confab_test_support::Session, ids: Vec<&str>| {
        let rest = rest.clone();
        let token = by.token.clone();
        let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        async move {
            rest.post("/v1/dms", Some(&token), json!({"user_ids": ids}))
                .await
        }
    };
    let (status, first) = open(&alice, vec![&bob.user_id]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["channel"]["kind"], "dm");
    let (_, again) = open(&alice, vec![&bob.user_id]).await;
    let (_, from_bob) = open(&bob, vec![&alice.user_id]).await;
    assert_eq!(first["channel"]["id"], again["channel"]["id"]);
    assert_eq!(first["channel"]["id"], from_bob["channel"]["id"]);

    let (_, group) = open(&alice, vec![&bob.user_id, &carol.user_id]).await;
    assert_eq!(group["channel"]["kind"], "group_dm");
    let (_, group_again) = open(&carol, vec![&bob.user_id, &alice.user_id, &carol.user_id]).await;
    assert_eq!(group["channel"]["id"], group_again["channel"]["id"]);
    assert_ne!(group["channel"]["id"], first["channel"]["id"]);

    // The DM carries messages between exactly its members.
    let dm = first["channel"]["id"].as_str().unwrap().to_owned();
    let mut b = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;
    let (status, _) = rest.post_message(&alice, &dm, "psst", "dm-1").await;
    assert_eq!(status, 201);
    assert_eq!(b.next_event("message").await["text"], "psst");
    let (status, _) = rest.post_message(&carol, &dm, "me too", "dm-2").await;
    assert!(
        status == 403 || status == 404,
        "carol is not in the DM: {status}"
    );
}
