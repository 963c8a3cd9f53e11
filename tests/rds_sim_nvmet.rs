//! `rds-sim --nvmet` through its REST surface, with a plain directory standing in for the kernel target's configfs tree: exports appear and go at the moment the REST call changes them, a grown file is revalidated, an outage unlinks, a killed emulator restores (and adopts) its exports, and nothing it did not make is touched. The VM lane (scripts/vm-test.sh) runs the same against the real kernel.

// Test helpers may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Sim, SimOptions, TempDir};
use serde_json::{json, Value};

const NQN: &str = "nqn.2000-02.com.mikrotik:pvc-nvmet";
const FOREIGN: &str = "nqn.2024-01.io.example:foreign";

fn tree() -> TempDir {
    let t = TempDir::new("nvmet-tree");
    for d in ["subsystems", "ports"] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    t
}

fn start(root: &Path) -> Sim {
    Sim::with(SimOptions {
        extra_args: vec![
            "--nvmet".into(),
            "--nvmet-root".into(),
            root.display().to_string(),
        ],
        ..Default::default()
    })
}

fn attr(path: PathBuf) -> String {
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

fn linked(root: &Path) -> bool {
    fs::symlink_metadata(root.join("ports/1/subsystems").join(NQN)).is_ok()
}

/// The emulator answers before the kernel work is done only for signals;
/// REST calls change configfs before they answer. Still, poll briefly for
/// the signal-driven cases.
fn wait(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited 20 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn add_exported(sim: &Sim) -> String {
    let (status, body) = sim.request(
        "PUT",
        "/rest/disk",
        Some(&json!({
            "type": "file", "slot": "pvc-nvmet", "file-path": "storage-pool/csi/pvc-nvmet.img",
            "file-size": "1G", "nvme-tcp-export": "yes", "nvme-tcp-server-port": "4420",
            "nvme-tcp-server-nqn": NQN,
        })),
    );
    assert_eq!(status, 200, "{body}");
    body[".id"].as_str().unwrap().to_string()
}

fn patch(sim: &Sim, id: &str, body: Value) {
    let (status, answer) = sim.request("PATCH", &format!("/rest/disk/{id}"), Some(&body));
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn exports_follow_the_rest_calls_and_survive_a_kill() {
    let t = tree();
    let root = t.join("");
    // Someone else's subsystem: never touched.
    fs::create_dir_all(root.join("subsystems").join(FOREIGN)).unwrap();
    fs::write(
        root.join("subsystems").join(FOREIGN).join("attr_allow_any_host"),
        "0\n",
    )
    .unwrap();
    let sim = start(&root);
    let id = add_exported(&sim);

    // Export on at create: subsystem, namespace 1 on the backing file, port, link.
    let sub = root.join("subsystems").join(NQN);
    let backing = sim.backing_path("storage-pool/csi/pvc-nvmet.img");
    assert_eq!(
        attr(sub.join("namespaces/1/device_path")),
        backing.display().to_string()
    );
    assert_eq!(attr(sub.join("namespaces/1/enable")), "1");
    assert_eq!(attr(sub.join("attr_allow_any_host")), "1");
    assert_eq!(attr(root.join("ports/1/addr_trsvcid")), "4420");
    assert_eq!(attr(root.join("ports/1/addr_traddr")), "127.0.0.1");
    assert!(linked(&root), "{}", sim.log());

    // Grown: the target is told.
    patch(&sim, &id, json!({ "file-size": "2G" }));
    assert_eq!(attr(sub.join("namespaces/1/revalidate_size")), "1");

    // An outage unlinks; its end links again.
    let (status, body) = sim.request("POST", "/sim/nvmet", Some(&json!({ "outage": true })));
    assert_eq!((status, &body["outage"]), (200, &json!(true)), "{body}");
    assert!(!linked(&root));
    assert!(sub.exists(), "an outage keeps the subsystem");
    let (status, body) = sim.request("POST", "/sim/nvmet", Some(&json!({ "outage": "yes" })));
    assert_eq!(status, 400, "{body}");
    sim.request("POST", "/sim/nvmet", Some(&json!({ "outage": false })));
    assert!(linked(&root));

    // SIGKILL with the target state intact: adopted, no second port.
    let sim = sim.restart();
    wait("the restart to log its adoption", || {
        sim.log().contains("adopted 1 subsystem(s) and 1 port(s)")
    });
    assert!(linked(&root));
    assert!(!root.join("ports/2").exists());

    // A reboot loses the kernel's state: the restarted emulator restores it.
    fs::remove_file(root.join("ports/1/subsystems").join(NQN)).unwrap();
    for d in [sub.join("namespaces/1"), sub.join("namespaces"), sub.clone()] {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_file() {
                fs::remove_file(e.path()).unwrap();
            }
        }
    }
    fs::remove_dir_all(&sub).unwrap();
    fs::remove_dir_all(root.join("ports/1")).unwrap();
    let sim = sim.restart();
    wait("the export to be restored", || linked(&root));
    assert_eq!(
        attr(sub.join("namespaces/1/device_path")),
        backing.display().to_string()
    );

    // Export off: unlinked and removed, port too; delete of the disk after.
    patch(&sim, &id, json!({ "nvme-tcp-export": "no" }));
    assert!(!sub.exists());
    assert!(!root.join("ports/1").exists());
    patch(&sim, &id, json!({ "nvme-tcp-export": "yes" }));
    assert!(linked(&root));
    let (status, _) = sim.request("DELETE", &format!("/rest/disk/{id}"), None);
    assert_eq!(status, 204);
    assert!(!sub.exists());
    assert!(!root.join("ports/1").exists());
    assert_eq!(
        attr(root.join("subsystems").join(FOREIGN).join("attr_allow_any_host")),
        "0"
    );
}

#[test]
fn without_the_flag_configfs_is_never_consulted() {
    let sim = Sim::start();
    let (status, body) = sim.request("GET", "/sim/nvmet", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("without --nvmet"),
        "{body}"
    );
}

#[test]
fn a_missing_target_stops_the_start_with_the_reason() {
    let t = TempDir::new("nvmet-none");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rds-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--pool-size",
            "1G",
            "--username",
            "a",
            "--plain-http",
        ])
        .arg("--data-dir")
        .arg(t.join("data"))
        .arg("--password-file")
        .arg(t.join("pw"))
        .args(["--nvmet", "--nvmet-root"])
        .arg(t.join("no-such-dir"))
        .output()
        .unwrap();
    // The password file is checked first: write it and try again.
    assert!(!out.status.success());
    fs::write(t.join("pw"), "x\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rds-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--pool-size",
            "1G",
            "--username",
            "a",
            "--plain-http",
        ])
        .arg("--data-dir")
        .arg(t.join("data"))
        .arg("--password-file")
        .arg(t.join("pw"))
        .args(["--nvmet", "--nvmet-root"])
        .arg(t.join("no-such-dir"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("load nvmet"), "{err}");
}
