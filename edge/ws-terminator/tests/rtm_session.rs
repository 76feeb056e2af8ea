//! RTM connections without sockets: a [`Session`] registered in a real [`Hub`] over a
//! real Flannel over the fake core, driven through its queues. Covers ordering of acks,
//! exactly-once delivery (duplicates, gaps, resume racing live events), presence
//! batching, membership routing, slow consumers, drain, and the reader's limits.

mod common;

use common::{FakeCore, caller};
use confab_flannel_cache::{Flannel, FlannelConfig};
use confab_proto::event::TeamEventBody;
use confab_proto::limits::MAX_FRAME_BYTES;
use confab_proto::rtm::parse_client_frame;
use confab_proto::{ErrorCode, Presence};
use confab_ws_terminator::EdgeSettings;
use confab_ws_terminator::drain::DrainController;
use confab_ws_terminator::hub::Hub;
use confab_ws_terminator::rtm::{Incoming, Outbound, Session, SessionEnd, read_loop};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const WAIT: Duration = Duration::from_secs(5);

struct Edge {
    core: Arc<FakeCore>,
    flannel: Arc<Flannel>,
    hub: Hub,
    settings: Arc<EdgeSettings>,
}

impl Edge {
    fn new(settings: EdgeSettings) -> Self {
        let core = FakeCore::new();
        let flannel = Flannel::new(core.clone(), FlannelConfig::default());
        let hub = Hub::new(flannel.clone(), settings.send_buffer_frames);
        Self {
            core,
            flannel,
            hub,
            settings: Arc::new(settings),
        }
    }

    async fn connect(&self, user: &str) -> Client {
        let caller = caller(user);
        let registration = self.hub.register(&caller).await.expect("registered");
        registration.add_channels(
            self.flannel
                .member_channels(&caller)
                .await
                .expect("channels"),
        );
        let (out_tx, out_rx) = mpsc::channel(self.settings.send_buffer_frames);
        let (in_tx, in_rx) = mpsc::channel(self.settings.command_queue);
        let (drain, watcher) = DrainController::new();
        let session = Session::new(
            self.core.clone(),
            caller,
            registration,
            out_tx,
            self.settings.clone(),
        );
        let task = tokio::spawn(async move { session.run(in_rx, &watcher).await });
        let mut client = Client {
            out: out_rx,
            input: in_tx,
            drain,
            task,
        };
        assert_eq!(client.frame().await["type"], "hello");
        client
    }
}

struct Client {
    out: mpsc::Receiver<Outbound>,
    input: mpsc::Sender<Incoming>,
    drain: DrainController,
    task: JoinHandle<SessionEnd>,
}

impl Client {
    async fn send(&self, frame: Value) {
        let parsed = parse_client_frame(&frame.to_string()).expect("a valid command");
        self.input
            .send(Incoming::Command(parsed))
            .await
            .expect("session alive");
    }

    async fn outbound(&mut self) -> Outbound {
        tokio::time::timeout(WAIT, self.out.recv())
            .await
            .expect("a frame in time")
            .expect("session still sending")
    }

    async fn frame(&mut self) -> Value {
        match self.outbound().await {
            Outbound::Frame(text) => serde_json::from_str(text.as_str()).expect("JSON frame"),
            Outbound::Close { code, reason } => panic!("unexpected close {code} {reason}"),
        }
    }

    /// Reads frames until `n` of them were messages; returns all it read.
    async fn messages(&mut self, n: usize) -> Vec<Value> {
        let mut frames = Vec::new();
        while message_seqs(&frames).len() < n {
            frames.push(self.frame().await);
        }
        frames
    }

    /// Lets in-flight events arrive, then returns every frame before a pong.
    async fn settled(&mut self, id: u64) -> Vec<Value> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.until_pong(id).await
    }

    /// Sends a ping and returns every frame before its pong. Events travel core → cache →
    /// hub while the ping goes straight in, so this shows what the session had already
    /// queued, not what may still be on its way.
    async fn until_pong(&mut self, id: u64) -> Vec<Value> {
        self.send(json!({ "id": id, "type": "ping" })).await;
        let mut before = Vec::new();
        loop {
            let frame = self.frame().await;
            if frame["reply_to"] == id {
                assert_eq!(frame["type"], "pong");
                return before;
            }
            before.push(frame);
        }
    }
}

fn message_seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn hello_ping_and_heartbeat() {
    let edge = Edge::new(EdgeSettings::default());
    let mut client = edge.connect("U1").await;
    assert!(client.until_pong(1).await.is_empty());
    assert!(edge.core.calls().contains(&"heartbeat U1".to_owned()));
}

#[tokio::test]
async fn acks_come_back_in_send_order() {
    let edge = Edge::new(EdgeSettings::default());
    let mut client = edge.connect("U1").await;
    // The first send is the slow one; its ack must still come first.
    edge.core
        .post_delays
        .lock()
        .extend([Duration::from_millis(200), Duration::ZERO]);
    for id in 1..=3 {
        client
            .send(json!({ "id": id, "type": "message", "channel": "C1", "text": format!("m{id}"), "client_msg_id": format!("c{id}") }))
            .await;
    }
    let mut acks = Vec::new();
    let mut events = Vec::new();
    while acks.len() < 3 {
        let frame = client.frame().await;
        if frame["reply_to"].is_u64() {
            assert_eq!(frame["ok"], true, "{frame}");
            acks.push((
                frame["reply_to"].as_u64().unwrap(),
                frame["message"]["seq"].as_u64().unwrap(),
            ));
        } else {
            events.push(frame);
        }
    }
    assert_eq!(acks, vec![(1, 1), (2, 2), (3, 3)]);
    while message_seqs(&events).len() < 3 {
        events.push(client.frame().await);
    }
    events.extend(client.settled(9).await);
    // The sender's own connection gets every message event too, once each.
    assert_eq!(message_seqs(&events), vec![1, 2, 3]);

    client
        .send(json!({ "id": 10, "type": "message", "channel": "C404", "text": "x", "client_msg_id": "c" }))
        .await;
    let error = client.frame().await;
    assert_eq!(error["reply_to"], 10);
    assert_eq!(error["ok"], false);
    assert_eq!(error["error"]["code"], "channel_not_found");
}

#[tokio::test]
async fn live_duplicates_are_dropped_and_gaps_filled_from_the_store() {
    let edge = Edge::new(EdgeSettings::default());
    let mut client = edge.connect("U1").await;
    let first = edge.core.post("C1", "U2", "one");
    edge.core.publish(TeamEventBody::Message { message: first });
    // Two messages whose live events were lost, then a live one after them.
    edge.core.store_message("C1", "U2", "two");
    edge.core.store_message("C1", "U2", "three");
    edge.core.post("C1", "U2", "four");
    let mut frames = client.messages(4).await;
    frames.extend(client.settled(1).await);
    assert_eq!(message_seqs(&frames), vec![1, 2, 3, 4]);
    assert_eq!(frames[2]["text"], "three");
    assert!(
        edge.core
            .calls()
            .contains(&"messages_after C1 1".to_owned())
    );
}

#[tokio::test]
async fn resume_replays_in_order_while_live_events_wait_and_are_deduplicated() {
    let edge = Edge::new(EdgeSettings::default());
    let mut client = edge.connect("U1").await;
    for n in 1..=3 {
        edge.core.store_message("C1", "U2", &format!("m{n}"));
    }
    let gate = Arc::new(Semaphore::new(0));
    *edge.core.replay_gate.lock() = Some(gate.clone());
    client
        .send(json!({ "id": 1, "type": "resume", "cursors": { "C1": 1 } }))
        .await;
    // The session is now inside resume; these live events queue up behind it.
    edge.core.post("C1", "U2", "m4");
    edge.core.post("C1", "U2", "m5");
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(100);

    let mut frames = Vec::new();
    loop {
        let frame = client.frame().await;
        let done = frame["reply_to"] == 1;
        frames.push(frame);
        if done {
            break;
        }
    }
    assert_eq!(message_seqs(&frames), vec![2, 3, 4, 5]);
    assert_eq!(frames.last().unwrap()["ok"], true);
    // The queued live copies of 4 and 5 are not sent again.
    assert!(message_seqs(&client.settled(2).await).is_empty());

    // A resume naming a channel the user is not in reports it and still succeeds.
    client
        .send(json!({ "id": 3, "type": "resume", "cursors": { "C1": 5, "C404": 0 } }))
        .await;
    let reply = client.frame().await;
    assert_eq!(reply["reply_to"], 3);
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["failed"]["C404"]["code"], "channel_not_found");
}

#[tokio::test]
async fn resume_after_live_delivery_fills_only_what_was_missed() {
    let edge = Edge::new(EdgeSettings::default());
    let mut client = edge.connect("U1").await;
    edge.core.store_message("C1", "U2", "m1");
    edge.core.store_message("C1", "U2", "m2");
    // Live delivery starts at 3 before the client resumed from 1.
    edge.core.post("C1", "U2", "m3");
    assert_eq!(message_seqs(&client.messages(1).await), vec![3]);
    client
        .send(json!({ "id": 2, "type": "resume", "cursors": { "C1": 1 } }))
        .await;
    let mut frames = Vec::new();
    loop {
        let frame = client.frame().await;
        let done = frame["reply_to"] == 2;
        frames.push(frame);
        if done {
            break;
        }
    }
    assert_eq!(message_seqs(&frames), vec![2], "3 was already delivered");
    edge.core.post("C1", "U2", "m4");
    assert_eq!(message_seqs(&client.messages(1).await), vec![4]);
    assert!(client.settled(3).await.is_empty());
}

#[tokio::test]
async fn presence_changes_are_batched_per_interval() {
    let settings = EdgeSettings {
        presence_flush_interval: Duration::from_millis(300),
        ..EdgeSettings::default()
    };
    let edge = Edge::new(settings);
    let mut client = edge.connect("U1").await;
    client
        .send(json!({ "id": 1, "type": "presence_sub", "ids": ["U2", "U3"] }))
        .await;
    assert_eq!(client.frame().await["reply_to"], 1);

    let change = |user: &str, presence| TeamEventBody::Presence {
        user: user.into(),
        presence,
    };
    edge.core.publish(change("U2", Presence::Away));
    let first = client.frame().await;
    assert_eq!(
        first,
        json!({ "type": "presence_change", "users": [{ "id": "U2", "presence": "away" }] })
    );

    // A storm within one interval: one frame with the latest state of each user.
    for n in 0..50 {
        let presence = if n % 2 == 0 {
            Presence::Active
        } else {
            Presence::Away
        };
        edge.core.publish(change("U2", presence));
        edge.core.publish(change("U3", presence));
        // Not subscribed: never sent.
        edge.core.publish(change("U4", presence));
    }
    edge.core.publish(change("U2", Presence::Dnd));
    let batch = client.frame().await;
    assert_eq!(
        batch,
        json!({ "type": "presence_change", "users": [
            { "id": "U2", "presence": "dnd" },
            { "id": "U3", "presence": "away" },
        ] })
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        client.until_pong(2).await.is_empty(),
        "one frame for the whole storm"
    );

    // Replacing the subscription drops users out of view.
    client
        .send(json!({ "id": 3, "type": "presence_sub", "ids": ["U3"] }))
        .await;
    assert_eq!(client.frame().await["reply_to"], 3);
    edge.core.publish(change("U2", Presence::Active));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(client.until_pong(4).await.is_empty());

    let too_many: Vec<String> = (0..501).map(|n| format!("U{n}")).collect();
    client
        .send(json!({ "id": 5, "type": "presence_sub", "ids": too_many }))
        .await;
    let error = client.frame().await;
    assert_eq!(error["error"]["code"], "invalid_argument");

    client
        .send(json!({ "id": 6, "type": "presence_query", "ids": ["U2", "U404"] }))
        .await;
    let reply = client.frame().await;
    assert_eq!(reply["reply_to"], 6);
    assert_eq!(reply["users"], json!([{ "id": "U2", "presence": "away" }]));
}

#[tokio::test]
async fn membership_events_route_channel_traffic() {
    let edge = Edge::new(EdgeSettings::default());
    let mut member = edge.connect("U1").await;
    let mut newcomer = edge.connect("U3").await;

    edge.core.add_member("C1", "U3");
    edge.core.publish(TeamEventBody::MemberJoined {
        channel: edge.core.channel("C1"),
        user: "U3".into(),
    });
    let joined = newcomer.frame().await;
    assert_eq!(joined["type"], "channel_joined");
    assert_eq!(joined["channel"]["id"], "C1");
    let seen = member.frame().await;
    assert_eq!(
        seen,
        json!({ "type": "member_joined_channel", "channel": "C1", "user": "U3" })
    );

    edge.core.post("C1", "U2", "welcome");
    assert_eq!(message_seqs(&newcomer.messages(1).await), vec![1]);
    assert_eq!(message_seqs(&member.messages(1).await), vec![1]);

    // Typing reaches the others, not the typer.
    newcomer
        .send(json!({ "id": 2, "type": "typing", "channel": "C1" }))
        .await;
    assert_eq!(newcomer.frame().await["reply_to"], 2);
    let typing = member.frame().await;
    assert_eq!(
        typing,
        json!({ "type": "user_typing", "channel": "C1", "user": "U3" })
    );
    assert!(newcomer.settled(3).await.is_empty());

    edge.core.remove_member("C1", "U3");
    edge.core.publish(TeamEventBody::MemberLeft {
        channel: "C1".into(),
        user: "U3".into(),
    });
    assert_eq!(
        newcomer.frame().await,
        json!({ "type": "channel_left", "channel": "C1" })
    );
    assert_eq!(
        member.frame().await,
        json!({ "type": "member_left_channel", "channel": "C1", "user": "U3" })
    );
    edge.core.post("C1", "U2", "after");
    assert_eq!(message_seqs(&member.messages(1).await), vec![2]);
    assert!(newcomer.settled(4).await.is_empty());

    edge.core.publish(TeamEventBody::ReadMarker {
        channel: "C1".into(),
        user: "U1".into(),
        seq: 2,
    });
    assert_eq!(
        member.frame().await,
        json!({ "type": "channel_marked", "channel": "C1", "seq": 2 })
    );
    assert!(newcomer.settled(5).await.is_empty());
}

#[tokio::test]
async fn a_full_queue_cuts_the_connection_off() {
    let edge = Edge::new(EdgeSettings::default());
    let hub = Hub::new(edge.flannel.clone(), 2);
    let caller = caller("U1");
    let registration = hub.register(&caller).await.unwrap();
    registration.add_channels(["C1".into()]);
    for n in 0..3 {
        edge.core.post("C1", "U2", &format!("m{n}"));
    }
    let kicked = tokio::time::timeout(WAIT, registration.shared().kicked())
        .await
        .unwrap();
    assert_eq!(kicked, "slow_consumer");
    assert_eq!(hub.team_count(), 1);
    drop(registration);
    assert_eq!(
        hub.team_count(),
        0,
        "the last connection out stops following the team"
    );
}

#[tokio::test]
async fn a_slow_client_gets_goodbye_instead_of_unbounded_memory() {
    let settings = EdgeSettings {
        send_buffer_frames: 4,
        ..EdgeSettings::default()
    };
    let edge = Edge::new(settings);
    let mut client = edge.connect("U1").await;
    // The client reads nothing while the team is busy.
    for n in 0..50 {
        edge.core.post("C1", "U2", &format!("m{n}"));
    }
    let end = tokio::time::timeout(WAIT, &mut client.task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        end == SessionEnd::Kicked("slow_consumer".into()) || end == SessionEnd::SlowConsumer,
        "{end:?}"
    );
    // What was queued is bounded by the buffer, and the connection is over.
    let mut queued = 0;
    while let Ok(item) = client.out.try_recv() {
        queued += 1;
        let _ = item;
    }
    assert!(queued <= 4, "{queued} frames queued");
}

#[tokio::test]
async fn drain_says_goodbye_then_closes() {
    let edge = Edge::new(EdgeSettings::default());
    let mut client = edge.connect("U1").await;
    client.drain.start_drain();
    assert_eq!(
        client.frame().await,
        json!({ "type": "goodbye", "reason": "server_shutdown" })
    );
    match client.outbound().await {
        Outbound::Close { code, .. } => assert_eq!(code, 1001),
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(client.task.await.unwrap(), SessionEnd::Drained);
}

#[tokio::test]
async fn lost_team_stream_sends_everyone_to_reconnect() {
    let edge = Edge::new(EdgeSettings::default());
    let mut client = edge.connect("U1").await;
    edge.core.drop_subscribers();
    let goodbye = client.frame().await;
    assert_eq!(goodbye["type"], "goodbye");
    assert_eq!(goodbye["reason"], "upstream_closed");
    // The next connection follows the team afresh.
    let mut again = edge.connect("U2").await;
    edge.core.post("C1", "U1", "back");
    assert_eq!(message_seqs(&again.messages(1).await), vec![1]);
}

fn text(frame: String) -> Result<Message, WsError> {
    Ok(Message::text(frame))
}

async fn read_all(frames: Vec<Result<Message, WsError>>, settings: &EdgeSettings) -> Vec<Incoming> {
    let (tx, mut rx) = mpsc::channel(4096);
    read_loop(futures::stream::iter(frames), tx, settings).await;
    let mut out = Vec::new();
    while let Ok(item) = rx.try_recv() {
        out.push(item);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn reader_rate_limits_then_closes_abusers() {
    let settings = EdgeSettings::default();
    let ping = |id: u64| text(json!({ "id": id, "type": "ping" }).to_string());

    let burst: Vec<_> = (1..=300).map(ping).collect();
    let items = read_all(burst, &settings).await;
    assert_eq!(items.len(), 300);
    let accepted = items
        .iter()
        .filter(|i| matches!(i, Incoming::Command(_)))
        .count();
    assert_eq!(accepted, settings.rate_burst as usize);
    let Incoming::Reject(rejection) = &items[250] else {
        panic!("expected a rejection");
    };
    assert_eq!(rejection.error.code, ErrorCode::RateLimited);
    assert_eq!(rejection.reply_to, Some(251));

    let flood: Vec<_> = (1..=2000).map(ping).collect();
    let items = read_all(flood, &settings).await;
    assert!(matches!(
        items.last(),
        Some(Incoming::Close { code: 1008, .. })
    ));
    assert_eq!(
        items.len(),
        settings.rate_burst as usize + settings.abuse_strikes as usize
    );
}

#[tokio::test(start_paused = true)]
async fn reader_rejects_bad_frames_and_keeps_going() {
    let settings = EdgeSettings::default();
    let big = format!(
        r#"{{"id":1,"type":"ping","pad":"{}"}}"#,
        "x".repeat(MAX_FRAME_BYTES)
    );
    let frames = vec![
        text(big),
        Ok(Message::binary(vec![1, 2, 3])),
        text("{nope".into()),
        text(r#"{"id":4,"type":"dance"}"#.into()),
        Ok(Message::Ping(vec![1].into())),
        text(r#"{"id":5,"type":"ping"}"#.into()),
    ];
    let items = read_all(frames, &settings).await;
    let codes: Vec<Option<ErrorCode>> = items
        .iter()
        .map(|i| match i {
            Incoming::Reject(r) => Some(r.error.code),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            Some(ErrorCode::FrameTooLarge),
            Some(ErrorCode::InvalidJson),
            Some(ErrorCode::InvalidJson),
            Some(ErrorCode::UnknownCommand),
            None,
        ]
    );

    // Beyond the WebSocket message limit is abuse: the reader closes.
    let items = read_all(
        vec![Err(WsError::Capacity(
            tokio_tungstenite::tungstenite::error::CapacityError::MessageTooLong {
                size: 2 << 20,
                max_size: 1 << 20,
            },
        ))],
        &settings,
    )
    .await;
    assert!(matches!(
        items.as_slice(),
        [Incoming::Close { code: 1009, .. }]
    ));
}
