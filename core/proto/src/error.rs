//! The one error shape of the public API: `{"error":{"code","msg"}}` over REST and
//! `{"reply_to":id,"ok":false,"error":{"code","msg"}}` over RTM. Codes are stable
//! snake_case strings; messages are for humans and may change.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error code a client can see. Adding one is compatible; renaming one is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body or frame is not valid JSON or lacks a required field.
    InvalidJson,
    /// A field has a value outside what the API accepts.
    InvalidArgument,
    /// The RTM frame names a `type` the server does not know.
    UnknownCommand,
    /// The RTM frame is larger than `limits::MAX_FRAME_BYTES`.
    FrameTooLarge,
    /// The message text is larger than `limits::MAX_TEXT_BYTES`.
    MessageTooLong,
    /// The message text is empty.
    EmptyMessage,
    /// No token, or a token that is forged, expired or otherwise invalid.
    NotAuthed,
    /// Wrong team, email or password.
    InvalidCredentials,
    /// The caller is authenticated but may not do this.
    Forbidden,
    /// The caller is not a member of the channel.
    NotInChannel,
    /// No such channel visible to the caller (other teams' ids included).
    ChannelNotFound,
    /// No such user in the caller's team.
    UserNotFound,
    /// No such route.
    NotFound,
    /// The HTTP method is not served on this route.
    MethodNotAllowed,
    /// The team domain is taken.
    DomainTaken,
    /// The email is already registered in this team.
    EmailTaken,
    /// A channel of that name exists in the team.
    NameTaken,
    /// Public team creation is turned off on this deployment.
    TeamCreationDisabled,
    /// DMs cannot be joined or left; private channels cannot be joined without an invite.
    CantJoin,
    /// Too many requests on this connection.
    RateLimited,
    /// The server is shutting down or a backend is unavailable; retry elsewhere or later.
    Unavailable,
    /// A bug or unexpected failure; nothing was acknowledged.
    Internal,
}

impl ErrorCode {
    /// The stable wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidArgument => "invalid_argument",
            Self::UnknownCommand => "unknown_command",
            Self::FrameTooLarge => "frame_too_large",
            Self::MessageTooLong => "message_too_long",
            Self::EmptyMessage => "empty_message",
            Self::NotAuthed => "not_authed",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::NotInChannel => "not_in_channel",
            Self::ChannelNotFound => "channel_not_found",
            Self::UserNotFound => "user_not_found",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::DomainTaken => "domain_taken",
            Self::EmailTaken => "email_taken",
            Self::NameTaken => "name_taken",
            Self::TeamCreationDisabled => "team_creation_disabled",
            Self::CantJoin => "cant_join",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status a REST response with this code carries.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::InvalidArgument
            | Self::UnknownCommand
            | Self::MessageTooLong
            | Self::EmptyMessage => 400,
            Self::FrameTooLarge => 413,
            Self::NotAuthed | Self::InvalidCredentials => 401,
            Self::Forbidden | Self::NotInChannel | Self::TeamCreationDisabled | Self::CantJoin => {
                403
            }
            Self::ChannelNotFound | Self::UserNotFound | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::DomainTaken | Self::EmailTaken | Self::NameTaken => 409,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// Whether the same request may succeed if retried unchanged later.
    pub fn retryable(self) -> bool {
        matches!(self, Self::RateLimited | Self::Unavailable | Self::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub msg: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    /// The REST body: `{"error":{"code","msg"}}`.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "msg": self.msg } })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.msg)
    }
}

impl std::error::Error for ApiError {}
