//! The operator endpoint of the roles that serve no HTTP of their own (`confab core`,
//! `confab notify`): `GET /metrics` (Prometheus text) and `GET /healthz`, over plain
//! HTTP/1.1 on an address meant for the internal network (DESIGN.md §9). Tiny by
//! design: one request per connection, bounded reads, nothing else served.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request head read; anything longer is answered 431 and closed.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// A running operator endpoint; dropping it does not stop it, [`OpsHttp::stop`] does.
#[derive(Debug)]
pub struct OpsHttp {
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl OpsHttp {
    /// Serves `/metrics` and `/healthz` on `addr` until stopped.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream)).await;
                });
            }
        });
        tracing::info!(%local_addr, "serving /metrics and /healthz");
        Ok(Self { local_addr, task })
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD_BYTES {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    match (method, path) {
        (b"GET", b"/metrics") => {
            let body = confab_ws_terminator::metrics::render();
            respond(&mut stream, "200 OK", prometheus_text(), &body).await
        }
        (b"GET", b"/healthz") => {
            respond(&mut stream, "200 OK", "application/json", br#"{"ok":true}"#).await
        }
        (b"GET", _) => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n").await,
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                b"GET only\n",
            )
            .await
        }
    }
}

fn prometheus_text() -> &'static str {
    prometheus::TEXT_FORMAT
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
