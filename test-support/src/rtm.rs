//! An RTM v1 client over real WSS: sends commands with increasing ids, collects pushed
//! events, and matches replies to their commands.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a test waits for any one expected frame.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// One WSS connection.
pub struct RtmClient {
    ws: WebSocketStream<TlsStream<tokio::net::TcpStream>>,
    next_id: u64,
    /// Events received while waiting for something else, oldest first.
    pub events: VecDeque<Value>,
}

impl RtmClient {
    /// Connects with the token in `Authorization`, and waits for `hello`.
    pub async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, token: &str) -> Self {
        let mut client = Self::try_connect(addr, tls, Some(token), "/v1/rtm")
            .await
            .expect("RTM upgrade accepted");
        let hello = client.next_frame().await.expect("hello");
        assert_eq!(hello["type"], "hello", "first frame must be hello: {hello}");
        client
    }

    /// Attempts the upgrade; `Err` carries the HTTP status of a refused upgrade.
    pub async fn try_connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        token: Option<&str>,
        path: &str,
    ) -> Result<Self, u16> {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let mut request = http::Request::builder()
            .uri(format!("wss://localhost:{}{path}", addr.port()))
            .header("host", format!("localhost:{}", addr.port()))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            );
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        match tokio_tungstenite::client_async(request.body(()).unwrap(), stream).await {
            Ok((ws, _)) => Ok(Self {
                ws,
                next_id: 1,
                events: VecDeque::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("upgrade failed: {other}"),
        }
    }

    /// Sends raw text as one frame.
    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(WsMessage::text(text))
            .await
            .expect("send frame");
    }

    /// Sends a command (its `id` is filled in) without waiting; returns the id.
    pub async fn send(&mut self, mut command: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.send_text(command.to_string()).await;
        id
    }

    /// The next JSON frame, or `None` if the connection closed or nothing came in time.
    pub async fn next_frame(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(FRAME_WAIT, self.ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(text)))) => {
                    return Some(serde_json::from_str(&text).expect("JSON frame"));
                }
                Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Waits for the reply to `id`, keeping events that arrive meanwhile in `events`.
    pub async fn reply(&mut self, id: u64) -> Value {
        loop {
            let frame = self
                .next_frame()
                .await
                .unwrap_or_else(|| panic!("no reply to {id}"));
            if frame["reply_to"] == json!(id) {
                return frame;
            }
            self.events.push_back(frame);
        }
    }

    /// Sends a command and waits for its reply.
    pub async fn request(&mut self, command: Value) -> Value {
        let id = self.send(command).await;
        self.reply(id).await
    }

    /// The next event of `kind` (from the buffer first), skipping others of other kinds
    /// into the buffer.
    pub async fn next_event(&mut self, kind: &str) -> Value {
        if let Some(index) = self.events.iter().position(|e| e["type"] == kind) {
            return self.events.remove(index).unwrap();
        }
        loop {
            let frame = self
                .next_frame()
                .await
                .unwrap_or_else(|| panic!("no {kind} event"));
            if frame["type"] == kind && frame.get("reply_to").is_none() {
                return frame;
            }
            self.events.push_back(frame);
        }
    }

    /// Waits (up to `wait`) and returns every event of `kind` that arrived, consuming them.
    pub async fn drain_events(&mut self, kind: &str, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if let WsMessage::Text(text) = message {
                self.events
                    .push_back(serde_json::from_str(&text).expect("JSON frame"));
            }
        }
        let (matching, rest): (Vec<Value>, Vec<Value>) =
            self.events.drain(..).partition(|e| e["type"] == kind);
        self.events = rest.into();
        matching
    }

    /// Sends a `message` command and waits for its reply.
    pub async fn send_message(&mut self, channel: &str, text: &str, client_msg_id: &str) -> Value {
        self.request(json!({"type": "message", "channel": channel, "text": text, "client_msg_id": client_msg_id}))
            .await
    }

    /// Whether the server closed the connection (reads until close or timeout).
    pub async fn is_closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(FRAME_WAIT, self.ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(text)))) => self
                    .events
                    .push_back(serde_json::from_str(&text).unwrap_or(Value::Null)),
                Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
                Err(_) => return false,
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
