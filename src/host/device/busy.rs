//! Whether a namespace is in use: mounts of it or its partitions, devices
//! stacked on it, processes holding it open, and the kernel's answer to an
//! exclusive open. Nothing is disconnected while any of these says busy.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use super::{Error, Namespace, Sysfs};
use crate::host::mount::MountTable;
use crate::host::DevNum;

/// A namespace is busy only when it stays busy this long: a short-lived
/// opener (udev probing the device after an unmount or mkfs) is waited
/// out, a mount or a running mkfs is not.
pub const BUSY_GRACE: Duration = Duration::from_secs(2);
/// How often a busy namespace is looked at again within [`BUSY_GRACE`].
pub const BUSY_POLL: Duration = Duration::from_millis(50);

/// How long the exclusive-open probe may take: opening a namespace whose
/// controller is gone can block in the kernel. No answer in time counts as
/// busy (we could not show it is not).
const EXCLUSIVE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Sysfs {
    /// Processes that hold the block device `dev` open now: a scan of
    /// `<proc>/<pid>/fd`. Only descriptors whose link names a path under
    /// `/dev/` or the dev root are stat'ed (a stat of an arbitrary file
    /// could hang on a dead network filesystem); the stat follows the
    /// descriptor itself, so a process in another mount namespace counts
    /// too. Each user is described as `open by pid N (comm)`.
    pub fn open_by(&self, dev: DevNum) -> Vec<String> {
        let proc_root = &self.roots.proc;
        let dev_root = &self.roots.dev;
        let Ok(pids) = fs::read_dir(proc_root) else {
            return Vec::new();
        };
        let mut users = Vec::new();
        for pid in pids.filter_map(|e| e.ok()) {
            let name = pid.file_name();
            let Some(pid_text) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            let fd_dir = pid.path().join("fd");
            // Gone, or not ours to read: skipped.
            let Ok(fds) = fs::read_dir(&fd_dir) else { continue };
            for fd in fds.filter_map(|e| e.ok()) {
                let link = fd.path();
                let Ok(to) = fs::read_link(&link) else { continue };
                if !(to.starts_with("/dev/") || to.starts_with(dev_root)) {
                    continue;
                }
                let holds = fs::metadata(&link)
                    .map(|m| m.file_type().is_block_device() && DevNum::from_raw(m.rdev()) == dev)
                    .unwrap_or(false);
                if holds {
                    let comm = fs::read_to_string(pid.path().join("comm")).unwrap_or_default();
                    users.push(format!("open by pid {pid_text} ({})", comm.trim()));
                    break;
                }
            }
        }
        users
    }

    /// The exclusive-open probe: opens the namespace's device node with
    /// O_EXCL, which the kernel refuses with EBUSY while the device is
    /// mounted or held exclusively (mkfs, device-mapper, another
    /// exclusive opener). `Some(why)` when it is (or the probe could not
    /// tell); `None` when the exclusive open succeeded (and was closed) or
    /// there is no device node to open.
    pub fn exclusive_probe(&self, ns: &Namespace) -> Option<String> {
        let node = self.device_node(ns).ok()?;
        let path = node.path.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("excl-probe".into())
            .spawn(move || {
                use std::os::unix::fs::OpenOptionsExt;
                let opened = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_EXCL | libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(&path);
                let _ = tx.send(opened.map(drop));
            });
        if spawned.is_err() {
            return Some(format!("{}: cannot start the exclusive-open probe", ns.name));
        }
        match rx.recv_timeout(EXCLUSIVE_PROBE_TIMEOUT) {
            Ok(Ok(())) => None,
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EBUSY) => Some(format!(
                "{} is held exclusively (mounted, or opened by mkfs, device-mapper, ...)",
                ns.name
            )),
            // No such device (gone meanwhile, or a node without a driver
            // behind it): nobody can hold it.
            Ok(Err(e))
                if e.kind() == io::ErrorKind::NotFound
                    || matches!(e.raw_os_error(), Some(libc::ENXIO) | Some(libc::ENODEV)) =>
            {
                None
            }
            Ok(Err(e)) => Some(format!("{}: the exclusive-open probe failed ({e})", ns.name)),
            Err(_) => Some(format!(
                "{}: the exclusive-open probe did not answer within {}s",
                ns.name,
                EXCLUSIVE_PROBE_TIMEOUT.as_secs()
            )),
        }
    }

    /// Everything that keeps namespace `ns` busy, mounts included (the
    /// exclusive probe sees those): devices stacked on it, processes with
    /// it open (with [`Depth::Full`]), and an exclusive open that fails.
    /// Empty means a disconnect pulls the device from under nobody.
    pub fn busy(&self, ns: &Namespace, depth: Depth) -> Result<Vec<String>, Error> {
        let mut users: Vec<String> = self
            .holders(&ns.name)?
            .into_iter()
            .map(|h| format!("{} held by {h}", ns.name))
            .collect();
        if depth == Depth::Full {
            users.extend(
                self.open_by(ns.dev)
                    .into_iter()
                    .map(|u| format!("{} {u}", ns.name)),
            );
        }
        if users.is_empty() {
            users.extend(self.exclusive_probe(ns));
        }
        Ok(users)
    }
}

/// How far [`device_users`] looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Everything, the processes holding the device open included.
    Full,
    /// All but the scan of every process's open descriptors, for a second
    /// look moments after a full one. The scan is the costly part: a
    /// directory read per process and a readlink per descriptor, tens of
    /// milliseconds on a busy node. A process that opened the device since
    /// the full look is the same race as one that opens it between any
    /// look and the disconnect.
    NoProcessScan,
}

/// Where a namespace's device is in use: mount points of it or of its
/// partitions (other than `except`), the devices stacked on it, the
/// processes that hold it open (with [`Depth::Full`]), and, when nothing
/// else was found and no mount is excepted, an exclusive open that the
/// kernel refuses (mounted elsewhere, or held by mkfs or device-mapper).
/// Empty means unused.
pub fn device_users(
    sysfs: &Sysfs,
    table: &MountTable,
    ns: &Namespace,
    except: &[&Path],
    depth: Depth,
) -> Result<Vec<String>, Error> {
    let mut users: Vec<String> = table
        .users_of(ns.dev)
        .into_iter()
        .filter(|p| !except.contains(&p.as_path()))
        .map(|p| format!("mounted at {}", p.display()))
        .collect();
    for (part, dev) in sysfs.partitions(&ns.name)? {
        users.extend(
            table
                .users_of(dev)
                .into_iter()
                .map(|p| format!("{part} mounted at {}", p.display())),
        );
    }
    users.extend(
        sysfs
            .holders(&ns.name)?
            .into_iter()
            .map(|h| format!("held by {h}")),
    );
    if depth == Depth::Full {
        users.extend(sysfs.open_by(ns.dev));
    }
    // With a mount excepted, the exclusive open fails because of that very
    // mount: only asked when the device should be free.
    if users.is_empty() && except.is_empty() {
        users.extend(sysfs.exclusive_probe(ns));
    }
    Ok(users)
}
