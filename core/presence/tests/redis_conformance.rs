//! Runs the presence conformance suite against the Redis driver on a real Redis, and checks
//! that two stores on one Redis (two core nodes) share state and changes.
//!
//! The server comes from `CONFAB_REDIS_URL`; without it every test fails, since a driver
//! test that silently passes without its server proves nothing.

use confab_presence::conformance::next_change_for;
use confab_presence::{PresenceBackend, PresenceStore, RedisPresence};
use confab_proto::rtm::PresenceSetting;
use confab_proto::{Presence, TeamId, UserId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, timeout_at};

fn redis_url() -> String {
    std::env::var("CONFAB_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "CONFAB_REDIS_URL is not set. Start Redis with `scripts/services/services.sh up redis` \
             and export the URL it writes to .services/endpoints.env \
             (e.g. `set -a; . .services/endpoints.env; set +a`)"
        )
    })
}

async fn make(ttl: Duration) -> Arc<dyn PresenceStore> {
    RedisPresence::open(&redis_url(), ttl)
        .await
        .expect("open RedisPresence")
}

confab_presence::presence_conformance_tests!(make);

const WAIT: Duration = Duration::from_millis(1500);

/// A heartbeat through one node is seen, as state and as one change, by another.
#[tokio::test]
async fn two_nodes_share_presence_and_changes() {
    let backend = PresenceBackend::Redis {
        url: redis_url(),
        ttl: Duration::from_secs(10),
    };
    let a = confab_presence::open(&backend).await.unwrap();
    let b = confab_presence::open(&backend).await.unwrap();
    let (mut changes_a, mut changes_b) = (a.changes(), b.changes());
    let (team, user) = (TeamId::generate(), UserId::generate());

    a.heartbeat(&team, &user, "s1").await.unwrap();
    let seen = b
        .presence(&team, std::slice::from_ref(&user))
        .await
        .unwrap();
    assert_eq!(seen, [Presence::Active]);
    for changes in [&mut changes_a, &mut changes_b] {
        let got = next_change_for(changes, &team, &user, WAIT).await;
        assert_eq!(got, Some(Presence::Active));
    }

    // A second session on the other node is no change; ending both, one per node, is one.
    b.heartbeat(&team, &user, "s2").await.unwrap();
    b.end_session(&team, &user, "s1").await.unwrap();
    a.end_session(&team, &user, "s2").await.unwrap();
    b.set_manual(&team, &user, PresenceSetting::Dnd)
        .await
        .unwrap();
    for changes in [&mut changes_a, &mut changes_b] {
        let got = next_change_for(changes, &team, &user, WAIT).await;
        assert_eq!(got, Some(Presence::Away));
        let got = next_change_for(changes, &team, &user, WAIT).await;
        assert_eq!(got, Some(Presence::Dnd));
    }
    let seen = a
        .presence(&team, std::slice::from_ref(&user))
        .await
        .unwrap();
    assert_eq!(seen, [Presence::Dnd]);
}

/// Every node sweeps; each expiry is still reported once, to the receivers of every node.
#[tokio::test]
async fn expiry_is_reported_once_across_nodes() {
    let ttl = Duration::from_millis(300);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(RedisPresence::open(&redis_url(), ttl).await.unwrap());
    }
    let mut receivers: Vec<_> = nodes.iter().map(|n| n.changes()).collect();
    let team = TeamId::generate();
    let users: Vec<UserId> = (0..20).map(|_| UserId::generate()).collect();

    for (i, user) in users.iter().enumerate() {
        nodes[i % nodes.len()]
            .heartbeat(&team, user, "s1")
            .await
            .unwrap();
    }
    // Well past the TTL plus many sweep rounds of all three nodes, so a double report
    // would have had every chance to show up.
    let deadline = Instant::now() + ttl + WAIT;
    for changes in &mut receivers {
        let mut seen: HashMap<UserId, Vec<Presence>> = HashMap::new();
        while let Ok(Ok(change)) = timeout_at(deadline, changes.recv()).await {
            if change.team == team {
                seen.entry(change.user).or_default().push(change.presence);
            }
        }
        for user in &users {
            assert_eq!(
                seen.get(user).map(Vec::as_slice),
                Some(&[Presence::Active, Presence::Away][..]),
                "changes of {user}"
            );
        }
    }
    let now = nodes[0].presence(&team, &users).await.unwrap();
    assert!(now.iter().all(|p| *p == Presence::Away));
}
