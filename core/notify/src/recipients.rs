//! Who a new message notifies: every other member of a DM or group DM, and in channels
//! the members it mentions as `<@USER_ID>` (Slack's mention syntax, which clients insert
//! when a user picks a name).

use confab_proto::UserId;
use serde::{Deserialize, Serialize};

/// Why a user gets a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A message in a DM or group DM they are in.
    Dm,
    /// A message in a channel that mentions them.
    Mention,
}

/// The user ids mentioned in `text` as `<@ID>`, each once, in order of appearance.
/// Anything else that looks similar (`<@>`, `<@ id>`, `<@U1|name>` keeps only `U1`) is
/// ignored or trimmed, never an error: text is user input.
pub fn mentions(text: &str) -> Vec<UserId> {
    let mut found: Vec<UserId> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('>') else { break };
        let inner = &rest[..end];
        let id = inner.split('|').next().unwrap_or_default();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid && !found.iter().any(|u| u.as_str() == id) {
            found.push(UserId::new(id));
        }
        rest = &rest[end + 1..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<String> {
        mentions(text)
            .into_iter()
            .map(|u| u.as_str().to_string())
            .collect()
    }

    #[test]
    fn finds_each_mention_once_in_order() {
        assert_eq!(ids("hi <@U1> and <@U2|bob>, <@U1> again"), ["U1", "U2"]);
    }

    #[test]
    fn ignores_malformed_mentions() {
        assert!(ids("<@> <@ U1> <@U1 <@U/2> @U3 <U4>").is_empty());
        assert_eq!(ids("unterminated <@U1"), Vec::<String>::new());
        assert_eq!(ids("<@U5>"), ["U5"]);
    }
}
