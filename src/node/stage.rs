//! Stage and unstage: attach over NVMe/TCP, format only a definite blank,
//! mount (or bind the device node for a block volume), roll back a failed
//! stage; unstage unmounts only this volume's mount, refuses while the
//! namespace is in use, disconnects and checks it is gone.

use std::path::Path;
use std::time::Instant;

use log::{info, warn};

use super::error::shown;
use super::{describe, Access, Error, NodeService, Whose, BLOCK_FILE};
use crate::host::device::{self, Lookup};
use crate::host::mount::{self, MountOptions, Mounted};
use crate::host::nvme::Target;
use crate::host::paths::{self, Role};
use crate::host::DevNum;
use crate::volume::{FsType, Nqn, VolumeContext, VolumeId};

impl NodeService {
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
                users.extend(device::device_users(self.sysfs(), &table, ns, except)?);
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
