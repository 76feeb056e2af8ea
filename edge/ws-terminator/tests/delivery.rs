//! The exactly-once bookkeeping of one connection and its rate limiter, as plain state.

use confab_proto::ChannelId;
use confab_ws_terminator::delivery::{LiveAction, RateLimiter, ResumePlan, SeqTracker};
use std::time::Duration;

fn c1() -> ChannelId {
    "C1".into()
}

#[test]
fn live_messages_in_order_duplicates_and_gaps() {
    let mut tracker = SeqTracker::new();
    // Nothing known yet: the first live message is delivered as is.
    assert_eq!(tracker.live(&c1(), 7), LiveAction::Deliver);
    tracker.delivered(&c1(), 7);
    assert_eq!(tracker.live(&c1(), 7), LiveAction::Duplicate);
    assert_eq!(tracker.live(&c1(), 3), LiveAction::Duplicate);
    assert_eq!(tracker.live(&c1(), 8), LiveAction::Deliver);
    assert_eq!(tracker.live(&c1(), 11), LiveAction::FillGap { after: 7 });
    // Channels are independent.
    assert_eq!(tracker.live(&"C2".into(), 1), LiveAction::Deliver);
    assert_eq!(tracker.last(&c1()), Some(7));
}

#[test]
fn resume_anchors_and_never_moves_back() {
    let mut tracker = SeqTracker::new();
    assert_eq!(
        tracker.resume(&c1(), 4),
        ResumePlan {
            prefix: None,
            from: 4
        }
    );
    assert!(!tracker.is_new(&c1(), 4));
    assert!(tracker.is_new(&c1(), 5));
    tracker.delivered(&c1(), 5);
    tracker.delivered(&c1(), 6);
    // An older cursor replays nothing already sent.
    assert_eq!(
        tracker.resume(&c1(), 2),
        ResumePlan {
            prefix: None,
            from: 6
        }
    );
    // A newer cursor (seen on another connection) moves it forward.
    assert_eq!(
        tracker.resume(&c1(), 9),
        ResumePlan {
            prefix: None,
            from: 9
        }
    );
    assert_eq!(tracker.live(&c1(), 9), LiveAction::Duplicate);
}

#[test]
fn resume_after_unanchored_live_delivery_replays_only_the_prefix() {
    let mut tracker = SeqTracker::new();
    tracker.delivered(&c1(), 10);
    tracker.delivered(&c1(), 11);
    assert_eq!(
        tracker.resume(&c1(), 6),
        ResumePlan {
            prefix: Some((6, 10)),
            from: 11
        }
    );
    // Only once: the cursor is anchored now.
    assert_eq!(
        tracker.resume(&c1(), 6),
        ResumePlan {
            prefix: None,
            from: 11
        }
    );
    // A cursor right below the first live message has no prefix to fill.
    let mut tracker = SeqTracker::new();
    tracker.delivered(&c1(), 10);
    assert_eq!(tracker.resume(&c1(), 9).prefix, None);
}

#[test]
fn leaving_forgets_the_channel() {
    let mut tracker = SeqTracker::new();
    tracker.delivered(&c1(), 5);
    tracker.forget(&c1());
    // After a rejoin, delivery restarts with whatever comes live.
    assert_eq!(tracker.live(&c1(), 20), LiveAction::Deliver);
}

#[tokio::test(start_paused = true)]
async fn token_bucket_refills_at_the_rate() {
    let mut limiter = RateLimiter::new(10, 5);
    assert_eq!((0..8).filter(|_| limiter.allow()).count(), 5);
    tokio::time::advance(Duration::from_millis(300)).await;
    assert_eq!((0..8).filter(|_| limiter.allow()).count(), 3);
    // Idle time never builds more than the burst.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!((0..20).filter(|_| limiter.allow()).count(), 5);
}
