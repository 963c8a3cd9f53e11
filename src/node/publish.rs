//! Publish and unpublish: bind-mount this volume's staging path (or device
//! file) at a target, one read-write writer for SINGLE_NODE_SINGLE_WRITER;
//! unpublish touches only this volume's mount and what we made.

use std::path::{Path, PathBuf};

use log::{info, warn};

use super::error::shown;
use super::{describe, Access, Error, Host, NodeService, Whose, BLOCK_FILE};
use crate::echo::echo;
use crate::host::paths::Role;
use crate::volume::VolumeId;

impl<H: Host> NodeService<H> {
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
        let (source, block) = match access {
            Access::Block => (staging.join(BLOCK_FILE), true),
            Access::Filesystem { .. } => (staging.to_path_buf(), false),
        };
        let staged = self
            .host
            .mounted(&source)?
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
        if let Some(m) = self.host.mounted(target)? {
            if m.block == block && m.dev == staged.dev && m.entry.read_only() == read_only {
                if self.marked_for(target, Role::Published, id).is_none() {
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
            let writers: Vec<PathBuf> = self
                .host
                .mount_users(staged.dev)?
                .into_iter()
                .filter(|(p, _)| p != staging && *p != block_file && p != target)
                .filter(|(_, read_only)| !read_only)
                .map(|(p, _)| p)
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
        let existed = self.host.exists(target);
        let made = if block {
            self.host.ensure_file(target)
        } else {
            self.host.ensure_dir(target)
        };
        if let Err(e) = made.and_then(|()| self.host.bind(&source, target, read_only)) {
            // Leave nothing behind that kubelet's clean-up of the target's
            // directory would trip over: what we made, then our marker.
            if !existed && self.host.mounted(target)?.is_none() {
                let _ = self.host.remove_if_empty(target);
            }
            if let Err(m) = self.remove_marker(target, Role::Published, id) {
                warn!("publish roll-back: {}", crate::error_chain(&m));
            }
            return Err(e);
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
        let staged_here = self.host.read_marker(target, Role::Staged).or_else(|| {
            let parent = target.parent()?;
            (target.file_name()? == BLOCK_FILE)
                .then(|| self.host.read_marker(parent, Role::Staged))
                .flatten()
        });
        if let Some(staged) = staged_here {
            return Err(Error::NotOurs {
                path: target.to_path_buf(),
                found: format!("a staging path (of volume {})", echo(&staged.volume)),
            });
        }
        let unmounted = self.unmount_ours(id, target, target, Role::Published)?;
        let marker = self.host.read_marker(target, Role::Published);
        let marked_ours = marker.as_ref().is_some_and(|m| m.volume == id.as_str());
        if let Some(other) = marker.as_ref().filter(|m| m.volume != id.as_str()) {
            if !unmounted && self.host.exists(target) {
                return Err(Error::NotOurs {
                    path: target.to_path_buf(),
                    found: format!("the publish target of volume {}", echo(&other.volume)),
                });
            }
        }
        if (unmounted || marked_ours) && self.host.mounted(target)?.is_none() {
            if !self.host.remove_if_empty(target)? {
                warn!("unpublish {id}: {} is not empty; leaving it", shown(target));
            }
        } else if self.host.exists(target) && !unmounted {
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::fake::{self, dev, Disk, FakeHost, FakeMount, STAGING, TARGET, TARGET2};
    use super::super::{Access, Error, Host, NodeService};
    use crate::host::paths::Role;
    use crate::volume::VolumeId;

    fn staged(access: &Access) -> (NodeService<FakeHost>, VolumeId) {
        let svc = fake::service();
        let (id, nqn, ctx) = fake::volume("pvc-1");
        svc.host.export(&nqn, "nvme1n1", dev(1), Disk::Blank);
        svc.stage(&id, Path::new(STAGING), access, false, &ctx)
            .expect("stage");
        (svc, id)
    }

    fn publish(
        svc: &NodeService<FakeHost>,
        id: &VolumeId,
        target: &str,
        ro: bool,
        single: bool,
    ) -> Result<(), Error> {
        svc.publish(
            id,
            Path::new(STAGING),
            Path::new(target),
            &fake::filesystem(),
            ro,
            single,
        )
    }

    #[test]
    fn publish_binds_the_staging_path_and_a_repeat_does_nothing() {
        let (svc, id) = staged(&fake::filesystem());
        publish(&svc, &id, TARGET, false, false).unwrap();
        let m = svc.host.mounted(Path::new(TARGET)).unwrap().expect("published");
        assert_eq!(m.dev, dev(1));
        assert_eq!(
            svc.host
                .read_marker(Path::new(TARGET), Role::Published)
                .map(|m| m.volume),
            Some("pvc-1".to_string())
        );
        let before = svc.host.state().log.clone();
        publish(&svc, &id, TARGET, false, false).unwrap();
        assert_eq!(svc.host.state().log, before);
        // The same target read-only now: it is published otherwise.
        let e = publish(&svc, &id, TARGET, true, false).unwrap_err();
        assert!(matches!(e, Error::PublishedOtherwise { .. }), "{e:?}");
    }

    #[test]
    fn publish_before_stage_is_refused() {
        let svc = fake::service();
        let (id, _, _) = fake::volume("pvc-1");
        let e = publish(&svc, &id, TARGET, false, false).unwrap_err();
        assert!(matches!(e, Error::NotStaged { .. }), "{e:?}");
        assert!(svc.host.state().log.is_empty());
    }

    #[test]
    fn publish_of_another_volumes_staging_path_is_refused() {
        let (svc, _) = staged(&fake::filesystem());
        let (id2, _, _) = fake::volume("pvc-2");
        let e = publish(&svc, &id2, TARGET, false, false).unwrap_err();
        assert!(matches!(e, Error::OtherVolume { .. }), "{e:?}");
        assert!(svc.host.mounted(Path::new(TARGET)).unwrap().is_none());
    }

    #[test]
    fn single_writer_allows_one_read_write_publish() {
        let (svc, id) = staged(&fake::filesystem());
        publish(&svc, &id, TARGET, false, true).unwrap();
        let e = publish(&svc, &id, TARGET2, false, true).unwrap_err();
        assert!(
            matches!(&e, Error::SingleWriter { other, .. } if other == Path::new(TARGET)),
            "{e:?}"
        );
        assert!(svc.host.mounted(Path::new(TARGET2)).unwrap().is_none());
        // Read-only beside the writer is fine, and without the mode so is
        // a second writer.
        publish(&svc, &id, TARGET2, true, true).unwrap();
        svc.unpublish(&id, Path::new(TARGET2)).unwrap();
        publish(&svc, &id, TARGET2, false, false).unwrap();
    }

    #[test]
    fn a_failed_bind_removes_the_target_and_marker_it_made() {
        let (svc, id) = staged(&fake::filesystem());
        svc.host.state().fail_bind = true;
        assert!(publish(&svc, &id, TARGET, false, false).is_err());
        assert!(!svc.host.exists(Path::new(TARGET)));
        assert_eq!(svc.host.read_marker(Path::new(TARGET), Role::Published), None);
    }

    #[test]
    fn unpublish_unmounts_removes_the_target_and_a_repeat_is_fine() {
        let (svc, id) = staged(&Access::Block);
        svc.publish(
            &id,
            Path::new(STAGING),
            Path::new(TARGET),
            &Access::Block,
            false,
            false,
        )
        .unwrap();
        svc.unpublish(&id, Path::new(TARGET)).unwrap();
        assert_eq!(svc.host.effects("unmount"), vec![format!("unmount {TARGET}")]);
        assert!(!svc.host.exists(Path::new(TARGET)));
        assert_eq!(svc.host.read_marker(Path::new(TARGET), Role::Published), None);
        let before = svc.host.state().log.len();
        svc.unpublish(&id, Path::new(TARGET)).unwrap();
        assert_eq!(svc.host.state().log.len(), before);
    }

    #[test]
    fn unpublish_of_a_foreign_mount_is_refused_untouched() {
        let (svc, id) = staged(&fake::filesystem());
        svc.host.ensure_dir(Path::new(TARGET)).unwrap();
        svc.host.state().mounts.push(FakeMount {
            at: TARGET.into(),
            dev: dev(77),
            block: false,
            fstype: "nfs".into(),
            read_only: false,
        });
        let e = svc.unpublish(&id, Path::new(TARGET)).unwrap_err();
        assert!(matches!(e, Error::NotOurs { .. }), "{e:?}");
        assert!(svc.host.effects("unmount").is_empty());
        assert!(svc.host.effects("remove").is_empty());
        assert!(svc.host.mounted(Path::new(TARGET)).unwrap().is_some());
        // Another volume's mount there: refused as well.
        let (id2, _, _) = fake::volume("pvc-2");
        publish(&svc, &id, TARGET2, false, false).unwrap();
        let e = svc.unpublish(&id2, Path::new(TARGET2)).unwrap_err();
        assert!(matches!(e, Error::OtherVolume { .. }), "{e:?}");
        assert!(svc.host.effects("unmount").is_empty());
    }

    #[test]
    fn unpublish_leaves_a_plain_directory_it_did_not_make() {
        let (svc, id) = staged(&fake::filesystem());
        svc.host.ensure_dir(Path::new(TARGET)).unwrap();
        svc.unpublish(&id, Path::new(TARGET)).unwrap();
        assert!(svc.host.exists(Path::new(TARGET)));
    }

    #[test]
    fn unpublish_of_a_staging_path_is_refused() {
        let (svc, id) = staged(&fake::filesystem());
        let e = svc.unpublish(&id, Path::new(STAGING)).unwrap_err();
        assert!(matches!(e, Error::NotOurs { .. }), "{e:?}");
        assert!(svc.host.mounted(Path::new(STAGING)).unwrap().is_some());
    }
}
