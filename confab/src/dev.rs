//! `confab dev`: edge, core and the notify worker in one process — the first thing a new user runs, and what
//! the end-to-end tests start. Backends are embedded unless [`DevOptions::backends`] names
//! others (from `--config` and the environment, see [`crate::config`]). The edge talks to
//! the core through the same [`CoreApi`] trait a networked deployment uses, wired
//! in-process here.

use crate::config::Backends;
use crate::edge_node::serve_edge;
use crate::node::{NodeError, OpenBackends, open_backends};
use crate::notify_node::{NotifyWorker, SYSTEM_CA_BUNDLE};
use confab_auth::{SigningKeyPair, TokenIssuer, TokenVerifier};
use confab_chat::{ChatConfig, ChatService, CoreApi};
use confab_notify::NotifyConfig;
use confab_store::SyncPolicy;
use confab_ws_terminator::config::{EdgeSettings, WebAssets};
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
pub type DevError = NodeError;

/// A running `confab dev`.
pub struct DevNode {
    edge: RunningEdge,
    notify: NotifyWorker,
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
        let opened = open_backends(&backends).await?;
        let notify = NotifyWorker::spawn(
            &opened,
            &[PathBuf::from(SYSTEM_CA_BUNDLE)],
            NotifyConfig::default(),
        );
        let OpenBackends {
            store,
            presence,
            fanout,
            event_log,
        } = opened;
        let chat = ChatService::new(store, presence, fanout, event_log, issuer, chat_config)
            .map_err(DevError::Core)?;
        let core: Arc<dyn CoreApi> = chat.clone();
        let edge = serve_edge(
            options.listen,
            tls,
            core,
            verifier,
            options.allow_team_creation,
            options.edge.clone(),
            options.web_assets.clone(),
        )
        .await?;
        let addr = edge.local_addr;
        tracing::info!(%addr, data_dir = %data_dir.display(), ca = %ca_path.display(), "confab dev is serving HTTPS, WSS and HTTP/3");
        Ok(Self {
            edge,
            notify,
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
        self.notify.shutdown(grace).await;
        if !self.chat.shutdown(grace).await {
            tracing::warn!("shutdown did not finish cleanly within the grace period");
        }
    }
}
