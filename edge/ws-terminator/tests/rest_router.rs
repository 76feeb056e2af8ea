//! The REST router's contract (DESIGN.md §5) without a socket: routes, statuses, the
//! error body, token checks, body limits, and which reads come from the edge cache.

mod common;

use bytes::Bytes;
use common::{FakeCore, Tokens};
use confab_flannel_cache::{Flannel, FlannelConfig};
use confab_proto::limits::{MAX_BODY_BYTES, MAX_HISTORY_LIMIT};
use confab_ws_terminator::rest::{RestApi, RestRequest, RestResponse};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;

struct Fixture {
    core: Arc<FakeCore>,
    tokens: Tokens,
    api: RestApi,
}

fn fixture(allow_team_creation: bool) -> Fixture {
    let core = FakeCore::new();
    let tokens = Tokens::new();
    let flannel = Flannel::new(core.clone(), FlannelConfig::default());
    let api = RestApi::new(
        core.clone(),
        flannel,
        tokens.verifier.clone(),
        allow_team_creation,
    );
    Fixture { core, tokens, api }
}

fn request(method: Method, target: &str, token: Option<&str>, body: &[u8]) -> RestRequest {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    RestRequest {
        method,
        path,
        query,
        headers,
        body: Bytes::copy_from_slice(body),
    }
}

fn json_of(response: &RestResponse) -> Value {
    assert_eq!(response.content_type, "application/json");
    serde_json::from_slice(&response.body).expect("JSON body")
}

fn assert_error(response: &RestResponse, status: u16, code: &str) {
    assert_eq!(
        response.status.as_u16(),
        status,
        "body: {:?}",
        response.body
    );
    let body = json_of(response);
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["msg"].is_string(), "body: {body}");
}

#[tokio::test]
async fn health_metrics_and_openapi_need_no_token() {
    let f = fixture(true);
    let health = f
        .api
        .handle(request(Method::GET, "/healthz", None, b""))
        .await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(json_of(&health), json!({ "ok": true }));

    let openapi = f
        .api
        .handle(request(Method::GET, "/v1/openapi.json", None, b""))
        .await;
    assert_eq!(openapi.status, StatusCode::OK);
    serde_json::from_slice::<Value>(&openapi.body).expect("the OpenAPI document is JSON");

    let metrics = f
        .api
        .handle(request(Method::GET, "/metrics", None, b""))
        .await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.content_type.starts_with("text/plain"));
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    // The health request above was counted under its route pattern.
    assert!(text.contains("confab_edge_rest_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let f = fixture(true);
    let token = f.tokens.token("U1");
    for path in [
        "/nope",
        "/v1/channels/C1/nope",
        "/v1/channels//join",
        "/v1/boot/extra",
    ] {
        let response = f
            .api
            .handle(request(Method::GET, path, Some(&token), b""))
            .await;
        assert_error(&response, 404, "not_found");
    }
    let response = f
        .api
        .handle(request(Method::DELETE, "/v1/channels", Some(&token), b""))
        .await;
    assert_error(&response, 405, "method_not_allowed");
    let response = f
        .api
        .handle(request(Method::GET, "/v1/messages", Some(&token), b""))
        .await;
    assert_error(&response, 405, "method_not_allowed");
    // No web client configured: the root is a plain 404.
    let response = f.api.handle(request(Method::GET, "/", None, b"")).await;
    assert_error(&response, 404, "not_found");
}

#[tokio::test]
async fn web_assets_hook_serves_root_and_static() {
    let f = fixture(true);
    let api = f
        .api
        .with_web_assets(Some(Arc::new(|path: &str| match path {
            "/" => Some((
                "text/html; charset=utf-8",
                Bytes::from_static(b"<h1>confab</h1>"),
            )),
            "/static/app.js" => Some(("text/javascript", Bytes::from_static(b"1"))),
            _ => None,
        })));
    let root = api.handle(request(Method::GET, "/", None, b"")).await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(root.content_type, "text/html; charset=utf-8");
    let js = api
        .handle(request(Method::GET, "/static/app.js", None, b""))
        .await;
    assert_eq!(js.body, Bytes::from_static(b"1"));
    let missing = api
        .handle(request(Method::GET, "/static/nope.css", None, b""))
        .await;
    assert_error(&missing, 404, "not_found");
}

#[tokio::test]
async fn tokens_missing_forged_or_expired_are_not_authed() {
    let f = fixture(true);
    let cases = [
        None,
        Some(Tokens::forged("U1")),
        Some(f.tokens.expired("U1")),
        Some("not-a-jwt".to_owned()),
    ];
    for token in cases {
        for (method, path) in [
            (Method::GET, "/v1/boot"),
            (Method::GET, "/v1/channels"),
            (Method::POST, "/v1/messages"),
            (Method::GET, "/v1/users?ids=U1"),
        ] {
            let response = f
                .api
                .handle(request(method, path, token.as_deref(), b"{}"))
                .await;
            assert_error(&response, 401, "not_authed");
        }
    }
    // A scheme other than Bearer is no token either.
    let mut req = request(Method::GET, "/v1/channels", None, b"");
    req.headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {}", f.tokens.token("U1"))).unwrap(),
    );
    assert_error(&f.api.handle(req).await, 401, "not_authed");
}

#[tokio::test]
async fn bodies_are_checked_before_the_core_is_asked() {
    let f = fixture(true);
    let token = f.tokens.token("U1");
    let response = f
        .api
        .handle(request(
            Method::POST,
            "/v1/messages",
            Some(&token),
            b"{nope",
        ))
        .await;
    assert_error(&response, 400, "invalid_json");
    // A missing field is invalid JSON for this endpoint too.
    let response = f
        .api
        .handle(request(
            Method::POST,
            "/v1/messages",
            Some(&token),
            br#"{"channel":"C1"}"#,
        ))
        .await;
    assert_error(&response, 400, "invalid_json");
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let response = f
        .api
        .handle(request(Method::POST, "/v1/channels", Some(&token), &huge))
        .await;
    assert_error(&response, 413, "frame_too_large");
}

#[tokio::test]
async fn creates_answer_201_and_core_errors_keep_their_codes() {
    let f = fixture(true);
    let token = f.tokens.token("U1");
    let created = f
        .api
        .handle(request(
            Method::POST,
            "/v1/channels",
            Some(&token),
            br#"{"name":"random","private":false}"#,
        ))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(json_of(&created)["channel"]["name"], "random");

    let taken = f
        .api
        .handle(request(
            Method::POST,
            "/v1/channels",
            Some(&token),
            br#"{"name":"random"}"#,
        ))
        .await;
    assert_error(&taken, 409, "name_taken");

    let posted = f
        .api
        .handle(request(
            Method::POST,
            "/v1/messages",
            Some(&token),
            br#"{"channel":"C1","text":"hi","client_msg_id":"x1"}"#,
        ))
        .await;
    assert_eq!(posted.status, StatusCode::CREATED);
    let message = &json_of(&posted)["message"];
    assert_eq!(message["seq"], 1);
    assert_eq!(message["client_msg_id"], "x1");

    let nowhere = f
        .api
        .handle(request(
            Method::POST,
            "/v1/messages",
            Some(&token),
            br#"{"channel":"C404","text":"hi","client_msg_id":"x2"}"#,
        ))
        .await;
    assert_error(&nowhere, 404, "channel_not_found");

    let outsider = f.tokens.token("U3");
    let not_member = f
        .api
        .handle(request(
            Method::POST,
            "/v1/messages",
            Some(&outsider),
            br#"{"channel":"C1","text":"hi","client_msg_id":"x3"}"#,
        ))
        .await;
    assert_error(&not_member, 403, "not_in_channel");

    let user = f
        .api
        .handle(request(
            Method::POST,
            "/v1/users",
            Some(&token),
            br#"{"email":"new@example.com","name":"New","password":"pw"}"#,
        ))
        .await;
    assert_eq!(user.status, StatusCode::CREATED);
    assert_eq!(json_of(&user)["user"]["email"], "new@example.com");
    let forbidden = f
        .api
        .handle(request(
            Method::POST,
            "/v1/users",
            Some(&outsider),
            br#"{"email":"x@example.com","name":"X","password":"pw"}"#,
        ))
        .await;
    assert_error(&forbidden, 403, "forbidden");
}

#[tokio::test]
async fn team_creation_and_login_need_no_token_and_can_be_turned_off() {
    let open = fixture(true);
    let body =
        br#"{"name":"Acme","domain":"acme2","owner":{"email":"a@b.c","name":"A","password":"pw"}}"#;
    let created = open
        .api
        .handle(request(Method::POST, "/v1/teams", None, body))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(json_of(&created)["token"].is_string());
    let taken =
        br#"{"name":"Acme","domain":"taken","owner":{"email":"a@b.c","name":"A","password":"pw"}}"#;
    assert_error(
        &open
            .api
            .handle(request(Method::POST, "/v1/teams", None, taken))
            .await,
        409,
        "domain_taken",
    );

    let closed = fixture(false);
    let refused = closed
        .api
        .handle(request(Method::POST, "/v1/teams", None, body))
        .await;
    assert_error(&refused, 403, "team_creation_disabled");
    assert!(!closed.core.calls().contains(&"create_team".to_owned()));

    let login = open
        .api
        .handle(request(
            Method::POST,
            "/v1/auth/login",
            None,
            br#"{"team":"acme","email":"U1@example.com","password":"secret"}"#,
        ))
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let wrong = open
        .api
        .handle(request(
            Method::POST,
            "/v1/auth/login",
            None,
            br#"{"team":"acme","email":"U1@example.com","password":"nope"}"#,
        ))
        .await;
    assert_error(&wrong, 401, "invalid_credentials");
}

#[tokio::test]
async fn history_parameters() {
    let f = fixture(true);
    let token = f.tokens.token("U1");
    for n in 0..5 {
        f.core.store_message("C1", "U1", &format!("m{n}"));
    }
    let page = f
        .api
        .handle(request(
            Method::GET,
            "/v1/channels/C1/history?limit=2&before=5",
            Some(&token),
            b"",
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let body = json_of(&page);
    let seqs: Vec<u64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![4, 3]);
    assert_eq!(body["has_more"], true);

    let clamped = f
        .api
        .handle(request(
            Method::GET,
            "/v1/channels/C1/history?limit=100000",
            Some(&token),
            b"",
        ))
        .await;
    assert_eq!(clamped.status, StatusCode::OK);
    assert_eq!(*f.core.last_history_limit.lock(), Some(MAX_HISTORY_LIMIT));

    for bad in ["limit=0", "limit=ten", "before=-1"] {
        let response = f
            .api
            .handle(request(
                Method::GET,
                &format!("/v1/channels/C1/history?{bad}"),
                Some(&token),
                b"",
            ))
            .await;
        assert_error(&response, 400, "invalid_argument");
    }
}

#[tokio::test]
async fn users_and_boot_come_from_the_edge_cache() {
    let f = fixture(true);
    let token = f.tokens.token("U1");
    let first = f
        .api
        .handle(request(
            Method::GET,
            "/v1/users?ids=U2%2CU3,U404",
            Some(&token),
            b"",
        ))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let ids: Vec<String> = json_of(&first)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec!["U2", "U3"]);
    let core_calls = |core: &FakeCore| {
        core.calls()
            .iter()
            .filter(|c| c.starts_with("users"))
            .count()
    };
    let after_first = core_calls(&f.core);
    let second = f
        .api
        .handle(request(
            Method::GET,
            "/v1/users?ids=U2,U3",
            Some(&token),
            b"",
        ))
        .await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(
        core_calls(&f.core),
        after_first,
        "the second lookup is a cache hit"
    );

    let missing = f
        .api
        .handle(request(Method::GET, "/v1/users", Some(&token), b""))
        .await;
    assert_error(&missing, 400, "invalid_argument");

    let boot = f
        .api
        .handle(request(Method::GET, "/v1/boot", Some(&token), b""))
        .await;
    assert_eq!(boot.status, StatusCode::OK);
    let body = json_of(&boot);
    assert_eq!(body["self"]["id"], "U1");
    assert_eq!(body["team"]["domain"], "acme");
    assert_eq!(body["channels"][0]["id"], "C1");
}

#[tokio::test]
async fn channel_membership_routes() {
    let f = fixture(true);
    let token = f.tokens.token("U3");
    let joined = f
        .api
        .handle(request(
            Method::POST,
            "/v1/channels/C1/join",
            Some(&token),
            b"",
        ))
        .await;
    assert_eq!(joined.status, StatusCode::OK);
    assert_eq!(json_of(&joined)["channel"]["id"], "C1");
    let left = f
        .api
        .handle(request(
            Method::POST,
            "/v1/channels/C1/leave",
            Some(&token),
            b"",
        ))
        .await;
    assert_eq!(left.status, StatusCode::OK);
    assert_eq!(json_of(&left), json!({ "ok": true }));
    let missing = f
        .api
        .handle(request(
            Method::POST,
            "/v1/channels/C404/join",
            Some(&token),
            b"",
        ))
        .await;
    assert_error(&missing, 404, "channel_not_found");
    let list = f
        .api
        .handle(request(Method::GET, "/v1/channels", Some(&token), b""))
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(json_of(&list)["channels"].is_array());
    let rtm = f
        .api
        .handle(request(Method::GET, "/v1/rtm", Some(&token), b""))
        .await;
    assert_error(&rtm, 400, "invalid_argument");
}
