//! The roles the `confab` binary runs, as a library so tests start them in-process:
//! [`dev`], the whole system in one process (on embedded backends or on the real engines
//! a [`config::NodeConfig`] names); [`core_node`] and [`edge_node`], the two halves of
//! a cluster joined by the internal link; [`notify_node`], the push worker;
//! [`ops_http`], `/metrics` for the roles without an HTTP listener.

pub mod config;
pub mod core_node;
pub mod dev;
pub mod edge_node;
pub mod node;
pub mod notify_node;
pub mod ops_http;
pub mod web;
