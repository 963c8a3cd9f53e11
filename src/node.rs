//! The CSI Node service: stage (attach over NVMe/TCP, format if blank,
//! mount), publish (bind mounts), unpublish, unstage (unmount, disconnect,
//! verify), volume stats with health, online expansion, node info and
//! readiness.
//!
//! State comes from the host, never from memory: what is staged or
//! published is read from mountinfo, and the NQN's device is looked up in
//! sysfs on every call. A restarted plugin therefore continues where the
//! last one stopped. Block volumes are staged as a bind mount of the device
//! node onto `<staging>/device`, so the mount table shows them too.
//!
//! Trust nothing a caller names: staging and target paths must lie strictly
//! under the kubelet directory (`paths::confine`), a staging context must
//! name this volume's own NQN, and a mount is unmounted, or a plain file or
//! directory removed, only when it is provably this volume's (see
//! [`NodeService::whose`] and the markers of `paths`):
//! - a mount is this volume's when its device is the namespace of
//!   `<prefix>:<volume id>`, or, when that device is no longer an attached
//!   namespace (the controller was lost), when our marker next to the path
//!   names this volume and the same device number;
//! - a plain file or directory at a target is removed only when it is empty
//!   and either we just unmounted this volume from it or our marker next to
//!   it names this volume (we created it). Anything else is left alone: a
//!   foreign mount is FAILED_PRECONDITION, a foreign file or directory that
//!   is not a mount point is already "not published" and stays untouched.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::RpcStatus;
use log::{info, warn};
use protobuf::MessageField;

use crate::device::{self, Lookup, Sysfs};
use crate::echo::echo;
use crate::exec;
use crate::host::{DevNum, Roots};
use crate::identity::Readiness;
use crate::locks::{VolumeGuard, VolumeLocks};
use crate::mount::{self, MountOptions, MountTable, Mounted};
use crate::nvme::{self, Nvme, Target};
use crate::orphan;
use crate::paths::{self, Marker, Role};
use crate::proto::csi;
use crate::proto::grpc::Node;
use crate::server::CallInfo;
use crate::status;
use crate::volume::{FsType, Nqn, VolumeContext, VolumeId};

/// The file inside a block volume's staging directory that the device node
/// is bind-mounted on.
pub const BLOCK_FILE: &str = "device";
/// How long a grown namespace may take to show its new size after a rescan.
const RESIZE_WAIT: Duration = Duration::from_secs(15);

/// Everything the node service needs, validated by `config`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: String,
    /// 0: no limit reported.
    pub max_volumes_per_node: i64,
    /// `--kubelet-dir`: staging and target paths must lie strictly under it.
    pub kubelet_dir: PathBuf,
    pub roots: Roots,
    pub nvme: nvme::Settings,
}

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
fn shown(path: &Path) -> String {
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

/// How the volume is accessed, from the request's VolumeCapability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Block,
    Filesystem {
        /// From the capability; else the VolumeContext; else ext4.
        fs: Option<FsType>,
        options: MountOptions,
    },
}

/// Node readiness: the `nvme_tcp` module and the `nvme` tool.
pub struct NodeReadiness {
    sysfs: Sysfs,
    bin: String,
}

impl Readiness for NodeReadiness {
    fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !self.sysfs.module_loaded("nvme_tcp") {
            problems.push(format!(
                "the nvme_tcp kernel module is not loaded ({} is missing): run `modprobe nvme_tcp` on the node",
                self.sysfs.roots().sys("module/nvme_tcp").display()
            ));
        }
        if exec::resolve(&self.bin).is_none() {
            problems.push(format!(
                "the nvme tool {:?} (--nvme-bin) was not found (searched {}): install nvme-cli",
                self.bin,
                exec::PATH
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

pub struct NodeService {
    settings: Settings,
    nvme: Nvme,
    locks: VolumeLocks,
}

fn invalid(message: impl Into<String>) -> RpcStatus {
    status::invalid_argument(message)
}

/// A volume id of ours; empty is INVALID_ARGUMENT, anything we could not
/// have made is NOT_FOUND.
fn volume_id(raw: &str) -> Result<VolumeId, RpcStatus> {
    status::require("volume_id", raw)?;
    VolumeId::parse(raw)
        .ok_or_else(|| status::not_found(format!("volume {} is not a volume of this driver", echo(raw))))
}

/// A required staging or target path, resolved and confined strictly under
/// the kubelet directory; anything else is INVALID_ARGUMENT naming the field.
fn confined(field: &'static str, raw: &str, kubelet_dir: &Path) -> Result<PathBuf, RpcStatus> {
    status::require(field, raw)?;
    paths::confine(field, raw, kubelet_dir).map_err(|e| invalid(e.to_string()))
}

/// The `volume_path` of stats and expand: one that does not exist (a
/// relative one included: it names nothing here) is NOT_FOUND, as the CSI
/// spec says; an existing one must lie under the kubelet directory.
fn volume_path(raw: &str, kubelet_dir: &Path) -> Result<PathBuf, RpcStatus> {
    status::require("volume_path", raw)?;
    let gone = || status::not_found(format!("volume_path {} does not exist", echo(raw)));
    if !Path::new(raw).is_absolute() {
        return Err(gone());
    }
    let clean = paths::clean_absolute("volume_path", raw).map_err(|e| invalid(e.to_string()))?;
    if !clean.exists() {
        return Err(gone());
    }
    paths::confine("volume_path", raw, kubelet_dir).map_err(|e| invalid(e.to_string()))
}

/// True for SINGLE_NODE_SINGLE_WRITER: one read-write publish at a time.
fn single_writer(cap: &MessageField<csi::VolumeCapability>) -> bool {
    use csi::volume_capability::access_mode::Mode;
    cap.as_ref()
        .is_some_and(|c| c.access_mode.mode.enum_value_or_default() == Mode::SINGLE_NODE_SINGLE_WRITER)
}

/// The access type and whether the access mode is read-only.
fn access(cap: &MessageField<csi::VolumeCapability>) -> Result<(Access, bool), RpcStatus> {
    use csi::volume_capability::access_mode::Mode;
    let Some(cap) = cap.as_ref() else {
        return Err(invalid("volume_capability is required"));
    };
    let mode = cap.access_mode.mode.enum_value_or_default();
    // SINGLE_NODE_SINGLE_WRITER and SINGLE_NODE_MULTI_WRITER are single-node
    // writers like SINGLE_NODE_WRITER: the node stages and publishes them
    // the same way (the CO keeps a single-writer volume to one pod).
    let read_only = match mode {
        Mode::SINGLE_NODE_READER_ONLY | Mode::MULTI_NODE_READER_ONLY => true,
        Mode::SINGLE_NODE_WRITER
        | Mode::SINGLE_NODE_SINGLE_WRITER
        | Mode::SINGLE_NODE_MULTI_WRITER
        | Mode::MULTI_NODE_SINGLE_WRITER
        | Mode::MULTI_NODE_MULTI_WRITER => false,
        // Not set: a writer, as it always was here.
        Mode::UNKNOWN => false,
    };
    let access = if cap.has_block() {
        Access::Block
    } else if cap.has_mount() {
        if matches!(
            mode,
            Mode::MULTI_NODE_MULTI_WRITER | Mode::MULTI_NODE_SINGLE_WRITER
        ) {
            return Err(invalid(format!(
                "access mode {mode:?} needs a shared filesystem; ext4 and xfs volumes are single-node \
                 (use a block volume)"
            )));
        }
        let m = cap.mount();
        let fs = if m.fs_type.is_empty() {
            None
        } else {
            Some(
                FsType::parse(&m.fs_type)
                    .map_err(|rule| invalid(format!("volume_capability.mount.fs_type: {rule}")))?,
            )
        };
        crate::volume::check_mount_flags(&m.mount_flags).map_err(|e| invalid(e.to_string()))?;
        let options = MountOptions::parse(&m.mount_flags).map_err(|e| invalid(e.to_string()))?;
        Access::Filesystem { fs, options }
    } else {
        return Err(invalid("volume_capability needs an access type: block or mount"));
    };
    Ok((access, read_only))
}

impl NodeService {
    pub fn new(settings: Settings) -> NodeService {
        let sysfs = Sysfs::new(settings.roots.clone());
        let nvme = Nvme::new(settings.nvme.clone(), sysfs);
        NodeService {
            settings,
            nvme,
            locks: VolumeLocks::new(),
        }
    }

    pub fn nvme(&self) -> &Nvme {
        &self.nvme
    }

    fn sysfs(&self) -> &Sysfs {
        self.nvme.sysfs()
    }

    /// The Probe check for this node.
    pub fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(NodeReadiness {
            sysfs: self.sysfs().clone(),
            bin: self.settings.nvme.bin.clone(),
        })
    }

    /// Registers the node's scrape-time gauges: volumes staged here and
    /// those whose controller is not live, read from sysfs at each scrape
    /// so they are right after a restart too.
    pub fn register_metrics(&self) {
        let (sysfs, prefix) = (self.sysfs().clone(), self.settings.nvme.prefix.clone());
        let ours = move || -> Vec<crate::device::Subsystem> {
            sysfs
                .subsystems()
                .unwrap_or_default()
                .into_iter()
                .filter(|s| prefix.manages(&s.nqn))
                .collect()
        };
        let staged = ours.clone();
        crate::metrics::register_gauge_fn("rds_csi_volumes_staged", move || {
            vec![(Vec::new(), staged().len() as f64)]
        });
        crate::metrics::register_gauge_fn("rds_csi_volumes_abnormal", move || {
            vec![(Vec::new(), ours().iter().filter(|s| !s.is_live()).count() as f64)]
        });
    }

    /// The start-up clean-up (see `orphan`), before serving.
    pub fn clean_up_orphans(&self, budget: Duration) -> orphan::Report {
        orphan::clean_up(&self.nvme, self.mount_table(), budget)
    }

    fn mount_table(&self) -> Result<MountTable, mount::Error> {
        MountTable::read(&self.settings.roots)
    }

    fn lock(&self, id: &VolumeId) -> Result<VolumeGuard, RpcStatus> {
        self.locks
            .try_lock(&[id.as_str()])
            .map_err(|busy| status::aborted(format!("an operation on volume {busy} is already in progress")))
    }

    // -----------------------------------------------------------------------
    // Whose is it
    // -----------------------------------------------------------------------

    /// Whether the mount `m` is this volume's: its device is the namespace
    /// of `<prefix>:<id>` now; or that device is no longer an attached
    /// namespace and the `role` marker next to `marked` names this volume
    /// and the same device number.
    fn whose(&self, id: &VolumeId, m: &Mounted, marked: &Path, role: Role) -> Result<Whose, Error> {
        let own = Nqn::for_volume(self.nvme.prefix(), id);
        match self.sysfs().owner(m.dev)? {
            Some((sub, ns)) if sub.nqn == own.as_str() => Ok(Whose::Ours(Some((sub, ns)))),
            Some((sub, _)) => Ok(Whose::Other {
                found: format!("the device of {}", sub.nqn),
                nqn: Some(sub.nqn),
            }),
            None => match paths::marked_for(marked, role, id.as_str()) {
                Some(mk) if mk.dev == m.dev => Ok(Whose::Ours(None)),
                _ => Ok(Whose::Other {
                    found: describe(m),
                    nqn: None,
                }),
            },
        }
    }

    /// Unmounts this volume's mounts at `at` (stacked ones one by one).
    /// Returns whether it unmounted anything. A mount of something else on
    /// top is NotOurs / OtherVolume and nothing is touched; one found under
    /// ours is left in place.
    fn unmount_ours(&self, id: &VolumeId, at: &Path, marked: &Path, role: Role) -> Result<bool, Error> {
        let mut unmounted = false;
        for _ in 0..8 {
            let table = self.mount_table()?;
            let Some(m) = table.mounted(at) else { break };
            match self.whose(id, &m, marked, role)? {
                Whose::Ours(_) => {
                    if !mount::unmount(at)? {
                        break;
                    }
                    unmounted = true;
                }
                Whose::Other { found, nqn } if !unmounted => {
                    return Err(match nqn {
                        Some(nqn) => Error::OtherVolume {
                            path: at.to_path_buf(),
                            nqn,
                        },
                        None => Error::NotOurs {
                            path: at.to_path_buf(),
                            found,
                        },
                    })
                }
                Whose::Other { found, .. } => {
                    warn!("{}: under this volume's mount was {found}; leaving it", shown(at));
                    break;
                }
            }
        }
        Ok(unmounted)
    }

    fn write_marker(&self, path: &Path, role: Role, id: &VolumeId, dev: DevNum) -> Result<(), Error> {
        let marker = Marker {
            volume: id.as_str().to_string(),
            dev,
        };
        paths::write_marker(path, role, &marker).map_err(|source| Error::Marker {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Removes the `role` marker next to `path` when it names this volume.
    fn remove_marker(&self, path: &Path, role: Role, id: &VolumeId) -> Result<(), Error> {
        if paths::marked_for(path, role, id.as_str()).is_none() {
            return Ok(());
        }
        paths::remove_marker(path, role).map_err(|source| Error::Marker {
            path: path.to_path_buf(),
            source,
        })
    }

    // -----------------------------------------------------------------------
    // Stage
    // -----------------------------------------------------------------------

    /// Stages the volume at `staging` (confined and resolved by the caller).
    /// Called again with the same volume it finds it staged and does nothing.
    pub fn stage(
        &self,
        id: &VolumeId,
        staging: &Path,
        access: &Access,
        read_only: bool,
        ctx: &VolumeContext,
    ) -> Result<(), Error> {
        let staging = staging.to_path_buf();
        let block_file = staging.join(BLOCK_FILE);
        let nqn = ctx.nqn.as_str();
        let table = self.mount_table()?;
        let (here, other_form) = match access {
            Access::Block => (table.mounted(&block_file), table.mounted(&staging)),
            Access::Filesystem { .. } => (table.mounted(&staging), table.mounted(&block_file)),
        };
        if let Some(m) = other_form {
            return Err(Error::StagedOtherwise {
                path: staging,
                found: describe(&m),
            });
        }
        let fs = match access {
            Access::Filesystem { fs, .. } => Some(fs.or(ctx.fs_type).unwrap_or(FsType::Ext4)),
            Access::Block => None,
        };
        if let Some(m) = here {
            self.check_staged(&staging, &m, nqn, fs)?;
            // Staged by a version without markers: record it now.
            if paths::marked_for(&staging, Role::Staged, id.as_str()).is_none() {
                self.write_marker(&staging, Role::Staged, id, m.dev)?;
            }
            return Ok(());
        }

        let target = Target {
            nqn: ctx.nqn.clone(),
            address: ctx.nvme_address.clone(),
            port: ctx.nvme_port,
        };
        let attached = self.nvme.attach(&target, &ctx.connection)?;
        let dev = &attached.device;
        // The marker first: whatever is mounted here from now on is known
        // to be this volume's, even after a restart or a lost controller.
        let result = self
            .write_marker(&staging, Role::Staged, id, dev.dev)
            .and_then(|()| match (access, fs) {
                (Access::Filesystem { options, .. }, Some(fs)) => {
                    stage_filesystem(&dev.path, &staging, fs, options, read_only)
                }
                _ => stage_block(&dev.path, &block_file),
            });
        if let Err(e) = result {
            warn!(
                "staging {nqn} failed after attaching it, rolling back: {}",
                crate::error_chain(&e)
            );
            let created = matches!(access, Access::Block).then_some(block_file.as_path());
            self.roll_back(nqn, dev.dev, &[&block_file, &staging], created);
            if let Err(e) = self.remove_marker(&staging, Role::Staged, id) {
                warn!("roll-back: {}", crate::error_chain(&e));
            }
            return Err(e);
        }
        info!("staged {nqn} ({}) at {}", dev.name, shown(&staging));
        Ok(())
    }

    /// Something is mounted at the staging path already: OK when it is the
    /// volume's device in the asked form.
    fn check_staged(&self, staging: &Path, m: &Mounted, nqn: &str, fs: Option<FsType>) -> Result<(), Error> {
        let current = match self.sysfs().lookup(nqn)? {
            Lookup::Ready(_, dev) => dev,
            Lookup::NoDevice(sub, why) => {
                return Err(Error::StagedOtherDevice {
                    path: staging.to_path_buf(),
                    found: m.dev,
                    expected: format!("missing ({why}; {})", sub.states()),
                })
            }
            Lookup::NotConnected => {
                return Err(Error::StagedOtherDevice {
                    path: staging.to_path_buf(),
                    found: m.dev,
                    expected: format!("missing ({nqn} is not connected)"),
                })
            }
        };
        if current.dev != m.dev {
            return Err(Error::StagedOtherDevice {
                path: staging.to_path_buf(),
                found: m.dev,
                expected: format!("{} ({})", current.dev, current.name),
            });
        }
        if let Some(fs) = fs {
            if m.entry.fstype != fs.as_str() {
                return Err(Error::StagedOtherwise {
                    path: staging.to_path_buf(),
                    found: describe(m),
                });
            }
        }
        Ok(())
    }

    /// Undoes a half-done stage: unmounts what this device has at `paths`,
    /// removes the block file it created, and disconnects unless the device
    /// is in use elsewhere. Best effort.
    fn roll_back(&self, nqn: &str, dev: DevNum, at: &[&Path], created: Option<&Path>) {
        if let Ok(table) = self.mount_table() {
            for p in at {
                if table.mounted(p).is_some_and(|m| m.dev == dev) {
                    if let Err(e) = mount::unmount(p) {
                        warn!("roll-back: {}", crate::error_chain(&e));
                    }
                }
            }
        }
        if let Some(file) = created {
            if let Ok(false) = self.mount_table().map(|t| t.at(file).is_some()) {
                let _ = mount::remove_if_empty(file);
            }
        }
        match self.users_of_nqn(nqn, &[]) {
            Ok(users) if users.is_empty() => {
                if let Err(e) = self.nvme.disconnect(nqn) {
                    warn!("roll-back: {}", crate::error_chain(&e));
                }
            }
            Ok(users) => warn!("roll-back: leaving {nqn} connected, in use: {}", users.join("; ")),
            Err(e) => warn!("roll-back: leaving {nqn} connected: {}", crate::error_chain(&e)),
        }
    }

    /// Where the NQN's namespaces are in use now, `except` these mount points.
    /// A user that goes within [`device::BUSY_GRACE`] (udev's probe after
    /// an unmount, say) does not count.
    fn users_of_nqn(&self, nqn: &str, except: &[&Path]) -> Result<Vec<String>, Error> {
        let started = Instant::now();
        loop {
            let Some(sub) = self.sysfs().subsystem(nqn)? else {
                return Ok(Vec::new());
            };
            let table = self.mount_table()?;
            let mut users = Vec::new();
            for ns in &sub.namespaces {
                users.extend(orphan::device_users(self.sysfs(), &table, ns, except)?);
            }
            if users.is_empty() || started.elapsed() >= device::BUSY_GRACE {
                return Ok(users);
            }
            std::thread::sleep(device::BUSY_POLL);
        }
    }

    // -----------------------------------------------------------------------
    // Unstage
    // -----------------------------------------------------------------------

    /// Unmounts the staging path (`staging`, confined and resolved by the
    /// caller) when what is mounted there is this volume's, then
    /// disconnects `<prefix>:<volume id>` and checks it is gone. Nothing
    /// staged and nothing connected: success. A staging path holding
    /// something else is refused with nothing touched.
    pub fn unstage(&self, id: &VolumeId, staging: &Path) -> Result<(), Error> {
        let staging = staging.to_path_buf();
        let block_file = staging.join(BLOCK_FILE);
        let table = self.mount_table()?;
        let mounted = match table.mounted(&block_file) {
            Some(m) => Some((block_file.clone(), m)),
            None => table.mounted(&staging).map(|m| (staging.clone(), m)),
        };
        let mut nqn = None;
        if let Some((at, m)) = &mounted {
            match self.whose(id, m, &staging, Role::Staged)? {
                Whose::Ours(Some((sub, _))) => nqn = Some(sub.nqn),
                Whose::Ours(None) => warn!(
                    "unstage {id}: the device {} mounted at {} is no longer an attached namespace",
                    m.dev,
                    shown(at)
                ),
                // Never tear down another volume, or anything else, because
                // it ended up at this volume's staging path.
                Whose::Other { nqn: Some(other), .. } => {
                    return Err(Error::OtherVolume {
                        path: at.clone(),
                        nqn: other,
                    })
                }
                Whose::Other { found, nqn: None } => {
                    return Err(Error::NotOurs {
                        path: at.clone(),
                        found,
                    })
                }
            }
        }
        // Refuse before changing anything while the device is still used
        // beyond this staging path (published somewhere, say).
        if let Some(nqn) = &nqn {
            let users = self.users_of_nqn(nqn, &[&staging, &block_file])?;
            if !users.is_empty() {
                return Err(Error::InUse {
                    nqn: nqn.clone(),
                    users,
                });
            }
        }
        let block_unmounted = self.unmount_ours(id, &block_file, &staging, Role::Staged)?;
        self.unmount_ours(id, &staging, &staging, Role::Staged)?;
        // The block file is ours when we just unmounted the device from it
        // or our marker says we staged here; with the staging path still
        // mounted it would be a file inside the volume's filesystem, which
        // is not. Only an empty file is removed.
        let ours = block_unmounted || paths::marked_for(&staging, Role::Staged, id.as_str()).is_some();
        if ours && self.mount_table()?.at(&staging).is_none() {
            mount::remove_if_empty(&block_file)?;
        }
        if nqn.is_none() {
            let own = Nqn::for_volume(self.nvme.prefix(), id);
            if self.sysfs().subsystem(own.as_str())?.is_some() {
                nqn = Some(own.to_string());
            }
        }
        if let Some(nqn) = nqn {
            let users = self.users_of_nqn(&nqn, &[])?;
            if !users.is_empty() {
                return Err(Error::InUse { nqn, users });
            }
            self.nvme.disconnect(&nqn)?;
            info!("unstaged {nqn} from {}", shown(&staging));
        }
        self.remove_marker(&staging, Role::Staged, id)?;
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Publish / unpublish
    // -----------------------------------------------------------------------

    /// Bind-mounts this volume, staged at `staging`, at `target` (both
    /// confined and resolved by the caller). Called again with the same
    /// arguments it finds the mount and does nothing.
    /// With `single_writer` (SINGLE_NODE_SINGLE_WRITER), a read-write
    /// publish is refused while the volume is published read-write at
    /// another target.
    pub fn publish(
        &self,
        id: &VolumeId,
        staging: &Path,
        target: &Path,
        access: &Access,
        read_only: bool,
        single_writer: bool,
    ) -> Result<(), Error> {
        let table = self.mount_table()?;
        let (source, block) = match access {
            Access::Block => (staging.join(BLOCK_FILE), true),
            Access::Filesystem { .. } => (staging.to_path_buf(), false),
        };
        let staged = table
            .mounted(&source)
            .filter(|m| m.block == block)
            .ok_or_else(|| Error::NotStaged { path: source.clone() })?;
        // Publish only this volume: another volume's staging path (or any
        // other mount) under this id would hand its data to the wrong pod.
        match self.whose(id, &staged, staging, Role::Staged)? {
            Whose::Ours(Some(_)) => {}
            Whose::Ours(None) => {
                return Err(Error::NotAttached {
                    path: source,
                    dev: staged.dev,
                })
            }
            Whose::Other { nqn: Some(nqn), .. } => return Err(Error::OtherVolume { path: source, nqn }),
            Whose::Other { found, nqn: None } => return Err(Error::NotOurs { path: source, found }),
        }
        if let Some(m) = table.mounted(target) {
            if m.block == block && m.dev == staged.dev && m.entry.read_only() == read_only {
                if paths::marked_for(target, Role::Published, id.as_str()).is_none() {
                    self.write_marker(target, Role::Published, id, staged.dev)?;
                }
                return Ok(());
            }
            return Err(Error::PublishedOtherwise {
                path: target.to_path_buf(),
                found: describe(&m),
            });
        }
        if single_writer && !read_only {
            let block_file = staging.join(BLOCK_FILE);
            let writers: Vec<PathBuf> = table
                .users_of(staged.dev)
                .into_iter()
                .filter(|p| p != staging && *p != block_file && p != target)
                .filter(|p| table.at(p).is_some_and(|e| !e.read_only()))
                .collect();
            if let Some(other) = writers.first() {
                return Err(Error::SingleWriter {
                    path: target.to_path_buf(),
                    other: other.clone(),
                });
            }
        }
        // The marker before the target: a target we create is always known
        // to be ours, even when we die before the bind.
        self.write_marker(target, Role::Published, id, staged.dev)?;
        let existed = target.exists();
        let made = if block {
            mount::ensure_file(target)
        } else {
            mount::ensure_dir(target)
        };
        if let Err(e) = made.and_then(|()| mount::bind(&source, target, read_only)) {
            // Leave nothing behind that kubelet's clean-up of the target's
            // directory would trip over: what we made, then our marker.
            if !existed && self.mount_table()?.at(target).is_none() {
                let _ = mount::remove_if_empty(target);
            }
            if let Err(m) = self.remove_marker(target, Role::Published, id) {
                warn!("publish roll-back: {}", crate::error_chain(&m));
            }
            return Err(e.into());
        }
        info!(
            "published {} at {}{}",
            shown(&source),
            shown(target),
            if read_only { " (read-only)" } else { "" }
        );
        Ok(())
    }

    /// Unmounts this volume from `target` (confined and resolved by the
    /// caller) and removes the target when we made it. A target that does
    /// not exist, or that holds nothing of ours, is already unpublished; a
    /// mount of something else there is refused, untouched.
    pub fn unpublish(&self, id: &VolumeId, target: &Path) -> Result<(), Error> {
        // A staging path (or a block volume's device file in one) is no
        // publish target, whoever's it is: unstage takes it down.
        let staged_here = paths::read_marker(target, Role::Staged).or_else(|| {
            let parent = target.parent()?;
            (target.file_name()? == BLOCK_FILE)
                .then(|| paths::read_marker(parent, Role::Staged))
                .flatten()
        });
        if let Some(staged) = staged_here {
            return Err(Error::NotOurs {
                path: target.to_path_buf(),
                found: format!("a staging path (of volume {})", echo(&staged.volume)),
            });
        }
        let unmounted = self.unmount_ours(id, target, target, Role::Published)?;
        let marker = paths::read_marker(target, Role::Published);
        let marked_ours = marker.as_ref().is_some_and(|m| m.volume == id.as_str());
        if let Some(other) = marker.as_ref().filter(|m| m.volume != id.as_str()) {
            if !unmounted && target.exists() {
                return Err(Error::NotOurs {
                    path: target.to_path_buf(),
                    found: format!("the publish target of volume {}", echo(&other.volume)),
                });
            }
        }
        if (unmounted || marked_ours) && self.mount_table()?.at(target).is_none() {
            if !mount::remove_if_empty(target)? {
                warn!("unpublish {id}: {} is not empty; leaving it", shown(target));
            }
        } else if target.exists() && !unmounted {
            warn!(
                "unpublish {id}: {} holds nothing of this volume; leaving it untouched",
                shown(target)
            );
        }
        self.remove_marker(target, Role::Published, id)?;
        if unmounted {
            info!("unpublished {id} from {}", shown(target));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Stats and expansion
    // -----------------------------------------------------------------------

    /// What is at a volume path (existing, confined): this volume's mount
    /// and the NVMe namespace behind it (None when the device is no longer
    /// attached), or `Gone` for a known staging or publish path of this
    /// volume with nothing mounted. Anything else is NotMounted /
    /// NotThisVolume.
    fn volume_at(&self, id: &VolumeId, path: &Path) -> Result<At, Error> {
        let table = self.mount_table()?;
        let known = |dev: Option<DevNum>| {
            [Role::Published, Role::Staged].into_iter().any(|role| {
                paths::marked_for(path, role, id.as_str()).is_some_and(|mk| dev.is_none_or(|d| d == mk.dev))
            })
        };
        // A block volume's staging path holds its device one level down.
        let Some(m) = table
            .mounted(path)
            .or_else(|| table.mounted(&path.join(BLOCK_FILE)).filter(|m| m.block))
        else {
            if known(None) {
                return Ok(At::Gone);
            }
            return Err(Error::NotMounted {
                path: path.to_path_buf(),
            });
        };
        let own = Nqn::for_volume(self.nvme.prefix(), id);
        match self.sysfs().owner(m.dev)? {
            Some((sub, ns)) if sub.nqn == own.as_str() => Ok(At::Mounted(Box::new((m, Some((sub, ns)))))),
            Some((sub, _)) => Err(Error::NotThisVolume {
                path: path.to_path_buf(),
                found: format!("the device of {}, another volume", sub.nqn),
            }),
            None if known(Some(m.dev)) => Ok(At::Mounted(Box::new((m, None)))),
            None => Err(Error::NotThisVolume {
                path: path.to_path_buf(),
                found: describe(&m),
            }),
        }
    }

    /// Usage and condition of the volume at `path` (existing, confined).
    pub fn stats(&self, id: &VolumeId, path: &Path) -> Result<csi::NodeGetVolumeStatsResponse, Error> {
        use csi::volume_usage::Unit;
        let mut resp = csi::NodeGetVolumeStatsResponse::new();
        let (m, owner) = match self.volume_at(id, path)? {
            At::Mounted(found) => *found,
            At::Gone => {
                resp.volume_condition = condition(Some(format!(
                    "the volume's mount at {} went away (nothing is mounted there)",
                    shown(path)
                )));
                return Ok(resp);
            }
        };
        let mut problems = Vec::new();
        let size = match &owner {
            None => {
                problems.push(format!(
                    "the mounted device {} is no longer an attached NVMe namespace (lost and reconnected \
                     under another number?)",
                    m.dev
                ));
                None
            }
            Some((sub, ns)) => {
                if !sub.is_live() {
                    problems.push(format!("{} is not live ({})", sub.nqn, sub.states()));
                }
                Some(ns.size_bytes)
            }
        };
        if m.block {
            if let Some(size) = size {
                let mut u = csi::VolumeUsage::new();
                u.total = size as i64;
                u.unit = Unit::BYTES.into();
                resp.usage.push(u);
            }
        } else {
            if m.entry.filesystem_read_only() && !m.entry.read_only() {
                problems.push("the filesystem went read-only (I/O errors?)".to_string());
            }
            let st = mount::stats(&m.entry.mount_point)?;
            let mut bytes = csi::VolumeUsage::new();
            bytes.total = st.total_bytes as i64;
            bytes.available = st.available_bytes as i64;
            bytes.used = st.used_bytes as i64;
            bytes.unit = Unit::BYTES.into();
            let mut inodes = csi::VolumeUsage::new();
            inodes.total = st.total_inodes as i64;
            inodes.available = st.free_inodes as i64;
            inodes.used = st.used_inodes as i64;
            inodes.unit = Unit::INODES.into();
            resp.usage.push(bytes);
            resp.usage.push(inodes);
        }
        resp.volume_condition = condition((!problems.is_empty()).then(|| problems.join("; ")));
        Ok(resp)
    }

    /// Rescans the namespace, waits for at least `required` bytes (0: any),
    /// grows the filesystem online, and returns the device's size. A second
    /// call finds nothing to grow and returns the same size.
    pub fn expand(&self, id: &VolumeId, path: &Path, required: u64) -> Result<u64, Error> {
        let (m, owner) = match self.volume_at(id, path)? {
            At::Mounted(found) => *found,
            At::Gone => {
                return Err(Error::MountGone {
                    path: path.to_path_buf(),
                })
            }
        };
        let Some((sub, ns)) = owner else {
            return Err(Error::NotAttached {
                path: path.to_path_buf(),
                dev: m.dev,
            });
        };
        if !sub.is_live() {
            return Err(Error::Nvme(nvme::Error::Reconnecting {
                nqn: sub.nqn.clone(),
                states: sub.states(),
            }));
        }
        for c in sub.controllers.iter().filter(|c| c.state == "live") {
            self.nvme.rescan(&c.name)?;
        }
        let started = Instant::now();
        let size = loop {
            let size = self.sysfs().size_bytes(&ns.name)?;
            if size >= required {
                break size;
            }
            if started.elapsed() >= RESIZE_WAIT {
                return Err(Error::SizeNotReached {
                    device: ns.name.clone(),
                    size,
                    required,
                });
            }
            std::thread::sleep(device::POLL_INTERVAL);
        };
        if !m.block {
            let dev = self.sysfs().device_node(&ns).map_err(|_| Error::NotAttached {
                path: path.to_path_buf(),
                dev: m.dev,
            })?;
            mount::grow_filesystem(&dev.path, &m.entry.mount_point, &m.entry.fstype)?;
        }
        info!("expanded {} ({}) to {size} bytes", sub.nqn, ns.name);
        Ok(size)
    }
}

/// Whose a mount is (see [`NodeService::whose`]).
enum Whose {
    /// This volume's, with its namespace unless the device is no longer attached.
    Ours(Option<(device::Subsystem, device::Namespace)>),
    /// Something else: what, and the NQN when it is another namespace.
    Other { found: String, nqn: Option<String> },
}

/// What a stats or expand path holds.
enum At {
    Mounted(Box<(Mounted, Option<(device::Subsystem, device::Namespace)>)>),
    /// A known staging or publish path of this volume with nothing mounted.
    Gone,
}

fn condition(problem: Option<String>) -> MessageField<csi::VolumeCondition> {
    let mut c = csi::VolumeCondition::new();
    if let Some(message) = problem {
        c.abnormal = true;
        c.message = message;
    } else {
        c.message = "healthy".into();
    }
    MessageField::some(c)
}

fn describe(m: &Mounted) -> String {
    if m.block {
        format!(
            "block device {} ({})",
            m.dev,
            if m.entry.read_only() { "ro" } else { "rw" }
        )
    } else {
        format!(
            "{} filesystem on {} ({})",
            m.entry.fstype,
            m.dev,
            if m.entry.read_only() { "ro" } else { "rw" }
        )
    }
}

fn stage_filesystem(
    device: &Path,
    staging: &Path,
    fs: FsType,
    options: &MountOptions,
    read_only: bool,
) -> Result<(), Error> {
    // A read-only volume is never written, not even by mkfs: it may be
    // mounted on several nodes at once.
    mount::ensure_filesystem(device, fs, !read_only)?;
    mount::ensure_dir(staging)?;
    mount::mount_filesystem(device, staging, fs, options, read_only)?;
    Ok(())
}

fn stage_block(device: &Path, block_file: &Path) -> Result<(), Error> {
    mount::ensure_file(block_file)?;
    mount::bind(device, block_file, false)?;
    Ok(())
}

fn node_status(e: Error) -> RpcStatus {
    status::node_error(&e)
}

impl Node for NodeService {
    fn node_stage_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeStageVolumeRequest,
    ) -> Result<csi::NodeStageVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let kubelet = &self.settings.kubelet_dir;
        let staging = confined("staging_target_path", &req.staging_target_path, kubelet)?;
        let (access, read_only) = access(&req.volume_capability)?;
        let ctx = VolumeContext::from_map(&req.volume_context).map_err(|e| invalid(e.to_string()))?;
        if !self.nvme.prefix().manages(ctx.nqn.as_str()) {
            return Err(node_status(Error::Nvme(nvme::Error::NotManaged {
                nqn: ctx.nqn.to_string(),
                prefix: self.nvme.prefix().as_str().to_string(),
            })));
        }
        // The context must be this volume's: another volume's context under
        // this id would attach and mount that volume under this id's lock.
        let own = Nqn::for_volume(self.nvme.prefix(), &id);
        if ctx.nqn != own {
            return Err(invalid(format!(
                "volume_context.nqn {} is not the NQN of volume {} (expected {})",
                echo(ctx.nqn.as_str()),
                id,
                own
            )));
        }
        let _guard = self.lock(&id)?;
        self.stage(&id, &staging, &access, read_only, &ctx)
            .map_err(node_status)?;
        Ok(csi::NodeStageVolumeResponse::new())
    }

    fn node_unstage_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeUnstageVolumeRequest,
    ) -> Result<csi::NodeUnstageVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let staging = confined(
            "staging_target_path",
            &req.staging_target_path,
            &self.settings.kubelet_dir,
        )?;
        let _guard = self.lock(&id)?;
        self.unstage(&id, &staging).map_err(node_status)?;
        Ok(csi::NodeUnstageVolumeResponse::new())
    }

    fn node_publish_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodePublishVolumeRequest,
    ) -> Result<csi::NodePublishVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let kubelet = &self.settings.kubelet_dir;
        let staging = confined("staging_target_path", &req.staging_target_path, kubelet)?;
        let target = confined("target_path", &req.target_path, kubelet)?;
        if target == staging || target.starts_with(&staging) || staging.starts_with(&target) {
            return Err(invalid(format!(
                "target_path {} and staging_target_path {} must not contain each other",
                echo(&req.target_path),
                echo(&req.staging_target_path)
            )));
        }
        let (access, read_only_mode) = access(&req.volume_capability)?;
        let _guard = self.lock(&id)?;
        let single = single_writer(&req.volume_capability);
        self.publish(
            &id,
            &staging,
            &target,
            &access,
            req.readonly || read_only_mode,
            single,
        )
        .map_err(node_status)?;
        Ok(csi::NodePublishVolumeResponse::new())
    }

    fn node_unpublish_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeUnpublishVolumeRequest,
    ) -> Result<csi::NodeUnpublishVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let target = confined("target_path", &req.target_path, &self.settings.kubelet_dir)?;
        let _guard = self.lock(&id)?;
        self.unpublish(&id, &target).map_err(node_status)?;
        Ok(csi::NodeUnpublishVolumeResponse::new())
    }

    fn node_get_volume_stats(
        &self,
        _call: &CallInfo,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse, RpcStatus> {
        // Read-only: no volume guard, so stats never wait for or abort a stage.
        let id = volume_id(&req.volume_id)?;
        let path = volume_path(&req.volume_path, &self.settings.kubelet_dir)?;
        self.stats(&id, &path).map_err(node_status)
    }

    fn node_expand_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeExpandVolumeRequest,
    ) -> Result<csi::NodeExpandVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let path = volume_path(&req.volume_path, &self.settings.kubelet_dir)?;
        let required = req.capacity_range.required_bytes.max(0) as u64;
        let _guard = self.lock(&id)?;
        let size = self.expand(&id, &path, required).map_err(node_status)?;
        let mut resp = csi::NodeExpandVolumeResponse::new();
        resp.capacity_bytes = size as i64;
        Ok(resp)
    }

    fn node_get_capabilities(
        &self,
        _call: &CallInfo,
        _req: csi::NodeGetCapabilitiesRequest,
    ) -> Result<csi::NodeGetCapabilitiesResponse, RpcStatus> {
        use csi::node_service_capability::{rpc::Type, RPC};
        let mut resp = csi::NodeGetCapabilitiesResponse::new();
        for t in [
            Type::STAGE_UNSTAGE_VOLUME,
            Type::EXPAND_VOLUME,
            Type::GET_VOLUME_STATS,
            Type::VOLUME_CONDITION,
            // Like the controller: SINGLE_NODE_SINGLE_WRITER and
            // SINGLE_NODE_MULTI_WRITER are staged and published here.
            Type::SINGLE_NODE_MULTI_WRITER,
        ] {
            let mut rpc = RPC::new();
            rpc.type_ = t.into();
            let mut cap = csi::NodeServiceCapability::new();
            cap.set_rpc(rpc);
            resp.capabilities.push(cap);
        }
        Ok(resp)
    }

    fn node_get_info(
        &self,
        _call: &CallInfo,
        _req: csi::NodeGetInfoRequest,
    ) -> Result<csi::NodeGetInfoResponse, RpcStatus> {
        let mut resp = csi::NodeGetInfoResponse::new();
        resp.node_id = self.settings.node_id.clone();
        resp.max_volumes_per_node = self.settings.max_volumes_per_node;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi::volume_capability::{access_mode::Mode, AccessMode, BlockVolume, MountVolume};

    fn cap(block: bool, mode: Mode, fs: &str, flags: &[&str]) -> MessageField<csi::VolumeCapability> {
        let mut c = csi::VolumeCapability::new();
        if block {
            c.set_block(BlockVolume::new());
        } else {
            let mut m = MountVolume::new();
            m.fs_type = fs.into();
            m.mount_flags = flags.iter().map(|s| s.to_string()).collect();
            c.set_mount(m);
        }
        let mut am = AccessMode::new();
        am.mode = mode.into();
        c.access_mode = MessageField::some(am);
        MessageField::some(c)
    }

    #[test]
    fn capabilities_become_access() {
        let (a, ro) = access(&cap(true, Mode::MULTI_NODE_MULTI_WRITER, "", &[])).unwrap();
        assert_eq!(a, Access::Block);
        assert!(!ro);
        let (a, ro) = access(&cap(false, Mode::SINGLE_NODE_READER_ONLY, "xfs", &["noatime"])).unwrap();
        assert!(ro);
        match a {
            Access::Filesystem { fs, options } => {
                assert_eq!(fs, Some(FsType::Xfs));
                assert_eq!(options.flags, libc::MS_NOATIME);
            }
            other => panic!("{other:?}"),
        }
        let (a, _) = access(&cap(false, Mode::SINGLE_NODE_WRITER, "", &[])).unwrap();
        assert!(matches!(a, Access::Filesystem { fs: None, .. }));
        for bad in [
            cap(false, Mode::MULTI_NODE_MULTI_WRITER, "ext4", &[]),
            cap(false, Mode::SINGLE_NODE_WRITER, "btrfs", &[]),
            cap(false, Mode::SINGLE_NODE_WRITER, "ext4", &["remount"]),
            MessageField::none(),
        ] {
            let e = access(&bad).unwrap_err();
            assert_eq!(
                e.code(),
                grpcio::RpcStatusCode::INVALID_ARGUMENT,
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn request_fields_are_checked() {
        assert_eq!(
            volume_id("").unwrap_err().code(),
            grpcio::RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(
            volume_id("Bad Id").unwrap_err().code(),
            grpcio::RpcStatusCode::NOT_FOUND
        );
        assert!(volume_id("pvc-1").is_ok());
        let long = "x".repeat(1 << 20);
        let e = volume_id(&long).unwrap_err();
        assert!(e.message().len() < 1024, "{} bytes", e.message().len());
        let kubelet = std::env::temp_dir().join(format!("rds-csi-node-fields-{}", std::process::id()));
        std::fs::create_dir_all(kubelet.join("pods")).unwrap();
        let k = kubelet.display().to_string();
        assert!(confined("target_path", &format!("{k}/pods/a/b"), &kubelet).is_ok());
        for bad in [
            "",
            "relative/x",
            "/a/../b",
            "/tmp/x/precious.txt",
            "/proc/self",
            k.as_str(),
        ] {
            let e = confined("target_path", bad, &kubelet).unwrap_err();
            assert_eq!(e.code(), grpcio::RpcStatusCode::INVALID_ARGUMENT, "{bad}");
            assert!(e.message().contains("target_path"), "{bad}: {}", e.message());
        }
        // Stats and expand: what does not exist is NOT_FOUND, a relative
        // path included; an existing path outside is INVALID_ARGUMENT.
        for gone in ["relative/x", "/no/such/path", &format!("{k}/pods/missing")] {
            let e = volume_path(gone, &kubelet).unwrap_err();
            assert_eq!(e.code(), grpcio::RpcStatusCode::NOT_FOUND, "{gone}");
        }
        assert_eq!(
            volume_path("", &kubelet).unwrap_err().code(),
            grpcio::RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(
            volume_path("/proc/self", &kubelet).unwrap_err().code(),
            grpcio::RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(
            volume_path(&format!("{k}/pods"), &kubelet).unwrap(),
            std::fs::canonicalize(kubelet.join("pods")).unwrap()
        );
        std::fs::remove_dir_all(&kubelet).unwrap();
    }

    #[test]
    fn single_node_writer_modes_are_writers() {
        for mode in [
            Mode::SINGLE_NODE_WRITER,
            Mode::SINGLE_NODE_SINGLE_WRITER,
            Mode::SINGLE_NODE_MULTI_WRITER,
        ] {
            for block in [false, true] {
                let (_, ro) = access(&cap(block, mode, "ext4", &[])).unwrap();
                assert!(!ro, "{mode:?}");
            }
        }
        let (_, ro) = access(&cap(false, Mode::MULTI_NODE_READER_ONLY, "ext4", &[])).unwrap();
        assert!(ro);
    }

    #[test]
    fn readiness_names_what_is_missing() {
        let t = device::fake::Tree::new("ready");
        let r = NodeReadiness {
            sysfs: t.sysfs(),
            bin: "no-such-nvme-tool".into(),
        };
        let e = r.check().unwrap_err();
        assert!(e.contains("nvme_tcp") && e.contains("no-such-nvme-tool"), "{e}");
        std::fs::create_dir_all(t.root.join("sys/module/nvme_tcp")).unwrap();
        let r = NodeReadiness {
            sysfs: t.sysfs(),
            bin: "/bin/sh".into(),
        };
        assert_eq!(r.check(), Ok(()));
    }
}
