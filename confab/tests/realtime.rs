//! Typing, presence, read markers and the boot snapshot, through the real stack.

use confab_test_support::{RestClient, RtmClient, TestNode};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_members_only() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    let carol = rest.create_user(&alice, "carol").await;
    let channel = rest.create_channel(&alice, "chat", false).await;
    rest.add_member(&alice, &channel, &bob).await;
    let mut a = RtmClient::connect(rest.addr, rest.tls_config(), &alice.token).await;
    let mut b = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;
    let mut c = RtmClient::connect(rest.addr, rest.tls_config(), &carol.token).await;

    let reply = a
        .request(json!({"type": "typing", "channel": channel}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let typing = b.next_event("user_typing").await;
    assert_eq!(typing["channel"], json!(channel));
    assert_eq!(typing["user"], json!(alice.user_id));
    assert!(
        c.drain_events("user_typing", Duration::from_millis(400))
            .await
            .is_empty(),
        "carol is not in the channel"
    );
    assert!(
        a.drain_events("user_typing", Duration::from_millis(100))
            .await
            .is_empty(),
        "no echo to the typer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_subscriptions_and_is_batched() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    let carol = rest.create_user(&alice, "carol").await;
    let mut a = RtmClient::connect(rest.addr, rest.tls_config(), &alice.token).await;

    let reply = a
        .request(json!({"type": "presence_query", "ids": [bob.user_id, carol.user_id]}))
        .await;
    assert_eq!(
        reply["users"],
        json!([{"id": bob.user_id, "presence": "away"}, {"id": carol.user_id, "presence": "away"}]),
        "{reply}"
    );

    let reply = a
        .request(json!({"type": "presence_sub", "ids": [bob.user_id]}))
        .await;
    assert_eq!(reply["ok"], true);
    let mut b = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;
    let _c = RtmClient::connect(rest.addr, rest.tls_config(), &carol.token).await;
    let change = a.next_event("presence_change").await;
    assert_eq!(
        change["users"],
        json!([{"id": bob.user_id, "presence": "active"}]),
        "only subscribed users: {change}"
    );

    // Several quick changes arrive coalesced, never one frame per change.
    for setting in ["dnd", "away", "dnd"] {
        b.request(json!({"type": "presence_set", "presence": setting}))
            .await;
    }
    let changes = a
        .drain_events("presence_change", Duration::from_millis(800))
        .await;
    assert!(
        !changes.is_empty() && changes.len() < 3,
        "batched: {changes:?}"
    );
    let last = changes.last().unwrap();
    assert_eq!(
        last["users"].as_array().unwrap().last().unwrap()["presence"],
        "dnd",
        "{changes:?}"
    );
    assert!(
        !changes
            .iter()
            .any(|c| c.to_string().contains(&carol.user_id)),
        "carol was never subscribed"
    );

    let reply = a
        .request(json!({"type": "presence_query", "ids": [bob.user_id, carol.user_id]}))
        .await;
    assert_eq!(reply["users"][0]["presence"], "dnd");
    assert_eq!(reply["users"][1]["presence"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_lists_channels_with_unreads_and_only_needed_users() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    for i in 0..12 {
        rest.create_user(&alice, &format!("extra{i}")).await;
    }
    let channel = rest.create_channel(&alice, "news", false).await;
    rest.add_member(&alice, &channel, &bob).await;
    let (_, dm) = rest
        .post(
            "/v1/dms",
            Some(&alice.token),
            json!({"user_ids": [bob.user_id]}),
        )
        .await;
    let dm = dm["channel"]["id"].as_str().unwrap().to_owned();
    for i in 1..=5 {
        rest.post_message(&alice, &channel, &format!("n{i}"), &format!("n{i}"))
            .await;
    }

    let (status, boot) = rest.get("/v1/boot", Some(&bob.token)).await;
    assert_eq!(status, 200, "{boot}");
    assert_eq!(boot["self"]["id"], json!(bob.user_id));
    assert_eq!(boot["team"]["id"], json!(alice.team_id));
    let news = boot["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == json!(channel))
        .expect("news listed")
        .clone();
    assert_eq!(
        (
            news["last_seq"].as_u64(),
            news["last_read"].as_u64(),
            news["unread"].as_u64()
        ),
        (Some(5), Some(0), Some(5)),
        "{news}"
    );
    assert!(
        boot["channels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == json!(dm) && c["kind"] == "dm")
    );
    let users: Vec<&str> = boot["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert!(
        users.contains(&bob.user_id.as_str()) && users.contains(&alice.user_id.as_str()),
        "{users:?}"
    );
    assert!(
        users.len() <= 2,
        "boot carries only the users the first screen needs, not the team: {users:?}"
    );

    // Reading moves the marker; a second connection of the same user hears about it.
    let mut b1 = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;
    let mut b2 = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;
    let reply = b1
        .request(json!({"type": "mark", "channel": channel, "seq": 3}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let marked = b2.next_event("channel_marked").await;
    assert_eq!(marked["seq"], 3);
    let (_, boot) = rest.get("/v1/boot", Some(&bob.token)).await;
    let news = boot["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == json!(channel))
        .unwrap()
        .clone();
    assert_eq!(news["unread"], 2, "{news}");

    // Lazy user lookups by id.
    let (status, found) = rest
        .get(
            &format!("/v1/users?ids={},{}", alice.user_id, bob.user_id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(found["users"].as_array().unwrap().len(), 2, "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_are_pushed() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    let channel = rest.create_channel(&alice, "secret", true).await;
    let mut a = RtmClient::connect(rest.addr, rest.tls_config(), &alice.token).await;
    let mut b = RtmClient::connect(rest.addr, rest.tls_config(), &bob.token).await;

    rest.add_member(&alice, &channel, &bob).await;
    let joined = b.next_event("channel_joined").await;
    assert_eq!(joined["channel"]["id"], json!(channel));
    let member = a.next_event("member_joined_channel").await;
    assert_eq!(member["user"], json!(bob.user_id));

    // Bob now receives the channel's messages on his existing connection.
    rest.post_message(&alice, &channel, "welcome", "w1").await;
    assert_eq!(b.next_event("message").await["text"], "welcome");

    let (status, _) = rest
        .post(
            &format!("/v1/channels/{channel}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let left = a.next_event("member_left_channel").await;
    assert_eq!(left["user"], json!(bob.user_id));
    rest.post_message(&alice, &channel, "after you left", "w2")
        .await;
    let leaked = b.drain_events("message", Duration::from_millis(400)).await;
    assert!(leaked.is_empty(), "no messages after leaving: {leaked:?}");
}
