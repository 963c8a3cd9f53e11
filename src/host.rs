//! The host: injectable roots for /sys, /dev and /proc (so tests can use fake
//! trees), and the few libc calls std lacks. Every `unsafe` block is here.

use std::io;

/// The termination signals, blocked in every thread so that only the main
/// thread receives them, synchronously, through [`TerminationSignals::wait`].
pub struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks SIGTERM and SIGINT for this thread and every thread it starts
    /// afterwards (masks are inherited). Call before any thread exists,
    /// in particular before gRPC starts its own.
    pub fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it
        // before pthread_sigmask reads it, and we pass valid pointers.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(TerminationSignals { set })
        }
    }

    /// Waits until SIGTERM or SIGINT arrives; returns its name.
    pub fn wait(&self) -> io::Result<&'static str> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` was initialised in `block`; `sig` is a valid out pointer.
        let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" })
    }
}
