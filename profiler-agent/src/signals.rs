//! Signals of the agent's commands: SIGINT/SIGTERM ask to stop (the work done so far is still
//! written or sent), SIGCHLD wakes a sleep early so a finished command is noticed at once.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// Set by SIGINT or SIGTERM: end the recording (and still write the profile).
static STOP: AtomicBool = AtomicBool::new(false);
/// Set by SIGCHLD: the command may have exited, check now rather than at the next drain.
static CHILD_EXITED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if signal == libc::SIGCHLD {
        CHILD_EXITED.store(true, Ordering::SeqCst);
    } else {
        STOP.store(true, Ordering::SeqCst);
    }
}

/// Installs the handlers.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps for `duration`, waking early on a stop request or a child's exit.
pub fn sleep(duration: Duration) {
    let deadline = Instant::now() + duration;
    while !STOP.load(Ordering::SeqCst) && !CHILD_EXITED.swap(false, Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}
