//! RouterOS as it really answers, through the client and the real driver
//! against `rds-sim`: `no such command or directory` is never "already
//! gone", a missing policy fails at once with the fix, odd disk renderings
//! never fail a listing, the pool's mount root lists as `type=disk`, and a
//! box that refuses or ignores a grow is reported, not taken for done.

mod common;

use common::csi::{create_request, status_of, ControllerEnv};
use common::Sim;
use rds_csi::rds::{Kind, NewDisk, REQUIRED_POLICIES};
use serde_json::json;

const GIB: u64 = 1 << 30;

fn new_disk(slot: &str, size: u64) -> NewDisk {
    NewDisk {
        slot: slot.to_string(),
        file_path: format!("storage-pool/csi/{slot}.img"),
        size_bytes: size,
        comment: format!("csi=name-of-{slot}"),
        nqn: Some(format!("nqn.2000-02.com.mikrotik:{slot}")),
        port: 4420,
    }
}

#[test]
fn a_delete_answered_no_such_command_is_not_reported_done() {
    let env = ControllerEnv::start(&[]);
    let vol = env
        .create(&create_request("pvc-nosuchcmd", GIB as i64, &[]))
        .expect("create")
        .volume
        .unwrap();
    let slots = env.volume_slots();
    assert_eq!(slots.len(), 1, "{slots:?}");
    // The DELETE (only) is answered as RouterOS answers a command it lacks.
    env.sim.fault(json!({
        "fail_next": 1, "fail_kind": "no-such-command", "fail_method": "DELETE"
    }));
    let err = env
        .delete(&vol.volume_id)
        .expect_err("a failed delete reported done");
    let st = status_of(err);
    assert!(
        st.message().contains("no such command") || st.message().contains("no such menu"),
        "{:?}: {}",
        st.code(),
        st.message()
    );
    assert_eq!(env.volume_slots(), slots, "the disk must still be there");
    // Once RouterOS answers properly, the delete finishes.
    env.sim.reset_faults();
    env.delete(&vol.volume_id).expect("delete");
    assert!(env.volume_slots().is_empty());
}

#[test]
fn the_client_never_takes_no_such_command_for_gone() {
    let sim = Sim::start();
    // Deletes are confined to the base path the volumes live under.
    let client = sim.client().with_base_path("storage-pool/csi");
    client.create_disk(&new_disk("pvc-nsc", GIB)).unwrap();
    sim.fault(json!({"fail_next": 1, "fail_kind": "no-such-command", "fail_method": "DELETE"}));
    let e = client
        .remove_disk("pvc-nsc", "storage-pool/csi/pvc-nsc.img")
        .expect_err("no such command taken for gone");
    assert_eq!(e.kind(), Kind::Protocol, "{e}");
    assert!(!e.is_not_found());
    assert!(client.disk("pvc-nsc").unwrap().is_some());
    // A file delete answered the same way is not "already gone" either.
    sim.reset_faults();
    client
        .remove_disk("pvc-nsc", "storage-pool/csi/pvc-nsc.img")
        .unwrap();
    sim.request(
        "PUT",
        "/rest/file",
        Some(&json!({"name": "storage-pool/csi/loose.txt", "contents": "x"})),
    );
    sim.fault(json!({"fail_next": 1, "fail_kind": "no-such-command", "fail_method": "DELETE"}));
    let e = client
        .remove_file("storage-pool/csi/loose.txt")
        .expect_err("no such command taken for gone");
    assert_eq!(e.kind(), Kind::Protocol, "{e}");
    assert!(client.remove_file("storage-pool/csi/loose.txt").unwrap());
}

#[test]
fn a_user_without_the_api_policy_fails_at_once_naming_the_policies() {
    let sim = Sim::start();
    let client = sim.client();
    sim.fault(json!({"fail_next": 1000, "fail_kind": "not-allowed"}));
    let before = sim.stat("injected_failures");
    let e = client.list_disks("").expect_err("not allowed");
    assert_eq!(
        sim.stat("injected_failures") - before,
        1,
        "a definite answer is not retried"
    );
    assert_eq!(e.kind(), Kind::Unauthorized, "{e}");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(text.contains("read,write,test,api,rest-api"), "{text}");
    assert_eq!(REQUIRED_POLICIES, "read,write,test,api,rest-api");

    // Through the driver, the operator reads the fix in the answer.
    let env = ControllerEnv::with_sim(sim, &[]);
    let st = status_of(
        env.create(&create_request("pvc-policy", GIB as i64, &[]))
            .expect_err("not allowed"),
    );
    assert!(
        st.message().contains(REQUIRED_POLICIES),
        "{:?}: {}",
        st.code(),
        st.message()
    );
}

#[test]
fn odd_file_size_renderings_never_fail_a_listing() {
    let sim = Sim::start();
    let client = sim.client();
    client.create_disk(&new_disk("pvc-units", 50 * GIB)).unwrap();
    client
        .create_disk(&new_disk("pvc-units2", 3 * GIB + 512))
        .unwrap();
    sim.fault(json!({"file_size_units": true}));
    let (_, raw) = sim.request("GET", "/rest/disk?slot=pvc-units", None);
    assert_eq!(raw[0]["file-size"], "50.0GiB", "{raw}");
    let disks = client
        .list_disks("pvc-units")
        .expect("a listing with CLI-rendered sizes");
    let sizes: Vec<(String, Option<u64>)> = disks.iter().map(|d| (d.slot.clone(), d.bytes())).collect();
    assert_eq!(
        sizes,
        vec![
            ("pvc-units".to_string(), Some(50 * GIB)),
            ("pvc-units2".to_string(), Some(3 * GIB + 512)),
        ]
    );
    // A create that finds its disk again, a grow and a pool read all cope.
    client.create_disk(&new_disk("pvc-units", 50 * GIB)).unwrap();
    let grown = client.grow_disk("pvc-units2", 4 * GIB).unwrap();
    assert_eq!(grown.bytes(), Some(4 * GIB));
    client.pool("storage-pool").unwrap();
}

#[test]
fn folders_cope_with_the_pool_root_and_refuse_a_plain_file() {
    let sim = Sim::start();
    let client = sim.client();
    let (_, root) = sim.request("GET", "/rest/file?name=storage-pool", None);
    assert_eq!(root[0]["type"], "disk", "{root}");
    // The pool's own root is a folder already.
    client
        .make_directory("storage-pool")
        .expect("the pool root is a folder");
    client.make_directory("storage-pool/csi").unwrap();
    client.make_directory("storage-pool/csi").unwrap();
    sim.request(
        "PUT",
        "/rest/file",
        Some(&json!({"name": "storage-pool/plain", "contents": "not a folder"})),
    );
    let e = client
        .make_directory("storage-pool/plain")
        .expect_err("a plain file taken for a folder");
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(e.to_string().contains("not a directory"), "{e}");
}

#[test]
fn a_grow_the_rds_ignores_or_refuses_is_never_reported_done() {
    let sim = Sim::start();
    let client = sim.client();
    client.create_disk(&new_disk("pvc-grow", GIB)).unwrap();
    sim.fault(json!({"file_size": "ignore"}));
    let e = client
        .grow_disk("pvc-grow", 2 * GIB)
        .expect_err("an ignored grow");
    assert_eq!(e.kind(), Kind::Protocol, "{e}");
    assert!(e.to_string().contains("size"), "{e}");
    sim.fault(json!({"file_size": "refuse"}));
    let e = client.grow_disk("pvc-grow", 2 * GIB).expect_err("a refused grow");
    assert!(e.to_string().contains("file-size"), "{e}");
    assert_eq!(client.disk("pvc-grow").unwrap().unwrap().bytes(), Some(GIB));

    // Through the driver: ControllerExpandVolume fails, loudly.
    let env = ControllerEnv::with_sim(sim, &[]);
    env.sim.reset_faults();
    let vol = env
        .create(&create_request("pvc-expand-ignored", GIB as i64, &[]))
        .unwrap()
        .volume
        .unwrap();
    env.sim.fault(json!({"file_size": "ignore"}));
    let st = status_of(
        env.expand(&vol.volume_id, 2 * GIB as i64, false)
            .expect_err("an ignored grow reported done"),
    );
    assert!(st.message().contains("size"), "{:?}: {}", st.code(), st.message());
}
