//! Runs external commands (`nvme`, `blkid`, `mkfs.*`, resize tools): the one
//! place the driver spawns processes.
//!
//! Every command gets an explicit argv (never a shell), a cleared environment
//! with a fixed `PATH` and `LC_ALL=C` (we read the tools' messages), stdin
//! from /dev/null, its own process group, and a deadline after which the whole
//! group is killed. stdout and stderr are captured up to a bound; stderr goes
//! into the error. The caller's thread waits in poll(2) on the pipes and a
//! pidfd, so it wakes the moment the child exits: no sleep-polling.
//!
//! No child outlives the plugin or its call: each gets a parent-death
//! signal (SIGKILL; `sys::die_with_parent`), which fires when the thread
//! that spawned it exits. That thread is the caller's, which waits for the
//! child until it has exited or been killed, so the signal fires exactly
//! when the plugin dies under a running command (an mkfs must not go on
//! writing under a restarted plugin that believes the device idle). When
//! the call ends, by exit, deadline or error, whatever is left of the
//! child's process group is killed too.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use log::debug;

use crate::host::sys;

/// The only `PATH` a command sees, and where bare program names are looked up.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// stdout kept per command (`nvme list-subsys -o json` of a busy node fits
/// many times over); more is read and dropped so the child never blocks.
const STDOUT_LIMIT: usize = 4 << 20;
/// stderr kept per command: enough for any tool's complaint.
const STDERR_LIMIT: usize = 64 << 10;
/// After SIGKILL, how long to wait for the child to go. A process stuck in
/// the kernel (an `nvme connect` in uninterruptible sleep) may never go; a
/// thread then reaps it later instead of blocking the call.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What a finished command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a command could not be run, or ran and failed.
#[derive(Debug)]
pub enum Error {
    /// The program is not an executable file, nor found in [`PATH`].
    Resolve {
        program: String,
    },
    Spawn {
        command: String,
        source: io::Error,
    },
    /// Waiting for or reading from the child failed.
    Wait {
        command: String,
        source: io::Error,
    },
    /// The deadline passed; the process group was killed.
    TimedOut {
        command: String,
        after: Duration,
        stderr: String,
    },
    /// It ran and exited non-zero (only from [`run_ok`]).
    Failed {
        command: String,
        code: Option<i32>,
        signal: Option<i32>,
        stdout: String,
        stderr: String,
    },
}

impl Error {
    /// What the command wrote to stderr (empty when it never ran).
    pub fn stderr(&self) -> &str {
        match self {
            Error::TimedOut { stderr, .. } | Error::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::TimedOut { .. })
    }
}

/// At most a few hundred characters of a tool's output, on one line.
fn excerpt(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 400 {
        let cut: String = one_line.chars().take(400).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Resolve { program } => {
                write!(f, "cannot find the program {program:?} (searched {PATH})")
            }
            Error::Spawn { command, .. } => write!(f, "cannot start `{command}`"),
            Error::Wait { command, .. } => write!(f, "cannot wait for `{command}`"),
            Error::TimedOut {
                command,
                after,
                stderr,
            } => {
                write!(
                    f,
                    "`{command}` did not finish within {:.1}s (killed)",
                    after.as_secs_f64()
                )?;
                if !stderr.trim().is_empty() {
                    write!(f, "; stderr: {}", excerpt(stderr))?;
                }
                Ok(())
            }
            Error::Failed {
                command,
                code,
                signal,
                stdout,
                stderr,
            } => {
                match (code, signal) {
                    (Some(c), _) => write!(f, "`{command}` failed with exit code {c}")?,
                    (None, Some(s)) => write!(f, "`{command}` was killed by signal {s}")?,
                    (None, None) => write!(f, "`{command}` failed")?,
                }
                let said = if stderr.trim().is_empty() { stdout } else { stderr };
                if !said.trim().is_empty() {
                    write!(f, ": {}", excerpt(said))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } | Error::Wait { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The file `program` names: itself when it contains a `/` (relative paths
/// are taken as they are), else the first executable match in [`PATH`].
/// `None` when there is none. Cheap: a few stat calls.
pub fn resolve(program: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    if program.is_empty() {
        return None;
    }
    PATH.split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| executable(p))
}

/// The command line as logged and shown in errors.
pub fn describe<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Runs `program` with `args` and returns how it ended, whatever its exit
/// code (callers that care about specific codes, like `blkid`, look at it).
/// `Err` only when it could not run or passed `timeout`.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S], timeout: Duration) -> Result<Output, Error> {
    run_watched(program, args, timeout, true)
}

fn run_watched<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
    use_pidfd: bool,
) -> Result<Output, Error> {
    let started = Instant::now();
    let command = describe(program, args);
    let path = resolve(program).ok_or_else(|| Error::Resolve {
        program: program.to_string(),
    })?;
    let mut cmd = std::process::Command::new(&path);
    cmd.args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0);
    // Spawned (and then waited for) on this thread: the parent-death
    // signal follows this thread's life, which spans the whole wait.
    sys::die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    let result = supervise(child, &command, started, timeout, use_pidfd);
    match &result {
        Ok(out) => debug!(
            "exec `{command}`: exit {} in {:.1}ms",
            out.code
                .map_or_else(|| format!("signal {:?}", out.signal), |c| c.to_string()),
            out.elapsed.as_secs_f64() * 1000.0
        ),
        Err(e) => debug!("exec `{command}`: {e}"),
    }
    result
}

/// [`run`], and a non-zero exit is an [`Error::Failed`] carrying stderr.
pub fn run_ok<S: AsRef<OsStr>>(program: &str, args: &[S], timeout: Duration) -> Result<Output, Error> {
    let out = run(program, args, timeout)?;
    if out.success() {
        Ok(out)
    } else {
        Err(Error::Failed {
            command: describe(program, args),
            code: out.code,
            signal: out.signal,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// How we learn that the child exited: a pidfd (Linux 5.3+), or, where the
/// kernel has none, a thread that waits and then writes to a socket pair.
enum ExitWatch {
    PidFd(std::os::fd::OwnedFd),
    Thread {
        wake: UnixStream,
        status: mpsc::Receiver<io::Result<ExitStatus>>,
    },
}

/// One captured output stream.
struct Capture<R> {
    pipe: Option<R>,
    data: Vec<u8>,
    limit: usize,
}

impl<R: Read + AsRawFd> Capture<R> {
    fn new(pipe: Option<R>, limit: usize) -> Self {
        Capture {
            pipe,
            data: Vec::new(),
            limit,
        }
    }

    fn fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(|p| p.as_raw_fd())
    }

    /// Reads what is available now; closes the capture at end of file.
    fn drain(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else { return };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = self.limit.saturating_sub(self.data.len());
                    self.data.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pipe = None;
                    return;
                }
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

fn supervise(
    mut child: Child,
    command: &str,
    started: Instant,
    timeout: Duration,
    use_pidfd: bool,
) -> Result<Output, Error> {
    let wait_err = |source| Error::Wait {
        command: command.to_string(),
        source,
    };
    let pid = child.id();
    let mut out = Capture::new(child.stdout.take(), STDOUT_LIMIT);
    let mut err = Capture::new(child.stderr.take(), STDERR_LIMIT);
    for fd in [
        &out.pipe.as_ref().map(|p| p.as_fd()),
        &err.pipe.as_ref().map(|p| p.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        if let Err(e) = sys::set_nonblocking(fd) {
            let _ = sys::kill_process_group(pid);
            let _ = child.wait();
            return Err(wait_err(e));
        }
    }
    let pidfd = if use_pidfd {
        sys::pidfd_open(pid)
    } else {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    };
    let (watch, mut child) = match pidfd {
        Ok(fd) => (ExitWatch::PidFd(fd), Some(child)),
        Err(_) => {
            let (wake, tell) = match UnixStream::pair() {
                Ok(pair) => pair,
                Err(e) => {
                    kill_and_reap(child, pid);
                    return Err(wait_err(e));
                }
            };
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait());
                // Wakes the poll below; the byte itself means nothing.
                let _ = (&tell).write_all(&[1]);
            });
            (ExitWatch::Thread { wake, status: rx }, None)
        }
    };
    let watch_fd = match &watch {
        ExitWatch::PidFd(fd) => fd.as_raw_fd(),
        ExitWatch::Thread { wake, .. } => wake.as_raw_fd(),
    };
    let deadline = started + timeout;
    let exited = loop {
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        let mut fds = vec![watch_fd];
        fds.extend(out.fd());
        fds.extend(err.fd());
        let ready = match sys::poll_readable(&fds, deadline - now) {
            Ok(ready) => ready,
            Err(e) => {
                // Never leave the child running behind a failed wait.
                let _ = sys::kill_process_group(pid);
                if let Some(c) = child.take() {
                    kill_and_reap(c, pid);
                }
                return Err(wait_err(e));
            }
        };
        // Read the pipes on every wake-up so a chatty child never blocks on a full pipe.
        out.drain();
        err.drain();
        if ready.first().copied().unwrap_or(false) {
            break true;
        }
    };
    if !exited {
        let _ = sys::kill_process_group(pid);
        let gone = match &watch {
            ExitWatch::PidFd(fd) => sys::poll_readable(&[fd.as_raw_fd()], KILL_GRACE)
                .map(|r| r[0])
                .unwrap_or(false),
            ExitWatch::Thread { status, .. } => status.recv_timeout(KILL_GRACE).is_ok(),
        };
        if let Some(mut c) = child.take() {
            if gone {
                let _ = c.wait();
            } else {
                // Stuck in the kernel: reap it whenever it finally goes.
                std::thread::spawn(move || {
                    let _ = c.wait();
                });
            }
        }
        err.drain();
        return Err(Error::TimedOut {
            command: command.to_string(),
            after: started.elapsed(),
            stderr: err.text(),
        });
    }
    // Whatever the child wrote before exiting is in the pipes now; a
    // grandchild that kept them open is not waited for.
    out.drain();
    err.drain();
    let status = match (&watch, child.take()) {
        (ExitWatch::PidFd(_), Some(mut c)) => {
            // The call ends: what is left of its process group goes too.
            // The leader is not reaped yet, so the group id cannot have
            // been reused by an unrelated process.
            let _ = sys::kill_process_group(pid);
            c.wait().map_err(wait_err)?
        }
        (ExitWatch::Thread { status, .. }, _) => status
            .recv()
            .map_err(|_| wait_err(io::Error::other("the waiting thread vanished")))?
            .map_err(wait_err)?,
        (ExitWatch::PidFd(_), None) => {
            return Err(wait_err(io::Error::other("child handle missing")));
        }
    };
    Ok(Output {
        code: status.code(),
        signal: status.signal(),
        stdout: out.text(),
        stderr: err.text(),
        elapsed: started.elapsed(),
    })
}

/// Kills the child's process group and reaps the child, on a thread of
/// its own should it not go at once (stuck in the kernel).
fn kill_and_reap(mut child: Child, pgid: u32) {
    let _ = sys::kill_process_group(pgid);
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// The parent-death signal: a child whose spawning thread exits gets
    /// SIGKILL (a plugin killed with -9 loses every thread at once).
    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("60").stdin(Stdio::null());
            sys::die_with_parent(&mut cmd);
            tx.send(cmd.spawn().unwrap()).unwrap();
            // The thread ends here, with the child still running.
        })
        .join()
        .unwrap();
        let mut child = rx.recv().unwrap();
        let started = Instant::now();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(started.elapsed() < 30 * SECOND, "{:?}", started.elapsed());
        // Without it, the same child outlives its thread.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            tx.send(std::process::Command::new("sleep").arg("60").spawn().unwrap())
                .unwrap();
        })
        .join()
        .unwrap();
        let mut control = rx.recv().unwrap();
        assert!(control.try_wait().unwrap().is_none());
        control.kill().unwrap();
        control.wait().unwrap();
    }

    #[test]
    fn leftovers_of_the_group_are_killed_when_the_call_ends() {
        let dir = std::env::temp_dir().join(format!(
            "rds-csi-exec-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        // The grandchild writes its pid and lives on after sh exits.
        let script = format!(
            "sleep 60 </dev/null >/dev/null 2>&1 & echo $! > {}",
            pidfile.display()
        );
        let out = run("sh", &["-c", &script], 20 * SECOND).unwrap();
        assert!(out.success());
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let started = Instant::now();
        loop {
            // Gone, or a zombie waiting for init to reap it.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(
                started.elapsed() < 20 * SECOND,
                "grandchild {pid} still running: {stat}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn captures_exit_code_stdout_and_stderr() {
        let out = run("sh", &["-c", "echo out; echo err >&2; exit 3"], 10 * SECOND).unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(!out.success());
        assert!(run("true", &[] as &[&str], 10 * SECOND).unwrap().success());
    }

    #[test]
    fn run_ok_puts_stderr_into_the_error() {
        let e = run_ok(
            "sh",
            &["-c", "echo 'could not add new controller' >&2; exit 1"],
            10 * SECOND,
        )
        .unwrap_err();
        assert_eq!(e.stderr().trim(), "could not add new controller");
        let msg = e.to_string();
        assert!(
            msg.contains("exit code 1") && msg.contains("could not add new controller"),
            "{msg}"
        );
    }

    #[test]
    fn the_environment_is_cleared_but_for_path_and_locale() {
        let out = run("env", &[] as &[&str], 10 * SECOND).unwrap();
        let mut lines: Vec<&str> = out.stdout.lines().collect();
        lines.sort();
        assert_eq!(lines, vec!["LC_ALL=C".to_string(), format!("PATH={PATH}")]);
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group_promptly() {
        let started = Instant::now();
        // The background sleep holds stdout open: the group kill must end it too.
        let e = run(
            "sh",
            &["-c", "sleep 30 & echo started >&2; sleep 30"],
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.is_timeout(), "{e}");
        assert!(started.elapsed() < 10 * SECOND, "{:?}", started.elapsed());
        assert!(e.to_string().contains("started"), "{e}");
    }

    #[test]
    fn returns_when_the_child_exits_even_if_a_grandchild_keeps_the_pipes() {
        let started = Instant::now();
        let out = run("sh", &["-c", "sleep 5 & echo done"], 20 * SECOND).unwrap();
        assert_eq!(out.stdout, "done\n");
        assert!(started.elapsed() < 4 * SECOND, "{:?}", started.elapsed());
    }

    #[test]
    fn without_a_pidfd_a_waiting_thread_does_the_same() {
        let out = run_watched("sh", &["-c", "sleep 5 & echo out; exit 4"], 20 * SECOND, false).unwrap();
        assert_eq!((out.code, out.stdout.as_str()), (Some(4), "out\n"));
        assert!(out.elapsed < 4 * SECOND, "{:?}", out.elapsed);
        let e = run_watched("sleep", &["30"], Duration::from_millis(200), false).unwrap_err();
        assert!(e.is_timeout(), "{e}");
    }

    #[test]
    fn output_is_bounded() {
        let out = run("head", &["-c", "10000000", "/dev/zero"], 30 * SECOND).unwrap();
        assert!(out.success());
        assert_eq!(out.stdout.len(), STDOUT_LIMIT);
    }

    #[test]
    fn programs_resolve_through_the_fixed_path_or_as_given() {
        assert!(resolve("sh").is_some());
        assert_eq!(resolve("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve("no-such-program-rds-csi"), None);
        assert_eq!(resolve("/etc/hostname-not-there"), None);
        assert_eq!(resolve(""), None);
        let e = run("no-such-program-rds-csi", &["x"], SECOND).unwrap_err();
        assert!(matches!(e, Error::Resolve { .. }), "{e}");
    }

    #[test]
    fn a_quick_command_is_not_slowed_by_polling() {
        // Lower than any sleep-poll interval worth having; generous for a busy machine.
        let out = run("true", &[] as &[&str], 10 * SECOND).unwrap();
        assert!(out.elapsed < Duration::from_millis(500), "{:?}", out.elapsed);
    }
}
