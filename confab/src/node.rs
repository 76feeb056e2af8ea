//! What every role shares: why a node could not start, and opening its backends.

use crate::config::Backends;
use confab_events::{EventLog, FanOut};
use confab_presence::PresenceStore;
use confab_store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a node (any role) could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
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
    #[error("link: {0}")]
    Link(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// The engines of one node, opened.
pub struct OpenBackends {
    pub store: Arc<dyn Store>,
    pub presence: Arc<dyn PresenceStore>,
    pub fanout: Arc<dyn FanOut>,
    pub event_log: Arc<dyn EventLog>,
}

impl std::fmt::Debug for OpenBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBackends").finish_non_exhaustive()
    }
}

/// Opens every backend `backends` names.
pub async fn open_backends(backends: &Backends) -> Result<OpenBackends, NodeError> {
    tracing::info!(backends = %backends.describe().replace('\n', "; "), "opening backends");
    Ok(OpenBackends {
        store: confab_store::open(&backends.store).await?,
        presence: confab_presence::open(&backends.presence)
            .await
            .map_err(|e| NodeError::Presence(e.to_string()))?,
        fanout: confab_events::open_fanout(&backends.fanout).await?,
        event_log: confab_events::open_event_log(&backends.event_log).await?,
    })
}
