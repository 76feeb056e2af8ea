//! Runs the event-log conformance suite against a real Kafka broker.
//!
//! The broker comes from `scripts/services/services.sh up kafka`, which writes
//! `CONFAB_KAFKA_BROKERS` into `.services/endpoints.env`. Without that variable the tests
//! fail rather than skip: a green run must mean the Kafka driver was exercised.

use confab_events::{EventLog, KafkaEventLog, KafkaLogConfig};
use std::sync::Arc;

fn brokers() -> String {
    match std::env::var("CONFAB_KAFKA_BROKERS") {
        Ok(brokers) if !brokers.trim().is_empty() => brokers,
        _ => panic!(
            "CONFAB_KAFKA_BROKERS is not set: run scripts/services/services.sh up kafka, \
             then `set -a; . .services/endpoints.env; set +a` before cargo test"
        ),
    }
}

/// A case's `name` becomes the namespace of its topics and groups, so opening the same
/// name again is a new client on the same topics and groups: a restart. Cases already
/// pick fresh topic and group names; the namespace also keeps this suite's topics apart
/// from anything else on the broker.
async fn make_log(name: &str) -> Arc<dyn EventLog> {
    let config = KafkaLogConfig {
        namespace: format!("conformance.{name}."),
        ..KafkaLogConfig::new(brokers())
    };
    Arc::new(KafkaEventLog::connect(config).await.unwrap())
}

confab_events::event_log_conformance_tests!(make_log);

/// Beyond the shared suite, the reason the driver joins consumer groups instead of
/// assigning itself every partition: two processes in one group split the topic's
/// partitions, so each record is handled by one of them, not by both.
#[tokio::test]
async fn kafka_group_members_share_partitions() {
    use confab_events::conformance::fresh_name;
    use std::collections::HashSet;
    use std::time::Duration;
    use tokio::time::Instant;

    const KEYS: usize = 16;
    let name = fresh_name("log");
    let (topic, group) = (fresh_name("topic"), fresh_name("group"));
    // Two handles on one namespace at once: two processes of one deployment.
    let (first, second) = (make_log(&name).await, make_log(&name).await);
    let poll = |log: Arc<dyn EventLog>| {
        let (group, topic) = (group.clone(), topic.clone());
        async move {
            let mut got = Vec::new();
            loop {
                let batch = log
                    .poll(&group, &topic, 100, Duration::from_millis(300))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(
                    batch
                        .into_iter()
                        .map(|r| String::from_utf8_lossy(&r.payload).into_owned()),
                );
            }
        }
    };

    // Handing partitions from the first member to the second takes a heartbeat or two
    // (5 s each by default), so append rounds until one round is split cleanly.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut round = 0;
    loop {
        let sent: HashSet<String> = (0..KEYS).map(|k| format!("r{round}-k{k}")).collect();
        for k in 0..KEYS {
            first
                .append(
                    &topic,
                    &format!("C{k}"),
                    format!("r{round}-k{k}").as_bytes(),
                )
                .await
                .unwrap();
        }
        let (got_first, got_second) = tokio::join!(poll(first.clone()), poll(second.clone()));
        let in_round = |got: &[String]| -> HashSet<String> {
            got.iter().filter(|p| sent.contains(*p)).cloned().collect()
        };
        let (mine, theirs) = (in_round(&got_first), in_round(&got_second));
        if !mine.is_empty()
            && !theirs.is_empty()
            && mine.is_disjoint(&theirs)
            && mine.len() + theirs.len() == KEYS
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group never split a round between its members: last round {round} gave \
             {} and {} of {KEYS} records",
            mine.len(),
            theirs.len()
        );
        round += 1;
    }
}
