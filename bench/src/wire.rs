//! The wire protocols the load generator speaks, one adapter per kind of server, so the
//! same scenarios (fanout, many-channels) drive confab and every peer
//! (bench/peers/README.md) alike. An adapter knows three things: how a member opens its
//! connection and joins its channels, how a sender frames a message, and how a received
//! frame turns into [`Event`]s. The payload is always the generator's own text
//! ([`crate::payload`]), so latency and loss are counted the same way for every server.

use crate::net::{self, Result, Rtm, Target};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a member may take to be told it is subscribed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Centrifuge command ids: connect is 1 and subscribes follow it; publish `seq` (from 1)
/// gets `CENTRIFUGE_PUBLISH_IDS + seq`, so every id on a connection is distinct and a
/// reply's id tells which send it answers.
const CENTRIFUGE_PUBLISH_IDS: u64 = 1_000_000;

/// Which protocol a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// confab's RTM (and the bare ceiling server, which speaks the same frames).
    Confab,
    /// Centrifuge's client protocol v1, JSON: commands and replies by `id`, pushes without.
    Centrifuge,
    /// nchan's `nchan_pubsub websocket`: each text frame sent is published, each message
    /// arrives as a text frame holding exactly its body; no replies. One channel per
    /// connection.
    Nchan,
    /// The NATS text protocol over WebSocket: `SUB`, `PUB`, `MSG`; no replies to `PUB`.
    Nats,
    /// MQTT 3.1.1 over WebSocket (subprotocol `mqtt`), QoS 0: no replies to `PUBLISH`.
    Mqtt,
}

/// What a received frame meant to the generator.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A message in the channel, with the text it carried.
    Message(String),
    /// The server accepted this connection's send numbered `seq` (as given to
    /// [`Wire::publish`]).
    Ack(u64),
    /// The server refused one of this connection's sends: the one numbered `seq` when the
    /// protocol says which.
    Reject(Option<u64>),
}

impl Wire {
    /// Whether the server answers each send, so "acked" means something.
    pub fn acknowledges_sends(self) -> bool {
        matches!(self, Self::Confab | Self::Centrifuge)
    }

    /// Whether one connection can be in several channels. When not (nchan), a member of
    /// k channels holds k connections: see [`Wire::join_many`].
    pub fn multiplexes_channels(self) -> bool {
        !matches!(self, Self::Nchan)
    }

    /// Opens member `index`'s connection and joins `channel`: on return the server will
    /// deliver every later message of the channel to it. `token` is confab's bearer token.
    pub async fn join(
        self,
        target: &Target,
        index: usize,
        token: &str,
        channel: &str,
    ) -> Result<Rtm> {
        let mut connections = self
            .join_many(target, index, token, &[channel.to_owned()])
            .await?;
        connections
            .pop()
            .ok_or_else(|| format!("{self:?} member {index}: no connection").into())
    }

    /// Opens member `index`'s connections and joins every one of `channels`: on return
    /// the server will deliver every later message of each to it. Where the protocol lets
    /// one connection be in several channels that is one connection (also with no
    /// channels); otherwise (nchan) one per channel, in the order of `channels`, and
    /// [`Wire::sending_connection`] says which to send on. confab's membership is made
    /// over REST beforehand; `token` is its bearer token.
    pub async fn join_many(
        self,
        target: &Target,
        index: usize,
        token: &str,
        channels: &[String],
    ) -> Result<Vec<Rtm>> {
        let joining = async {
            match self {
                Self::Confab => Ok(vec![net::connect_rtm(target, token).await?]),
                Self::Centrifuge => Ok(vec![centrifuge_join(target, channels).await?]),
                Self::Nchan => nchan_join(target, channels).await,
                Self::Nats => Ok(vec![nats_join(target, channels).await?]),
                Self::Mqtt => Ok(vec![mqtt_join(target, index, channels).await?]),
            }
        };
        tokio::time::timeout(JOIN_TIMEOUT, joining)
            .await
            .map_err(|_| format!("{self:?} member {index}: not joined within {JOIN_TIMEOUT:?}"))?
    }

    /// Which of [`Wire::join_many`]'s connections sends to its `position`-th channel.
    pub fn sending_connection(self, position: usize) -> usize {
        if self.multiplexes_channels() {
            0
        } else {
            position
        }
    }

    /// The frame that sends `text` to `channel`; `seq` numbers a connection's sends from 1.
    pub fn publish(self, channel: &str, seq: u64, client_msg_id: &str, text: &str) -> WsMessage {
        match self {
            Self::Confab => WsMessage::text(
                json!({"id": seq, "type": "message", "channel": channel, "text": text,
                    "client_msg_id": client_msg_id})
                .to_string(),
            ),
            Self::Centrifuge => WsMessage::text(
                json!({"id": CENTRIFUGE_PUBLISH_IDS + seq, "method": 3,
                    "params": {"channel": channel, "data": {"text": text}}})
                .to_string(),
            ),
            Self::Nchan => WsMessage::text(text.to_owned()),
            Self::Nats => WsMessage::binary(
                format!("PUB {channel} {}\r\n{text}\r\n", text.len()).into_bytes(),
            ),
            Self::Mqtt => WsMessage::binary(mqtt::publish(channel, text.as_bytes())),
        }
    }

    /// A decoder for one connection's incoming frames.
    pub fn decoder(self) -> Decoder {
        Decoder {
            wire: self,
            buffer: Vec::new(),
        }
    }
}

/// Turns one connection's frames into events; NATS and MQTT messages may be split across
/// or packed into WebSocket frames, so bytes are buffered between frames.
#[derive(Debug)]
pub struct Decoder {
    wire: Wire,
    buffer: Vec<u8>,
}

impl Decoder {
    /// Appends the events in `frame` to `out`.
    pub fn feed(&mut self, frame: &WsMessage, out: &mut Vec<Event>) {
        match (self.wire, frame) {
            (Wire::Confab, WsMessage::Text(text)) => confab_events(text, out),
            (Wire::Centrifuge, WsMessage::Text(text)) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    centrifuge_events(line, out);
                }
            }
            (Wire::Nchan, WsMessage::Text(text)) => out.push(Event::Message(text.to_string())),
            (Wire::Nats, WsMessage::Text(text)) => {
                self.buffer.extend_from_slice(text.as_bytes());
                nats::drain(&mut self.buffer, out);
            }
            (Wire::Nats, WsMessage::Binary(bytes)) => {
                self.buffer.extend_from_slice(bytes);
                nats::drain(&mut self.buffer, out);
            }
            (Wire::Mqtt, WsMessage::Binary(bytes)) => {
                self.buffer.extend_from_slice(bytes);
                mqtt::drain(&mut self.buffer, out);
            }
            _ => {}
        }
    }
}

fn confab_events(text: &str, out: &mut Vec<Event>) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if let Some(reply_to) = frame.get("reply_to") {
        out.push(match reply_to.as_u64() {
            Some(seq) if frame["ok"] == json!(true) => Event::Ack(seq),
            seq => Event::Reject(seq),
        });
    } else if frame["type"] == "message"
        && let Some(text) = frame["text"].as_str()
    {
        out.push(Event::Message(text.to_owned()));
    }
}

/// One line of Centrifuge's JSON protocol: a reply (`id` > 0; those to publishes become
/// events) or a push (a publication's `data` is what the sender published).
fn centrifuge_events(line: &str, out: &mut Vec<Event>) {
    let Ok(reply) = serde_json::from_str::<Value>(line) else {
        return;
    };
    let id = reply["id"].as_u64().unwrap_or(0);
    if id > 0 {
        if let Some(seq) = id
            .checked_sub(CENTRIFUGE_PUBLISH_IDS)
            .filter(|&seq| seq > 0)
        {
            out.push(if reply.get("error").is_some() {
                Event::Reject(Some(seq))
            } else {
                Event::Ack(seq)
            });
        }
        return;
    }
    let push = &reply["result"];
    // Push type 0 (publication) is left out of the JSON as the default.
    if push["type"].as_u64().unwrap_or(0) == 0
        && let Some(text) = push["data"]["data"]["text"].as_str()
    {
        out.push(Event::Message(text.to_owned()));
    }
}

/// Centrifuge: connect (id 1) and one subscribe per channel (ids 2, 3, …) in one frame,
/// then wait for every reply.
async fn centrifuge_join(target: &Target, channels: &[String]) -> Result<Rtm> {
    let mut ws = net::connect_ws(target, "/connection/websocket", &[]).await?;
    ws.send(WsMessage::text(centrifuge_join_commands(channels)))
        .await?;
    let commands = 1 + channels.len() as u64;
    let mut answered = 0;
    while answered < commands {
        let Some(frame) = ws.next().await else {
            return Err("centrifuge closed the connection while joining".into());
        };
        let WsMessage::Text(text) = frame? else {
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let reply: Value = serde_json::from_str(line)?;
            if let Some(error) = reply.get("error") {
                return Err(format!("centrifuge refused the join: {error}").into());
            }
            if reply["id"]
                .as_u64()
                .is_some_and(|id| (1..=commands).contains(&id))
            {
                answered += 1;
            }
        }
    }
    Ok(ws)
}

/// Connect, then a subscribe to each channel, one command per line.
fn centrifuge_join_commands(channels: &[String]) -> String {
    let connect = json!({"id": 1, "method": 0, "params": {}});
    let subscribes = channels
        .iter()
        .zip(2u64..)
        .map(|(channel, id)| json!({"id": id, "method": 1, "params": {"channel": channel}}));
    std::iter::once(connect)
        .chain(subscribes)
        .map(|command| command.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// nchan: one `nchan_pubsub` connection per channel (its WebSocket location serves one
/// channel); nothing to wait for once the upgrade is done.
async fn nchan_join(target: &Target, channels: &[String]) -> Result<Vec<Rtm>> {
    let mut connections = Vec::with_capacity(channels.len());
    for channel in channels {
        connections.push(net::connect_ws(target, &format!("/ws/{channel}"), &[]).await?);
    }
    Ok(connections)
}

/// NATS: read `INFO`, send `CONNECT`, one `SUB` per channel (sids 1, 2, …) and `PING`;
/// the `PONG` proves the subscriptions are in place.
async fn nats_join(target: &Target, channels: &[String]) -> Result<Rtm> {
    let mut ws = net::connect_ws(target, "/", &[]).await?;
    ws.send(WsMessage::binary(nats::hello(channels).into_bytes()))
        .await?;
    let mut seen = Vec::new();
    while let Some(frame) = ws.next().await {
        match frame? {
            WsMessage::Binary(bytes) => seen.extend_from_slice(&bytes),
            WsMessage::Text(text) => seen.extend_from_slice(text.as_bytes()),
            _ => continue,
        }
        let text = String::from_utf8_lossy(&seen);
        if text.contains("-ERR") {
            return Err(format!("nats refused the join: {}", text.trim()).into());
        }
        if text.contains("PONG\r\n") {
            return Ok(ws);
        }
    }
    Err("nats closed the connection while joining".into())
}

/// MQTT: `CONNECT` (clean session, a client id unique to this process and member),
/// `CONNACK`, then one `SUBSCRIBE` with every topic at QoS 0 and its `SUBACK` (no
/// `SUBSCRIBE` without topics: MQTT forbids an empty one).
async fn mqtt_join(target: &Target, index: usize, topics: &[String]) -> Result<Rtm> {
    let mut ws = net::connect_ws(target, "/", &[("sec-websocket-protocol", "mqtt")]).await?;
    // Unique across processes too: a second CONNECT with the same id would disconnect the
    // first, even another run's.
    let client_id = format!("bench-{}-{index}", std::process::id());
    ws.send(WsMessage::binary(mqtt::connect(&client_id)))
        .await?;
    if !topics.is_empty() {
        ws.send(WsMessage::binary(mqtt::subscribe(1, topics)))
            .await?;
    }
    let mut buffer = Vec::new();
    let (mut connected, mut subscribed) = (false, topics.is_empty());
    while !(connected && subscribed) {
        let Some(frame) = ws.next().await else {
            return Err("mosquitto closed the connection while joining".into());
        };
        if let WsMessage::Binary(bytes) = frame? {
            buffer.extend_from_slice(&bytes);
        }
        while let Some((kind, body)) = mqtt::next_packet(&mut buffer) {
            match kind {
                mqtt::CONNACK if body.get(1) == Some(&0) => connected = true,
                mqtt::CONNACK => return Err(format!("mqtt CONNACK refused: {body:?}").into()),
                mqtt::SUBACK if mqtt::all_granted(&body, topics.len()) => subscribed = true,
                mqtt::SUBACK => return Err(format!("mqtt SUBACK refused: {body:?}").into()),
                _ => {}
            }
        }
    }
    Ok(ws)
}

/// The few NATS protocol lines the generator writes and reads.
mod nats {
    use super::Event;
    use serde_json::json;

    /// `CONNECT`, a `SUB` per subject (sids 1, 2, …) and a `PING`.
    pub fn hello(subjects: &[String]) -> String {
        let connect = json!({"verbose": false, "pedantic": false, "echo": true, "protocol": 1});
        let mut hello = format!("CONNECT {connect}\r\n");
        for (subject, sid) in subjects.iter().zip(1..) {
            hello.push_str(&format!("SUB {subject} {sid}\r\n"));
        }
        hello.push_str("PING\r\n");
        hello
    }

    /// Moves every complete protocol message out of `buffer`, keeping a partial tail.
    pub fn drain(buffer: &mut Vec<u8>, out: &mut Vec<Event>) {
        let mut start = 0;
        while let Some(eol) = find_crlf(&buffer[start..]) {
            let line = &buffer[start..start + eol];
            let after_line = start + eol + 2;
            if let Some(args) = line.strip_prefix(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size = std::str::from_utf8(args)
                    .ok()
                    .and_then(|a| a.split(' ').next_back())
                    .and_then(|n| n.parse::<usize>().ok());
                let Some(size) = size else {
                    start = after_line;
                    continue;
                };
                if buffer.len() < after_line + size + 2 {
                    break;
                }
                let payload = &buffer[after_line..after_line + size];
                out.push(Event::Message(
                    String::from_utf8_lossy(payload).into_owned(),
                ));
                start = after_line + size + 2;
            } else {
                if line.starts_with(b"-ERR") {
                    out.push(Event::Reject(None));
                }
                start = after_line;
            }
        }
        buffer.drain(..start);
    }

    fn find_crlf(bytes: &[u8]) -> Option<usize> {
        bytes.windows(2).position(|w| w == b"\r\n")
    }
}

/// MQTT 3.1.1 packets, just the ones a QoS 0 subscriber and publisher need.
mod mqtt {
    use super::Event;

    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const SUBACK: u8 = 9;

    /// A packet: fixed header byte, remaining length, body.
    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let mut length = body.len();
        loop {
            let mut byte = (length % 128) as u8;
            length /= 128;
            if length > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if length == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
        out
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }

    /// CONNECT with a clean session and no keep-alive (the runs are shorter than any).
    pub fn connect(client_id: &str) -> Vec<u8> {
        let mut body = Vec::new();
        string(&mut body, b"MQTT");
        body.extend_from_slice(&[4, 0x02, 0, 0]);
        string(&mut body, client_id.as_bytes());
        packet(0x10, &body)
    }

    /// SUBSCRIBE to every topic at QoS 0.
    pub fn subscribe(packet_id: u16, topics: &[String]) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        for topic in topics {
            string(&mut body, topic.as_bytes());
            body.push(0);
        }
        packet(0x82, &body)
    }

    /// Whether a SUBACK body (packet id, then one return code per topic) granted all
    /// `topics` subscriptions: codes below 0x80 are granted QoS levels, 0x80 a failure.
    pub fn all_granted(suback: &[u8], topics: usize) -> bool {
        let codes = suback.get(2..).unwrap_or_default();
        codes.len() == topics && codes.iter().all(|&code| code < 0x80)
    }

    pub fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        string(&mut body, topic.as_bytes());
        body.extend_from_slice(payload);
        packet(0x30, &body)
    }

    /// Takes the next complete packet off `buffer`: its type and body.
    pub fn next_packet(buffer: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
        let (mut length, mut shift, mut at) = (0usize, 0, 1);
        loop {
            let byte = *buffer.get(at)?;
            length |= usize::from(byte & 0x7f) << shift;
            at += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                // Not MQTT; drop everything rather than wait forever.
                buffer.clear();
                return None;
            }
        }
        if buffer.len() < at + length {
            return None;
        }
        let kind = buffer[0] >> 4;
        let body = buffer[at..at + length].to_vec();
        buffer.drain(..at + length);
        Some((kind, body))
    }

    /// Every complete PUBLISH in `buffer` becomes a message.
    pub fn drain(buffer: &mut Vec<u8>, out: &mut Vec<Event>) {
        while let Some((kind, body)) = next_packet(buffer) {
            if kind != PUBLISH || body.len() < 2 {
                continue;
            }
            // QoS 0 (all this generator subscribes with): no packet id after the topic.
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            if let Some(payload) = body.get(2 + topic_len..) {
                out.push(Event::Message(
                    String::from_utf8_lossy(payload).into_owned(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(wire: Wire, frames: &[WsMessage]) -> Vec<Event> {
        let mut decoder = wire.decoder();
        let mut out = Vec::new();
        for frame in frames {
            decoder.feed(frame, &mut out);
        }
        out
    }

    #[test]
    fn nats_messages_split_and_packed_across_frames() {
        let frames = [
            WsMessage::binary(b"INFO {}\r\nMSG bench 1 5\r\nhel".to_vec()),
            WsMessage::binary(b"lo\r\nPING\r\nMSG bench 1 2\r\nok\r\n".to_vec()),
        ];
        assert_eq!(
            events(Wire::Nats, &frames),
            [Event::Message("hello".into()), Event::Message("ok".into())]
        );
    }

    #[test]
    fn mqtt_publish_round_trips_through_the_decoder() {
        let packet = mqtt::publish("bench", b"bench 0 1 2");
        let (a, b) = packet.split_at(4);
        let frames = [WsMessage::binary(a.to_vec()), WsMessage::binary(b.to_vec())];
        assert_eq!(
            events(Wire::Mqtt, &frames),
            [Event::Message("bench 0 1 2".into())]
        );
    }

    #[test]
    fn mqtt_remaining_length_uses_continuation_bytes() {
        let payload = vec![b'x'; 300];
        let packet = mqtt::publish("t", &payload);
        // 2 + 1 + 300 = 303 = 2 × 128 + 47: low seven bits first, continuation bit set.
        assert_eq!(&packet[1..3], &[0x80 | 47, 0x02]);
        let mut buffer = packet;
        let (kind, body) = mqtt::next_packet(&mut buffer).unwrap();
        assert_eq!((kind, body.len()), (mqtt::PUBLISH, 303));
        assert!(buffer.is_empty());
    }

    #[test]
    fn centrifuge_replies_and_publications() {
        let frame = WsMessage::text(
            "{\"id\":1000007,\"result\":{}}\n{\"id\":1000008,\"error\":{\"code\":103}}\n\
             {\"result\":{\"channel\":\"c\",\"data\":{\"data\":{\"text\":\"hi\"}}}}",
        );
        assert_eq!(
            events(Wire::Centrifuge, &[frame]),
            [
                Event::Ack(7),
                Event::Reject(Some(8)),
                Event::Message("hi".into())
            ]
        );
    }

    #[test]
    fn centrifuge_publish_ids_come_back_as_the_send_number() {
        let WsMessage::Text(publish) = Wire::Centrifuge.publish("c", 5, "x", "hi") else {
            panic!("centrifuge publishes in text frames");
        };
        let id = serde_json::from_str::<Value>(&publish).unwrap()["id"].clone();
        let reply = WsMessage::text(json!({"id": id, "result": {}}).to_string());
        assert_eq!(events(Wire::Centrifuge, &[reply]), [Event::Ack(5)]);
        // Replies to the join's commands (ids from 1) are not sends.
        let join_reply = WsMessage::text(r#"{"id":2,"result":{}}"#);
        assert_eq!(events(Wire::Centrifuge, &[join_reply]), []);
    }

    #[test]
    fn centrifuge_join_is_connect_then_one_subscribe_per_channel() {
        let commands = centrifuge_join_commands(&["a".into(), "b".into()]);
        let lines: Vec<Value> = commands
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                json!({"id": 1, "method": 0, "params": {}}),
                json!({"id": 2, "method": 1, "params": {"channel": "a"}}),
                json!({"id": 3, "method": 1, "params": {"channel": "b"}}),
            ]
        );
    }

    #[test]
    fn nats_hello_subscribes_each_subject_with_its_own_sid() {
        let hello = nats::hello(&["a".into(), "b".into()]);
        let lines: Vec<&str> = hello.split_terminator("\r\n").collect();
        assert!(lines[0].starts_with("CONNECT {"), "{hello}");
        assert_eq!(lines[1..], ["SUB a 1", "SUB b 2", "PING"]);
    }

    #[test]
    fn mqtt_subscribe_lists_every_topic_at_qos_0() {
        let packet = mqtt::subscribe(1, &["ab".into(), "c".into()]);
        // Remaining length 11: packet id 2, then per topic its length 2, name, QoS 1.
        assert_eq!(
            packet,
            [0x82, 11, 0, 1, 0, 2, b'a', b'b', 0, 0, 1, b'c', 0].to_vec()
        );
    }

    #[test]
    fn mqtt_suback_grants_every_topic_or_fails() {
        // Packet id 1, then one return code per topic: QoS 0, QoS 0 / failure (0x80).
        assert!(mqtt::all_granted(&[0, 1, 0, 0], 2));
        assert!(!mqtt::all_granted(&[0, 1, 0, 0x80], 2));
        assert!(!mqtt::all_granted(&[0, 1, 0], 2));
        assert!(mqtt::all_granted(&[0, 1], 0));
    }

    #[test]
    fn only_nchan_needs_a_connection_per_channel() {
        assert_eq!(Wire::Nchan.sending_connection(3), 3);
        for wire in [Wire::Confab, Wire::Centrifuge, Wire::Nats, Wire::Mqtt] {
            assert_eq!(wire.sending_connection(3), 0, "{wire:?}");
        }
    }

    #[test]
    fn confab_frames() {
        let frames = [
            WsMessage::text(r#"{"reply_to":1,"ok":true}"#),
            WsMessage::text(r#"{"reply_to":2,"ok":false,"error":"rate_limited"}"#),
            WsMessage::text(r#"{"type":"message","text":"hi","seq":1}"#),
            WsMessage::text(r#"{"type":"user_typing"}"#),
        ];
        assert_eq!(
            events(Wire::Confab, &frames),
            [
                Event::Ack(1),
                Event::Reject(Some(2)),
                Event::Message("hi".into())
            ]
        );
    }
}
