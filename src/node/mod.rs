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

use std::path::{Path, PathBuf};
use std::time::Duration;

use log::warn;

use crate::host::device::{self, Sysfs};
use crate::host::exec;
use crate::host::mount::{MountOptions, Mounted};
use crate::host::nvme::{self, Nvme};
use crate::host::orphan;
use crate::host::paths::{Marker, Role};
use crate::host::{DevNum, Roots};
use crate::locks::{InFlight, VolumeGuard, VolumeLocks};
use crate::volume::{FsType, Nqn, NqnPrefix, VolumeId};

mod error;
mod expand;
mod host;
mod publish;
mod stage;
mod stats;

use error::shown;
pub use error::Error;
pub use host::{Host, RealHost};
pub use stats::{Unit, Usage, VolumeStats};

/// The file inside a block volume's staging directory that the device node
/// is bind-mounted on.
pub const BLOCK_FILE: &str = "device";

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

impl NodeReadiness {
    /// What keeps this node from serving volumes, if anything (the
    /// identity service's Probe asks through `csi::node`).
    pub fn check(&self) -> Result<(), String> {
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

/// The node rules over a [`Host`]: the real one in production, an
/// in-memory one in the unit tests.
pub struct NodeService<H = RealHost> {
    settings: Settings,
    host: H,
    locks: VolumeLocks,
}

impl NodeService<RealHost> {
    pub fn new(settings: Settings) -> NodeService {
        let sysfs = Sysfs::new(settings.roots.clone());
        let nvme = Nvme::new(settings.nvme.clone(), sysfs);
        NodeService::with_host(settings, RealHost::new(nvme))
    }

    pub fn nvme(&self) -> &Nvme {
        self.host.nvme()
    }

    fn sysfs(&self) -> &Sysfs {
        self.host.sysfs()
    }

    /// The readiness check for this node.
    pub fn node_readiness(&self) -> NodeReadiness {
        NodeReadiness {
            sysfs: self.sysfs().clone(),
            bin: self.settings.nvme.bin.clone(),
        }
    }

    /// Registers the node's scrape-time gauges: volumes staged here and
    /// those whose controller is not live, read from sysfs at each scrape
    /// so they are right after a restart too.
    pub fn register_metrics(&self) {
        let (sysfs, prefix) = (self.sysfs().clone(), self.settings.nvme.prefix.clone());
        let ours = move || -> Vec<crate::host::device::Subsystem> {
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
        orphan::clean_up(self.host.nvme(), self.host.mount_table(), budget)
    }
}

impl<H: Host> NodeService<H> {
    /// The node rules over `host`.
    pub fn with_host(settings: Settings, host: H) -> NodeService<H> {
        NodeService {
            settings,
            host,
            locks: VolumeLocks::new(),
        }
    }

    /// The managed NQN prefix: the node attaches and detaches only NQNs under it.
    pub fn prefix(&self) -> &NqnPrefix {
        &self.settings.nvme.prefix
    }

    /// The `role` marker next to `path` when it names this volume.
    fn marked_for(&self, path: &Path, role: Role, id: &VolumeId) -> Option<Marker> {
        self.host
            .read_marker(path, role)
            .filter(|m| m.volume == id.as_str())
    }

    /// The node settings (the CSI adapter answers NodeGetInfo from them).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Takes the volume's in-flight guard; `Err` names the busy key.
    pub fn lock(&self, id: &VolumeId) -> Result<VolumeGuard, InFlight> {
        self.locks.try_lock(&[id.as_str()])
    }

    // -----------------------------------------------------------------------
    // Whose is it
    // -----------------------------------------------------------------------

    /// Whether the mount `m` is this volume's: its device is the namespace
    /// of `<prefix>:<id>` now; or that device is no longer an attached
    /// namespace and the `role` marker next to `marked` names this volume
    /// and the same device number.
    fn whose(&self, id: &VolumeId, m: &Mounted, marked: &Path, role: Role) -> Result<Whose, Error> {
        let own = Nqn::for_volume(self.prefix(), id);
        match self.host.owner(m.dev)? {
            Some((sub, ns)) if sub.nqn == own.as_str() => Ok(Whose::Ours(Some((sub, ns)))),
            Some((sub, _)) => Ok(Whose::Other {
                found: format!("the device of {}", sub.nqn),
                nqn: Some(sub.nqn),
            }),
            None => match self.marked_for(marked, role, id) {
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
            let Some(m) = self.host.mounted(at)? else { break };
            match self.whose(id, &m, marked, role)? {
                Whose::Ours(_) => {
                    if !self.host.unmount(at)? {
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
        self.host
            .write_marker(path, role, &marker)
            .map_err(|source| Error::Marker {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Removes the `role` marker next to `path` when it names this volume.
    fn remove_marker(&self, path: &Path, role: Role, id: &VolumeId) -> Result<(), Error> {
        if self.marked_for(path, role, id).is_none() {
            return Ok(());
        }
        self.host
            .remove_marker(path, role)
            .map_err(|source| Error::Marker {
                path: path.to_path_buf(),
                source,
            })
    }
}

#[cfg(test)]
mod fake;

/// Whose a mount is (see [`NodeService::whose`]).
enum Whose {
    /// This volume's, with its namespace unless the device is no longer attached.
    Ours(Option<(device::Subsystem, device::Namespace)>),
    /// Something else: what, and the NQN when it is another namespace.
    Other { found: String, nqn: Option<String> },
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

#[cfg(test)]
mod tests {
    use super::*;

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
