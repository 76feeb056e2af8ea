//! The roles the `confab` binary runs, as a library so tests start them in-process.
//! Today: [`dev`], the whole system in one process, on embedded backends or on the real
//! engines a [`config::NodeConfig`] names.

pub mod config;
pub mod dev;
pub mod web;
