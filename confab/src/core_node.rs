//! `confab core`: one core node of a cluster. It runs the chat service on the shared
//! engines (Cassandra, Redis, Kafka), answers edges and peer cores on the internal link
//! (mutual TLS), and sequences the channels whose lease it holds; a post for a channel
//! another core holds is forwarded there.

use crate::config::Backends;
use crate::edge_node::parse_addr;
use crate::node::{NodeError, OpenBackends, open_backends};
use confab_auth::{SigningKeyPair, TokenIssuer};
use confab_chat::{ChatConfig, ChatService};
use confab_link::{LinkClient, LinkClientConfig, LinkPeers, LinkServerConfig, RunningLink};
use confab_store::StoreBackend;
use confab_ws_terminator::tls;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `confab core`.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// This node's name (geo-config `cores[].name`); channel leases name it.
    pub node: String,
    /// The internal link's address.
    pub listen: SocketAddr,
    /// The other cores: (name, link address).
    pub peers: Vec<(String, SocketAddr)>,
    /// This node's certificate and key live here.
    pub data_dir: PathBuf,
    /// The cluster CA (shared by every node).
    pub ca_dir: PathBuf,
    /// The token signing key (shared by every core; made by the first one).
    pub keys_dir: PathBuf,
    pub backends: Backends,
    pub allow_team_creation: bool,
    /// How long a channel lease lasts without renewal: the longest a dead node's
    /// channels wait before another node takes them.
    pub lease_ttl: Duration,
}

impl CoreOptions {
    /// The options for core `node` of a geo-config.
    pub fn from_geo(
        geo: &confab_geo_config::GeoConfig,
        node: &str,
        dirs: (PathBuf, PathBuf, PathBuf),
        backends: Backends,
    ) -> Result<Self, NodeError> {
        let (data_dir, ca_dir, keys_dir) = dirs;
        let entry = geo.cores.iter().find(|c| c.name == node).ok_or_else(|| {
            NodeError::Config(format!("no core named {node:?} in the geo-config"))
        })?;
        let listen = parse_addr(&entry.addr, "cores.addr")?;
        let peers = geo
            .cores
            .iter()
            .filter(|c| c.name != node)
            .map(|c| Ok((c.name.clone(), parse_addr(&c.addr, "cores.addr")?)))
            .collect::<Result<Vec<_>, NodeError>>()?;
        if !peers.is_empty() && matches!(backends.store, StoreBackend::Embedded(_)) {
            return Err(NodeError::Config(
                "several cores need a shared store: set [store] backend = \"cassandra\" \
                 (an embedded store belongs to one process)"
                    .into(),
            ));
        }
        Ok(Self {
            node: node.to_string(),
            listen,
            peers,
            data_dir,
            ca_dir,
            keys_dir,
            backends,
            allow_team_creation: true,
            lease_ttl: Duration::from_secs(10),
        })
    }
}

/// A running `confab core`.
pub struct CoreNode {
    name: String,
    link: RunningLink,
    chat: Arc<ChatService>,
    pub addr: SocketAddr,
}

impl std::fmt::Debug for CoreNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreNode")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl CoreNode {
    pub async fn start(options: CoreOptions) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&options.data_dir)
            .map_err(|e| NodeError::DataDir(options.data_dir.clone(), e))?;
        let tls = tls::ensure_tls(&options.ca_dir, &options.data_dir.join("tls"), &[])
            .map_err(|e| NodeError::Tls(e.to_string()))?;
        let keys = SigningKeyPair::load_or_generate(&options.keys_dir)?;
        let link_tls = tls::link_client_config(&tls);
        let peers = LinkPeers::new(options.peers.iter().map(|(name, addr)| {
            Arc::new(LinkClient::new(
                name.clone(),
                *addr,
                Arc::clone(&link_tls),
                LinkClientConfig::default(),
            ))
        }));
        let mut chat_config = ChatConfig {
            allow_team_creation: options.allow_team_creation,
            node: options.node.clone(),
            peers: Some(peers),
            ..ChatConfig::default()
        };
        chat_config.sequencer.lease_ttl = options.lease_ttl;
        let issuer = TokenIssuer::new(&keys, chat_config.token_lifetime)?;
        let OpenBackends {
            store,
            presence,
            fanout,
            event_log,
        } = open_backends(&options.backends).await?;
        let chat = ChatService::new(store, presence, fanout, event_log, issuer, chat_config)
            .map_err(NodeError::Core)?;
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|e| NodeError::Link(format!("cannot listen on {}: {e}", options.listen)))?;
        let config = LinkServerConfig {
            node: options.node.clone(),
            token_public_key: keys.public_pem().to_string(),
            tls: tls::link_server_config(&tls),
            grace: Duration::from_secs(10),
        };
        let link = confab_link::serve(listener, config, chat.clone())
            .map_err(|e| NodeError::Link(e.to_string()))?;
        let addr = link.local_addr;
        tracing::info!(node = %options.node, %addr, "confab core is serving the internal link");
        Ok(Self {
            name: options.node,
            link,
            chat,
            addr,
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Graceful stop: no new calls, in-flight ones finish, sequencers drain and give up
    /// their leases, the store is flushed.
    pub async fn shutdown(self, grace: Duration) {
        self.link.shutdown().await;
        if !self.chat.shutdown(grace).await {
            tracing::warn!("shutdown did not finish cleanly within the grace period");
        }
    }
}
