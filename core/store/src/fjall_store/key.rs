//! Byte layout of the fjall driver's keys (DESIGN.md §3).
//!
//! A key is a sequence of components. Strings are written escaped and terminated
//! (`0x00` becomes `0x00 0xFF`, the end is `0x00 0x01`), integers as 8 big-endian bytes.
//! This keeps two properties the driver relies on:
//!
//! - byte order of keys equals component-wise order of the values, so a range scan over
//!   `(team, channel, bucket, seq)` walks messages in `seq` order across buckets;
//! - the encoding is injective and prefix-free per component, so an id that happens to
//!   contain `0x00` can never make `(team, "a\0b")` collide with `(team, "a", "b")`,
//!   and a prefix scan over `(team)` can never reach into another team whose id merely
//!   starts with the same bytes. Ids are opaque client input, so this matters.

use crate::bucket_of;
use confab_proto::{ChannelId, TeamId, UserId};

/// Escape byte following `0x00` inside a string component.
const ESCAPED_NUL: u8 = 0xFF;
/// Byte following `0x00` at the end of a string component. Lower than [`ESCAPED_NUL`],
/// so a string sorts before every longer string it is a prefix of.
const TERMINATOR: u8 = 0x01;

/// Builds one key component by component.
#[derive(Default)]
pub(super) struct KeyBuf(Vec<u8>);

impl KeyBuf {
    pub(super) fn new() -> Self {
        Self(Vec::with_capacity(64))
    }

    /// Appends an escaped, terminated string component.
    pub(super) fn str(mut self, s: &str) -> Self {
        for &b in s.as_bytes() {
            if b == 0 {
                self.0.extend_from_slice(&[0, ESCAPED_NUL]);
            } else {
                self.0.push(b);
            }
        }
        self.0.extend_from_slice(&[0, TERMINATOR]);
        self
    }

    /// Appends a big-endian integer component.
    pub(super) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(super) fn build(self) -> Vec<u8> {
        self.0
    }
}

/// Reads components back out of a key, in order.
pub(super) struct KeyReader<'a> {
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    pub(super) fn new(key: &'a [u8]) -> Self {
        Self { rest: key }
    }

    /// The next string component; `None` if the key is malformed.
    pub(super) fn str(&mut self) -> Option<String> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let b = *self.rest.get(i)?;
            if b != 0 {
                out.push(b);
                i += 1;
                continue;
            }
            match *self.rest.get(i + 1)? {
                ESCAPED_NUL => {
                    out.push(0);
                    i += 2;
                }
                TERMINATOR => {
                    self.rest = self.rest.get(i + 2..)?;
                    return String::from_utf8(out).ok();
                }
                _ => return None,
            }
        }
    }

    /// The next integer component; `None` if the key is malformed.
    pub(super) fn u64(&mut self) -> Option<u64> {
        let (head, tail) = self.rest.split_first_chunk::<8>()?;
        self.rest = tail;
        Some(u64::from_be_bytes(*head))
    }
}

// ---- the keys of each keyspace, in the order of `Keyspaces` ----

/// `teams`: (team).
pub(super) fn team(team: &TeamId) -> Vec<u8> {
    KeyBuf::new().str(team.as_str()).build()
}

/// `team_domains`: (lower-cased domain). The one key not led by a team id: login looks a
/// team up by domain before it knows the id.
pub(super) fn team_domain(domain: &str) -> Vec<u8> {
    KeyBuf::new().str(&domain.to_lowercase()).build()
}

/// `users`: (team, user).
pub(super) fn user(team: &TeamId, user: &UserId) -> Vec<u8> {
    KeyBuf::new().str(team.as_str()).str(user.as_str()).build()
}

/// `user_emails`: (team, lower-cased email); emails compare case-insensitively.
pub(super) fn user_email(team: &TeamId, email: &str) -> Vec<u8> {
    KeyBuf::new()
        .str(team.as_str())
        .str(&email.to_lowercase())
        .build()
}

/// `channels`: (team, channel).
pub(super) fn channel(team: &TeamId, channel: &ChannelId) -> Vec<u8> {
    KeyBuf::new()
        .str(team.as_str())
        .str(channel.as_str())
        .build()
}

/// `channel_names` and `public_channels`: (team, name). Names sort bytewise, which is
/// the order `public_channels` lists them in.
pub(super) fn channel_name(team: &TeamId, name: &str) -> Vec<u8> {
    KeyBuf::new().str(team.as_str()).str(name).build()
}

/// `dm_keys`: (team, sorted member list).
pub(super) fn dm_key(team: &TeamId, dm_key: &str) -> Vec<u8> {
    KeyBuf::new().str(team.as_str()).str(dm_key).build()
}

/// `channel_members` (team, channel, user), `member_channels` (team, user, channel) and
/// `read_state` (team, user, channel): the same shape with the roles swapped.
pub(super) fn pair(team: &TeamId, first: &str, second: &str) -> Vec<u8> {
    KeyBuf::new()
        .str(team.as_str())
        .str(first)
        .str(second)
        .build()
}

/// Prefix of every `pair` key whose first two components are `(team, first)`.
pub(super) fn pair_prefix(team: &TeamId, first: &str) -> Vec<u8> {
    KeyBuf::new().str(team.as_str()).str(first).build()
}

/// Prefix of every key of one team, for keyspaces keyed `(team, …)`.
pub(super) fn team_prefix(team: &TeamId) -> Vec<u8> {
    self::team(team)
}

/// The third component of a `pair` key: the member, or the channel.
pub(super) fn pair_second(key: &[u8]) -> Option<String> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    reader.str()?;
    reader.str()
}

/// `channel_leases`: (team, channel).
pub(super) fn lease(team: &TeamId, channel: &ChannelId) -> Vec<u8> {
    self::channel(team, channel)
}

/// `messages`: (team, channel, bucket, seq). The bucket mirrors the Cassandra partition
/// key; since `bucket_of` is monotonic, key order is still `seq` order.
pub(super) fn message(team: &TeamId, channel: &ChannelId, seq: u64) -> Vec<u8> {
    KeyBuf::new()
        .str(team.as_str())
        .str(channel.as_str())
        .u64(bucket_of(seq))
        .u64(seq)
        .build()
}

/// Prefix of every message key of one channel.
pub(super) fn message_prefix(team: &TeamId, channel: &ChannelId) -> Vec<u8> {
    self::channel(team, channel)
}

/// The `seq` of a message key.
pub(super) fn message_seq(key: &[u8]) -> Option<u64> {
    let mut reader = KeyReader::new(key);
    reader.str()?;
    reader.str()?;
    reader.u64()?;
    reader.u64()
}

/// `message_dedup`: (team, channel, client_msg_id).
pub(super) fn dedup(team: &TeamId, channel: &ChannelId, client_msg_id: &str) -> Vec<u8> {
    KeyBuf::new()
        .str(team.as_str())
        .str(channel.as_str())
        .str(client_msg_id)
        .build()
}

/// `push_subscriptions`: (team, user, subscription id); `pair_prefix(team, user)` lists
/// a user's, by id.
pub(super) fn push_subscription(team: &TeamId, user: &UserId, id: &str) -> Vec<u8> {
    pair(team, user.as_str(), id)
}

/// `push_deliveries`: (team, delivery key).
pub(super) fn push_delivery(team: &TeamId, delivery: &str) -> Vec<u8> {
    KeyBuf::new().str(team.as_str()).str(delivery).build()
}

/// `push_delivery_expiry`: (expiry, team, delivery key), the index the committer sweeps
/// expired claims by. The one key not led by a team id: it is ordered by time.
pub(super) fn push_delivery_expiry(expires_at_ms: u64, team: &TeamId, delivery: &str) -> Vec<u8> {
    KeyBuf::new()
        .u64(expires_at_ms)
        .str(team.as_str())
        .str(delivery)
        .build()
}

/// The smallest `push_delivery_expiry` key of claims expiring at `expires_at_ms`: every
/// key below it expired earlier.
pub(super) fn push_delivery_expiry_prefix(expires_at_ms: u64) -> Vec<u8> {
    KeyBuf::new().u64(expires_at_ms).build()
}

/// The expiry, team and delivery key of a `push_delivery_expiry` key.
pub(super) fn push_delivery_expiry_parts(key: &[u8]) -> Option<(u64, TeamId, String)> {
    let mut reader = KeyReader::new(key);
    let expires_at_ms = reader.u64()?;
    let team = TeamId::new(reader.str()?);
    Some((expires_at_ms, team, reader.str()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BUCKET_SEQS;

    fn strs(parts: &[&str]) -> Vec<u8> {
        parts.iter().fold(KeyBuf::new(), |k, p| k.str(p)).build()
    }

    #[test]
    fn string_components_sort_like_the_strings() {
        let mut words = vec!["", "a", "a\0", "a\0b", "ab", "b", "\0", "\u{10FFFF}", "é"];
        let mut keys: Vec<Vec<u8>> = words.iter().map(|w| strs(&[w])).collect();
        words.sort();
        keys.sort();
        let decoded: Vec<String> = keys
            .iter()
            .map(|k| KeyReader::new(k).str().unwrap())
            .collect();
        assert_eq!(decoded, words);
    }

    #[test]
    fn tuples_sort_component_wise() {
        // Plain concatenation would put ("a", "z") after ("a\u{1}", "a"); component-wise
        // order puts every tuple starting with "a" first.
        assert!(strs(&["a", "z"]) < strs(&["a\u{1}", "a"]));
        assert!(strs(&["a", "z"]) < strs(&["a\0", "a"]));
        assert!(strs(&["a", "z"]) < strs(&["ab", ""]));
        assert!(strs(&["a", ""]) < strs(&["a", "a"]));
    }

    #[test]
    fn components_never_collide() {
        assert_ne!(strs(&["a\0b"]), strs(&["a", "b"]));
        assert_ne!(strs(&["a", "\0b"]), strs(&["a\0", "b"]));
        let team_a = TeamId::new("T1");
        let team_b = TeamId::new("T10");
        assert!(!team(&team_b).starts_with(&team_prefix(&team_a)));
    }

    #[test]
    fn readers_invert_builders() {
        let key = KeyBuf::new()
            .str("T\0x")
            .str("")
            .u64(7)
            .u64(u64::MAX)
            .build();
        let mut r = KeyReader::new(&key);
        assert_eq!(r.str().as_deref(), Some("T\0x"));
        assert_eq!(r.str().as_deref(), Some(""));
        assert_eq!(r.u64(), Some(7));
        assert_eq!(r.u64(), Some(u64::MAX));
        assert_eq!(r.u64(), None);
        assert_eq!(KeyReader::new(&[b'a', 0]).str(), None);
        assert_eq!(KeyReader::new(&[b'a', 0, 7]).str(), None);

        let team = TeamId::new("T1");
        let (user, chan) = ("U1", "C\0");
        assert_eq!(pair_second(&pair(&team, user, chan)).as_deref(), Some(chan));
        let channel = ChannelId::new("C1");
        assert_eq!(message_seq(&message(&team, &channel, 4097)), Some(4097));
    }

    #[test]
    fn message_keys_follow_seq_across_buckets() {
        let team = TeamId::new("T1");
        let channel = ChannelId::new("C1");
        let seqs = [
            0,
            1,
            BUCKET_SEQS - 1,
            BUCKET_SEQS,
            BUCKET_SEQS + 1,
            2 * BUCKET_SEQS,
            u64::MAX,
        ];
        let keys: Vec<Vec<u8>> = seqs.iter().map(|&s| message(&team, &channel, s)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let prefix = message_prefix(&team, &channel);
        assert!(keys.iter().all(|k| k.starts_with(&prefix)));
        // A channel whose id extends this one's never falls inside its prefix.
        let longer = message(&team, &ChannelId::new("C10"), 1);
        assert!(!longer.starts_with(&prefix));
    }
}
