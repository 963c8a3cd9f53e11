//! Publish and unpublish: bind-mount this volume's staging path (or device
//! file) at a target, one read-write writer for SINGLE_NODE_SINGLE_WRITER;
//! unpublish touches only this volume's mount and what we made.

use std::path::{Path, PathBuf};

use log::{info, warn};

use super::error::shown;
use super::{describe, Access, Error, NodeService, Whose, BLOCK_FILE};
use crate::echo::echo;
use crate::host::mount;
use crate::host::paths::{self, Role};
use crate::volume::VolumeId;

impl NodeService {
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
}
