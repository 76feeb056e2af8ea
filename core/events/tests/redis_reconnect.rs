//! When the pub/sub connection of a Redis fan-out drops, its subscriptions end (the edge
//! resumes instead of trusting a stream with a hole) and new ones work once it is back.
//! A test binary of its own: it kills Redis connections, and it must only ever kill its
//! own, which it tells apart by their appearing while it opens a fan-out.

use confab_events::conformance::numbered_event;
use confab_events::{FanOut, RedisFanOut};
use confab_proto::TeamId;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::{Instant, timeout};

fn redis_url() -> String {
    std::env::var("CONFAB_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "CONFAB_REDIS_URL is not set. Start Redis with `scripts/services/services.sh up redis` \
             and export the URL it writes to .services/endpoints.env \
             (e.g. `set -a; . .services/endpoints.env; set +a`)"
        )
    })
}

/// Ids of the Redis clients subscribed to at least one channel.
async fn subscribed_clients(admin: &mut redis::aio::MultiplexedConnection) -> HashSet<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .unwrap();
    list.lines()
        .filter(|line| !line.split(' ').any(|field| field == "sub=0"))
        .filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn subscriptions_end_on_connection_loss_and_new_ones_work() {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();

    let before = subscribed_clients(&mut admin).await;
    let edge = RedisFanOut::open(&redis_url()).await.unwrap();
    let ours: Vec<u64> = subscribed_clients(&mut admin)
        .await
        .difference(&before)
        .copied()
        .collect();
    assert!(
        !ours.is_empty(),
        "the fan-out's pub/sub connection not found"
    );
    let core = RedisFanOut::open(&redis_url()).await.unwrap();

    let team = TeamId::generate();
    let mut sub = edge.subscribe(&team, 64).await.unwrap();
    core.publish(numbered_event(&team, 0)).await.unwrap();
    let first = timeout(Duration::from_secs(3), sub.events.recv()).await;
    assert!(matches!(first, Ok(Some(_))), "no event before the kill");

    for id in &ours {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(*id)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let end = timeout(Duration::from_secs(5), sub.events.recv()).await;
    assert!(matches!(end, Ok(None)), "subscription not ended: {end:?}");

    // Subscribing may fail while the connection comes back; it must work soon after.
    let give_up = Instant::now() + Duration::from_secs(15);
    let mut sub = loop {
        match edge.subscribe(&team, 64).await {
            Ok(sub) => break sub,
            Err(err) => assert!(Instant::now() < give_up, "cannot subscribe again: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    core.publish(numbered_event(&team, 1)).await.unwrap();
    let event = timeout(Duration::from_secs(3), sub.events.recv())
        .await
        .expect("event after reconnect")
        .expect("subscription open");
    assert_eq!(event.team, team);
}
