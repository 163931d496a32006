//! Memory given back to the system once idle connections have freed their buffers: the
//! allocator (glibc's) keeps freed chunks resident when longer-lived objects sit between
//! them, so after many connections park a worker asks it to return the free pages.

use std::cell::Cell;

use crate::limits::{GIVE_BACK_EVERY, PARKED_BYTES_BEFORE_TRIM};

thread_local! {
    /// Bytes of buffers freed on this thread since memory was last given back.
    static FREED: Cell<usize> = const { Cell::new(0) };
}

/// Notes that about `bytes` of buffers were freed on this thread.
pub fn note_freed(bytes: usize) {
    FREED.with(|f| f.set(f.get().saturating_add(bytes)));
}

/// Runs on a worker for its life: once a period, if enough was freed since the last time,
/// returns the allocator's free pages to the system.
pub async fn give_back_periodically() {
    let mut tick = tokio::time::interval(GIVE_BACK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if FREED.with(|f| f.get()) >= PARKED_BYTES_BEFORE_TRIM {
            FREED.with(|f| f.set(0));
            give_back();
        }
    }
}

/// Returns the allocator's free pages to the system now.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn give_back() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the allocator's free pages to the system now (nothing to do here).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back() {}
