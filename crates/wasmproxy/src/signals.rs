//! SIGTERM and SIGINT: the server stops accepting, lets what it accepted finish (up to
//! `--drain-time-s`), then the process exits 0. Envoy exits at once on SIGTERM; wasmproxy
//! drains, so no request it accepted is cut.

use wasmproxy_proxy::Stopper;

/// The signals that stop the server, blocked in this thread (and so in every thread
/// started after it) so that one thread can wait for them.
pub struct Termination(libc::sigset_t);

/// Blocks SIGTERM and SIGINT; call it before any other thread starts.
pub fn block_termination() -> Termination {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only
    // changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        Termination(set)
    }
}

/// Waits for SIGTERM or SIGINT on a thread of its own, then stops the server.
pub fn stop_on_termination(signals: Termination, stopper: Stopper) {
    let spawned = std::thread::Builder::new().name("wasmproxy-signals".into()).spawn(move || {
        let mut signal: libc::c_int = 0;
        // SAFETY: the set is a valid, initialised sigset_t; sigwait writes the signal number.
        if unsafe { libc::sigwait(&signals.0, &mut signal) } == 0 {
            let name = if signal == libc::SIGTERM { "SIGTERM" } else { "SIGINT" };
            tracing::warn!("caught {name}: draining, then exiting");
            stopper.stop();
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot wait for SIGTERM: {e}");
    }
}
