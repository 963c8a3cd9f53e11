//! Where a volume's backing file lives: flat (`<folder>/<slot>.img`, every XFS pool and every volume made before issue 13) or, on a Btrfs pool, in its own subvolume (`<folder>/<slot>/<slot>.img`), which is what makes snapshots and clones of it possible.
//!
//! A snapshot covers only the files inside the snapshotted subvolume, and a
//! file disk's folder is not a subvolume, so only the nested layout can be
//! snapshotted. The layout of an existing volume is read from its disk's
//! `file-path`, never assumed.

use log::{info, warn};

use crate::rds;
use crate::volume::VolumeId;

use super::{Controller, Error, RdsApi};

/// The subvolume a new volume gets on a Btrfs pool: `<folder>/<slot>`.
pub(crate) fn subvolume_path(folder: &str, id: &VolumeId) -> String {
    format!("{folder}/{}", id.slot())
}

/// The backing file inside that subvolume: `<folder>/<slot>/<slot>.img`.
pub(crate) fn nested_file(folder: &str, id: &VolumeId) -> String {
    format!("{folder}/{}/{}.img", id.slot(), id.slot())
}

/// The subvolume a disk's backing file says the volume has: `Some(X/<slot>)`
/// for `X/<slot>/<image>.img`, `None` for a flat file. The image of a
/// volume restored or cloned from another keeps the source's name
/// (`X/<slot>/<source slot>.img`): it came with the Btrfs snapshot.
pub(crate) fn subvolume_of(file_path: &str, id: &VolumeId) -> Option<String> {
    let file = file_path.trim_start_matches('/');
    let (dir, image) = file.rsplit_once('/')?;
    if !image.ends_with(".img") {
        return None;
    }
    let (_, last) = dir.rsplit_once('/')?;
    (last == id.slot()).then(|| dir.to_string())
}

/// Whether a leftover `/file` entry `<dir>/<slot>.img` found by a
/// DeleteVolume of `id` (whose disk is gone) is that volume's backing file:
/// flat in a volume folder, or in the volume's own subvolume; never the
/// image inside a snapshot, nor the source-named image inside another
/// volume's subvolume (a clone of this one).
pub(crate) fn is_own_leftover(file: &str, id: &VolumeId) -> bool {
    let Some((dir, image)) = file.rsplit_once('/') else {
        return false;
    };
    if image != format!("{}.img", id.slot()) {
        return false;
    }
    let last = dir.rsplit_once('/').map_or(dir, |(_, last)| last);
    if last == id.slot() {
        return true;
    }
    let other_volume = VolumeId::parse(last).is_some_and(|v| v.is_driver_shape());
    !other_volume && super::snapshot::parse_snapshot_path(dir).is_none()
}

impl<R: RdsApi> Controller<R> {
    /// Makes the new volume's subvolume when the pool is Btrfs, and answers
    /// the filesystem it is on; `None` (the flat layout) on any other pool,
    /// and on a Btrfs pool whose RouterOS is too old for subvolumes.
    pub(super) fn volume_subvolume(
        &self,
        pool: &rds::Pool,
        folder: &str,
        id: &VolumeId,
        shown: &str,
    ) -> Result<Option<rds::BtrfsFs>, Error> {
        let Some(fs) = pool.btrfs() else {
            return Ok(None);
        };
        let path = subvolume_path(folder, id);
        match self.rds.create_subvolume(&fs, &path) {
            Ok(_) => Ok(Some(fs)),
            Err(e) if e.kind() == rds::Kind::TooOld => {
                warn!("CreateVolume {shown}: {e}; volume {id} gets the flat layout (no snapshots)");
                Ok(None)
            }
            Err(source) => Err(Error::Rds {
                context: format!("CreateVolume {shown}: create subvolume {path}"),
                source: Box::new(source),
            }),
        }
    }

    /// Removes the subvolumes at `paths` (a volume's own, after its disk is
    /// gone); those already gone, or plain folders, are skipped.
    pub(super) fn remove_leftover_subvolumes(&self, id: &VolumeId, paths: &[String]) -> Result<(), Error> {
        let Some(fs) = self.btrfs_fs()? else {
            return Ok(());
        };
        for path in paths {
            let removed = self
                .rds
                .remove_subvolume(&fs, path)
                .map_err(|source| Error::Rds {
                    context: format!("DeleteVolume {id}: remove subvolume {path}"),
                    source: Box::new(source),
                })?;
            if removed {
                info!("DeleteVolume {id}: removed subvolume {path}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_layouts_are_told_apart_by_the_file_path() {
        let id = VolumeId::parse("pvc-1").unwrap();
        assert_eq!(subvolume_path("storage-pool/csi", &id), "storage-pool/csi/pvc-1");
        assert_eq!(
            nested_file("storage-pool/csi", &id),
            "storage-pool/csi/pvc-1/pvc-1.img"
        );
        assert_eq!(
            subvolume_of("/storage-pool/csi/pvc-1/pvc-1.img", &id).as_deref(),
            Some("storage-pool/csi/pvc-1")
        );
        assert_eq!(subvolume_of("storage-pool/csi/pvc-1.img", &id), None);
        assert_eq!(subvolume_of("storage-pool/csi/other/pvc-1.img", &id), None);
        assert_eq!(subvolume_of("pvc-1/pvc-1.img", &id), None);
        // A clone keeps its source's image name inside its own subvolume.
        assert_eq!(
            subvolume_of("storage-pool/csi/pvc-1/pvc-0.img", &id).as_deref(),
            Some("storage-pool/csi/pvc-1")
        );
    }

    #[test]
    fn a_leftover_search_never_takes_a_snapshots_or_a_clones_image() {
        let id = VolumeId::for_name("a");
        let other = VolumeId::for_name("b");
        let snap = super::super::snapshot::SnapshotId::for_name("s");
        assert!(is_own_leftover(&format!("storage-pool/csi/{id}.img"), &id));
        assert!(is_own_leftover(&format!("storage-pool/csi/{id}/{id}.img"), &id));
        assert!(!is_own_leftover(
            &format!("storage-pool/csi/{other}/{id}.img"),
            &id
        ));
        assert!(!is_own_leftover(
            &format!("storage-pool/csi/{snap}.{id}.17/{id}.img"),
            &id
        ));
        assert!(!is_own_leftover(&format!("storage-pool/csi/{id}/x.img"), &id));
    }
}
