//! Unit tests of the controller's rules: the ownership rule on disks, the
//! creation digest.

use super::record::{creation_digest, owned};
use super::*;
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
