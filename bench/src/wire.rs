//! The wire protocols the load generator speaks, one adapter per kind of server, so the
//! same fanout scenario drives confab and every peer (bench/peers/README.md) alike. An
//! adapter knows three things: how a member joins the channel once the WebSocket is open,
//! how a sender frames a message, and how a received frame turns into [`Event`]s. The
//! payload is always the generator's own text (`bench S J SENT_US`), so latency and loss
//! are counted the same way for every server.

use crate::net::{self, Result, Rtm, Target};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a member may take to be told it is subscribed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which protocol a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// confab's RTM (and the bare ceiling server, which speaks the same frames).
    Confab,
    /// Centrifuge's client protocol v1, JSON: commands and replies by `id`, pushes without.
    Centrifuge,
    /// nchan's `nchan_pubsub websocket`: each text frame sent is published, each message
    /// arrives as a text frame holding exactly its body; no replies.
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
    /// The server accepted one of this connection's sends.
    Ack,
    /// The server refused one of this connection's sends.
    Reject,
}

impl Wire {
    /// Whether the server answers each send, so "acked" means something.
    pub fn acknowledges_sends(self) -> bool {
        matches!(self, Self::Confab | Self::Centrifuge)
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
        let joining = async {
            match self {
                Self::Confab => net::connect_rtm(target, token).await,
                Self::Centrifuge => centrifuge_join(target, channel).await,
                Self::Nchan => net::connect_ws(target, &format!("/ws/{channel}"), &[]).await,
                Self::Nats => nats_join(target, channel).await,
                Self::Mqtt => mqtt_join(target, index, channel).await,
            }
        };
        tokio::time::timeout(JOIN_TIMEOUT, joining)
            .await
            .map_err(|_| format!("{self:?} member {index}: not joined within {JOIN_TIMEOUT:?}"))?
    }

    /// The frame that sends `text` to `channel`; `seq` numbers a connection's sends from 1.
    pub fn publish(self, channel: &str, seq: u64, client_msg_id: &str, text: &str) -> WsMessage {
        match self {
            Self::Confab => WsMessage::text(
                json!({"id": seq, "type": "message", "channel": channel, "text": text,
                    "client_msg_id": client_msg_id})
                .to_string(),
            ),
            // Ids 1 and 2 went to connect and subscribe.
            Self::Centrifuge => WsMessage::text(
                json!({"id": seq + 2, "method": 3,
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
    if frame.get("reply_to").is_some() {
        out.push(if frame["ok"] == json!(true) {
            Event::Ack
        } else {
            Event::Reject
        });
    } else if frame["type"] == "message"
        && let Some(text) = frame["text"].as_str()
    {
        out.push(Event::Message(text.to_owned()));
    }
}

/// One line of Centrifuge's JSON protocol: a reply (`id` > 0) or a push (a publication's
/// `data` is what the sender published).
fn centrifuge_events(line: &str, out: &mut Vec<Event>) {
    let Ok(reply) = serde_json::from_str::<Value>(line) else {
        return;
    };
    if reply["id"].as_u64().unwrap_or(0) > 0 {
        out.push(if reply.get("error").is_some() {
            Event::Reject
        } else {
            Event::Ack
        });
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

/// Centrifuge: connect (id 1), subscribe (id 2), and wait for both replies.
async fn centrifuge_join(target: &Target, channel: &str) -> Result<Rtm> {
    let mut ws = net::connect_ws(target, "/connection/websocket", &[]).await?;
    let commands = format!(
        "{}\n{}",
        json!({"id": 1, "method": 0, "params": {}}),
        json!({"id": 2, "method": 1, "params": {"channel": channel}})
    );
    ws.send(WsMessage::text(commands)).await?;
    let mut answered = 0;
    while answered < 2 {
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
            if matches!(reply["id"].as_u64(), Some(1 | 2)) {
                answered += 1;
            }
        }
    }
    Ok(ws)
}

/// NATS: read `INFO`, send `CONNECT`, `SUB` and `PING`; the `PONG` proves the
/// subscription is in place.
async fn nats_join(target: &Target, channel: &str) -> Result<Rtm> {
    let mut ws = net::connect_ws(target, "/", &[]).await?;
    let hello = format!(
        "CONNECT {}\r\nSUB {channel} 1\r\nPING\r\n",
        json!({"verbose": false, "pedantic": false, "echo": true, "protocol": 1})
    );
    ws.send(WsMessage::binary(hello.into_bytes())).await?;
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

/// MQTT: `CONNECT` (clean session), `CONNACK`, `SUBSCRIBE` at QoS 0, `SUBACK`.
async fn mqtt_join(target: &Target, index: usize, topic: &str) -> Result<Rtm> {
    let mut ws = net::connect_ws(target, "/", &[("sec-websocket-protocol", "mqtt")]).await?;
    ws.send(WsMessage::binary(mqtt::connect(&format!("bench-{index}"))))
        .await?;
    ws.send(WsMessage::binary(mqtt::subscribe(1, topic)))
        .await?;
    let mut buffer = Vec::new();
    let (mut connected, mut subscribed) = (false, false);
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
                mqtt::SUBACK if body.get(2).is_some_and(|&code| code < 0x80) => subscribed = true,
                mqtt::SUBACK => return Err(format!("mqtt SUBACK refused: {body:?}").into()),
                _ => {}
            }
        }
    }
    Ok(ws)
}

/// The few NATS protocol lines the generator reads.
mod nats {
    use super::Event;

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
                    out.push(Event::Reject);
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

    pub fn subscribe(packet_id: u16, topic: &str) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        string(&mut body, topic.as_bytes());
        body.push(0);
        packet(0x82, &body)
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
            "{\"id\":7,\"result\":{}}\n{\"id\":8,\"error\":{\"code\":103}}\n\
             {\"result\":{\"channel\":\"c\",\"data\":{\"data\":{\"text\":\"hi\"}}}}",
        );
        assert_eq!(
            events(Wire::Centrifuge, &[frame]),
            [Event::Ack, Event::Reject, Event::Message("hi".into())]
        );
    }

    #[test]
    fn confab_frames() {
        let frames = [
            WsMessage::text(r#"{"reply_to":1,"ok":true}"#),
            WsMessage::text(r#"{"type":"message","text":"hi","seq":1}"#),
            WsMessage::text(r#"{"type":"user_typing"}"#),
        ];
        assert_eq!(
            events(Wire::Confab, &frames),
            [Event::Ack, Event::Message("hi".into())]
        );
    }
}
