//! Unit tests of the controller's rules: the ownership rule on disks, the
//! creation digest, and create/delete/publish/expand against an in-memory
//! stand-in of the RDS.

use super::record::{creation_digest, owned};
use super::*;
use crate::fence::{self, HostIdentity};
use crate::volume::{FsType, Nqn, VolumeContext};
use crate::volume::{NqnPrefix, SizePolicy};

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
        nvme_tcp_allow_host: String::new(),
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
        export_on_publish: true,
        host_acl: false,
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
fn digest_depends_on_every_connection_setting() {
    use crate::volume::ConnectionConfig;
    let ctx = VolumeContext {
        nqn: Nqn::parse("nqn.2000-02.com.mikrotik:pvc-1").unwrap(),
        nvme_address: "10.0.0.1".into(),
        nvme_port: 4420,
        fs_type: Some(FsType::Ext4),
        connection: ConnectionConfig::default(),
        host: None,
    };
    let base = creation_digest("p/x.img", &ctx, false);
    assert_eq!(base, creation_digest("p/x.img", &ctx, false));
    let mut other = ctx.clone();
    other.connection.reconnect_delay = 7;
    assert_ne!(base, creation_digest("p/x.img", &other, false));
    assert_ne!(base, creation_digest("p/y.img", &ctx, false));
    assert_ne!(base, creation_digest("p/x.img", &ctx, true));
}

// ---------------------------------------------------------------------------
// The rules against an in-memory RDS
// ---------------------------------------------------------------------------

use std::collections::{BTreeMap, HashMap};

use crate::volume::{GIB, MIB};

/// An in-memory RDS: disks by slot, backing files, one pool. It keeps
/// just enough of RouterOS's behaviour for the controller's rules, and
/// counts the changes it is asked for.
#[derive(Default)]
struct FakeRds {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    disks: BTreeMap<String, rds::Disk>,
    files: BTreeMap<String, u64>,
    pool_size: u64,
    /// Free bytes; `None` as for an unmounted pool.
    pool_free: Option<u64>,
    /// The changing requests made, in order (`create`, `export`, ...).
    changes: Vec<String>,
    /// Export changes to fail (as a controller killed before making them).
    fail_exports: usize,
    /// Fail one export toggle after letting this many through.
    fail_after_exports: Option<usize>,
    /// What the allow list reads back as, whatever was written.
    allow_mangle: Option<String>,
}

impl FakeRds {
    fn with_pool(size: u64) -> FakeRds {
        let rds = FakeRds::default();
        {
            let mut s = rds.state();
            s.pool_size = size;
            s.pool_free = Some(size);
        }
        rds
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    fn changes(&self) -> Vec<String> {
        self.state().changes.clone()
    }

    fn insert(&self, disk: rds::Disk) {
        let mut s = self.state();
        if let Some(f) = &disk.file_path {
            s.files.insert(f.clone(), disk.bytes().unwrap_or(0));
        }
        s.disks.insert(disk.slot.clone(), disk);
    }
}

fn not_found(op: rds::Op, target: &str) -> rds::Error {
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

fn controller(pool: u64) -> Controller<FakeRds> {
    Controller::new(FakeRds::with_pool(pool), settings())
}

/// A controller with `--export-always`: volumes exported from creation on.
fn controller_always(pool: u64) -> Controller<FakeRds> {
    Controller::new(
        FakeRds::with_pool(pool),
        ControllerSettings {
            export_on_publish: false,
            ..settings()
        },
    )
}

fn mount_cap(mode: AccessMode) -> Capability {
    Capability {
        access_type: Some(AccessType::Mount {
            fs_type: String::new(),
            mount_flags: vec![],
        }),
        mode: Some(mode),
    }
}

fn block_cap(mode: AccessMode) -> Capability {
    Capability {
        access_type: Some(AccessType::Block),
        mode: Some(mode),
    }
}

fn create<R: RdsApi>(
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
fn the_fence_refuses_a_second_node() {
    let c = controller(10 * GIB);
    let v = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
    let cap = mount_cap(AccessMode::SingleNodeWriter);
    let ctx = c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
    assert_eq!(ctx["nqn"], format!("nqn.2000-02.com.mikrotik:{}", v.id));
    assert_eq!(ctx["nvmeAddress"], "10.0.0.1");
    // Again to the same node: no change.
    let changes = c.rds.changes();
    c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
    assert_eq!(c.rds.changes(), changes);
    let err = c
        .publish(v.id.as_str(), "node-b", &cap, &HashMap::new())
        .unwrap_err();
    match &err {
        Error::PublishedElsewhere { other, node, .. } => {
            assert_eq!((other.as_str(), node.as_str()), ("node-a", "node-b"))
        }
        other => panic!("{other}"),
    }
    // The fence lives on the RDS: a new controller over it refuses too.
    let restarted = Controller::new(FakeRds::default(), settings());
    restarted.rds.insert(c.rds.state().disks[v.id.slot()].clone());
    assert!(matches!(
        restarted.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()),
        Err(Error::PublishedElsewhere { .. })
    ));
    // Unpublished from node-a, it may go to node-b.
    c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
}

#[test]
fn shared_block_volumes_go_to_many_nodes_when_allowed() {
    let c = Controller::new(
        FakeRds::with_pool(10 * GIB),
        ControllerSettings {
            allow_multi_node_block: true,
            ..settings()
        },
    );
    let caps = [block_cap(AccessMode::MultiNodeMultiWriter)];
    let v = c
        .create(CreateRequest {
            name: "shared",
            capabilities: &caps,
            parameters: &HashMap::new(),
            capacity: CapacityRange::default(),
            content_source: None,
        })
        .unwrap();
    for node in ["n1", "n2"] {
        c.publish(v.id.as_str(), node, &caps[0], &HashMap::new()).unwrap();
    }
    assert_eq!(c.get(v.id.as_str()).unwrap().nodes, vec!["n1", "n2"]);
    // No node named: unpublished from every node.
    c.unpublish(v.id.as_str(), None).unwrap();
    assert!(c.get(v.id.as_str()).unwrap().nodes.is_empty());
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

/// A 1 GiB block volume made for MULTI_NODE_MULTI_WRITER, and that capability.
fn shared_block(c: &Controller<FakeRds>, name: &str) -> (Capability, Created) {
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
        .unwrap();
    (cap, v)
}

fn exported(c: &Controller<FakeRds>, id: &VolumeId) -> bool {
    c.rds.state().disks[id.slot()].nvme_tcp_export
}

#[test]
fn volumes_are_exported_only_while_published() {
    let c = controller(10 * GIB);
    let cap = mount_cap(AccessMode::SingleNodeWriter);
    let v = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
    // Made with its export off: port and NQN set, nothing on the network.
    assert!(!exported(&c, &v.id));
    assert!(
        !c.rds.changes().iter().any(|x| x.starts_with("export")),
        "{:?}",
        c.rds.changes()
    );
    assert!(!c.get(v.id.as_str()).unwrap().condition.abnormal);
    c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
    assert!(exported(&c, &v.id));
    assert_eq!(c.rds.changes().last().unwrap(), &format!("export {}", v.id));
    // A repeat makes no request.
    let changes = c.rds.changes();
    c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
    assert_eq!(c.rds.changes(), changes);
    // Unpublished from a node it is not published to: still exported.
    c.unpublish(v.id.as_str(), Some("node-z")).unwrap();
    assert!(exported(&c, &v.id));
    c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    assert!(!exported(&c, &v.id));
    let changes = c.rds.changes();
    assert_eq!(
        changes[changes.len() - 2],
        format!("unexport {}", v.id),
        "off before the record: {changes:?}"
    );
    c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    assert_eq!(c.rds.changes(), changes);
}

#[test]
fn a_shared_volume_stays_exported_until_its_last_node_goes() {
    let c = Controller::new(
        FakeRds::with_pool(10 * GIB),
        ControllerSettings {
            allow_multi_node_block: true,
            ..settings()
        },
    );
    let (cap, v) = shared_block(&c, "vol-s");
    c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
    c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
    c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    assert!(exported(&c, &v.id));
    c.unpublish(v.id.as_str(), None).unwrap();
    assert!(!exported(&c, &v.id));
    assert!(c.get(v.id.as_str()).unwrap().nodes.is_empty());
}

#[test]
fn a_crash_between_recording_and_exporting_is_finished_by_the_retry() {
    let c = controller(10 * GIB);
    let cap = mount_cap(AccessMode::SingleNodeWriter);
    let v = create(&c, "vol-a", &HashMap::new(), GIB).unwrap();
    c.rds.state().fail_exports = 1;
    assert!(c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).is_err());
    // Recorded, not exported: the node is fenced in, nothing is on the network.
    assert_eq!(c.get(v.id.as_str()).unwrap().nodes, vec!["node-a".to_string()]);
    assert!(!exported(&c, &v.id));
    assert!(c.get(v.id.as_str()).unwrap().condition.abnormal);
    c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
    assert!(exported(&c, &v.id));
    // The unpublish fails before its record: the retry finishes both.
    c.rds.state().fail_exports = 1;
    assert!(c.unpublish(v.id.as_str(), Some("node-a")).is_err());
    assert!(exported(&c, &v.id));
    assert_eq!(c.get(v.id.as_str()).unwrap().nodes, vec!["node-a".to_string()]);
    c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    assert!(!exported(&c, &v.id));
    assert!(c.get(v.id.as_str()).unwrap().nodes.is_empty());
}

#[test]
fn an_always_exported_volume_follows_the_rule_from_its_next_unpublish() {
    // As a Go driver volume or one made with --export-always: exported, no node.
    let always = controller_always(10 * GIB);
    let v = create(&always, "vol-a", &HashMap::new(), GIB).unwrap();
    assert!(exported(&always, &v.id));
    let c = controller(10 * GIB);
    c.rds.insert(always.rds.state().disks[v.id.slot()].clone());
    c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    assert!(!exported(&c, &v.id));
    // With --export-always an unpublish leaves the export alone.
    always.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    assert!(exported(&always, &v.id));
}

fn acl_controller() -> Controller<FakeRds> {
    Controller::new(
        FakeRds::with_pool(10 * GIB),
        ControllerSettings {
            allow_multi_node_block: true,
            host_acl: true,
            ..settings()
        },
    )
}

fn allow_list(c: &Controller<FakeRds>, id: &VolumeId) -> String {
    c.rds.state().disks[id.slot()].nvme_tcp_allow_host.clone()
}

#[test]
fn host_acls_allow_exactly_the_published_nodes_and_never_export_an_empty_list() {
    let c = acl_controller();
    let (cap, v) = shared_block(&c, "vol-acl");
    assert_eq!(allow_list(&c, &v.id), "");
    let a = HostIdentity::for_node("node-a").unwrap();
    let b = HostIdentity::for_node("node-b").unwrap();
    let ctx = c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
    assert_eq!(ctx[fence::KEY_HOST_NQN], a.nqn);
    assert_eq!(ctx[fence::KEY_HOST_ID], a.id);
    assert_eq!(allow_list(&c, &v.id), a.nqn);
    assert!(exported(&c, &v.id));
    // The allow list is written before the export goes on.
    let changes = c.rds.changes();
    let allow_at = changes.iter().position(|x| x.starts_with("allow ")).unwrap();
    let export_at = changes.iter().position(|x| x.starts_with("export ")).unwrap();
    assert!(allow_at < export_at, "{changes:?}");
    let ctx = c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
    assert_eq!(ctx[fence::KEY_HOST_NQN], b.nqn);
    assert_eq!(
        allow_list(&c, &v.id),
        fence::format_allow_list(&[a.nqn.clone(), b.nqn.clone()])
    );
    // A repeat changes nothing.
    let changes = c.rds.changes();
    c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
    assert_eq!(c.rds.changes(), changes);
    // Unpublishing one cuts off only that one: off the list first, then
    // the export off and on again drops the connection it may still hold.
    let before = c.rds.changes().len();
    c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    assert_eq!(allow_list(&c, &v.id), b.nqn);
    assert!(exported(&c, &v.id));
    let slot = v.id.slot();
    assert_eq!(
        c.rds.changes()[before..].to_vec(),
        vec![
            format!("allow {slot} {}", b.nqn),
            format!("unexport {slot}"),
            format!("export {slot}"),
            format!("comment {slot}"),
        ],
        "the allow list, the cut, then the record"
    );
    // A repeat (the node already gone) cuts nobody again.
    let changes = c.rds.changes();
    c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    assert_eq!(c.rds.changes(), changes);
    // The last one: the export goes off before the list empties.
    c.unpublish(v.id.as_str(), Some("node-b")).unwrap();
    assert_eq!(allow_list(&c, &v.id), "");
    assert!(!exported(&c, &v.id));
    let changes = c.rds.changes();
    let unexport_at = changes.iter().rposition(|x| x.starts_with("unexport ")).unwrap();
    let emptied_at = changes.iter().rposition(|x| x.starts_with("allow ")).unwrap();
    assert!(unexport_at < emptied_at, "{changes:?}");
}

#[test]
fn an_allow_list_the_rds_did_not_keep_fails_naming_what_it_stored() {
    let c = acl_controller();
    let v = create(&c, "vol-acl", &HashMap::new(), GIB).unwrap();
    c.rds.state().allow_mangle = Some("somebody-else".into());
    let cap = mount_cap(AccessMode::SingleNodeWriter);
    let err = c
        .publish(v.id.as_str(), "node-a", &cap, &HashMap::new())
        .unwrap_err();
    assert!(matches!(err, Error::AllowListNotKept { .. }), "{err}");
    assert!(err.to_string().contains("\"somebody-else\""), "{err}");
    // Never exported with a list it did not mean.
    assert!(!exported(&c, &v.id));
}

#[test]
fn a_node_id_that_cannot_form_a_host_nqn_is_a_bad_argument() {
    let c = acl_controller();
    let v = create(&c, "vol-acl", &HashMap::new(), GIB).unwrap();
    let cap = mount_cap(AccessMode::SingleNodeWriter);
    let err = c
        .publish(v.id.as_str(), "node a", &cap, &HashMap::new())
        .unwrap_err();
    assert!(matches!(err, Error::HostNqnRule { .. }), "{err}");
    assert!(err.to_string().contains("may only contain"), "{err}");
    assert!(c.get(v.id.as_str()).unwrap().nodes.is_empty());
}

#[test]
fn a_crash_while_cutting_a_node_off_is_finished_by_the_retry() {
    let c = acl_controller();
    let (cap, v) = shared_block(&c, "vol-cut");
    c.publish(v.id.as_str(), "node-a", &cap, &HashMap::new()).unwrap();
    c.publish(v.id.as_str(), "node-b", &cap, &HashMap::new()).unwrap();
    // The export goes off, then turning it on again fails.
    let before = c.rds.changes().len();
    c.rds.state().fail_after_exports = Some(1);
    assert!(c.unpublish(v.id.as_str(), Some("node-a")).is_err());
    // Off the network, node-a still recorded: the retry cuts and exports again.
    assert!(!exported(&c, &v.id));
    assert_eq!(c.get(v.id.as_str()).unwrap().nodes.len(), 2);
    assert!(c.rds.changes().len() > before);
    c.unpublish(v.id.as_str(), Some("node-a")).unwrap();
    assert!(exported(&c, &v.id));
    assert_eq!(c.get(v.id.as_str()).unwrap().nodes, vec!["node-b".to_string()]);
    let b = HostIdentity::for_node("node-b").unwrap();
    assert_eq!(allow_list(&c, &v.id), b.nqn);
}
