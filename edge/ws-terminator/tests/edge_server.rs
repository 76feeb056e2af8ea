//! The real edge server over TLS on `127.0.0.1:0`, with the fake core behind it: REST on
//! HTTP/1.1 with keep-alive, the authenticated WSS upgrade, frame limits, and a draining
//! shutdown. (Runs against the real core are the lead's end-to-end suites.)

mod common;

use common::{FakeCore, Tokens};
use confab_flannel_cache::{Flannel, FlannelConfig};
use confab_ws_terminator::tls::{TlsMaterial, client_config_trusting, ensure_local_tls};
use confab_ws_terminator::{EdgeConfig, EdgeSettings, RunningEdge, start};
use futures::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    _dir: tempfile::TempDir,
    tls: TlsMaterial,
    core: Arc<FakeCore>,
    tokens: Tokens,
    connector: TlsConnector,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls = ensure_local_tls(dir.path(), &[]).unwrap();
        let client = client_config_trusting(&tls.ca_path, &[b"http/1.1".to_vec()]).unwrap();
        Self {
            _dir: dir,
            tls,
            core: FakeCore::new(),
            tokens: Tokens::new(),
            connector: TlsConnector::from(client),
        }
    }

    async fn start(&self, settings: EdgeSettings) -> RunningEdge {
        let flannel = Flannel::new(self.core.clone(), FlannelConfig::default());
        let tls = TlsMaterial {
            ca_path: self.tls.ca_path.clone(),
            cert_path: self.tls.cert_path.clone(),
            key_path: self.tls.key_path.clone(),
            cert_chain: self.tls.cert_chain.clone(),
            key: self.tls.key.clone_key(),
        };
        let mut config = EdgeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            tls,
            self.core.clone(),
            flannel,
            self.tokens.verifier.clone(),
        );
        config.settings = settings;
        start(config).await.expect("edge starts")
    }

    async fn tls(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        self.connector.connect(name, tcp).await.unwrap()
    }

    async fn rtm(
        &self,
        addr: SocketAddr,
        token: &str,
    ) -> Result<WebSocketStream<TlsStream<TcpStream>>, Box<tokio_tungstenite::tungstenite::Error>>
    {
        let stream = self.tls(addr).await;
        let url = format!("wss://localhost:{}/v1/rtm?token={token}", addr.port());
        let config = WebSocketConfig::default()
            .max_message_size(Some(4 << 20))
            .max_frame_size(Some(4 << 20));
        tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map(|(ws, _)| ws)
            .map_err(Box::new)
    }
}

/// One HTTP/1.1 exchange on a kept-alive connection: (status, body).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    stream.get_mut().flush().await.unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await.unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .expect("status")
        .parse()
        .unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
    };
    (status, value)
}

async fn next_json(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("frame");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_over_tls_with_keep_alive() {
    let fixture = Fixture::new();
    let edge = fixture.start(EdgeSettings::default()).await;
    assert_ne!(edge.local_addr.port(), 0);
    let mut conn = BufReader::new(fixture.tls(edge.local_addr).await);
    let (status, body) = exchange(&mut conn, "GET", "/healthz", None, "").await;
    assert_eq!((status, body), (200, json!({ "ok": true })));
    // Same connection, next request: keep-alive works.
    let (status, body) = exchange(&mut conn, "GET", "/v1/channels", None, "").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "not_authed");
    let token = fixture.tokens.token("U1");
    let (status, body) = exchange(
        &mut conn,
        "POST",
        "/v1/messages",
        Some(&token),
        r#"{"channel":"C1","text":"over https","client_msg_id":"h1"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"]["text"], "over https");
    let (status, body) = exchange(&mut conn, "POST", "/v1/messages", Some(&token), "{bad").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_json");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtm_upgrade_commands_and_limits() {
    let fixture = Fixture::new();
    let edge = fixture.start(EdgeSettings::default()).await;
    let addr = edge.local_addr;

    // Refused before the upgrade, with the JSON error body.
    let refused = fixture
        .rtm(addr, "forged")
        .await
        .expect_err("no upgrade without a token");
    match *refused {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status().as_u16(), 401);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "not_authed");
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }

    let mut ws = fixture
        .rtm(addr, &fixture.tokens.token("U1"))
        .await
        .expect("upgraded");
    assert_eq!(next_json(&mut ws).await, json!({ "type": "hello" }));
    ws.send(Message::text(r#"{"id":1,"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!({ "reply_to": 1, "ok": true, "type": "pong" })
    );

    ws.send(Message::text(
        r#"{"id":2,"type":"message","channel":"C1","text":"over wss","client_msg_id":"w1"}"#,
    ))
    .await
    .unwrap();
    let mut ack = None;
    let mut event = None;
    while ack.is_none() || event.is_none() {
        let frame = next_json(&mut ws).await;
        if frame["reply_to"] == 2 {
            ack = Some(frame);
        } else if frame["type"] == "message" {
            event = Some(frame);
        }
    }
    assert_eq!(ack.unwrap()["message"]["seq"], 1);
    assert_eq!(event.unwrap()["text"], "over wss");

    // Above the frame limit but not abusive: an error reply, and the connection stays.
    let big = format!(
        r#"{{"id":3,"type":"ping","pad":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    ws.send(Message::text(big)).await.unwrap();
    let error = next_json(&mut ws).await;
    assert_eq!(error["error"]["code"], "frame_too_large");
    ws.send(Message::binary(vec![0u8; 8])).await.unwrap();
    assert_eq!(next_json(&mut ws).await["ok"], false);
    ws.send(Message::text(r#"{"id":4,"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["reply_to"], 4);

    // Far above it: the connection is closed.
    let huge = "x".repeat(2 << 20);
    let _ = ws.send(Message::text(huge)).await;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("closed in time");
    if let Some(code) = closed {
        assert_eq!(code, 1009);
    }
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_goodbye_and_two_edges_share_a_process() {
    let fixture = Fixture::new();
    let settings = EdgeSettings {
        drain_grace: Duration::from_secs(3),
        ..EdgeSettings::default()
    };
    let first = fixture.start(settings.clone()).await;
    let second = fixture.start(settings).await;
    assert_ne!(first.local_addr, second.local_addr);

    let token = fixture.tokens.token("U2");
    let mut on_first = fixture.rtm(first.local_addr, &token).await.unwrap();
    let mut on_second = fixture.rtm(second.local_addr, &token).await.unwrap();
    assert_eq!(next_json(&mut on_first).await["type"], "hello");
    assert_eq!(next_json(&mut on_second).await["type"], "hello");

    // An idle keep-alive HTTP connection must not hold the shutdown up.
    let mut idle = BufReader::new(fixture.tls(first.local_addr).await);
    assert_eq!(
        exchange(&mut idle, "GET", "/healthz", None, "").await.0,
        200
    );

    let addr = first.local_addr;
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(first.shutdown());
    assert_eq!(
        next_json(&mut on_first).await,
        json!({ "type": "goodbye", "reason": "server_shutdown" })
    );
    let close = tokio::time::timeout(WAIT, on_first.next())
        .await
        .expect("close in time");
    assert!(matches!(
        close,
        Some(Ok(Message::Close(_))) | None | Some(Err(_))
    ));
    shutdown.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "drained without waiting out the grace"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    let mut buf = [0u8; 1];
    let idle_closed = tokio::time::timeout(WAIT, idle.read(&mut buf))
        .await
        .expect("idle closed");
    assert!(matches!(idle_closed, Ok(0) | Err(_)));
    let calls = fixture.core.calls();
    assert!(calls.contains(&"end_session U2".to_owned()), "{calls:?}");

    // The other edge in this process is unaffected.
    on_second
        .send(Message::text(r#"{"id":1,"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut on_second).await["type"], "pong");
    second.shutdown().await;
}
