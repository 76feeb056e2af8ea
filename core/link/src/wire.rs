//! The link's wire format: length-prefixed JSON frames (a big-endian `u32` byte count,
//! then one JSON value). A client sends [`ToCore`] frames, the core answers with
//! [`FromCore`] frames; each request has an id so many calls share one connection.

use confab_chat::Caller;
use confab_proto::event::TeamEvent;
use confab_proto::rest::{
    CreateChannelRequest, CreatePushSubscriptionRequest, CreateTeamRequest, LoginRequest, NewUser,
    PostMessageRequest,
};
use confab_proto::rtm::PresenceSetting;
use confab_proto::{ApiError, ChannelId, TeamId, UserId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side accepts. Public requests are capped far below this
/// (256 KiB bodies); history pages of 200 long messages fit.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// One call of [`confab_chat::CoreApi`], with its arguments, plus the link's own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// The link's greeting: the core answers with its [`Hello`].
    Hello,
    CreateTeam {
        req: CreateTeamRequest,
    },
    Login {
        req: LoginRequest,
    },
    Team {
        caller: Caller,
    },
    CreateUser {
        caller: Caller,
        req: NewUser,
    },
    Users {
        caller: Caller,
        ids: Vec<UserId>,
    },
    CreateChannel {
        caller: Caller,
        req: CreateChannelRequest,
    },
    OpenDm {
        caller: Caller,
        users: Vec<UserId>,
    },
    Channel {
        caller: Caller,
        channel: ChannelId,
    },
    ListChannels {
        caller: Caller,
    },
    MemberChannels {
        caller: Caller,
    },
    ChannelMembers {
        caller: Caller,
        channel: ChannelId,
    },
    JoinChannel {
        caller: Caller,
        channel: ChannelId,
    },
    AddMembers {
        caller: Caller,
        channel: ChannelId,
        users: Vec<UserId>,
    },
    LeaveChannel {
        caller: Caller,
        channel: ChannelId,
    },
    PostMessage {
        caller: Caller,
        req: PostMessageRequest,
    },
    /// A post another core node forwards to the holder of the channel's lease.
    SequenceMessage {
        caller: Caller,
        req: PostMessageRequest,
    },
    History {
        caller: Caller,
        channel: ChannelId,
        before: Option<u64>,
        limit: usize,
    },
    MessagesAfter {
        caller: Caller,
        channel: ChannelId,
        after: u64,
        limit: usize,
    },
    MarkRead {
        caller: Caller,
        channel: ChannelId,
        seq: u64,
    },
    ChannelStates {
        caller: Caller,
    },
    Typing {
        caller: Caller,
        channel: ChannelId,
    },
    Heartbeat {
        caller: Caller,
        session: String,
    },
    EndSession {
        caller: Caller,
        session: String,
    },
    SetPresence {
        caller: Caller,
        setting: PresenceSetting,
    },
    Presence {
        caller: Caller,
        users: Vec<UserId>,
    },
    CreatePushSubscription {
        caller: Caller,
        req: CreatePushSubscriptionRequest,
    },
    PushSubscriptions {
        caller: Caller,
    },
    DeletePushSubscription {
        caller: Caller,
        id: String,
    },
    /// Opens a stream of the team's events: the reply comes once the subscription is in
    /// place, then [`FromCore::Event`] frames with the same id until [`FromCore::End`].
    Subscribe {
        team: TeamId,
    },
}

impl Call {
    /// The call's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::CreateTeam { .. } => "create_team",
            Self::Login { .. } => "login",
            Self::Team { .. } => "team",
            Self::CreateUser { .. } => "create_user",
            Self::Users { .. } => "users",
            Self::CreateChannel { .. } => "create_channel",
            Self::OpenDm { .. } => "open_dm",
            Self::Channel { .. } => "channel",
            Self::ListChannels { .. } => "list_channels",
            Self::MemberChannels { .. } => "member_channels",
            Self::ChannelMembers { .. } => "channel_members",
            Self::JoinChannel { .. } => "join_channel",
            Self::AddMembers { .. } => "add_members",
            Self::LeaveChannel { .. } => "leave_channel",
            Self::PostMessage { .. } => "post_message",
            Self::SequenceMessage { .. } => "sequence_message",
            Self::History { .. } => "history",
            Self::MessagesAfter { .. } => "messages_after",
            Self::MarkRead { .. } => "mark_read",
            Self::ChannelStates { .. } => "channel_states",
            Self::Typing { .. } => "typing",
            Self::Heartbeat { .. } => "heartbeat",
            Self::EndSession { .. } => "end_session",
            Self::SetPresence { .. } => "set_presence",
            Self::Presence { .. } => "presence",
            Self::CreatePushSubscription { .. } => "create_push_subscription",
            Self::PushSubscriptions { .. } => "push_subscriptions",
            Self::DeletePushSubscription { .. } => "delete_push_subscription",
            Self::Subscribe { .. } => "subscribe",
        }
    }

    /// Whether running the call twice has the effect of running it once, so a call
    /// whose answer was lost with its connection may be sent again, to any node.
    pub fn is_idempotent(&self) -> bool {
        // Posts carry a client_msg_id; joins, adds, leaves and marks converge; DMs are
        // get-or-create. Creating a team, user or channel twice would answer "taken".
        !matches!(
            self,
            Self::CreateTeam { .. }
                | Self::CreateUser { .. }
                | Self::CreateChannel { .. }
                | Self::CreatePushSubscription { .. }
        )
    }
}

/// What a core tells a client that connects.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The node's name in the cluster (geo-config `cores[].name`).
    pub node: String,
    /// The public key (PEM) tokens are verified with; edges need nothing else to check
    /// tokens and cannot mint them.
    pub token_public_key: String,
}

/// A frame from a client to a core.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToCore {
    Request {
        id: u64,
        call: Call,
    },
    /// Ends the subscription opened by request `id`.
    Cancel {
        id: u64,
    },
}

/// A frame from a core to a client.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromCore {
    Reply {
        id: u64,
        result: Outcome,
    },
    Event {
        id: u64,
        event: TeamEvent,
    },
    /// The subscription of request `id` ended (cut off, or the core is stopping).
    End {
        id: u64,
    },
}

/// A call's result: the answer's JSON, or the error the core returned.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(serde_json::Value),
    Err(ApiError),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R, T>(reader: &mut R, buf: &mut Vec<u8>) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await?;
    Ok(Some(serde_json::from_slice(buf)?))
}

/// Encodes one frame into `out` (appending), ready to be written.
pub fn encode_frame<T: Serialize>(frame: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, frame)?;
    let len = out.len() - start - 4;
    if len > MAX_FRAME_BYTES {
        out.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Writes encoded frames and flushes.
pub async fn write_all<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let frame = ToCore::Request {
            id: 7,
            call: Call::Subscribe {
                team: TeamId::new("T1"),
            },
        };
        let mut bytes = Vec::new();
        encode_frame(&frame, &mut bytes).unwrap();
        encode_frame(&ToCore::Cancel { id: 7 }, &mut bytes).unwrap();
        let mut reader = bytes.as_slice();
        let mut buf = Vec::new();
        let first: ToCore = read_frame(&mut reader, &mut buf).await.unwrap().unwrap();
        assert!(matches!(
            first,
            ToCore::Request {
                id: 7,
                call: Call::Subscribe { .. }
            }
        ));
        let second: ToCore = read_frame(&mut reader, &mut buf).await.unwrap().unwrap();
        assert!(matches!(second, ToCore::Cancel { id: 7 }));
        let end: Option<ToCore> = read_frame(&mut reader, &mut buf).await.unwrap();
        assert!(end.is_none());

        let huge = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        let mut reader = &huge[..];
        let result: Result<Option<ToCore>, _> = read_frame(&mut reader, &mut buf).await;
        assert!(matches!(result, Err(FrameError::TooLarge(_))));

        let garbage = [0, 0, 0, 3, b'{', b'x', b'}'];
        let mut reader = &garbage[..];
        let result: Result<Option<ToCore>, _> = read_frame(&mut reader, &mut buf).await;
        assert!(matches!(result, Err(FrameError::Malformed(_))));
    }
}
