//! The few libc calls std lacks (signals, umask, mount, statvfs, pidfd/poll
//! for `exec`). Every `unsafe` block of the driver is here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

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

/// umask(2): sets the process file-mode creation mask, returns the old one.
pub fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: umask only swaps the process file-mode mask; no memory involved.
    unsafe { libc::umask(mask) }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// mount(2). `source` None passes NULL (remounts); `fstype`/`data` likewise.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstring).transpose()?;
    let target = cstring(target)?;
    let fstype = fstype
        .map(|s| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
        .transpose()?;
    let data = data
        .map(|s| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
        .transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either NULL or a NUL-terminated string that
    // outlives the call; mount(2) does not keep them.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data) as *const libc::c_void,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// umount2(2) with `flags` (0, or `libc::MNT_DETACH` for test clean-up).
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstring(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What statvfs(3) says about a mounted filesystem, in bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
    pub read_only: bool,
}

/// statvfs(3) of the filesystem at `path`.
pub fn statvfs(path: &Path) -> io::Result<FsStats> {
    let c = cstring(path)?;
    // SAFETY: statvfs is plain data; the call fills it through a valid
    // pointer and reads the NUL-terminated path only during the call.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    let free = st.f_bfree as u64 * frsize;
    Ok(FsStats {
        total_bytes: total,
        available_bytes: st.f_bavail as u64 * frsize,
        used_bytes: total.saturating_sub(free),
        total_inodes: st.f_files as u64,
        free_inodes: st.f_ffree as u64,
        used_inodes: (st.f_files as u64).saturating_sub(st.f_ffree as u64),
        read_only: st.f_flag & libc::ST_RDONLY != 0,
    })
}

// ---------------------------------------------------------------------------
// Process plumbing for `exec`
// ---------------------------------------------------------------------------

/// A file descriptor that becomes readable when process `pid` exits
/// (pidfd_open(2), Linux 5.3+). `Err` on older kernels: the caller falls back.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // (or -1); no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Makes reads from `fd` return `WouldBlock` instead of waiting.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller owns; F_GETFL/F_SETFL touch
    // only its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// poll(2) for readability (input or hang-up) of `fds`, waiting at most
/// `timeout`. Returns, per descriptor, whether it is ready.
pub fn poll_readable(fds: &[RawFd], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // Round up so a sub-millisecond remainder does not spin.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs
        // that lives across the call.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if rc >= 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(pfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0)
        .collect())
}

/// Makes the child that `cmd` starts receive SIGKILL when its parent goes:
/// the parent-death signal, set with prctl(PR_SET_PDEATHSIG) between fork
/// and exec. It fires when the *thread* that spawned the child exits, so
/// spawn from a thread that waits for the child (as `exec` does). If the
/// parent died before the prctl took effect, the child is already an
/// orphan and no signal would ever come: it then does not exec at all.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe work is allowed: it makes two system calls (prctl,
    // getppid) and builds its error from a raw errno, without allocating
    // or taking locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Sends SIGKILL to every process in process group `pgid`.
pub fn kill_process_group(pgid: u32) -> io::Result<()> {
    // SAFETY: kill(2) with a negative pid signals that process group; no
    // memory is involved.
    let rc = unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGKILL) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
