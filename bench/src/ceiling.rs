//! The physical ceiling of this box for the fanout scenario: a bare WebSocket broadcast
//! server on the same stack as confab's edge (tokio, rustls with ring, tokio-tungstenite
//! with the same 4 KiB read buffers), with nothing else — no auth, no membership, no
//! ordering, no durability, no store. It greets with `hello`, answers every frame that
//! has an `id` with `{"reply_to":id,"ok":true}` and rebroadcasts the frame to every
//! connection, the sender included (as confab does). Whatever confab spends above this
//! is what its guarantees cost.

use crate::net::{Result, Target};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Frames a connection may fall behind the broadcast before it is cut off, like the
/// edge's bounded outbound queue.
const LAG_FRAMES: usize = 4096;

/// A running ceiling server.
pub struct CeilingServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl CeilingServer {
    /// Starts on `127.0.0.1:0` with a fresh local CA; returns the server and how to reach it.
    pub async fn start() -> Result<(Self, Target)> {
        let dir = tempfile::tempdir()?;
        let material = confab_ws_terminator::tls::ensure_local_tls(dir.path(), &[])?;
        let acceptor = TlsAcceptor::from(confab_ws_terminator::tls::http_server_config(&material));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (frames, _) = broadcast::channel::<Arc<str>>(LAG_FRAMES);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (acceptor, frames) = (acceptor.clone(), frames.clone());
                tokio::spawn(async move {
                    let _ = serve(tcp, acceptor, frames).await;
                });
            }
        });
        let target = Target::trusting(addr, &material.ca_path)?;
        Ok((
            Self {
                addr,
                task,
                _dir: dir,
            },
            target,
        ))
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    frames: broadcast::Sender<Arc<str>>,
) -> Result<()> {
    let tls = acceptor.accept(tcp).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let ws = tokio_tungstenite::accept_async_with_config(tls, Some(config)).await?;
    let (mut sink, mut stream) = ws.split();
    // Subscribed before `hello`: a client may send (and expect broadcasts) once it has it.
    let mut inbox = frames.subscribe();
    sink.send(Message::text(r#"{"type":"hello"}"#)).await?;
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let Some(Ok(Message::Text(text))) = incoming else { return Ok(()) };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                if let Some(id) = frame.get("id") {
                    sink.send(Message::text(json!({"reply_to": id, "ok": true}).to_string())).await?;
                }
                let _ = frames.send(Arc::from(text.as_str()));
            }
            outgoing = inbox.recv() => match outgoing {
                Ok(text) => sink.send(Message::text(text.to_string())).await?,
                // Fell too far behind: cut off, as the edge cuts off a slow consumer.
                Err(_) => return Ok(()),
            },
        }
    }
}
