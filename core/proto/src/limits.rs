//! Size limits of the public API. They are part of the contract: clients can rely on
//! anything within them being accepted, and on a clear error above them.

/// Largest accepted RTM frame (bytes of JSON text). Larger frames get a `frame_too_large`
/// error reply; the connection stays open.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Largest accepted message text, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 40_000;

/// Largest accepted REST request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Longest `client_msg_id`.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 128;

/// Most messages one history page returns.
pub const MAX_HISTORY_LIMIT: usize = 200;

/// History page size when the client names none.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// Most users one `presence_sub` or `presence_query` may name: presence follows what is
/// on screen, never a whole large channel.
pub const MAX_PRESENCE_IDS: usize = 500;

/// Most members in a group DM, the caller included.
pub const MAX_GROUP_DM_MEMBERS: usize = 9;

/// Channel name length bounds, in bytes.
pub const MAX_CHANNEL_NAME_BYTES: usize = 80;

/// Longest push subscription URL.
pub const MAX_PUSH_URL_BYTES: usize = 2048;

/// Most push subscriptions (devices, sinks) one user may register.
pub const MAX_PUSH_SUBSCRIPTIONS_PER_USER: usize = 10;
