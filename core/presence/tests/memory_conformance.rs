//! Runs the presence conformance suite against the in-process driver.

use confab_presence::{MemoryPresence, PresenceStore};
use std::sync::Arc;
use std::time::Duration;

async fn make(ttl: Duration) -> Arc<dyn PresenceStore> {
    MemoryPresence::new(ttl)
}

confab_presence::presence_conformance_tests!(make);
