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

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::RpcStatus;
use log::{info, warn};
use protobuf::MessageField;

use crate::device::{self, Lookup, Sysfs};
use crate::exec;
use crate::host::{DevNum, Roots};
use crate::identity::Readiness;
use crate::locks::{VolumeGuard, VolumeLocks};
use crate::mount::{self, MountOptions, MountTable, Mounted};
use crate::nvme::{self, Nvme, Target};
use crate::orphan;
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
                path.display()
            ),
            Error::StagedOtherwise { path, found } => {
                write!(f, "{} already holds the volume as {found}", path.display())
            }
            Error::NotStaged { path } => write!(f, "the volume is not staged at {}", path.display()),
            Error::PublishedOtherwise { path, found } => {
                write!(f, "{} is already a mount point: {found}", path.display())
            }
            Error::InUse { nqn, users } => write!(
                f,
                "not disconnecting {nqn}: its device is still in use ({})",
                users.join("; ")
            ),
            Error::NoSuchVolumePath { path } => write!(f, "{} does not exist", path.display()),
            Error::NotMounted { path } => write!(f, "nothing is mounted at {}", path.display()),
            Error::NotAttached { path, dev } => write!(
                f,
                "the device {dev} mounted at {} is not an attached NVMe namespace",
                path.display()
            ),
            Error::OtherVolume { path, nqn } => {
                write!(f, "{} holds the device of {nqn}, another volume", path.display())
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
        .ok_or_else(|| status::not_found(format!("volume {raw:?} is not a volume of this driver")))
}

/// A required absolute path without `..` components.
fn abs_path(field: &str, raw: &str) -> Result<PathBuf, RpcStatus> {
    status::require(field, raw)?;
    let p = PathBuf::from(raw);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) || raw.contains('\0') {
        return Err(invalid(format!(
            "{field} {raw:?} must be an absolute path without '..'"
        )));
    }
    Ok(p)
}

/// The access type and whether the access mode is read-only.
fn access(cap: &MessageField<csi::VolumeCapability>) -> Result<(Access, bool), RpcStatus> {
    use csi::volume_capability::access_mode::Mode;
    let Some(cap) = cap.as_ref() else {
        return Err(invalid("volume_capability is required"));
    };
    let mode = cap.access_mode.mode.enum_value_or_default();
    let read_only = matches!(mode, Mode::SINGLE_NODE_READER_ONLY | Mode::MULTI_NODE_READER_ONLY);
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
    // Stage
    // -----------------------------------------------------------------------

    /// Stages the volume at `staging`. Called again with the same volume it
    /// finds it staged and does nothing.
    pub fn stage(
        &self,
        staging: &Path,
        access: &Access,
        read_only: bool,
        ctx: &VolumeContext,
    ) -> Result<(), Error> {
        let staging = mount::canonical(staging);
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
            return self.check_staged(&staging, &m, nqn, fs);
        }

        let target = Target {
            nqn: ctx.nqn.clone(),
            address: ctx.nvme_address.clone(),
            port: ctx.nvme_port,
        };
        let attached = self.nvme.attach(&target, &ctx.connection)?;
        let dev = &attached.device;
        let result = match (access, fs) {
            (Access::Filesystem { options, .. }, Some(fs)) => {
                stage_filesystem(&dev.path, &staging, fs, options, read_only)
            }
            _ => stage_block(&dev.path, &block_file),
        };
        if let Err(e) = result {
            warn!(
                "staging {nqn} failed after attaching it, rolling back: {}",
                crate::error_chain(&e)
            );
            let created = matches!(access, Access::Block).then_some(block_file.as_path());
            self.roll_back(nqn, dev.dev, &[&block_file, &staging], created);
            return Err(e);
        }
        info!("staged {nqn} ({}) at {}", dev.name, staging.display());
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
    fn roll_back(&self, nqn: &str, dev: DevNum, paths: &[&Path], created: Option<&Path>) {
        if let Ok(table) = self.mount_table() {
            for p in paths {
                if table.mounted(p).is_some_and(|m| m.dev == dev) {
                    if let Err(e) = mount::unmount(p) {
                        warn!("roll-back: {}", crate::error_chain(&e));
                    }
                }
            }
        }
        if let Some(file) = created {
            if let Ok(false) = self.mount_table().map(|t| t.at(file).is_some()) {
                let _ = mount::remove_target(file);
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
    fn users_of_nqn(&self, nqn: &str, except: &[&Path]) -> Result<Vec<String>, Error> {
        let Some(sub) = self.sysfs().subsystem(nqn)? else {
            return Ok(Vec::new());
        };
        let table = self.mount_table()?;
        let mut users = Vec::new();
        for ns in &sub.namespaces {
            users.extend(orphan::device_users(self.sysfs(), &table, ns, except)?);
        }
        Ok(users)
    }

    // -----------------------------------------------------------------------
    // Unstage
    // -----------------------------------------------------------------------

    /// Unmounts the staging path, then disconnects the volume's NQN (the
    /// one of the device that was mounted, else `<prefix>:<volume id>`) and
    /// checks it is gone. Nothing staged and nothing connected: success.
    pub fn unstage(&self, id: &VolumeId, staging: &Path) -> Result<(), Error> {
        let staging = mount::canonical(staging);
        let block_file = staging.join(BLOCK_FILE);
        let table = self.mount_table()?;
        let mounted = table.mounted(&block_file).or_else(|| table.mounted(&staging));
        let mut nqn = None;
        if let Some(m) = &mounted {
            match self.sysfs().owner(m.dev)? {
                Some((sub, _)) => {
                    if !self.nvme.prefix().manages(&sub.nqn) {
                        return Err(Error::Nvme(nvme::Error::NotManaged {
                            nqn: sub.nqn,
                            prefix: self.nvme.prefix().as_str().to_string(),
                        }));
                    }
                    // Never tear down another volume because its device
                    // ended up at this volume's staging path.
                    if self.nvme.prefix().volume_of(&sub.nqn).is_some_and(|v| &v != id) {
                        return Err(Error::OtherVolume {
                            path: staging,
                            nqn: sub.nqn,
                        });
                    }
                    nqn = Some(sub.nqn);
                }
                None => warn!(
                    "unstage {id}: the device {} mounted at {} is no longer an attached namespace",
                    m.dev,
                    m.entry.mount_point.display()
                ),
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
        for p in [&block_file, &staging] {
            // Stacked mounts (a retried stage on a broken host) come off one by one.
            for _ in 0..8 {
                if !mount::unmount(p)? {
                    break;
                }
            }
        }
        // The block file is ours; with the staging path still mounted it
        // would be a file inside the volume's filesystem, which is not.
        if self.mount_table()?.at(&staging).is_none() {
            mount::remove_target(&block_file)?;
        }
        if nqn.is_none() {
            let own = Nqn::for_volume(self.nvme.prefix(), id);
            if self.sysfs().subsystem(own.as_str())?.is_some() {
                nqn = Some(own.to_string());
            }
        }
        let Some(nqn) = nqn else {
            return Ok(());
        };
        let users = self.users_of_nqn(&nqn, &[])?;
        if !users.is_empty() {
            return Err(Error::InUse { nqn, users });
        }
        self.nvme.disconnect(&nqn)?;
        info!("unstaged {nqn} from {}", staging.display());
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Publish / unpublish
    // -----------------------------------------------------------------------

    /// Bind-mounts the staged volume at `target`. Called again with the same
    /// arguments it finds the mount and does nothing.
    pub fn publish(
        &self,
        staging: &Path,
        target: &Path,
        access: &Access,
        read_only: bool,
    ) -> Result<(), Error> {
        let staging = mount::canonical(staging);
        let table = self.mount_table()?;
        let (source, block) = match access {
            Access::Block => (staging.join(BLOCK_FILE), true),
            Access::Filesystem { .. } => (staging.clone(), false),
        };
        let staged = table
            .mounted(&source)
            .filter(|m| m.block == block)
            .ok_or_else(|| Error::NotStaged { path: source.clone() })?;
        if let Some(m) = table.mounted(&mount::canonical(target)) {
            if m.block == block && m.dev == staged.dev && m.entry.read_only() == read_only {
                return Ok(());
            }
            return Err(Error::PublishedOtherwise {
                path: target.to_path_buf(),
                found: describe(&m),
            });
        }
        if block {
            mount::ensure_file(target)?;
        } else {
            mount::ensure_dir(target)?;
        }
        mount::bind(&source, target, read_only)?;
        info!(
            "published {} at {}{}",
            source.display(),
            target.display(),
            if read_only { " (read-only)" } else { "" }
        );
        Ok(())
    }

    /// Unmounts `target` and removes it. A target that does not exist is
    /// already unpublished.
    pub fn unpublish(&self, target: &Path) -> Result<(), Error> {
        let canonical = mount::canonical(target);
        for _ in 0..8 {
            if !mount::unmount(&canonical)? {
                break;
            }
        }
        mount::remove_target(target)?;
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Stats and expansion
    // -----------------------------------------------------------------------

    /// What is mounted at a volume path, and the NVMe namespace behind it.
    fn volume_at(
        &self,
        id: &VolumeId,
        path: &Path,
    ) -> Result<(Mounted, Option<(device::Subsystem, device::Namespace)>), Error> {
        if !path.exists() {
            return Err(Error::NoSuchVolumePath {
                path: path.to_path_buf(),
            });
        }
        let table = self.mount_table()?;
        let m = table
            .mounted(&mount::canonical(path))
            .ok_or_else(|| Error::NotMounted {
                path: path.to_path_buf(),
            })?;
        let owner = self.sysfs().owner(m.dev)?;
        if let Some((sub, _)) = &owner {
            if let Some(v) = self.nvme.prefix().volume_of(&sub.nqn) {
                if &v != id {
                    return Err(Error::OtherVolume {
                        path: path.to_path_buf(),
                        nqn: sub.nqn.clone(),
                    });
                }
            }
        }
        Ok((m, owner))
    }

    /// Usage and condition of the volume at `path`.
    pub fn stats(&self, id: &VolumeId, path: &Path) -> Result<csi::NodeGetVolumeStatsResponse, Error> {
        use csi::volume_usage::Unit;
        let mut resp = csi::NodeGetVolumeStatsResponse::new();
        let (m, owner) = match self.volume_at(id, path) {
            Ok(found) => found,
            Err(Error::NotMounted { path }) => {
                resp.volume_condition = condition(Some(format!("nothing is mounted at {}", path.display())));
                return Ok(resp);
            }
            Err(Error::OtherVolume { path, nqn }) => {
                resp.volume_condition = condition(Some(format!(
                    "{} holds the device of {nqn}, another volume",
                    path.display()
                )));
                return Ok(resp);
            }
            Err(e) => return Err(e),
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
        let (m, owner) = self.volume_at(id, path)?;
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
        let staging = abs_path("staging_target_path", &req.staging_target_path)?;
        let (access, read_only) = access(&req.volume_capability)?;
        let ctx = VolumeContext::from_map(&req.volume_context).map_err(|e| invalid(e.to_string()))?;
        if !self.nvme.prefix().manages(ctx.nqn.as_str()) {
            return Err(node_status(Error::Nvme(nvme::Error::NotManaged {
                nqn: ctx.nqn.to_string(),
                prefix: self.nvme.prefix().as_str().to_string(),
            })));
        }
        let _guard = self.lock(&id)?;
        self.stage(&staging, &access, read_only, &ctx)
            .map_err(node_status)?;
        Ok(csi::NodeStageVolumeResponse::new())
    }

    fn node_unstage_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeUnstageVolumeRequest,
    ) -> Result<csi::NodeUnstageVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let staging = abs_path("staging_target_path", &req.staging_target_path)?;
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
        let staging = abs_path("staging_target_path", &req.staging_target_path)?;
        let target = abs_path("target_path", &req.target_path)?;
        let (access, read_only_mode) = access(&req.volume_capability)?;
        let _guard = self.lock(&id)?;
        self.publish(&staging, &target, &access, req.readonly || read_only_mode)
            .map_err(node_status)?;
        Ok(csi::NodePublishVolumeResponse::new())
    }

    fn node_unpublish_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeUnpublishVolumeRequest,
    ) -> Result<csi::NodeUnpublishVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let target = abs_path("target_path", &req.target_path)?;
        let _guard = self.lock(&id)?;
        self.unpublish(&target).map_err(node_status)?;
        Ok(csi::NodeUnpublishVolumeResponse::new())
    }

    fn node_get_volume_stats(
        &self,
        _call: &CallInfo,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse, RpcStatus> {
        // Read-only: no volume guard, so stats never wait for or abort a stage.
        let id = volume_id(&req.volume_id)?;
        let path = abs_path("volume_path", &req.volume_path)?;
        self.stats(&id, &path).map_err(node_status)
    }

    fn node_expand_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeExpandVolumeRequest,
    ) -> Result<csi::NodeExpandVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let path = abs_path("volume_path", &req.volume_path)?;
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
        assert!(abs_path("target_path", "/a/b").is_ok());
        for bad in ["", "relative/x", "/a/../b"] {
            assert_eq!(
                abs_path("target_path", bad).unwrap_err().code(),
                grpcio::RpcStatusCode::INVALID_ARGUMENT,
                "{bad}"
            );
        }
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
