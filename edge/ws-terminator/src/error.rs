//! [`EdgeError`]: the one error type of the edge layer. Client-facing failures inside a
//! request or RTM command are [`ApiError`]s from the core and travel as such; this type is
//! for what goes wrong around them (binding, TLS material, the HTTP/3 endpoint, I/O) and
//! carries the stable code, a retry hint and context like the other layers' errors.

use confab_proto::{ApiError, ErrorCode};
use std::net::SocketAddr;

/// Why the edge could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The TCP or UDP listening socket could not be bound.
    #[error("cannot bind {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Certificate or key unusable.
    #[error("TLS material: {0}")]
    Tls(String),
    /// The HTTP/3 endpoint failed.
    #[error("HTTP/3: {0}")]
    H3(String),
    /// A configuration value is out of range.
    #[error("invalid edge configuration: {0}")]
    Config(String),
    /// Pingora reported an error.
    #[error("pingora: {0}")]
    Pingora(String),
    /// The core refused or failed a call the edge needed for itself.
    #[error("core: {0}")]
    Core(#[from] ApiError),
    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl EdgeError {
    /// The client-facing code this failure maps to, should it reach a client.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Core(e) => e.code,
            Self::Bind { .. } | Self::H3(_) | Self::Io { .. } => ErrorCode::Unavailable,
            Self::Tls(_) | Self::Config(_) | Self::Pingora(_) => ErrorCode::Internal,
        }
    }

    /// Whether trying again unchanged may succeed (a port freed, a backend back).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Bind { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
            Self::Core(e) => e.code.retryable(),
            Self::H3(_) | Self::Io { .. } => true,
            Self::Tls(_) | Self::Config(_) | Self::Pingora(_) => false,
        }
    }
}

impl From<std::io::Error> for EdgeError {
    fn from(source: std::io::Error) -> Self {
        Self::Io {
            context: "edge I/O",
            source,
        }
    }
}

impl From<Box<pingora::Error>> for EdgeError {
    fn from(e: Box<pingora::Error>) -> Self {
        Self::Pingora(e.to_string())
    }
}
