//! The node rules' view of the host: every effect stage, publish, stats and
//! expand have (mount table, sysfs, NVMe attach/detach, probe/mkfs/grow,
//! mount/bind/unmount, targets, markers) behind one trait. [`RealHost`]
//! does them for real through `crate::host`; the unit tests use an
//! in-memory stand-in, so the rules (format only a definite blank, roll
//! back a failed stage unless the device is in use, which mount is whose,
//! idempotent repeats) are tested without root.
//!
//! The trait carries effects and observations only, never a rule: the
//! format decision, for one, is [`crate::host::mount::fs::format_decision`],
//! the same function the real `ensure_filesystem` uses.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::Error;
use crate::host::device::{self, BlockDevice, Depth, Lookup, Namespace, Subsystem, Sysfs};
use crate::host::mount::{self, MountOptions, MountTable, Mounted, Probe};
use crate::host::nvme::{self, Attached, Nvme, Target};
use crate::host::paths::{self, Marker, Role};
use crate::host::sys::FsStats;
use crate::host::DevNum;
use crate::volume::{ConnectionConfig, FsType};

/// The host effects the node rules need. Every method observes or acts
/// once; the rules decide what to call and in which order.
pub trait Host: Send + Sync {
    /// What is mounted at exactly `path` now (the topmost mount), with the
    /// block device behind it.
    fn mounted(&self, path: &Path) -> Result<Option<Mounted>, Error>;
    /// Every mount point that uses block device `dev`, with whether that
    /// mount is read-only.
    fn mount_users(&self, dev: DevNum) -> Result<Vec<(std::path::PathBuf, bool)>, Error>;

    /// The connected subsystem and namespace whose block device is `dev`.
    fn owner(&self, dev: DevNum) -> Result<Option<(Subsystem, Namespace)>, Error>;
    /// Where the NQN stands now.
    fn lookup(&self, nqn: &str) -> Result<Lookup, Error>;
    /// The connected subsystem with this NQN.
    fn subsystem(&self, nqn: &str) -> Result<Option<Subsystem>, Error>;
    /// The current size of block device `name`.
    fn size_bytes(&self, name: &str) -> Result<u64, Error>;
    /// The namespace's device node, when it is there and the device sysfs names.
    fn device_node(&self, ns: &Namespace) -> Result<BlockDevice, device::NodeProblem>;
    /// Where the namespace is in use now, other than at `except`, looked
    /// at as deep as `depth` says; empty means unused (see
    /// [`device::device_users`]).
    fn device_users(&self, ns: &Namespace, except: &[&Path], depth: Depth) -> Result<Vec<String>, Error>;

    /// Connects (or reuses) the target and waits for its device.
    fn attach(&self, target: &Target, conn: &ConnectionConfig) -> Result<Attached, Error>;
    /// Disconnects the NQN and checks it is gone; false when it was not
    /// connected. Never while in use, looked at as deep as `depth` says.
    fn disconnect(&self, nqn: &str, depth: Depth) -> Result<bool, Error>;
    /// Rescans a controller's namespaces (after the RDS grew the disk).
    fn rescan(&self, controller: &str) -> Result<(), Error>;

    /// What is on `device`; `Err` whenever the answer is not certain.
    fn probe(&self, device: &Path) -> Result<Probe, Error>;
    /// Makes a `fs` filesystem on `device` (never forced).
    fn mkfs(&self, device: &Path, fs: FsType) -> Result<(), Error>;
    /// Grows the filesystem mounted at `mount_point` online.
    fn grow(&self, device: &Path, mount_point: &Path, fstype: &str) -> Result<(), Error>;
    /// statvfs of a mounted filesystem.
    fn fs_stats(&self, path: &Path) -> Result<FsStats, Error>;
    /// The size the filesystem on `device` gives itself (its superblock),
    /// when it can be read.
    fn fs_bytes(&self, device: &Path, fs: FsType) -> Option<u64>;

    /// Creates `path` as a directory if missing.
    fn ensure_dir(&self, path: &Path) -> Result<(), Error>;
    /// Creates `path` as an empty file if missing.
    fn ensure_file(&self, path: &Path) -> Result<(), Error>;
    /// Whether anything exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Mounts the filesystem on `device` at `target`.
    fn mount_filesystem(
        &self,
        device: &Path,
        target: &Path,
        fs: FsType,
        options: &MountOptions,
        read_only: bool,
    ) -> Result<(), Error>;
    /// Bind-mounts `from` at `target`, read-only when asked.
    fn bind(&self, from: &Path, target: &Path, read_only: bool) -> Result<(), Error>;
    /// Unmounts the topmost mount at `target`; false when nothing was mounted.
    fn unmount(&self, target: &Path) -> Result<bool, Error>;
    /// Removes `path` when it is an empty directory or file; false when
    /// something else is there.
    fn remove_if_empty(&self, path: &Path) -> Result<bool, Error>;

    /// Writes the `role` marker next to `path`.
    fn write_marker(&self, path: &Path, role: Role, marker: &Marker) -> io::Result<()>;
    /// The `role` marker next to `path`, if there is one in our format.
    fn read_marker(&self, path: &Path, role: Role) -> Option<Marker>;
    /// Removes the `role` marker next to `path`; gone already is fine.
    fn remove_marker(&self, path: &Path, role: Role) -> io::Result<()>;

    /// How long a namespace must stay busy to count as busy (udev's probe
    /// after an unmount is waited out), and how often to look again.
    fn busy_grace(&self) -> (Duration, Duration) {
        (device::BUSY_GRACE, device::BUSY_POLL)
    }
    /// How long a grown namespace may take to show its new size, and how
    /// often to look again.
    fn resize_wait(&self) -> (Duration, Duration) {
        (Duration::from_secs(15), device::POLL_INTERVAL)
    }
}

/// The real host: mountinfo, sysfs and the `nvme` tool under the
/// configured roots, mount(2), blkid and mkfs.
pub struct RealHost {
    nvme: Nvme,
}

impl RealHost {
    pub fn new(nvme: Nvme) -> RealHost {
        RealHost { nvme }
    }

    pub fn nvme(&self) -> &Nvme {
        &self.nvme
    }

    pub fn sysfs(&self) -> &Sysfs {
        self.nvme.sysfs()
    }

    pub fn mount_table(&self) -> Result<MountTable, mount::Error> {
        MountTable::read(self.sysfs().roots())
    }
}

impl Host for RealHost {
    fn mounted(&self, path: &Path) -> Result<Option<Mounted>, Error> {
        Ok(self.mount_table()?.mounted(path))
    }

    fn mount_users(&self, dev: DevNum) -> Result<Vec<(std::path::PathBuf, bool)>, Error> {
        let table = self.mount_table()?;
        Ok(table
            .users_of(dev)
            .into_iter()
            .map(|p| {
                let ro = table.at(&p).is_some_and(|e| e.read_only());
                (p, ro)
            })
            .collect())
    }

    fn owner(&self, dev: DevNum) -> Result<Option<(Subsystem, Namespace)>, Error> {
        Ok(self.sysfs().owner(dev)?)
    }

    fn lookup(&self, nqn: &str) -> Result<Lookup, Error> {
        Ok(self.sysfs().lookup(nqn)?)
    }

    fn subsystem(&self, nqn: &str) -> Result<Option<Subsystem>, Error> {
        Ok(self.sysfs().subsystem(nqn)?)
    }

    fn size_bytes(&self, name: &str) -> Result<u64, Error> {
        Ok(self.sysfs().size_bytes(name)?)
    }

    fn device_node(&self, ns: &Namespace) -> Result<BlockDevice, device::NodeProblem> {
        self.sysfs().device_node(ns)
    }

    fn device_users(&self, ns: &Namespace, except: &[&Path], depth: Depth) -> Result<Vec<String>, Error> {
        let table = self.mount_table()?;
        Ok(device::device_users(self.sysfs(), &table, ns, except, depth)?)
    }

    fn attach(&self, target: &Target, conn: &ConnectionConfig) -> Result<Attached, Error> {
        Ok(self.nvme.attach(target, conn)?)
    }

    fn disconnect(&self, nqn: &str, depth: Depth) -> Result<bool, Error> {
        Ok(self.nvme.disconnect_within(nqn, nvme::DISCONNECT_LIMIT, depth)?)
    }

    fn rescan(&self, controller: &str) -> Result<(), Error> {
        Ok(self.nvme.rescan(controller)?)
    }

    fn probe(&self, device: &Path) -> Result<Probe, Error> {
        Ok(mount::probe(device)?)
    }

    fn mkfs(&self, device: &Path, fs: FsType) -> Result<(), Error> {
        Ok(mount::mkfs(device, fs)?)
    }

    fn grow(&self, device: &Path, mount_point: &Path, fstype: &str) -> Result<(), Error> {
        Ok(mount::grow_filesystem(device, mount_point, fstype)?)
    }

    fn fs_stats(&self, path: &Path) -> Result<FsStats, Error> {
        Ok(mount::stats(path)?)
    }

    fn fs_bytes(&self, device: &Path, fs: FsType) -> Option<u64> {
        mount::filesystem_bytes(device, fs)
    }

    fn ensure_dir(&self, path: &Path) -> Result<(), Error> {
        Ok(mount::ensure_dir(path)?)
    }

    fn ensure_file(&self, path: &Path) -> Result<(), Error> {
        Ok(mount::ensure_file(path)?)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn mount_filesystem(
        &self,
        device: &Path,
        target: &Path,
        fs: FsType,
        options: &MountOptions,
        read_only: bool,
    ) -> Result<(), Error> {
        Ok(mount::mount_filesystem(device, target, fs, options, read_only)?)
    }

    fn bind(&self, from: &Path, target: &Path, read_only: bool) -> Result<(), Error> {
        Ok(mount::bind(from, target, read_only)?)
    }

    fn unmount(&self, target: &Path) -> Result<bool, Error> {
        Ok(mount::unmount(target)?)
    }

    fn remove_if_empty(&self, path: &Path) -> Result<bool, Error> {
        Ok(mount::remove_if_empty(path)?)
    }

    fn write_marker(&self, path: &Path, role: Role, marker: &Marker) -> io::Result<()> {
        paths::write_marker(path, role, marker)
    }

    fn read_marker(&self, path: &Path, role: Role) -> Option<Marker> {
        paths::read_marker(path, role)
    }

    fn remove_marker(&self, path: &Path, role: Role) -> io::Result<()> {
        paths::remove_marker(path, role)
    }
}
