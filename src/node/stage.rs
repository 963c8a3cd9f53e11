//! Stage and unstage: attach over NVMe/TCP, format only a definite blank,
//! mount (or bind the device node for a block volume), roll back a failed
//! stage; unstage unmounts only this volume's mount, refuses while the
//! namespace is in use, disconnects and checks it is gone.

use std::path::Path;
use std::time::Instant;

use log::{info, warn};

use super::error::shown;
use super::{describe, Access, Error, Host, NodeService, Whose, BLOCK_FILE};
use crate::host::device::{BlockDevice, Depth, Lookup};
use crate::host::mount::{self, MountOptions, Mounted};
use crate::host::nvme::Target;
use crate::host::paths::Role;
use crate::host::DevNum;
use crate::volume::{FsType, Nqn, VolumeContext, VolumeId};

impl<H: Host> NodeService<H> {
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
        let (at_block, at_staging) = (self.host.mounted(&block_file)?, self.host.mounted(&staging)?);
        let (here, other_form) = match access {
            Access::Block => (at_block, at_staging),
            Access::Filesystem { .. } => (at_staging, at_block),
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
            if self.marked_for(&staging, Role::Staged, id).is_none() {
                self.write_marker(&staging, Role::Staged, id, m.dev)?;
            }
            return Ok(());
        }

        let target = Target {
            nqn: ctx.nqn.clone(),
            address: ctx.nvme_address.clone(),
            port: ctx.nvme_port,
            host: ctx.host.clone(),
        };
        let attached = self.host.attach(&target, &ctx.connection)?;
        let dev = &attached.device;
        // The marker first: whatever is mounted here from now on is known
        // to be this volume's, even after a restart or a lost controller.
        let result = self
            .write_marker(&staging, Role::Staged, id, dev.dev)
            .and_then(|()| match (access, fs) {
                (Access::Filesystem { options, .. }, Some(fs)) => {
                    self.stage_filesystem(dev, &staging, fs, options, read_only)
                }
                _ => self.stage_block(&dev.path, &block_file),
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
        let current = match self.host.lookup(nqn)? {
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
        for p in at {
            if let Ok(Some(m)) = self.host.mounted(p) {
                if m.dev == dev {
                    if let Err(e) = self.host.unmount(p) {
                        warn!("roll-back: {}", crate::error_chain(&e));
                    }
                }
            }
        }
        if let Some(file) = created {
            if let Ok(None) = self.host.mounted(file) {
                let _ = self.host.remove_if_empty(file);
            }
        }
        match self.users_of_nqn(nqn, &[], Depth::Full) {
            Ok(users) if users.is_empty() => {
                if let Err(e) = self.host.disconnect(nqn, Depth::Full) {
                    warn!("roll-back: {}", crate::error_chain(&e));
                }
            }
            Ok(users) => warn!("roll-back: leaving {nqn} connected, in use: {}", users.join("; ")),
            Err(e) => warn!("roll-back: leaving {nqn} connected: {}", crate::error_chain(&e)),
        }
    }

    /// Where the NQN's namespaces are in use now, `except` these mount points.
    /// A user that goes within [`Host::busy_grace`] (udev's probe after
    /// an unmount, say) does not count.
    fn users_of_nqn(&self, nqn: &str, except: &[&Path], depth: Depth) -> Result<Vec<String>, Error> {
        let (grace, poll) = self.host.busy_grace();
        let started = Instant::now();
        loop {
            let Some(sub) = self.host.subsystem(nqn)? else {
                return Ok(Vec::new());
            };
            let mut users = Vec::new();
            for ns in &sub.namespaces {
                users.extend(self.host.device_users(ns, except, depth)?);
            }
            if users.is_empty() || started.elapsed() >= grace {
                return Ok(users);
            }
            std::thread::sleep(poll);
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
        let mounted = match self.host.mounted(&block_file)? {
            Some(m) => Some((block_file.clone(), m)),
            None => self.host.mounted(&staging)?.map(|m| (staging.clone(), m)),
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
            let users = self.users_of_nqn(nqn, &[&staging, &block_file], Depth::Full)?;
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
        let ours = block_unmounted || self.marked_for(&staging, Role::Staged, id).is_some();
        if ours && self.host.mounted(&staging)?.is_none() {
            self.host.remove_if_empty(&block_file)?;
        }
        // The processes were looked at just above when something was
        // mounted here. The looks before the disconnect (here, and the
        // disconnect's own) add what the unmount could change: the
        // exclusive open works now, or not. One process scan per unstage,
        // not three: on a busy node each is tens of milliseconds.
        let depth = if nqn.is_some() {
            Depth::NoProcessScan
        } else {
            Depth::Full
        };
        if nqn.is_none() {
            let own = Nqn::for_volume(self.prefix(), id);
            if self.host.subsystem(own.as_str())?.is_some() {
                nqn = Some(own.to_string());
            }
        }
        if let Some(nqn) = nqn {
            let users = self.users_of_nqn(&nqn, &[], depth)?;
            if !users.is_empty() {
                return Err(Error::InUse { nqn, users });
            }
            self.host.disconnect(&nqn, depth)?;
            info!("unstaged {nqn} from {}", shown(&staging));
        }
        self.remove_marker(&staging, Role::Staged, id)?;
        Ok(())
    }

    /// Formats `device` only when its probe is a definite blank (see
    /// [`mount::format_decision`]), then mounts it at `staging`. A
    /// read-only volume is never written, not even by mkfs: it may be
    /// mounted on several nodes at once.
    fn stage_filesystem(
        &self,
        dev: &BlockDevice,
        staging: &Path,
        fs: FsType,
        options: &MountOptions,
        read_only: bool,
    ) -> Result<(), Error> {
        let device = dev.path.as_path();
        let probe = self.host.probe(device)?;
        if mount::format_decision(device, probe, fs, !read_only)? {
            self.host.mkfs(device, fs)?;
        }
        self.host.ensure_dir(staging)?;
        self.host
            .mount_filesystem(device, staging, fs, options, read_only)?;
        if !read_only {
            self.grow_to_device(dev, staging, fs)?;
        }
        Ok(())
    }

    /// A device larger than its filesystem (a volume restored or cloned at
    /// a larger size, or a NodeExpandVolume that never came) gets its
    /// filesystem grown online now, so the volume has the size it was
    /// given. A read-only mount is never written, so never grown.
    fn grow_to_device(&self, dev: &BlockDevice, staging: &Path, fs: FsType) -> Result<(), Error> {
        let device_bytes = self.host.size_bytes(&dev.name)?;
        // The superblock's own size when it can be read (exact: no tool
        // runs when the filesystem already fills its device); else
        // statvfs, which always looks a little short and asks the tool.
        let (fs_bytes, slack) = match self.host.fs_bytes(&dev.path, fs) {
            Some(bytes) => (bytes, GROW_SLACK),
            None => (self.host.fs_stats(staging)?.total_bytes, 0),
        };
        if !needs_grow(device_bytes, fs_bytes.saturating_add(slack)) {
            return Ok(());
        }
        self.host.grow(&dev.path, staging, fs.as_str())?;
        info!(
            "grew the filesystem at {} to fill {} ({device_bytes} bytes; it had {fs_bytes})",
            shown(staging),
            dev.name
        );
        Ok(())
    }

    fn stage_block(&self, device: &Path, block_file: &Path) -> Result<(), Error> {
        self.host.ensure_file(block_file)?;
        self.host.bind(device, block_file, false)?;
        Ok(())
    }
}

/// Below this a device larger than its filesystem's superblock says is not
/// grown: a filesystem may leave a tail smaller than a block or an
/// allocation group unused, and every volume size differs by whole MiB.
const GROW_SLACK: u64 = 1 << 20;

/// Whether a filesystem of `fs_bytes` on a device of `device_bytes` must be
/// grown. With the superblock's size the comparison is exact (less a
/// slack); with statvfs's (the fallback), which counts the filesystem less
/// its own metadata, any shortfall asks the grow tool, which measures
/// exactly and is a no-op when there is nothing to grow.
pub(super) fn needs_grow(device_bytes: u64, fs_bytes: u64) -> bool {
    device_bytes > fs_bytes
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::fake::{self, dev, Disk, FakeHost, FakeMount, STAGING, TARGET};
    use super::super::{Access, Error, NodeService};
    use crate::host::mount;
    use crate::host::paths::Role;

    fn staged_fs(disk: Disk) -> (NodeService<FakeHost>, crate::volume::VolumeId, String) {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host.export(&nqn, "nvme1n1", dev(1), disk);
        svc.stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
            .expect("stage");
        (svc, id, nqn)
    }

    #[test]
    fn a_blank_device_is_formatted_once_and_a_repeat_stage_does_nothing() {
        let (svc, id, _) = staged_fs(Disk::Blank);
        assert_eq!(svc.host.effects("mkfs"), vec!["mkfs /dev/nvme1n1 ext4"]);
        let m = svc.host.mounted(Path::new(STAGING)).unwrap().expect("mounted");
        assert_eq!((m.dev, m.entry.fstype.as_str()), (dev(1), "ext4"));
        assert_eq!(
            svc.host
                .read_marker(Path::new(STAGING), Role::Staged)
                .map(|m| m.volume),
            Some("pvc-1".to_string())
        );
        let before = svc.host.state().log.len();
        let (_, _, ctx) = fake::volume("pvc-1");
        svc.stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
            .expect("second stage");
        assert_eq!(svc.host.state().log.len(), before, "{:?}", svc.host.state().log);
        assert_eq!(svc.host.effects("mkfs").len(), 1);
    }

    use super::super::Host;

    #[test]
    fn a_filesystem_smaller_than_its_device_is_grown_at_stage_and_one_that_fills_it_is_not() {
        // Restored at a larger size: the filesystem is half the device.
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host
            .export(&nqn, "nvme1n1", dev(1), Disk::Filesystem("xfs".into()));
        svc.host.state().fs_bytes.insert(dev(1), 1 << 29);
        let xfs = super::super::Access::Filesystem {
            fs: Some(crate::volume::FsType::Xfs),
            options: mount::MountOptions::default(),
        };
        svc.stage(&id, Path::new(STAGING), &xfs, false, &ctx)
            .expect("stage");
        assert_eq!(svc.host.effects("grow"), vec!["grow /dev/nvme1n1"]);
        assert_eq!(
            svc.host.fs_stats(Path::new(STAGING)).unwrap().total_bytes,
            1 << 30
        );
        // A repeat finds it staged and grows nothing.
        svc.stage(&id, Path::new(STAGING), &xfs, false, &ctx)
            .expect("repeat");
        assert_eq!(svc.host.effects("grow").len(), 1);

        // A filesystem within the slack of its device (a tail smaller than
        // a block or an allocation group) is left alone too.
        let svc = fake::service();
        svc.host
            .export(&nqn, "nvme1n1", dev(1), Disk::Filesystem("xfs".into()));
        svc.host.state().fs_bytes.insert(dev(1), (1 << 30) - 4096);
        svc.stage(&id, Path::new(STAGING), &xfs, false, &ctx)
            .expect("stage");
        assert!(svc.host.effects("grow").is_empty());

        // A filesystem that fills its device is left alone.
        let svc = fake::service();
        svc.host
            .export(&nqn, "nvme1n1", dev(1), Disk::Filesystem("ext4".into()));
        svc.host.state().fs_bytes.insert(dev(1), 1 << 30);
        svc.stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
            .expect("stage");
        assert!(svc.host.effects("grow").is_empty());

        // Read-only: never written, so never grown.
        let svc = fake::service();
        svc.host
            .export(&nqn, "nvme1n1", dev(1), Disk::Filesystem("ext4".into()));
        svc.host.state().fs_bytes.insert(dev(1), 1 << 29);
        svc.stage(&id, Path::new(STAGING), &fake::filesystem(), true, &ctx)
            .expect("stage");
        assert!(svc.host.effects("grow").is_empty());
        assert!(svc.host.mounted(Path::new(STAGING)).unwrap().is_some());
    }

    #[test]
    fn needs_grow_only_when_the_device_exceeds_the_filesystem() {
        assert!(super::needs_grow(2 << 30, 1 << 30));
        assert!(!super::needs_grow(1 << 30, 1 << 30));
        assert!(!super::needs_grow(1 << 29, 1 << 30));
    }

    #[test]
    fn an_existing_filesystem_is_mounted_never_formatted() {
        let (svc, _, _) = staged_fs(Disk::Filesystem("ext4".into()));
        assert!(svc.host.effects("mkfs").is_empty());
        assert!(svc.host.mounted(Path::new(STAGING)).unwrap().is_some());
    }

    #[test]
    fn a_foreign_signature_is_never_formatted_and_the_stage_rolls_back() {
        for (disk, wanted) in [
            (Disk::Filesystem("xfs".into()), "OtherFilesystem"),
            (Disk::Filesystem("swap".into()), "ForeignSignature"),
            (Disk::Other("a gpt partition table".into()), "ForeignSignature"),
        ] {
            let svc = fake::service();
            let (id, nqn, ctx) = fake::volume("pvc-1");
            svc.host.export(&nqn, "nvme1n1", dev(1), disk.clone());
            let e = svc
                .stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
                .unwrap_err();
            let ok = match &e {
                Error::Mount(mount::Error::OtherFilesystem { .. }) => wanted == "OtherFilesystem",
                Error::Mount(mount::Error::ForeignSignature { .. }) => wanted == "ForeignSignature",
                _ => false,
            };
            assert!(ok, "{disk:?}: {e:?}");
            assert!(svc.host.effects("mkfs").is_empty(), "{disk:?}");
            assert!(svc.host.effects("mount").is_empty(), "{disk:?}");
            assert_eq!(svc.host.effects("disconnect"), vec![format!("disconnect {nqn}")]);
            assert_eq!(svc.host.read_marker(Path::new(STAGING), Role::Staged), None);
        }
    }

    #[test]
    fn a_probe_that_fails_never_formats() {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host.export(&nqn, "nvme1n1", dev(1), Disk::Unreadable);
        let e = svc
            .stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
            .unwrap_err();
        assert!(
            matches!(e, Error::Mount(mount::Error::ReadDevice { .. })),
            "{e:?}"
        );
        assert!(svc.host.effects("mkfs").is_empty());
        assert!(svc.host.effects("mount").is_empty());
    }

    #[test]
    fn a_blank_device_staged_read_only_is_not_formatted() {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host.export(&nqn, "nvme1n1", dev(1), Disk::Blank);
        let e = svc
            .stage(&id, Path::new(STAGING), &fake::filesystem(), true, &ctx)
            .unwrap_err();
        assert!(
            matches!(e, Error::Mount(mount::Error::Unformatted { .. })),
            "{e:?}"
        );
        assert!(svc.host.effects("mkfs").is_empty());
    }

    #[test]
    fn a_failed_mount_after_connect_disconnects_and_removes_the_marker() {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host
            .export(&nqn, "nvme1n1", dev(1), Disk::Filesystem("ext4".into()));
        svc.host.state().fail_mount = true;
        let e = svc
            .stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
            .unwrap_err();
        assert!(matches!(e, Error::Mount(mount::Error::Mount { .. })), "{e:?}");
        assert_eq!(svc.host.effects("connect").len(), 1, "{:?}", svc.host.state().log);
        assert_eq!(svc.host.effects("disconnect"), vec![format!("disconnect {nqn}")]);
        assert!(svc.host.subsystem(&nqn).unwrap().is_none());
        assert_eq!(svc.host.read_marker(Path::new(STAGING), Role::Staged), None);
    }

    #[test]
    fn a_failed_stage_leaves_a_device_in_use_connected() {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host
            .export(&nqn, "nvme1n1", dev(1), Disk::Filesystem("ext4".into()));
        svc.host.state().fail_mount = true;
        svc.host
            .state()
            .users
            .insert(dev(1), vec!["open by pid 42 (dd)".into()]);
        assert!(svc
            .stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
            .is_err());
        assert!(svc.host.effects("disconnect").is_empty());
        assert!(svc.host.subsystem(&nqn).unwrap().is_some());
    }

    #[test]
    fn a_failed_block_stage_removes_the_device_file_it_made() {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host.export(&nqn, "nvme1n1", dev(1), Disk::Blank);
        svc.host.state().fail_bind = true;
        let block_file = Path::new(STAGING).join(super::BLOCK_FILE);
        assert!(svc
            .stage(&id, Path::new(STAGING), &Access::Block, false, &ctx)
            .is_err());
        assert!(!svc.host.exists(&block_file));
        assert_eq!(svc.host.effects("disconnect").len(), 1);
        // Nothing was ever formatted: a block volume's data is the caller's.
        assert!(svc.host.effects("mkfs").is_empty());
    }

    #[test]
    fn a_block_stage_binds_the_device_and_a_repeat_does_nothing() {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host.export(&nqn, "nvme1n1", dev(1), Disk::Blank);
        svc.stage(&id, Path::new(STAGING), &Access::Block, false, &ctx)
            .unwrap();
        let before = svc.host.state().log.clone();
        svc.stage(&id, Path::new(STAGING), &Access::Block, false, &ctx)
            .unwrap();
        assert_eq!(svc.host.state().log, before);
        assert!(svc.host.effects("mkfs").is_empty());
        // Asked for as a filesystem now: refused, nothing touched.
        let e = svc
            .stage(&id, Path::new(STAGING), &fake::filesystem(), false, &ctx)
            .unwrap_err();
        assert!(matches!(e, Error::StagedOtherwise { .. }), "{e:?}");
        assert_eq!(svc.host.state().log, before);
    }

    #[test]
    fn unstage_unmounts_disconnects_and_a_repeat_is_fine() {
        let (svc, id, nqn) = staged_fs(Disk::Blank);
        svc.unstage(&id, Path::new(STAGING)).unwrap();
        assert_eq!(svc.host.effects("unmount").len(), 1);
        assert_eq!(svc.host.effects("disconnect"), vec![format!("disconnect {nqn}")]);
        assert_eq!(svc.host.read_marker(Path::new(STAGING), Role::Staged), None);
        let before = svc.host.state().log.len();
        svc.unstage(&id, Path::new(STAGING)).unwrap();
        assert_eq!(svc.host.state().log.len(), before);
    }

    #[test]
    fn unstage_of_a_namespace_in_use_is_refused_untouched() {
        let (svc, id, nqn) = staged_fs(Disk::Blank);
        // Still published somewhere.
        svc.host.state().mounts.push(FakeMount {
            at: TARGET.into(),
            dev: dev(1),
            block: false,
            fstype: "ext4".into(),
            read_only: false,
        });
        let e = svc.unstage(&id, Path::new(STAGING)).unwrap_err();
        match &e {
            Error::InUse { nqn: n, users } => {
                assert_eq!(n, &nqn);
                assert!(users.iter().any(|u| u.contains(TARGET)), "{users:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(svc.host.effects("unmount").is_empty());
        assert!(svc.host.effects("disconnect").is_empty());
        assert!(svc.host.mounted(Path::new(STAGING)).unwrap().is_some());
        // Held open by a process, not mounted elsewhere: refused too.
        svc.host.state().mounts.retain(|m| m.at != Path::new(TARGET));
        svc.host
            .state()
            .users
            .insert(dev(1), vec!["open by pid 42 (dd)".into()]);
        assert!(matches!(
            svc.unstage(&id, Path::new(STAGING)),
            Err(Error::InUse { .. })
        ));
        assert!(svc.host.effects("disconnect").is_empty());
    }

    #[test]
    fn unstage_with_nothing_mounted_still_looks_for_processes_before_disconnecting() {
        let (svc, id, _) = staged_fs(Disk::Blank);
        // Unmounted by hand, still connected, and a process holds the
        // device: the only look before the disconnect must be a full one.
        svc.host.state().mounts.retain(|m| m.at != Path::new(STAGING));
        svc.host
            .state()
            .users
            .insert(dev(1), vec!["open by pid 42 (dd)".into()]);
        let e = svc.unstage(&id, Path::new(STAGING)).unwrap_err();
        assert!(
            matches!(&e, Error::InUse { users, .. } if users.iter().any(|u| u.contains("pid 42"))),
            "{e:?}"
        );
        assert!(svc.host.effects("disconnect").is_empty());
    }

    #[test]
    fn unstage_refuses_what_is_not_this_volume() {
        // Another volume's device at this volume's staging path.
        let (svc, _, other_nqn) = staged_fs(Disk::Blank);
        let (id2, _, _) = fake::volume("pvc-2");
        let e = svc.unstage(&id2, Path::new(STAGING)).unwrap_err();
        assert!(
            matches!(&e, Error::OtherVolume { nqn, .. } if *nqn == other_nqn),
            "{e:?}"
        );
        // Something that is no attached namespace and has no marker of ours.
        let svc = fake::service();
        svc.host.state().mounts.push(FakeMount {
            at: STAGING.into(),
            dev: dev(77),
            block: false,
            fstype: "ext4".into(),
            read_only: false,
        });
        let e = svc.unstage(&id2, Path::new(STAGING)).unwrap_err();
        assert!(matches!(e, Error::NotOurs { .. }), "{e:?}");
        assert!(svc.host.effects("unmount").is_empty());
        assert!(svc.host.effects("disconnect").is_empty());
    }

    #[test]
    fn unstage_after_a_lost_controller_goes_by_the_marker() {
        // The controller was lost and came back under another number: the
        // mount's device is no longer an attached namespace, but our
        // marker names this volume and that device number.
        let (svc, id, nqn) = staged_fs(Disk::Blank);
        svc.host.state().connected.clear();
        svc.unstage(&id, Path::new(STAGING)).unwrap();
        assert_eq!(svc.host.effects("unmount").len(), 1);
        // Nothing connected under this NQN any more: nothing to disconnect.
        assert!(svc.host.effects("disconnect").is_empty(), "{nqn}");
    }
}
