//! Signals of the agent's commands: SIGINT/SIGTERM ask to stop (the work done so far is still
//! written or sent), SIGCHLD wakes a sleep early so a finished command is noticed at once.

use std::{
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
    time::{Duration, Instant},
};

/// Set by SIGINT or SIGTERM: end the recording (and still write the profile).
static STOP: AtomicBool = AtomicBool::new(false);
/// Set by SIGCHLD: the command may have exited, check now rather than at the next drain.
static CHILD_EXITED: AtomicBool = AtomicBool::new(false);
/// Both ends of a non-blocking pipe the handler writes a byte to, so [`sleep`] wakes at once
/// without waking up on a timer to look at the flags (-1 before [`install`]).
static WAKE_READ: AtomicI32 = AtomicI32::new(-1);
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    if signal == libc::SIGCHLD {
        CHILD_EXITED.store(true, Ordering::SeqCst);
    } else {
        STOP.store(true, Ordering::SeqCst);
    }
    let fd = WAKE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) on a non-blocking pipe is async-signal-safe; errno is saved and
        // restored around it so the interrupted code does not see it change. A full pipe
        // (EAGAIN) already holds a wake-up.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, [1u8].as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Installs the handlers.
pub fn install() {
    if WAKE_READ.load(Ordering::SeqCst) < 0 {
        let mut fds = [-1; 2];
        // SAFETY: pipe2 fills the two-element array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } == 0 {
            WAKE_READ.store(fds[0], Ordering::SeqCst);
            WAKE_WRITE.store(fds[1], Ordering::SeqCst);
        }
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
        // SAFETY: the handler only stores to atomics and writes to a pipe, which is
        // async-signal-safe.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Blocks until `fd` is readable or `timeout` passes (rounded up to a millisecond, so a short
/// wait does not spin; a signal ends it early); returns whether `fd` is readable. Also how the
/// HTTP capture sleeps on its ring buffer.
pub fn wait_readable(fd: libc::c_int, timeout: Duration) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, living across the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, ms) };
    ready > 0 && pollfd.revents & libc::POLLIN != 0
}

/// Sleeps for `duration`, waking early on a stop request or a child's exit.
pub fn sleep(duration: Duration) {
    let deadline = Instant::now() + duration;
    let wake = WAKE_READ.load(Ordering::SeqCst);
    while !STOP.load(Ordering::SeqCst) && !CHILD_EXITED.swap(false, Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let left = deadline - now;
        if wake < 0 {
            // No pipe (install failed or was not called): look at the flags now and then.
            std::thread::sleep(left.min(Duration::from_millis(50)));
            continue;
        }
        if wait_readable(wake, left) {
            let mut drain = [0u8; 64];
            // SAFETY: reads into a local buffer of that size; the pipe is non-blocking.
            while unsafe { libc::read(wake, drain.as_mut_ptr().cast(), drain.len()) } > 0 {}
        }
    }
}
