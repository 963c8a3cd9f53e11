//! Provisioning: create (idempotent by name, slot collisions and changed
//! parameters refused, capacity checked against the pool), delete (only our
//! own disks; leftovers of a crashed delete finished), expand (never
//! shrink, never beyond the pool), and the read-only calls: validate, list,
//! capacity, get.

use std::collections::HashMap;

use log::{debug, info, warn};

use crate::echo::echo;
use crate::rds;
use crate::volume::{self, resolve_volume_path, FsType, Nqn, VolumeContext, VolumeId, SLOT_PREFIX};

use super::access::{check_access, Capability};
use super::error::{Error, Invalid};
use super::layout;
use super::params::{check_name, plan, Plan, VolumeParams};
use super::record::{creation_digest, Ownership};
use super::{Controller, Lookup, RdsApi};

/// ListVolumes tokens: this prefix and the last slot of the previous page.
/// A token is accepted only in exactly this form, naming a slot of the exact
/// shape this driver (or the Go driver) makes.
const TOKEN_PREFIX: &str = "v1:";

/// A CSI capacity range: bytes, 0 = unset (checked by `SizePolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacityRange {
    pub required: i64,
    pub limit: i64,
}

/// What CreateVolume asks for.
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    pub name: &'a str,
    pub capabilities: &'a [Capability],
    pub parameters: &'a HashMap<String, String>,
    pub capacity: CapacityRange,
    /// The snapshot or volume the new volume's content comes from.
    pub content_source: Option<super::ContentSource<'a>>,
}

/// A created (or found again) volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: VolumeId,
    pub capacity: u64,
    /// What the node needs to attach it.
    pub context: VolumeContext,
}

/// Whether a volume can be attached at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub abnormal: bool,
    pub message: String,
}

/// One volume as ListVolumes and ControllerGetVolume report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub id: VolumeId,
    pub capacity: u64,
    pub nodes: Vec<String>,
    pub condition: Condition,
}

/// One page of ListVolumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<VolumeInfo>,
    /// The token for the next page, when there is one.
    pub next_token: Option<String>,
}

/// What GetCapacity reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityInfo {
    pub available: u64,
    /// The largest volume that fits, in whole size steps.
    pub maximum_volume_size: u64,
    pub minimum_volume_size: u64,
}

/// An expanded volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expanded {
    pub capacity: u64,
    /// A filesystem must be grown on the node; a block device is done.
    pub node_expansion_required: bool,
}

impl<R: RdsApi> Controller<R> {
    /// Creates a volume, or finds the one an earlier call with the same name
    /// and parameters made (and finishes it when that call was cut short).
    /// Called twice with the same request, the second call sends one lookup.
    pub fn create(&self, req: CreateRequest<'_>) -> Result<Created, Error> {
        check_name(req.name).map_err(|reason| Error::Invalid {
            context: String::new(),
            reason,
        })?;
        let name = req.name;
        // Validated above, echoed all the same.
        let shown = echo(name).to_string();
        let Plan {
            access,
            params,
            fs_type,
            folder,
        } = plan(
            req.capabilities,
            req.parameters,
            &self.settings.base_path,
            self.settings.allow_multi_node_block,
        )
        .map_err(|reason| Error::Invalid {
            context: format!("CreateVolume {shown}"),
            reason,
        })?;
        let CapacityRange { required, limit } = req.capacity;
        let size = self
            .settings
            .sizes
            .size_for(required, limit)
            .map_err(|source| Error::Capacity {
                context: format!("CreateVolume {shown}"),
                source,
            })?;

        let id = VolumeId::for_name(name);
        let nqn = Nqn::for_volume(&self.settings.nqn_prefix, &id);
        // The flat path names the volume in the digest whatever the layout,
        // so a retry is the same request on either layout.
        let file_path = volume::backing_file(&folder, &id);
        let ctx = VolumeContext {
            nqn: nqn.clone(),
            nvme_address: params
                .nvme_address
                .clone()
                .unwrap_or_else(|| self.settings.nvme_address.clone()),
            nvme_port: params.nvme_port,
            // Block volumes have no filesystem; mounts default to ext4 on the node.
            fs_type: if access.block {
                None
            } else {
                Some(fs_type.unwrap_or(FsType::Ext4))
            },
            connection: params.connection,
            host: None,
        };
        let mut digest = creation_digest(&file_path, &ctx, access.block);
        // The same name from another source (or none) is another request.
        if let Some(src) = &req.content_source {
            digest = super::record::params_digest(&[("volume", digest), ("source", src.key())]);
        }
        // Set when this call made (or found) the new volume's subvolume.
        let mut btrfs: Option<rds::BtrfsFs> = None;
        let mut keys = vec![name, id.as_str()];
        // The source's own lock: a clone and a delete of its source exclude each other.
        keys.extend(req.content_source.as_ref().map(|s| s.id()));
        let _guard = self.lock("CreateVolume", &keys)?;
        // The backing file and source size of a clone made below.
        let mut cloned: Option<(String, u64)> = None;

        // Request 1: what is there. Everything after works from this answer.
        let existing = self.rds.disk(id.slot()).map_err(|source| Error::Rds {
            context: format!("CreateVolume {shown}: look up disk {id}"),
            source: Box::new(source),
        })?;
        let own = match &existing {
            Some(disk) => {
                let Some(own) = self.owned(&id, disk) else {
                    return Err(Error::SlotTaken {
                        name: name.to_string(),
                        id,
                        comment: disk.comment.clone(),
                    });
                };
                if own.name != name {
                    return Err(Error::SlotCollision {
                        name: name.to_string(),
                        id,
                        owner: own.name,
                    });
                }
                if own.params_digest != digest {
                    return Err(Error::ParametersDiffer {
                        name: name.to_string(),
                        id,
                    });
                }
                if let Some(have) = disk.bytes() {
                    if have < size || (limit > 0 && have > limit as u64) {
                        return Err(Error::SizeOutsideRange {
                            name: name.to_string(),
                            id,
                            have,
                            required,
                            limit,
                        });
                    }
                }
                debug!("CreateVolume {shown}: volume {id} exists, checking its export");
                own
            }
            None => {
                // Request 2: room on the pool (and its filesystem).
                let pool = self.pool()?;
                let available = self.available_in(&pool)?;
                if size > available {
                    return Err(Error::NoSpaceToCreate {
                        name: name.to_string(),
                        pool: self.settings.pool.clone(),
                        needed: size,
                        available,
                        reserve: self.settings.capacity_reserve,
                    });
                }
                // Once per folder per process.
                self.ensure_folder(&folder)?;
                match req.content_source {
                    None => btrfs = self.volume_subvolume(&pool, &folder, &id, &shown)?,
                    Some(src) => {
                        let (fs, image, src_size) = self.clone_subvolume(&pool, &folder, &id, src, &shown)?;
                        btrfs = Some(fs);
                        cloned = Some((image, src_size));
                    }
                }
                new_record(name, digest, &params)
            }
        };
        // The backing file: where an existing disk has it (either layout),
        // else in the new volume's own subvolume on a Btrfs pool.
        let disk_file = match &existing {
            Some(disk) => disk
                .file_path
                .clone()
                .filter(|f| {
                    layout::subvolume_of(f, &id)
                        .is_some_and(|sub| sub == layout::subvolume_path(&folder, &id))
                })
                .unwrap_or_else(|| file_path.clone()),
            None => match &cloned {
                Some((image, _)) => image.clone(),
                None if btrfs.is_some() => layout::nested_file(&folder, &id),
                None => file_path.clone(),
            },
        };
        // A clone is at least its source's size: smaller is OUT_OF_RANGE;
        // with no size asked it is the source's; larger grows the image.
        let size = match &cloned {
            Some((_, src_size))
                if (required > 0 && *src_size > size) || (limit > 0 && *src_size > limit as u64) =>
            {
                let undo = btrfs
                    .as_ref()
                    .map(|fs| (fs, layout::subvolume_path(&folder, &id)));
                if let Some((fs, sub)) = undo {
                    if let Err(e) = self.rds.remove_subvolume(fs, &sub) {
                        warn!("CreateVolume {shown}: could not remove {sub}: {e}");
                    }
                }
                return Err(Error::SmallerThanSource {
                    name: name.to_string(),
                    source: req.content_source.map(|s| s.id().to_string()).unwrap_or_default(),
                    source_size: *src_size,
                    required,
                });
            }
            Some((_, src_size)) => size.max(*src_size),
            None => size,
        };
        let new = rds::NewDisk {
            slot: id.to_string(),
            file_path: disk_file.clone(),
            // An existing volume may have been expanded since; keep its size.
            size_bytes: existing
                .as_ref()
                .and_then(|d| d.bytes())
                .unwrap_or(size)
                .max(size),
            comment: own.to_comment(),
            nqn: Some(nqn.to_string()),
            port: ctx.nvme_port,
        };
        // Requests 3 and 4: PUT (when missing) and the PATCH of port, NQN
        // and (with --export-always) the export, whose answer is the
        // read-back. With export on publish the disk stays off the network
        // until ControllerPublishVolume. A disk an earlier attempt left
        // half-set is finished here; a second call with the same request
        // makes no request at all.
        let disk = match self
            .rds
            .create_disk_known(&new, existing.as_ref(), !self.settings.export_on_publish)
        {
            Ok(disk) => disk,
            Err(e) => {
                // A definite failure after the disk entry was made would leave
                // half a volume behind; a transient one is finished by the retry.
                if existing.is_none() && !e.is_transient() {
                    if let Err(undo) = self.rds.remove_disk(id.slot(), &disk_file) {
                        warn!("CreateVolume {shown}: could not undo the failed create of {id}: {undo}");
                    } else if let Some(fs) = &btrfs {
                        let sub = layout::subvolume_path(&folder, &id);
                        if let Err(undo) = self.rds.remove_subvolume(fs, &sub) {
                            warn!("CreateVolume {shown}: could not remove the subvolume {sub} of the failed create: {undo}");
                        }
                    }
                }
                return Err(Error::Rds {
                    context: format!("CreateVolume {shown}: create disk {id}"),
                    source: Box::new(e),
                });
            }
        };
        if existing.is_none() {
            info!(
                "CreateVolume {shown}: created volume {id} ({} bytes, {disk_file}, {nqn})",
                new.size_bytes
            );
        }
        Ok(Created {
            capacity: disk.bytes().unwrap_or(0),
            id,
            context: ctx,
        })
    }

    /// Deletes one of our volumes: disk, export and backing file. An id
    /// that names nothing, or a disk that is not ours, is a success that
    /// touches nothing; called twice, the second call finds nothing.
    pub fn delete(&self, volume_id: &str) -> Result<(), Error> {
        // An id that cannot be a slot names nothing to delete.
        let Some(id) = VolumeId::parse(volume_id) else {
            return Ok(());
        };
        let _guard = self.lock("DeleteVolume", &[id.as_str()])?;
        match self.lookup("DeleteVolume", id.as_str())? {
            Lookup::Ours(id, disk, own) => {
                if !own.nodes.is_empty() {
                    return Err(Error::StillPublished { id, nodes: own.nodes });
                }
                // Export off, disk removed, file removed, from the disk just
                // read: each step is skipped when already done, so a retry
                // after a crash finishes the job.
                self.rds.remove_disk_known(&disk).map_err(|source| Error::Rds {
                    context: format!("DeleteVolume {id}"),
                    source: Box::new(source),
                })?;
                info!(
                    "DeleteVolume {id}: removed disk and {}",
                    disk.file_path.as_deref().unwrap_or_default()
                );
                // Then the volume's own subvolume (nested layout), which a
                // retry after a crash here finds as a leftover below.
                if let Some(sub) = disk
                    .file_path
                    .as_deref()
                    .and_then(|f| layout::subvolume_of(f, &id))
                {
                    self.remove_leftover_subvolumes(&id, &[sub])?;
                }
            }
            Lookup::Foreign(disk) => {
                // To the CO this is a volume that does not exist; to the
                // operator it is someone's data, left exactly as it is.
                warn!(
                    "DeleteVolume: disk {} (backing file {}) is not a volume of this driver (no ownership record, and not a pvc-<uuid> volume under {} exported under {}); answering OK without touching it",
                    echo(&disk.slot),
                    echo(disk.file_path.as_deref().unwrap_or_default()),
                    self.settings.base_path,
                    self.settings.nqn_prefix.as_str()
                );
            }
            Lookup::Missing if id.is_driver_shape() => {
                // The disk may be gone while its backing file stayed (a crash
                // between the steps): find the file by name under the base.
                let suffix = format!("/{}.img", id.slot());
                let files = self
                    .rds
                    .list_files(&format!("{}/", self.settings.base_path))
                    .map_err(|source| Error::Rds {
                        context: format!("DeleteVolume {id}: list backing files"),
                        source: Box::new(source),
                    })?;
                let own = |name: &str| name.ends_with(&suffix) && layout::is_own_leftover(name, &id);
                for file in files.iter().filter(|f| own(&f.name)) {
                    self.rds.remove_file(&file.name).map_err(|source| Error::Rds {
                        context: format!("DeleteVolume {id}: remove {}", file.name),
                        source: Box::new(source),
                    })?;
                    info!("DeleteVolume {id}: removed leftover backing file {}", file.name);
                }
                // A subvolume `<folder>/<slot>` left by a crash after the
                // disk went (or before it was made).
                let dir_suffix = format!("/{}", id.slot());
                let dirs: Vec<String> = files
                    .iter()
                    .filter(|f| f.is_folder() && f.name.ends_with(&dir_suffix))
                    .map(|f| f.name.clone())
                    .collect();
                if !dirs.is_empty() {
                    self.remove_leftover_subvolumes(&id, &dirs)?;
                }
            }
            Lookup::Missing => {}
        }
        Ok(())
    }

    /// Grows one of our volumes to fit `range`; never shrinks (a smaller
    /// request is already satisfied, and so is a repeat).
    pub fn expand(&self, volume_id: &str, range: CapacityRange, block: bool) -> Result<Expanded, Error> {
        let _guard = self.lock("ControllerExpandVolume", &[volume_id])?;
        let (id, disk, _) = self.find_ours("ControllerExpandVolume", volume_id)?;
        let current = disk.bytes().unwrap_or(0);
        let wanted = self
            .settings
            .sizes
            .size_for(range.required, range.limit)
            .map_err(|source| Error::Capacity {
                context: format!("ControllerExpandVolume {id}"),
                source,
            })?;
        let capacity = if wanted <= current {
            current
        } else {
            let pool = self.pool()?;
            // More than the whole pool can never fit, whatever is freed.
            if wanted > pool.size {
                return Err(Error::BeyondPool {
                    id,
                    wanted,
                    pool: self.settings.pool.clone(),
                    pool_size: pool.size,
                });
            }
            let available = self.available_in(&pool)?;
            if wanted - current > available {
                return Err(Error::NoSpaceToGrow {
                    id,
                    pool: self.settings.pool.clone(),
                    by: wanted - current,
                    available,
                });
            }
            let grown = self
                .rds
                .grow_disk_known(&disk, wanted)
                .map_err(|source| Error::Rds {
                    context: format!("ControllerExpandVolume {id}"),
                    source: Box::new(source),
                })?;
            let size = grown.bytes().unwrap_or(0);
            info!("ControllerExpandVolume {id}: grown from {current} to {size} bytes");
            size
        };
        Ok(Expanded {
            capacity,
            node_expansion_required: !block,
        })
    }

    /// Whether CreateVolume would accept these capabilities and parameters
    /// for one of our volumes: `Ok(None)` confirms, `Ok(Some(why))` does not.
    pub fn validate(
        &self,
        volume_id: &str,
        caps: &[Capability],
        parameters: &HashMap<String, String>,
    ) -> Result<Option<Invalid>, Error> {
        self.find_ours("ValidateVolumeCapabilities", volume_id)?;
        // Exactly what CreateVolume would accept is confirmed, nothing more.
        Ok(plan(
            caps,
            parameters,
            &self.settings.base_path,
            self.settings.allow_multi_node_block,
        )
        .err())
    }

    /// One page of our volumes, in id order, after the volume a token
    /// names; `max` entries at most (`None`: all).
    pub fn list(&self, starting_token: Option<&str>, max: Option<usize>) -> Result<Page, Error> {
        // The token is `v1:` and the last volume id of the previous page:
        // stable when volumes come and go between pages.
        let after = match starting_token {
            None => None,
            Some(token) => Some(parse_token(token).ok_or_else(|| Error::BadToken {
                token: token.to_string(),
            })?),
        };
        let disks = self.rds.list_disks(SLOT_PREFIX).map_err(|source| Error::Rds {
            context: "ListVolumes".into(),
            source: Box::new(source),
        })?;
        let mut volumes: Vec<(VolumeId, rds::Disk, Ownership)> = disks
            .into_iter()
            .filter_map(|d| {
                let id = VolumeId::parse(&d.slot)?;
                let own = self.owned(&id, &d)?;
                Some((id, d, own))
            })
            .collect();
        volumes.sort_by(|a, b| a.0.cmp(&b.0));
        let start = after.map_or(0, |a| volumes.partition_point(|v| v.0 <= a));
        let entries: Vec<VolumeInfo> = volumes
            .iter()
            .skip(start)
            .take(max.unwrap_or(usize::MAX))
            .map(|(id, disk, own)| info_of(id, disk, own, self.settings.export_on_publish))
            .collect();
        let next_token = if start + entries.len() < volumes.len() {
            entries.last().map(|last| format!("{TOKEN_PREFIX}{}", last.id))
        } else {
            None
        };
        Ok(Page { entries, next_token })
    }

    /// Room on the pool for volumes with these parameters and capabilities.
    pub fn capacity(
        &self,
        parameters: &HashMap<String, String>,
        caps: &[Capability],
    ) -> Result<CapacityInfo, Error> {
        let invalid = |reason| Error::Invalid {
            context: "GetCapacity".into(),
            reason,
        };
        let params = VolumeParams::parse(parameters).map_err(|e| invalid(Invalid::Parameter(e)))?;
        if let Err(rule) = resolve_volume_path(&self.settings.base_path, params.volume_path.as_deref()) {
            return Err(invalid(Invalid::VolumePath { value: None, rule }));
        }
        if !caps.is_empty() {
            check_access(caps, self.settings.allow_multi_node_block).map_err(invalid)?;
        }
        let available = self.available()?;
        let step = self.settings.sizes.granularity;
        Ok(CapacityInfo {
            available,
            maximum_volume_size: available / step * step,
            minimum_volume_size: self.settings.sizes.minimum,
        })
    }

    /// One of our volumes, with the nodes it is published to.
    pub fn get(&self, volume_id: &str) -> Result<VolumeInfo, Error> {
        let (id, disk, own) = self.find_ours("ControllerGetVolume", volume_id)?;
        Ok(info_of(&id, &disk, &own, self.settings.export_on_publish))
    }
}

/// The record a new volume gets.
fn new_record(name: &str, digest: String, params: &VolumeParams) -> Ownership {
    Ownership {
        name: name.to_string(),
        params_digest: digest,
        pv: params.pv_name.clone(),
        pvc: match (&params.pvc_namespace, &params.pvc_name) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            (None, Some(n)) => Some(n.clone()),
            _ => None,
        },
        ..Default::default()
    }
}

fn info_of(id: &VolumeId, disk: &rds::Disk, own: &Ownership, export_on_publish: bool) -> VolumeInfo {
    VolumeInfo {
        id: id.clone(),
        capacity: disk.bytes().unwrap_or(0),
        nodes: own.nodes.clone(),
        // With export on publish an unpublished volume is rightly off the
        // network; a published one must be on it.
        condition: condition_of(disk, own.nodes.is_empty() && export_on_publish),
    }
}

/// The volume id a ListVolumes token names: `v1:<slot>`, the slot of the
/// exact shape this driver or the Go driver makes; `None` for anything else.
fn parse_token(token: &str) -> Option<VolumeId> {
    let id = VolumeId::parse(token.strip_prefix(TOKEN_PREFIX)?)?;
    id.is_driver_shape().then_some(id)
}

/// Abnormal when the disk is not exported (no node can attach it), unless
/// `unexported_is_normal` (an unpublished volume under export on publish).
fn condition_of(disk: &rds::Disk, unexported_is_normal: bool) -> Condition {
    if !disk.nvme_tcp_export && unexported_is_normal {
        Condition {
            abnormal: false,
            message: "not published: not exported over NVMe/TCP".into(),
        }
    } else if disk.nvme_tcp_export {
        Condition {
            abnormal: false,
            message: "exported over NVMe/TCP".into(),
        }
    } else {
        Condition {
            abnormal: true,
            message: format!(
                "disk {} is not exported over NVMe/TCP (nvme-tcp-export is off)",
                disk.slot
            ),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    const LEGACY: &str = "pvc-0e7c2a9d-41b3-4c55-9f0e-6a1d2b3c4d5e";

    #[test]
    fn list_tokens_are_versioned_and_exact() {
        let id = VolumeId::for_name("vol-a");
        assert_eq!(parse_token(&format!("v1:{id}")), Some(id.clone()));
        assert_eq!(parse_token(&format!("v1:{LEGACY}")).unwrap().as_str(), LEGACY);
        for bad in [
            id.to_string(),
            format!("v2:{id}"),
            "v1:vm-backup".into(),
            "v1:pvc-1".into(),
            "v1:".into(),
            "not/a token".into(),
            format!("v1:{id}x"),
        ] {
            assert_eq!(parse_token(&bad), None, "{bad}");
        }
    }

    #[test]
    fn condition_reports_a_missing_export() {
        let disk = |export| crate::controller::fake::disk("", export);
        assert!(!condition_of(&disk(true), false).abnormal);
        let c = condition_of(&disk(false), false);
        assert!(c.abnormal && c.message.contains("pvc-1"), "{}", c.message);
        // Unpublished under export on publish: off the network is normal.
        assert!(!condition_of(&disk(false), true).abnormal);
        assert!(!condition_of(&disk(true), true).abnormal);
    }
}

#[cfg(test)]
mod rules {
    //! Create, delete, expand and list against the in-memory RDS.

    use std::collections::HashMap;

    use crate::controller::fake::*;
    use crate::controller::*;
    use crate::volume::{GIB, MIB};

    #[test]
    fn create_is_idempotent_by_name() {
        let c = controller_always(10 * GIB);
        let none = HashMap::new();
        let first = create(&c, "vol-a", &none, GIB).unwrap();
        assert_eq!(first.id, VolumeId::for_name("vol-a"));
        assert_eq!(first.capacity, GIB);
        let made = c.rds.changes();
        assert_eq!(
            made,
            vec![
                "mkdir storage-pool/csi".to_string(),
                format!("create {}", first.id),
                format!("export {}", first.id)
            ]
        );
        // The same request again: the same volume, and no change on the RDS.
        let again = create(&c, "vol-a", &none, GIB).unwrap();
        assert_eq!(again, first);
        assert_eq!(c.rds.changes(), made);
    }

    #[test]
    fn create_finishes_a_volume_left_unexported() {
        let c = controller_always(10 * GIB);
        let first = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
        c.rds
            .state()
            .disks
            .get_mut(first.id.slot())
            .unwrap()
            .nvme_tcp_export = false;
        create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
        assert_eq!(c.rds.changes().last().unwrap(), &format!("export {}", first.id));
        assert!(c.rds.state().disks[first.id.slot()].nvme_tcp_export);
    }

    #[test]
    fn create_refuses_a_slot_held_by_another_name_or_by_hand() {
        let c = controller(10 * GIB);
        let id = VolumeId::for_name("vol-a");
        // A record for another name on the slot vol-a hashes to: a collision.
        let other = Ownership {
            name: "vol-b".into(),
            params_digest: "x".into(),
            ..Default::default()
        };
        c.rds.insert(rds::Disk {
            slot: id.to_string(),
            comment: other.to_comment(),
            ..disk("", true)
        });
        let err = create(&c, "vol-a", &HashMap::new(), GIB).unwrap_err();
        // The record names vol-b, whose slot is not this one: not ours at all.
        assert!(matches!(err, Error::SlotTaken { .. }), "{err}");
        // A disk made by hand on the slot: taken, and left as it is.
        c.rds.state().disks.get_mut(id.slot()).unwrap().comment = "made by hand".into();
        let err = create(&c, "vol-a", &HashMap::new(), GIB).unwrap_err();
        match &err {
            Error::SlotTaken { comment, .. } => assert_eq!(comment, "made by hand"),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("\"made by hand\""), "{err}");
        assert!(c.rds.changes().is_empty(), "{:?}", c.rds.changes());
    }

    #[test]
    fn create_refuses_the_same_name_with_other_parameters_or_size() {
        let c = controller(10 * GIB);
        create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
        let mut params = HashMap::new();
        params.insert("reconnectDelay".to_string(), "7".to_string());
        let err = create(&c, "vol-a", &params, GIB).unwrap_err();
        assert!(matches!(err, Error::ParametersDiffer { .. }), "{err}");
        let err = create(&c, "vol-a", &HashMap::new(), 2 * GIB).unwrap_err();
        match err {
            Error::SizeOutsideRange { have, required, .. } => {
                assert_eq!((have, required), (GIB, 2 * GIB as i64))
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn create_checks_room_on_the_pool_before_creating() {
        let c = Controller::new(
            FakeRds::with_pool(3 * GIB),
            ControllerSettings {
                capacity_reserve: GIB,
                ..settings()
            },
        );
        let err = create(&c, "vol-a", &HashMap::new(), 2 * GIB + MIB).unwrap_err();
        match err {
            Error::NoSpaceToCreate {
                needed, available, ..
            } => {
                assert_eq!((needed, available), (2 * GIB + MIB, 2 * GIB))
            }
            other => panic!("{other}"),
        }
        assert!(c.rds.changes().is_empty());
        create(&c, "vol-a", &HashMap::new(), 2 * GIB).unwrap();
        // An unmounted pool reports no free space: unavailable, not full.
        c.rds.state().pool_free = None;
        let err = create(&c, "vol-b", &HashMap::new(), GIB).unwrap_err();
        assert!(matches!(err, Error::PoolNotMounted { .. }), "{err}");
    }

    #[test]
    fn delete_leaves_a_foreign_disk_untouched() {
        let c = controller(10 * GIB);
        let legacy_shape = "pvc-0e7c2a9d-41b3-4c55-9f0e-6a1d2b3c4d5e";
        c.rds.insert(rds::Disk {
            slot: legacy_shape.into(),
            file_path: Some("storage-pool/vms/backup.img".into()),
            comment: "vm backup".into(),
            ..disk("", true)
        });
        c.delete(legacy_shape).unwrap();
        assert!(c.rds.state().disks.contains_key(legacy_shape));
        assert!(c.rds.state().files.contains_key("storage-pool/vms/backup.img"));
        assert!(c.rds.changes().is_empty(), "{:?}", c.rds.changes());
    }

    #[test]
    fn delete_removes_our_volume_once_and_refuses_a_published_one() {
        let c = controller(10 * GIB);
        let v = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
        let cap = mount_cap(AccessMode::SingleNodeWriter);
        c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
        let err = c.delete(v.id.as_str()).unwrap_err();
        assert!(matches!(err, Error::StillPublished { .. }), "{err}");
        c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
        c.delete(v.id.as_str()).unwrap();
        assert!(c.rds.state().disks.is_empty() && c.rds.state().files.is_empty());
        let before = c.rds.changes();
        // Twice: nothing left, nothing done (but a look for a leftover file).
        c.delete(v.id.as_str()).unwrap();
        assert_eq!(c.rds.changes(), before);
        // An id that cannot be a slot names nothing.
        c.delete("Not A Slot").unwrap();
    }

    #[test]
    fn delete_finishes_a_leftover_backing_file() {
        let c = controller(10 * GIB);
        let id = VolumeId::for_name("vol-a");
        let file = format!("storage-pool/csi/{id}.img");
        c.rds.state().files.insert(file.clone(), GIB);
        c.delete(id.as_str()).unwrap();
        assert_eq!(c.rds.changes(), vec![format!("remove file {file}")]);
    }

    #[test]
    fn expand_beyond_the_pool_is_out_of_range_and_never_shrinks() {
        let c = controller(4 * GIB);
        let v = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
        let range = |bytes: u64| CapacityRange {
            required: bytes as i64,
            limit: 0,
        };
        let err = c.expand(v.id.as_str(), range(5 * GIB), false).unwrap_err();
        match err {
            Error::BeyondPool {
                wanted, pool_size, ..
            } => assert_eq!((wanted, pool_size), (5 * GIB, 4 * GIB)),
            other => panic!("{other}"),
        }
        // Within the pool but more than is free: no space (yet).
        c.rds.state().pool_free = Some(GIB / 2);
        let err = c.expand(v.id.as_str(), range(2 * GIB), false).unwrap_err();
        assert!(matches!(err, Error::NoSpaceToGrow { .. }), "{err}");
        c.rds.state().pool_free = Some(3 * GIB);
        let grown = c.expand(v.id.as_str(), range(2 * GIB), false).unwrap();
        assert_eq!(grown.capacity, 2 * GIB);
        assert!(grown.node_expansion_required);
        // Smaller than now: satisfied as it is, nothing sent.
        let changes = c.rds.changes();
        let same = c.expand(v.id.as_str(), range(GIB), true).unwrap();
        assert_eq!((same.capacity, same.node_expansion_required), (2 * GIB, false));
        assert_eq!(c.rds.changes(), changes);
    }

    #[test]
    fn list_pages_only_our_volumes() {
        let c = controller(10 * GIB);
        for name in ["a", "b", "c"] {
            create(&c, name, &HashMap::new(), GIB).unwrap();
        }
        // A disk made by hand under our prefix is never listed.
        c.rds.insert(rds::Disk {
            slot: "pvc-handmade".into(),
            ..disk("", true)
        });
        let first = c.list(None, Some(2)).unwrap();
        assert_eq!(first.entries.len(), 2);
        let token = first.next_token.clone().unwrap();
        let rest = c.list(Some(&token), None).unwrap();
        assert_eq!(rest.entries.len(), 1);
        assert_eq!(rest.next_token, None);
        let mut all: Vec<VolumeId> = first
            .entries
            .iter()
            .chain(&rest.entries)
            .map(|v| v.id.clone())
            .collect();
        all.sort();
        let mut want: Vec<VolumeId> = ["a", "b", "c"].iter().map(|n| VolumeId::for_name(n)).collect();
        want.sort();
        assert_eq!(all, want);
        assert!(matches!(
            c.list(Some("v1:pvc-handmade"), None),
            Err(Error::BadToken { .. })
        ));
    }

    #[test]
    fn a_second_call_on_a_busy_volume_is_refused() {
        let c = controller(10 * GIB);
        let v = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
        let _held = c.lock("test", &[v.id.as_str()]).unwrap();
        let err = c.delete(v.id.as_str()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Busy {
                    op: "DeleteVolume",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn two_provisioner_names_on_one_slot_collide() {
        let c = controller(10 * GIB);
        // The slot keeps the first 28 hex digits of a pvc-<uuid> name: two
        // names that differ only after them share it.
        let a = "pvc-3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b";
        let b = "pvc-3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3fffff";
        assert_eq!(VolumeId::for_name(a), VolumeId::for_name(b));
        create(&c, a, &HashMap::new(), GIB).unwrap();
        let changes = c.rds.changes();
        match create(&c, b, &HashMap::new(), GIB).unwrap_err() {
            Error::SlotCollision { owner, name, .. } => assert_eq!((owner.as_str(), name.as_str()), (a, b)),
            other => panic!("{other}"),
        }
        assert_eq!(c.rds.changes(), changes);
    }
}
