//! Volume stats and health: what is mounted at a volume path, whether it
//! is this volume, its usage, and what makes it abnormal (controller not
//! live, mount gone or read-only, device no longer the NQN's).

use std::path::Path;

use super::error::shown;
use super::{describe, Error, NodeService, BLOCK_FILE};
use crate::host::device;
use crate::host::mount::{self, Mounted};
use crate::host::paths::{self, Role};
use crate::host::DevNum;
use crate::volume::{Nqn, VolumeId};

/// What a usage figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Inodes,
}

/// One usage figure of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub unit: Unit,
    pub total: u64,
    pub available: u64,
    pub used: u64,
}

/// Usage and condition of a volume: `problem` is None when healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeStats {
    pub usage: Vec<Usage>,
    pub problem: Option<String>,
}

/// What a stats or expand path holds.
pub(super) enum At {
    Mounted(Box<(Mounted, Option<(device::Subsystem, device::Namespace)>)>),
    /// A known staging or publish path of this volume with nothing mounted.
    Gone,
}

impl NodeService {
    /// What is at a volume path (existing, confined): this volume's mount
    /// and the NVMe namespace behind it (None when the device is no longer
    /// attached), or `Gone` for a known staging or publish path of this
    /// volume with nothing mounted. Anything else is NotMounted /
    /// NotThisVolume.
    pub(super) fn volume_at(&self, id: &VolumeId, path: &Path) -> Result<At, Error> {
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
    pub fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats, Error> {
        let (m, owner) = match self.volume_at(id, path)? {
            At::Mounted(found) => *found,
            At::Gone => {
                return Ok(VolumeStats {
                    usage: Vec::new(),
                    problem: Some(format!(
                        "the volume's mount at {} went away (nothing is mounted there)",
                        shown(path)
                    )),
                });
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
        let mut usage = Vec::new();
        if m.block {
            if let Some(size) = size {
                usage.push(Usage {
                    unit: Unit::Bytes,
                    total: size,
                    available: 0,
                    used: 0,
                });
            }
        } else {
            if m.entry.filesystem_read_only() && !m.entry.read_only() {
                problems.push("the filesystem went read-only (I/O errors?)".to_string());
            }
            let st = mount::stats(&m.entry.mount_point)?;
            usage.push(Usage {
                unit: Unit::Bytes,
                total: st.total_bytes,
                available: st.available_bytes,
                used: st.used_bytes,
            });
            usage.push(Usage {
                unit: Unit::Inodes,
                total: st.total_inodes,
                available: st.free_inodes,
                used: st.used_inodes,
            });
        }
        Ok(VolumeStats {
            usage,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
        })
    }
}
