//! One core node seen from a client of the link (an edge, or a peer core): a single
//! mutually authenticated TLS connection, opened on first use and again after it
//! breaks, that carries many concurrent calls and event streams.
//!
//! [`crate::CoreCluster`] puts several of them behind the [`confab_chat::CoreApi`] trait.

use crate::wire::{Call, FromCore, Hello, Outcome, ToCore, encode_frame, read_frame, write_all};
use confab_events::Subscription;
use confab_proto::event::TeamEvent;
use confab_proto::{ApiError, ErrorCode, TeamId};
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;

/// Why a call through the link failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The call never reached the node (no connection): it may go to another node.
    #[error("core node {node} unreachable: {why}")]
    Unreachable { node: String, why: String },
    /// The call was sent but its answer was lost (connection broke, or timeout): it may
    /// or may not have run.
    #[error("core node {node} did not answer: {why}")]
    Lost { node: String, why: String },
    /// The node answered with an error.
    #[error("{}", .0.msg)]
    Api(ApiError),
}

impl From<CallError> for ApiError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Api(e) => e,
            other => ApiError::new(ErrorCode::Unavailable, other.to_string()),
        }
    }
}

/// Settings of a link client.
#[derive(Clone, Debug)]
pub struct LinkClientConfig {
    /// The longest a call waits for its answer.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    /// Events buffered per subscription before it is cut off.
    pub subscription_buffer: usize,
}

impl Default for LinkClientConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            subscription_buffer: 65_536,
        }
    }
}

/// A connection to one core node.
pub struct LinkClient {
    node: String,
    addr: SocketAddr,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    config: LinkClientConfig,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for LinkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkClient")
            .field("node", &self.node)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// One open connection: the writer's queue and what waits for answers.
struct Conn {
    out: mpsc::Sender<Vec<u8>>,
    state: Mutex<ConnState>,
    closed: AtomicBool,
}

#[derive(Default)]
struct ConnState {
    pending: HashMap<u64, oneshot::Sender<Outcome>>,
    streams: HashMap<u64, mpsc::Sender<Arc<TeamEvent>>>,
    /// Set under the same lock as the maps, so nothing registers after the drain.
    dead: bool,
}

impl LinkClient {
    /// A client of the node `node` at `addr`; `tls` must present this node's certificate
    /// and trust the cluster CA (the edge's `tls::link_client_config`). Connects lazily.
    pub fn new(
        node: impl Into<String>,
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        config: LinkClientConfig,
    ) -> Self {
        Self {
            node: node.into(),
            addr,
            connector: TlsConnector::from(tls),
            server_name: ServerName::IpAddress(addr.ip().into()),
            config,
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's greeting (also a cheap check that it is up).
    pub async fn hello(&self) -> Result<Hello, CallError> {
        self.request(Call::Hello).await
    }

    /// Sends one call and decodes its answer.
    pub async fn request<T: DeserializeOwned>(&self, call: Call) -> Result<T, CallError> {
        let value = self.call(call).await?;
        serde_json::from_value(value).map_err(|e| {
            CallError::Api(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "core node {} sent an answer that does not decode: {e}",
                    self.node
                ),
            ))
        })
    }

    /// Sends one call and returns its answer's JSON.
    pub async fn call(&self, call: Call) -> Result<serde_json::Value, CallError> {
        let conn = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut state = conn.state.lock();
            if state.dead {
                return Err(self.unreachable("connection closed"));
            }
            state.pending.insert(id, reply);
        }
        let name = call.name();
        if !self.send(&conn, &ToCore::Request { id, call }).await {
            conn.state.lock().pending.remove(&id);
            return Err(self.unreachable("connection closed before the call was sent"));
        }
        match tokio::time::timeout(self.config.call_timeout, answer).await {
            Ok(Ok(Outcome::Ok(value))) => Ok(value),
            Ok(Ok(Outcome::Err(e))) => Err(CallError::Api(e)),
            Ok(Err(_)) => Err(self.lost("connection closed")),
            Err(_) => {
                conn.state.lock().pending.remove(&id);
                Err(self.lost(&format!(
                    "{name} took longer than {:?}",
                    self.config.call_timeout
                )))
            }
        }
    }

    /// Subscribes to a team's events. The stream ends when the core cuts it off, the
    /// connection breaks, or the receiver falls `subscription_buffer` events behind.
    pub async fn subscribe_team(&self, team: &TeamId) -> Result<Subscription, CallError> {
        let conn = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::channel(self.config.subscription_buffer);
        let (reply, answer) = oneshot::channel();
        {
            let mut state = conn.state.lock();
            if state.dead {
                return Err(self.unreachable("connection closed"));
            }
            state.pending.insert(id, reply);
            state.streams.insert(id, events_tx);
        }
        let call = Call::Subscribe { team: team.clone() };
        if !self.send(&conn, &ToCore::Request { id, call }).await {
            let mut state = conn.state.lock();
            state.pending.remove(&id);
            state.streams.remove(&id);
            return Err(self.unreachable("connection closed before the call was sent"));
        }
        let outcome = tokio::time::timeout(self.config.call_timeout, answer).await;
        let failure = match outcome {
            Ok(Ok(Outcome::Ok(_))) => {
                return Ok(Subscription {
                    team: team.clone(),
                    events,
                });
            }
            Ok(Ok(Outcome::Err(e))) => CallError::Api(e),
            Ok(Err(_)) => self.lost("connection closed"),
            Err(_) => self.lost("subscribe timed out"),
        };
        let mut state = conn.state.lock();
        state.pending.remove(&id);
        state.streams.remove(&id);
        Err(failure)
    }

    /// The open connection, or a new one.
    async fn connection(&self) -> Result<Arc<Conn>, CallError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.closed.load(Ordering::Acquire)
        {
            return Ok(Arc::clone(conn));
        }
        *slot = None;
        let connect = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            self.connector.connect(self.server_name.clone(), tcp).await
        };
        let stream = match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.unreachable(&e.to_string())),
            Err(_) => return Err(self.unreachable("connect timed out")),
        };
        let (reader, writer) = tokio::io::split(stream);
        let (out, outbound) = mpsc::channel::<Vec<u8>>(4096);
        let conn = Arc::new(Conn {
            out,
            state: Mutex::new(ConnState::default()),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(write_loop(writer, outbound, Arc::clone(&conn)));
        tokio::spawn(read_loop(reader, Arc::clone(&conn), self.node.clone()));
        tracing::debug!(node = %self.node, addr = %self.addr, "link connected");
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    async fn send(&self, conn: &Conn, frame: &ToCore) -> bool {
        let mut bytes = Vec::new();
        if encode_frame(frame, &mut bytes).is_err() {
            return false;
        }
        conn.out.send(bytes).await.is_ok()
    }

    fn unreachable(&self, why: &str) -> CallError {
        CallError::Unreachable {
            node: self.node.clone(),
            why: why.to_string(),
        }
    }

    fn lost(&self, why: &str) -> CallError {
        CallError::Lost {
            node: self.node.clone(),
            why: why.to_string(),
        }
    }
}

async fn write_loop<W>(mut writer: W, mut outbound: mpsc::Receiver<Vec<u8>>, conn: Arc<Conn>)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut batch = Vec::new();
    while let Some(bytes) = outbound.recv().await {
        batch.clear();
        batch.extend_from_slice(&bytes);
        while batch.len() < 64 * 1024 {
            match outbound.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if write_all(&mut writer, &batch).await.is_err() {
            break;
        }
    }
    conn.closed.store(true, Ordering::Release);
}

async fn read_loop<R>(mut reader: R, conn: Arc<Conn>, node: String)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let frame = match read_frame::<_, FromCore>(&mut reader, &mut buf).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%node, error = %e, "link connection failed");
                break;
            }
        };
        match frame {
            FromCore::Reply { id, result } => {
                if let Some(reply) = conn.state.lock().pending.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            FromCore::Event { id, event } => {
                let sender = conn.state.lock().streams.get(&id).cloned();
                let Some(sender) = sender else { continue };
                if sender.try_send(Arc::new(event)).is_err() {
                    // Full (the consumer fell behind) or dropped: end the stream here
                    // and at the core; the consumer resumes from the store.
                    conn.state.lock().streams.remove(&id);
                    let mut bytes = Vec::new();
                    if encode_frame(&ToCore::Cancel { id }, &mut bytes).is_ok() {
                        let _ = conn.out.try_send(bytes);
                    }
                }
            }
            FromCore::End { id } => {
                conn.state.lock().streams.remove(&id);
            }
        }
    }
    conn.closed.store(true, Ordering::Release);
    let mut state = conn.state.lock();
    state.dead = true;
    // Dropping the senders answers every waiting call with "connection closed" and
    // ends every stream.
    state.pending.clear();
    state.streams.clear();
    tracing::info!(%node, "link connection to core closed");
}
