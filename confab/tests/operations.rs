//! What operators and outside clients rely on: health, metrics, the OpenAPI document
//! matching the live server, HTTP/3 serving the same REST API, the local CA on disk.

use confab_test_support::{RestClient, TestNode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_local_ca() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let (status, _) = rest.get("/healthz", None).await;
    assert_eq!(status, 200);
    assert!(node.data_dir().join("tls/ca.pem").exists());
    let alice = rest.create_team().await;
    let channel = rest.create_channel(&alice, "m", false).await;
    rest.post_message(&alice, &channel, "count me", "m1").await;
    let (status, body) = rest.raw_bytes("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains("confab_sequencer_batch_messages"),
        "metrics exposition: {}",
        &text[..text.len().min(500)]
    );
}

/// Checks that `value` has every `required` property of `schema` (resolving `$ref`s),
/// recursively through objects and arrays: the live server keeps the documented shape.
fn check_shape(doc: &Value, schema: &Value, value: &Value, path: &str) {
    let schema = resolve(doc, schema);
    if let Some(required) = schema["required"].as_array() {
        for field in required {
            let field = field.as_str().unwrap();
            assert!(
                value.get(field).is_some(),
                "{path}: missing required field {field:?} in {value}"
            );
        }
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), value.as_object())
    {
        for (name, sub) in properties {
            if let Some(inner) = object.get(name) {
                check_shape(doc, sub, inner, &format!("{path}.{name}"));
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, inner) in array.iter().enumerate() {
            check_shape(doc, items, inner, &format!("{path}[{i}]"));
        }
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            )
        }
        None => schema,
    }
}

fn response_schema<'a>(doc: &'a Value, template: &str, method: &str, status: u16) -> &'a Value {
    let operation = &doc["paths"][template][method];
    assert!(
        operation.is_object(),
        "openapi.json documents {method} {template}"
    );
    let response = resolve(doc, &operation["responses"][status.to_string()]);
    assert!(
        response.is_object(),
        "openapi.json documents {status} for {method} {template}"
    );
    &response["content"]["application/json"]["schema"]
}

/// (OpenAPI path template, method, concrete path, JSON body, token).
type DocumentedCall<'a> = (
    &'static str,
    &'static str,
    String,
    Option<Value>,
    Option<&'a str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_server_matches_its_openapi_document() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let (status, doc) = rest.get("/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3."),
        "{doc}"
    );

    let alice = rest.create_team().await;
    let bob = rest.create_user(&alice, "bob").await;
    let t = Some(alice.token.as_str());
    let channel = rest.create_channel(&alice, "documented", false).await;
    let mut calls: Vec<DocumentedCall<'_>> = vec![
        (
            "/v1/teams",
            "post",
            "/v1/teams".into(),
            Some(
                json!({"name":"D","domain":confab_test_support::unique("d"),"owner":{"email":"o@d.e","name":"O","password":"long enough"}}),
            ),
            None,
        ),
        (
            "/v1/auth/login",
            "post",
            "/v1/auth/login".into(),
            Some(
                json!({"team":alice.domain,"email":alice.email,"password":confab_test_support::rest::PASSWORD}),
            ),
            None,
        ),
        (
            "/v1/users",
            "post",
            "/v1/users".into(),
            Some(json!({"email":"new@d.e","name":"New","password":"long enough"})),
            t,
        ),
        (
            "/v1/users",
            "get",
            format!("/v1/users?ids={}", bob.user_id),
            None,
            t,
        ),
        (
            "/v1/channels",
            "post",
            "/v1/channels".into(),
            Some(json!({"name":"another","private":true})),
            t,
        ),
        ("/v1/channels", "get", "/v1/channels".into(), None, t),
        (
            "/v1/channels/{id}/members",
            "post",
            format!("/v1/channels/{channel}/members"),
            Some(json!({"user_ids":[bob.user_id]})),
            t,
        ),
        (
            "/v1/dms",
            "post",
            "/v1/dms".into(),
            Some(json!({"user_ids":[bob.user_id]})),
            t,
        ),
        (
            "/v1/messages",
            "post",
            "/v1/messages".into(),
            Some(json!({"channel":channel,"text":"hi","client_msg_id":"doc-1"})),
            t,
        ),
        (
            "/v1/channels/{id}/history",
            "get",
            format!("/v1/channels/{channel}/history?limit=5"),
            None,
            t,
        ),
        ("/v1/boot", "get", "/v1/boot".into(), None, t),
        (
            "/v1/channels/{id}/join",
            "post",
            format!("/v1/channels/{channel}/join"),
            Some(json!({})),
            Some(bob.token.as_str()),
        ),
        (
            "/v1/channels/{id}/leave",
            "post",
            format!("/v1/channels/{channel}/leave"),
            Some(json!({})),
            Some(bob.token.as_str()),
        ),
        (
            "/v1/messages",
            "post",
            "/v1/messages".into(),
            Some(json!({"channel":"Cnope","text":"hi","client_msg_id":"doc-2"})),
            t,
        ),
    ];
    for (template, method, path, body, token) in calls.drain(..) {
        let (status, value) = match body {
            Some(body) => rest.post(&path, token, body).await,
            None => rest.get(&path, token).await,
        };
        assert!(status < 500, "{method} {path}: {status} {value}");
        let schema = response_schema(&doc, template, method, status);
        check_shape(&doc, schema, &value, &format!("{method} {path} {status}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_is_served_over_http3_on_the_same_port() {
    let node = TestNode::start().await;
    let rest = RestClient::new(node.addr, &node.ca_path);
    let alice = rest.create_team().await;
    let channel = rest.create_channel(&alice, "quic", false).await;
    rest.post_message(&alice, &channel, "over tcp", "q1").await;

    let auth = format!("Bearer {}", alice.token);
    let (status, body) = confab_ws_terminator::h3::client::h3_request(
        node.addr,
        "localhost",
        &node.ca_path,
        "GET",
        &format!("/v1/channels/{channel}/history"),
        &[("authorization", auth.as_str())],
        bytes::Bytes::new(),
    )
    .await
    .expect("HTTP/3 request");
    assert_eq!(status, 200);
    let history: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(history["messages"][0]["text"], "over tcp");

    let post = json!({"channel": channel, "text": "over quic", "client_msg_id": "q2"}).to_string();
    let (status, body) = confab_ws_terminator::h3::client::h3_request(
        node.addr,
        "localhost",
        &node.ca_path,
        "POST",
        "/v1/messages",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        bytes::Bytes::from(post),
    )
    .await
    .expect("HTTP/3 post");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (_, history) = rest
        .get(
            &format!("/v1/channels/{channel}/history"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(history["messages"][0]["text"], "over quic");
}
