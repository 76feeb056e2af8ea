//! The edge's listeners: HTTPS + WSS on Pingora (rustls) over TCP, HTTP/3 on quinn over
//! UDP at the same port, and the lifecycle around them.
//!
//! Pingora's `Server` owns the process (its own runtimes, signal handlers, `exit`), which
//! an embeddable edge cannot have: `confab dev` runs it next to the core, and tests start
//! several in one process. So the edge uses the layer below it: a
//! `pingora::services::listening::Service` driven directly on the caller's tokio runtime
//! through `Service::start_service`, with its own `ShutdownWatch`. The TCP socket is bound
//! here and handed to Pingora as an inherited listening fd (the mechanism Pingora uses
//! for graceful upgrades), which is how `127.0.0.1:0` yields a known port.

use crate::config::{EdgeConfig, EdgeSettings};
use crate::drain::DrainController;
use crate::error::EdgeError;
use crate::hub::Hub;
use crate::metrics;
use crate::rest::{
    RestApi, RestRequest, RestResponse, bearer_token, body_too_large, query_param, verify_token,
};
use crate::rtm::{self, RtmContext};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use confab_chat::Caller;
use confab_flannel_cache::Flannel;
use confab_proto::limits::MAX_BODY_BYTES;
use confab_proto::{ApiError, ErrorCode};
use http::{Method, StatusCode, header};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::listeners::ALPN;
use pingora::listeners::ListenerConfig;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::{Fds, ShutdownWatch};
use pingora::services::Service as _;
use pingora::services::listening::Service;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// How often a fresh port is tried when port 0 was asked for and UDP is taken there.
const PORT_ATTEMPTS: usize = 16;

/// How long listeners and HTTP/3 get to stop after the drain.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The Pingora application: REST over HTTP/1.1, and the RTM WebSocket upgrade.
struct EdgeApp {
    rest: Arc<RestApi>,
    hub: Hub,
    flannel: Arc<Flannel>,
    rtm: RtmContext,
    settings: Arc<EdgeSettings>,
}

/// A running edge. Dropping it stops the listeners abruptly; [`RunningEdge::shutdown`]
/// drains first.
pub struct RunningEdge {
    /// The bound TCP address (HTTPS, WSS); HTTP/3 is on the same port over UDP.
    pub local_addr: SocketAddr,
    listeners_stop: watch::Sender<bool>,
    h3_stop: watch::Sender<bool>,
    drain: DrainController,
    pingora: Option<JoinHandle<()>>,
    h3: Option<JoinHandle<()>>,
    hub: Hub,
    grace: Duration,
}

impl std::fmt::Debug for RunningEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningEdge")
            .field("local_addr", &self.local_addr)
            .field("active", &self.drain.active())
            .finish_non_exhaustive()
    }
}

/// Binds TCP and UDP at the same port and starts serving. Must be called within a tokio
/// runtime; everything runs on it.
pub async fn start(config: EdgeConfig) -> Result<RunningEdge, EdgeError> {
    config.settings.validate()?;
    metrics::init();
    let settings = Arc::new(config.settings.clone());
    let (tcp, udp) = bind_pair(config.listen)?;
    let local_addr = tcp.local_addr().map_err(|source| EdgeError::Io {
        context: "reading the bound address",
        source,
    })?;

    let rest = Arc::new(
        RestApi::new(
            config.core.clone(),
            config.flannel.clone(),
            config.verifier.clone(),
            config.allow_team_creation,
        )
        .with_web_assets(config.web_assets.clone()),
    );
    let hub = Hub::new(config.flannel.clone(), settings.send_buffer_frames);
    let (drain_controller, drain) = DrainController::new();
    let app = EdgeApp {
        rest: rest.clone(),
        hub: hub.clone(),
        flannel: config.flannel.clone(),
        rtm: RtmContext {
            core: config.core.clone(),
            settings: settings.clone(),
            drain: drain.clone(),
        },
        settings: settings.clone(),
    };

    // HTTP/3 first: until Pingora owns the TCP socket, an error here still closes it.
    let (h3_stop, h3_rx) = watch::channel(false);
    let h3 = crate::h3::serve_h3(udp, &config.tls, rest.clone(), h3_rx).map_err(|source| {
        EdgeError::Io {
            context: "starting the HTTP/3 endpoint",
            source,
        }
    })?;

    // Pingora finds the socket by the address string it is told to listen on.
    let key = local_addr.to_string();
    tcp.set_nonblocking(true).map_err(|source| EdgeError::Io {
        context: "setting the listener non-blocking",
        source,
    })?;
    let mut fds = Fds::new();
    fds.add(key.clone(), tcp.into_raw_fd());
    let fds = Arc::new(parking_lot::Mutex::new(fds));

    let mut tls_settings = TlsSettings::intermediate(
        &config.tls.cert_path.to_string_lossy(),
        &config.tls.key_path.to_string_lossy(),
    )?;
    // The certificate comes from the material already parsed and checked when it was
    // loaded, so Pingora never reads the PEM files itself (its own loading would panic
    // inside the listener task on a bad file).
    tls_settings.set_cert_resolver(
        crate::tls::http_server_config(&config.tls)
            .cert_resolver
            .clone(),
    );
    // RTM needs HTTP/1.1 upgrades; HTTP/2 would take them away from browsers.
    tls_settings.set_alpn(ALPN::H1);
    let mut service = Service::new("confab-edge".to_owned(), app);
    // Only the read side is ours to size; the write side keeps Pingora's default.
    service.add_listener(
        ListenerConfig::tcp(key.clone())
            .tls(tls_settings)
            .l4_buffer(L4BufferSettings::default().read(settings.tcp_read_buffer_bytes)),
    );

    let (listeners_stop, listeners_rx) = watch::channel(false);
    let pingora = tokio::spawn(async move {
        service.start_service(Some(fds), listeners_rx, 1).await;
    });

    tracing::info!(addr = %local_addr, "edge listening (TCP: HTTPS + WSS, UDP: HTTP/3)");
    Ok(RunningEdge {
        local_addr,
        listeners_stop,
        h3_stop,
        drain: drain_controller,
        pingora: Some(pingora),
        h3: Some(h3),
        hub,
        grace: settings.drain_grace,
    })
}

/// TCP and UDP sockets on one port. With port 0 the kernel picks the TCP port and UDP
/// follows; if that UDP port is taken, another pair is tried.
fn bind_pair(addr: SocketAddr) -> Result<(TcpListener, UdpSocket), EdgeError> {
    let attempts = if addr.port() == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let tcp = TcpListener::bind(addr).map_err(|source| EdgeError::Bind {
            proto: "TCP",
            addr,
            source,
        })?;
        let bound = tcp.local_addr().map_err(|source| EdgeError::Io {
            context: "reading the bound address",
            source,
        })?;
        match UdpSocket::bind(bound) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(source) => {
                last_error = Some(EdgeError::Bind {
                    proto: "UDP",
                    addr: bound,
                    source,
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| EdgeError::Config("no port to bind".into())))
}

impl RunningEdge {
    /// Drains and stops: new connections are refused, every RTM connection finishes its
    /// in-flight command and gets `goodbye`, requests in flight complete; after the grace
    /// period whatever is left is cut. Listeners and HTTP/3 stop.
    pub async fn shutdown(mut self) {
        tracing::info!(addr = %self.local_addr, "edge draining");
        self.drain.start_drain();
        self.listeners_stop.send_replace(true);
        self.h3_stop.send_replace(true);
        if !self.drain.wait_idle(self.grace).await {
            tracing::warn!(
                active = self.drain.active(),
                "grace period over; cutting remaining connections"
            );
        }
        self.drain.force();
        // Forced sessions end within a few awaits (they still tell the core).
        let _ = self.drain.wait_idle(STOP_TIMEOUT).await;
        self.hub.kick_all(rtm::REASON_SHUTDOWN);
        for handle in [self.pingora.take(), self.h3.take()].into_iter().flatten() {
            let abort = handle.abort_handle();
            if tokio::time::timeout(STOP_TIMEOUT, handle).await.is_err() {
                abort.abort();
            }
        }
        tracing::info!(addr = %self.local_addr, "edge stopped");
    }
}

impl Drop for RunningEdge {
    fn drop(&mut self) {
        self.listeners_stop.send_replace(true);
        self.h3_stop.send_replace(true);
        self.drain.force();
    }
}

fn response_header(
    status: StatusCode,
    content_type: &str,
    len: usize,
) -> Option<Box<ResponseHeader>> {
    let mut header = ResponseHeader::build(status, Some(4)).ok()?;
    header
        .insert_header(header::CONTENT_TYPE, content_type)
        .ok()?;
    header.insert_header(header::CONTENT_LENGTH, len).ok()?;
    header
        .insert_header(header::CACHE_CONTROL, "no-store")
        .ok()?;
    Some(Box::new(header))
}

/// Resolves when `shutdown` is (or becomes) true.
async fn stopped(shutdown: &ShutdownWatch) {
    let mut rx = shutdown.clone();
    let _ = rx.wait_for(|stop| *stop).await;
}

impl EdgeApp {
    async fn write_response(&self, session: &mut ServerSession, response: RestResponse) -> bool {
        let Some(header) =
            response_header(response.status, response.content_type, response.body.len())
        else {
            return false;
        };
        if session.write_response_header(header).await.is_err() {
            return false;
        }
        session
            .write_response_body(response.body, true)
            .await
            .is_ok()
    }

    /// Reads the body up to the REST limit; `Err` carries the response to send instead.
    async fn read_body(&self, session: &mut ServerSession) -> Result<Bytes, RestResponse> {
        let declared = session
            .get_header(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            return Err(RestResponse::error(&body_too_large()));
        }
        if session
            .get_header(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        {
            let _ = session.write_continue_response().await;
        }
        let mut body = BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(RestResponse::error(&body_too_large()));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => {
                    return Err(RestResponse::error(&ApiError::new(
                        ErrorCode::InvalidArgument,
                        format!("reading the request body: {e}"),
                    )));
                }
            }
        }
    }

    /// `GET /v1/rtm` with `Upgrade: websocket`: authenticate, subscribe, answer 101, then
    /// run the connection on the raw stream.
    async fn upgrade_rtm(&self, mut session: ServerSession) {
        let refuse = |error: ApiError| RestResponse::error(&error);
        let prepared = self.prepare_rtm(&session).await;
        let (caller, registration, accept) = match prepared {
            Ok(ready) => ready,
            Err(error) => {
                session.set_keepalive(None);
                let _ = self.write_response(&mut session, refuse(error)).await;
                let _ = session.finish().await;
                return;
            }
        };
        let Ok(mut header) = ResponseHeader::build(StatusCode::SWITCHING_PROTOCOLS, Some(3)) else {
            return;
        };
        let built = header
            .insert_header(header::UPGRADE, "websocket")
            .and_then(|()| header.insert_header(header::CONNECTION, "Upgrade"))
            .and_then(|()| header.insert_header(header::SEC_WEBSOCKET_ACCEPT, accept));
        if built.is_err()
            || session
                .write_response_header(Box::new(header))
                .await
                .is_err()
        {
            return;
        }
        let ServerSession::H1(h1) = session else {
            return;
        };
        let mut stream = h1.into_inner();
        if tokio::io::AsyncWriteExt::flush(&mut stream).await.is_err() {
            return;
        }
        let ws = WebSocketStream::from_raw_socket(
            stream,
            Role::Server,
            Some(rtm::websocket_config(&self.settings)),
        )
        .await;
        rtm::serve(ws, self.rtm.clone(), caller, registration).await;
    }

    async fn prepare_rtm(
        &self,
        session: &ServerSession,
    ) -> Result<(Caller, crate::hub::Registration, String), ApiError> {
        if self.rtm.drain.is_draining() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "this edge is shutting down; connect elsewhere",
            ));
        }
        let req = session.req_header();
        let bad = |msg: &str| ApiError::new(ErrorCode::InvalidArgument, msg);
        let is_websocket = req
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if !is_websocket || req.method != Method::GET {
            return Err(bad("RTM needs GET with Upgrade: websocket"));
        }
        if req
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(bad("RTM needs Sec-WebSocket-Version: 13"));
        }
        let Some(key) = req.headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(bad("RTM needs Sec-WebSocket-Key"));
        };
        let accept = derive_accept_key(key.as_bytes());
        let query_token = query_param(req.uri.query(), "token");
        let token = bearer_token(&req.headers)
            .map(str::to_owned)
            .or(query_token)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotAuthed,
                    "send a token as Authorization: Bearer TOKEN or ?token=",
                )
            })?;
        let caller = verify_token(self.rest.verifier(), &token)?;
        // Subscribed before `hello`: every event after it reaches the client.
        let registration = self.hub.register(&caller).await?;
        let channels = self.flannel.member_channels(&caller).await?;
        registration.add_channels(channels);
        Ok((caller, registration, accept))
    }

    async fn serve_rest(
        &self,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let _active = self.rtm.drain.track();
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_owned();
        let query = req.uri.query().map(str::to_owned);
        let headers = req.headers.clone();
        let response = match self.read_body(&mut session).await {
            Ok(body) => {
                let request = RestRequest {
                    method,
                    path,
                    query,
                    headers,
                    body,
                };
                self.rest.handle(request).await
            }
            Err(response) => {
                // The rest of the body was not read: the connection cannot carry another
                // request.
                session.set_keepalive(None);
                metrics::REST_REQUESTS
                    .with_label_values(&["unread_body", response.status.as_str()])
                    .inc();
                response
            }
        };
        if *shutdown.borrow() || self.rtm.drain.is_draining() {
            session.set_keepalive(None);
        }
        if !self.write_response(&mut session, response).await {
            return None;
        }
        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(reusable)) => {
                Some(ReusedHttpStream::from_reusable_stream(reusable, persistent))
            }
            _ => None,
        }
    }
}

#[async_trait]
impl HttpServerApp for EdgeApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        session.set_read_timeout(Some(self.settings.http_read_timeout));
        // An idle keep-alive connection must not hold a shutdown up for its timeout.
        let read = tokio::select! {
            read = session.read_request() => read,
            () = stopped(shutdown) => return None,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "reading an HTTP request failed");
                return None;
            }
        }
        let is_rtm = session.req_header().uri.path() == "/v1/rtm" && session.is_upgrade_req();
        if is_rtm {
            self.upgrade_rtm(session).await;
            return None;
        }
        self.serve_rest(session, shutdown).await
    }
}
