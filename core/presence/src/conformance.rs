//! The one behaviour suite every [`PresenceStore`] driver passes (DESIGN.md §2).
//!
//! A driver's test file expands [`presence_conformance_tests!`](crate::presence_conformance_tests)
//! with a factory: an async fn or closure that takes the session TTL and returns a fresh
//! `Arc<dyn PresenceStore>`. Each case uses new random team and user ids and real time with
//! short TTLs, so the same suite runs unchanged against a shared Redis, with other cases
//! running in parallel on the same server: every assertion about changes looks only at the
//! case's own ids.

use crate::{PresenceChange, PresenceStore};
use confab_proto::rtm::PresenceSetting;
use confab_proto::{Presence, TeamId, UserId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout};

/// TTL for cases that must not see a session expire on a slow machine.
const LONG_TTL: Duration = Duration::from_secs(10);
/// TTL for the expiry cases: short enough to keep them fast.
const SHORT_TTL: Duration = Duration::from_millis(500);
/// How long a change may take to arrive (a networked driver goes through pub/sub).
const CHANGE_WAIT: Duration = Duration::from_millis(1500);
/// How long to watch for a change that must not come.
const QUIET_WAIT: Duration = Duration::from_millis(250);

/// Expands to one `#[tokio::test]` per conformance case.
///
/// `$make` is an async fn or closure `(ttl: Duration) -> Arc<dyn PresenceStore>` that
/// returns a store whose sessions live for `ttl` after each heartbeat.
#[macro_export]
macro_rules! presence_conformance_tests {
    ($make:expr) => {
        $crate::presence_conformance_tests!(@cases $make;
            heartbeat_makes_user_active_once,
            second_session_does_not_report_again,
            ending_one_of_two_sessions_keeps_user_active,
            ending_last_session_makes_user_away,
            session_expires_after_ttl,
            heartbeats_keep_session_alive,
            manual_dnd_and_away_override_then_auto,
            manual_setting_without_sessions,
            presence_keeps_order_and_unknown_users_are_away,
            teams_are_isolated,
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

/// The next change of `(team, user)`, skipping other ids' changes, or `None` after `wait`.
pub async fn next_change_for(
    changes: &mut broadcast::Receiver<PresenceChange>,
    team: &TeamId,
    user: &UserId,
    wait: Duration,
) -> Option<Presence> {
    let deadline = Instant::now() + wait;
    loop {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            changes.recv(),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(change)) if change.team == *team && change.user == *user => {
                return Some(change.presence);
            }
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                panic!("change receiver lagged by {n}: a case's change may be lost")
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => panic!("change channel closed"),
        }
    }
}

async fn expect_change(
    changes: &mut broadcast::Receiver<PresenceChange>,
    team: &TeamId,
    user: &UserId,
    want: Presence,
) {
    let got = next_change_for(changes, team, user, CHANGE_WAIT).await;
    assert_eq!(
        got,
        Some(want),
        "expected one change of {user} in {team} to {want:?}"
    );
}

async fn expect_quiet(
    changes: &mut broadcast::Receiver<PresenceChange>,
    team: &TeamId,
    user: &UserId,
) {
    let got = next_change_for(changes, team, user, QUIET_WAIT).await;
    assert_eq!(got, None, "unexpected change of {user} in {team}");
}

async fn presence_of(store: &Arc<dyn PresenceStore>, team: &TeamId, user: &UserId) -> Presence {
    let got = store
        .presence(team, std::slice::from_ref(user))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "presence() must answer once per asked user");
    got[0]
}

/// The first heartbeat makes a user active and reports exactly that one change.
pub async fn heartbeat_makes_user_active_once(
    make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>,
) {
    let store = make(LONG_TTL).await;
    let mut changes = store.changes();
    let (team, user) = (TeamId::generate(), UserId::generate());

    assert_eq!(presence_of(&store, &team, &user).await, Presence::Away);
    store.heartbeat(&team, &user, "s1").await.unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Active);
    expect_change(&mut changes, &team, &user, Presence::Active).await;

    // Repeated heartbeats of the same session change nothing.
    store.heartbeat(&team, &user, "s1").await.unwrap();
    expect_quiet(&mut changes, &team, &user).await;
}

/// A second session of an active user is not a change.
pub async fn second_session_does_not_report_again(
    make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>,
) {
    let store = make(LONG_TTL).await;
    let mut changes = store.changes();
    let (team, user) = (TeamId::generate(), UserId::generate());

    store.heartbeat(&team, &user, "s1").await.unwrap();
    expect_change(&mut changes, &team, &user, Presence::Active).await;
    store.heartbeat(&team, &user, "s2").await.unwrap();
    expect_quiet(&mut changes, &team, &user).await;
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Active);
}

/// A user stays active while any of their sessions is alive.
pub async fn ending_one_of_two_sessions_keeps_user_active(
    make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>,
) {
    let store = make(LONG_TTL).await;
    let mut changes = store.changes();
    let (team, user) = (TeamId::generate(), UserId::generate());

    store.heartbeat(&team, &user, "s1").await.unwrap();
    store.heartbeat(&team, &user, "s2").await.unwrap();
    expect_change(&mut changes, &team, &user, Presence::Active).await;

    store.end_session(&team, &user, "s1").await.unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Active);
    expect_quiet(&mut changes, &team, &user).await;

    // Ending an unknown or already ended session is harmless.
    store.end_session(&team, &user, "s1").await.unwrap();
    store
        .end_session(&team, &user, "never-started")
        .await
        .unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Active);
}

/// Ending the last session makes the user away at once, without waiting for the TTL.
pub async fn ending_last_session_makes_user_away(
    make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>,
) {
    let store = make(LONG_TTL).await;
    let mut changes = store.changes();
    let (team, user) = (TeamId::generate(), UserId::generate());

    store.heartbeat(&team, &user, "s1").await.unwrap();
    store.heartbeat(&team, &user, "s2").await.unwrap();
    expect_change(&mut changes, &team, &user, Presence::Active).await;

    store.end_session(&team, &user, "s1").await.unwrap();
    store.end_session(&team, &user, "s2").await.unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Away);
    expect_change(&mut changes, &team, &user, Presence::Away).await;
    expect_quiet(&mut changes, &team, &user).await;
}

/// A session that stops heartbeating expires after the TTL, and that is reported.
pub async fn session_expires_after_ttl(make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>) {
    let store = make(SHORT_TTL).await;
    let mut changes = store.changes();
    let (team, user) = (TeamId::generate(), UserId::generate());

    let start = Instant::now();
    store.heartbeat(&team, &user, "s1").await.unwrap();
    expect_change(&mut changes, &team, &user, Presence::Active).await;

    let got = next_change_for(&mut changes, &team, &user, SHORT_TTL + CHANGE_WAIT).await;
    assert_eq!(got, Some(Presence::Away), "expiry was not reported");
    // Some slack below the TTL for drivers whose clock ticks coarsely (Redis: 1 ms).
    let elapsed = start.elapsed();
    assert!(
        elapsed >= SHORT_TTL - Duration::from_millis(50),
        "expired after {elapsed:?}, before the TTL of {SHORT_TTL:?}"
    );
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Away);
    expect_quiet(&mut changes, &team, &user).await;
}

/// Heartbeats within the TTL keep a session alive well past one TTL.
pub async fn heartbeats_keep_session_alive(make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>) {
    let store = make(SHORT_TTL).await;
    let mut changes = store.changes();
    let (team, user) = (TeamId::generate(), UserId::generate());

    store.heartbeat(&team, &user, "s1").await.unwrap();
    expect_change(&mut changes, &team, &user, Presence::Active).await;
    for _ in 0..6 {
        tokio::time::sleep(SHORT_TTL / 3).await;
        store.heartbeat(&team, &user, "s1").await.unwrap();
        assert_eq!(presence_of(&store, &team, &user).await, Presence::Active);
    }
    let got = next_change_for(&mut changes, &team, &user, Duration::ZERO).await;
    assert_eq!(got, None, "a refreshed session was reported gone");

    store.end_session(&team, &user, "s1").await.unwrap();
    expect_change(&mut changes, &team, &user, Presence::Away).await;
}

/// Manual dnd and away win over live sessions; `auto` returns to session-driven presence.
pub async fn manual_dnd_and_away_override_then_auto(
    make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>,
) {
    let store = make(LONG_TTL).await;
    let mut changes = store.changes();
    let (team, user) = (TeamId::generate(), UserId::generate());

    store.heartbeat(&team, &user, "s1").await.unwrap();
    expect_change(&mut changes, &team, &user, Presence::Active).await;

    store
        .set_manual(&team, &user, PresenceSetting::Dnd)
        .await
        .unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Dnd);
    expect_change(&mut changes, &team, &user, Presence::Dnd).await;

    // Heartbeats while in dnd change nothing.
    store.heartbeat(&team, &user, "s2").await.unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Dnd);

    store
        .set_manual(&team, &user, PresenceSetting::Away)
        .await
        .unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Away);
    expect_change(&mut changes, &team, &user, Presence::Away).await;

    // Setting what is already set is not a change.
    store
        .set_manual(&team, &user, PresenceSetting::Away)
        .await
        .unwrap();
    expect_quiet(&mut changes, &team, &user).await;

    store
        .set_manual(&team, &user, PresenceSetting::Auto)
        .await
        .unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Active);
    expect_change(&mut changes, &team, &user, Presence::Active).await;

    // Ending sessions under a manual setting keeps the setting and reports nothing.
    store
        .set_manual(&team, &user, PresenceSetting::Dnd)
        .await
        .unwrap();
    expect_change(&mut changes, &team, &user, Presence::Dnd).await;
    store.end_session(&team, &user, "s1").await.unwrap();
    store.end_session(&team, &user, "s2").await.unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Dnd);
    expect_quiet(&mut changes, &team, &user).await;
}

/// Manual settings also apply to a user with no session; `auto` then means away.
pub async fn manual_setting_without_sessions(
    make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>,
) {
    let store = make(LONG_TTL).await;
    let mut changes = store.changes();
    let (team, user) = (TeamId::generate(), UserId::generate());

    store
        .set_manual(&team, &user, PresenceSetting::Dnd)
        .await
        .unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Dnd);
    expect_change(&mut changes, &team, &user, Presence::Dnd).await;

    store
        .set_manual(&team, &user, PresenceSetting::Auto)
        .await
        .unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Away);
    expect_change(&mut changes, &team, &user, Presence::Away).await;

    // Away by hand while already away is no change either.
    store
        .set_manual(&team, &user, PresenceSetting::Away)
        .await
        .unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Away);
    expect_quiet(&mut changes, &team, &user).await;

    // A session under manual away stays away until auto.
    store.heartbeat(&team, &user, "s1").await.unwrap();
    assert_eq!(presence_of(&store, &team, &user).await, Presence::Away);
    store
        .set_manual(&team, &user, PresenceSetting::Auto)
        .await
        .unwrap();
    expect_change(&mut changes, &team, &user, Presence::Active).await;
}

/// `presence()` answers in the order asked, repeats included; unknown users are away.
pub async fn presence_keeps_order_and_unknown_users_are_away(
    make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>,
) {
    let store = make(LONG_TTL).await;
    let team = TeamId::generate();
    let (active, dnd, unknown) = (UserId::generate(), UserId::generate(), UserId::generate());

    store.heartbeat(&team, &active, "s1").await.unwrap();
    store
        .set_manual(&team, &dnd, PresenceSetting::Dnd)
        .await
        .unwrap();

    let asked = [
        unknown.clone(),
        active.clone(),
        dnd.clone(),
        active.clone(),
        UserId::generate(),
    ];
    let got = store.presence(&team, &asked).await.unwrap();
    assert_eq!(
        got,
        [
            Presence::Away,
            Presence::Active,
            Presence::Dnd,
            Presence::Active,
            Presence::Away
        ]
    );
    assert!(store.presence(&team, &[]).await.unwrap().is_empty());
    // An unknown team is all away too.
    let other = store.presence(&TeamId::generate(), &asked).await.unwrap();
    assert_eq!(other, [Presence::Away; 5]);
}

/// The same user id in two teams is two independent users.
pub async fn teams_are_isolated(make: impl AsyncFn(Duration) -> Arc<dyn PresenceStore>) {
    let store = make(LONG_TTL).await;
    let mut changes = store.changes();
    let (team_a, team_b, user) = (TeamId::generate(), TeamId::generate(), UserId::generate());

    store.heartbeat(&team_a, &user, "s1").await.unwrap();
    expect_change(&mut changes, &team_a, &user, Presence::Active).await;
    assert_eq!(presence_of(&store, &team_b, &user).await, Presence::Away);
    expect_quiet(&mut changes, &team_b, &user).await;

    store
        .set_manual(&team_b, &user, PresenceSetting::Dnd)
        .await
        .unwrap();
    expect_change(&mut changes, &team_b, &user, Presence::Dnd).await;
    assert_eq!(presence_of(&store, &team_a, &user).await, Presence::Active);

    // The same session name in the other team is a different session.
    store.end_session(&team_b, &user, "s1").await.unwrap();
    assert_eq!(presence_of(&store, &team_a, &user).await, Presence::Active);
    store.end_session(&team_a, &user, "s1").await.unwrap();
    expect_change(&mut changes, &team_a, &user, Presence::Away).await;
    assert_eq!(presence_of(&store, &team_b, &user).await, Presence::Dnd);
    expect_quiet(&mut changes, &team_b, &user).await;
}
