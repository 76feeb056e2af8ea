//! The text every load-generator message carries: `bench SENDER SEQ SENT_US`. The sender's
//! index and its send number identify the message (so a receiver counts losses and
//! duplicates), and the intended send instant, in microseconds since the run's base
//! instant, gives the latency on arrival. Sender and receivers share one process's
//! monotonic clock, so no clock sync is involved. Servers carry the text unchanged, so
//! every server is measured the same way.

/// What a message's text says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The sending member's (or user's) index.
    pub sender: u64,
    /// The sender's own message number, from 0.
    pub seq: u64,
    /// When it was meant to be sent, in µs since the run's base instant.
    pub sent_us: u64,
}

const TAG: &str = "bench";

impl Payload {
    /// The text to send.
    pub fn text(&self) -> String {
        format!("{TAG} {} {} {}", self.sender, self.seq, self.sent_us)
    }

    /// Reads a received text; `None` for anything the generator did not send.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.strip_prefix(TAG)?.strip_prefix(' ')?.split(' ');
        let mut next = || parts.next()?.parse::<u64>().ok();
        let payload = Self {
            sender: next()?,
            seq: next()?,
            sent_us: next()?,
        };
        parts.next().is_none().then_some(payload)
    }

    /// Latency of an arrival at `now_us` (same base), at least 1 µs so a histogram
    /// starting at 1 takes it.
    pub fn latency_us(&self, now_us: u64) -> u64 {
        now_us.saturating_sub(self.sent_us).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let payload = Payload {
            sender: 3,
            seq: 41,
            sent_us: 1_234_567,
        };
        assert_eq!(payload.text(), "bench 3 41 1234567");
        assert_eq!(Payload::parse(&payload.text()), Some(payload));
    }

    #[test]
    fn foreign_texts_are_not_payloads() {
        for text in [
            "",
            "bench",
            "bench 1 2",
            "bench 1 2 x",
            "bench 1 2 3 4",
            "benchx 1 2 3",
            "mc 1 2 3",
            "{\"t\":\"hello\"}",
        ] {
            assert_eq!(Payload::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn latency_is_never_zero_or_negative() {
        let payload = Payload {
            sender: 0,
            seq: 0,
            sent_us: 100,
        };
        assert_eq!(payload.latency_us(150), 50);
        assert_eq!(payload.latency_us(100), 1);
        assert_eq!(payload.latency_us(90), 1);
    }
}
