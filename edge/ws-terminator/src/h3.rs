//! REST v1 over HTTP/3 (DESIGN.md §1, §5): a quinn endpoint on the edge's UDP port with an
//! h3 server on top. Each request becomes a [`RestRequest`] for the same router HTTP/1.1
//! uses, so both transports answer identically.
//!
//! Shutdown: when the watch turns `true` the endpoint stops taking connections, every
//! connection sends GOAWAY (clients retry elsewhere what was not started), requests in
//! flight get [`DRAIN_GRACE`] to finish, then the endpoint closes and waits a bounded
//! time for peers to hear it.
//!
//! [`client`] is a small HTTP/3 client for tests and the benchmark.

use crate::rest::{RestApi, RestRequest, RestResponse, body_too_large};
use crate::tls::{TlsMaterial, quic_server_config};
use bytes::{Buf, Bytes, BytesMut};
use confab_proto::limits::MAX_BODY_BYTES;
use h3::server::RequestResolver;
use quinn::crypto::rustls::QuicServerConfig;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How long requests in flight may run on after shutdown begins.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long the closed endpoint waits for peers to acknowledge the close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// A silent peer is dropped after this long; clients keep connections alive with traffic.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body must arrive within this time: a slow sender holds a stream and memory.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest header section accepted, against memory abuse through huge headers.
const MAX_HEADER_BYTES: u64 = 16 * 1024;

type Resolver = RequestResolver<h3_quinn::Connection, Bytes>;
type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Serves REST v1 over HTTP/3 on `socket` until `shutdown` turns `true` (or its sender is
/// dropped). Must be called within a Tokio runtime. The handle finishes once the endpoint
/// is closed, within about `DRAIN_GRACE` + 1 s of shutdown.
pub fn serve_h3(
    socket: std::net::UdpSocket,
    tls: &TlsMaterial,
    rest: Arc<RestApi>,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, io::Error> {
    let crypto = QuicServerConfig::try_from(quic_server_config(tls)).map_err(io::Error::other)?;
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).map_err(io::Error::other)?,
    ));
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server_config.transport_config(Arc::new(transport));
    socket.set_nonblocking(true)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    if let Ok(addr) = endpoint.local_addr() {
        tracing::debug!(%addr, "HTTP/3 endpoint listening");
    }
    Ok(tokio::spawn(accept_loop(endpoint, rest, shutdown)))
}

/// Whether shutdown was asked for; a dropped sender counts, as nobody could ask any more.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    rest: Arc<RestApi>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    connections.spawn(serve_connection(incoming, rest.clone(), shutdown.clone()));
                }
                None => break,
            },
            _ = shutdown_requested(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // New handshakes are refused from here on; connections already up drain.
    endpoint.set_server_config(None);
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            left = connections.len(),
            "HTTP/3 drain grace over; closing connections"
        );
        connections.abort_all();
    }
    endpoint.close(
        quinn::VarInt::from_u32(h3::error::Code::H3_NO_ERROR.value() as u32),
        b"shutting down",
    );
    let _ = tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
    tracing::debug!("HTTP/3 endpoint closed");
}

async fn serve_connection(
    incoming: quinn::Incoming,
    rest: Arc<RestApi>,
    mut shutdown: watch::Receiver<bool>,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "QUIC handshake failed");
            return;
        }
    };
    let mut h3_conn = match h3::server::builder()
        .max_field_section_size(MAX_HEADER_BYTES)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await
    {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "HTTP/3 setup failed");
            return;
        }
    };
    let mut requests = JoinSet::new();
    let mut draining = false;
    loop {
        tokio::select! {
            accepted = h3_conn.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(serve_request(resolver, rest.clone()));
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(%remote, error = %e, "HTTP/3 connection ended");
                    }
                    break;
                }
            },
            _ = shutdown_requested(&mut shutdown), if !draining => {
                draining = true;
                // GOAWAY: requests already started are served, the client retries the rest
                // on a new connection.
                if let Err(e) = h3_conn.shutdown(0).await {
                    tracing::debug!(%remote, error = %e, "HTTP/3 GOAWAY failed");
                    break;
                }
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
    while requests.join_next().await.is_some() {}
}

async fn serve_request(resolver: Resolver, rest: Arc<RestApi>) {
    let (request, mut stream) = match resolver.resolve_request().await {
        Ok(resolved) => resolved,
        Err(e) => {
            tracing::debug!(error = %e, "unreadable HTTP/3 request");
            return;
        }
    };
    let (parts, ()) = request.into_parts();
    let response = match read_body(&parts.headers, &mut stream).await {
        Ok(body) => {
            let request = RestRequest {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().map(str::to_owned),
                headers: parts.headers,
                body,
            };
            rest.handle(request).await
        }
        Err(BodyError::TooLarge) => {
            // RFC 9114 §4.1: the answer does not need the rest of the body.
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            RestResponse::error(&body_too_large())
        }
        Err(BodyError::Stream(e)) => {
            tracing::debug!(error = %e, "HTTP/3 request body not received");
            return;
        }
    };
    if let Err(e) = send_response(&mut stream, response).await {
        tracing::debug!(error = %e, "HTTP/3 response not sent");
    }
}

enum BodyError {
    TooLarge,
    Stream(String),
}

/// The request body, refused as soon as it is known to exceed `MAX_BODY_BYTES`.
async fn read_body(headers: &http::HeaderMap, stream: &mut Stream) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let read = async {
        while let Some(mut chunk) = stream
            .recv_data()
            .await
            .map_err(|e| BodyError::Stream(e.to_string()))?
        {
            if body.len() + chunk.remaining() > MAX_BODY_BYTES {
                return Err(BodyError::TooLarge);
            }
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                body.extend_from_slice(piece);
                let n = piece.len();
                chunk.advance(n);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(body.freeze()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::Stream("request body timed out".into())),
    }
}

async fn send_response(
    stream: &mut Stream,
    response: RestResponse,
) -> Result<(), h3::error::StreamError> {
    let head = http::Response::builder()
        .status(response.status)
        .header(http::header::CONTENT_TYPE, response.content_type)
        .header(http::header::CONTENT_LENGTH, response.body.len())
        .body(())
        .expect("status and headers are valid");
    stream.send_response(head).await?;
    if !response.body.is_empty() {
        stream.send_data(response.body).await?;
    }
    stream.finish().await
}

pub mod client {
    //! A small HTTP/3 client for tests and the benchmark: it trusts one CA file (the
    //! `confab dev` CA) and speaks just enough HTTP/3 for REST v1.

    use crate::tls::{ALPN_H3, TlsError, client_config_trusting};
    use bytes::{Buf, Bytes, BytesMut};
    use http::Method;
    use quinn::crypto::rustls::QuicClientConfig;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::task::JoinHandle;

    /// Why an HTTP/3 request failed.
    #[derive(Debug, thiserror::Error)]
    pub enum H3ClientError {
        #[error("TLS: {0}")]
        Tls(#[from] TlsError),
        #[error("connecting: {0}")]
        Connect(String),
        #[error("request: {0}")]
        Request(String),
    }

    fn connect_error(e: impl std::fmt::Display) -> H3ClientError {
        H3ClientError::Connect(e.to_string())
    }

    fn request_error(e: impl std::fmt::Display) -> H3ClientError {
        H3ClientError::Request(e.to_string())
    }

    /// One HTTP/3 connection; requests on it may run concurrently (`&self`).
    pub struct H3Client {
        endpoint: quinn::Endpoint,
        authority: String,
        send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        driver: JoinHandle<()>,
    }

    impl std::fmt::Debug for H3Client {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("H3Client")
                .field("authority", &self.authority)
                .finish_non_exhaustive()
        }
    }

    impl H3Client {
        /// Connects to `addr`, checking its certificate for `server_name` against the CA
        /// in `ca_pem_path`.
        pub async fn connect(
            addr: SocketAddr,
            server_name: &str,
            ca_pem_path: &Path,
        ) -> Result<Self, H3ClientError> {
            let tls = client_config_trusting(ca_pem_path, &[ALPN_H3.to_vec()])?;
            let crypto = QuicClientConfig::try_from(tls).map_err(connect_error)?;
            let bind: SocketAddr = if addr.is_ipv6() {
                "[::]:0".parse().expect("valid address")
            } else {
                "0.0.0.0:0".parse().expect("valid address")
            };
            let endpoint = quinn::Endpoint::client(bind).map_err(connect_error)?;
            let connection = endpoint
                .connect_with(
                    quinn::ClientConfig::new(Arc::new(crypto)),
                    addr,
                    server_name,
                )
                .map_err(connect_error)?
                .await
                .map_err(connect_error)?;
            let (mut connection, send) = h3::client::new(h3_quinn::Connection::new(connection))
                .await
                .map_err(connect_error)?;
            // The connection's control streams need polling for as long as it is used.
            let driver = tokio::spawn(async move {
                let _ = connection.wait_idle().await;
            });
            Ok(Self {
                endpoint,
                authority: format!("{server_name}:{}", addr.port()),
                send,
                driver,
            })
        }

        /// One request; returns the status and the whole response body. `method` is a
        /// [`Method`] or its name (`"GET"`).
        pub async fn request<M>(
            &self,
            method: M,
            path: &str,
            headers: &[(&str, &str)],
            body: Bytes,
        ) -> Result<(u16, Bytes), H3ClientError>
        where
            M: TryInto<Method>,
            M::Error: std::fmt::Display,
        {
            let method = method.try_into().map_err(request_error)?;
            let mut builder = http::Request::builder()
                .method(method)
                .uri(format!("https://{}{path}", self.authority));
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            if !body.is_empty() {
                builder = builder.header(http::header::CONTENT_LENGTH, body.len());
            }
            let request = builder.body(()).map_err(request_error)?;
            let mut send = self.send.clone();
            let mut stream = send.send_request(request).await.map_err(request_error)?;
            if !body.is_empty() {
                stream.send_data(body).await.map_err(request_error)?;
            }
            // A server that answered early (413) may have stopped reading; its answer counts.
            let _ = stream.finish().await;
            let response = stream.recv_response().await.map_err(request_error)?;
            let mut received = BytesMut::new();
            while let Some(mut chunk) = stream.recv_data().await.map_err(request_error)? {
                while chunk.has_remaining() {
                    let piece = chunk.chunk();
                    received.extend_from_slice(piece);
                    let n = piece.len();
                    chunk.advance(n);
                }
            }
            Ok((response.status().as_u16(), received.freeze()))
        }

        /// Closes the connection and waits (briefly) for the server to hear it.
        pub async fn close(self) {
            drop(self.send);
            self.endpoint.close(quinn::VarInt::from_u32(0x100), b"done");
            let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
            self.driver.abort();
        }
    }

    /// One request on a fresh connection, closed afterwards; see [`H3Client::request`].
    pub async fn h3_request<M>(
        addr: SocketAddr,
        server_name: &str,
        ca_pem_path: &Path,
        method: M,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(u16, Bytes), H3ClientError>
    where
        M: TryInto<Method>,
        M::Error: std::fmt::Display,
    {
        let client = H3Client::connect(addr, server_name, ca_pem_path).await?;
        let result = client.request(method, path, headers, body).await;
        client.close().await;
        result
    }
}
