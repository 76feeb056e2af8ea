//! The confab edge server (DESIGN.md §1, §5): terminates TLS, serves REST v1 over
//! HTTP/1.1 (Pingora) and HTTP/3 (quinn + h3), and RTM over WebSocket, forwarding every
//! decision to the core through [`confab_chat::CoreApi`].

pub mod h3;
pub mod rest;
pub mod tls;
