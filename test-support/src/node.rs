//! A `confab dev` node in this process, on a temporary data directory, restartable on the
//! same directory (and the same backends) to test durability.

use confab::dev::{DevNode, DevOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A running node and the directory it owns.
pub struct TestNode {
    node: Option<DevNode>,
    dir: tempfile::TempDir,
    /// What the node was started with, so a restart reopens the same backends (a node on
    /// Cassandra must not come back on an empty embedded store).
    options: DevOptions,
    pub addr: SocketAddr,
    pub ca_path: PathBuf,
}

impl TestNode {
    /// A fresh node on a fresh directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A fresh node whose options `adjust` may change first.
    pub async fn start_with(adjust: impl FnOnce(&mut DevOptions)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = DevOptions::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        adjust(&mut options);
        let node = DevNode::start(options.clone())
            .await
            .expect("confab dev starts");
        Self {
            options,
            addr: node.addr,
            ca_path: node.ca_path.clone(),
            node: Some(node),
            dir,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Graceful stop, then a new node with the same options on the same data directory (a
    /// new port).
    pub async fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown(Duration::from_secs(5)).await;
        }
        let mut options = self.options.clone();
        // The old port may linger; a fresh one avoids a bind race.
        options.listen = "127.0.0.1:0".parse().unwrap();
        let node = DevNode::start(options).await.expect("confab dev restarts");
        self.addr = node.addr;
        self.ca_path = node.ca_path.clone();
        self.node = Some(node);
    }

    /// Graceful stop.
    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown(Duration::from_secs(5)).await;
        }
    }
}
