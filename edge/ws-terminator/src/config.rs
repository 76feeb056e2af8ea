//! What an edge is started with: [`EdgeConfig`] names its address, TLS material and the
//! core it forwards to; [`EdgeSettings`] holds the tunables (buffers, rates, timers) with
//! defaults sized for a small box (DESIGN.md §8: bounded buffers, rate limits).

use crate::tls::TlsMaterial;
use bytes::Bytes;
use confab_auth::TokenVerifier;
use confab_chat::CoreApi;
use confab_flannel_cache::Flannel;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Serves the web client: given a path (`/` or `/static/...`), its content type and bytes.
/// `None` answers 404.
pub type WebAssets = Arc<dyn Fn(&str) -> Option<(&'static str, Bytes)> + Send + Sync>;

/// Tunables of an edge. `Default` is what `confab dev` and the tests use.
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    /// Frames that may wait for a slow client, per connection, before it is cut off as a
    /// slow consumer. Also the depth of the hub-to-connection event queue.
    pub send_buffer_frames: usize,
    /// Commands read ahead of the one being executed, per connection.
    pub command_queue: usize,
    /// Presence changes are coalesced per connection into one frame per interval.
    pub presence_flush_interval: Duration,
    /// Sustained RTM frames per second a connection may send.
    pub rate_per_sec: u32,
    /// Burst of RTM frames above the sustained rate.
    pub rate_burst: u32,
    /// Rejected frames in a row after which a connection is closed as abusive.
    pub abuse_strikes: u32,
    /// How long a shutdown waits for in-flight commands and requests before cutting them.
    pub drain_grace: Duration,
    /// The core hears from each RTM session at most this often (on client activity).
    pub heartbeat_interval: Duration,
    /// An RTM connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// How long a write to one client may block, or one frame may wait for buffer space,
    /// before the client counts as a slow consumer.
    pub write_timeout: Duration,
    /// WebSocket messages above this are abusive: the connection is closed. Frames between
    /// `limits::MAX_FRAME_BYTES` and this get a `frame_too_large` reply instead.
    pub max_ws_message_bytes: usize,
    /// Read buffer per WebSocket; tungstenite's default of 128 KiB per connection would
    /// dominate memory at many idle connections.
    pub ws_read_buffer_bytes: usize,
    /// Read buffer per TCP connection under TLS. Pingora's default of 64 KiB suits a
    /// proxy streaming bodies; chat connections mostly sit idle or read small frames.
    pub tcp_read_buffer_bytes: usize,
    /// Bytes of encoded frames the WebSocket may hold when the socket does not take them.
    pub ws_max_write_buffer_bytes: usize,
    /// Time allowed to read a request's headers and body on HTTP/1.1.
    pub http_read_timeout: Duration,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            send_buffer_frames: 1024,
            command_queue: 32,
            presence_flush_interval: Duration::from_millis(250),
            rate_per_sec: 100,
            rate_burst: 200,
            abuse_strikes: 400,
            drain_grace: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            max_ws_message_bytes: 1024 * 1024,
            ws_read_buffer_bytes: 4 * 1024,
            tcp_read_buffer_bytes: 4 * 1024,
            ws_max_write_buffer_bytes: 1024 * 1024,
            http_read_timeout: Duration::from_secs(30),
        }
    }
}

impl EdgeSettings {
    /// Rejects settings that would make the edge misbehave rather than merely be slow.
    pub fn validate(&self) -> Result<(), crate::EdgeError> {
        let bad = |what: &str| Err(crate::EdgeError::Config(what.to_owned()));
        if self.send_buffer_frames == 0 || self.command_queue == 0 {
            return bad("queues need room for at least one item");
        }
        if self.rate_per_sec == 0 || self.rate_burst == 0 {
            return bad("rate limits must be positive");
        }
        if self.max_ws_message_bytes < confab_proto::limits::MAX_FRAME_BYTES {
            return bad("max_ws_message_bytes must be at least limits::MAX_FRAME_BYTES");
        }
        if self.presence_flush_interval.is_zero() {
            return bad("presence_flush_interval must be positive");
        }
        Ok(())
    }
}

/// Everything [`crate::start`] needs.
pub struct EdgeConfig {
    /// TCP address for HTTPS + WSS; HTTP/3 listens on UDP at the same port. Port 0 picks a
    /// free port (tests); [`crate::RunningEdge::local_addr`] tells which.
    pub listen: SocketAddr,
    pub tls: TlsMaterial,
    pub core: Arc<dyn CoreApi>,
    pub flannel: Arc<Flannel>,
    pub verifier: Arc<TokenVerifier>,
    /// Whether `POST /v1/teams` is open to anyone (DESIGN.md §5: "can be turned off").
    pub allow_team_creation: bool,
    pub settings: EdgeSettings,
    /// The web client, if this edge serves one.
    pub web_assets: Option<WebAssets>,
}

impl EdgeConfig {
    /// A config with default settings, team creation allowed and no web client.
    pub fn new(
        listen: SocketAddr,
        tls: TlsMaterial,
        core: Arc<dyn CoreApi>,
        flannel: Arc<Flannel>,
        verifier: Arc<TokenVerifier>,
    ) -> Self {
        Self {
            listen,
            tls,
            core,
            flannel,
            verifier,
            allow_team_creation: true,
            settings: EdgeSettings::default(),
            web_assets: None,
        }
    }
}

impl fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("listen", &self.listen)
            .field("allow_team_creation", &self.allow_team_creation)
            .field("settings", &self.settings)
            .field("web_assets", &self.web_assets.is_some())
            .finish_non_exhaustive()
    }
}
