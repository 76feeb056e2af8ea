//! `confab notify`: the push notification worker (DESIGN.md §1) as its own process. It
//! reads the durable event log as consumer group `notify` and POSTs to the webhook sinks
//! of recipients who are not active. Several workers share the log's partitions.

use crate::config::Backends;
use crate::node::{NodeError, OpenBackends, open_backends};
use confab_notify::{Notifier, NotifyConfig, WebhookSink};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The system's CA bundle on Debian-like systems: what `https` sinks are checked against
/// unless `--push-ca` names other files.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A running notify worker (in its own process, or inside `confab dev`).
pub struct NotifyWorker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for NotifyWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyWorker").finish_non_exhaustive()
    }
}

impl NotifyWorker {
    /// Starts the worker on opened backends.
    pub fn spawn(backends: &OpenBackends, ca_files: &[PathBuf], config: NotifyConfig) -> Self {
        let sink = Arc::new(WebhookSink::new(
            WebhookSink::roots_from(ca_files),
            Duration::from_secs(10),
        ));
        let notifier = Notifier::new(
            Arc::clone(&backends.store),
            Arc::clone(&backends.presence),
            Arc::clone(&backends.event_log),
            sink,
            config,
        );
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(notifier.run(stopped));
        Self { stop, task }
    }

    /// Opens `backends` and starts the worker: `confab notify`.
    pub async fn start(backends: &Backends, ca_files: &[PathBuf]) -> Result<Self, NodeError> {
        let opened = open_backends(backends).await?;
        Ok(Self::spawn(&opened, ca_files, NotifyConfig::default()))
    }

    /// Finishes the record in hand (bounded by `grace`) and stops.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("notify worker did not stop within the grace period");
        }
    }
}
