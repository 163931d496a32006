//! Whether this thread's worker is being torn down: its event loop has stopped and the
//! connections still open are dropped with it, so what they drop runs no more plugin code
//! (which could start callouts on a loop that is gone).

use std::cell::Cell;

thread_local! {
    static STOPPED: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread's worker as stopped (its event loop has ended).
pub fn mark_stopped() {
    STOPPED.set(true);
}

/// Whether this thread's worker has stopped.
pub fn stopped() -> bool {
    STOPPED.get()
}
