//! The confab wire contract, version 1: everything a client or another confab process
//! exchanges with a confab edge, as plain data types. No I/O lives here so that every
//! role, the benchmark and outside tooling can share one definition of the protocol.

pub mod error;
pub mod event;
pub mod ids;
pub mod limits;
pub mod model;
pub mod rest;
pub mod rtm;

pub use error::{ApiError, ErrorCode};
pub use ids::{ChannelId, MessageId, TeamId, UserId};
pub use model::{Channel, ChannelKind, Message, Presence, Team, User};
