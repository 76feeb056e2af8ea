//! A node whose change subscription to Redis is cut keeps receiving changes once it has
//! reconnected. A test binary of its own: it kills Redis connections, and it must only
//! ever kill its own, which it tells apart by their appearing while it opens a store.

use confab_presence::conformance::next_change_for;
use confab_presence::{PresenceStore, RedisPresence};
use confab_proto::{Presence, TeamId, UserId};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

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
async fn changes_flow_again_after_the_subscription_connection_drops() {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let ttl = Duration::from_secs(10);

    let before = subscribed_clients(&mut admin).await;
    let observer = RedisPresence::open(&redis_url(), ttl).await.unwrap();
    let ours: Vec<u64> = subscribed_clients(&mut admin)
        .await
        .difference(&before)
        .copied()
        .collect();
    assert!(
        !ours.is_empty(),
        "the store's subscriber connection not found"
    );
    let actor = RedisPresence::open(&redis_url(), ttl).await.unwrap();
    let mut changes = observer.changes();

    for id in &ours {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(*id)
            .query_async(&mut admin)
            .await
            .unwrap();
    }

    // Changes made while the connection is down are lost to this node (pub/sub is at most
    // once); a fresh user per attempt shows when delivery is back.
    let team = TeamId::generate();
    let give_up = Instant::now() + Duration::from_secs(15);
    loop {
        let user = UserId::generate();
        actor.heartbeat(&team, &user, "s1").await.unwrap();
        let got = next_change_for(&mut changes, &team, &user, Duration::from_millis(500)).await;
        if got == Some(Presence::Active) {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "no change arrived after the subscription connection was killed"
        );
    }
    assert!(
        subscribed_clients(&mut admin)
            .await
            .is_disjoint(&ours.iter().copied().collect()),
        "killed connection still listed"
    );
}
