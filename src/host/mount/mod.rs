//! Filesystems on the host, by concern: `table` (the mount table from
//! `<proc>/self/mountinfo`, exact mount points), `fs` (the format-or-not
//! probe, mkfs, online resize, statvfs) and `ops` (mount/bind/unmount
//! through mount(2)); one error type for all three.
//!
//! A device is formatted only on a definite "no signature": we opened and
//! read it ourselves, and `blkid -p` answered "nothing found" (exit code 2,
//! no output). A probe that fails, times out, or finds anything at all is
//! never followed by mkfs, and mkfs is never given a force flag.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::echo::echo;
use crate::host::exec;
use crate::volume::FsType;

pub mod fs;
pub mod ops;
pub mod table;

/// A fresh folder for a test of the mount code (the tests of `fs` and
/// `ops` share it).
#[cfg(test)]
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rds-csi-mount-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub use fs::{
    ensure_filesystem, filesystem_bytes, format_decision, grow_filesystem, interpret_blkid, mkfs, probe,
    stats, superblock_bytes, Probe, UnclearAnswer,
};
pub use ops::{bind, ensure_dir, ensure_file, mount_filesystem, remove_if_empty, unmount, MountOptions};
pub use table::{canonical, parse_mountinfo, MountEntry, MountTable, Mounted};

#[derive(Debug)]
pub enum Error {
    ReadMountTable {
        path: PathBuf,
        source: io::Error,
    },
    OpenDevice {
        device: PathBuf,
        source: io::Error,
    },
    ReadDevice {
        device: PathBuf,
        source: io::Error,
    },
    /// blkid could not run, timed out, or failed.
    Probe {
        device: PathBuf,
        source: Box<exec::Error>,
    },
    /// blkid answered something we cannot read as yes or no.
    ProbeUnclear {
        device: PathBuf,
        answer: fs::UnclearAnswer,
    },
    /// The device holds a signature that is not a filesystem we mount
    /// (a partition table, swap, LVM, ...): left alone.
    ForeignSignature {
        device: PathBuf,
        found: String,
    },
    /// A blank device where formatting is not allowed (read-only access).
    Unformatted {
        device: PathBuf,
    },
    /// The device holds a filesystem other than the one asked for.
    OtherFilesystem {
        device: PathBuf,
        found: String,
        wanted: FsType,
    },
    Format {
        device: PathBuf,
        fs: FsType,
        source: Box<exec::Error>,
    },
    BadMountFlag {
        flag: String,
        why: &'static str,
    },
    Mount {
        device: PathBuf,
        target: PathBuf,
        fs: FsType,
        source: io::Error,
    },
    Bind {
        from: PathBuf,
        target: PathBuf,
        source: io::Error,
    },
    RemountReadOnly {
        target: PathBuf,
        source: io::Error,
    },
    Unmount {
        target: PathBuf,
        source: io::Error,
    },
    CreateTarget {
        path: PathBuf,
        source: io::Error,
    },
    RemoveTarget {
        path: PathBuf,
        source: io::Error,
    },
    Stat {
        path: PathBuf,
        source: io::Error,
    },
    Resize {
        device: PathBuf,
        fs: String,
        source: Box<exec::Error>,
    },
    UnsupportedResize {
        target: PathBuf,
        fs: String,
    },
}

/// A path for a message: targets come from requests, so bounded and escaped.
fn shown(path: &Path) -> String {
    echo(&path.to_string_lossy()).to_string()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReadMountTable { path, .. } => write!(f, "cannot read the mount table {}", shown(path)),
            Error::OpenDevice { device, .. } => write!(f, "cannot open {} to probe it", shown(device)),
            Error::ReadDevice { device, .. } => write!(f, "cannot read {} to probe it", shown(device)),
            Error::Probe { device, .. } => write!(
                f,
                "cannot tell whether {} holds a filesystem (not formatting it)",
                shown(device)
            ),
            Error::ProbeUnclear { device, answer } => write!(
                f,
                "unclear probe answer for {} (not formatting it): {answer}",
                shown(device)
            ),
            Error::ForeignSignature { device, found } => write!(
                f,
                "{} holds {found}, not an ext4 or xfs filesystem; leaving it alone",
                shown(device)
            ),
            Error::Unformatted { device } => write!(
                f,
                "{} holds no filesystem and the volume is read-only: not formatting it",
                shown(device)
            ),
            Error::OtherFilesystem {
                device,
                found,
                wanted,
            } => write!(
                f,
                "{} holds a {found} filesystem but the volume asks for {wanted}; not reformatting it",
                shown(device)
            ),
            Error::Format { device, fs, .. } => {
                write!(f, "cannot make a {fs} filesystem on {}", shown(device))
            }
            Error::BadMountFlag { flag, why } => write!(f, "mount flag {}: {why}", echo(flag)),
            Error::Mount {
                device, target, fs, ..
            } => write!(f, "cannot mount {} ({fs}) at {}", shown(device), shown(target)),
            Error::Bind { from, target, .. } => {
                write!(f, "cannot bind-mount {} at {}", shown(from), shown(target))
            }
            Error::RemountReadOnly { target, .. } => {
                write!(f, "cannot make the bind mount at {} read-only", shown(target))
            }
            Error::Unmount { target, .. } => write!(f, "cannot unmount {}", shown(target)),
            Error::CreateTarget { path, .. } => write!(f, "cannot create {}", shown(path)),
            Error::RemoveTarget { path, .. } => write!(f, "cannot remove {}", shown(path)),
            Error::Stat { path, .. } => write!(f, "cannot stat {}", shown(path)),
            Error::Resize { device, fs, .. } => {
                write!(f, "cannot grow the {fs} filesystem on {}", shown(device))
            }
            Error::UnsupportedResize { target, fs } => {
                write!(
                    f,
                    "cannot grow the {fs} filesystem at {}: only ext4 and xfs",
                    shown(target)
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ReadMountTable { source, .. }
            | Error::OpenDevice { source, .. }
            | Error::ReadDevice { source, .. }
            | Error::Mount { source, .. }
            | Error::Bind { source, .. }
            | Error::RemountReadOnly { source, .. }
            | Error::Unmount { source, .. }
            | Error::CreateTarget { source, .. }
            | Error::RemoveTarget { source, .. }
            | Error::Stat { source, .. } => Some(source),
            Error::Probe { source, .. } | Error::Format { source, .. } | Error::Resize { source, .. } => {
                Some(source.as_ref())
            }
            _ => None,
        }
    }
}
