//! Opaque identifiers. They are strings on the wire; the first letter tells the kind
//! (T team, U user, C channel, D direct message, M message) the way Slack's do, which
//! makes logs readable, but clients must treat them as opaque.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The letter new ids of this kind start with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered, globally unique id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, ulid::Ulid::new()))
            }

            /// Wraps an id received from elsewhere, without validation: ids are opaque.
            pub fn new(raw: impl Into<String>) -> Self {
                Self(raw.into())
            }

            /// The id as the string that goes on the wire and into storage keys.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(raw: &str) -> Self {
                Self(raw.to_owned())
            }
        }
    };
}

id_type!(
    /// A workspace: the unit of isolation and of sharding.
    TeamId,
    "T"
);
id_type!(
    /// A member of one team.
    UserId,
    "U"
);
id_type!(
    /// A channel, DM or group DM.
    ChannelId,
    "C"
);
id_type!(
    /// A stored message.
    MessageId,
    "M"
);

impl ChannelId {
    /// Ids for direct messages start with `D`, like Slack's, so they read apart in logs.
    pub fn generate_dm() -> Self {
        Self(format!("D{}", ulid::Ulid::new()))
    }
}
