//! The core chat service (DESIGN.md §1, §4): everything that decides, as opposed to
//! everything that connects. Edges call it through [`CoreApi`]: `confab dev` wires the
//! in-process [`ChatService`], a cluster reaches it over the internal link
//! (`confab-link`), which also carries posts between cores as [`Peers`].

pub mod api;
pub mod hlc;
pub mod sequencer;
pub mod service;

pub use api::{Caller, CoreApi, PeerError, Peers};
pub use service::{ChatConfig, ChatService};
