//! One RTM connection (DESIGN.md §5): `hello`, then client commands answered in the
//! order they were sent, and team events pushed as they happen.
//!
//! A connection is three parts, each its own task: the *reader* turns WebSocket messages
//! into parsed commands (rate limit, size and JSON checks happen here, as early as
//! possible); the *session* executes commands one at a time and delivers hub events, so an
//! ack always follows the acks of earlier commands and live messages wait while a `resume`
//! replays; the *writer* owns the socket's send side and flushes after each batch, because
//! Pingora's stream is write-buffered. Between them are bounded queues, so a slow client
//! costs at most a fixed number of frames before it is cut off. Separate tasks, because a
//! hub event then wakes only the session, and the session's frames wake only the writer:
//! in one task every delivery re-polled all three parts, twice.

use crate::config::EdgeSettings;
use crate::delivery::{LiveAction, RateLimiter, SeqTracker};
use crate::drain::Drain;
use crate::hub::{ConnEvent, REASON_SLOW_CONSUMER, Registration};
use crate::metrics;
use confab_chat::{Caller, CoreApi};
use confab_proto::limits::{MAX_HISTORY_LIMIT, MAX_PRESENCE_IDS};
use confab_proto::rest::PostMessageRequest;
use confab_proto::rtm::{
    ClientCommand, ClientFrame, FrameError, ServerEvent, error_reply, ok_reply, parse_client_frame,
};
use confab_proto::{ApiError, ChannelId, ErrorCode, UserId};
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

/// `goodbye` reason when the edge shuts down.
pub const REASON_SHUTDOWN: &str = "server_shutdown";

/// Messages fetched per core call when replaying.
const REPLAY_PAGE: usize = MAX_HISTORY_LIMIT;

/// Frames the writer sends before it flushes, when many are waiting.
const WRITE_BATCH: usize = 64;

/// Hub events the session handles per wake-up before it looks at commands and kicks again.
const EVENT_BATCH: usize = 64;

/// How long the core may take to hear that a session ended.
const END_SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// What the reader passes to the session, in the order frames arrived.
#[derive(Debug)]
pub enum Incoming {
    /// A well-formed command within the rate limit.
    Command(ClientFrame),
    /// A frame that gets an error reply; the connection stays.
    Reject(FrameError),
    /// The client must be disconnected (abuse, oversize message, idle).
    Close { code: u16, reason: &'static str },
}

/// What the session passes to the writer.
#[derive(Debug)]
pub enum Outbound {
    Frame(Utf8Bytes),
    Close { code: u16, reason: String },
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client closed or the socket broke.
    ClientGone,
    /// The edge is shutting down.
    Drained,
    /// The grace period ran out.
    Forced,
    /// The hub cut the connection off (slow consumer, lagging events, lost stream).
    Kicked(String),
    /// The client did not read its frames in time.
    SlowConsumer,
    /// A gap could not be filled; the client must resume.
    Resync,
    /// The reader closed it (abuse, oversize, idle).
    Protocol { code: u16, reason: &'static str },
}

impl SessionEnd {
    /// The metrics label.
    pub fn cause(&self) -> &str {
        match self {
            Self::ClientGone => "client_gone",
            Self::Drained => "drained",
            Self::Forced => "forced",
            Self::Kicked(reason) => reason,
            Self::SlowConsumer => REASON_SLOW_CONSUMER,
            Self::Resync => crate::hub::REASON_RESYNC,
            Self::Protocol { reason, .. } => reason,
        }
    }

    /// The `goodbye` to send, if the client should reconnect.
    fn goodbye(&self) -> Option<&str> {
        match self {
            Self::Drained | Self::Forced => Some(REASON_SHUTDOWN),
            Self::Kicked(reason) => Some(reason),
            Self::SlowConsumer => Some(REASON_SLOW_CONSUMER),
            Self::Resync => Some(crate::hub::REASON_RESYNC),
            Self::ClientGone | Self::Protocol { .. } => None,
        }
    }

    fn close(&self) -> (u16, &'static str) {
        match self {
            Self::Protocol { code, reason } => (*code, reason),
            Self::Drained | Self::Forced => (1001, "going away"),
            Self::SlowConsumer => (1008, "slow consumer"),
            Self::Kicked(_) | Self::Resync => (1012, "reconnect"),
            Self::ClientGone => (1000, ""),
        }
    }

    /// Whether frames still queued may be dropped instead of written.
    fn cut_hard(&self) -> bool {
        matches!(self, Self::SlowConsumer | Self::Forced)
            || matches!(self, Self::Kicked(reason) if reason == REASON_SLOW_CONSUMER)
    }
}

/// Why a replay stopped.
enum ReplayError {
    Api(ApiError),
    End(SessionEnd),
}

/// The WebSocket settings of an RTM connection: small buffers, bounded messages.
pub fn websocket_config(settings: &EdgeSettings) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(settings.ws_read_buffer_bytes)
        // Frames go straight to Pingora's buffered stream; a second buffer would only
        // double the memory per connection.
        .write_buffer_size(0)
        .max_write_buffer_size(settings.ws_max_write_buffer_bytes)
        .max_message_size(Some(settings.max_ws_message_bytes))
        .max_frame_size(Some(settings.max_ws_message_bytes))
}

/// What every connection of an edge shares.
#[derive(Clone)]
pub struct RtmContext {
    pub core: Arc<dyn CoreApi>,
    pub settings: Arc<EdgeSettings>,
    pub drain: Drain,
}

impl std::fmt::Debug for RtmContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmContext")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Runs an upgraded connection to its end: reader, session and writer, then tells the
/// core the session is over.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    ctx: RtmContext,
    caller: Caller,
    registration: Registration,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _active = ctx.drain.track();
    let _open = OpenConnection::count();
    let settings = ctx.settings.clone();
    let (sink, stream) = ws.split();
    let (in_tx, in_rx) = mpsc::channel(settings.command_queue);
    let (out_tx, out_rx) = mpsc::channel(settings.send_buffer_frames);
    let (abort_tx, abort_rx) = watch::channel(false);

    let session = Session::new(
        ctx.core.clone(),
        caller.clone(),
        registration,
        out_tx,
        settings.clone(),
    );
    let session_id = session.session_id().to_owned();
    let drain = ctx.drain.clone();
    let run_session = async move {
        let end = session.run(in_rx, &drain).await;
        if end.cut_hard() {
            abort_tx.send_replace(true);
        }
        end
    };
    let mut writer = Part::spawn(write_loop(sink, out_rx, settings.write_timeout, abort_rx));
    // The session notices the reader's end through its closed queue and ends itself.
    let _reader = Part::spawn({
        let settings = settings.clone();
        async move { read_loop(stream, in_tx, &settings).await }
    });
    let main = async {
        let end = run_session.await;
        // What the session queued last (goodbye, close) goes out before the end.
        writer.finished().await;
        end
    };
    let end = tokio::select! {
        end = main => end,
        () = ctx.drain.forced() => SessionEnd::Forced,
    };

    if end == SessionEnd::SlowConsumer
        || matches!(&end, SessionEnd::Kicked(r) if r == REASON_SLOW_CONSUMER)
    {
        metrics::SLOW_CONSUMER_DISCONNECTS.inc();
    }
    metrics::CONNECTION_ENDS
        .with_label_values(&[end.cause()])
        .inc();
    let ended = tokio::time::timeout(
        END_SESSION_TIMEOUT,
        ctx.core.end_session(&caller, &session_id),
    )
    .await;
    if !matches!(ended, Ok(Ok(()))) {
        tracing::debug!(user = %caller.user, "end_session did not complete");
    }
    end
}

/// A part of a connection running as its own task; dropping it stops the task, so a
/// connection's parts never outlive it.
struct Part(tokio::task::JoinHandle<()>);

impl Part {
    fn spawn(part: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(part))
    }

    /// Resolves when the task has ended.
    async fn finished(&mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts an open connection in the gauge for as long as it lives, however it ends.
struct OpenConnection;

impl OpenConnection {
    fn count() -> Self {
        metrics::OPEN_CONNECTIONS.inc();
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::OPEN_CONNECTIONS.dec();
    }
}

/// Reads client messages until the client leaves or must be cut off.
pub async fn read_loop<S>(mut stream: S, tx: mpsc::Sender<Incoming>, settings: &EdgeSettings)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut limiter = RateLimiter::new(settings.rate_per_sec, settings.rate_burst);
    let mut strikes = 0u32;
    loop {
        let message = match tokio::time::timeout(settings.idle_timeout, stream.next()).await {
            Err(_) => {
                let _ = tx
                    .send(Incoming::Close {
                        code: 1001,
                        reason: "idle",
                    })
                    .await;
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(WsError::Capacity(_)))) => {
                let _ = tx
                    .send(Incoming::Close {
                        code: 1009,
                        reason: "message_too_big",
                    })
                    .await;
                return;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "websocket read ended");
                return;
            }
            Ok(Some(Ok(message))) => message,
        };
        let incoming = match message {
            Message::Text(text) => {
                metrics::FRAMES_IN.inc();
                let parsed = parse_client_frame(text.as_str());
                if limiter.allow() {
                    match parsed {
                        Ok(frame) => Incoming::Command(frame),
                        Err(rejection) => Incoming::Reject(rejection),
                    }
                } else {
                    metrics::RATE_LIMITED.inc();
                    let reply_to = match parsed {
                        Ok(frame) => Some(frame.id),
                        Err(rejection) => rejection.reply_to,
                    };
                    Incoming::Reject(FrameError {
                        reply_to,
                        error: ApiError::new(ErrorCode::RateLimited, "too many frames; slow down"),
                    })
                }
            }
            Message::Binary(_) => {
                metrics::FRAMES_IN.inc();
                let code = if limiter.allow() {
                    ErrorCode::InvalidJson
                } else {
                    ErrorCode::RateLimited
                };
                Incoming::Reject(FrameError {
                    reply_to: None,
                    error: ApiError::new(code, "send JSON text frames, not binary"),
                })
            }
            Message::Close(_) => return,
            // tungstenite answers pings itself; the writer's next flush sends the pong.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if matches!(incoming, Incoming::Reject(_)) {
            strikes += 1;
            if strikes >= settings.abuse_strikes {
                let _ = tx
                    .send(Incoming::Close {
                        code: 1008,
                        reason: "abusive",
                    })
                    .await;
                return;
            }
        } else {
            strikes = 0;
        }
        if tx.send(incoming).await.is_err() {
            return;
        }
    }
}

/// Writes queued frames, flushing after each batch, until the queue closes or a close
/// frame is queued; stops at once when `abort` flips (a slow consumer is not waited for).
pub async fn write_loop<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Outbound>,
    write_timeout: Duration,
    mut abort: watch::Receiver<bool>,
) where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let write = async {
        loop {
            let Some(first) = rx.recv().await else {
                let close = Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: Utf8Bytes::from_static(""),
                }));
                let _ = tokio::time::timeout(write_timeout, sink.send(close)).await;
                return;
            };
            let mut next = Some(first);
            let mut batch = 0;
            while let Some(item) = next.take() {
                match item {
                    Outbound::Frame(text) => {
                        match tokio::time::timeout(write_timeout, sink.feed(Message::Text(text)))
                            .await
                        {
                            Ok(Ok(())) => metrics::FRAMES_OUT.inc(),
                            _ => return,
                        }
                    }
                    Outbound::Close { code, reason } => {
                        let close = Message::Close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        }));
                        let _ = tokio::time::timeout(write_timeout, sink.send(close)).await;
                        return;
                    }
                }
                batch += 1;
                if batch < WRITE_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !matches!(
                tokio::time::timeout(write_timeout, sink.flush()).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
    };
    let aborted = async {
        // The session dropping its sender is no abort: what it queued last (goodbye,
        // close) must still go out.
        if abort.wait_for(|a| *a).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = write => {}
        () = aborted => {}
    }
}

/// The command executor and event deliverer of one connection.
pub struct Session {
    core: Arc<dyn CoreApi>,
    caller: Caller,
    session_id: String,
    registration: Registration,
    events: mpsc::Receiver<ConnEvent>,
    out: mpsc::Sender<Outbound>,
    tracker: SeqTracker,
    settings: Arc<EdgeSettings>,
    last_heartbeat: Option<Instant>,
    last_presence_flush: Option<Instant>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.caller.user)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a registered connection; `out` goes to the writer.
    pub fn new(
        core: Arc<dyn CoreApi>,
        caller: Caller,
        mut registration: Registration,
        out: mpsc::Sender<Outbound>,
        settings: Arc<EdgeSettings>,
    ) -> Self {
        let events = registration
            .take_events()
            .expect("a registration's events are taken once, by its session");
        Self {
            core,
            caller,
            session_id: format!("S{}", ulid::Ulid::new()),
            registration,
            events,
            out,
            tracker: SeqTracker::new(),
            settings,
            last_heartbeat: None,
            last_presence_flush: None,
        }
    }

    /// The id the core knows this session by (heartbeats, end).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Says hello, then serves commands and events until the connection ends; the last
    /// frames are a `goodbye` (when the client should reconnect) and a close.
    pub async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Incoming>,
        drain: &Drain,
    ) -> SessionEnd {
        self.heartbeat().await;
        let shared = self.registration.shared().clone();
        let end = match self.send(ServerEvent::Hello.to_frame()).await {
            Err(end) => end,
            Ok(()) => {
                let mut presence_due: Option<Instant> = None;
                // Made once, not per turn: re-registering their wakers on every event
                // was a measurable share of a busy edge's CPU.
                let draining = drain.draining();
                let kicked = shared.kicked();
                let presence_woken = shared.presence_pending();
                tokio::pin!(draining, kicked, presence_woken);
                loop {
                    // Checked every turn, not only on notification: a wake-up raced by a
                    // dropped select branch must not leave changes waiting forever.
                    if presence_due.is_none() && shared.has_pending_presence() {
                        let earliest = self.last_presence_flush.map_or_else(Instant::now, |t| {
                            t + self.settings.presence_flush_interval
                        });
                        presence_due = Some(earliest.max(Instant::now()));
                    }
                    let due = presence_due;
                    let step = tokio::select! {
                        () = &mut draining => Err(SessionEnd::Drained),
                        reason = &mut kicked => Err(SessionEnd::Kicked(reason)),
                        item = incoming.recv() => match item {
                            None => Err(SessionEnd::ClientGone),
                            Some(item) => self.on_incoming(item).await,
                        },
                        event = self.events.recv() => match event {
                            None => Err(SessionEnd::Kicked(crate::hub::REASON_UPSTREAM_CLOSED.into())),
                            Some(event) => self.on_events(event).await,
                        },
                        // Only a wake-up: the check above turns it into a flush time.
                        () = &mut presence_woken, if due.is_none() => {
                            presence_woken.set(shared.presence_pending());
                            Ok(())
                        }
                        () = sleep_until_opt(due), if due.is_some() => {
                            presence_due = None;
                            self.flush_presence().await
                        }
                    };
                    if let Err(end) = step {
                        break end;
                    }
                }
            }
        };
        self.farewell(&end);
        end
    }

    fn farewell(&self, end: &SessionEnd) {
        // A full queue means the client is not reading; the goodbye is best effort then.
        if let Some(reason) = end.goodbye() {
            let goodbye = ServerEvent::Goodbye {
                reason: reason.to_owned(),
            };
            let _ = self
                .out
                .try_send(Outbound::Frame(goodbye.to_frame().into()));
        }
        if *end != SessionEnd::ClientGone {
            let (code, reason) = end.close();
            let _ = self.out.try_send(Outbound::Close {
                code,
                reason: reason.to_owned(),
            });
        }
    }

    /// Queues a frame for the writer, waiting for room up to the write timeout. A kick
    /// ends the wait: when the hub gave up on this client, so does the session.
    async fn send(&self, frame: impl Into<Utf8Bytes>) -> Result<(), SessionEnd> {
        // Most of the time there is room, and nothing needs to wait or watch for kicks.
        let frame = match self.out.try_send(Outbound::Frame(frame.into())) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(SessionEnd::ClientGone),
            Err(mpsc::error::TrySendError::Full(frame)) => frame,
        };
        let queued = self.out.send_timeout(frame, self.settings.write_timeout);
        tokio::select! {
            queued = queued => match queued {
                Ok(()) => Ok(()),
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(SessionEnd::SlowConsumer),
                Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(SessionEnd::ClientGone),
            },
            reason = self.registration.shared().kicked() => Err(SessionEnd::Kicked(reason)),
        }
    }

    async fn heartbeat(&mut self) {
        let now = Instant::now();
        if self
            .last_heartbeat
            .is_some_and(|t| now.duration_since(t) < self.settings.heartbeat_interval)
        {
            return;
        }
        self.last_heartbeat = Some(now);
        if let Err(e) = self.core.heartbeat(&self.caller, &self.session_id).await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
    }

    async fn on_incoming(&mut self, item: Incoming) -> Result<(), SessionEnd> {
        match item {
            Incoming::Close { code, reason } => Err(SessionEnd::Protocol { code, reason }),
            Incoming::Reject(rejection) => {
                self.send(error_reply(rejection.reply_to, &rejection.error))
                    .await
            }
            Incoming::Command(frame) => {
                self.heartbeat().await;
                let started = Instant::now();
                let kind = command_kind(&frame.command);
                let result = self.execute(frame).await;
                metrics::COMMAND_SECONDS
                    .with_label_values(&[kind])
                    .observe(started.elapsed().as_secs_f64());
                result
            }
        }
    }

    async fn reply(
        &self,
        id: u64,
        result: Result<Map<String, Value>, ApiError>,
    ) -> Result<(), SessionEnd> {
        let frame = match result {
            Ok(fields) => ok_reply(id, fields),
            Err(error) => error_reply(Some(id), &error),
        };
        self.send(frame).await
    }

    async fn execute(&mut self, frame: ClientFrame) -> Result<(), SessionEnd> {
        let id = frame.id;
        let core = self.core.clone();
        let caller = &self.caller;
        let result = match frame.command {
            ClientCommand::Message {
                channel,
                text,
                client_msg_id,
            } => {
                let request = PostMessageRequest {
                    channel,
                    text,
                    client_msg_id,
                };
                core.post_message(caller, request)
                    .await
                    .map(|message| fields(json!({ "message": message })))
            }
            ClientCommand::Resume { cursors } => return self.resume(id, cursors).await,
            ClientCommand::Typing { channel } => {
                core.typing(caller, &channel).await.map(|()| Map::new())
            }
            ClientCommand::PresenceSub { ids } => check_presence_ids(&ids).map(|()| {
                self.registration.set_presence_sub(&ids);
                Map::new()
            }),
            ClientCommand::PresenceQuery { ids } => match check_presence_ids(&ids) {
                Err(e) => Err(e),
                Ok(()) => core
                    .presence(caller, &ids)
                    .await
                    .map(|users| fields(json!({ "users": users }))),
            },
            ClientCommand::PresenceSet { presence } => core
                .set_presence(caller, presence)
                .await
                .map(|()| Map::new()),
            ClientCommand::Mark { channel, seq } => core
                .mark_read(caller, &channel, seq)
                .await
                .map(|()| Map::new()),
            ClientCommand::Ping => Ok(fields(json!({ "type": "pong" }))),
        };
        self.reply(id, result).await
    }

    /// Replays what the client missed, channel by channel in `seq` order, then replies.
    /// Live events wait in the queue meanwhile and are de-duplicated when they come out.
    async fn resume(
        &mut self,
        id: u64,
        cursors: BTreeMap<ChannelId, u64>,
    ) -> Result<(), SessionEnd> {
        let mut failed = Map::new();
        for (channel, after) in cursors {
            let plan = self.tracker.resume(&channel, after);
            let mut result = Ok(());
            if let Some((after, before)) = plan.prefix {
                result = self.replay(&channel, after, Some(before - 1), false).await;
            }
            if result.is_ok() {
                result = self.replay(&channel, plan.from, None, true).await;
            }
            match result {
                Ok(()) => {}
                Err(ReplayError::End(end)) => return Err(end),
                // Other channels can still be caught up; this one is reported.
                Err(ReplayError::Api(e)) if !e.code.retryable() => {
                    failed.insert(channel.to_string(), json!({ "code": e.code, "msg": e.msg }));
                }
                Err(ReplayError::Api(e)) => return self.reply(id, Err(e)).await,
            }
        }
        let mut reply = Map::new();
        if !failed.is_empty() {
            reply.insert("failed".into(), Value::Object(failed));
        }
        self.reply(id, Ok(reply)).await
    }

    /// Sends the messages of `channel` after `after` (up to `upto` if given), fetched from
    /// the core a page at a time. With `track`, only messages above the cursor go out and
    /// the cursor follows them.
    async fn replay(
        &mut self,
        channel: &ChannelId,
        after: u64,
        upto: Option<u64>,
        track: bool,
    ) -> Result<(), ReplayError> {
        let mut cursor = after;
        loop {
            let page = self
                .core
                .messages_after(&self.caller, channel, cursor, REPLAY_PAGE)
                .await
                .map_err(ReplayError::Api)?;
            let full = page.len() >= REPLAY_PAGE;
            let before = cursor;
            for message in page {
                if message.seq <= cursor {
                    continue;
                }
                if upto.is_some_and(|upto| message.seq > upto) {
                    return Ok(());
                }
                cursor = message.seq;
                if track {
                    if !self.tracker.is_new(channel, message.seq) {
                        continue;
                    }
                    self.tracker.delivered(channel, message.seq);
                }
                self.send(ServerEvent::Message(message).to_frame())
                    .await
                    .map_err(ReplayError::End)?;
                if upto == Some(cursor) {
                    return Ok(());
                }
            }
            // A short page is the end; a full page without progress would loop forever.
            if !full || cursor == before {
                return Ok(());
            }
        }
    }

    /// Handles `first` and then whatever else the hub has queued, up to a batch, in one
    /// wake-up: under load that is one scheduling of this task per batch, not per event.
    async fn on_events(&mut self, first: ConnEvent) -> Result<(), SessionEnd> {
        self.on_event(first).await?;
        for _ in 1..EVENT_BATCH {
            match self.events.try_recv() {
                Ok(event) => self.on_event(event).await?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn on_event(&mut self, event: ConnEvent) -> Result<(), SessionEnd> {
        match event {
            ConnEvent::Message(live) => {
                self.deliver_live(&live.channel, live.seq, live.frame.clone())
                    .await
            }
            ConnEvent::ChannelLeft { channel, frame } => {
                self.tracker.forget(&channel);
                self.send(frame).await
            }
            ConnEvent::Frame(frame) => self.send(frame).await,
        }
    }

    async fn deliver_live(
        &mut self,
        channel: &ChannelId,
        seq: u64,
        frame: Utf8Bytes,
    ) -> Result<(), SessionEnd> {
        if let LiveAction::FillGap { after } = self.tracker.live(channel, seq) {
            match self.replay(channel, after, Some(seq), true).await {
                Ok(()) => {}
                Err(ReplayError::End(end)) => return Err(end),
                Err(ReplayError::Api(e)) => {
                    // Sending `seq` now would hide the hole; the client resumes instead.
                    tracing::warn!(channel = %channel, error = %e, "cannot fill a delivery gap");
                    return Err(SessionEnd::Resync);
                }
            }
        }
        match self.tracker.live(channel, seq) {
            LiveAction::Duplicate => Ok(()),
            LiveAction::Deliver | LiveAction::FillGap { .. } => {
                self.tracker.delivered(channel, seq);
                self.send(frame).await
            }
        }
    }

    async fn flush_presence(&mut self) -> Result<(), SessionEnd> {
        let users = self.registration.shared().take_presence();
        if users.is_empty() {
            return Ok(());
        }
        self.last_presence_flush = Some(Instant::now());
        metrics::PRESENCE_FRAMES.inc();
        self.send(ServerEvent::PresenceChange { users }.to_frame())
            .await
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn check_presence_ids(ids: &[UserId]) -> Result<(), ApiError> {
    if ids.len() > MAX_PRESENCE_IDS {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("at most {MAX_PRESENCE_IDS} ids: subscribe to what is on screen"),
        ));
    }
    Ok(())
}

/// The metrics label of a command.
pub fn command_kind(command: &ClientCommand) -> &'static str {
    match command {
        ClientCommand::Message { .. } => "message",
        ClientCommand::Resume { .. } => "resume",
        ClientCommand::Typing { .. } => "typing",
        ClientCommand::PresenceSub { .. } => "presence_sub",
        ClientCommand::PresenceQuery { .. } => "presence_query",
        ClientCommand::PresenceSet { .. } => "presence_set",
        ClientCommand::Mark { .. } => "mark",
        ClientCommand::Ping => "ping",
    }
}
