//! The core's side of the link: accepts mutually authenticated TLS connections from edges
//! and peer cores, and answers their [`Call`]s from a [`CoreApi`]. Requests on one
//! connection run concurrently; subscriptions stream events until cancelled, cut off by
//! the core, or the connection ends.

use crate::wire::{Call, FromCore, Hello, Outcome, ToCore, encode_frame, read_frame, write_all};
use confab_chat::CoreApi;
use confab_proto::{ApiError, ErrorCode};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// Frames queued for one connection before the senders wait. An event subscription
/// that cannot keep up backs up into the core's own bounded subscription buffer, which
/// cuts it off.
const OUTBOUND_FRAMES: usize = 4096;
/// Bytes gathered into one write before flushing.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// A peer that does not finish the TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the link listener serves.
pub struct LinkServerConfig {
    /// This node's name in the cluster.
    pub node: String,
    /// The token verification key edges ask for in [`Call::Hello`].
    pub token_public_key: String,
    /// Must require client certificates (see the edge's `tls::link_server_config`).
    pub tls: Arc<rustls::ServerConfig>,
    /// How long in-flight calls may take to finish when the server stops.
    pub grace: Duration,
}

impl std::fmt::Debug for LinkServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkServerConfig")
            .field("node", &self.node)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// A running link listener.
#[derive(Debug)]
pub struct RunningLink {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningLink {
    /// Stops accepting, lets in-flight calls finish (bounded by the grace period) and
    /// closes every connection; clients see their subscriptions end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Serves the link on `listener` until [`RunningLink::shutdown`].
pub fn serve(
    listener: TcpListener,
    config: LinkServerConfig,
    core: Arc<dyn CoreApi>,
) -> std::io::Result<RunningLink> {
    let local_addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        hello: Hello {
            node: config.node.clone(),
            token_public_key: config.token_public_key.clone(),
        },
        core,
        grace: config.grace,
    });
    let acceptor = TlsAcceptor::from(config.tls);
    let task = tokio::spawn(accept_loop(listener, acceptor, shared, stopped));
    tracing::info!(%local_addr, node = %config.node, "internal link listening (mutual TLS)");
    Ok(RunningLink {
        local_addr,
        stop,
        task,
    })
}

struct Shared {
    hello: Hello,
    core: Arc<dyn CoreApi>,
    grace: Duration,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(connection(
                        tcp,
                        peer,
                        acceptor.clone(),
                        Arc::clone(&shared),
                        stopped.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "link accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "link handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "link handshake timed out");
            return;
        }
    };
    tracing::debug!(%peer, "link connection open");
    let (mut reader, writer) = tokio::io::split(stream);
    let (out, outbound) = mpsc::channel::<FromCore>(OUTBOUND_FRAMES);
    let writer = tokio::spawn(write_loop(writer, outbound));
    let mut requests: JoinSet<()> = JoinSet::new();
    let mut subscriptions: HashMap<u64, AbortHandle> = HashMap::new();
    let mut buf = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
            frame = read_frame::<_, ToCore>(&mut reader, &mut buf) => frame,
        };
        match frame {
            Ok(Some(ToCore::Request { id, call })) => {
                let subscribe = matches!(call, Call::Subscribe { .. });
                let task = handle_request(id, call, Arc::clone(&shared), out.clone());
                let handle = requests.spawn(task);
                if subscribe {
                    subscriptions.retain(|_, handle| !handle.is_finished());
                    subscriptions.insert(id, handle);
                }
            }
            Ok(Some(ToCore::Cancel { id })) => {
                if let Some(handle) = subscriptions.remove(&id) {
                    handle.abort();
                }
            }
            Ok(None) => break,
            Err(e) => {
                // Only cluster nodes hold certificates; a bad frame is a bug, not a
                // user's typo. Closing tells the peer more than a reply could.
                tracing::warn!(%peer, error = %e, "closing link connection on a bad frame");
                break;
            }
        }
    }
    // Subscriptions end with the connection; calls get the grace period to answer.
    for handle in subscriptions.values() {
        handle.abort();
    }
    let _ = tokio::time::timeout(shared.grace, async {
        while requests.join_next().await.is_some() {}
    })
    .await;
    requests.abort_all();
    drop(out);
    let _ = writer.await;
    tracing::debug!(%peer, "link connection closed");
}

async fn write_loop<W>(mut writer: W, mut outbound: mpsc::Receiver<FromCore>)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut bytes = Vec::with_capacity(WRITE_BATCH_BYTES);
    while let Some(frame) = outbound.recv().await {
        bytes.clear();
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if let Err(e) = encode_frame(&frame, &mut bytes) {
                tracing::error!(error = %e, "link reply not encodable; dropped");
            }
            if bytes.len() < WRITE_BATCH_BYTES {
                next = outbound.try_recv().ok();
            }
        }
        if let Err(e) = write_all(&mut writer, &bytes).await {
            tracing::debug!(error = %e, "link write failed");
            return;
        }
    }
}

async fn handle_request(id: u64, call: Call, shared: Arc<Shared>, out: mpsc::Sender<FromCore>) {
    if let Call::Subscribe { team } = call {
        let mut subscription = match shared.core.subscribe(&team).await {
            Ok(subscription) => subscription,
            Err(e) => {
                let _ = out
                    .send(FromCore::Reply {
                        id,
                        result: Outcome::Err(e),
                    })
                    .await;
                return;
            }
        };
        let ready = FromCore::Reply {
            id,
            result: Outcome::Ok(serde_json::Value::Null),
        };
        if out.send(ready).await.is_err() {
            return;
        }
        while let Some(event) = subscription.events.recv().await {
            let frame = FromCore::Event {
                id,
                event: (*event).clone(),
            };
            if out.send(frame).await.is_err() {
                return;
            }
        }
        let _ = out.send(FromCore::End { id }).await;
        return;
    }
    let name = call.name();
    let result = dispatch(&shared, call).await;
    metrics::call(name, matches!(result, Outcome::Ok(_)));
    let _ = out.send(FromCore::Reply { id, result }).await;
}

mod metrics {
    //! Link metrics on the default Prometheus registry.
    use prometheus::{IntCounterVec, Opts};
    use std::sync::LazyLock;

    static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        let counter = IntCounterVec::new(
            Opts::new(
                "confab_link_calls_total",
                "Calls answered on the internal link, by call and outcome",
            ),
            &["call", "outcome"],
        )
        .expect("valid metric");
        let _ = prometheus::register(Box::new(counter.clone()));
        counter
    });

    pub fn call(name: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        CALLS.with_label_values(&[name, outcome]).inc();
    }
}

fn answer<T: Serialize>(result: Result<T, ApiError>) -> Outcome {
    match result.and_then(|value| {
        serde_json::to_value(value)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("encoding a reply: {e}")))
    }) {
        Ok(value) => Outcome::Ok(value),
        Err(e) => Outcome::Err(e),
    }
}

async fn dispatch(shared: &Shared, call: Call) -> Outcome {
    let core = &shared.core;
    match call {
        Call::Hello => answer(Ok(&shared.hello)),
        Call::CreateTeam { req } => answer(core.create_team(req).await),
        Call::Login { req } => answer(core.login(req).await),
        Call::Team { caller } => answer(core.team(&caller).await),
        Call::CreateUser { caller, req } => answer(core.create_user(&caller, req).await),
        Call::Users { caller, ids } => answer(core.users(&caller, &ids).await),
        Call::CreateChannel { caller, req } => answer(core.create_channel(&caller, req).await),
        Call::OpenDm { caller, users } => answer(core.open_dm(&caller, &users).await),
        Call::Channel { caller, channel } => answer(core.channel(&caller, &channel).await),
        Call::ListChannels { caller } => answer(core.list_channels(&caller).await),
        Call::MemberChannels { caller } => answer(core.member_channels(&caller).await),
        Call::ChannelMembers { caller, channel } => {
            answer(core.channel_members(&caller, &channel).await)
        }
        Call::JoinChannel { caller, channel } => answer(core.join_channel(&caller, &channel).await),
        Call::AddMembers {
            caller,
            channel,
            users,
        } => answer(core.add_members(&caller, &channel, &users).await),
        Call::LeaveChannel { caller, channel } => {
            answer(core.leave_channel(&caller, &channel).await)
        }
        Call::PostMessage { caller, req } => answer(core.post_message(&caller, req).await),
        Call::SequenceMessage { caller, req } => answer(core.sequence_message(&caller, req).await),
        Call::History {
            caller,
            channel,
            before,
            limit,
        } => answer(core.history(&caller, &channel, before, limit).await),
        Call::MessagesAfter {
            caller,
            channel,
            after,
            limit,
        } => answer(core.messages_after(&caller, &channel, after, limit).await),
        Call::MarkRead {
            caller,
            channel,
            seq,
        } => answer(core.mark_read(&caller, &channel, seq).await),
        Call::ChannelStates { caller } => answer(core.channel_states(&caller).await),
        Call::Typing { caller, channel } => answer(core.typing(&caller, &channel).await),
        Call::Heartbeat { caller, session } => answer(core.heartbeat(&caller, &session).await),
        Call::EndSession { caller, session } => answer(core.end_session(&caller, &session).await),
        Call::SetPresence { caller, setting } => answer(core.set_presence(&caller, setting).await),
        Call::Presence { caller, users } => answer(core.presence(&caller, &users).await),
        Call::CreatePushSubscription { caller, req } => {
            answer(core.create_push_subscription(&caller, req).await)
        }
        Call::PushSubscriptions { caller } => answer(core.push_subscriptions(&caller).await),
        Call::DeletePushSubscription { caller, id } => {
            answer(core.delete_push_subscription(&caller, &id).await)
        }
        Call::Subscribe { .. } => Outcome::Err(ApiError::new(
            ErrorCode::Internal,
            "subscribe is handled as a stream",
        )),
    }
}
