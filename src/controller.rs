//! The CSI Controller service: creates, publishes (the single-node attachment
//! fence), expands, lists and deletes volumes on the RDS. The RDS is the only
//! state: each volume is a file-backed disk whose slot is the volume id and
//! whose comment holds the ownership record (CSI name, parameters digest,
//! attached nodes), so a restarted controller knows everything it knew.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use grpcio::RpcStatus;
use log::{debug, info};

use crate::echo::echo;
use crate::locks::{VolumeGuard, VolumeLocks};
use crate::proto::csi;
use crate::proto::csi::volume_capability::access_mode::Mode;
use crate::proto::grpc::Controller;
use crate::rds;
use crate::server::CallInfo;
use crate::status;
use crate::volume::{
    self, check_name, params_digest, resolve_volume_path, CapacityError, FsType, Nqn, NqnPrefix, Ownership,
    SizePolicy, VolumeContext, VolumeId, VolumeParams,
};

/// ListVolumes tokens: this prefix and the last slot of the previous page.
/// A token is accepted only in exactly this form, naming a slot of the exact
/// shape this driver (or the Go driver) makes.
const TOKEN_PREFIX: &str = "v1:";

/// What the controller is configured with (validated by `config`).
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
}

pub struct ControllerService {
    rds: rds::Client,
    settings: ControllerSettings,
    locks: VolumeLocks,
    /// Volume folders made on the RDS by this process, so `make_directory`
    /// is asked once per folder, not once per volume.
    folders: Mutex<HashSet<String>>,
}

/// What a set of volume capabilities asks for, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Access {
    block: bool,
    fs_type: Option<FsType>,
    multi_node: bool,
}

/// A CreateVolume request's capabilities and parameters, once validated:
/// what CreateVolume acts on and what ValidateVolumeCapabilities confirms.
struct Plan {
    access: Access,
    params: VolumeParams,
    fs_type: Option<FsType>,
    /// The resolved volume folder under the base path.
    folder: String,
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

impl ControllerService {
    pub fn new(rds: rds::Client, settings: ControllerSettings) -> Self {
        // The client deletes nothing outside the base path, whatever the
        // controller asks: a second line of defence behind `owned`.
        let rds = rds.with_base_path(&settings.base_path);
        ControllerService {
            rds,
            settings,
            locks: VolumeLocks::new(),
            folders: Mutex::new(HashSet::new()),
        }
    }

    fn lock(&self, method: &str, keys: &[&str]) -> Result<VolumeGuard, RpcStatus> {
        self.locks.try_lock(keys).map_err(|busy| {
            status::aborted(format!(
                "{method}: an operation on {} is already in progress; retry later",
                busy.key
            ))
        })
    }

    /// Validates volume capabilities; `Err` says which one is unsupported and why.
    fn check_access(&self, caps: &[csi::VolumeCapability]) -> Result<Access, String> {
        if caps.is_empty() {
            return Err("volume_capabilities is required".into());
        }
        let mut access = Access {
            block: false,
            fs_type: None,
            multi_node: false,
        };
        for (i, cap) in caps.iter().enumerate() {
            let block = if cap.has_block() {
                true
            } else if cap.has_mount() {
                false
            } else {
                return Err(format!(
                    "volume_capabilities[{i}]: access_type (block or mount) is required"
                ));
            };
            if i > 0 && block != access.block {
                return Err("volume_capabilities mix block and mount access".into());
            }
            access.block = block;
            if !block {
                // The node's own rule, so a volume is never made with flags
                // its stage would refuse.
                volume::check_mount_flags(&cap.mount().mount_flags)
                    .map_err(|e| format!("volume_capabilities[{i}].mount.mount_flags: {e}"))?;
                let fs = &cap.mount().fs_type;
                if !fs.is_empty() {
                    let fs = FsType::parse(fs)
                        .map_err(|e| format!("volume_capabilities[{i}].mount.fs_type: {e}"))?;
                    if access.fs_type.is_some_and(|other| other != fs) {
                        return Err("volume_capabilities ask for different filesystems".into());
                    }
                    access.fs_type = Some(fs);
                }
            }
            let mode = cap.access_mode.mode.enum_value_or_default();
            let multi = match mode {
                Mode::SINGLE_NODE_WRITER
                | Mode::SINGLE_NODE_READER_ONLY
                | Mode::SINGLE_NODE_SINGLE_WRITER
                | Mode::SINGLE_NODE_MULTI_WRITER => false,
                Mode::MULTI_NODE_READER_ONLY
                | Mode::MULTI_NODE_SINGLE_WRITER
                | Mode::MULTI_NODE_MULTI_WRITER => true,
                Mode::UNKNOWN => return Err(format!("volume_capabilities[{i}].access_mode is required")),
            };
            if multi {
                if !block {
                    return Err(format!(
                        "volume_capabilities[{i}]: access mode {mode:?} needs a block volume: an ext4 or xfs filesystem must never be mounted on two nodes at once"
                    ));
                }
                if !self.settings.allow_multi_node_block {
                    return Err(format!(
                        "volume_capabilities[{i}]: access mode {mode:?} is disabled (start the controller with --allow-multi-node-block to allow shared block volumes)"
                    ));
                }
            }
            access.multi_node |= multi;
        }
        Ok(access)
    }

    fn rds_error(&self, what: &str, err: rds::Error) -> RpcStatus {
        status::from_rds(what, &err)
    }

    /// Makes sure the volume folder exists (once per folder per process).
    fn ensure_folder(&self, folder: &str) -> Result<(), RpcStatus> {
        {
            let made = self.folders.lock().unwrap_or_else(|p| p.into_inner());
            if made.contains(folder) {
                return Ok(());
            }
        }
        self.rds
            .make_directory(folder)
            .map_err(|e| self.rds_error(&format!("create folder {folder}"), e))?;
        self.folders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(folder.to_string());
        Ok(())
    }

    /// Validates a CreateVolume's capabilities and parameters: the one
    /// validation CreateVolume and ValidateVolumeCapabilities both apply.
    fn plan(
        &self,
        caps: &[csi::VolumeCapability],
        parameters: &HashMap<String, String>,
    ) -> Result<Plan, String> {
        let access = self.check_access(caps)?;
        let params = VolumeParams::parse(parameters).map_err(|e| e.to_string())?;
        let fs_type = match (access.fs_type, params.fs_type) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "parameter \"fsType\" = {b} contradicts volume_capabilities fs_type {a}"
                ))
            }
            (a, b) => a.or(b),
        };
        let folder =
            resolve_volume_path(&self.settings.base_path, params.volume_path.as_deref()).map_err(|rule| {
                format!(
                    "parameter \"volumePath\" = {}: {rule}",
                    echo(params.volume_path.as_deref().unwrap_or_default())
                )
            })?;
        Ok(Plan {
            access,
            params,
            fs_type,
            folder,
        })
    }

    /// The pool's capacity as the RDS reports it now.
    fn pool(&self) -> Result<rds::Pool, RpcStatus> {
        self.rds
            .pool(&self.settings.pool)
            .map_err(|e| self.rds_error(&format!("read pool {}", self.settings.pool), e))
    }

    /// Pool bytes available to new volumes: free minus the reserve.
    fn available_in(&self, pool: &rds::Pool) -> Result<u64, RpcStatus> {
        let free = pool.free.ok_or_else(|| {
            status::unavailable(format!(
                "pool {} reports no free space (is it mounted? state {:?})",
                self.settings.pool,
                pool.state.as_deref().unwrap_or("unknown")
            ))
        })?;
        Ok(free.saturating_sub(self.settings.capacity_reserve))
    }

    fn available(&self) -> Result<u64, RpcStatus> {
        self.available_in(&self.pool()?)
    }

    fn owned(&self, id: &VolumeId, disk: &rds::Disk) -> Option<Ownership> {
        owned(&self.settings, id, disk)
    }

    /// Looks a volume id up: one request, none for an id that cannot be a
    /// slot.
    fn lookup(&self, what: &str, raw: &str) -> Result<Lookup, RpcStatus> {
        let Some(id) = VolumeId::parse(raw) else {
            return Ok(Lookup::Missing);
        };
        match self.rds.disk(id.slot()) {
            Ok(Some(disk)) => match self.owned(&id, &disk) {
                Some(own) => Ok(Lookup::Ours(id, Box::new(disk), own)),
                None => Ok(Lookup::Foreign(Box::new(disk))),
            },
            Ok(None) => Ok(Lookup::Missing),
            Err(e) => Err(self.rds_error(&format!("{what} {id}"), e)),
        }
    }

    /// One of our volumes, or NOT_FOUND (a foreign disk is, to the CO, a
    /// volume that does not exist).
    fn find_ours(&self, what: &str, raw: &str) -> Result<(VolumeId, rds::Disk, Ownership), RpcStatus> {
        match self.lookup(what, raw)? {
            Lookup::Ours(id, disk, own) => Ok((id, *disk, own)),
            Lookup::Foreign(disk) => {
                log::warn!(
                    "{what}: disk {} is not a volume of this driver; not touching it",
                    echo(&disk.slot)
                );
                Err(status::not_found(format!(
                    "{what}: volume {} does not exist",
                    echo(raw)
                )))
            }
            Lookup::Missing => Err(status::not_found(format!(
                "{what}: volume {} does not exist",
                echo(raw)
            ))),
        }
    }

    fn volume_message(
        &self,
        id: &VolumeId,
        disk: &rds::Disk,
        ctx: Option<HashMap<String, String>>,
    ) -> csi::Volume {
        let mut v = csi::Volume::new();
        v.volume_id = id.to_string();
        v.capacity_bytes = disk.bytes().unwrap_or(0) as i64;
        if let Some(ctx) = ctx {
            v.volume_context = ctx;
        }
        v
    }

    /// Records `own` in the comment of `disk` (just looked up) and checks
    /// it read back from RouterOS's answer: one request.
    fn write_record(
        &self,
        what: &str,
        id: &VolumeId,
        disk: &rds::Disk,
        own: &Ownership,
    ) -> Result<(), RpcStatus> {
        let comment = own.to_comment();
        let written = self
            .rds
            .set_comment_known(disk, &comment)
            .map_err(|e| self.rds_error(&format!("{what} {id}: record attachment"), e))?;
        if written.comment != comment {
            return Err(status::internal(format!(
                "{what} {id}: the RDS did not keep the attachment record (comment reads {})",
                echo(&written.comment)
            )));
        }
        Ok(())
    }
}

/// Whether the RDS answers and the pool is there, refreshed in the
/// background so that Probe (called every few seconds by the liveness probe)
/// never waits on the network.
pub struct RdsHealth {
    state: Mutex<Result<(), String>>,
}

impl RdsHealth {
    /// Starts the background check: at once, then every `interval`.
    pub fn start(rds: rds::Client, pool: String, interval: std::time::Duration) -> std::sync::Arc<RdsHealth> {
        let health = std::sync::Arc::new(RdsHealth {
            state: Mutex::new(Err("the RDS has not been checked yet".into())),
        });
        let h = std::sync::Arc::clone(&health);
        let spawned = std::thread::Builder::new()
            .name("rds-health".into())
            .spawn(move || loop {
                h.refresh(&rds, &pool);
                std::thread::sleep(interval);
            });
        if let Err(e) = spawned {
            *health.state.lock().unwrap_or_else(|p| p.into_inner()) =
                Err(format!("cannot start the RDS health check: {e}"));
        }
        health
    }

    fn refresh(&self, rds: &rds::Client, pool: &str) {
        let now = rds
            .system_resource()
            .and_then(|res| rds.pool(pool).map(|p| (res, p)))
            .map_err(|e| {
                format!(
                    "the RDS at {} is not usable: {}",
                    rds.address().base_url(),
                    crate::error_chain(&e)
                )
            });
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match (&*state, &now) {
            (Err(_), Ok((res, p))) => info!(
                "RDS {} reachable: RouterOS {}, pool {} has {} bytes free",
                rds.address().base_url(),
                res.version_text,
                p.slot,
                p.free.map_or("unknown".to_string(), |f| f.to_string())
            ),
            (Ok(()), Err(why)) => log::warn!("{why}"),
            (Err(old), Err(why)) if old != why => log::warn!("{why}"),
            _ => {}
        }
        *state = now.map(|_| ());
    }
}

impl crate::identity::Readiness for RdsHealth {
    fn check(&self) -> Result<(), String> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The record that makes `disk` one of our volumes, or `None` when it
/// is not ours. Ours means: a file disk whose comment carries our
/// ownership record for this very slot, or a legacy volume of the
/// earlier Go driver — slot `pvc-<uuid>` exactly, backing file under
/// the base path, NQN `<managed prefix>:<slot>` — which gets a fresh
/// record keeping its old comment as a note, so the attachment fence
/// works for it too. Anything else (a disk made by hand, a VM's disk,
/// a foreign driver's) is never acted on.
fn owned(settings: &ControllerSettings, id: &VolumeId, disk: &rds::Disk) -> Option<Ownership> {
    if disk.kind.as_deref().is_some_and(|k| k != "file") || disk.slot != id.slot() {
        return None;
    }
    if let Some(own) = Ownership::from_comment(&disk.comment) {
        // A record copied onto another disk does not make it ours: the
        // slot must be the one the recorded name gives (or, for a legacy
        // volume recorded on publish, the name is the slot itself).
        let matches =
            VolumeId::for_name(&own.name) == *id || (id.is_legacy_shape() && own.name == id.as_str());
        return matches.then_some(own);
    }
    let legacy = id.is_legacy_shape()
        && disk
            .file_path
            .as_deref()
            .is_some_and(|f| volume::file_under_base(&settings.base_path, f))
        && settings.nqn_prefix.volume_of(disk.effective_nqn()).as_ref() == Some(id);
    legacy.then(|| Ownership {
        name: id.to_string(),
        params_digest: "legacy".into(),
        note: disk.comment.clone(),
        ..Default::default()
    })
}

fn controller_capability(
    t: csi::controller_service_capability::rpc::Type,
) -> csi::ControllerServiceCapability {
    let mut rpc = csi::controller_service_capability::RPC::new();
    rpc.type_ = t.into();
    let mut cap = csi::ControllerServiceCapability::new();
    cap.set_rpc(rpc);
    cap
}

impl Controller for ControllerService {
    fn controller_get_capabilities(
        &self,
        _call: &CallInfo,
        _req: csi::ControllerGetCapabilitiesRequest,
    ) -> Result<csi::ControllerGetCapabilitiesResponse, RpcStatus> {
        use csi::controller_service_capability::rpc::Type;
        let mut resp = csi::ControllerGetCapabilitiesResponse::new();
        for t in [
            Type::CREATE_DELETE_VOLUME,
            Type::PUBLISH_UNPUBLISH_VOLUME,
            Type::EXPAND_VOLUME,
            Type::GET_CAPACITY,
            Type::LIST_VOLUMES,
            Type::LIST_VOLUMES_PUBLISHED_NODES,
            Type::GET_VOLUME,
            Type::VOLUME_CONDITION,
            Type::SINGLE_NODE_MULTI_WRITER,
        ] {
            resp.capabilities.push(controller_capability(t));
        }
        Ok(resp)
    }

    fn create_volume(
        &self,
        _call: &CallInfo,
        req: csi::CreateVolumeRequest,
    ) -> Result<csi::CreateVolumeResponse, RpcStatus> {
        check_name(&req.name).map_err(status::invalid_argument)?;
        let name = req.name.as_str();
        // Validated above, echoed all the same.
        let shown = echo(name).to_string();
        let Plan {
            access,
            params,
            fs_type,
            folder,
        } = self
            .plan(&req.volume_capabilities, &req.parameters)
            .map_err(|e| status::invalid_argument(format!("CreateVolume {shown}: {e}")))?;
        if req.volume_content_source.is_some() {
            return Err(status::invalid_argument(format!(
                "CreateVolume {shown}: volume_content_source is set, but this driver cannot create a volume from a snapshot or another volume yet; no volume was created"
            )));
        }
        let (required, limit) = req
            .capacity_range
            .as_ref()
            .map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
        let size = self
            .settings
            .sizes
            .size_for(required, limit)
            .map_err(|e| match e {
                CapacityError::Invalid(m) => status::invalid_argument(format!("CreateVolume {shown}: {m}")),
                CapacityError::OutOfRange(m) => status::out_of_range(format!("CreateVolume {shown}: {m}")),
            })?;

        let id = VolumeId::for_name(name);
        let nqn = Nqn::for_volume(&self.settings.nqn_prefix, &id);
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
        };
        let digest = creation_digest(&file_path, &ctx, access.block);
        let _guard = self.lock("CreateVolume", &[name, id.as_str()])?;

        // Request 1: what is there. Everything after works from this answer.
        let existing = self
            .rds
            .disk(id.slot())
            .map_err(|e| self.rds_error(&format!("CreateVolume {shown}: look up disk {id}"), e))?;
        let own = match &existing {
            Some(disk) => {
                let Some(own) = self.owned(&id, disk) else {
                    return Err(status::already_exists(format!(
                        "CreateVolume {shown}: slot {id} is taken by a disk this driver did not create (comment {})",
                        echo(&disk.comment)
                    )));
                };
                if own.name != name {
                    return Err(status::already_exists(format!(
                        "CreateVolume {shown}: slot {id} already belongs to volume {} (slot collision)",
                        echo(&own.name)
                    )));
                }
                if own.params_digest != digest {
                    return Err(status::already_exists(format!(
                        "CreateVolume {shown}: volume {id} exists with different parameters (file, export, filesystem or connection settings)"
                    )));
                }
                if let Some(have) = disk.bytes() {
                    if have < size || (limit > 0 && have > limit as u64) {
                        return Err(status::already_exists(format!(
                            "CreateVolume {shown}: volume {id} exists with {have} bytes, which does not fit the requested capacity range ({required}..{limit})"
                        )));
                    }
                }
                debug!("CreateVolume {shown}: volume {id} exists, checking its export");
                own
            }
            None => {
                // Request 2: room on the pool.
                let available = self.available()?;
                if size > available {
                    return Err(status::resource_exhausted(format!(
                        "CreateVolume {shown}: not enough space on pool {}: the volume needs {size} bytes, {available} bytes are available (free space minus the reserve of {} bytes)",
                        self.settings.pool, self.settings.capacity_reserve
                    )));
                }
                // Once per folder per process.
                self.ensure_folder(&folder)?;
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
        };
        let new = rds::NewDisk {
            slot: id.to_string(),
            file_path: file_path.clone(),
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
        // Requests 3 and 4: PUT (when missing) and the export PATCH (when
        // not yet exported), whose answer is the read-back. A disk an
        // earlier attempt left with its export off is finished here; a
        // second call with the same request makes no request at all.
        let disk = match self.rds.create_disk_known(&new, existing.as_ref()) {
            Ok(disk) => disk,
            Err(e) => {
                // A definite failure after the disk entry was made would leave
                // half a volume behind; a transient one is finished by the retry.
                if existing.is_none() && !e.is_transient() {
                    if let Err(undo) = self.rds.remove_disk(id.slot(), &file_path) {
                        log::warn!("CreateVolume {shown}: could not undo the failed create of {id}: {undo}");
                    }
                }
                return Err(self.rds_error(&format!("CreateVolume {shown}: create disk {id}"), e));
            }
        };
        if existing.is_none() {
            info!(
                "CreateVolume {shown}: created volume {id} ({} bytes, {file_path}, {nqn})",
                new.size_bytes
            );
        }
        let mut resp = csi::CreateVolumeResponse::new();
        resp.volume = Some(self.volume_message(&id, &disk, Some(ctx.to_map()))).into();
        Ok(resp)
    }

    fn delete_volume(
        &self,
        _call: &CallInfo,
        req: csi::DeleteVolumeRequest,
    ) -> Result<csi::DeleteVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        // An id that cannot be a slot names nothing to delete.
        let Some(id) = VolumeId::parse(&req.volume_id) else {
            return Ok(csi::DeleteVolumeResponse::new());
        };
        let _guard = self.lock("DeleteVolume", &[id.as_str()])?;
        match self.lookup("DeleteVolume", id.as_str())? {
            Lookup::Ours(id, disk, own) => {
                if !own.nodes.is_empty() {
                    let nodes: Vec<String> = own.nodes.iter().map(|n| echo(n).to_string()).collect();
                    return Err(status::failed_precondition(format!(
                        "DeleteVolume {id}: the volume is still published to node(s) {}; unpublish it first",
                        nodes.join(", ")
                    )));
                }
                // Export off, disk removed, file removed, from the disk just
                // read: each step is skipped when already done, so a retry
                // after a crash finishes the job.
                self.rds
                    .remove_disk_known(&disk)
                    .map_err(|e| self.rds_error(&format!("DeleteVolume {id}"), e))?;
                info!(
                    "DeleteVolume {id}: removed disk and {}",
                    disk.file_path.as_deref().unwrap_or_default()
                );
            }
            Lookup::Foreign(disk) => {
                // To the CO this is a volume that does not exist; to the
                // operator it is someone's data, left exactly as it is.
                log::warn!(
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
                    .map_err(|e| self.rds_error(&format!("DeleteVolume {id}: list backing files"), e))?;
                for file in files.iter().filter(|f| f.name.ends_with(&suffix)) {
                    self.rds.remove_file(&file.name).map_err(|e| {
                        self.rds_error(&format!("DeleteVolume {id}: remove {}", file.name), e)
                    })?;
                    info!("DeleteVolume {id}: removed leftover backing file {}", file.name);
                }
            }
            Lookup::Missing => {}
        }
        Ok(csi::DeleteVolumeResponse::new())
    }

    fn controller_publish_volume(
        &self,
        _call: &CallInfo,
        req: csi::ControllerPublishVolumeRequest,
    ) -> Result<csi::ControllerPublishVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        status::require("node_id", &req.node_id)?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| status::invalid_argument("volume_capability is required"))?;
        let access = self.check_access(std::slice::from_ref(cap)).map_err(|e| {
            status::invalid_argument(format!("ControllerPublishVolume {}: {e}", echo(&req.volume_id)))
        })?;
        let node = req.node_id.as_str();
        crate::config::check_node_id(node).map_err(|rule| {
            status::not_found(format!("ControllerPublishVolume: node {} {rule}", echo(node)))
        })?;
        let _guard = self.lock("ControllerPublishVolume", &[req.volume_id.as_str()])?;
        let (id, disk, mut own) = self.find_ours("ControllerPublishVolume", &req.volume_id)?;
        if !own.nodes.iter().any(|n| n == node) {
            if !access.multi_node {
                if let Some(other) = own.nodes.first() {
                    return Err(status::failed_precondition(format!(
                        "ControllerPublishVolume {id}: the volume is already published to node {}; a single-node volume cannot also be published to {}",
                        echo(other),
                        echo(node)
                    )));
                }
            }
            own.nodes.push(node.to_string());
            self.write_record("ControllerPublishVolume", &id, &disk, &own)?;
            info!("ControllerPublishVolume {id}: published to node {}", echo(node));
        }
        let mut resp = csi::ControllerPublishVolumeResponse::new();
        resp.publish_context = publish_context(&self.settings, &id, &disk, &req.volume_context);
        Ok(resp)
    }

    fn controller_unpublish_volume(
        &self,
        _call: &CallInfo,
        req: csi::ControllerUnpublishVolumeRequest,
    ) -> Result<csi::ControllerUnpublishVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        let _guard = self.lock("ControllerUnpublishVolume", &[req.volume_id.as_str()])?;
        let (id, disk, mut own) = match self.lookup("ControllerUnpublishVolume", &req.volume_id)? {
            Lookup::Ours(id, disk, own) => (id, *disk, own),
            // A volume that is gone is unpublished everywhere (CSI spec).
            Lookup::Missing => return Ok(csi::ControllerUnpublishVolumeResponse::new()),
            Lookup::Foreign(disk) => {
                log::warn!(
                    "ControllerUnpublishVolume: disk {} is not a volume of this driver; not touching it",
                    echo(&disk.slot)
                );
                return Err(status::not_found(format!(
                    "ControllerUnpublishVolume: volume {} does not exist",
                    echo(&req.volume_id)
                )));
            }
        };
        let before = own.nodes.len();
        // No node id: unpublish from every node (CSI spec).
        own.nodes.retain(|n| !req.node_id.is_empty() && n != &req.node_id);
        if own.nodes.len() != before {
            self.write_record("ControllerUnpublishVolume", &id, &disk, &own)?;
            info!(
                "ControllerUnpublishVolume {id}: unpublished from {}",
                echo(&req.node_id)
            );
        }
        Ok(csi::ControllerUnpublishVolumeResponse::new())
    }

    fn controller_expand_volume(
        &self,
        _call: &CallInfo,
        req: csi::ControllerExpandVolumeRequest,
    ) -> Result<csi::ControllerExpandVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        let range = req
            .capacity_range
            .as_ref()
            .ok_or_else(|| status::invalid_argument("capacity_range is required"))?;
        let _guard = self.lock("ControllerExpandVolume", &[req.volume_id.as_str()])?;
        let (id, disk, _) = self.find_ours("ControllerExpandVolume", &req.volume_id)?;
        let current = disk.bytes().unwrap_or(0);
        let wanted = self
            .settings
            .sizes
            .size_for(range.required_bytes, range.limit_bytes)
            .map_err(|e| match e {
                CapacityError::Invalid(m) => {
                    status::invalid_argument(format!("ControllerExpandVolume {id}: {m}"))
                }
                CapacityError::OutOfRange(m) => {
                    status::out_of_range(format!("ControllerExpandVolume {id}: {m}"))
                }
            })?;
        let size = if wanted <= current {
            // Never shrink: a smaller request is already satisfied.
            current
        } else {
            let pool = self.pool()?;
            // More than the whole pool can never fit, whatever is freed.
            if wanted > pool.size {
                return Err(status::out_of_range(format!(
                    "ControllerExpandVolume {id}: {wanted} bytes is more than pool {} holds in total ({} bytes)",
                    self.settings.pool, pool.size
                )));
            }
            let available = self.available_in(&pool)?;
            if wanted - current > available {
                return Err(status::resource_exhausted(format!(
                    "ControllerExpandVolume {id}: not enough space on pool {}: growing by {} bytes, {available} bytes available",
                    self.settings.pool,
                    wanted - current
                )));
            }
            let grown = self
                .rds
                .grow_disk_known(&disk, wanted)
                .map_err(|e| self.rds_error(&format!("ControllerExpandVolume {id}"), e))?;
            let size = grown.bytes().unwrap_or(0);
            info!("ControllerExpandVolume {id}: grown from {current} to {size} bytes");
            size
        };
        let block = req.volume_capability.as_ref().is_some_and(|c| c.has_block());
        let mut resp = csi::ControllerExpandVolumeResponse::new();
        resp.capacity_bytes = size as i64;
        // A filesystem must be grown on the node; a block device is done.
        resp.node_expansion_required = !block;
        Ok(resp)
    }

    fn validate_volume_capabilities(
        &self,
        _call: &CallInfo,
        req: csi::ValidateVolumeCapabilitiesRequest,
    ) -> Result<csi::ValidateVolumeCapabilitiesResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(status::invalid_argument("volume_capabilities is required"));
        }
        self.find_ours("ValidateVolumeCapabilities", &req.volume_id)?;
        let mut resp = csi::ValidateVolumeCapabilitiesResponse::new();
        // Exactly what CreateVolume would accept is confirmed, nothing more.
        match self.plan(&req.volume_capabilities, &req.parameters) {
            Ok(_) => {
                let mut confirmed = csi::validate_volume_capabilities_response::Confirmed::new();
                confirmed.volume_context = req.volume_context.clone();
                confirmed.volume_capabilities = req.volume_capabilities.clone();
                confirmed.parameters = req.parameters.clone();
                resp.confirmed = Some(confirmed).into();
            }
            Err(why) => resp.message = why,
        }
        Ok(resp)
    }

    fn list_volumes(
        &self,
        _call: &CallInfo,
        req: csi::ListVolumesRequest,
    ) -> Result<csi::ListVolumesResponse, RpcStatus> {
        if req.max_entries < 0 {
            return Err(status::invalid_argument("max_entries must not be negative"));
        }
        // The token is `v1:` and the last volume id of the previous page:
        // stable when volumes come and go between pages.
        let after = if req.starting_token.is_empty() {
            None
        } else {
            Some(parse_token(&req.starting_token).ok_or_else(|| {
                status::aborted(format!(
                    "starting_token {} is not one this driver gave out",
                    echo(&req.starting_token)
                ))
            })?)
        };
        let disks = self
            .rds
            .list_disks(volume::SLOT_PREFIX)
            .map_err(|e| self.rds_error("ListVolumes", e))?;
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
        let page = if req.max_entries > 0 {
            req.max_entries as usize
        } else {
            usize::MAX
        };
        let mut resp = csi::ListVolumesResponse::new();
        for (id, disk, own) in volumes.iter().skip(start).take(page) {
            let mut entry = csi::list_volumes_response::Entry::new();
            entry.volume = Some(self.volume_message(id, disk, None)).into();
            let mut st = csi::list_volumes_response::VolumeStatus::new();
            st.published_node_ids = own.nodes.clone();
            st.volume_condition = Some(condition_of(disk)).into();
            entry.status = Some(st).into();
            resp.entries.push(entry);
        }
        if start + resp.entries.len() < volumes.len() {
            if let Some(last) = resp.entries.last() {
                resp.next_token = format!("{TOKEN_PREFIX}{}", last.volume.volume_id);
            }
        }
        Ok(resp)
    }

    fn get_capacity(
        &self,
        _call: &CallInfo,
        req: csi::GetCapacityRequest,
    ) -> Result<csi::GetCapacityResponse, RpcStatus> {
        let params = VolumeParams::parse(&req.parameters)
            .map_err(|e| status::invalid_argument(format!("GetCapacity: {e}")))?;
        if let Err(rule) = resolve_volume_path(&self.settings.base_path, params.volume_path.as_deref()) {
            return Err(status::invalid_argument(format!(
                "GetCapacity: parameter \"volumePath\": {rule}"
            )));
        }
        if !req.volume_capabilities.is_empty() {
            self.check_access(&req.volume_capabilities)
                .map_err(|e| status::invalid_argument(format!("GetCapacity: {e}")))?;
        }
        let available = self.available()?;
        let mut resp = csi::GetCapacityResponse::new();
        resp.available_capacity = available as i64;
        // The largest volume that fits is what is available, in whole steps.
        let step = self.settings.sizes.granularity;
        resp.maximum_volume_size = Some(protobuf::well_known_types::wrappers::Int64Value {
            value: (available / step * step) as i64,
            ..Default::default()
        })
        .into();
        resp.minimum_volume_size = Some(protobuf::well_known_types::wrappers::Int64Value {
            value: self.settings.sizes.minimum as i64,
            ..Default::default()
        })
        .into();
        Ok(resp)
    }

    fn controller_get_volume(
        &self,
        _call: &CallInfo,
        req: csi::ControllerGetVolumeRequest,
    ) -> Result<csi::ControllerGetVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        let (id, disk, own) = self.find_ours("ControllerGetVolume", &req.volume_id)?;
        let mut resp = csi::ControllerGetVolumeResponse::new();
        resp.volume = Some(self.volume_message(&id, &disk, None)).into();
        let mut st = csi::controller_get_volume_response::VolumeStatus::new();
        st.published_node_ids = own.nodes;
        st.volume_condition = Some(condition_of(&disk)).into();
        resp.status = Some(st).into();
        Ok(resp)
    }
}

/// The volume id a ListVolumes token names: `v1:<slot>`, the slot of the
/// exact shape this driver or the Go driver makes; `None` for anything else.
fn parse_token(token: &str) -> Option<VolumeId> {
    let id = VolumeId::parse(token.strip_prefix(TOKEN_PREFIX)?)?;
    id.is_driver_shape().then_some(id)
}

/// What makes two CreateVolume requests for one name the same volume.
fn creation_digest(file_path: &str, ctx: &VolumeContext, block: bool) -> String {
    let c = ctx.connection;
    params_digest(&[
        ("file", file_path.to_string()),
        ("address", ctx.nvme_address.clone()),
        ("port", ctx.nvme_port.to_string()),
        ("fs", ctx.fs_type.map(|f| f.to_string()).unwrap_or_default()),
        ("block", block.to_string()),
        ("ctrl_loss_tmo", c.ctrl_loss_tmo.to_string()),
        ("reconnect_delay", c.reconnect_delay.to_string()),
        ("keep_alive_tmo", c.keep_alive_tmo.to_string()),
    ])
}

/// Abnormal when the disk is not exported: no node can attach it.
fn condition_of(disk: &rds::Disk) -> csi::VolumeCondition {
    let mut c = csi::VolumeCondition::new();
    if disk.nvme_tcp_export {
        c.abnormal = false;
        c.message = "exported over NVMe/TCP".into();
    } else {
        c.abnormal = true;
        c.message = format!(
            "disk {} is not exported over NVMe/TCP (nvme-tcp-export is off)",
            disk.slot
        );
    }
    c
}

/// What the node needs to attach the volume: the volume context's own
/// values when the CO passes them, else what the disk and the settings say.
fn publish_context(
    s: &ControllerSettings,
    id: &VolumeId,
    disk: &rds::Disk,
    volume_context: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut ctx = HashMap::new();
    let nqn = disk
        .nvme_tcp_nqn
        .clone()
        .unwrap_or_else(|| Nqn::for_volume(&s.nqn_prefix, id).to_string());
    ctx.insert(volume::KEY_NQN.to_string(), nqn);
    ctx.insert(
        volume::KEY_NVME_ADDRESS.to_string(),
        volume_context
            .get(volume::KEY_NVME_ADDRESS)
            .cloned()
            .unwrap_or_else(|| s.nvme_address.clone()),
    );
    ctx.insert(
        volume::KEY_NVME_PORT.to_string(),
        disk.effective_port().to_string(),
    );
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(comment: &str, export: bool) -> rds::Disk {
        rds::Disk {
            id: "*1".into(),
            slot: "pvc-1".into(),
            kind: Some("file".into()),
            file_path: Some("storage-pool/csi/pvc-1.img".into()),
            file_size: Some(1 << 30),
            size: Some(1 << 30),
            free: None,
            comment: comment.into(),
            nvme_tcp_export: export,
            nvme_tcp_port: Some(4420),
            nvme_tcp_nqn: Some("nqn.2000-02.com.mikrotik:pvc-1".into()),
            mount_filesystem: Some(false),
            mount_point: None,
            mounted: false,
            fs: None,
            state: None,
        }
    }

    fn settings() -> ControllerSettings {
        ControllerSettings {
            pool: "storage-pool".into(),
            base_path: "storage-pool/csi".into(),
            nqn_prefix: NqnPrefix::default(),
            nvme_address: "10.0.0.1".into(),
            capacity_reserve: 0,
            sizes: SizePolicy::default(),
            allow_multi_node_block: false,
        }
    }

    const LEGACY: &str = "pvc-0e7c2a9d-41b3-4c55-9f0e-6a1d2b3c4d5e";

    fn legacy_disk(file: &str, nqn: &str, comment: &str) -> rds::Disk {
        rds::Disk {
            slot: LEGACY.into(),
            file_path: Some(file.into()),
            nvme_tcp_nqn: Some(nqn.into()),
            ..disk(comment, true)
        }
    }

    #[test]
    fn legacy_disks_get_a_record_that_keeps_their_comment() {
        let id = VolumeId::parse(LEGACY).unwrap();
        let d = legacy_disk(
            &format!("storage-pool/csi/{LEGACY}.img"),
            &format!("nqn.2000-02.com.mikrotik:{LEGACY}"),
            "made by the go driver",
        );
        let own = owned(&settings(), &id, &d).expect("a legacy volume is ours");
        assert_eq!(own.name, LEGACY);
        assert!(own.nodes.is_empty());
        assert_eq!(own.note, "made by the go driver");
        let round = Ownership::from_comment(&own.to_comment()).unwrap();
        assert_eq!(round, own);
        // Once recorded (on publish), the record keeps it ours.
        let recorded = rds::Disk {
            comment: own.to_comment(),
            ..d
        };
        assert_eq!(owned(&settings(), &id, &recorded), Some(own));
    }

    #[test]
    fn only_our_disks_are_ours() {
        let s = settings();
        let id = VolumeId::parse(LEGACY).unwrap();
        let nqn = format!("nqn.2000-02.com.mikrotik:{LEGACY}");
        let file = format!("storage-pool/csi/{LEGACY}.img");
        for (what, d) in [
            (
                "file outside the base",
                legacy_disk("storage-pool/vms/backup.img", &nqn, ""),
            ),
            (
                "file escaping the base",
                legacy_disk("storage-pool/csi/../vms/x.img", &nqn, ""),
            ),
            (
                "foreign nqn",
                legacy_disk(&file, "nqn.2014-08.org.example:disk", ""),
            ),
            (
                "another slot's nqn",
                legacy_disk(&file, "nqn.2000-02.com.mikrotik:pvc-1", ""),
            ),
            (
                "default nqn (the slot)",
                rds::Disk {
                    nvme_tcp_nqn: None,
                    ..legacy_disk(&file, &nqn, "")
                },
            ),
            (
                "not a file disk",
                rds::Disk {
                    kind: Some("raid".into()),
                    ..legacy_disk(&file, &nqn, "")
                },
            ),
        ] {
            assert_eq!(owned(&s, &id, &d), None, "{what}");
        }
        // Not the UUID shape: never legacy.
        let hand = VolumeId::parse("vm-backup").unwrap();
        let d = rds::Disk {
            slot: "vm-backup".into(),
            file_path: Some("storage-pool/csi/vm-backup.img".into()),
            nvme_tcp_nqn: Some("nqn.2000-02.com.mikrotik:vm-backup".into()),
            ..disk("", true)
        };
        assert_eq!(owned(&s, &hand, &d), None);
        // A record copied onto another slot does not make that disk ours.
        let mine = VolumeId::for_name("vol-a");
        let rec = Ownership {
            name: "vol-a".into(),
            params_digest: "x".into(),
            ..Default::default()
        };
        let d = rds::Disk {
            slot: mine.to_string(),
            comment: rec.to_comment(),
            ..disk("", true)
        };
        assert_eq!(owned(&s, &mine, &d), Some(rec.clone()));
        let copied = rds::Disk {
            slot: "vm-backup".into(),
            ..d
        };
        assert_eq!(owned(&s, &hand, &copied), None);
    }

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
    fn digest_depends_on_every_connection_setting() {
        use crate::volume::ConnectionConfig;
        let ctx = VolumeContext {
            nqn: Nqn::parse("nqn.2000-02.com.mikrotik:pvc-1").unwrap(),
            nvme_address: "10.0.0.1".into(),
            nvme_port: 4420,
            fs_type: Some(FsType::Ext4),
            connection: ConnectionConfig::default(),
        };
        let base = creation_digest("p/x.img", &ctx, false);
        assert_eq!(base, creation_digest("p/x.img", &ctx, false));
        let mut other = ctx.clone();
        other.connection.reconnect_delay = 7;
        assert_ne!(base, creation_digest("p/x.img", &other, false));
        assert_ne!(base, creation_digest("p/y.img", &ctx, false));
        assert_ne!(base, creation_digest("p/x.img", &ctx, true));
    }

    #[test]
    fn condition_reports_a_missing_export() {
        assert!(!condition_of(&disk("", true)).abnormal);
        let c = condition_of(&disk("", false));
        assert!(c.abnormal && c.message.contains("pvc-1"), "{}", c.message);
    }
}
