//! The Controller service through the real binary against a running
//! `rds-sim`: the volume lifecycle checked on the emulator's state at each
//! step, idempotency, concurrency, validation, full pools, outages and
//! crashes between steps.

// Test helpers may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::csi::*;
use common::driver::opt;
use common::{Sim, SimOptions};
use grpcio::RpcStatusCode;
use rds_csi::proto::csi;
use rds_csi::proto::csi::volume_capability::access_mode::Mode;
use serde_json::json;

const PVC: &str = "pvc-3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b";
const PVC_SLOT: &str = "pvc-3f2a1b4c5d6e4f708a9b0c1d2e3f";

fn capacity(env: &ControllerEnv) -> i64 {
    env.controller()
        .get_capacity(&csi::GetCapacityRequest::new(), opt(10))
        .unwrap()
        .available_capacity
}

fn list_ids(env: &ControllerEnv) -> Vec<String> {
    env.controller()
        .list_volumes(&csi::ListVolumesRequest::new(), opt(10))
        .unwrap()
        .entries
        .iter()
        .map(|e| e.volume.volume_id.clone())
        .collect()
}

#[test]
fn lifecycle_create_capacity_list_publish_expand_unpublish_delete() {
    let env = ControllerEnv::start(&[]);
    let before = capacity(&env);
    assert_eq!(before, 100 * GIB);

    let resp = env
        .create(&create_request(
            PVC,
            GIB,
            &[
                ("ctrlLossTmo", "-1"),
                ("reconnectDelay", "7"),
                ("keepAliveTmo", "30"),
                ("csi.storage.k8s.io/pv/name", PVC),
                ("csi.storage.k8s.io/pvc/name", "data"),
                ("csi.storage.k8s.io/pvc/namespace", "apps"),
            ],
        ))
        .unwrap();
    let vol = resp.volume.unwrap();
    assert_eq!(vol.volume_id, PVC_SLOT);
    assert_eq!(vol.capacity_bytes, GIB);
    let nqn = format!("nqn.2000-02.com.mikrotik:{PVC_SLOT}");
    let ctx = &vol.volume_context;
    assert_eq!(ctx["nqn"], nqn);
    assert_eq!(ctx["nvmeAddress"], "127.0.0.1");
    assert_eq!(ctx["nvmePort"], "4420");
    assert_eq!(ctx["fsType"], "ext4");
    assert_eq!(ctx["ctrlLossTmo"], "-1");
    assert_eq!(ctx["reconnectDelay"], "7");
    assert_eq!(ctx["keepAliveTmo"], "30");

    // On the RDS: a file disk, set up for export under the NQN but not
    // exported until published, exact size, our record.
    let disk = env.disk(PVC_SLOT).expect("disk created");
    assert_eq!(disk["type"], "file");
    // The pool is Btrfs: the image lives in the volume's own subvolume.
    assert_eq!(
        disk["file-path"],
        format!("/storage-pool/csi/{PVC_SLOT}/{PVC_SLOT}.img")
    );
    assert_eq!(disk["size"], "1073741824");
    assert_eq!(disk["nvme-tcp-export"], "false");
    assert!(env.sim.exports_file()["exports"].as_array().unwrap().is_empty());
    assert_eq!(disk["nvme-tcp-server-nqn"], nqn);
    assert_eq!(disk["nvme-tcp-server-port"], "4420");
    assert_eq!(disk["mount-filesystem"], "false");
    let comment = disk["comment"].as_str().unwrap();
    assert!(
        comment.starts_with(&format!("rds-csi/v2 name={PVC} ")),
        "{comment}"
    );
    assert!(comment.contains("pvc=apps/data"), "{comment}");
    let file = format!("storage-pool/csi/{PVC_SLOT}/{PVC_SLOT}.img");
    let host_file = env.sim.backing_path(&file);
    assert_eq!(std::fs::metadata(&host_file).unwrap().len(), 1 << 30);

    assert_eq!(capacity(&env), before - GIB);
    assert_eq!(list_ids(&env), vec![PVC_SLOT.to_string()]);

    // Publish records the node on the disk and exports it; a second node
    // is fenced off.
    let published = env.publish(PVC_SLOT, "node-a", rwo()).unwrap();
    assert_eq!(env.disk(PVC_SLOT).unwrap()["nvme-tcp-export"], "true");
    assert!(env.sim.exports_file()["exports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["nqn"] == nqn));
    assert_eq!(published.publish_context["nqn"], nqn);
    assert_eq!(published.publish_context["nvmeAddress"], "127.0.0.1");
    assert!(env.disk(PVC_SLOT).unwrap()["comment"]
        .as_str()
        .unwrap()
        .contains("nodes=node-a"));
    let err = status_of(env.publish(PVC_SLOT, "node-b", rwo()).unwrap_err());
    assert_eq!(err.code(), RpcStatusCode::FAILED_PRECONDITION);
    assert!(err.message().contains("node-a"), "{}", err.message());

    // Expand: grown on the RDS, the filesystem still to grow on the node.
    let grown = env.expand(PVC_SLOT, 2 * GIB, false).unwrap();
    assert_eq!(grown.capacity_bytes, 2 * GIB);
    assert!(grown.node_expansion_required);
    assert_eq!(env.disk(PVC_SLOT).unwrap()["size"], "2147483648");
    assert_eq!(std::fs::metadata(&host_file).unwrap().len(), 2 << 30);

    // Still published: deleting is refused.
    let err = status_of(env.delete(PVC_SLOT).unwrap_err());
    assert_eq!(err.code(), RpcStatusCode::FAILED_PRECONDITION);
    assert!(err.message().contains("node-a"), "{}", err.message());

    env.unpublish(PVC_SLOT, "node-a").unwrap();
    assert!(!env.disk(PVC_SLOT).unwrap()["comment"]
        .as_str()
        .unwrap()
        .contains("nodes="));
    assert_eq!(env.disk(PVC_SLOT).unwrap()["nvme-tcp-export"], "false");
    assert!(env.sim.exports_file()["exports"].as_array().unwrap().is_empty());

    env.delete(PVC_SLOT).unwrap();
    assert!(env.disk(PVC_SLOT).is_none(), "disk left behind");
    assert!(
        !env.files().iter().any(|f| f.ends_with(".img")),
        "backing file left: {:?}",
        env.files()
    );
    assert!(!host_file.exists());
    assert!(env.sim.exports_file()["exports"].as_array().unwrap().is_empty());
    assert_eq!(capacity(&env), before);
    assert!(list_ids(&env).is_empty());
}

#[test]
fn every_rpc_twice_gives_the_same_answer() {
    let env = ControllerEnv::start(&[]);
    let mut req = create_request("vol-twice", 3 * GIB / 2, &[("fsType", "xfs")]);
    req.volume_capabilities = vec![mount_cap("", Mode::SINGLE_NODE_WRITER)];
    let first = env.create(&req).unwrap();
    let second = env.create(&req).unwrap();
    assert_eq!(first, second);
    let id = first.volume.volume_id.clone();
    // 1.5 GiB is already a whole number of MiB.
    assert_eq!(first.volume.capacity_bytes, 3 * GIB / 2);

    assert_eq!(
        env.publish(&id, "n1", rwo()).unwrap(),
        env.publish(&id, "n1", rwo()).unwrap()
    );
    let e1 = env.expand(&id, 2 * GIB, false).unwrap();
    let e2 = env.expand(&id, 2 * GIB, false).unwrap();
    assert_eq!(e1, e2);
    env.unpublish(&id, "n1").unwrap();
    env.unpublish(&id, "n1").unwrap();
    // A create repeated after an expansion is still the same volume.
    assert_eq!(env.create(&req).unwrap().volume.volume_id, id);
    env.delete(&id).unwrap();
    env.delete(&id).unwrap();
    assert!(env.volume_slots().is_empty());
    // Unknown volumes: unpublish and delete succeed.
    env.unpublish("pvc-nothere", "n1").unwrap();
    env.delete("pvc-nothere").unwrap();
    env.delete("Not A Volume").unwrap();
}

#[test]
fn same_name_with_a_different_request_is_already_exists() {
    let env = ControllerEnv::start(&[]);
    env.create(&create_request("vol-a", GIB, &[])).unwrap();
    for (req, why) in [
        (create_request("vol-a", 2 * GIB, &[]), "bigger"),
        (
            create_request("vol-a", GIB, &[("reconnectDelay", "9")]),
            "other parameters",
        ),
        (
            {
                let mut r = create_request("vol-a", GIB, &[]);
                r.volume_capabilities = vec![mount_cap("xfs", Mode::SINGLE_NODE_WRITER)];
                r
            },
            "other filesystem",
        ),
    ] {
        let err = status_of(env.create(&req).unwrap_err());
        assert_eq!(
            err.code(),
            RpcStatusCode::ALREADY_EXISTS,
            "{why}: {}",
            err.message()
        );
        assert!(err.message().contains("vol-a"), "{}", err.message());
    }
    assert_eq!(env.volume_slots().len(), 1);
}

#[test]
fn concurrent_creates_of_one_name_make_exactly_one_disk() {
    let env = Arc::new(ControllerEnv::start(&[]));
    env.sim.fault(json!({"latency_ms": 20}));
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (env, barrier) = (Arc::clone(&env), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                env.create(&create_request("vol-race", GIB, &[]))
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut aborted = 0;
    for t in threads {
        match t.join().unwrap() {
            Ok(resp) => ids.push(resp.volume.volume_id.clone()),
            Err(e) => {
                let st = status_of(e);
                assert_eq!(st.code(), RpcStatusCode::ABORTED, "{}", st.message());
                aborted += 1;
            }
        }
    }
    assert!(!ids.is_empty(), "nobody created the volume");
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "different volumes: {ids:?}");
    assert_eq!(ids.len() + aborted, 64);
    assert_eq!(env.volume_slots(), vec![ids[0].clone()]);
}

#[test]
fn each_bad_value_is_invalid_argument_naming_it() {
    let env = ControllerEnv::start(&[]);
    let bad_params: &[(&str, &str)] = &[
        ("fsType", "btrfs"),
        ("nvmeAddress", "not a host"),
        ("nvmePort", "0"),
        ("nvmePort", "70000"),
        ("volumePath", "storage-pool/csi/../../etc"),
        ("volumePath", "other-pool/x"),
        ("ctrlLossTmo", "-2"),
        ("reconnectDelay", "0"),
        ("keepAliveTmo", "-1"),
        ("ctrlLossTimeout", "5"),
    ];
    for (k, v) in bad_params {
        let err = status_of(
            env.create(&create_request("vol-bad", GIB, &[(k, v)]))
                .unwrap_err(),
        );
        assert_eq!(
            err.code(),
            RpcStatusCode::INVALID_ARGUMENT,
            "{k}={v}: {}",
            err.message()
        );
        assert!(err.message().contains(k), "{k}={v}: {}", err.message());
    }

    type Mutation = fn(&mut csi::CreateVolumeRequest);
    let fields: &[(&str, Mutation)] = &[
        ("name", |r| r.name.clear()),
        ("name", |r| r.name = "bad name!".into()),
        ("volume_capabilities", |r| r.volume_capabilities.clear()),
        ("access_type", |r| {
            r.volume_capabilities = vec![csi::VolumeCapability::new()]
        }),
        ("access_mode", |r| {
            r.volume_capabilities = vec![mount_cap("ext4", Mode::UNKNOWN)]
        }),
        ("fs_type", |r| {
            r.volume_capabilities = vec![mount_cap("ntfs", Mode::SINGLE_NODE_WRITER)]
        }),
        ("MULTI_NODE_MULTI_WRITER", |r| {
            r.volume_capabilities = vec![mount_cap("ext4", Mode::MULTI_NODE_MULTI_WRITER)]
        }),
        ("--allow-multi-node-block", |r| {
            r.volume_capabilities = vec![block_cap(Mode::MULTI_NODE_MULTI_WRITER)]
        }),
        ("capacity_range", |r| {
            r.capacity_range.as_mut().unwrap().required_bytes = -1
        }),
        ("limit_bytes", |r| {
            r.capacity_range.as_mut().unwrap().limit_bytes = 1000
        }),
        ("volume_content_source", |r| {
            r.volume_content_source = Some(csi::VolumeContentSource::new()).into()
        }),
        ("fsType", |r| {
            r.parameters.insert("fsType".into(), "xfs".into());
        }),
    ];
    for (field, mutate) in fields {
        let mut req = create_request("vol-bad", 2 * GIB, &[]);
        mutate(&mut req);
        let err = status_of(env.create(&req).unwrap_err());
        assert_eq!(
            err.code(),
            RpcStatusCode::INVALID_ARGUMENT,
            "{field}: {}",
            err.message()
        );
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    // A limit no size fits is OUT_OF_RANGE.
    let mut req = create_request("vol-bad", GIB + 1, &[]);
    req.capacity_range.as_mut().unwrap().limit_bytes = GIB + 2;
    let err = status_of(env.create(&req).unwrap_err());
    assert_eq!(err.code(), RpcStatusCode::OUT_OF_RANGE, "{}", err.message());
    // Nothing was created by any of them.
    assert!(env.volume_slots().is_empty(), "{:?}", env.volume_slots());
    assert!(!env.files().iter().any(|f| f.ends_with(".img")));
}

#[test]
fn multi_node_block_only_when_enabled() {
    let env = ControllerEnv::start(&["--allow-multi-node-block"]);
    let mut req = create_request("vol-shared", GIB, &[]);
    req.volume_capabilities = vec![block_cap(Mode::MULTI_NODE_MULTI_WRITER)];
    let id = env.create(&req).unwrap().volume.volume_id.clone();
    env.publish(&id, "n1", block_cap(Mode::MULTI_NODE_MULTI_WRITER))
        .unwrap();
    env.publish(&id, "n2", block_cap(Mode::MULTI_NODE_MULTI_WRITER))
        .unwrap();
    let comment = env.disk(&id).unwrap()["comment"].as_str().unwrap().to_string();
    assert!(comment.contains("nodes=n1,n2"), "{comment}");
    // Filesystems stay single-node even then.
    let mut req = create_request("vol-shared-fs", GIB, &[]);
    req.volume_capabilities = vec![mount_cap("ext4", Mode::MULTI_NODE_MULTI_WRITER)];
    assert_eq!(code_of(env.create(&req)), RpcStatusCode::INVALID_ARGUMENT);
}

#[test]
fn a_full_pool_is_resource_exhausted_and_leaves_nothing_behind() {
    let env = ControllerEnv::with_pool(3 << 30, &["--capacity-reserve", "1Gi"]);
    assert_eq!(capacity(&env), 2 * GIB);
    env.create(&create_request("vol-fits", GIB, &[])).unwrap();
    let err = status_of(
        env.create(&create_request("vol-too-big", 2 * GIB, &[]))
            .unwrap_err(),
    );
    assert_eq!(err.code(), RpcStatusCode::RESOURCE_EXHAUSTED);
    // The message carries the numbers.
    assert!(
        err.message().contains(&(2 * GIB).to_string()),
        "{}",
        err.message()
    );
    assert!(err.message().contains(&GIB.to_string()), "{}", err.message());
    // The RDS itself refusing (a race with another user of the pool) is
    // mapped the same way, and nothing is left either.
    env.sim.fault(json!({"no_space": true}));
    let err = status_of(
        env.create(&create_request("vol-refused", GIB / 2, &[]))
            .unwrap_err(),
    );
    assert_eq!(err.code(), RpcStatusCode::RESOURCE_EXHAUSTED, "{}", err.message());
    env.sim.reset_faults();
    assert_eq!(env.volume_slots().len(), 1);
    assert_eq!(env.files().iter().filter(|f| f.ends_with(".img")).count(), 1);
}

#[test]
fn an_rds_outage_is_unavailable_and_the_retry_completes_without_leaks() {
    let env = ControllerEnv::start(&[]);
    let req = create_request("vol-outage", GIB, &[]);
    env.sim.fault(json!({"down_for_ms": 4000}));
    let started = Instant::now();
    let err = status_of(env.create(&req).unwrap_err());
    assert_eq!(err.code(), RpcStatusCode::UNAVAILABLE, "{}", err.message());
    // --rds-retry-for 2: the call gives up in seconds, not minutes.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    env.sim.wait_until_up(Duration::from_secs(10));
    let id = env.create(&req).unwrap().volume.volume_id.clone();
    assert_eq!(env.volume_slots(), vec![id.clone()]);

    env.sim.fault(json!({"down_for_ms": 4000}));
    assert_eq!(code_of(env.delete(&id)), RpcStatusCode::UNAVAILABLE);
    env.sim.wait_until_up(Duration::from_secs(10));
    env.delete(&id).unwrap();
    assert!(env.volume_slots().is_empty());
    assert!(
        !env.files().iter().any(|f| f.ends_with(".img")),
        "{:?}",
        env.files()
    );
}

#[test]
fn delete_finishes_whatever_step_a_crash_stopped_at() {
    let env = ControllerEnv::start(&[]);
    // Crash after "export off": the disk is still there, unexported.
    let a = env
        .create(&create_request("vol-step1", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let disk = env.disk(&a).unwrap();
    let (st, _) = env.sim.request(
        "PATCH",
        &format!("/rest/disk/{}", disk[".id"].as_str().unwrap()),
        Some(&json!({"nvme-tcp-export": "false"})),
    );
    assert_eq!(st, 200);
    env.delete(&a).unwrap();
    assert!(env.disk(&a).is_none());
    assert!(!env.files().iter().any(|f| f.contains(&a)));

    // Crash after "disk removed": only the backing file is left.
    let b = env
        .create(&create_request("vol-step2", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let disk = env.disk(&b).unwrap();
    let (st, _) = env.sim.request(
        "DELETE",
        &format!("/rest/disk/{}", disk[".id"].as_str().unwrap()),
        None,
    );
    assert!(st == 200 || st == 204, "{st}");
    assert!(
        env.files().iter().any(|f| f.contains(&b)),
        "the file stays with the disk gone"
    );
    env.delete(&b).unwrap();
    assert!(!env.files().iter().any(|f| f.contains(&b)), "{:?}", env.files());
}

#[test]
fn a_driver_killed_during_delete_is_finished_by_the_next_delete() {
    let mut env = ControllerEnv::start(&[]);
    let id = env
        .create(&create_request("vol-killed", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    // Slow the RDS so the kill lands somewhere inside the delete's steps.
    env.sim.fault(json!({"latency_ms": 400}));
    let client = env.controller();
    let id2 = id.clone();
    let call = std::thread::spawn(move || {
        let mut req = csi::DeleteVolumeRequest::new();
        req.volume_id = id2;
        client.delete_volume(&req, opt(30))
    });
    std::thread::sleep(Duration::from_millis(1300));
    env.restart_driver();
    let _ = call.join();
    env.sim.reset_faults();
    env.delete(&id).unwrap();
    assert!(env.disk(&id).is_none());
    assert!(!env.files().iter().any(|f| f.contains(&id)), "{:?}", env.files());
}

#[test]
fn the_attachment_survives_a_controller_restart() {
    let mut env = ControllerEnv::start(&[]);
    let id = env
        .create(&create_request("vol-fence", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    env.publish(&id, "node-a", rwo()).unwrap();
    env.restart_driver();
    let err = status_of(env.publish(&id, "node-b", rwo()).unwrap_err());
    assert_eq!(err.code(), RpcStatusCode::FAILED_PRECONDITION);
    assert!(err.message().contains("node-a"), "{}", err.message());
    env.publish(&id, "node-a", rwo()).unwrap();
}

#[test]
fn volumes_of_the_go_driver_work_for_every_rpc() {
    // RouterOS releases before 7.24 took 40-character slots.
    let sim = Sim::with(SimOptions {
        extra_args: vec!["--max-slot-len".into(), "40".into()],
        ..Default::default()
    });
    let legacy = "pvc-0e7c2a9d-41b3-4c55-9f0e-6a1d2b3c4d5e";
    sim.client()
        .create_disk(&rds_csi::rds::NewDisk {
            slot: legacy.into(),
            file_path: format!("storage-pool/csi/{legacy}.img"),
            size_bytes: 1 << 30,
            comment: String::new(),
            nqn: Some(format!("nqn.2000-02.com.mikrotik:{legacy}")),
            port: 4420,
        })
        .unwrap();
    let env = ControllerEnv::with_sim(sim, &[]);
    assert_eq!(list_ids(&env), vec![legacy.to_string()]);

    let mut v = csi::ValidateVolumeCapabilitiesRequest::new();
    v.volume_id = legacy.into();
    v.volume_capabilities = vec![rwo()];
    assert!(env
        .controller()
        .validate_volume_capabilities(&v, opt(10))
        .unwrap()
        .confirmed
        .is_some());
    let mut g = csi::ControllerGetVolumeRequest::new();
    g.volume_id = legacy.into();
    assert_eq!(
        env.controller()
            .controller_get_volume(&g, opt(10))
            .unwrap()
            .volume
            .capacity_bytes,
        GIB
    );

    let ctx = env.publish(legacy, "node-a", rwo()).unwrap().publish_context;
    assert_eq!(ctx["nqn"], format!("nqn.2000-02.com.mikrotik:{legacy}"));
    assert_eq!(
        code_of(env.publish(legacy, "node-b", rwo())),
        RpcStatusCode::FAILED_PRECONDITION
    );
    assert_eq!(
        env.expand(legacy, 2 * GIB, false).unwrap().capacity_bytes,
        2 * GIB
    );
    env.unpublish(legacy, "node-a").unwrap();
    env.delete(legacy).unwrap();
    assert!(env.volume_slots().is_empty());
    assert!(!env.files().iter().any(|f| f.ends_with(".img")));
}

#[test]
fn list_volumes_pages_and_rejects_bad_tokens() {
    let env = ControllerEnv::start(&[]);
    let mut made: Vec<String> = (0..5)
        .map(|i| {
            env.create(&create_request(&format!("vol-page-{i}"), GIB, &[]))
                .unwrap()
                .volume
                .volume_id
                .clone()
        })
        .collect();
    made.sort();
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let mut req = csi::ListVolumesRequest::new();
        req.max_entries = 2;
        req.starting_token = token.clone();
        let resp = env.controller().list_volumes(&req, opt(10)).unwrap();
        assert!(resp.entries.len() <= 2);
        seen.extend(resp.entries.iter().map(|e| e.volume.volume_id.clone()));
        if resp.next_token.is_empty() {
            break;
        }
        token = resp.next_token;
    }
    assert_eq!(seen, made);
    let mut req = csi::ListVolumesRequest::new();
    req.starting_token = "not/a token".into();
    assert_eq!(
        code_of(env.controller().list_volumes(&req, opt(10))),
        RpcStatusCode::ABORTED
    );
}

#[test]
fn validate_volume_capabilities_confirms_only_what_is_supported() {
    let env = ControllerEnv::start(&[]);
    let id = env
        .create(&create_request("vol-validate", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let ask = |cap: csi::VolumeCapability, vol: &str| {
        let mut req = csi::ValidateVolumeCapabilitiesRequest::new();
        req.volume_id = vol.into();
        req.volume_capabilities = vec![cap];
        env.controller().validate_volume_capabilities(&req, opt(10))
    };
    assert!(ask(rwo(), &id).unwrap().confirmed.is_some());
    let resp = ask(mount_cap("ext4", Mode::MULTI_NODE_MULTI_WRITER), &id).unwrap();
    assert!(resp.confirmed.is_none());
    assert!(
        resp.message.contains("MULTI_NODE_MULTI_WRITER"),
        "{}",
        resp.message
    );
    assert_eq!(code_of(ask(rwo(), "pvc-unknown")), RpcStatusCode::NOT_FOUND);
}

#[test]
fn expansion_never_shrinks_and_block_needs_no_node_step() {
    let env = ControllerEnv::start(&[]);
    let id = env
        .create(&create_request("vol-grow", 2 * GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let smaller = env.expand(&id, GIB, false).unwrap();
    assert_eq!(smaller.capacity_bytes, 2 * GIB);
    assert_eq!(env.disk(&id).unwrap()["size"], "2147483648");
    let block = env.expand(&id, 3 * GIB, true).unwrap();
    assert_eq!(block.capacity_bytes, 3 * GIB);
    assert!(!block.node_expansion_required);
    assert_eq!(
        code_of(env.expand("pvc-unknown", GIB, false)),
        RpcStatusCode::NOT_FOUND
    );
}

#[test]
fn capabilities_advertise_what_is_implemented() {
    use csi::controller_service_capability::rpc::Type;
    let env = ControllerEnv::start(&[]);
    let caps = env
        .controller()
        .controller_get_capabilities(&csi::ControllerGetCapabilitiesRequest::new(), opt(10))
        .unwrap();
    let types: Vec<Type> = caps
        .capabilities
        .iter()
        .map(|c| c.rpc().type_.enum_value_or_default())
        .collect();
    for t in [
        Type::CREATE_DELETE_VOLUME,
        Type::PUBLISH_UNPUBLISH_VOLUME,
        Type::EXPAND_VOLUME,
        Type::GET_CAPACITY,
        Type::LIST_VOLUMES,
    ] {
        assert!(types.contains(&t), "{t:?} missing");
    }
    // The sim's pool is Btrfs: snapshots, clones and GetSnapshot are offered.
    for t in [
        Type::CREATE_DELETE_SNAPSHOT,
        Type::LIST_SNAPSHOTS,
        Type::CLONE_VOLUME,
        Type::GET_SNAPSHOT,
    ] {
        assert!(types.contains(&t), "{t:?} missing on a btrfs pool");
    }
    assert!(
        !types.contains(&Type::MODIFY_VOLUME),
        "MODIFY_VOLUME advertised but not built"
    );
    // The plugin capabilities name the controller service.
    let plugin = env
        .driver
        .identity()
        .get_plugin_capabilities(&csi::GetPluginCapabilitiesRequest::new(), opt(10))
        .unwrap();
    assert!(plugin.capabilities.iter().any(|c| c.has_service()));
    // A snapshot of a volume that does not exist.
    let mut snap = csi::CreateSnapshotRequest::new();
    snap.source_volume_id = "pvc-x".into();
    snap.name = "snap".into();
    assert_eq!(
        code_of(env.controller().create_snapshot(&snap, opt(10))),
        RpcStatusCode::NOT_FOUND
    );
}

fn wait_ready(env: &ControllerEnv, want: bool) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = env
            .driver
            .identity()
            .probe(&csi::ProbeRequest::new(), opt(5))
            .unwrap()
            .ready
            .value;
        if ready == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "Probe never became ready={want}; log:\n{}",
            env.driver.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn probe_follows_whether_the_rds_can_be_used() {
    let env = ControllerEnv::start(&[]);
    wait_ready(&env, true);
    env.sim.fault(json!({"down_for_ms": 3000}));
    wait_ready(&env, false);
    env.sim.wait_until_up(Duration::from_secs(10));
    wait_ready(&env, true);
    let log = env.driver.log_text();
    assert!(log.contains("not ready"), "{log}");
}

#[test]
fn probe_is_not_ready_with_wrong_credentials() {
    let sim = Sim::start();
    let dir = common::TempDir::new("creds");
    let (user, pass) = common::write_credentials(&dir.path, "admin", "not-the-password");
    let mut args = controller_args(&sim, &[]);
    for (flag, value) in [("--rds-username-file", &user), ("--rds-password-file", &pass)] {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = value.display().to_string();
    }
    let driver = common::driver::Driver::start_with(common::driver::DriverOpts {
        args,
        ..Default::default()
    });
    let env = ControllerEnv {
        sim,
        driver,
        extra: Vec::new(),
    };
    wait_ready(&env, false);
    let log = env.driver.log_text();
    assert!(log.contains("unauthorized"), "{log}");
    assert!(!log.contains("not-the-password"), "password logged:\n{log}");
    // A create says why, too.
    let err = status_of(env.create(&create_request("vol-auth", GIB, &[])).unwrap_err());
    assert_eq!(err.code(), RpcStatusCode::UNAVAILABLE);
    assert!(err.message().contains("unauthorized"), "{}", err.message());
    // Fixing the mounted secret is picked up without a restart.
    let right = std::fs::read_to_string(&env.sim.password_file).unwrap();
    std::fs::write(&pass, right).unwrap();
    wait_ready(&env, true);
    env.create(&create_request("vol-auth", GIB, &[])).unwrap();
}

// ---------------------------------------------------------------------------
// Only our own disks: hand-made and foreign disks are never touched, forged
// names and tokens are refused
// ---------------------------------------------------------------------------

/// Makes a disk through rds-sim's REST API, as an operator would by hand.
fn hand_made_disk(env: &ControllerEnv, slot: &str, file: &str, nqn: Option<&str>, comment: &str) -> String {
    let mut body = json!({
        "type": "file",
        "slot": slot,
        "file-path": file,
        "file-size": (GIB as u64).to_string(),
        "mount-filesystem": "false",
        "comment": comment,
    });
    let (st, disk) = env.sim.request("PUT", "/rest/disk", Some(&body));
    assert_eq!(st, 200, "{disk}");
    let id = disk[".id"].as_str().unwrap().to_string();
    body = json!({"nvme-tcp-export": "true"});
    if let Some(nqn) = nqn {
        body["nvme-tcp-server-nqn"] = json!(nqn);
    }
    let (st, disk) = env.sim.request("PATCH", &format!("/rest/disk/{id}"), Some(&body));
    assert_eq!(st, 200, "{disk}");
    id
}

fn get_volume(env: &ControllerEnv, id: &str) -> grpcio::Result<csi::ControllerGetVolumeResponse> {
    let mut g = csi::ControllerGetVolumeRequest::new();
    g.volume_id = id.into();
    env.controller().controller_get_volume(&g, opt(10))
}

fn validate(
    env: &ControllerEnv,
    id: &str,
    cap: csi::VolumeCapability,
    parameters: &[(&str, &str)],
) -> grpcio::Result<csi::ValidateVolumeCapabilitiesResponse> {
    let mut v = csi::ValidateVolumeCapabilitiesRequest::new();
    v.volume_id = id.into();
    v.volume_capabilities = vec![cap];
    v.parameters = params(parameters);
    env.controller().validate_volume_capabilities(&v, opt(10))
}

/// Every RPC that could change a foreign disk: DeleteVolume answers OK
/// without touching it, the others NOT_FOUND; disk, file, comment and size
/// stay exactly as they were.
fn assert_untouched(env: &ControllerEnv, slot: &str, file: &str) {
    let before = env.disk(slot).expect("the disk exists");
    env.delete(slot)
        .expect("DeleteVolume of a foreign disk answers OK");
    assert_eq!(
        env.disk(slot).as_ref(),
        Some(&before),
        "DeleteVolume changed {slot}"
    );
    assert!(
        env.files().iter().any(|f| f == file),
        "the backing file {file} of {slot} is gone: {:?}",
        env.files()
    );
    assert_eq!(
        code_of(env.expand(slot, 2 * GIB, false)),
        RpcStatusCode::NOT_FOUND
    );
    assert_eq!(
        code_of(env.publish(slot, "node-a", rwo())),
        RpcStatusCode::NOT_FOUND
    );
    assert_eq!(code_of(env.unpublish(slot, "node-a")), RpcStatusCode::NOT_FOUND);
    assert_eq!(code_of(get_volume(env, slot)), RpcStatusCode::NOT_FOUND);
    assert_eq!(code_of(validate(env, slot, rwo(), &[])), RpcStatusCode::NOT_FOUND);
    assert!(!list_ids(env).contains(&slot.to_string()));
    assert_eq!(env.disk(slot).as_ref(), Some(&before), "an RPC changed {slot}");
    let log = env.driver.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&format!("{slot:?}")) && l.contains("DeleteVolume")),
        "no warning naming {slot}:\n{log}"
    );
}

#[test]
fn a_hand_made_disk_is_never_touched() {
    let env = ControllerEnv::start(&[]);
    let file = "storage-pool/vms/backup.img";
    hand_made_disk(&env, "vm-backup", file, None, "nightly VM backup");
    assert_untouched(&env, "vm-backup", file);
    // Our own volumes still work beside it.
    let id = env
        .create(&create_request("vol-beside", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    assert_eq!(list_ids(&env), vec![id.clone()]);
    env.delete(&id).unwrap();
    assert!(env.disk("vm-backup").is_some());
}

#[test]
fn pvc_uuid_disks_outside_the_base_or_with_a_foreign_nqn_are_not_ours() {
    let sim = Sim::with(SimOptions {
        extra_args: vec!["--max-slot-len".into(), "40".into()],
        ..Default::default()
    });
    let env = ControllerEnv::with_sim(sim, &[]);
    let outside = "pvc-11111111-2222-4333-8444-555555555555";
    let outside_file = format!("storage-pool/vms/{outside}.img");
    hand_made_disk(
        &env,
        outside,
        &outside_file,
        Some(&format!("nqn.2000-02.com.mikrotik:{outside}")),
        "",
    );
    let foreign = "pvc-66666666-7777-4888-8999-aaaaaaaaaaaa";
    let foreign_file = format!("storage-pool/csi/{foreign}.img");
    hand_made_disk(
        &env,
        foreign,
        &foreign_file,
        Some("nqn.2014-08.org.example:other"),
        "",
    );
    assert_untouched(&env, outside, &outside_file);
    assert_untouched(&env, foreign, &foreign_file);
}

#[test]
fn forged_kubernetes_names_are_refused() {
    let env = ControllerEnv::start(&[]);
    let long = "n".repeat(64);
    for (key, value) in [
        ("csi.storage.k8s.io/pvc/name", "x nodes=evil-node"),
        ("csi.storage.k8s.io/pvc/name", "x name=other"),
        ("csi.storage.k8s.io/pv/name", "line\nbreak"),
        ("csi.storage.k8s.io/pv/name", "Upper"),
        ("csi.storage.k8s.io/pvc/namespace", "a.b"),
        ("csi.storage.k8s.io/pvc/namespace", long.as_str()),
    ] {
        let err = status_of(
            env.create(&create_request("vol-forged", GIB, &[(key, value)]))
                .unwrap_err(),
        );
        assert_eq!(err.code(), RpcStatusCode::INVALID_ARGUMENT, "{key}={value:?}");
        assert!(err.message().contains(key), "{}", err.message());
        assert!(!err.message().contains('\n'), "{}", err.message());
    }
    assert!(env.volume_slots().is_empty(), "{:?}", env.volume_slots());
}

#[test]
fn a_retried_create_with_kubernetes_names_is_ok_and_v1_records_still_count() {
    let mut env = ControllerEnv::start(&[]);
    let req = create_request(
        "pvc-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        GIB,
        &[
            (
                "csi.storage.k8s.io/pv/name",
                "pvc-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            ),
            ("csi.storage.k8s.io/pvc/name", "data.db-0"),
            ("csi.storage.k8s.io/pvc/namespace", "apps"),
        ],
    );
    let id = env.create(&req).unwrap().volume.volume_id.clone();
    let comment = env.disk(&id).unwrap()["comment"].as_str().unwrap().to_string();
    assert!(comment.starts_with("rds-csi/v2 "), "{comment}");
    assert!(comment.contains("pvc=apps/data.db-0"), "{comment}");
    // The answer was lost: the CO asks again, also after a restart.
    assert_eq!(env.create(&req).unwrap().volume.volume_id, id);
    env.restart_driver();
    assert_eq!(env.create(&req).unwrap().volume.volume_id, id);

    // A record as the previous release wrote it (v1) is still ours.
    let v1 = comment.replacen("rds-csi/v2 ", "rds-csi/v1 ", 1);
    let disk = env.disk(&id).unwrap();
    let (st, _) = env.sim.request(
        "PATCH",
        &format!("/rest/disk/{}", disk[".id"].as_str().unwrap()),
        Some(&json!({ "comment": v1 })),
    );
    assert_eq!(st, 200);
    assert_eq!(env.create(&req).unwrap().volume.volume_id, id);
    assert_eq!(list_ids(&env), vec![id.clone()]);
    env.publish(&id, "node-a", rwo()).unwrap();
    let now = env.disk(&id).unwrap()["comment"].as_str().unwrap().to_string();
    assert!(
        now.starts_with("rds-csi/v2 ") && now.contains("nodes=node-a"),
        "{now}"
    );
    env.unpublish(&id, "node-a").unwrap();
    env.delete(&id).unwrap();
    assert!(env.volume_slots().is_empty());
}

#[test]
fn validate_confirms_only_what_create_accepts() {
    let env = ControllerEnv::start(&[]);
    let id = env
        .create(&create_request("vol-confirm", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let huge = "x".repeat(1 << 20);
    for (key, value) in [
        ("volumePath", "../"),
        ("volumePath", "/etc"),
        ("volumePath", "storage-pool/csi/../vms"),
        ("csi.storage.k8s.io/pvc/name", "x nodes=evil-node"),
        ("fsType", "btrfs"),
    ] {
        let resp = validate(&env, &id, rwo(), &[(key, value)]).unwrap();
        assert!(resp.confirmed.is_none(), "{key}={} confirmed", value.len());
        assert!(resp.message.contains(key), "{}", resp.message);
        assert!(resp.message.len() < 1024, "{} bytes", resp.message.len());
        // CreateVolume refuses the same.
        assert_eq!(
            code_of(env.create(&create_request("vol-confirm-2", GIB, &[(key, value)]))),
            RpcStatusCode::INVALID_ARGUMENT
        );
    }
    // A value too long for any request field is refused at the edge, by
    // both calls alike, naming the key: never confirmed.
    let err = status_of(validate(&env, &id, rwo(), &[("volumePath", huge.as_str())]).unwrap_err());
    assert_eq!(err.code(), RpcStatusCode::INVALID_ARGUMENT);
    assert!(err.message().contains("volumePath"), "{}", err.message());
    assert!(err.message().len() < 1024, "{} bytes", err.message().len());
    assert_eq!(
        code_of(env.create(&create_request(
            "vol-confirm-2",
            GIB,
            &[("volumePath", huge.as_str())]
        ))),
        RpcStatusCode::INVALID_ARGUMENT
    );
    let resp = validate(&env, &id, rwo(), &[("volumePath", "storage-pool/csi/db")]).unwrap();
    assert!(resp.confirmed.is_some(), "{}", resp.message);

    // Mount flags the node would refuse at stage time.
    for flags in [
        &["bind"][..],
        &["remount"],
        &["noatime,rbind"],
        &["make-shared"],
        &["a b"],
    ] {
        let mut cap = rwo();
        cap.mut_mount().mount_flags = flags.iter().map(|f| f.to_string()).collect();
        let resp = validate(&env, &id, cap.clone(), &[]).unwrap();
        assert!(resp.confirmed.is_none(), "{flags:?} confirmed");
        assert!(resp.message.contains("mount_flags"), "{}", resp.message);
        let mut req = create_request("vol-flags", GIB, &[]);
        req.volume_capabilities = vec![cap];
        let err = status_of(env.create(&req).unwrap_err());
        assert_eq!(err.code(), RpcStatusCode::INVALID_ARGUMENT, "{flags:?}");
        assert!(err.message().contains("mount_flags"), "{}", err.message());
    }
    let mut cap = rwo();
    cap.mut_mount().mount_flags = vec!["noatime".into(), "discard".into()];
    let mut req = create_request("vol-flags", GIB, &[]);
    req.volume_capabilities = vec![cap];
    env.create(&req).unwrap();
    assert_eq!(env.volume_slots().len(), 2);
}

#[test]
fn list_tokens_the_driver_did_not_give_out_are_aborted() {
    let env = ControllerEnv::start(&[]);
    let mut ids: Vec<String> = (0..3)
        .map(|i| {
            env.create(&create_request(&format!("vol-token-{i}"), GIB, &[]))
                .unwrap()
                .volume
                .volume_id
                .clone()
        })
        .collect();
    ids.sort();
    let mut req = csi::ListVolumesRequest::new();
    req.max_entries = 1;
    let token = env.controller().list_volumes(&req, opt(10)).unwrap().next_token;
    assert_eq!(token, format!("v1:{}", ids[0]));
    for bad in [
        ids[0].clone(),
        "vm-backup".into(),
        "v1:vm-backup".into(),
        "v2:".to_string() + &ids[0],
        "v1:pvc-1".into(),
        format!("v1:{}x", ids[0]),
        "v1:".into(),
        "x".repeat(1 << 20),
    ] {
        let mut req = csi::ListVolumesRequest::new();
        req.starting_token = bad.clone();
        let err = status_of(env.controller().list_volumes(&req, opt(10)).unwrap_err());
        assert_eq!(err.code(), RpcStatusCode::ABORTED, "{}", bad.len());
        assert!(err.message().len() < 1024);
    }
}

#[test]
fn expanding_beyond_any_pool_is_out_of_range() {
    let env = ControllerEnv::start(&[]);
    let id = env
        .create(&create_request("vol-huge", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    for bytes in [i64::MAX, 101 * GIB] {
        let err = status_of(env.expand(&id, bytes, false).unwrap_err());
        assert_eq!(
            err.code(),
            RpcStatusCode::OUT_OF_RANGE,
            "{bytes}: {}",
            err.message()
        );
    }
    assert_eq!(env.disk(&id).unwrap()["size"], "1073741824");
    // Within the pool's size but beyond what is free: not enough space now.
    hand_made_disk(&env, "vm-big", "storage-pool/vms/big.img", None, "");
    assert_eq!(
        code_of(env.expand(&id, 100 * GIB, false)),
        RpcStatusCode::RESOURCE_EXHAUSTED
    );
}

/// The REST requests the sim counted while `f` ran.
fn requests<T>(env: &ControllerEnv, f: impl FnOnce() -> T) -> (u64, T) {
    let before = env.sim.stat("rest_requests");
    let out = f();
    (env.sim.stat("rest_requests") - before, out)
}

#[test]
fn each_rpc_makes_few_rest_requests() {
    // A flat (XFS) pool: at most 4 for a create and 5 for a delete.
    each_rpc_makes_few_rest_requests_in("xfs", &["--export-always"], 2, (4, 5));
    // Export on publish: publish and the last unpublish add the export PATCH.
    each_rpc_makes_few_rest_requests_in("xfs", &[], 3, (4, 5));
    // On a Btrfs pool a create also makes the volume's subvolume (one PUT)
    // and a delete removes it (look it up, DELETE) instead of the file.
    each_rpc_makes_few_rest_requests_in("btrfs", &[], 3, (5, 6));
}

fn each_rpc_makes_few_rest_requests_in(
    pool_fs: &str,
    mode: &[&str],
    attach_most: u64,
    (create_most, delete_most): (u64, u64),
) {
    // No background health checks during the counts.
    let mut args = vec!["--rds-check-interval", "3600"];
    args.extend_from_slice(mode);
    let env = ControllerEnv::with_sim(
        Sim::with(SimOptions {
            extra_args: vec!["--pool-fs".into(), pool_fs.into()],
            ..Default::default()
        }),
        &args,
    );
    wait_ready(&env, true);
    // The first create in a process also makes the volume folder.
    let warm = env.create(&create_request("vol-warm", GIB, &[])).unwrap();
    env.delete(&warm.volume.volume_id).unwrap();

    let req = create_request("vol-count", GIB, &[]);
    let (create, resp) = requests(&env, || env.create(&req).unwrap());
    let id = resp.volume.volume_id.clone();
    let (again, _) = requests(&env, || env.create(&req).unwrap());
    let (publish, _) = requests(&env, || env.publish(&id, "node-a", rwo()).unwrap());
    let (unpublish, _) = requests(&env, || env.unpublish(&id, "node-a").unwrap());
    let (expand, _) = requests(&env, || env.expand(&id, 2 * GIB, false).unwrap());
    let (delete, _) = requests(&env, || env.delete(&id).unwrap());
    let counts = [
        ("CreateVolume", create, create_most),
        ("CreateVolume again", again, 1),
        ("ControllerPublishVolume", publish, attach_most),
        ("ControllerUnpublishVolume", unpublish, attach_most),
        ("ControllerExpandVolume", expand, 3),
        ("DeleteVolume", delete, delete_most),
    ];
    for (rpc, made, most) in counts {
        assert!(
            made <= most,
            "{rpc} made {made} REST requests, at most {most} allowed: {counts:?}"
        );
        assert!(made >= 1, "{rpc} made no request at all: {counts:?}");
    }
    assert!(env.disk(&id).is_none());
    assert!(!env.files().iter().any(|f| f.contains(&id)));
}

#[test]
fn a_half_created_volume_is_finished_by_the_retry_in_one_request_more() {
    let env = ControllerEnv::start(&["--rds-check-interval", "3600", "--export-always"]);
    wait_ready(&env, true);
    let req = create_request("vol-half", GIB, &[]);
    let id = env.create(&req).unwrap().volume.volume_id.clone();
    // As if the controller died between the PUT and the export PATCH.
    let disk = env.disk(&id).unwrap();
    let (st, _) = env.sim.request(
        "PATCH",
        &format!("/rest/disk/{}", disk[".id"].as_str().unwrap()),
        Some(&json!({"nvme-tcp-export": "false", "nvme-tcp-server-nqn": ""})),
    );
    assert_eq!(st, 200);
    assert_eq!(env.disk(&id).unwrap()["nvme-tcp-export"], "false");
    // The retry looks up, finds our half-made disk and exports it.
    let (made, resp) = requests(&env, || env.create(&req).unwrap());
    assert_eq!(resp.volume.volume_id, id);
    assert_eq!(made, 2, "look up and the export PATCH");
    let disk = env.disk(&id).unwrap();
    assert_eq!(disk["nvme-tcp-export"], "true");
    assert_eq!(
        disk["nvme-tcp-server-nqn"],
        format!("nqn.2000-02.com.mikrotik:{id}")
    );
    assert!(env.sim.exports()["exports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["slot"] == id.as_str()));
}

// ---- The layout on Btrfs pools (issue 13) -----------------------------------

/// The sim's subvolume names.
fn subvolumes(env: &ControllerEnv) -> Vec<String> {
    let (status, v) = env.sim.request("GET", "/rest/disk/btrfs/subvolume", None);
    assert_eq!(status, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn on_a_btrfs_pool_each_volume_has_its_own_subvolume_removed_with_it() {
    let Some(common::btrfs::BtrfsSim { sim, fs }) =
        common::btrfs::BtrfsSim::start("btrfs_layout", SimOptions::default())
    else {
        return;
    };
    let env = ControllerEnv::with_sim(sim, &[]);
    let id = env
        .create(&create_request("vol-layout", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let disk = env.disk(&id).unwrap();
    assert_eq!(disk["file-path"], format!("/storage-pool/csi/{id}/{id}.img"));
    assert_eq!(subvolumes(&env), [format!("csi/{id}")]);
    // A real subvolume on the real Btrfs filesystem.
    use std::os::unix::fs::MetadataExt;
    let dir = env.sim.backing_path(&format!("storage-pool/csi/{id}"));
    assert_eq!(std::fs::metadata(&dir).unwrap().ino(), 256);
    env.delete(&id).unwrap();
    assert!(env.disk(&id).is_none());
    assert!(subvolumes(&env).is_empty());
    assert!(!env.files().iter().any(|f| f.contains(&id)), "{:?}", env.files());
    assert!(!dir.exists());
    drop(env);
    drop(fs);
}

#[test]
fn btrfs_layout_create_and_delete_resume_after_a_crash_at_any_step() {
    let env = ControllerEnv::start(&[]);
    // Crash after the disk went, before its subvolume: the retry removes it.
    let a = env
        .create(&create_request("vol-crash-a", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let disk = env.disk(&a).unwrap();
    let (st, _) = env.sim.request(
        "DELETE",
        &format!("/rest/disk/{}", disk[".id"].as_str().unwrap()),
        None,
    );
    assert!(st == 200 || st == 204, "{st}");
    assert_eq!(subvolumes(&env), [format!("csi/{a}")]);
    env.delete(&a).unwrap();
    assert!(subvolumes(&env).is_empty(), "{:?}", subvolumes(&env));
    assert!(!env.files().iter().any(|f| f.contains(&a)), "{:?}", env.files());

    // Crash after the subvolume, before the disk: the retried create
    // finishes the volume in it; a delete instead would remove it.
    let name_b = "vol-crash-b";
    let expected_b = env
        .create(&create_request(name_b, GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    env.delete(&expected_b).unwrap();
    let (st, body) = env.sim.request(
        "PUT",
        "/rest/disk/btrfs/subvolume",
        Some(&json!({"fs": "storage-pool-fs", "name": format!("csi/{expected_b}")})),
    );
    assert_eq!(st, 200, "{body}");
    let again = env
        .create(&create_request(name_b, GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    assert_eq!(again, expected_b);
    assert_eq!(
        env.disk(&again).unwrap()["file-path"],
        format!("/storage-pool/csi/{again}/{again}.img")
    );
    env.delete(&again).unwrap();
    let (st, _) = env.sim.request(
        "PUT",
        "/rest/disk/btrfs/subvolume",
        Some(&json!({"fs": "storage-pool-fs", "name": format!("csi/{again}")})),
    );
    assert_eq!(st, 200);
    env.delete(&again).unwrap();
    assert!(subvolumes(&env).is_empty(), "{:?}", subvolumes(&env));
    assert!(
        !env.files().iter().any(|f| f.contains(&again)),
        "{:?}",
        env.files()
    );
}

#[test]
fn on_an_xfs_pool_volumes_stay_flat() {
    let env = ControllerEnv::with_sim(
        Sim::with(SimOptions {
            extra_args: vec!["--pool-fs".into(), "xfs".into()],
            ..Default::default()
        }),
        &[],
    );
    let id = env
        .create(&create_request("vol-xfs", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    assert_eq!(
        env.disk(&id).unwrap()["file-path"],
        format!("/storage-pool/csi/{id}.img")
    );
    env.delete(&id).unwrap();
    assert!(!env.files().iter().any(|f| f.contains(&id)), "{:?}", env.files());
}

// ---- Snapshots (issue 13) ----------------------------------------------------

fn snapshot(env: &ControllerEnv, name: &str, source: &str) -> grpcio::Result<csi::Snapshot> {
    let mut req = csi::CreateSnapshotRequest::new();
    req.name = name.into();
    req.source_volume_id = source.into();
    env.controller()
        .create_snapshot(&req, opt(30))
        .map(|r| r.snapshot.unwrap_or_default())
}

fn list_snapshots(
    env: &ControllerEnv,
    id: &str,
    source: &str,
    token: &str,
    max: i32,
) -> grpcio::Result<csi::ListSnapshotsResponse> {
    let mut req = csi::ListSnapshotsRequest::new();
    req.snapshot_id = id.into();
    req.source_volume_id = source.into();
    req.starting_token = token.into();
    req.max_entries = max;
    env.controller().list_snapshots(&req, opt(30))
}

fn delete_snapshot(env: &ControllerEnv, id: &str) -> grpcio::Result<csi::DeleteSnapshotResponse> {
    let mut req = csi::DeleteSnapshotRequest::new();
    req.snapshot_id = id.into();
    env.controller().delete_snapshot(&req, opt(30))
}

fn snapshot_ids(resp: &csi::ListSnapshotsResponse) -> Vec<String> {
    resp.entries
        .iter()
        .map(|e| e.snapshot.snapshot_id.clone())
        .collect()
}

#[test]
fn snapshots_are_idempotent_listed_from_the_rds_alone_and_deletable_in_any_order() {
    let Some(common::btrfs::BtrfsSim { sim, fs }) = common::btrfs::BtrfsSim::start(
        "snapshots_lifecycle",
        SimOptions {
            extra_args: vec!["--max-slot-len".into(), "40".into()],
            ..Default::default()
        },
    ) else {
        return;
    };
    // A volume of the Go driver: the flat layout.
    let legacy = "pvc-0e7c2a9d-41b3-4c55-9f0e-6a1d2b3c4d5e";
    sim.client()
        .create_disk(&rds_csi::rds::NewDisk {
            slot: legacy.into(),
            file_path: format!("storage-pool/csi/{legacy}.img"),
            size_bytes: GIB as u64,
            comment: String::new(),
            nqn: Some(format!("nqn.2000-02.com.mikrotik:{legacy}")),
            port: 4420,
        })
        .unwrap();
    let mut env = ControllerEnv::with_sim(sim, &[]);
    let a = env
        .create(&create_request("vol-snap-a", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let b = env
        .create(&create_request("vol-snap-b", 2 * GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();

    let s1 = snapshot(&env, "snapshot-1", &a).unwrap();
    assert!(s1.snapshot_id.starts_with("snap-"), "{s1:?}");
    assert_eq!(s1.source_volume_id, a);
    assert_eq!(s1.size_bytes, GIB);
    assert!(s1.ready_to_use);
    assert!(s1.creation_time.seconds > 1_600_000_000, "{s1:?}");
    // Idempotent; the same name for another volume is ALREADY_EXISTS.
    assert_eq!(snapshot(&env, "snapshot-1", &a).unwrap(), s1);
    let (c, msg) = code(snapshot(&env, "snapshot-1", &b).unwrap_err());
    assert_eq!(c, RpcStatusCode::ALREADY_EXISTS, "{msg}");
    // A flat volume cannot be snapshotted, and the message says what to do.
    let (c, msg) = code(snapshot(&env, "snapshot-flat", legacy).unwrap_err());
    assert_eq!(c, RpcStatusCode::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("flat layout") && msg.contains("new volume"), "{msg}");
    // Bad input names the field.
    let (c, msg) = code(snapshot(&env, "", &a).unwrap_err());
    assert_eq!(c, RpcStatusCode::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("name"), "{msg}");
    let (c, msg) = code(snapshot(&env, "snapshot-x", "").unwrap_err());
    assert_eq!(c, RpcStatusCode::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("source_volume_id"), "{msg}");
    let mut req = csi::CreateSnapshotRequest::new();
    req.name = "snapshot-p".into();
    req.source_volume_id = a.clone();
    req.parameters.insert("compress\nforged".into(), "x".into());
    let (c, msg) = code(env.controller().create_snapshot(&req, opt(30)).unwrap_err());
    assert_eq!(c, RpcStatusCode::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("parameters[\"compress\\nforged\"]"), "{msg}");

    // The snapshot is real, read-only and stays as it was.
    let s2 = snapshot(&env, "snapshot-2", &b).unwrap();
    let s3 = snapshot(&env, "snapshot-3", &a).unwrap();
    assert_eq!(s2.size_bytes, 2 * GIB);
    let all = list_snapshots(&env, "", "", "", 0).unwrap();
    let mut want = vec![
        s1.snapshot_id.clone(),
        s2.snapshot_id.clone(),
        s3.snapshot_id.clone(),
    ];
    want.sort();
    assert_eq!(snapshot_ids(&all), want);
    assert!(all.next_token.is_empty());
    assert_eq!(
        snapshot_ids(&list_snapshots(&env, &s2.snapshot_id, "", "", 0).unwrap()),
        std::slice::from_ref(&s2.snapshot_id)
    );
    let of_a = list_snapshots(&env, "", &a, "", 0).unwrap();
    assert_eq!(of_a.entries.len(), 2);
    assert!(of_a.entries.iter().all(|e| e.snapshot.source_volume_id == a));
    assert!(list_snapshots(&env, "snap-nope", "", "", 0)
        .unwrap()
        .entries
        .is_empty());
    // Pages with self-checking tokens; a token not given out is ABORTED.
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = list_snapshots(&env, "", "", &token, 1).unwrap();
        assert_eq!(page.entries.len(), 1);
        paged.extend(snapshot_ids(&page));
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token.clone();
    }
    assert_eq!(paged, want);
    for bad in ["x", "s1:snap-zz", "v1:pvc-1"] {
        assert_eq!(
            code_of(list_snapshots(&env, "", "", bad, 0)),
            RpcStatusCode::ABORTED,
            "{bad}"
        );
    }
    assert_eq!(
        code_of(list_snapshots(&env, "", "", "", -1)),
        RpcStatusCode::INVALID_ARGUMENT
    );

    // A restarted controller lists exactly the same.
    env.restart_driver();
    let again = list_snapshots(&env, "", "", "", 0).unwrap();
    assert_eq!(again.entries, all.entries);

    // Delete in any order: the source first, then its snapshots.
    env.delete(&a).unwrap();
    assert!(env.disk(&a).is_none());
    let of_a = list_snapshots(&env, "", &a, "", 0).unwrap();
    assert_eq!(of_a.entries.len(), 2, "snapshots outlive their source");
    delete_snapshot(&env, &s1.snapshot_id).unwrap();
    delete_snapshot(&env, &s1.snapshot_id).unwrap();
    delete_snapshot(&env, "not-a-snapshot-id").unwrap();
    assert_eq!(
        code_of(delete_snapshot(&env, "")),
        RpcStatusCode::INVALID_ARGUMENT
    );
    delete_snapshot(&env, &s2.snapshot_id).unwrap();
    delete_snapshot(&env, &s3.snapshot_id).unwrap();
    env.delete(&b).unwrap();
    assert!(list_snapshots(&env, "", "", "", 0).unwrap().entries.is_empty());
    let (_, subs) = env.sim.request("GET", "/rest/disk/btrfs/subvolume", None);
    assert_eq!(subs.as_array().unwrap().len(), 0, "{subs}");
    assert!(
        !env.files()
            .iter()
            .any(|f| f.contains(".img") && !f.contains(legacy)),
        "{:?}",
        env.files()
    );
    drop(env);
    drop(fs);
}

#[test]
fn a_snapshot_and_a_delete_of_its_source_exclude_each_other() {
    let env = ControllerEnv::start(&[]);
    let a = env
        .create(&create_request("vol-race", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    env.sim.fault(json!({"latency_ms": 300}));
    let client = env.controller();
    let a2 = a.clone();
    let snap = std::thread::spawn(move || {
        let mut req = csi::CreateSnapshotRequest::new();
        req.name = "snapshot-race".into();
        req.source_volume_id = a2;
        client.create_snapshot(&req, opt(60))
    });
    // Wait until the snapshot call holds the volume: a delete is ABORTED.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_aborted = false;
    while Instant::now() < deadline && !snap.is_finished() {
        if let Err(e) = env.delete(&a) {
            assert_eq!(status_of(e).code(), RpcStatusCode::ABORTED);
            saw_aborted = true;
            break;
        }
    }
    env.sim.reset_faults();
    let snapped = snap.join().unwrap();
    assert!(
        saw_aborted || snapped.is_err(),
        "one of the two must have been refused: snapshot {snapped:?}"
    );
}

#[test]
fn an_xfs_pool_offers_no_snapshots() {
    use csi::controller_service_capability::rpc::Type;
    let env = ControllerEnv::with_sim(
        Sim::with(SimOptions {
            extra_args: vec!["--pool-fs".into(), "xfs".into()],
            ..Default::default()
        }),
        &[],
    );
    let caps = env
        .controller()
        .controller_get_capabilities(&csi::ControllerGetCapabilitiesRequest::new(), opt(10))
        .unwrap();
    let types: Vec<Type> = caps
        .capabilities
        .iter()
        .map(|c| c.rpc().type_.enum_value_or_default())
        .collect();
    for t in [
        Type::CREATE_DELETE_SNAPSHOT,
        Type::LIST_SNAPSHOTS,
        Type::CLONE_VOLUME,
        Type::GET_SNAPSHOT,
    ] {
        assert!(!types.contains(&t), "{t:?} advertised on an xfs pool");
    }
    let id = env
        .create(&create_request("vol-xfs-snap", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let (c, msg) = code(snapshot(&env, "snapshot-xfs", &id).unwrap_err());
    assert_eq!(c, RpcStatusCode::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("xfs") && msg.contains("btrfs"), "{msg}");
    assert!(list_snapshots(&env, "", "", "", 0).unwrap().entries.is_empty());
}

// ---- Restore and clone (issue 13) ---------------------------------------------

fn from_snapshot(name: &str, bytes: i64, snapshot_id: &str) -> csi::CreateVolumeRequest {
    let mut req = create_request(name, bytes, &[]);
    let mut src = csi::VolumeContentSource::new();
    let mut snap = csi::volume_content_source::SnapshotSource::new();
    snap.snapshot_id = snapshot_id.into();
    src.set_snapshot(snap);
    req.volume_content_source = Some(src).into();
    req
}

fn from_volume(name: &str, bytes: i64, volume_id: &str) -> csi::CreateVolumeRequest {
    let mut req = create_request(name, bytes, &[]);
    let mut src = csi::VolumeContentSource::new();
    let mut vol = csi::volume_content_source::VolumeSource::new();
    vol.volume_id = volume_id.into();
    src.set_volume(vol);
    req.volume_content_source = Some(src).into();
    req
}

/// The host path of a volume's backing file, as its disk names it.
fn image_of(env: &ControllerEnv, id: &str) -> std::path::PathBuf {
    let disk = env.disk(id).expect("disk");
    env.sim.backing_path(disk["file-path"].as_str().unwrap())
}

fn write_at_start(path: &std::path::Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn read_start(path: &std::path::Path, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path).unwrap().read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn restore_and_clone_copy_the_data_byte_for_byte_and_leak_nothing() {
    let Some(common::btrfs::BtrfsSim { sim, fs }) = common::btrfs::BtrfsSim::start(
        "restore_and_clone",
        SimOptions {
            extra_args: vec!["--max-slot-len".into(), "40".into()],
            ..Default::default()
        },
    ) else {
        return;
    };
    let legacy = "pvc-0e7c2a9d-41b3-4c55-9f0e-6a1d2b3c4d5e";
    sim.client()
        .create_disk(&rds_csi::rds::NewDisk {
            slot: legacy.into(),
            file_path: format!("storage-pool/csi/{legacy}.img"),
            size_bytes: GIB as u64,
            comment: String::new(),
            nqn: Some(format!("nqn.2000-02.com.mikrotik:{legacy}")),
            port: 4420,
        })
        .unwrap();
    let env = ControllerEnv::with_sim(sim, &[]);
    let a = env
        .create(&create_request("vol-src", 2 * GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let old: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 253) as u8).collect();
    write_at_start(&image_of(&env, &a), &old);
    let snap = snapshot(&env, "snapshot-src", &a).unwrap();
    assert_eq!(snap.size_bytes, 2 * GIB);
    let new = vec![0xEEu8; 4 << 20];
    write_at_start(&image_of(&env, &a), &new);

    // Restore: the old data, exported, the source echoed.
    let req = from_snapshot("vol-restored", 2 * GIB, &snap.snapshot_id);
    let r = env.create(&req).unwrap().volume.unwrap();
    assert_eq!(r.capacity_bytes, 2 * GIB);
    assert_eq!(r.content_source.snapshot().snapshot_id, snap.snapshot_id);
    let disk = env.disk(&r.volume_id).unwrap();
    // Like every new volume, on the network only once published.
    assert_eq!(disk["nvme-tcp-export"], "false");
    assert_eq!(
        disk["nvme-tcp-server-nqn"],
        format!("nqn.2000-02.com.mikrotik:{}", r.volume_id)
    );
    assert_eq!(
        disk["file-path"],
        format!("/storage-pool/csi/{}/{a}.img", r.volume_id)
    );
    assert!(
        read_start(&image_of(&env, &r.volume_id), old.len()) == old,
        "restored data differs"
    );
    // Idempotent; the same name from another source is ALREADY_EXISTS.
    assert_eq!(env.create(&req).unwrap().volume.volume_id, r.volume_id);
    let (c, msg) = code(env.create(&from_volume("vol-restored", 2 * GIB, &a)).unwrap_err());
    assert_eq!(c, RpcStatusCode::ALREADY_EXISTS, "{msg}");
    // Larger: the image is grown; smaller: OUT_OF_RANGE, nothing left.
    let big = env
        .create(&from_snapshot("vol-bigger", 3 * GIB, &snap.snapshot_id))
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(big.capacity_bytes, 3 * GIB);
    let big_image = image_of(&env, &big.volume_id);
    assert_eq!(std::fs::metadata(&big_image).unwrap().len(), 3 * GIB as u64);
    assert!(read_start(&big_image, old.len()) == old);
    let subs_before = subvolumes(&env);
    let (c, msg) = code(
        env.create(&from_snapshot("vol-smaller", GIB, &snap.snapshot_id))
            .unwrap_err(),
    );
    assert_eq!(c, RpcStatusCode::OUT_OF_RANGE, "{msg}");
    assert_eq!(
        subvolumes(&env),
        subs_before,
        "no subvolume left by the refused restore"
    );
    // Missing sources, flat sources, empty ids.
    for (req, want) in [
        (
            from_snapshot("vol-m1", GIB, "snap-0000000000000000000000000000"),
            RpcStatusCode::NOT_FOUND,
        ),
        (from_snapshot("vol-m2", GIB, "no such"), RpcStatusCode::NOT_FOUND),
        (
            from_volume("vol-m3", GIB, "pvc-00000000000000000000000000aa"),
            RpcStatusCode::NOT_FOUND,
        ),
        (
            from_volume("vol-m4", GIB, legacy),
            RpcStatusCode::FAILED_PRECONDITION,
        ),
        (from_snapshot("vol-m5", GIB, ""), RpcStatusCode::INVALID_ARGUMENT),
        (from_volume("vol-m6", GIB, ""), RpcStatusCode::INVALID_ARGUMENT),
    ] {
        let (c, msg) = code(env.create(&req).unwrap_err());
        assert_eq!(c, want, "{msg}");
        if want == RpcStatusCode::INVALID_ARGUMENT {
            assert!(msg.contains("volume_content_source."), "{msg}");
        }
    }
    assert_eq!(subvolumes(&env), subs_before, "no subvolume left by the refusals");

    // Clone of the live volume: its current data.
    let clone = env
        .create(&from_volume("vol-clone", 2 * GIB, &a))
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(clone.content_source.volume().volume_id, a);
    assert!(read_start(&image_of(&env, &clone.volume_id), new.len()) == new);
    // Independent: writing the clone leaves the source alone.
    write_at_start(&image_of(&env, &clone.volume_id), &old);
    assert!(read_start(&image_of(&env, &a), new.len()) == new);

    // A crash after the writable snapshot, before the disk: the retry
    // finishes the volume in the subvolume already made.
    let crash_id = rds_csi::volume::VolumeId::for_name("vol-crashed").to_string();
    let snap_sub = subvolumes(&env)
        .into_iter()
        .find(|s| s.contains(&snap.snapshot_id))
        .unwrap();
    let (st, body) = env.sim.request(
        "PUT",
        "/rest/disk/btrfs/subvolume",
        Some(&json!({"fs": "storage-pool-fs", "name": format!("csi/{crash_id}"), "parent": snap_sub, "read-only": "false"})),
    );
    assert_eq!(st, 200, "{body}");
    let crashed = env
        .create(&from_snapshot("vol-crashed", 2 * GIB, &snap.snapshot_id))
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(crashed.volume_id, crash_id);
    assert!(read_start(&image_of(&env, &crashed.volume_id), old.len()) == old);

    // The snapshot restored volumes came from can go; they stay.
    delete_snapshot(&env, &snap.snapshot_id).unwrap();
    assert!(read_start(&image_of(&env, &r.volume_id), old.len()) == old);
    for id in [
        &a,
        &r.volume_id,
        &big.volume_id,
        &clone.volume_id,
        &crashed.volume_id,
    ] {
        env.delete(id).unwrap();
    }
    assert!(subvolumes(&env).is_empty(), "{:?}", subvolumes(&env));
    assert!(
        !env.files()
            .iter()
            .any(|f| f.ends_with(".img") && !f.contains(legacy)),
        "{:?}",
        env.files()
    );
    drop(env);
    drop(fs);
}

#[test]
fn get_snapshot_finds_one_snapshot_by_id() {
    let env = ControllerEnv::start(&[]);
    let a = env
        .create(&create_request("vol-get-snap", GIB, &[]))
        .unwrap()
        .volume
        .volume_id
        .clone();
    let s = snapshot(&env, "snapshot-get", &a).unwrap();
    let get = |id: &str| {
        let mut req = csi::GetSnapshotRequest::new();
        req.snapshot_id = id.into();
        env.controller().get_snapshot(&req, opt(30))
    };
    assert_eq!(get(&s.snapshot_id).unwrap().snapshot.unwrap(), s);
    assert_eq!(
        code_of(get("snap-0000000000000000000000000000")),
        RpcStatusCode::NOT_FOUND
    );
    assert_eq!(code_of(get("no such\nsnapshot")), RpcStatusCode::NOT_FOUND);
    let (c, msg) = code(get("").unwrap_err());
    assert_eq!(c, RpcStatusCode::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("snapshot_id"), "{msg}");
    delete_snapshot(&env, &s.snapshot_id).unwrap();
    assert_eq!(code_of(get(&s.snapshot_id)), RpcStatusCode::NOT_FOUND);
    env.delete(&a).unwrap();
}

/// Whether the sim's `exports.json` (what the fabric serves) has `nqn`.
fn in_exports(env: &ControllerEnv, nqn: &str) -> bool {
    env.sim.exports_file()["exports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["nqn"] == nqn)
}

/// Whether the disk's record names `node`.
fn recorded(env: &ControllerEnv, id: &str, node: &str) -> bool {
    env.disk(id).unwrap()["comment"]
        .as_str()
        .unwrap()
        .contains(&format!("nodes={node}"))
}

/// `nvme connect` of `nqn` through fake-nvme as a node would; the exit code
/// and stderr. A successful connect is disconnected again.
fn try_connect(fabric: &common::fabric::Fabric, nqn: &str) -> (i32, String) {
    let port = common::fabric::PORT.to_string();
    let (code, _, err) = fabric.run(&["connect", "-t", "tcp", "-a", "127.0.0.1", "-s", &port, "-n", nqn]);
    if code == 0 {
        let (c, _, e) = fabric.run(&["disconnect", "-n", nqn]);
        assert_eq!(c, 0, "disconnect {nqn}: {e}");
    }
    (code, err)
}

#[test]
fn a_volume_is_on_the_network_only_between_publish_and_last_unpublish() {
    let env = ControllerEnv::start(&[]);
    let fabric = common::fabric::Fabric::new(&env.sim, false);
    // Another volume published keeps the port listening, so the answer for
    // an NQN not exported there is EIO, not `Connection refused`.
    let keeper = env
        .create(&create_request("vol-keeper", GIB, &[]))
        .unwrap()
        .volume
        .unwrap();
    env.publish(&keeper.volume_id, "node-k", rwo()).unwrap();
    let vol = env
        .create(&create_request("vol-fenced", GIB, &[]))
        .unwrap()
        .volume
        .unwrap();
    let (id, nqn) = (vol.volume_id.clone(), vol.volume_context["nqn"].clone());
    let refused = |when: &str| {
        let (code, err) = try_connect(&fabric, &nqn);
        assert_ne!(code, 0, "{when}: a connect to {nqn} worked");
        assert!(err.contains("Input/output error"), "{when}: {err}");
    };
    assert!(!in_exports(&env, &nqn));
    refused("created, never published");
    env.publish(&id, "node-a", rwo()).unwrap();
    assert!(in_exports(&env, &nqn));
    assert_eq!(try_connect(&fabric, &nqn).0, 0, "published to node-a");
    env.unpublish(&id, "node-a").unwrap();
    assert!(!in_exports(&env, &nqn));
    refused("unpublished from its last node");
    // Publish again, then a force-detach from every node (no node id).
    env.publish(&id, "node-b", rwo()).unwrap();
    assert_eq!(try_connect(&fabric, &nqn).0, 0, "published to node-b");
    let mut req = csi::ControllerUnpublishVolumeRequest::new();
    req.volume_id = id.clone();
    env.controller()
        .controller_unpublish_volume(&req, opt(30))
        .unwrap();
    refused("unpublished from every node");
    env.delete(&id).unwrap();
}

#[test]
fn export_on_publish_survives_a_controller_killed_at_every_step() {
    let mut env = ControllerEnv::start(&[]);
    let vol = env
        .create(&create_request("vol-kill9", GIB, &[]))
        .unwrap()
        .volume
        .unwrap();
    let (id, nqn) = (vol.volume_id.clone(), vol.volume_context["nqn"].clone());
    let disk_id = env.disk(&id).unwrap()[".id"].as_str().unwrap().to_string();
    let set_export = |env: &ControllerEnv, on: bool| {
        let (st, _) = env.sim.request(
            "PATCH",
            &format!("/rest/disk/{disk_id}"),
            Some(&json!({"nvme-tcp-export": on.to_string()})),
        );
        assert_eq!(st, 200);
    };

    // Killed between recording the node and exporting: the record names
    // node-a, the export is off (what a SIGKILL there leaves; made here by
    // publishing and turning the export off by hand).
    env.publish(&id, "node-a", rwo()).unwrap();
    set_export(&env, false);
    env.restart_driver();
    assert!(recorded(&env, &id, "node-a") && !in_exports(&env, &nqn));
    // The CO's retry finishes it.
    env.publish(&id, "node-a", rwo()).unwrap();
    assert!(in_exports(&env, &nqn));

    // Killed in the unpublish after the export went off, before the record
    // let go of node-a: the same state; the retry finishes it.
    set_export(&env, false);
    env.restart_driver();
    env.unpublish(&id, "node-a").unwrap();
    assert!(!recorded(&env, &id, "node-a") && !in_exports(&env, &nqn));

    // A real SIGKILL somewhere inside a slow publish, then inside a slow
    // unpublish: whatever step it hit, an export is never left without a
    // node recorded, and the retry ends in the right state.
    for unpublishing in [false, true] {
        env.sim.fault(json!({"latency_ms": 300}));
        let client = env.controller();
        let id2 = id.clone();
        let call = std::thread::spawn(move || {
            if unpublishing {
                let mut req = csi::ControllerUnpublishVolumeRequest::new();
                req.volume_id = id2;
                req.node_id = "node-a".into();
                client.controller_unpublish_volume(&req, opt(30)).map(|_| ())
            } else {
                let mut req = csi::ControllerPublishVolumeRequest::new();
                req.volume_id = id2;
                req.node_id = "node-a".into();
                req.volume_capability = Some(rwo()).into();
                client.controller_publish_volume(&req, opt(30)).map(|_| ())
            }
        });
        // Kill once the first changing request (the record, or the export
        // going off) has reached the RDS.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(if unpublishing {
            !in_exports(&env, &nqn) || !recorded(&env, &id, "node-a")
        } else {
            recorded(&env, &id, "node-a")
        }) {
            assert!(Instant::now() < deadline, "the call made no change");
            std::thread::sleep(Duration::from_millis(20));
        }
        env.restart_driver();
        let _ = call.join();
        env.sim.reset_faults();
        if in_exports(&env, &nqn) {
            assert!(recorded(&env, &id, "node-a"), "exported with no node recorded");
        }
        if unpublishing {
            env.unpublish(&id, "node-a").unwrap();
            assert!(!recorded(&env, &id, "node-a") && !in_exports(&env, &nqn));
        } else {
            env.publish(&id, "node-a", rwo()).unwrap();
            assert!(recorded(&env, &id, "node-a") && in_exports(&env, &nqn));
        }
    }
    env.delete(&id).unwrap();
}

#[test]
fn a_go_driver_volume_leaves_the_network_at_its_next_unpublish() {
    // Made by a controller with --export-always (as the Go driver did).
    let mut env = ControllerEnv::start(&["--export-always"]);
    let vol = env
        .create(&create_request("vol-legacy", GIB, &[]))
        .unwrap()
        .volume
        .unwrap();
    let (id, nqn) = (vol.volume_id.clone(), vol.volume_context["nqn"].clone());
    assert!(in_exports(&env, &nqn));
    env.publish(&id, "node-a", rwo()).unwrap();
    env.unpublish(&id, "node-a").unwrap();
    assert!(in_exports(&env, &nqn), "--export-always keeps it exported");
    // The default controller takes over: exported with a node until the
    // next unpublish, then off.
    env.extra.clear();
    env.restart_driver();
    env.publish(&id, "node-a", rwo()).unwrap();
    assert!(in_exports(&env, &nqn));
    env.unpublish(&id, "node-a").unwrap();
    assert!(!in_exports(&env, &nqn));
}

/// As `try_connect`, with `-q HOSTNQN -I HOSTID` when given.
fn try_connect_as(fabric: &common::fabric::Fabric, nqn: &str, host: Option<(&str, &str)>) -> (i32, String) {
    let port = common::fabric::PORT.to_string();
    let mut args = vec!["connect", "-t", "tcp", "-a", "127.0.0.1", "-s", &port, "-n", nqn];
    if let Some((q, i)) = host {
        args.extend_from_slice(&["-q", q, "-I", i]);
    }
    let (code, _, err) = fabric.run(&args);
    if code == 0 {
        let (c, _, e) = fabric.run(&["disconnect", "-n", nqn]);
        assert_eq!(c, 0, "disconnect {nqn}: {e}");
    }
    (code, err)
}

#[test]
fn host_acls_admit_only_the_published_nodes_hosts() {
    let env = ControllerEnv::start(&["--nvme-host-acl", "--allow-multi-node-block"]);
    let fabric = common::fabric::Fabric::new(&env.sim, false);
    let shared = block_cap(Mode::MULTI_NODE_MULTI_WRITER);
    let mut req = create_request("vol-acl", GIB, &[]);
    req.volume_capabilities = vec![shared.clone()];
    let vol = env.create(&req).unwrap().volume.unwrap();
    let (id, nqn) = (vol.volume_id.clone(), vol.volume_context["nqn"].clone());
    let ctx_a = env
        .publish(&id, "node-a", shared.clone())
        .unwrap()
        .publish_context;
    let ctx_b = env
        .publish(&id, "node-b", shared.clone())
        .unwrap()
        .publish_context;
    let a = (ctx_a["hostNqn"].as_str(), ctx_a["hostId"].as_str());
    let b = (ctx_b["hostNqn"].as_str(), ctx_b["hostId"].as_str());
    assert!(a.0.starts_with("nqn.2014-08.org.nvmexpress:uuid:"), "{ctx_a:?}");
    assert_ne!(a.0, b.0);
    // The disk's allow list holds both, read back from the sim.
    let allow = env.disk(&id).unwrap()["nvme-tcp-server-allow-host-name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(allow.contains(a.0) && allow.contains(b.0), "{allow}");
    let eio = |who: &str, r: (i32, String)| {
        assert_ne!(r.0, 0, "{who} connected to {nqn}");
        assert!(r.1.contains("Input/output error"), "{who}: {}", r.1);
    };
    assert_eq!(try_connect_as(&fabric, &nqn, Some(a)).0, 0, "node-a");
    assert_eq!(try_connect_as(&fabric, &nqn, Some(b)).0, 0, "node-b");
    eio(
        "a host not published",
        try_connect_as(
            &fabric,
            &nqn,
            Some((
                "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-5000-8000-000000000000",
                "00000000-0000-5000-8000-000000000000",
            )),
        ),
    );
    eio("no host NQN", try_connect_as(&fabric, &nqn, None));
    // Unpublishing node-a cuts off node-a only.
    env.unpublish(&id, "node-a").unwrap();
    eio(
        "node-a after its unpublish",
        try_connect_as(&fabric, &nqn, Some(a)),
    );
    assert_eq!(try_connect_as(&fabric, &nqn, Some(b)).0, 0, "node-b still");
    // The last one: off the network, the allow list empty.
    env.unpublish(&id, "node-b").unwrap();
    assert!(!in_exports(&env, &nqn));
    let disk = env.disk(&id).unwrap();
    assert_eq!(disk["nvme-tcp-export"], "false");
    assert_eq!(disk["nvme-tcp-server-allow-host-name"], "");
    // A node id no host NQN can be formed from: INVALID_ARGUMENT naming the rule.
    let err = status_of(env.publish(&id, "node a", shared).unwrap_err());
    assert_eq!(err.code(), RpcStatusCode::INVALID_ARGUMENT);
    assert!(err.message().contains("may only contain"), "{}", err.message());
    env.delete(&id).unwrap();
}

/// The nodes a disk's record names (its comment's `nodes=a,b`).
fn recorded_nodes(env: &ControllerEnv, id: &str) -> Vec<String> {
    let disk = env.disk(id).unwrap();
    let comment = disk["comment"].as_str().unwrap_or_default();
    comment
        .split(' ')
        .find_map(|w| w.strip_prefix("nodes="))
        .map(|v| v.split(',').filter(|n| !n.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

#[test]
fn host_acls_hold_with_a_controller_stopped_after_every_change() {
    // Each change a publish or unpublish makes (the record, the allow list,
    // the export off and on) in turn is the last one the RDS gets: the
    // following PATCHes fail definitely, as for a controller killed there.
    // Whatever state that leaves, an exported disk allows some host and
    // only hosts of recorded nodes, and the CO's retry ends in the right
    // state.
    let env = ControllerEnv::start(&["--nvme-host-acl", "--allow-multi-node-block"]);
    let shared = block_cap(Mode::MULTI_NODE_MULTI_WRITER);
    let mut req = create_request("vol-acl-steps", GIB, &[]);
    req.volume_capabilities = vec![shared.clone()];
    let vol = env.create(&req).unwrap().volume.unwrap();
    let id = vol.volume_id.clone();
    let host = |node: &str| rds_csi::fence::HostIdentity::for_node(node).unwrap().nqn;
    let check = |when: &str| {
        let disk = env.disk(&id).unwrap();
        let allowed: Vec<String> = disk["nvme-tcp-server-allow-host-name"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect();
        let recorded: Vec<String> = recorded_nodes(&env, &id).iter().map(|n| host(n)).collect();
        if disk["nvme-tcp-export"] == "true" {
            assert!(!allowed.is_empty(), "{when}: exported with an empty allow list");
        }
        for h in &allowed {
            assert!(
                recorded.contains(h),
                "{when}: {h} allowed, no such node recorded ({recorded:?})"
            );
        }
    };
    let publish = |node: &str| env.publish(&id, node, shared.clone()).map(|_| ());
    let unpublish = |node: &str| env.unpublish(&id, node).map(|_| ());
    // (what, the call, the call that undoes it, the nodes after it)
    type Call<'a> = &'a dyn Fn() -> Result<(), grpcio::Error>;
    let steps: [(&str, Call, Call, &[&str]); 4] = [
        (
            "publish node-a",
            &|| publish("node-a"),
            &|| unpublish("node-a"),
            &["node-a"],
        ),
        (
            "publish node-b",
            &|| publish("node-b"),
            &|| unpublish("node-b"),
            &["node-a", "node-b"],
        ),
        (
            "unpublish node-a (node-b stays)",
            &|| unpublish("node-a"),
            &|| publish("node-a"),
            &["node-b"],
        ),
        (
            "unpublish node-b (the last)",
            &|| unpublish("node-b"),
            &|| publish("node-b"),
            &[],
        ),
    ];
    let mut changes = Vec::new();
    for (what, call, undo, after) in steps {
        let mut stopped_at = 0;
        loop {
            env.sim.fault(json!({
                "pass_next": stopped_at, "fail_next": 1000,
                "fail_method": "PATCH", "fail_kind": "not-allowed",
            }));
            let finished = call().is_ok();
            env.sim.reset_faults();
            let when = format!("{what}, stopped after {stopped_at} change(s)");
            check(&when);
            if finished {
                break;
            }
            call().unwrap_or_else(|e| panic!("{when}: the retry failed: {e}"));
            check(&format!("{when}, retried"));
            let mut nodes = recorded_nodes(&env, &id);
            nodes.sort();
            assert_eq!(nodes, after.to_vec(), "{when}, retried");
            let disk = env.disk(&id).unwrap();
            assert_eq!(
                disk["nvme-tcp-export"] == "true",
                !after.is_empty(),
                "{when}, retried"
            );
            // Back to before the call for the next stopping point.
            undo().unwrap_or_else(|e| panic!("{when}: undo: {e}"));
            stopped_at += 1;
            assert!(stopped_at < 10, "{what} never finished");
        }
        changes.push(stopped_at);
    }
    // The changes each call makes: publish = record, allow list, export
    // (the second node: no export, it is on); the unpublish leaving a node
    // = allow list, export off, export on, record; the last = export off,
    // allow list, record.
    assert_eq!(changes, [3, 2, 4, 3]);
    env.delete(&id).unwrap();
}
