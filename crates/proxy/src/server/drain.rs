//! Draining: a worker's open connections and the stop signal each watches, and the
//! retirement of one listener version whose configuration was replaced or removed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// The connections of one worker, for a drain: how many are open, and the stop signal
/// each watches.
#[derive(Clone)]
pub struct Drain {
    shutdown: watch::Receiver<bool>,
    open: Rc<Cell<usize>>,
    closed: Rc<Notify>,
}

impl Drain {
    /// Counts the connections of a worker stopped by `shutdown`.
    pub fn new(shutdown: watch::Receiver<bool>) -> Drain {
        Drain { shutdown, open: Rc::default(), closed: Rc::default() }
    }

    /// A connection opened.
    pub fn opened(&self) {
        self.open.set(self.open.get() + 1);
    }

    /// A connection closed.
    pub fn closed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        self.closed.notify_waiters();
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        while self.open.get() > 0 {
            let notified = self.closed.notified();
            if self.open.get() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when the server is told to stop.
    pub async fn stopping(&self) {
        let mut rx = self.shutdown.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The end of one version of a listener on one worker (its configuration was replaced or
/// removed), as Envoy drains a listener: its connections are told to finish (HTTP/1.1
/// closes after the response in flight, HTTP/2 sends GOAWAY) and are closed once the drain
/// time has passed.
#[derive(Default)]
pub struct Retirement {
    deadline: Cell<Option<Instant>>,
    notify: Notify,
}

impl Retirement {
    /// Starts the drain: connections have `drain_time` to finish.
    pub fn retire(&self, drain_time: Duration) {
        if self.deadline.get().is_none() {
            self.deadline.set(Some(Instant::now() + drain_time));
            self.notify.notify_waiters();
        }
    }

    /// Resolves once the drain has started.
    pub async fn started(&self) {
        loop {
            let notified = self.notify.notified();
            if self.deadline.get().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the drain time is over: connections still open are closed.
    pub async fn over(&self) {
        self.started().await;
        if let Some(deadline) = self.deadline.get() {
            tokio::time::sleep_until(deadline).await;
        }
    }
}
