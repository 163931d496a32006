//! This proxy's own health as the admin sets it (`/healthcheck/fail`, `/healthcheck/ok`):
//! what the health check filter answers.

use std::sync::atomic::{AtomicBool, Ordering};

static FAILING: AtomicBool = AtomicBool::new(false);

/// Whether the admin made this proxy fail health checks.
pub fn failing() -> bool {
    FAILING.load(Ordering::Relaxed)
}

/// Makes this proxy fail health checks (`true`) or pass them.
pub fn set_failing(failing: bool) {
    FAILING.store(failing, Ordering::Relaxed);
}
