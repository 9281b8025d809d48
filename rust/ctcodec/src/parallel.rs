//! Whether the rayon pool may be used. A process forked after the pool started has the
//! pool's bookkeeping but none of its threads, so parallel work would wait forever;
//! hosts that fork (Python's multiprocessing, data-loader workers) call [`disable`] in
//! the child, and everything then runs on the calling thread.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Runs all later work on the calling thread. Async-signal-safe (one atomic store), so
/// it may be called from a `pthread_atfork` child handler.
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}
