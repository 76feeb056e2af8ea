//! `confab notify` (DESIGN.md §1): the consumer of the durable event log that sends a
//! push notification for each DM and @mention to the members who are not active, through
//! the webhook sinks they registered (`POST /v1/push/subscriptions`).
//!
//! - [`recipients`]: who a message notifies and why (pure).
//! - [`webhook`]: the HTTP(S) POST sink, with retries and a stable idempotency key.
//! - [`worker`]: the poll → notify → commit loop; delivery is recorded per
//!   (message, subscription) so a redelivered record (after a crash or restart) sends
//!   nothing twice, and the group's offset is committed only after a record is done, so
//!   a restart resumes where it stopped and misses nothing.

pub mod recipients;
pub mod webhook;
pub mod worker;

pub use recipients::{Reason, mentions};
pub use webhook::{DeliveryError, PushSink, WebhookSink};
pub use worker::{Notifier, NotifyConfig, PushPayload};
