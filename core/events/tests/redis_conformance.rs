//! Runs the fan-out conformance suite against the Redis driver on a real Redis, and checks
//! that events cross between two fan-outs on one Redis (a core node and an edge node).
//!
//! The server comes from `CONFAB_REDIS_URL`; without it every test fails, since a driver
//! test that silently passes without its server proves nothing.

use confab_events::conformance::numbered_event;
use confab_events::{FanOut, FanOutBackend, RedisFanOut};
use confab_proto::TeamId;
use confab_proto::event::TeamEventBody;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

fn redis_url() -> String {
    std::env::var("CONFAB_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "CONFAB_REDIS_URL is not set. Start Redis with `scripts/services/services.sh up redis` \
             and export the URL it writes to .services/endpoints.env \
             (e.g. `set -a; . .services/endpoints.env; set +a`)"
        )
    })
}

async fn make() -> Arc<dyn FanOut> {
    RedisFanOut::open(&redis_url())
        .await
        .expect("open RedisFanOut")
}

confab_events::fanout_conformance_tests!(make);

const ARRIVAL: Duration = Duration::from_secs(3);

fn number(event: &confab_proto::event::TeamEvent) -> u64 {
    match &event.body {
        TeamEventBody::ReadMarker { seq, .. } => *seq,
        other => panic!("unexpected event {other:?}"),
    }
}

/// Events published through one node reach subscribers on another, in order, and the
/// publishing node's own subscribers too.
#[tokio::test]
async fn events_cross_between_nodes_in_order() {
    let backend = FanOutBackend::Redis { url: redis_url() };
    let core = confab_events::open_fanout(&backend).await.unwrap();
    let edge = confab_events::open_fanout(&backend).await.unwrap();
    let team = TeamId::generate();
    let mut remote = edge.subscribe(&team, 256).await.unwrap();
    let mut local = core.subscribe(&team, 256).await.unwrap();

    for n in 0..100 {
        core.publish(numbered_event(&team, n)).await.unwrap();
    }
    for sub in [&mut remote, &mut local] {
        for n in 0..100 {
            let event = timeout(ARRIVAL, sub.events.recv())
                .await
                .expect("event in time")
                .expect("subscription open");
            assert_eq!((event.team.clone(), number(&event)), (team.clone(), n));
        }
    }

    // And back the other way.
    for n in 100..110 {
        edge.publish(numbered_event(&team, n)).await.unwrap();
    }
    for sub in [&mut remote, &mut local] {
        for n in 100..110 {
            let event = timeout(ARRIVAL, sub.events.recv()).await.unwrap().unwrap();
            assert_eq!(number(&event), n);
        }
    }
}

/// The process follows a team in Redis only while it has local subscribers to it.
#[tokio::test]
async fn team_is_unsubscribed_when_its_last_subscriber_goes() {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let fanout = make().await;
    let team = TeamId::generate();
    let channel = confab_events::redis_fanout::team_channel(&team);
    let subscribers = async |admin: &mut redis::aio::MultiplexedConnection| -> u64 {
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(admin)
            .await
            .unwrap();
        n
    };

    let first = fanout.subscribe(&team, 8).await.unwrap();
    let second = fanout.subscribe(&team, 1).await.unwrap();
    assert_eq!(
        subscribers(&mut admin).await,
        1,
        "one connection per process"
    );
    drop(first);
    // The second is cut off by overflowing its one-slot queue.
    for n in 0..3 {
        fanout.publish(numbered_event(&team, n)).await.unwrap();
    }
    let mut second = second;
    let mut got = 0;
    while timeout(ARRIVAL, second.events.recv())
        .await
        .unwrap()
        .is_some()
    {
        got += 1;
    }
    assert!(got < 3, "the one-slot subscriber was not cut off");

    let give_up = tokio::time::Instant::now() + ARRIVAL;
    while subscribers(&mut admin).await != 0 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "still subscribed with no local subscriber"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Dropping the fan-out ends its subscriptions instead of leaving them silent forever.
#[tokio::test]
async fn dropping_the_fanout_ends_its_subscriptions() {
    let fanout = make().await;
    let mut sub = fanout.subscribe(&TeamId::generate(), 8).await.unwrap();
    drop(fanout);
    let end = timeout(ARRIVAL, sub.events.recv())
        .await
        .expect("ended in time");
    assert!(end.is_none());
}
