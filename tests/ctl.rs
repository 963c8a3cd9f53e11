//! `rds-csi ctl` against the real driver: human and JSON output, the gRPC
//! code and message on failure, exit codes.

mod common;

use common::csi::ControllerEnv;
use common::driver::run_cli;
use serde_json::Value;

/// Runs `rds-csi ctl --endpoint <env's socket> <args>`.
fn ctl(env: &ControllerEnv, args: &[&str]) -> (i32, String, String) {
    env.driver.ctl(args)
}

fn ok_json(env: &ControllerEnv, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = ctl(env, &all);
    assert_eq!(code, 0, "ctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl {args:?} printed no JSON ({e}): {out}"))
}

#[test]
fn a_volume_through_ctl_in_json_and_text() {
    let env = ControllerEnv::start(&[]);
    let info = ok_json(&env, &["info"]);
    assert_eq!(info["name"], "rds.csi.srvlab.io");
    assert!(info["controller_capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "CREATE_DELETE_VOLUME"));
    assert!(info["node_capabilities"].is_null(), "{info}");
    assert_eq!(ok_json(&env, &["probe"])["ready"], true);

    let created = ok_json(
        &env,
        &[
            "create",
            "vol-ctl",
            "--size",
            "1Gi",
            "--param",
            "reconnectDelay=7",
            "--fs",
            "xfs",
        ],
    );
    let id = created["volume_id"].as_str().unwrap().to_string();
    assert_eq!(created["capacity_bytes"], 1 << 30);
    assert_eq!(created["volume_context"]["reconnectDelay"], "7");
    assert_eq!(created["volume_context"]["fsType"], "xfs");
    assert!(env.disk(&id).is_some());

    let (code, text, _) = ctl(&env, &["list"]);
    assert_eq!(code, 0);
    assert!(text.contains(&id) && text.contains("1 volume(s)"), "{text}");
    let cap = ok_json(&env, &["capacity"]);
    assert_eq!(cap["available_capacity"], (100u64 << 30) - (1 << 30));

    let published = ok_json(&env, &["publish", &id, "--node", "node-1"]);
    assert_eq!(published["publish_context"]["nvmePort"], "4420");
    let (code, text, _) = ctl(&env, &["list"]);
    assert_eq!(code, 0);
    assert!(text.contains("node-1"), "{text}");
    let grown = ok_json(&env, &["expand", &id, "--size", "2Gi"]);
    assert_eq!(grown["capacity_bytes"], 2u64 << 30);
    assert_eq!(grown["node_expansion_required"], true);
    ok_json(&env, &["unpublish", &id, "--node", "node-1"]);
    let (code, text, _) = ctl(&env, &["delete", &id]);
    assert_eq!(code, 0);
    assert_eq!(text.trim(), format!("deleted volume {id}"));
    assert!(env.disk(&id).is_none());
}

#[test]
fn failures_show_the_code_and_message_and_exit_1() {
    let env = ControllerEnv::start(&[]);
    let (code, out, err) = ctl(
        &env,
        &["create", "vol-bad", "--size", "1Gi", "--param", "nvmePort=0"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("CreateVolume failed: INVALID_ARGUMENT") && err.contains("nvmePort"),
        "{err}"
    );
    let (code, _, err) = ctl(&env, &["publish", "pvc-missing", "--node", "n"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
    // The node service is not served by this process.
    let (code, _, err) = ctl(&env, &["unstage", "pvc-x", "--staging-path", "/tmp/x"]);
    assert_eq!(code, 1);
    assert!(err.contains("UNIMPLEMENTED"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let env = ControllerEnv::start(&[]);
    for args in [
        &["create", "x"][..],
        &["frobnicate"][..],
        &["delete", "x", "--bogus"][..],
        &["--timeout", "0", "info"][..],
    ] {
        let (code, _, err) = ctl(&env, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("ctl --help"), "{err}");
    }
    let (code, out, _) = ctl(&env, &["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("publish-node") && out.contains("--context-file"),
        "{out}"
    );
}

#[test]
fn an_unreachable_socket_is_a_clear_failure() {
    let dir = common::TempDir::new("ctl-nosock");
    let endpoint = format!("unix://{}", dir.join("none.sock").display());
    let (code, _, err) = run_cli(&["ctl", "--timeout", "2", "--endpoint", &endpoint, "probe"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Probe failed") && (err.contains("UNAVAILABLE") || err.contains("DEADLINE_EXCEEDED")),
        "{err}"
    );
}

/// `ctl snapshot create|list|delete`, `create --from-snapshot` and
/// `create --from-volume` against the driver and rds-sim's Btrfs pool.
#[test]
fn snapshots_restores_and_clones_through_ctl() {
    let env = ControllerEnv::start(&[]);
    let src = ok_json(&env, &["create", "vol-ctl-src", "--size", "1Gi"]);
    let src_id = src["volume_id"].as_str().unwrap().to_string();
    let snap = ok_json(&env, &["snapshot", "create", "snap-ctl", "--volume", &src_id]);
    let snap_id = snap["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(snap["source_volume_id"], src_id.as_str());
    assert_eq!(snap["size_bytes"], 1 << 30);
    assert_eq!(snap["ready_to_use"], true);
    let listed = ok_json(&env, &["snapshot", "list", "--volume", &src_id]);
    assert_eq!(listed["snapshots"][0]["snapshot_id"], snap_id.as_str());
    let (code, text, _) = ctl(&env, &["snapshot", "list"]);
    assert_eq!(code, 0);
    assert!(
        text.contains(&snap_id) && text.contains("1 snapshot(s)"),
        "{text}"
    );

    let restored = ok_json(
        &env,
        &[
            "create",
            "vol-ctl-restored",
            "--size",
            "1Gi",
            "--from-snapshot",
            &snap_id,
        ],
    );
    let cloned = ok_json(
        &env,
        &[
            "create",
            "vol-ctl-clone",
            "--size",
            "1Gi",
            "--from-volume",
            &src_id,
        ],
    );
    for v in [&restored, &cloned] {
        assert!(env.disk(v["volume_id"].as_str().unwrap()).is_some(), "{v}");
    }
    // Usage errors exit 2; a refused call prints its code and exits 1.
    let (code, _, err) = ctl(
        &env,
        &[
            "create",
            "x",
            "--size",
            "1Gi",
            "--from-snapshot",
            "a",
            "--from-volume",
            "b",
        ],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ctl(&env, &["snapshot", "frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ctl(
        &env,
        &[
            "create",
            "vol-ctl-none",
            "--size",
            "1Gi",
            "--from-snapshot",
            "snap-0000000000000000000000000000",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");

    let deleted = ok_json(&env, &["snapshot", "delete", &snap_id]);
    assert_eq!(deleted["deleted"], true);
    assert!(ok_json(&env, &["snapshot", "list"])["snapshots"]
        .as_array()
        .unwrap()
        .is_empty());
    for v in [&restored, &cloned, &src] {
        ok_json(&env, &["delete", v["volume_id"].as_str().unwrap()]);
    }
}
