//! A hybrid logical clock (DESIGN.md §4) folded into microseconds: a stamp is the wall
//! clock in µs, pushed forward to one past the last stamp issued or observed. Stamps are
//! strictly increasing on a node, never behind a stamp it has seen from elsewhere (a
//! reply is never stamped before its parent), and stay within clock skew of real time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The clock. One per core node.
#[derive(Debug, Default)]
pub struct Hlc {
    last_micros: AtomicU64,
}

impl Hlc {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new stamp, greater than every stamp issued or observed before.
    pub fn now(&self) -> u64 {
        self.advance_past(0)
    }

    /// Takes note of a stamp from elsewhere (e.g. a thread parent) and returns a new
    /// stamp greater than it and than everything before.
    pub fn advance_past(&self, observed: u64) -> u64 {
        let wall = wall_micros();
        let mut last = self.last_micros.load(Ordering::Relaxed);
        loop {
            let next = wall.max(last + 1).max(observed + 1);
            match self.last_micros.compare_exchange_weak(
                last,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
}

fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The wire form `"SECONDS.MICROS"` (Slack's `ts` shape); sorts like the number while
/// seconds keep ten digits (until the year 2286).
pub fn format_ts(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Parses the wire form back into microseconds.
pub fn parse_ts(ts: &str) -> Option<u64> {
    let (secs, frac) = ts.split_once('.')?;
    if frac.len() != 6 {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let frac: u64 = frac.parse().ok()?;
    secs.checked_mul(1_000_000)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_even_in_a_burst() {
        let clock = Hlc::new();
        let mut last = 0;
        for _ in 0..10_000 {
            let t = clock.now();
            assert!(t > last);
            last = t;
        }
    }

    #[test]
    fn never_behind_an_observed_stamp_from_a_fast_clock() {
        let clock = Hlc::new();
        let from_the_future = wall_micros() + 60_000_000;
        let reply = clock.advance_past(from_the_future);
        assert!(reply > from_the_future);
        assert!(clock.now() > reply);
    }

    #[test]
    fn wire_form_round_trips() {
        assert_eq!(format_ts(1_700_000_000_000_042), "1700000000.000042");
        assert_eq!(parse_ts("1700000000.000042"), Some(1_700_000_000_000_042));
        assert_eq!(parse_ts("17.42"), None);
    }
}
