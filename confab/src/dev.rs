//! `confab dev`: edge and core in one process — the first thing a new user runs, and what
//! the end-to-end tests start. Backends are embedded unless [`DevOptions::backends`] names
//! others (from `--config` and the environment, see [`crate::config`]). The edge talks to
//! the core through the same [`CoreApi`] trait a networked deployment uses, wired
//! in-process here.

use crate::config::Backends;
use confab_auth::{SigningKeyPair, TokenIssuer, TokenVerifier};
use confab_chat::{ChatConfig, ChatService, CoreApi};
use confab_flannel_cache::{Flannel, FlannelConfig};
use confab_store::SyncPolicy;
use confab_ws_terminator::config::{EdgeConfig, EdgeSettings, WebAssets};
use confab_ws_terminator::{RunningEdge, tls};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `confab dev`.
#[derive(Clone)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub allow_team_creation: bool,
    /// `Fsync` unless benchmarking the difference.
    pub sync: SyncPolicy,
    pub edge: EdgeSettings,
    /// The web client, if this build serves one.
    pub web_assets: Option<WebAssets>,
    /// The engines to run on; `None` is everything embedded under `data_dir` (with
    /// `sync`). Keys and the local CA stay in `data_dir` either way.
    pub backends: Option<Backends>,
}

impl std::fmt::Debug for DevOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevOptions")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("allow_team_creation", &self.allow_team_creation)
            .field("sync", &self.sync)
            .field("backends", &self.backends.as_ref().map(Backends::describe))
            .finish_non_exhaustive()
    }
}

impl DevOptions {
    /// DESIGN.md §5 defaults: `./confab-data`, `127.0.0.1:8443`.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            listen,
            allow_team_creation: true,
            sync: SyncPolicy::Fsync,
            edge: EdgeSettings::default(),
            web_assets: crate::web::assets(),
            backends: None,
        }
    }
}

/// Why `confab dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("tls: {0}")]
    Tls(String),
    #[error("keys: {0}")]
    Keys(#[from] confab_auth::AuthError),
    #[error("store: {0}")]
    Store(#[from] confab_store::StoreError),
    #[error("presence: {0}")]
    Presence(String),
    #[error("events: {0}")]
    Events(#[from] confab_events::EventsError),
    #[error("core: {0}")]
    Core(confab_proto::ApiError),
    #[error("edge: {0}")]
    Edge(String),
}

/// A running `confab dev`.
pub struct DevNode {
    edge: RunningEdge,
    chat: Arc<ChatService>,
    /// The TCP (HTTPS, WSS) and UDP (HTTP/3) address.
    pub addr: SocketAddr,
    /// The local CA clients must trust.
    pub ca_path: PathBuf,
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for DevNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevNode")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl DevNode {
    /// Opens (or creates) the data directory and starts serving.
    pub async fn start(options: DevOptions) -> Result<Self, DevError> {
        let data_dir = options.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| DevError::DataDir(data_dir.clone(), e))?;
        let tls =
            tls::ensure_local_tls(&data_dir, &[]).map_err(|e| DevError::Tls(e.to_string()))?;
        let ca_path = tls.ca_path.clone();
        let keys = SigningKeyPair::load_or_generate(&data_dir.join("keys"))?;
        let chat_config = ChatConfig {
            allow_team_creation: options.allow_team_creation,
            ..ChatConfig::default()
        };
        let issuer = TokenIssuer::new(&keys, chat_config.token_lifetime)?;
        let verifier = Arc::new(TokenVerifier::from_public_pem(keys.public_pem())?);

        let backends = options
            .backends
            .clone()
            .unwrap_or_else(|| Backends::embedded(&data_dir, options.sync));
        tracing::info!(backends = %backends.describe().replace('\n', "; "), "opening backends");
        let store = confab_store::open(&backends.store).await?;
        let presence = confab_presence::open(&backends.presence)
            .await
            .map_err(|e| DevError::Presence(e.to_string()))?;
        let fanout = confab_events::open_fanout(&backends.fanout).await?;
        let event_log = confab_events::open_event_log(&backends.event_log).await?;
        let chat = ChatService::new(store, presence, fanout, event_log, issuer, chat_config)
            .map_err(DevError::Core)?;
        let core: Arc<dyn CoreApi> = chat.clone();
        let flannel = Flannel::new(Arc::clone(&core), FlannelConfig::default());
        let mut edge_config = EdgeConfig::new(options.listen, tls, core, flannel, verifier);
        edge_config.allow_team_creation = options.allow_team_creation;
        edge_config.settings = options.edge.clone();
        edge_config.web_assets = options.web_assets.clone();
        let edge = confab_ws_terminator::start(edge_config)
            .await
            .map_err(|e| DevError::Edge(e.to_string()))?;
        let addr = edge.local_addr;
        tracing::info!(%addr, data_dir = %data_dir.display(), ca = %ca_path.display(), "confab dev is serving HTTPS, WSS and HTTP/3");
        Ok(Self {
            edge,
            chat,
            addr,
            ca_path,
            data_dir,
        })
    }

    /// Graceful stop: clients get `goodbye`, in-flight commands and queued sends finish
    /// (each bounded by `grace`), and the store is flushed.
    pub async fn shutdown(self, grace: Duration) {
        self.edge.shutdown().await;
        if !self.chat.shutdown(grace).await {
            tracing::warn!("shutdown did not finish cleanly within the grace period");
        }
    }
}
