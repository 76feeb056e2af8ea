//! A real cluster of `confab core` and `confab edge` processes on loopback, sharing the
//! real engines `scripts/services/services.sh` started (their addresses come from the
//! environment, see [`require_engines`]). Processes, not tasks, so a test can kill one
//! with SIGKILL exactly as a crash would.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The engine addresses a cluster (or any real-engine test) needs.
pub const ENGINE_VARS: [&str; 3] = [
    "CONFAB_REDIS_URL",
    "CONFAB_CASSANDRA_NODES",
    "CONFAB_KAFKA_BROKERS",
];

/// Fails (never skips) when the engines' addresses are missing: a green run must mean
/// the real engines were exercised.
pub fn require_engines() {
    let missing: Vec<&str> = ENGINE_VARS
        .iter()
        .copied()
        .filter(|name| std::env::var(name).map_or(true, |v| v.trim().is_empty()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} not set: run scripts/services/services.sh up all, then \
         `set -a; . .services/endpoints.env; set +a` before cargo test",
        missing.join(", ")
    );
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sends a signal with the `kill` command (the workspace forbids `unsafe`, so no libc).
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// How the cluster is laid out.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `confab` binary (`env!("CARGO_BIN_EXE_confab")` in the test).
    pub binary: PathBuf,
    /// Cores per region and regions: two regions with one core and one edge each is the
    /// shape of `geo-config/examples/local.toml`.
    pub regions: usize,
    pub lease_ttl: Duration,
    /// Cassandra keyspace (shared across runs; tests use fresh teams).
    pub keyspace: String,
    /// Kafka topic prefix.
    pub namespace: String,
    /// Whether to run a `confab notify` worker (`notify-1`).
    pub notify: bool,
}

impl ClusterSpec {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            regions: 2,
            lease_ttl: Duration::from_secs(3),
            keyspace: "confab_cluster_test".into(),
            namespace: "confab-cluster-test.".into(),
            notify: false,
        }
    }
}

/// One process of the cluster.
#[derive(Debug)]
struct Node {
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

/// A running cluster: `core-N` and `edge-N` for N in 1..=regions, region `rN`.
#[derive(Debug)]
pub struct TestCluster {
    spec: ClusterSpec,
    pub dir: tempfile::TempDir,
    nodes: BTreeMap<String, Node>,
    /// Edge name → its HTTPS/WSS address.
    pub edges: BTreeMap<String, SocketAddr>,
    /// Core name → its link address.
    pub cores: BTreeMap<String, SocketAddr>,
    /// Node name → its `/metrics` + `/healthz` address (cores and notify).
    pub ops: BTreeMap<String, SocketAddr>,
}

impl TestCluster {
    /// Writes the geo-config and backends file, starts every core then every edge, and
    /// waits until each edge answers `/healthz`.
    pub async fn start(spec: ClusterSpec) -> Self {
        require_engines();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut geo = String::new();
        let mut cores = BTreeMap::new();
        let mut edges = BTreeMap::new();
        for n in 1..=spec.regions {
            geo.push_str(&format!("[[regions]]\nname = \"r{n}\"\n\n"));
        }
        for n in 1..=spec.regions {
            let core: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            geo.push_str(&format!(
                "[[cores]]\nname = \"core-{n}\"\nregion = \"r{n}\"\naddr = \"{core}\"\n\n\
                 [[pops]]\nname = \"edge-{n}\"\nregion = \"r{n}\"\nwss = \"{edge}\"\nh3 = \"{edge}\"\n\n"
            ));
            cores.insert(format!("core-{n}"), core);
            edges.insert(format!("edge-{n}"), edge);
        }
        geo.push_str("[placement]\ndefault_region = \"r1\"\n");
        let geo_path = dir.path().join("geo.toml");
        std::fs::write(&geo_path, geo).unwrap();
        let backends = format!(
            "[store]\nbackend = \"cassandra\"\nkeyspace = \"{}\"\n\
             [presence]\nbackend = \"redis\"\n[fanout]\nbackend = \"redis\"\n\
             [event_log]\nbackend = \"kafka\"\nnamespace = \"{}\"\n",
            spec.keyspace, spec.namespace
        );
        let backends_path = dir.path().join("backends.toml");
        std::fs::write(&backends_path, backends).unwrap();

        let path = |p: &Path| p.to_string_lossy().into_owned();
        let root = dir.path().to_path_buf();
        let mut nodes = BTreeMap::new();
        for name in cores.keys() {
            let args = vec![
                "core".into(),
                "--geo".into(),
                path(&geo_path),
                "--node".into(),
                name.clone(),
                "--config".into(),
                path(&backends_path),
                "--data-dir".into(),
                path(&root.join(name)),
                "--ca-dir".into(),
                path(&root.join("ca")),
                "--keys-dir".into(),
                path(&root.join("keys")),
                "--lease-ttl-ms".into(),
                spec.lease_ttl.as_millis().to_string(),
                "--ops-listen".into(),
                "127.0.0.1:0".into(),
            ];
            nodes.insert(
                name.clone(),
                Node {
                    args,
                    child: None,
                    log: root.join(format!("{name}.log")),
                },
            );
        }
        for name in edges.keys() {
            let args = vec![
                "edge".into(),
                "--geo".into(),
                path(&geo_path),
                "--pop".into(),
                name.clone(),
                "--data-dir".into(),
                path(&root.join(name)),
                "--ca-dir".into(),
                path(&root.join("ca")),
            ];
            nodes.insert(
                name.clone(),
                Node {
                    args,
                    child: None,
                    log: root.join(format!("{name}.log")),
                },
            );
        }
        if spec.notify {
            let args = vec![
                "notify".into(),
                "--config".into(),
                path(&backends_path),
                "--data-dir".into(),
                path(&root.join("notify-1")),
                "--ops-listen".into(),
                "127.0.0.1:0".into(),
            ];
            nodes.insert(
                "notify-1".to_string(),
                Node {
                    args,
                    child: None,
                    log: root.join("notify-1.log"),
                },
            );
        }
        let mut cluster = Self {
            spec,
            dir,
            nodes,
            edges,
            cores,
            ops: BTreeMap::new(),
        };
        // The first core makes the CA and the signing key; the others reuse them.
        let core_names: Vec<String> = cluster.cores.keys().cloned().collect();
        for name in &core_names {
            cluster.start_node(name).await;
        }
        let edge_names: Vec<String> = cluster.edges.keys().cloned().collect();
        for name in &edge_names {
            cluster.start_node(name).await;
        }
        if cluster.spec.notify {
            cluster.start_node("notify-1").await;
        }
        cluster
    }

    /// The cluster CA clients trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca/ca.pem")
    }

    /// (Re)starts one node and waits until it is ready.
    pub async fn start_node(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).expect("known node");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let mut child = Command::new(&self.spec.binary)
            .args(&node.args)
            .env("RUST_LOG", "info,pingora=warn")
            .stdout(Stdio::piped())
            .stderr(log.try_clone().expect("log file"))
            .spawn()
            .expect("spawn confab");
        // Logs go to stdout: copy every line to the log file, and notice the ready line.
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ops_tx, ops_rx) = std::sync::mpsc::channel::<SocketAddr>();
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(addr) = line.strip_prefix("metrics and health on http://")
                    && let Ok(addr) = addr.trim().parse()
                {
                    let _ = ops_tx.send(addr);
                }
                if line.contains(" listening on ") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if ready_rx.try_recv().is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name} exited with {status} while starting; log:\n{}",
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready after 90 s; log:\n{}",
                std::fs::read_to_string(&node.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.child = Some(child);
        if let Ok(addr) = ops_rx.try_recv() {
            self.ops.insert(name.to_string(), addr);
        }
    }

    /// SIGKILL: the node dies mid-whatever, as in a crash.
    pub fn kill(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).expect("known node");
        if let Some(mut child) = node.child.take() {
            signal(&child, "KILL");
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).expect("known node");
        if let Some(mut child) = node.child.take() {
            signal(&child, "TERM");
            let _ = child.wait();
        }
    }

    /// A node's log so far (for assertion messages).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(&self.nodes[name].log).unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
