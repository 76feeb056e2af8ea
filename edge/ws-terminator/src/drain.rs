//! Graceful shutdown signals (DESIGN.md §9, like pingora's `ShutdownWatch`): a drain phase
//! in which connections say `goodbye` after their in-flight command, then a forced stop
//! once the grace period is over. Work in flight is counted so the edge knows when it may
//! stop waiting early.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The side connections and requests hold: they watch for draining and count themselves.
#[derive(Clone, Debug)]
pub struct Drain {
    draining: watch::Receiver<bool>,
    forced: watch::Receiver<bool>,
    active: Arc<watch::Sender<usize>>,
}

/// The side the edge holds to start draining and to wait for it.
#[derive(Debug)]
pub struct DrainController {
    draining: watch::Sender<bool>,
    forced: watch::Sender<bool>,
    active: Arc<watch::Sender<usize>>,
}

/// Counts one connection or request as active until dropped.
#[derive(Debug)]
pub struct ActiveGuard {
    active: Arc<watch::Sender<usize>>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl DrainController {
    /// A controller and the first of its watchers.
    pub fn new() -> (Self, Drain) {
        let (draining, draining_rx) = watch::channel(false);
        let (forced, forced_rx) = watch::channel(false);
        let active = Arc::new(watch::channel(0usize).0);
        let drain = Drain {
            draining: draining_rx,
            forced: forced_rx,
            active: active.clone(),
        };
        (
            Self {
                draining,
                forced,
                active,
            },
            drain,
        )
    }

    /// Tells every watcher to finish what it is doing and leave.
    pub fn start_drain(&self) {
        self.draining.send_replace(true);
    }

    /// Waits until nothing is active, up to `grace`; true if everything finished.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        let mut rx = self.active.subscribe();
        tokio::time::timeout(grace, rx.wait_for(|n| *n == 0))
            .await
            .is_ok()
    }

    /// Cuts whatever is still running.
    pub fn force(&self) {
        self.draining.send_replace(true);
        self.forced.send_replace(true);
    }

    /// How many connections and requests are active.
    pub fn active(&self) -> usize {
        *self.active.borrow()
    }
}

impl Drain {
    /// Whether the edge has started to drain.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once draining starts (or the controller is gone).
    pub async fn draining(&self) {
        let mut rx = self.draining.clone();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Resolves once the grace period is over (or the controller is gone).
    pub async fn forced(&self) {
        let mut rx = self.forced.clone();
        let _ = rx.wait_for(|f| *f).await;
    }

    /// Counts the caller as active until the guard drops.
    pub fn track(&self) -> ActiveGuard {
        self.active.send_modify(|n| *n += 1);
        ActiveGuard {
            active: self.active.clone(),
        }
    }
}
