//! Helpers shared by confab's end-to-end tests. They start the real server on
//! `127.0.0.1:0` and speak the real protocols to it over real TLS: HTTPS (HTTP/1.1),
//! WSS and, through the edge crate's client, HTTP/3. [`cluster`] runs real core and
//! edge processes on the real engines.

pub mod cluster;
pub mod node;
pub mod push;
pub mod rest;
pub mod rtm;

pub use cluster::{ClusterSpec, TestCluster, require_engines};
pub use node::TestNode;
pub use push::{PushReceiver, ReceivedPush};
pub use rest::{RestClient, Session};
pub use rtm::RtmClient;

/// A short unique suffix for team domains, emails and client message ids.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}
