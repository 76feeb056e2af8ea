//! Bad input gets a clear error and loses nothing (DESIGN.md §5, §8): malformed frames,
//! unknown commands, oversize frames and texts are answered with an error, the connection
//! stays usable, and a rejected send stores nothing.

use bytes::Bytes;
use confab_proto::limits::{MAX_FRAME_BYTES, MAX_TEXT_BYTES};
use confab_test_support::{RestClient, RtmClient, TestNode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_replies_and_the_connection_stays_usable() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let alice = rest.create_team().await;
    let channel = rest.create_channel(&alice, "strict", false).await;
    let mut rtm = RtmClient::connect(rest.addr, rest.tls_config(), &alice.token).await;

    rtm.send_text("{this is not json".into()).await;
    let reply = rtm.next_frame().await.expect("error reply");
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], "invalid_json", "{reply}");

    let reply = rtm.request(json!({"type": "teleport"})).await;
    assert_eq!(reply["error"]["code"], "unknown_command", "{reply}");

    let reply = rtm
        .request(json!({"type": "message", "channel": channel}))
        .await;
    assert_eq!(
        reply["error"]["code"], "invalid_argument",
        "missing fields: {reply}"
    );

    let huge_frame = json!({"type": "ping", "pad": "x".repeat(MAX_FRAME_BYTES)});
    let id = rtm.send(huge_frame).await;
    let reply = rtm
        .next_frame()
        .await
        .expect("error reply to an oversize frame");
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], "frame_too_large", "{reply}");
    let _ = id;

    let long_text = "y".repeat(MAX_TEXT_BYTES + 1);
    let reply = rtm.send_message(&channel, &long_text, "too-long").await;
    assert_eq!(reply["error"]["code"], "message_too_long", "{reply}");

    let reply = rtm.send_message(&channel, "   ", "blank").await;
    assert_eq!(reply["error"]["code"], "empty_message", "{reply}");

    // Still usable, and the rejected sends left no trace.
    let pong = rtm.request(json!({"type": "ping"})).await;
    assert_eq!(pong["ok"], true);
    assert_eq!(pong["type"], "pong");
    let reply = rtm.send_message(&channel, "fine", "ok-1").await;
    assert_eq!(
        reply["message"]["seq"], 1,
        "no seq was consumed by rejected sends: {reply}"
    );
    let (_, history) = rest
        .get(
            &format!("/v1/channels/{channel}/history"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        1,
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rest_requests_get_clear_errors() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let alice = rest.create_team().await;
    let channel = rest.create_channel(&alice, "strict", false).await;
    let token = Some(alice.token.as_str());

    let (status, body) = rest
        .raw(
            "POST",
            "/v1/messages",
            token,
            Some(Bytes::from_static(b"{nope")),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_json")),
        "{body}"
    );

    let too_long =
        json!({"channel": channel, "text": "z".repeat(MAX_TEXT_BYTES + 1), "client_msg_id": "a"});
    let (status, body) = rest.post("/v1/messages", token, too_long).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("message_too_long")),
        "{body}"
    );

    let (status, body) = rest.get("/v1/nowhere", token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    let (status, body) = rest
        .post("/v1/channels", token, json!({"name": "has spaces"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );

    let (status, body) = rest
        .post("/v1/channels", token, json!({"name": "strict"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("name_taken")),
        "{body}"
    );

    let (status, body) = rest
        .post("/v1/teams", None, json!({"name": "Dup", "domain": alice.domain, "owner": {"email": "x@y.z", "name": "X", "password": "long enough"}}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("domain_taken")),
        "{body}"
    );

    let (status, body) = rest
        .post(
            "/v1/auth/login",
            None,
            json!({"team": alice.domain, "email": alice.email, "password": "wrong password"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_credentials")),
        "{body}"
    );

    // Only admins create users.
    let bob = rest.create_user(&alice, "bob").await;
    let (status, body) = rest
        .post(
            "/v1/users",
            Some(&bob.token),
            json!({"email": "c@d.e", "name": "C", "password": "long enough"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    let (_, history) = rest
        .get(&format!("/v1/channels/{channel}/history"), token)
        .await;
    assert_eq!(history["messages"], json!([]), "nothing stored: {history}");
}
