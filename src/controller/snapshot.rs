//! Snapshots on Btrfs pools: CreateSnapshot (a read-only Btrfs snapshot of a volume's own subvolume), DeleteSnapshot and ListSnapshots, every field derived from the RDS alone.
//!
//! Subvolumes have no comment, so a snapshot's facts live in its name and
//! in `/file`: the snapshot of volume `<slot>` named (CSI) `N` is the
//! read-only subvolume `<folder>/<snap-id>.<slot>.<unix seconds>` next to the
//! volume's own subvolume `<folder>/<slot>`, where `<snap-id>` is
//! `snap-` + the first 28 hex digits of SHA-256(`N`) (the snapshot id the
//! CO gets) and the seconds are the creation time. Its size is the size of
//! the image inside (`<slot>.img`, read-only: the source's size at that
//! moment). A restarted controller therefore lists exactly what it listed
//! before. A snapshot is crash-consistent: the driver cannot freeze a
//! filesystem mounted on a node.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use log::info;

use crate::echo::echo;
use crate::rds;
use crate::volume::VolumeId;

use super::error::{Error, Invalid};
use super::layout;
use super::params::check_name;
use super::{Controller, RdsApi};

/// Every snapshot id starts with this.
pub const SNAPSHOT_PREFIX: &str = "snap-";
/// Hex digits after the prefix.
const SNAPSHOT_HEX: usize = 28;
/// ListSnapshots tokens: this prefix and the last snapshot id of the page.
const TOKEN_PREFIX: &str = "s1:";
/// CreateSnapshot parameters the external-snapshotter adds on its own
/// (`--extra-create-metadata`); any other key is refused.
const METADATA_PREFIX: &str = "csi.storage.k8s.io/";

/// A snapshot id: `snap-` and 28 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// The id of the snapshot named `name` (the CSI CreateSnapshot name).
    pub fn for_name(name: &str) -> SnapshotId {
        let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        SnapshotId(format!("{SNAPSHOT_PREFIX}{}", &hex[..SNAPSHOT_HEX]))
    }

    /// Only the exact shape `for_name` makes; anything else names no
    /// snapshot of this driver.
    pub fn parse(id: &str) -> Option<SnapshotId> {
        let hex = id.strip_prefix(SNAPSHOT_PREFIX)?;
        let ok = hex.len() == SNAPSHOT_HEX
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| SnapshotId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One snapshot as CreateSnapshot and ListSnapshots report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: SnapshotId,
    pub source_volume_id: VolumeId,
    /// The source's size when the snapshot was taken.
    pub size_bytes: u64,
    /// Seconds since the Unix epoch.
    pub creation_time: u64,
    /// Btrfs snapshots are complete when made.
    pub ready_to_use: bool,
}

/// One page of ListSnapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPage {
    pub entries: Vec<SnapshotInfo>,
    pub next_token: Option<String>,
}

/// A snapshot subvolume found on the RDS, from its path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) id: SnapshotId,
    pub(crate) source: VolumeId,
    pub(crate) created: u64,
    /// `/file` path of the subvolume.
    pub(crate) path: String,
}

impl Found {
    /// The image inside the snapshot (the source's, read-only).
    pub(crate) fn image(&self) -> String {
        format!("{}/{}.img", self.path, self.source.slot())
    }
}

/// The subvolume name of a snapshot (last path component).
pub(crate) fn snapshot_dir(id: &SnapshotId, source: &VolumeId, created: u64) -> String {
    format!("{id}.{}.{created}", source.slot())
}

/// Parses `<folder>/<snap-id>.<slot>.<secs>`; `None` for any other path.
pub(crate) fn parse_snapshot_path(path: &str) -> Option<Found> {
    let (_, last) = path.rsplit_once('/')?;
    let (id, rest) = last.split_once('.')?;
    let (slot, secs) = rest.rsplit_once('.')?;
    let id = SnapshotId::parse(id)?;
    let source = VolumeId::parse(slot)?;
    let created = secs
        .parse::<u64>()
        .ok()
        .filter(|_| secs.bytes().all(|b| b.is_ascii_digit()))?;
    Some(Found {
        id,
        source,
        created,
        path: path.to_string(),
    })
}

fn parse_token(token: &str) -> Option<SnapshotId> {
    SnapshotId::parse(token.strip_prefix(TOKEN_PREFIX)?)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks CreateSnapshot's parameters: only the snapshotter's own metadata.
pub fn check_snapshot_parameters(parameters: &HashMap<String, String>) -> Result<(), Invalid> {
    let mut keys: Vec<&String> = parameters.keys().collect();
    keys.sort();
    match keys.into_iter().find(|k| !k.starts_with(METADATA_PREFIX)) {
        Some(key) => Err(Invalid::SnapshotParameter { key: key.clone() }),
        None => Ok(()),
    }
}

impl<R: RdsApi> Controller<R> {
    /// Whether snapshots and clones can be offered: the pool is Btrfs, as
    /// last read (the background health check re-reads it every interval,
    /// and so does every call that reads the pool); read now only when it
    /// was never read, and when the RDS cannot be reached then, the CO is
    /// told to ask again.
    pub fn snapshots_supported(&self) -> Result<bool, Error> {
        if let Some(btrfs) = self.btrfs.get() {
            return Ok(btrfs.is_some());
        }
        match self.pool() {
            Ok(pool) => Ok(pool.btrfs().is_some()),
            Err(e) => {
                log::warn!("the pool's filesystem is unknown: {}", crate::error_chain(&e));
                Err(Error::PoolNotReadYet {
                    pool: self.settings.pool.clone(),
                })
            }
        }
    }

    /// The cache of the pool's filesystem, for the background health check
    /// to keep fresh.
    pub fn pool_fs_cache(&self) -> super::PoolFsCache {
        self.btrfs.clone()
    }

    /// The pool's Btrfs filesystem, read now (snapshots are re-checked
    /// against the pool on every call), or `SnapshotsUnsupported`.
    pub(super) fn snapshot_fs(&self, op: &'static str) -> Result<rds::BtrfsFs, Error> {
        let pool = self.pool()?;
        pool.btrfs().ok_or_else(|| Error::SnapshotsUnsupported {
            op,
            pool: self.settings.pool.clone(),
            fs: pool.fs.clone(),
        })
    }

    /// Every snapshot subvolume under the base path.
    pub(super) fn found_snapshots(&self, op: &'static str, fs: &rds::BtrfsFs) -> Result<Vec<Found>, Error> {
        let subs = self
            .rds
            .list_subvolumes(fs, &format!("{}/", self.settings.base_path))
            .map_err(|source| Error::Rds {
                context: format!("{op}: list subvolumes"),
                source: Box::new(source),
            })?;
        let mut found: Vec<Found> = subs
            .iter()
            .filter(|s| s.read_only)
            .filter_map(|s| parse_snapshot_path(&fs.path_of(&s.name)))
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// The sizes of the images inside these snapshots, from one `/file`
    /// listing of the base path.
    fn infos(&self, op: &'static str, found: &[Found]) -> Result<Vec<SnapshotInfo>, Error> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let files = self
            .rds
            .list_files(&format!("{}/", self.settings.base_path))
            .map_err(|source| Error::Rds {
                context: format!("{op}: list snapshot images"),
                source: Box::new(source),
            })?;
        let sizes: HashMap<&str, u64> = files
            .iter()
            .map(|f| (f.name.as_str(), f.size.unwrap_or(0)))
            .collect();
        Ok(found
            .iter()
            .map(|f| SnapshotInfo {
                id: f.id.clone(),
                source_volume_id: f.source.clone(),
                size_bytes: sizes.get(f.image().as_str()).copied().unwrap_or(0),
                creation_time: f.created,
                ready_to_use: true,
            })
            .collect())
    }

    /// Takes a read-only snapshot of a volume, or finds the one an earlier
    /// call with the same name and source took.
    pub fn create_snapshot(
        &self,
        name: &str,
        source_volume_id: &str,
        parameters: &HashMap<String, String>,
    ) -> Result<SnapshotInfo, Error> {
        const OP: &str = "CreateSnapshot";
        check_name(name).map_err(|reason| Error::Invalid {
            context: OP.into(),
            reason,
        })?;
        let shown = echo(name).to_string();
        check_snapshot_parameters(parameters).map_err(|reason| Error::Invalid {
            context: format!("{OP} {shown}"),
            reason,
        })?;
        let snap = SnapshotId::for_name(name);
        // The source's lock too: a snapshot during a delete of its source
        // is refused for one of them.
        let _guard = self.lock(OP, &[snap.as_str(), source_volume_id])?;
        let fs = self.snapshot_fs(OP)?;
        let all = self.found_snapshots(OP, &fs)?;
        if let Some(existing) = all.iter().find(|f| f.id == snap) {
            if existing.source.as_str() != source_volume_id {
                return Err(Error::SnapshotNameTaken {
                    name: name.to_string(),
                    id: snap,
                    source: existing.source.to_string(),
                    asked: source_volume_id.to_string(),
                });
            }
            let mut infos = self.infos(OP, std::slice::from_ref(existing))?;
            return infos.pop().ok_or(Error::NoSuchSnapshot {
                op: OP,
                snapshot_id: snap.to_string(),
            });
        }
        let (id, disk, _) = self.find_ours(OP, source_volume_id)?;
        let file = disk.file_path.clone().unwrap_or_default();
        let Some(subvolume) = layout::subvolume_of(&file, &id) else {
            return Err(Error::FlatVolume { op: OP, id });
        };
        let folder = subvolume
            .rsplit_once('/')
            .map(|(folder, _)| folder.to_string())
            .unwrap_or_default();
        let created = now_secs();
        let path = format!("{folder}/{}", snapshot_dir(&snap, &id, created));
        self.rds
            .snapshot_subvolume(&fs, &subvolume, &path, true)
            .map_err(|source| Error::Rds {
                context: format!("{OP} {shown}: snapshot volume {id}"),
                source: Box::new(source),
            })?;
        let size = disk.bytes().unwrap_or(0);
        info!("{OP} {shown}: snapshot {snap} of volume {id} taken ({size} bytes, {path})");
        Ok(SnapshotInfo {
            id: snap,
            source_volume_id: id,
            size_bytes: size,
            creation_time: created,
            ready_to_use: true,
        })
    }

    /// Deletes a snapshot; an id that names nothing is a success. Volumes
    /// restored from it are their own subvolumes and stay.
    pub fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), Error> {
        const OP: &str = "DeleteSnapshot";
        let Some(snap) = SnapshotId::parse(snapshot_id) else {
            return Ok(());
        };
        let _guard = self.lock(OP, &[snap.as_str()])?;
        let Some(fs) = self.pool()?.btrfs() else {
            return Ok(());
        };
        for found in self.found_snapshots(OP, &fs)?.iter().filter(|f| f.id == snap) {
            let removed = self
                .rds
                .remove_subvolume(&fs, &found.path)
                .map_err(|source| Error::Rds {
                    context: format!("{OP} {snap}"),
                    source: Box::new(source),
                })?;
            if removed {
                info!("{OP} {snap}: removed {}", found.path);
            }
        }
        Ok(())
    }

    /// One page of snapshots in id order, filtered by snapshot id and by
    /// source volume, after the snapshot a token names.
    pub fn list_snapshots(
        &self,
        snapshot_id: Option<&str>,
        source_volume_id: Option<&str>,
        starting_token: Option<&str>,
        max: Option<usize>,
    ) -> Result<SnapshotPage, Error> {
        const OP: &str = "ListSnapshots";
        let after = match starting_token {
            None => None,
            Some(token) => Some(parse_token(token).ok_or_else(|| Error::BadToken {
                token: token.to_string(),
            })?),
        };
        let empty = SnapshotPage {
            entries: Vec::new(),
            next_token: None,
        };
        // An id of another shape names no snapshot of ours.
        let wanted = match snapshot_id {
            Some(raw) => match SnapshotId::parse(raw) {
                Some(id) => Some(id),
                None => return Ok(empty),
            },
            None => None,
        };
        let Some(fs) = self.pool()?.btrfs() else {
            return Ok(empty);
        };
        let mut found = self.found_snapshots(OP, &fs)?;
        found.retain(|f| {
            wanted.as_ref().is_none_or(|w| &f.id == w)
                && source_volume_id.is_none_or(|s| f.source.as_str() == s)
        });
        let start = after.map_or(0, |a| found.partition_point(|f| f.id <= a));
        let page: Vec<Found> = found
            .iter()
            .skip(start)
            .take(max.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        let next_token = if start + page.len() < found.len() {
            page.last().map(|last| format!("{TOKEN_PREFIX}{}", last.id))
        } else {
            None
        };
        Ok(SnapshotPage {
            entries: self.infos(OP, &page)?,
            next_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_are_deterministic_and_strictly_shaped() {
        let a = SnapshotId::for_name("snapshot-1b2c");
        assert_eq!(a, SnapshotId::for_name("snapshot-1b2c"));
        assert_ne!(a, SnapshotId::for_name("snapshot-1b2d"));
        assert_eq!(a.as_str().len(), 33);
        assert_eq!(SnapshotId::parse(a.as_str()), Some(a.clone()));
        for bad in [
            "",
            "snap-",
            "snap-XYZ",
            "pvc-0123456789abcdef0123456789ab",
            "snap-0123456789abcdef0123456789abc",
        ] {
            assert_eq!(SnapshotId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn snapshot_paths_round_trip_and_nothing_else_parses() {
        let id = SnapshotId::for_name("s");
        let vol = VolumeId::for_name("v");
        let path = format!("storage-pool/csi/{}", snapshot_dir(&id, &vol, 1_700_000_000));
        let found = parse_snapshot_path(&path).unwrap();
        assert_eq!(
            (found.id.clone(), found.source.clone(), found.created),
            (id.clone(), vol.clone(), 1_700_000_000)
        );
        assert_eq!(found.image(), format!("{path}/{vol}.img"));
        for bad in [
            format!("storage-pool/csi/{vol}"),
            format!("storage-pool/csi/{id}.{vol}"),
            format!("storage-pool/csi/{id}.{vol}.12x"),
            format!("storage-pool/csi/{id}.{vol}.+12"),
            format!("{id}.{vol}.12"),
        ] {
            assert_eq!(parse_snapshot_path(&bad), None, "{bad}");
        }
    }

    #[test]
    fn only_the_snapshotters_metadata_is_accepted_as_parameters() {
        let ok: HashMap<String, String> = [(
            "csi.storage.k8s.io/volumesnapshot/name".to_string(),
            "s".to_string(),
        )]
        .into();
        assert_eq!(check_snapshot_parameters(&ok), Ok(()));
        let bad: HashMap<String, String> = [("compress".to_string(), "true".to_string())].into();
        assert_eq!(
            check_snapshot_parameters(&bad),
            Err(Invalid::SnapshotParameter {
                key: "compress".into()
            })
        );
    }
}
