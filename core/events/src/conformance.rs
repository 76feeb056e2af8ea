//! The behaviour suites every [`FanOut`] and [`EventLog`] driver passes (DESIGN.md §2).
//!
//! A driver's test file expands [`fanout_conformance_tests!`](crate::fanout_conformance_tests)
//! and/or [`event_log_conformance_tests!`](crate::event_log_conformance_tests) with a
//! factory. Every case picks fresh random team, topic and group names, so the suites run
//! unchanged against shared servers (Redis, Kafka) with cases running in parallel.

use crate::{EventLog, FanOut, LogRecord, Subscription};
use confab_proto::event::{TeamEvent, TeamEventBody};
use confab_proto::{ChannelId, TeamId, UserId};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// How long one expected event or record may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(3);
/// How long a poll in a collecting loop waits for records.
const POLL_WAIT: Duration = Duration::from_millis(500);

/// Expands to one `#[tokio::test]` per fan-out conformance case.
///
/// `$make` is an async fn or closure `() -> Arc<dyn FanOut>`; each case calls it once.
#[macro_export]
macro_rules! fanout_conformance_tests {
    ($make:expr) => {
        $crate::fanout_conformance_tests!(@cases $make;
            fanout_delivers_team_events_in_order,
            fanout_keeps_teams_apart,
            fanout_cuts_off_slow_subscriber,
            fanout_survives_dropped_subscriptions,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::conformance::$case($make).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per event-log conformance case.
///
/// `$make` is an async fn or closure `(name: &str) -> Arc<dyn EventLog>`. Calling it again
/// with the same `name` once every handle of the earlier call is dropped must give the same
/// log after a restart: for the embedded driver the same directory opened again, for Kafka
/// a new client on the same cluster. Cases use fresh names, topics and groups.
#[macro_export]
macro_rules! event_log_conformance_tests {
    ($make:expr) => {
        $crate::event_log_conformance_tests!(@cases $make;
            log_append_returns_increasing_offsets,
            log_poll_returns_records_in_order_within_max,
            log_poll_waits_then_returns_empty,
            log_append_wakes_waiting_poll,
            log_reopen_resumes_after_commit,
            log_groups_are_independent,
            log_topics_are_independent,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::conformance::$case($make).await;
            }
        )*
    };
}

/// A fresh name made of characters every driver accepts in topics and groups.
pub fn fresh_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        TeamId::generate().as_str().to_ascii_lowercase()
    )
}

/// An event of `team` that carries `n`, to check order on the receiving side.
pub fn numbered_event(team: &TeamId, n: u64) -> Arc<TeamEvent> {
    Arc::new(TeamEvent {
        team: team.clone(),
        body: TeamEventBody::ReadMarker {
            channel: ChannelId::new("C-conformance"),
            user: UserId::new("U-conformance"),
            seq: n,
        },
    })
}

fn number_of(event: &TeamEvent) -> u64 {
    match &event.body {
        TeamEventBody::ReadMarker { seq, .. } => *seq,
        other => panic!("not a conformance event: {other:?}"),
    }
}

/// The next event of a subscription; panics if none arrives in time or it ended.
async fn next_event(sub: &mut Subscription) -> Arc<TeamEvent> {
    match timeout(ARRIVAL, sub.events.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("subscription to {} ended", sub.team),
        Err(_) => panic!("no event for {} within {ARRIVAL:?}", sub.team),
    }
}

async fn expect_numbers(sub: &mut Subscription, team: &TeamId, numbers: std::ops::Range<u64>) {
    for n in numbers {
        let event = next_event(sub).await;
        assert_eq!(event.team, *team, "event of another team");
        assert_eq!(number_of(&event), n, "events out of order");
    }
}

/// Every subscriber of a team gets its events, in publish order.
pub async fn fanout_delivers_team_events_in_order(make: impl AsyncFn() -> Arc<dyn FanOut>) {
    let fanout = make().await;
    let team = TeamId::generate();
    let mut first = fanout.subscribe(&team, 256).await.unwrap();
    let mut second = fanout.subscribe(&team, 256).await.unwrap();
    assert_eq!(first.team, team);

    for n in 0..50 {
        fanout.publish(numbered_event(&team, n)).await.unwrap();
    }
    expect_numbers(&mut first, &team, 0..50).await;
    expect_numbers(&mut second, &team, 0..50).await;

    // Publishing to a team nobody follows is fine too.
    fanout
        .publish(numbered_event(&TeamId::generate(), 0))
        .await
        .unwrap();
}

/// Subscribers of one team see nothing of another team's events.
pub async fn fanout_keeps_teams_apart(make: impl AsyncFn() -> Arc<dyn FanOut>) {
    let fanout = make().await;
    let (team_a, team_b) = (TeamId::generate(), TeamId::generate());
    let mut sub_a = fanout.subscribe(&team_a, 64).await.unwrap();
    let mut sub_b = fanout.subscribe(&team_b, 64).await.unwrap();

    for n in 0..10 {
        fanout.publish(numbered_event(&team_a, n)).await.unwrap();
    }
    // A marker behind A's events: when B sees it, A's events had their chance to leak.
    fanout.publish(numbered_event(&team_b, 1000)).await.unwrap();

    expect_numbers(&mut sub_b, &team_b, 1000..1001).await;
    expect_numbers(&mut sub_a, &team_a, 0..10).await;
    assert!(sub_a.events.try_recv().is_err(), "team A got B's event");
}

/// A subscriber that does not read is cut off; a reading one still gets everything.
pub async fn fanout_cuts_off_slow_subscriber(make: impl AsyncFn() -> Arc<dyn FanOut>) {
    const EVENTS: u64 = 100;
    let fanout = make().await;
    let team = TeamId::generate();
    let mut slow = fanout.subscribe(&team, 4).await.unwrap();
    let mut fast = fanout.subscribe(&team, 256).await.unwrap();
    let reader = tokio::spawn(async move {
        expect_numbers(&mut fast, &team, 0..EVENTS).await;
    });

    let started = Instant::now();
    for n in 0..EVENTS {
        fanout.publish(numbered_event(&slow.team, n)).await.unwrap();
    }
    assert!(
        started.elapsed() < ARRIVAL,
        "publishing was held up by the slow subscriber"
    );
    reader.await.unwrap();

    // The slow one gets an in-order prefix of what fit its buffer, then its stream ends.
    let mut got = Vec::new();
    loop {
        match timeout(ARRIVAL, slow.events.recv()).await {
            Ok(Some(event)) => got.push(number_of(&event)),
            Ok(None) => break,
            Err(_) => panic!("slow subscriber was not disconnected; it got {got:?}"),
        }
    }
    assert!(
        (got.len() as u64) < EVENTS,
        "slow subscriber got everything"
    );
    assert!(
        got.iter().copied().eq(0..got.len() as u64),
        "slow subscriber got {got:?}, not an in-order prefix"
    );
}

/// Dropping a subscription unsubscribes without disturbing publishers or other subscribers.
pub async fn fanout_survives_dropped_subscriptions(make: impl AsyncFn() -> Arc<dyn FanOut>) {
    let fanout = make().await;
    let team = TeamId::generate();
    let dropped = fanout.subscribe(&team, 8).await.unwrap();
    let mut kept = fanout.subscribe(&team, 64).await.unwrap();
    drop(dropped);

    for n in 0..20 {
        fanout.publish(numbered_event(&team, n)).await.unwrap();
    }
    expect_numbers(&mut kept, &team, 0..20).await;

    drop(kept);
    fanout.publish(numbered_event(&team, 20)).await.unwrap();
    let mut later = fanout.subscribe(&team, 8).await.unwrap();
    fanout.publish(numbered_event(&team, 21)).await.unwrap();
    expect_numbers(&mut later, &team, 21..22).await;
}

/// Polls until at least `n` records arrived (or time is up), checking every batch
/// respects `max`. Returns everything received.
pub async fn poll_records(
    log: &Arc<dyn EventLog>,
    group: &str,
    topic: &str,
    n: usize,
    max: usize,
) -> Vec<LogRecord> {
    let deadline = Instant::now() + ARRIVAL * 3;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let batch = log.poll(group, topic, max, POLL_WAIT).await.unwrap();
        assert!(
            batch.len() <= max,
            "poll returned {} > max {max}",
            batch.len()
        );
        got.extend(batch);
    }
    assert!(
        got.len() >= n,
        "only {} of {n} records arrived: {got:?}",
        got.len()
    );
    got
}

fn payloads(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}

async fn append_numbered(
    log: &Arc<dyn EventLog>,
    topic: &str,
    range: std::ops::Range<u32>,
) -> Vec<(u32, u64)> {
    let mut positions = Vec::new();
    for n in range {
        positions.push(
            log.append(topic, "C1", format!("p{n}").as_bytes())
                .await
                .unwrap(),
        );
    }
    positions
}

fn numbered_payloads(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("p{n}")).collect()
}

/// Appends of one key land in one partition at increasing offsets.
pub async fn log_append_returns_increasing_offsets(make: impl AsyncFn(&str) -> Arc<dyn EventLog>) {
    let log = make(&fresh_name("log")).await;
    let topic = fresh_name("topic");
    let positions = append_numbered(&log, &topic, 0..10).await;
    assert!(
        positions
            .windows(2)
            .all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
        "offsets of one key not increasing in one partition: {positions:?}"
    );
}

/// Polls deliver records oldest first, with their metadata, never more than `max` at once,
/// and a group's position advances in process without commits.
pub async fn log_poll_returns_records_in_order_within_max(
    make: impl AsyncFn(&str) -> Arc<dyn EventLog>,
) {
    let log = make(&fresh_name("log")).await;
    let (topic, group) = (fresh_name("topic"), fresh_name("group"));
    let positions = append_numbered(&log, &topic, 0..5).await;

    let got = poll_records(&log, &group, &topic, 5, 2).await;
    assert_eq!(payloads(&got), numbered_payloads(0..5));
    for (record, (partition, offset)) in got.iter().zip(&positions) {
        assert_eq!((record.partition, record.offset), (*partition, *offset));
        assert_eq!(
            (record.topic.as_str(), record.key.as_str()),
            (topic.as_str(), "C1")
        );
    }

    // Consumed records are not delivered again in this process.
    append_numbered(&log, &topic, 5..6).await;
    let got = poll_records(&log, &group, &topic, 1, 10).await;
    assert_eq!(payloads(&got), numbered_payloads(5..6));
}

/// With nothing to read, a poll waits about `wait` and returns empty.
pub async fn log_poll_waits_then_returns_empty(make: impl AsyncFn(&str) -> Arc<dyn EventLog>) {
    let log = make(&fresh_name("log")).await;
    let (topic, group) = (fresh_name("topic"), fresh_name("group"));
    let wait = Duration::from_millis(400);

    let started = Instant::now();
    let got = log.poll(&group, &topic, 10, wait).await.unwrap();
    let elapsed = started.elapsed();
    assert!(got.is_empty(), "records from nowhere: {got:?}");
    assert!(
        elapsed >= wait - Duration::from_millis(50),
        "returned after {elapsed:?}"
    );
    assert!(elapsed < wait + ARRIVAL, "returned only after {elapsed:?}");

    // The same at the end of a non-empty topic.
    append_numbered(&log, &topic, 0..1).await;
    poll_records(&log, &group, &topic, 1, 10).await;
    let started = Instant::now();
    assert!(log.poll(&group, &topic, 10, wait).await.unwrap().is_empty());
    assert!(started.elapsed() >= wait - Duration::from_millis(50));
}

/// A record appended while a poll waits ends the wait early.
pub async fn log_append_wakes_waiting_poll(make: impl AsyncFn(&str) -> Arc<dyn EventLog>) {
    let log = make(&fresh_name("log")).await;
    let (topic, group) = (fresh_name("topic"), fresh_name("group"));
    let long_wait = Duration::from_secs(20);

    let poller = {
        let (log, topic) = (log.clone(), topic.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let got = log.poll(&group, &topic, 10, long_wait).await.unwrap();
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    append_numbered(&log, &topic, 0..1).await;

    let (got, elapsed) = timeout(long_wait, poller).await.unwrap().unwrap();
    assert_eq!(payloads(&got), numbered_payloads(0..1));
    assert!(
        elapsed < long_wait / 2,
        "the waiting poll woke only after {elapsed:?}"
    );
}

/// After a restart a group resumes after its last commit: committed records are not
/// delivered again, uncommitted ones are (at least once).
pub async fn log_reopen_resumes_after_commit(make: impl AsyncFn(&str) -> Arc<dyn EventLog>) {
    let name = fresh_name("log");
    let (topic, group) = (fresh_name("topic"), fresh_name("group"));
    let log = make(&name).await;
    append_numbered(&log, &topic, 0..5).await;
    let got = poll_records(&log, &group, &topic, 5, 10).await;
    assert_eq!(payloads(&got), numbered_payloads(0..5));
    log.commit(&group, &got[2]).await.unwrap();
    drop(log);

    let log = make(&name).await;
    let again = poll_records(&log, &group, &topic, 2, 10).await;
    assert_eq!(
        payloads(&again),
        numbered_payloads(3..5),
        "did not resume after the commit"
    );

    // Committing the last one and restarting again leaves nothing to redeliver.
    log.commit(&group, &again[1]).await.unwrap();
    drop(log);
    let log = make(&name).await;
    assert!(
        log.poll(&group, &topic, 10, POLL_WAIT)
            .await
            .unwrap()
            .is_empty()
    );
    append_numbered(&log, &topic, 5..6).await;
    let fresh = poll_records(&log, &group, &topic, 1, 10).await;
    assert_eq!(payloads(&fresh), numbered_payloads(5..6));
}

/// Consumer groups keep separate positions and commits.
pub async fn log_groups_are_independent(make: impl AsyncFn(&str) -> Arc<dyn EventLog>) {
    let name = fresh_name("log");
    let (topic, group_a, group_b) = (
        fresh_name("topic"),
        fresh_name("group"),
        fresh_name("group"),
    );
    let log = make(&name).await;
    append_numbered(&log, &topic, 0..3).await;

    let got_a = poll_records(&log, &group_a, &topic, 3, 10).await;
    log.commit(&group_a, &got_a[2]).await.unwrap();
    let got_b = poll_records(&log, &group_b, &topic, 3, 10).await;
    assert_eq!(
        payloads(&got_b),
        numbered_payloads(0..3),
        "group B missed records A consumed"
    );
    drop(log);

    let log = make(&name).await;
    assert!(
        log.poll(&group_a, &topic, 10, POLL_WAIT)
            .await
            .unwrap()
            .is_empty(),
        "group A was redelivered committed records"
    );
    let again_b = poll_records(&log, &group_b, &topic, 3, 10).await;
    assert_eq!(
        payloads(&again_b),
        numbered_payloads(0..3),
        "group B took A's commit"
    );
}

/// Records of one topic never show up in another.
pub async fn log_topics_are_independent(make: impl AsyncFn(&str) -> Arc<dyn EventLog>) {
    let log = make(&fresh_name("log")).await;
    let (topic_a, topic_b, group) = (
        fresh_name("topic"),
        fresh_name("topic"),
        fresh_name("group"),
    );
    append_numbered(&log, &topic_a, 0..2).await;
    append_numbered(&log, &topic_b, 10..11).await;

    let got_b = poll_records(&log, &group, &topic_b, 1, 10).await;
    assert_eq!(payloads(&got_b), numbered_payloads(10..11));
    let got_a = poll_records(&log, &group, &topic_a, 2, 10).await;
    assert_eq!(payloads(&got_a), numbered_payloads(0..2));
    assert!(got_a.iter().all(|r| r.topic == topic_a));
}
