//! A webhook push sink for tests: a plain HTTP/1.1 server on `127.0.0.1:0` that records
//! every POST (its `Idempotency-Key` and JSON body) and can be told to fail the next
//! requests with 503 so the sender's retries are exercised.

use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One push as the sink received it.
#[derive(Clone, Debug)]
pub struct ReceivedPush {
    pub key: String,
    pub body: Value,
}

/// A running test sink.
#[derive(Debug, Clone)]
pub struct PushReceiver {
    pub addr: std::net::SocketAddr,
    /// Held only to push or copy, never across an await.
    received: Arc<std::sync::Mutex<Vec<ReceivedPush>>>,
    fail_next: Arc<AtomicUsize>,
    /// Requests answered with 503 so far.
    pub failed: Arc<AtomicUsize>,
}

impl PushReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let receiver = Self {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            fail_next: Arc::default(),
            failed: Arc::default(),
        };
        let state = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move { state.serve(stream).await });
            }
        });
        receiver
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/push", self.addr)
    }

    /// Answers the next `n` requests with 503 (they are not recorded).
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedPush> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` pushes arrived (or `timeout`), then returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedPush> {
        let deadline = Instant::now() + timeout;
        while self.received.lock().unwrap().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.received()
    }

    async fn serve(&self, mut stream: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Head, then a Content-Length body; one request per connection is all the
        // notify worker sends.
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let status = if fail {
            self.failed.fetch_add(1, Ordering::SeqCst);
            "503 Service Unavailable"
        } else {
            let body =
                serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
            let key = header("idempotency-key").unwrap_or_default();
            self.received
                .lock()
                .unwrap()
                .push(ReceivedPush { key, body });
            "204 No Content"
        };
        let response =
            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}
