//! CreateVolume from a snapshot or from a volume (clone) on a Btrfs pool: a writable Btrfs snapshot of the source becomes the new volume's own subvolume, and its disk is the image that came inside it.
//!
//! The image keeps the source's name (`<folder>/<new slot>/<source
//! slot>.img`): RouterOS has no verified way to rename a file, and
//! `layout::subvolume_of` reads the layout from the folder, not the image
//! name. That `/disk add` accepts a `file-path` that already exists is
//! unverified on a real RDS (rds-sim accepts it and grows the file to
//! `file-size`); the read-back of the created disk checks path and size.

use super::error::Error;
use super::layout;
use super::snapshot::SnapshotId;
use super::{Controller, RdsApi};
use crate::rds;
use crate::volume::VolumeId;

/// What a new volume's content comes from (CSI `volume_content_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentSource<'a> {
    Snapshot(&'a str),
    Volume(&'a str),
}

impl ContentSource<'_> {
    /// The id the request names.
    pub fn id(&self) -> &str {
        match self {
            ContentSource::Snapshot(id) | ContentSource::Volume(id) => id,
        }
    }

    /// What makes two requests for one name the same: kind and id.
    pub(super) fn key(&self) -> String {
        match self {
            ContentSource::Snapshot(id) => format!("snapshot:{id}"),
            ContentSource::Volume(id) => format!("volume:{id}"),
        }
    }
}

/// A source resolved on the RDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    /// `/file` path of the subvolume to snapshot.
    pub(super) subvolume: String,
    /// File name of the image inside it.
    pub(super) image: String,
    /// The image's size in bytes.
    pub(super) size: u64,
}

impl<R: RdsApi> Controller<R> {
    /// Finds the source on the RDS: NOT_FOUND when it does not exist,
    /// FAILED_PRECONDITION for a volume in the flat layout.
    pub(super) fn resolve_source(
        &self,
        fs: &rds::BtrfsFs,
        source: ContentSource<'_>,
    ) -> Result<Source, Error> {
        const OP: &str = "CreateVolume";
        match source {
            ContentSource::Snapshot(raw) => {
                let missing = || Error::NoSuchSnapshot {
                    op: OP,
                    snapshot_id: raw.to_string(),
                };
                let snap = SnapshotId::parse(raw).ok_or_else(missing)?;
                let found = self
                    .found_snapshots(OP, fs)?
                    .into_iter()
                    .find(|f| f.id == snap)
                    .ok_or_else(missing)?;
                let image_path = found.image();
                let files = self
                    .rds
                    .list_files(&format!("{}/", found.path))
                    .map_err(|source| Error::Rds {
                        context: format!("{OP}: read snapshot {snap}"),
                        source: Box::new(source),
                    })?;
                let size = files
                    .iter()
                    .find(|f| f.name == image_path)
                    .and_then(|f| f.size)
                    .ok_or_else(missing)?;
                Ok(Source {
                    subvolume: found.path.clone(),
                    image: format!("{}.img", found.source.slot()),
                    size,
                })
            }
            ContentSource::Volume(raw) => {
                let (id, disk, _) = self.find_ours(OP, raw)?;
                let file = disk.file_path.clone().unwrap_or_default();
                let subvolume = layout::subvolume_of(&file, &id).ok_or(Error::FlatVolume {
                    op: OP,
                    id: id.clone(),
                })?;
                let image = file.rsplit('/').next().unwrap_or_default().to_string();
                Ok(Source {
                    subvolume,
                    image,
                    size: disk.bytes().unwrap_or(0),
                })
            }
        }
    }

    /// Makes the new volume's subvolume as a writable snapshot of the
    /// source (a second call finds it), answering the filesystem, the new
    /// volume's backing file and the source's size.
    pub(super) fn clone_subvolume(
        &self,
        pool: &rds::Pool,
        folder: &str,
        id: &VolumeId,
        source: ContentSource<'_>,
        shown: &str,
    ) -> Result<(rds::BtrfsFs, String, u64), Error> {
        let fs = pool.btrfs().ok_or_else(|| Error::SnapshotsUnsupported {
            op: "CreateVolume",
            pool: self.settings.pool.clone(),
            fs: pool.fs.clone(),
        })?;
        let src = self.resolve_source(&fs, source)?;
        let path = layout::subvolume_path(folder, id);
        self.rds
            .snapshot_subvolume(&fs, &src.subvolume, &path, false)
            .map_err(|e| Error::Rds {
                context: format!("CreateVolume {shown}: snapshot {} into {path}", src.subvolume),
                source: Box::new(e),
            })?;
        Ok((fs, format!("{path}/{}", src.image), src.size))
    }
}
