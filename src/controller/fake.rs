//! An in-memory stand-in of the RDS for the controller's unit tests (they
//! sit beside the code they test: `record`, `provision`, `attach`), and the
//! helpers they share.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::*;
use crate::volume::{NqnPrefix, SizePolicy, GIB};

pub(super) fn disk(comment: &str, export: bool) -> rds::Disk {
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
        nvme_tcp_allow_host: String::new(),
        mount_filesystem: Some(false),
        mount_point: None,
        mounted: false,
        fs: None,
        state: None,
    }
}

pub(super) fn settings() -> ControllerSettings {
    ControllerSettings {
        pool: "storage-pool".into(),
        base_path: "storage-pool/csi".into(),
        nqn_prefix: NqnPrefix::default(),
        nvme_address: "10.0.0.1".into(),
        capacity_reserve: 0,
        sizes: SizePolicy::default(),
        allow_multi_node_block: false,
        export_on_publish: true,
        host_acl: false,
    }
}

pub(super) const LEGACY: &str = "pvc-0e7c2a9d-41b3-4c55-9f0e-6a1d2b3c4d5e";

pub(super) fn legacy_disk(file: &str, nqn: &str, comment: &str) -> rds::Disk {
    rds::Disk {
        slot: LEGACY.into(),
        file_path: Some(file.into()),
        nvme_tcp_nqn: Some(nqn.into()),
        ..disk(comment, true)
    }
}

/// An in-memory RDS: disks by slot, backing files, one pool. It keeps
/// just enough of RouterOS's behaviour for the controller's rules, and
/// counts the changes it is asked for.
#[derive(Default)]
pub(super) struct FakeRds {
    pub(super) state: Mutex<FakeState>,
}

#[derive(Default)]
pub(super) struct FakeState {
    pub(super) disks: BTreeMap<String, rds::Disk>,
    pub(super) files: BTreeMap<String, u64>,
    pub(super) pool_size: u64,
    /// Free bytes; `None` as for an unmounted pool.
    pub(super) pool_free: Option<u64>,
    /// The changing requests made, in order (`create`, `export`, ...).
    pub(super) changes: Vec<String>,
    /// Export changes to fail (as a controller killed before making them).
    pub(super) fail_exports: usize,
    /// Fail one export toggle after letting this many through.
    pub(super) fail_after_exports: Option<usize>,
    /// What the allow list reads back as, whatever was written.
    pub(super) allow_mangle: Option<String>,
}

impl FakeRds {
    pub(super) fn with_pool(size: u64) -> FakeRds {
        let rds = FakeRds::default();
        {
            let mut s = rds.state();
            s.pool_size = size;
            s.pool_free = Some(size);
        }
        rds
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn changes(&self) -> Vec<String> {
        self.state().changes.clone()
    }

    pub(super) fn insert(&self, disk: rds::Disk) {
        let mut s = self.state();
        if let Some(f) = &disk.file_path {
            s.files.insert(f.clone(), disk.bytes().unwrap_or(0));
        }
        s.disks.insert(disk.slot.clone(), disk);
    }
}

pub(super) fn not_found(op: rds::Op, target: &str) -> rds::Error {
    rds::Error::Answer {
        op,
        target: target.into(),
        status: 404,
        message: "no such item".into(),
        detail: None,
        kind: rds::Kind::NotFound,
    }
}

impl RdsApi for FakeRds {
    fn disk(&self, slot: &str) -> Result<Option<rds::Disk>, rds::Error> {
        Ok(self.state().disks.get(slot).cloned())
    }
    fn pool(&self, slot: &str) -> Result<rds::Pool, rds::Error> {
        let s = self.state();
        Ok(rds::Pool {
            id: "*0".into(),
            slot: slot.into(),
            mount_point: None,
            fs: Some("btrfs".into()),
            fs_label: None,
            size: s.pool_size,
            free: s.pool_free,
            state: None,
            mounted: s.pool_free.is_some(),
        })
    }
    fn list_disks(&self, prefix: &str) -> Result<Vec<rds::Disk>, rds::Error> {
        let s = self.state();
        Ok(s.disks
            .values()
            .filter(|d| d.slot.starts_with(prefix))
            .cloned()
            .collect())
    }
    fn create_disk_known(
        &self,
        new: &rds::NewDisk,
        existing: Option<&rds::Disk>,
        export: bool,
    ) -> Result<rds::Disk, rds::Error> {
        let mut s = self.state();
        if existing.is_none() {
            s.changes.push(format!("create {}", new.slot));
            s.pool_free = s.pool_free.map(|f| f.saturating_sub(new.size_bytes));
            s.files.insert(new.file_path.clone(), new.size_bytes);
            let disk = rds::Disk {
                id: format!("*{}", s.disks.len() + 1),
                slot: new.slot.clone(),
                file_path: Some(new.file_path.clone()),
                file_size: Some(new.size_bytes),
                size: Some(new.size_bytes),
                comment: new.comment.clone(),
                nvme_tcp_export: false,
                nvme_tcp_port: Some(new.port),
                nvme_tcp_nqn: new.nqn.clone(),
                ..disk("", false)
            };
            s.disks.insert(new.slot.clone(), disk);
        }
        let disk = s
            .disks
            .get_mut(&new.slot)
            .ok_or_else(|| not_found(rds::Op::ExportDisk, &new.slot))?;
        if export && !disk.nvme_tcp_export {
            disk.nvme_tcp_export = true;
            let d = disk.clone();
            s.changes.push(format!("export {}", new.slot));
            return Ok(d);
        }
        Ok(disk.clone())
    }
    fn set_allowed_hosts_known(&self, disk: &rds::Disk, value: &str) -> Result<rds::Disk, rds::Error> {
        let mut s = self.state();
        s.changes.push(format!("allow {} {value}", disk.slot));
        // As a RouterOS that keeps only what it likes of the value.
        let stored = match &s.allow_mangle {
            Some(keep) => keep.clone(),
            None => value.to_string(),
        };
        let d = s
            .disks
            .get_mut(&disk.slot)
            .ok_or_else(|| not_found(rds::Op::SetAllowedHosts, &disk.slot))?;
        d.nvme_tcp_allow_host = stored;
        Ok(d.clone())
    }
    fn set_export_known(&self, disk: &rds::Disk, on: bool) -> Result<rds::Disk, rds::Error> {
        let mut s = self.state();
        match s.fail_after_exports {
            Some(0) => {
                s.fail_after_exports = None;
                s.fail_exports += 1;
            }
            Some(n) => s.fail_after_exports = Some(n - 1),
            None => {}
        }
        if s.fail_exports > 0 {
            s.fail_exports -= 1;
            return Err(rds::Error::Answer {
                op: rds::Op::ExportDisk,
                target: disk.slot.clone(),
                status: 500,
                message: "injected".into(),
                detail: None,
                kind: rds::Kind::Unavailable,
            });
        }
        s.changes.push(format!(
            "{} {}",
            if on { "export" } else { "unexport" },
            disk.slot
        ));
        let d = s
            .disks
            .get_mut(&disk.slot)
            .ok_or_else(|| not_found(rds::Op::ExportDisk, &disk.slot))?;
        d.nvme_tcp_export = on;
        Ok(d.clone())
    }
    fn set_comment_known(&self, disk: &rds::Disk, comment: &str) -> Result<rds::Disk, rds::Error> {
        let mut s = self.state();
        s.changes.push(format!("comment {}", disk.slot));
        let d = s
            .disks
            .get_mut(&disk.slot)
            .ok_or_else(|| not_found(rds::Op::SetComment, &disk.slot))?;
        d.comment = comment.to_string();
        Ok(d.clone())
    }
    fn grow_disk_known(&self, disk: &rds::Disk, new_size: u64) -> Result<rds::Disk, rds::Error> {
        let mut s = self.state();
        s.changes.push(format!("grow {} {new_size}", disk.slot));
        let by = new_size.saturating_sub(disk.bytes().unwrap_or(0));
        s.pool_free = s.pool_free.map(|f| f.saturating_sub(by));
        let d = s
            .disks
            .get_mut(&disk.slot)
            .ok_or_else(|| not_found(rds::Op::GrowDisk, &disk.slot))?;
        d.size = Some(new_size);
        d.file_size = Some(new_size);
        Ok(d.clone())
    }
    fn remove_disk(&self, slot: &str, file_path: &str) -> Result<rds::Removed, rds::Error> {
        let mut s = self.state();
        s.changes.push(format!("remove {slot}"));
        Ok(rds::Removed {
            disk: s.disks.remove(slot).is_some(),
            file: s.files.remove(file_path).is_some(),
        })
    }
    fn remove_disk_known(&self, disk: &rds::Disk) -> Result<rds::Removed, rds::Error> {
        self.remove_disk(&disk.slot, disk.file_path.as_deref().unwrap_or_default())
    }
    fn list_files(&self, prefix: &str) -> Result<Vec<rds::File>, rds::Error> {
        let s = self.state();
        Ok(s.files
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, size)| rds::File {
                id: "*f".into(),
                name: name.clone(),
                kind: ".img file".into(),
                size: Some(*size),
                last_modified: None,
            })
            .collect())
    }
    fn remove_file(&self, name: &str) -> Result<bool, rds::Error> {
        let mut s = self.state();
        s.changes.push(format!("remove file {name}"));
        Ok(s.files.remove(name).is_some())
    }
    fn make_directory(&self, path: &str) -> Result<(), rds::Error> {
        self.state().changes.push(format!("mkdir {path}"));
        Ok(())
    }
    // The fake pool is not Btrfs (no mount point, no label): the
    // controller never asks for subvolumes here; rds-sim on a real Btrfs
    // filesystem covers them (tests/controller.rs).
    fn list_subvolumes(&self, _: &rds::BtrfsFs, prefix: &str) -> Result<Vec<rds::Subvolume>, rds::Error> {
        Err(not_found(rds::Op::ListSubvolumes, prefix))
    }
    fn create_subvolume(&self, _: &rds::BtrfsFs, path: &str) -> Result<rds::Subvolume, rds::Error> {
        Err(not_found(rds::Op::CreateSubvolume, path))
    }
    fn snapshot_subvolume(
        &self,
        _: &rds::BtrfsFs,
        _: &str,
        path: &str,
        _: bool,
    ) -> Result<rds::Subvolume, rds::Error> {
        Err(not_found(rds::Op::SnapshotSubvolume, path))
    }
    fn remove_subvolume(&self, _: &rds::BtrfsFs, path: &str) -> Result<bool, rds::Error> {
        Err(not_found(rds::Op::RemoveSubvolume, path))
    }
}

pub(super) fn controller(pool: u64) -> Controller<FakeRds> {
    Controller::new(FakeRds::with_pool(pool), settings())
}

/// A controller with `--export-always`: volumes exported from creation on.
pub(super) fn controller_always(pool: u64) -> Controller<FakeRds> {
    Controller::new(
        FakeRds::with_pool(pool),
        ControllerSettings {
            export_on_publish: false,
            ..settings()
        },
    )
}

pub(super) fn mount_cap(mode: AccessMode) -> Capability {
    Capability {
        access_type: Some(AccessType::Mount {
            fs_type: String::new(),
            mount_flags: vec![],
        }),
        mode: Some(mode),
    }
}

pub(super) fn block_cap(mode: AccessMode) -> Capability {
    Capability {
        access_type: Some(AccessType::Block),
        mode: Some(mode),
    }
}

pub(super) fn create<R: RdsApi>(
    c: &Controller<R>,
    name: &str,
    params: &HashMap<String, String>,
    required: u64,
) -> Result<Created, Error> {
    let caps = [mount_cap(AccessMode::SingleNodeWriter)];
    c.create(CreateRequest {
        name,
        capabilities: &caps,
        parameters: params,
        capacity: CapacityRange {
            required: required as i64,
            limit: 0,
        },
        content_source: None,
    })
}

/// A 1 GiB block volume made for MULTI_NODE_MULTI_WRITER, and that capability.
pub(super) fn shared_block(c: &Controller<FakeRds>, name: &str) -> (Capability, Created) {
    let cap = block_cap(AccessMode::MultiNodeMultiWriter);
    let v = c
        .create(CreateRequest {
            name,
            parameters: &HashMap::new(),
            capabilities: std::slice::from_ref(&cap),
            capacity: CapacityRange {
                required: GIB as i64,
                limit: 0,
            },
            content_source: None,
        })
        .expect("a shared block volume on an empty fake pool");
    (cap, v)
}

pub(super) fn exported(c: &Controller<FakeRds>, id: &VolumeId) -> bool {
    c.rds.state().disks[id.slot()].nvme_tcp_export
}

pub(super) fn acl_controller() -> Controller<FakeRds> {
    Controller::new(
        FakeRds::with_pool(10 * GIB),
        ControllerSettings {
            allow_multi_node_block: true,
            host_acl: true,
            ..settings()
        },
    )
}

pub(super) fn allow_list(c: &Controller<FakeRds>, id: &VolumeId) -> String {
    c.rds.state().disks[id.slot()].nvme_tcp_allow_host.clone()
}
