//! Which backend each stateful part uses (DESIGN.md §2). The choice is explicit: a
//! deployment names its engines; nothing is guessed from what happens to be reachable.

use confab_events::{EventLogBackend, FanOutBackend};
use confab_presence::PresenceBackend;
use confab_store::{FjallStoreOptions, StoreBackend, SyncPolicy};
use std::path::Path;
use std::time::Duration;

/// How long a presence session lives without a heartbeat. Clients ping every 30 s by
/// default (DESIGN.md §7), so one lost ping does not flip them to away.
pub const PRESENCE_TTL: Duration = Duration::from_secs(75);

/// The backends of one node.
#[derive(Clone, Debug)]
pub struct Backends {
    pub store: StoreBackend,
    pub presence: PresenceBackend,
    pub fanout: FanOutBackend,
    pub event_log: EventLogBackend,
}

impl Backends {
    /// Everything embedded under one data directory: what `confab dev` runs on.
    pub fn embedded(data_dir: &Path, sync: SyncPolicy) -> Self {
        Self {
            store: StoreBackend::Embedded(FjallStoreOptions {
                dir: data_dir.join("store"),
                sync,
            }),
            presence: PresenceBackend::InProcess { ttl: PRESENCE_TTL },
            fanout: FanOutBackend::InProcess,
            event_log: EventLogBackend::Embedded {
                dir: data_dir.join("events"),
            },
        }
    }
}
