//! The confab edge server (DESIGN.md §1, §5): terminates TLS, serves REST v1 over
//! HTTP/1.1 (Pingora) and HTTP/3 (quinn + h3), and RTM over WebSocket, forwarding every
//! decision to the core through [`confab_chat::CoreApi`].
//!
//! [`start`] binds and serves; [`RunningEdge::shutdown`] drains. The parts are public so
//! they can be tested without sockets: [`rest::RestApi`] (transport-independent REST),
//! [`hub::Hub`] (team events to connections), [`rtm::Session`] (one connection's commands
//! and events) and [`delivery::SeqTracker`] (exactly-once delivery).

pub mod config;
pub mod delivery;
pub mod drain;
pub mod error;
pub mod h3;
pub mod hub;
pub mod metrics;
pub mod rest;
pub mod rtm;
pub mod server;
pub mod tls;

pub use config::{EdgeConfig, EdgeSettings, WebAssets};
pub use error::EdgeError;
pub use server::{RunningEdge, start};
