//! Exactly-once, in-order delivery of messages on one connection (DESIGN.md §4).
//!
//! Messages reach a connection three ways: live from the hub, replayed by `resume`, and
//! fetched to fill a gap. [`SeqTracker`] remembers per channel the last `seq` delivered,
//! so a message is sent once whichever way it came, and a live message that jumps ahead is
//! preceded by the ones it skipped. It is plain state with no I/O; the connection does the
//! fetching it asks for.

use confab_proto::ChannelId;
use std::collections::HashMap;

/// What to do with a live message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveAction {
    /// Send it (it is the next one, or the first seen on this channel).
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
    /// Messages after `after` and before this one were not delivered: fetch them first.
    FillGap { after: u64 },
}

/// What `resume` of one channel must replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePlan {
    /// Messages in `(after, before)` that the connection never got because live delivery
    /// started above the client's cursor; replayed without moving the cursor.
    pub prefix: Option<(u64, u64)>,
    /// Replay everything after this seq.
    pub from: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChannelCursor {
    /// Last seq delivered (or known to the client, from its resume cursor).
    last: u64,
    /// Set when delivery began with a live message and no cursor from the client: the
    /// first seq delivered. Everything before it is unknown until the client resumes.
    unanchored_from: Option<u64>,
}

/// Per-channel delivery cursors of one connection.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    channels: HashMap<ChannelId, ChannelCursor>,
}

impl SeqTracker {
    /// An empty tracker: nothing delivered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last seq delivered on `channel`, if any.
    pub fn last(&self, channel: &ChannelId) -> Option<u64> {
        self.channels.get(channel).map(|c| c.last)
    }

    /// Decides about a live message of `channel` with `seq`.
    pub fn live(&self, channel: &ChannelId, seq: u64) -> LiveAction {
        match self.channels.get(channel) {
            None => LiveAction::Deliver,
            Some(cursor) if seq <= cursor.last => LiveAction::Duplicate,
            Some(cursor) if seq == cursor.last + 1 => LiveAction::Deliver,
            Some(cursor) => LiveAction::FillGap { after: cursor.last },
        }
    }

    /// Whether `seq` is above what was delivered on `channel` (replays skip the rest).
    pub fn is_new(&self, channel: &ChannelId, seq: u64) -> bool {
        self.channels.get(channel).is_none_or(|c| seq > c.last)
    }

    /// Records that `seq` of `channel` was sent.
    pub fn delivered(&mut self, channel: &ChannelId, seq: u64) {
        match self.channels.get_mut(channel) {
            Some(cursor) => cursor.last = cursor.last.max(seq),
            None => {
                self.channels.insert(
                    channel.clone(),
                    ChannelCursor {
                        last: seq,
                        unanchored_from: Some(seq),
                    },
                );
            }
        }
    }

    /// The client says it has everything of `channel` up to `after`: plans the replay and
    /// anchors the cursor there (never moving it back, so nothing is sent twice).
    pub fn resume(&mut self, channel: &ChannelId, after: u64) -> ResumePlan {
        match self.channels.get_mut(channel) {
            None => {
                self.channels.insert(
                    channel.clone(),
                    ChannelCursor {
                        last: after,
                        unanchored_from: None,
                    },
                );
                ResumePlan {
                    prefix: None,
                    from: after,
                }
            }
            Some(cursor) => {
                let prefix = cursor
                    .unanchored_from
                    .take()
                    .filter(|first| after + 1 < *first)
                    .map(|first| (after, first));
                cursor.last = cursor.last.max(after);
                ResumePlan {
                    prefix,
                    from: cursor.last,
                }
            }
        }
    }

    /// Forgets `channel` (the user left it): a later rejoin starts afresh.
    pub fn forget(&mut self, channel: &ChannelId) {
        self.channels.remove(channel);
    }
}

/// A token bucket: `rate` per second sustained, `burst` at once.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate_per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
