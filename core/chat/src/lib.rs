//! The core chat service (DESIGN.md §1, §4): everything that decides, as opposed to
//! everything that connects. Edges call it through [`CoreApi`]; `confab dev` wires the
//! in-process [`ChatService`], a later network link implements the same trait.

pub mod api;
pub mod hlc;
pub mod sequencer;
pub mod service;

pub use api::{Caller, CoreApi};
pub use service::{ChatConfig, ChatService};
