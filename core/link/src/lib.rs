//! The internal link of a confab cluster (DESIGN.md §1, §8): edges send client commands
//! up to core nodes and receive their teams' events down; core nodes forward a post to
//! the node that holds the channel's lease. Every connection is mutual TLS with
//! certificates from the cluster's CA.
//!
//! - [`wire`]: the frames (length-prefixed JSON, one id per call).
//! - [`server`]: the core's listener, answering from a [`confab_chat::CoreApi`].
//! - [`client`]: one connection to one node, many concurrent calls and event streams.
//! - [`cluster`]: several nodes behind [`confab_chat::CoreApi`], with failover.
//! - [`peers`]: the other cores, for forwarding posts to a channel's lease holder.

pub mod client;
pub mod cluster;
pub mod peers;
pub mod server;
pub mod wire;

pub use client::{CallError, LinkClient, LinkClientConfig};
pub use cluster::{ClusterNode, CoreCluster};
pub use peers::LinkPeers;
pub use server::{LinkServerConfig, RunningLink, serve};
pub use wire::Hello;
