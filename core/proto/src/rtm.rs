//! RTM v1 frames over WebSocket (DESIGN.md §5), modelled on Slack's RTM API: the client
//! sends commands with a positive integer `id` and gets `{"reply_to":id,"ok":..}`; the
//! server pushes events tagged by `type`.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{ChannelId, UserId};
use crate::limits::MAX_FRAME_BYTES;
use crate::model::{Channel, Message, Presence, User};
use crate::rest::UserPresence;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A presence a user sets for themself; `auto` returns to connection-driven presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceSetting {
    Auto,
    Away,
    Dnd,
}

/// A command from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientCommand {
    /// Post a message; the reply carries the stored message once it is durable.
    Message {
        channel: ChannelId,
        text: String,
        client_msg_id: String,
    },
    /// Replay what was missed after the given per-channel `seq`s, then reply.
    Resume { cursors: BTreeMap<ChannelId, u64> },
    /// Tell the channel's other members that the caller is typing.
    Typing { channel: ChannelId },
    /// Replace the set of users whose presence changes this connection receives.
    PresenceSub { ids: Vec<UserId> },
    /// Ask for the current presence of some users; the reply carries it.
    PresenceQuery { ids: Vec<UserId> },
    /// Set away, do-not-disturb, or back to automatic.
    PresenceSet { presence: PresenceSetting },
    /// Move the read marker of a channel.
    Mark { channel: ChannelId, seq: u64 },
    /// Keep-alive and heartbeat; the reply has `"type":"pong"`.
    Ping,
}

/// A parsed client frame.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientFrame {
    pub id: u64,
    pub command: ClientCommand,
}

/// Why a frame was rejected, with the `id` to reply to when one could be read.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameError {
    pub reply_to: Option<u64>,
    pub error: ApiError,
}

const KNOWN_TYPES: &[&str] = &[
    "message",
    "resume",
    "typing",
    "presence_sub",
    "presence_query",
    "presence_set",
    "mark",
    "ping",
];

/// Parses one text frame. Errors say what was wrong and carry the frame's `id` when it
/// had a usable one, so the client can match the error to its command.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError {
            reply_to: None,
            error: ApiError::new(
                ErrorCode::FrameTooLarge,
                format!("frames are limited to {MAX_FRAME_BYTES} bytes"),
            ),
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
        reply_to: None,
        error: ApiError::new(ErrorCode::InvalidJson, format!("frame is not JSON: {e}")),
    })?;
    let Value::Object(mut object) = value else {
        return Err(FrameError {
            reply_to: None,
            error: ApiError::new(ErrorCode::InvalidJson, "frame must be a JSON object"),
        });
    };
    let id = object
        .remove("id")
        .and_then(|v| v.as_u64())
        .filter(|id| *id > 0);
    let Some(id) = id else {
        return Err(FrameError {
            reply_to: None,
            error: ApiError::new(
                ErrorCode::InvalidArgument,
                "frame needs a positive integer \"id\"",
            ),
        });
    };
    let fail = |code, msg: String| FrameError {
        reply_to: Some(id),
        error: ApiError::new(code, msg),
    };
    match object.get("type").and_then(Value::as_str) {
        None => {
            return Err(fail(
                ErrorCode::InvalidArgument,
                "frame needs a \"type\"".into(),
            ));
        }
        Some(kind) if !KNOWN_TYPES.contains(&kind) => {
            return Err(fail(
                ErrorCode::UnknownCommand,
                format!("unknown command type {kind:?}"),
            ));
        }
        Some(_) => {}
    }
    let command: ClientCommand = serde_json::from_value(Value::Object(object))
        .map_err(|e| fail(ErrorCode::InvalidArgument, format!("bad command: {e}")))?;
    Ok(ClientFrame { id, command })
}

/// An event pushed by the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// First frame on every connection.
    Hello,
    /// A new message, with every field of the message at the top level.
    Message(Message),
    MessageChanged {
        message: Message,
    },
    MessageDeleted {
        channel: ChannelId,
        seq: u64,
    },
    UserTyping {
        channel: ChannelId,
        user: UserId,
    },
    /// Batched presence changes of subscribed users.
    PresenceChange {
        users: Vec<UserPresence>,
    },
    /// The receiving user was added to a channel.
    ChannelJoined {
        channel: Channel,
    },
    MemberJoinedChannel {
        channel: ChannelId,
        user: UserId,
    },
    MemberLeftChannel {
        channel: ChannelId,
        user: UserId,
    },
    /// The receiving user left a channel (on any of their connections).
    ChannelLeft {
        channel: ChannelId,
    },
    /// The receiving user moved their read marker (on any of their connections).
    ChannelMarked {
        channel: ChannelId,
        seq: u64,
    },
    UserChange {
        user: User,
    },
    /// The server is going away; reconnect (elsewhere) and `resume`.
    Goodbye {
        reason: String,
    },
}

impl ServerEvent {
    /// The event as one JSON text frame.
    pub fn to_frame(&self) -> String {
        serde_json::to_string(self).expect("server events always serialize")
    }
}

/// `{"reply_to":id,"ok":true, ...fields}`.
pub fn ok_reply(reply_to: u64, fields: Map<String, Value>) -> String {
    let mut object = fields;
    object.insert("reply_to".into(), reply_to.into());
    object.insert("ok".into(), true.into());
    Value::Object(object).to_string()
}

/// `{"reply_to":id,"ok":false,"error":{"code","msg"}}`, or without `reply_to` when the
/// frame had no usable id.
pub fn error_reply(reply_to: Option<u64>, error: &ApiError) -> String {
    let mut object = Map::new();
    if let Some(id) = reply_to {
        object.insert("reply_to".into(), id.into());
    }
    object.insert("ok".into(), false.into());
    object.insert(
        "error".into(),
        serde_json::json!({ "code": error.code, "msg": error.msg }),
    );
    Value::Object(object).to_string()
}

/// The value of a `presence_change` entry.
pub fn user_presence(id: UserId, presence: Presence) -> UserPresence {
    UserPresence { id, presence }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_message_command() {
        let frame = parse_client_frame(
            r#"{"id":7,"type":"message","channel":"C1","text":"hi","client_msg_id":"x"}"#,
        )
        .unwrap();
        assert_eq!(frame.id, 7);
        assert_eq!(
            frame.command,
            ClientCommand::Message {
                channel: "C1".into(),
                text: "hi".into(),
                client_msg_id: "x".into()
            }
        );
    }

    #[test]
    fn rejects_malformed_frames_with_codes() {
        let err = parse_client_frame("{nope").unwrap_err();
        assert_eq!(err.error.code, ErrorCode::InvalidJson);
        assert_eq!(err.reply_to, None);

        let err = parse_client_frame(r#"{"id":3,"type":"dance"}"#).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::UnknownCommand);
        assert_eq!(err.reply_to, Some(3));

        let err = parse_client_frame(r#"{"id":4,"type":"message","channel":"C1"}"#).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::InvalidArgument);
        assert_eq!(err.reply_to, Some(4));

        let err = parse_client_frame(r#"{"id":0,"type":"ping"}"#).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::InvalidArgument);

        let big = format!(
            r#"{{"id":1,"type":"ping","pad":"{}"}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        let err = parse_client_frame(&big).unwrap_err();
        assert_eq!(err.error.code, ErrorCode::FrameTooLarge);
    }

    #[test]
    fn message_events_are_flat() {
        let event = ServerEvent::Message(Message {
            id: "M1".into(),
            channel: "C1".into(),
            user: "U1".into(),
            text: "hi".into(),
            seq: 3,
            ts: "1.000001".into(),
            client_msg_id: "x".into(),
            thread_ts: None,
            edited_ts: None,
            deleted: false,
        });
        let value: Value = serde_json::from_str(&event.to_frame()).unwrap();
        assert_eq!(value["type"], "message");
        assert_eq!(value["seq"], 3);
        assert_eq!(value["channel"], "C1");
    }
}
