//! `confab edge`: one point of presence of a cluster. It terminates HTTPS, WSS and
//! HTTP/3 for clients, keeps the Flannel cache of the teams it serves, and reaches the
//! core nodes over the internal link (mutual TLS) — preferring the cores of its own
//! region, failing over to the others. It holds no data and no signing key: it learns
//! the token verification key from a core when it starts.

use crate::node::NodeError;
use confab_auth::TokenVerifier;
use confab_chat::CoreApi;
use confab_flannel_cache::{Flannel, FlannelConfig};
use confab_link::{ClusterNode, CoreCluster, LinkClient, LinkClientConfig};
use confab_ws_terminator::RunningEdge;
use confab_ws_terminator::config::{EdgeConfig, EdgeSettings, WebAssets};
use confab_ws_terminator::tls::{self, TlsMaterial};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts the client-facing edge (Flannel + Pingora + HTTP/3) in front of `core`.
pub async fn serve_edge(
    listen: SocketAddr,
    tls: TlsMaterial,
    core: Arc<dyn CoreApi>,
    verifier: Arc<TokenVerifier>,
    allow_team_creation: bool,
    settings: EdgeSettings,
    web_assets: Option<WebAssets>,
) -> Result<RunningEdge, NodeError> {
    let flannel = Flannel::new(Arc::clone(&core), FlannelConfig::default());
    let mut config = EdgeConfig::new(listen, tls, core, flannel, verifier);
    config.allow_team_creation = allow_team_creation;
    config.settings = settings;
    config.web_assets = web_assets;
    confab_ws_terminator::start(config)
        .await
        .map_err(|e| NodeError::Edge(e.to_string()))
}

/// Where a core node is and how near it is to this edge.
#[derive(Clone, Debug)]
pub struct CoreEndpoint {
    pub name: String,
    pub addr: SocketAddr,
    /// Whether it is in this edge's region (preferred).
    pub local: bool,
}

/// Options of `confab edge`.
#[derive(Clone)]
pub struct EdgeOptions {
    /// The PoP's name, for logs.
    pub pop: String,
    pub listen: SocketAddr,
    pub cores: Vec<CoreEndpoint>,
    /// This node's certificate and key live here.
    pub data_dir: PathBuf,
    /// The cluster CA (shared by every node).
    pub ca_dir: PathBuf,
    pub allow_team_creation: bool,
    pub settings: EdgeSettings,
    pub web_assets: Option<WebAssets>,
    /// How long to wait at start for a core to answer.
    pub core_wait: Duration,
}

impl std::fmt::Debug for EdgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeOptions")
            .field("pop", &self.pop)
            .field("listen", &self.listen)
            .field("cores", &self.cores)
            .field("data_dir", &self.data_dir)
            .field("ca_dir", &self.ca_dir)
            .finish_non_exhaustive()
    }
}

impl EdgeOptions {
    /// The options for PoP `pop` of a geo-config: its listen address, and every core
    /// (those of its region first).
    pub fn from_geo(
        geo: &confab_geo_config::GeoConfig,
        pop: &str,
        data_dir: PathBuf,
        ca_dir: PathBuf,
    ) -> Result<Self, NodeError> {
        let entry =
            geo.pops.iter().find(|p| p.name == pop).ok_or_else(|| {
                NodeError::Config(format!("no pop named {pop:?} in the geo-config"))
            })?;
        let listen = parse_addr(&entry.wss, "pops.wss")?;
        let cores = geo
            .cores
            .iter()
            .map(|core| {
                Ok(CoreEndpoint {
                    name: core.name.clone(),
                    addr: parse_addr(&core.addr, "cores.addr")?,
                    local: core.region == entry.region,
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        if cores.is_empty() {
            return Err(NodeError::Config("the geo-config lists no cores".into()));
        }
        Ok(Self {
            pop: pop.to_string(),
            listen,
            cores,
            data_dir,
            ca_dir,
            allow_team_creation: true,
            settings: EdgeSettings::default(),
            web_assets: crate::web::assets(),
            core_wait: Duration::from_secs(60),
        })
    }
}

/// Parses a geo-config `host:port` this process binds or connects to.
pub fn parse_addr(text: &str, field: &str) -> Result<SocketAddr, NodeError> {
    text.parse()
        .map_err(|e| NodeError::Config(format!("{field} {text:?} is not an IP:port: {e}")))
}

/// A running `confab edge`.
pub struct EdgeNode {
    edge: RunningEdge,
    pub addr: SocketAddr,
    pub ca_path: PathBuf,
}

impl std::fmt::Debug for EdgeNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeNode")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EdgeNode {
    pub async fn start(options: EdgeOptions) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&options.data_dir)
            .map_err(|e| NodeError::DataDir(options.data_dir.clone(), e))?;
        let tls = tls::ensure_tls(&options.ca_dir, &options.data_dir.join("tls"), &[])
            .map_err(|e| NodeError::Tls(e.to_string()))?;
        let ca_path = tls.ca_path.clone();
        let link_tls = tls::link_client_config(&tls);
        let clients: Vec<Arc<LinkClient>> = options
            .cores
            .iter()
            .map(|core| {
                Arc::new(LinkClient::new(
                    core.name.clone(),
                    core.addr,
                    Arc::clone(&link_tls),
                    LinkClientConfig::default(),
                ))
            })
            .collect();
        let token_key = first_hello(&clients, options.core_wait).await?;
        let verifier = Arc::new(TokenVerifier::from_public_pem(&token_key)?);
        let cluster = CoreCluster::new(
            clients
                .into_iter()
                .zip(&options.cores)
                .map(|(client, core)| ClusterNode {
                    client,
                    rank: if core.local { 0 } else { 1 },
                })
                .collect(),
        );
        let edge = serve_edge(
            options.listen,
            tls,
            cluster,
            verifier,
            options.allow_team_creation,
            options.settings.clone(),
            options.web_assets.clone(),
        )
        .await?;
        let addr = edge.local_addr;
        tracing::info!(pop = %options.pop, %addr, "confab edge is serving HTTPS, WSS and HTTP/3");
        Ok(Self {
            edge,
            addr,
            ca_path,
        })
    }

    /// Graceful stop: clients get `goodbye` and reconnect elsewhere.
    pub async fn shutdown(self) {
        self.edge.shutdown().await;
    }
}

/// Asks the cores in turn for their greeting until one answers; returns the token key.
async fn first_hello(clients: &[Arc<LinkClient>], wait: Duration) -> Result<String, NodeError> {
    let deadline = Instant::now() + wait;
    loop {
        let mut last = String::new();
        for client in clients {
            match client.hello().await {
                Ok(hello) => return Ok(hello.token_public_key),
                Err(e) => last = e.to_string(),
            }
        }
        if Instant::now() >= deadline {
            return Err(NodeError::Link(format!(
                "no core answered within {wait:?}; last: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
