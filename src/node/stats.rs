//! Volume stats and health: what is mounted at a volume path, whether it
//! is this volume, its usage, and what makes it abnormal (controller not
//! live, mount gone or read-only, device no longer the NQN's).

use std::path::Path;

use super::error::shown;
use super::{describe, Error, Host, NodeService, BLOCK_FILE};
use crate::host::device;
use crate::host::mount::Mounted;
use crate::host::paths::Role;
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

impl<H: Host> NodeService<H> {
    /// What is at a volume path (existing, confined): this volume's mount
    /// and the NVMe namespace behind it (None when the device is no longer
    /// attached), or `Gone` for a known staging or publish path of this
    /// volume with nothing mounted. Anything else is NotMounted /
    /// NotThisVolume.
    pub(super) fn volume_at(&self, id: &VolumeId, path: &Path) -> Result<At, Error> {
        let known = |dev: Option<DevNum>| {
            [Role::Published, Role::Staged].into_iter().any(|role| {
                self.marked_for(path, role, id)
                    .is_some_and(|mk| dev.is_none_or(|d| d == mk.dev))
            })
        };
        // A block volume's staging path holds its device one level down.
        let m = match self.host.mounted(path)? {
            Some(m) => Some(m),
            None => self.host.mounted(&path.join(BLOCK_FILE))?.filter(|m| m.block),
        };
        let Some(m) = m else {
            if known(None) {
                return Ok(At::Gone);
            }
            return Err(Error::NotMounted {
                path: path.to_path_buf(),
            });
        };
        let own = Nqn::for_volume(self.prefix(), id);
        match self.host.owner(m.dev)? {
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
                // Say which of the two it is: the kernel gave the
                // controller up (ctrl_loss_tmo ran out: I/O on this mount
                // fails until the volume is staged again), or the
                // subsystem is back under another device number.
                let own = Nqn::for_volume(self.prefix(), id);
                // The real kernel keeps the subsystem (with no controller)
                // while its namespace head is still mounted.
                let subsystem = self
                    .host
                    .subsystem(own.as_str())?
                    .filter(|s| !s.controllers.is_empty());
                problems.push(match subsystem {
                    None => format!(
                        "{own} is no longer connected: the kernel gave the controller up (ctrlLossTmo \
                         ran out during a storage outage); the mounted device {} is dead and I/O on it \
                         fails until the volume is unstaged and staged again",
                        m.dev
                    ),
                    Some(sub) => format!(
                        "the mounted device {} is no longer {own}'s namespace ({}); the volume needs \
                         to be unstaged and staged again",
                        m.dev,
                        sub.states()
                    ),
                });
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
            let st = self.host.fs_stats(&m.entry.mount_point)?;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::fake::{self, dev, Disk, STAGING};
    use super::super::{Error, Host};
    use super::{Unit, Usage};

    #[test]
    fn stats_report_usage_and_what_makes_the_volume_abnormal() {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host.export(&nqn, "nvme1n1", dev(1), Disk::Blank);
        svc.stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
            .unwrap();
        svc.host.state().fs_bytes.insert(dev(1), 1000);
        let st = svc.stats(&id, Path::new(STAGING)).unwrap();
        assert_eq!(st.problem, None);
        assert_eq!(
            st.usage[0],
            Usage {
                unit: Unit::Bytes,
                total: 1000,
                available: 600,
                used: 400
            }
        );
        assert_eq!(st.usage[1].unit, Unit::Inodes);
        // The controller is reconnecting: abnormal, naming the NQN.
        svc.host.state().connected[0].controllers[0].state = "connecting".into();
        let st = svc.stats(&id, Path::new(STAGING)).unwrap();
        assert!(st.problem.as_deref().is_some_and(|p| p.contains(&nqn)), "{st:?}");
        // The kernel gave the controller up (ctrl_loss_tmo ran out): the
        // subsystem lingers with no controller, and the mounted device is
        // no longer its namespace. The message names the NQN and says so.
        let saved = {
            let mut state = svc.host.state();
            state.connected[0].controllers[0].state = "live".into();
            let saved = state.connected[0].clone();
            state.connected[0].controllers.clear();
            state.connected[0].namespaces.clear();
            saved
        };
        let st = svc.stats(&id, Path::new(STAGING)).unwrap();
        let problem = st.problem.unwrap_or_default();
        assert!(
            problem.contains(&nqn) && problem.contains("gave the controller up"),
            "{problem}"
        );
        // Connected again, but the namespace came back under another device
        // number: a different message, still naming the NQN.
        {
            let mut state = svc.host.state();
            state.connected[0] = saved.clone();
            state.connected[0].namespaces[0].dev = dev(9);
        }
        let st = svc.stats(&id, Path::new(STAGING)).unwrap();
        let problem = st.problem.unwrap_or_default();
        assert!(
            problem.contains(&nqn) && problem.contains("no longer") && !problem.contains("gave"),
            "{problem}"
        );
        svc.host.state().connected[0] = saved;
        // Another volume asking about this path: not its volume.
        let (id2, _, _) = fake::volume("pvc-2");
        assert!(matches!(
            svc.stats(&id2, Path::new(STAGING)),
            Err(Error::NotThisVolume { .. })
        ));
        // The mount went away under a path we staged: abnormal, not an error.
        svc.host.unmount(Path::new(STAGING)).unwrap();
        let st = svc.stats(&id, Path::new(STAGING)).unwrap();
        assert!(
            st.problem.as_deref().is_some_and(|p| p.contains("went away")),
            "{st:?}"
        );
        assert!(st.usage.is_empty());
    }
}
