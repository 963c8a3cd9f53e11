//! The controller's rules: creates, publishes (the single-node attachment
//! fence), expands, lists and deletes volumes on the RDS. The RDS is the
//! only state: each volume is a file-backed disk whose slot is the volume
//! id and whose comment holds the ownership record (CSI name, parameters
//! digest, attached nodes), so a restarted controller knows everything it
//! knew. No gRPC here: `csi::controller` adapts requests to these calls and
//! `csi::status` maps the typed errors.

use std::collections::HashSet;
use std::sync::Mutex;

use log::warn;

use crate::echo::echo;
use crate::locks::{VolumeGuard, VolumeLocks};
use crate::rds;
use crate::volume::{NqnPrefix, SizePolicy, VolumeId};

mod access;
mod attach;
mod clone;
mod error;
mod health;
mod layout;
pub mod params;
mod provision;
mod rds_api;
pub mod record;
mod snapshot;

pub use access::{check_access, Access, AccessMode, AccessType, Capability};
pub use clone::ContentSource;
pub use error::{Error, Invalid};
pub use health::RdsHealth;
pub use params::VolumeParams;
pub use provision::{
    CapacityInfo, CapacityRange, Condition, CreateRequest, Created, Expanded, Page, VolumeInfo,
};
pub use rds_api::RdsApi;
pub use record::Ownership;
pub use snapshot::{SnapshotId, SnapshotInfo, SnapshotPage, SNAPSHOT_PREFIX};

use record::owned;

/// What the controller is configured with (validated and built by `config`).
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Pool slot or mount point (`--rds-pool`).
    pub pool: String,
    /// Folder on the RDS under which every backing file lives (`--volume-base-path`).
    pub base_path: String,
    pub nqn_prefix: NqnPrefix,
    /// NVMe/TCP address the nodes connect to unless a StorageClass says otherwise.
    pub nvme_address: String,
    /// Pool bytes never handed out to volumes (`--capacity-reserve`).
    pub capacity_reserve: u64,
    pub sizes: SizePolicy,
    /// Multi-node access modes for block volumes (`--allow-multi-node-block`).
    pub allow_multi_node_block: bool,
    /// Export a volume only while it is published (the default; off with
    /// `--export-always`): made with its export off, exported by
    /// ControllerPublishVolume, unexported by the last unpublish.
    pub export_on_publish: bool,
    /// Per-node host access control (`--nvme-host-acl`): each published
    /// node's host NQN (see `fence`) in the disk's allow list.
    pub host_acl: bool,
}

/// The controller: its RDS, its settings, and the per-volume guards that
/// turn a second concurrent call on one volume into `Error::Busy`.
pub struct Controller<R: RdsApi = rds::Client> {
    rds: R,
    settings: ControllerSettings,
    locks: VolumeLocks,
    /// Volume folders made on the RDS by this process, so `make_directory`
    /// is asked once per folder, not once per volume.
    folders: Mutex<HashSet<String>>,
    /// The pool's Btrfs filesystem as last read; refreshed by every pool
    /// read, the background health check's included.
    btrfs: PoolFsCache,
}

/// The pool's filesystem as last read: `None` until the first read,
/// `Some(None)` for a pool that is not Btrfs. Shared with the background
/// health check, so ControllerGetCapabilities (answered without a thread
/// hop: it must never wait on the network) always has an answer to give.
#[derive(Clone, Default)]
pub struct PoolFsCache(std::sync::Arc<Mutex<Option<Option<rds::BtrfsFs>>>>);

impl PoolFsCache {
    /// What the last read said, if there was one.
    pub fn get(&self) -> Option<Option<rds::BtrfsFs>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records what a pool read said.
    pub fn set(&self, btrfs: Option<rds::BtrfsFs>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(btrfs);
    }
}

/// What a volume id names on the RDS.
enum Lookup {
    /// No disk with this slot (or the id cannot be a slot at all).
    Missing,
    /// A disk with this slot exists but is not ours: never touched.
    Foreign(Box<rds::Disk>),
    /// One of our volumes, with its record (a fresh one for a legacy disk).
    Ours(VolumeId, Box<rds::Disk>, Ownership),
}

impl Controller<rds::Client> {
    /// The controller over the REST client, which then deletes nothing
    /// outside the base path, whatever the controller asks: a second line
    /// of defence behind `owned`.
    pub fn with_client(rds: rds::Client, settings: ControllerSettings) -> Self {
        let rds = rds.with_base_path(&settings.base_path);
        Controller::new(rds, settings)
    }
}

impl<R: RdsApi> Controller<R> {
    pub fn new(rds: R, settings: ControllerSettings) -> Self {
        Controller {
            rds,
            settings,
            locks: VolumeLocks::new(),
            folders: Mutex::new(HashSet::new()),
            btrfs: PoolFsCache::default(),
        }
    }

    fn lock(&self, op: &'static str, keys: &[&str]) -> Result<VolumeGuard, Error> {
        self.locks
            .try_lock(keys)
            .map_err(|busy| Error::Busy { op, key: busy.key })
    }

    /// Makes sure the volume folder exists (once per folder per process).
    fn ensure_folder(&self, folder: &str) -> Result<(), Error> {
        {
            let made = self.folders.lock().unwrap_or_else(|p| p.into_inner());
            if made.contains(folder) {
                return Ok(());
            }
        }
        self.rds.make_directory(folder).map_err(|source| Error::Rds {
            context: format!("create folder {folder}"),
            source: Box::new(source),
        })?;
        self.folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(folder.to_string());
        Ok(())
    }

    /// The pool's capacity as the RDS reports it now.
    fn pool(&self) -> Result<rds::Pool, Error> {
        let pool = self.rds.pool(&self.settings.pool).map_err(|source| Error::Rds {
            context: format!("read pool {}", self.settings.pool),
            source: Box::new(source),
        })?;
        self.btrfs.set(pool.btrfs());
        Ok(pool)
    }

    /// The pool's Btrfs filesystem (`None` on any other pool): as last
    /// read, else read now.
    fn btrfs_fs(&self) -> Result<Option<rds::BtrfsFs>, Error> {
        if let Some(known) = self.btrfs.get() {
            return Ok(known);
        }
        Ok(self.pool()?.btrfs())
    }

    /// Pool bytes available to new volumes: free minus the reserve.
    fn available_in(&self, pool: &rds::Pool) -> Result<u64, Error> {
        let free = pool.free.ok_or_else(|| Error::PoolNotMounted {
            pool: self.settings.pool.clone(),
            state: pool.state.clone(),
        })?;
        Ok(free.saturating_sub(self.settings.capacity_reserve))
    }

    fn available(&self) -> Result<u64, Error> {
        self.available_in(&self.pool()?)
    }

    fn owned(&self, id: &VolumeId, disk: &rds::Disk) -> Option<Ownership> {
        owned(&self.settings, id, disk)
    }

    /// Looks a volume id up: one request, none for an id that cannot be a
    /// slot.
    fn lookup(&self, op: &str, raw: &str) -> Result<Lookup, Error> {
        let Some(id) = VolumeId::parse(raw) else {
            return Ok(Lookup::Missing);
        };
        match self.rds.disk(id.slot()) {
            Ok(Some(disk)) => match self.owned(&id, &disk) {
                Some(own) => Ok(Lookup::Ours(id, Box::new(disk), own)),
                None => Ok(Lookup::Foreign(Box::new(disk))),
            },
            Ok(None) => Ok(Lookup::Missing),
            Err(source) => Err(Error::Rds {
                context: format!("{op} {id}"),
                source: Box::new(source),
            }),
        }
    }

    /// One of our volumes, or `NoSuchVolume` (a foreign disk is, to the CO,
    /// a volume that does not exist).
    fn find_ours(&self, op: &'static str, raw: &str) -> Result<(VolumeId, rds::Disk, Ownership), Error> {
        match self.lookup(op, raw)? {
            Lookup::Ours(id, disk, own) => Ok((id, *disk, own)),
            Lookup::Foreign(disk) => {
                warn!(
                    "{op}: disk {} is not a volume of this driver; not touching it",
                    echo(&disk.slot)
                );
                Err(Error::NoSuchVolume {
                    op,
                    volume_id: raw.to_string(),
                })
            }
            Lookup::Missing => Err(Error::NoSuchVolume {
                op,
                volume_id: raw.to_string(),
            }),
        }
    }

    /// Records `own` in the comment of `disk` (just looked up) and checks
    /// it read back from RouterOS's answer: one request.
    fn write_record(
        &self,
        op: &'static str,
        id: &VolumeId,
        disk: &rds::Disk,
        own: &Ownership,
    ) -> Result<(), Error> {
        let comment = own.to_comment();
        let written = self
            .rds
            .set_comment_known(disk, &comment)
            .map_err(|source| Error::Rds {
                context: format!("{op} {id}: record attachment"),
                source: Box::new(source),
            })?;
        if written.comment != comment {
            return Err(Error::RecordNotKept {
                op,
                id: id.clone(),
                comment: written.comment,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod fake;
