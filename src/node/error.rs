//! The node service's errors: the host's, wrapped, and the node rules'
//! own, each variant named after the rule and carrying the paths and ids.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::echo::echo;
use crate::host::mount;
use crate::host::nvme;
use crate::host::{device, DevNum};

#[derive(Debug)]
pub enum Error {
    Nvme(nvme::Error),
    Device(device::Error),
    Mount(mount::Error),
    /// The staging path holds another device than the volume's.
    StagedOtherDevice {
        path: PathBuf,
        found: DevNum,
        expected: String,
    },
    /// The staging path holds the volume in another form (block vs.
    /// filesystem, or another filesystem type).
    StagedOtherwise {
        path: PathBuf,
        found: String,
    },
    /// Publish before stage.
    NotStaged {
        path: PathBuf,
    },
    /// The target holds something else, or the same with another read-only mode.
    PublishedOtherwise {
        path: PathBuf,
        found: String,
    },
    /// The device is still used elsewhere: not disconnecting it.
    InUse {
        nqn: String,
        users: Vec<String>,
    },
    /// The path does not exist / holds no mount (stats, expand).
    NoSuchVolumePath {
        path: PathBuf,
    },
    NotMounted {
        path: PathBuf,
    },
    /// What is mounted is not an NVMe namespace we can find.
    NotAttached {
        path: PathBuf,
        dev: DevNum,
    },
    /// The mounted namespace belongs to another volume.
    OtherVolume {
        path: PathBuf,
        nqn: String,
    },
    /// After a rescan, the namespace is still smaller than asked.
    SizeNotReached {
        device: String,
        size: u64,
        required: u64,
    },
    /// A path we were asked to tear down (or publish from) holds a mount
    /// that is not this volume's: nothing was touched.
    NotOurs {
        path: PathBuf,
        found: String,
    },
    /// Stats/expand: what is mounted at the path is not this volume.
    NotThisVolume {
        path: PathBuf,
        found: String,
    },
    /// Expand: a known staging or publish path of this volume whose mount
    /// went away.
    MountGone {
        path: PathBuf,
    },
    /// SINGLE_NODE_SINGLE_WRITER: already published read-write elsewhere.
    SingleWriter {
        path: PathBuf,
        other: PathBuf,
    },
    /// A marker next to a staging or publish path could not be written or
    /// removed.
    Marker {
        path: PathBuf,
        source: io::Error,
    },
}

/// A path for a message: it came from a request, so bounded and escaped.
pub(crate) fn shown(path: &Path) -> String {
    echo(&path.to_string_lossy()).to_string()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Nvme(e) => e.fmt(f),
            Error::Device(e) => e.fmt(f),
            Error::Mount(e) => e.fmt(f),
            Error::StagedOtherDevice {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} already holds device {found}, but the volume's device is {expected}",
                shown(path)
            ),
            Error::StagedOtherwise { path, found } => {
                write!(f, "{} already holds the volume as {found}", shown(path))
            }
            Error::NotStaged { path } => write!(f, "the volume is not staged at {}", shown(path)),
            Error::PublishedOtherwise { path, found } => {
                write!(f, "{} is already a mount point: {found}", shown(path))
            }
            Error::InUse { nqn, users } => write!(
                f,
                "not disconnecting {nqn}: its device is still in use ({})",
                users.join("; ")
            ),
            Error::NoSuchVolumePath { path } => write!(f, "{} does not exist", shown(path)),
            Error::NotMounted { path } => write!(
                f,
                "nothing is mounted at {}, and it is no staging or publish path of this volume",
                shown(path)
            ),
            Error::NotAttached { path, dev } => write!(
                f,
                "the device {dev} mounted at {} is not an attached NVMe namespace",
                shown(path)
            ),
            Error::OtherVolume { path, nqn } => {
                write!(f, "{} holds the device of {nqn}, another volume", shown(path))
            }
            Error::SizeNotReached {
                device,
                size,
                required,
            } => write!(
                f,
                "{device} is {size} bytes after a rescan, less than the {required} bytes asked for; \
                 try again when the RDS has grown the disk"
            ),
            Error::NotOurs { path, found } => write!(
                f,
                "{} holds {found}, not this volume: left untouched",
                shown(path)
            ),
            Error::NotThisVolume { path, found } => {
                write!(
                    f,
                    "this volume is not mounted at {}: it holds {found}",
                    shown(path)
                )
            }
            Error::MountGone { path } => write!(
                f,
                "the volume's mount at {} went away; publish (or stage) it again",
                shown(path)
            ),
            Error::SingleWriter { path, other } => write!(
                f,
                "not publishing at {}: the volume is SINGLE_NODE_SINGLE_WRITER and already published \
                 read-write at {}",
                shown(path),
                shown(other)
            ),
            Error::Marker { path, .. } => {
                write!(f, "cannot write or remove the marker next to {}", shown(path))
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The wrapped errors print themselves above; their causes follow.
            Error::Nvme(e) => e.source(),
            Error::Device(e) => e.source(),
            Error::Mount(e) => e.source(),
            Error::Marker { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<nvme::Error> for Error {
    fn from(e: nvme::Error) -> Self {
        Error::Nvme(e)
    }
}
impl From<device::Error> for Error {
    fn from(e: device::Error) -> Self {
        Error::Device(e)
    }
}
impl From<mount::Error> for Error {
    fn from(e: mount::Error) -> Self {
        Error::Mount(e)
    }
}
