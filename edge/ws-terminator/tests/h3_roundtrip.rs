//! REST v1 over real HTTP/3: the h3 endpoint on 127.0.0.1:0 UDP with a `confab dev` CA
//! from a temporary directory, spoken to by the crate's own HTTP/3 client. The core behind
//! the router is the shared in-memory fake from `common`.

mod common;

use bytes::Bytes;
use common::{FakeCore, Tokens};
use confab_chat::CoreApi;
use confab_flannel_cache::{Flannel, FlannelConfig};
use confab_proto::limits::MAX_BODY_BYTES;
use confab_ws_terminator::h3::client::{H3Client, h3_request};
use confab_ws_terminator::h3::serve_h3;
use confab_ws_terminator::rest::RestApi;
use confab_ws_terminator::tls::{TlsMaterial, ensure_local_tls};
use http::Method;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

struct Server {
    addr: SocketAddr,
    tls: TlsMaterial,
    token: String,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let tls = ensure_local_tls(dir.path(), &[]).unwrap();
    let tokens = Tokens::new();
    let token = tokens.token("U1");
    let core: Arc<dyn CoreApi> = FakeCore::new();
    let flannel = Flannel::new(core.clone(), FlannelConfig::default());
    let rest = Arc::new(RestApi::new(core, flannel, tokens.verifier, false));

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let handle = serve_h3(socket, &tls, rest, stopped).unwrap();
    Server {
        addr,
        tls,
        token,
        stop,
        handle,
        _dir: dir,
    }
}

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[tokio::test]
async fn rest_round_trips_over_http3() {
    let server = start().await;
    let ca = server.tls.ca_path.clone();

    // One-shot request on a fresh connection.
    let (status, body) = h3_request(
        server.addr,
        "localhost",
        &ca,
        Method::GET,
        "/healthz",
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["ok"], true);

    // Several requests on one connection, concurrently.
    let client = H3Client::connect(server.addr, "localhost", &ca)
        .await
        .unwrap();
    let login =
        serde_json::json!({"team": "acme", "email": "ann@acme.example", "password": "secret"});
    let auth = format!("Bearer {}", server.token);
    let login = Bytes::from(login.to_string());
    let authed = [("authorization", auth.as_str())];
    let (login_answer, users_answer, missing, unauthed) = tokio::join!(
        client.request(
            Method::POST,
            "/v1/auth/login",
            &[("content-type", "application/json")],
            login,
        ),
        client.request(Method::GET, "/v1/users", &authed, Bytes::new()),
        client.request(Method::GET, "/v1/nope", &[], Bytes::new()),
        client.request(Method::GET, "/v1/users?ids=U2", &[], Bytes::new()),
    );

    let (status, body) = login_answer.unwrap();
    assert_eq!(status, 200, "{body:?}");
    let body = json(&body);
    assert_eq!(body["token"], "token-for-acme");
    assert_eq!(body["user"]["email"], "ann@acme.example");

    // No ids: the router's own validation answers, proving the header got through.
    let (status, body) = users_answer.unwrap();
    assert_eq!(status, 400, "{body:?}");
    assert_eq!(json(&body)["error"]["code"], "invalid_argument");

    let (status, body) = missing.unwrap();
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["code"], "not_found");

    let (status, body) = unauthed.unwrap();
    assert_eq!(status, 401);
    assert_eq!(json(&body)["error"]["code"], "not_authed");

    // Query string and bearer token, answered from the core through the edge cache.
    let (status, body) = client
        .request(Method::GET, "/v1/users?ids=U2,U3", &authed, Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, 200, "{body:?}");
    let ids: Vec<String> = json(&body)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["U2", "U3"]);

    // A body above the limit is refused with 413 and the error body, on the same connection.
    let (status, body) = client
        .request(
            Method::POST,
            "/v1/auth/login",
            &[("content-type", "application/json")],
            Bytes::from(vec![b' '; MAX_BODY_BYTES + 1]),
        )
        .await
        .unwrap();
    assert_eq!(status, 413);
    assert_eq!(json(&body)["error"]["code"], "frame_too_large");
    let (status, _) = client
        .request(Method::GET, "/healthz", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, 200);
    client.close().await;

    // Graceful shutdown finishes in bounded time and stops answering.
    server.stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), server.handle)
        .await
        .expect("HTTP/3 endpoint drained in time")
        .unwrap();
    let after = tokio::time::timeout(
        Duration::from_secs(2),
        h3_request(
            server.addr,
            "localhost",
            &ca,
            Method::GET,
            "/healthz",
            &[],
            Bytes::new(),
        ),
    )
    .await;
    assert!(!matches!(after, Ok(Ok(_))), "answered after shutdown");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let server = start().await;
    let other = tempfile::tempdir().unwrap();
    let stranger = ensure_local_tls(other.path(), &[]).unwrap();
    let result = h3_request(
        server.addr,
        "localhost",
        &stranger.ca_path,
        Method::GET,
        "/healthz",
        &[],
        Bytes::new(),
    )
    .await;
    assert!(result.is_err());

    // By IP address, which the certificate covers, it works (method named as a string).
    let (status, _) = h3_request(
        server.addr,
        "127.0.0.1",
        &server.tls.ca_path,
        "GET",
        "/healthz",
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
}
