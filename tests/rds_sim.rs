//! `rds-sim` itself, spoken to with raw HTTP: RouterOS's conventions and answers, real sparse files, persistence across a kill, exports.json, faults, and a clean SIGTERM.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{Sim, SimOptions};
use serde_json::{json, Value};

const GIB: u64 = 1 << 30;

fn add(sim: &Sim, slot: &str, size: &str) -> Value {
    let (status, body) = sim.request(
        "PUT",
        "/rest/disk",
        Some(&json!({
            "type": "file", "slot": slot, "file-path": format!("storage-pool/csi/{slot}.img"),
            "file-size": size, "mount-filesystem": "false", "comment": format!("c-{slot}")
        })),
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn assert_error(answer: (u16, Value), status: u16, detail: Option<&str>) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], status, "{body}");
    assert!(body["message"].is_string(), "{body}");
    match detail {
        Some(d) => assert_eq!(body["detail"], d, "{body}"),
        None => assert!(body.get("detail").is_none(), "{body}"),
    }
}

#[test]
fn records_follow_routeros_conventions() {
    let sim = Sim::start();
    let disk = add(&sim, "pvc-conv", "1G");
    // Every value is a string; ids look like *2; booleans true/false.
    for (k, v) in disk.as_object().unwrap() {
        assert!(v.is_string(), "{k} is {v}");
    }
    let id = disk[".id"].as_str().unwrap();
    assert!(
        id.starts_with('*') && u32::from_str_radix(&id[1..], 16).is_ok(),
        "{id}"
    );
    assert_eq!(disk["file-path"], "/storage-pool/csi/pvc-conv.img");
    assert_eq!(disk["size"], GIB.to_string());
    assert_eq!(disk["nvme-tcp-export"], "false");
    assert_eq!(disk["mount-filesystem"], "false");
    assert_eq!(disk["type"], "file");

    let (status, pool) = sim.request("GET", "/rest/disk?slot=storage-pool", None);
    assert_eq!(status, 200);
    let pool = &pool[0];
    assert_eq!(pool["type"], "raid");
    assert_eq!(pool["size"], (100 * GIB).to_string());
    assert_eq!(pool["free"], (99 * GIB).to_string());
    assert_eq!(pool["fs"], "btrfs");

    let (_, files) = sim.request("GET", "/rest/file?name=storage-pool/csi/pvc-conv.img", None);
    assert_eq!(files.as_array().unwrap().len(), 1, "{files}");
    assert_eq!(files[0]["name"], "storage-pool/csi/pvc-conv.img");
    assert_eq!(files[0]["type"], ".img file");
    assert_eq!(files[0]["size"], GIB.to_string());

    let (_, res) = sim.request("GET", "/rest/system/resource", None);
    assert_eq!(res["version"], "7.24.4 (stable)");
    assert!(res["uptime"].as_str().unwrap().ends_with('s'));

    // .proplist and POST print.
    let (_, some) = sim.request("GET", "/rest/disk?slot=pvc-conv&.proplist=slot,size", None);
    assert_eq!(some, json!([{"slot": "pvc-conv", "size": GIB.to_string()}]));
    let (status, printed) = sim.request(
        "POST",
        "/rest/disk/print",
        Some(&json!({".proplist": ["slot"], ".query": ["type=file"]})),
    );
    assert_eq!(status, 200);
    assert_eq!(printed, json!([{"slot": "pvc-conv"}]));
}

#[test]
fn routeros_error_answers() {
    let sim = Sim::start();
    let disk = add(&sim, "pvc-err", "1G");
    let id = disk[".id"].as_str().unwrap().to_string();
    let path = format!("/rest/disk/{id}");

    assert_error(
        sim.request("GET", "/rest/disk/*FFF", None),
        404,
        Some("no such item"),
    );
    assert_error(
        sim.request("PATCH", "/rest/disk/*FFF", Some(&json!({"comment": "x"}))),
        404,
        Some("no such item"),
    );
    // Duplicate slot, slot too long, bad size, non-string value, unknown field.
    let put = |body: Value| sim.request("PUT", "/rest/disk", Some(&body));
    assert_error(
        put(json!({"type": "file", "slot": "pvc-err", "file-path": "storage-pool/x.img", "file-size": "1M"})),
        400,
        Some("failure: item with such slot already exists"),
    );
    assert_error(
        put(
            json!({"type": "file", "slot": "x".repeat(33), "file-path": "storage-pool/y.img", "file-size": "1M"}),
        ),
        400,
        Some("invalid value for argument slot"),
    );
    assert_error(
        put(json!({"type": "file", "slot": "a", "file-path": "storage-pool/a.img", "file-size": "1.5G"})),
        400,
        Some("invalid value for argument file-size"),
    );
    assert_error(
        put(json!({"type": "file", "slot": "a", "file-path": "storage-pool/a.img", "file-size": 1024})),
        400,
        Some("invalid value for argument file-size"),
    );
    assert_error(
        put(
            json!({"type": "file", "slot": "a", "file-path": "storage-pool/a.img", "file-size": "1M", "colour": "red"}),
        ),
        400,
        Some("unknown parameter colour"),
    );
    assert_error(
        put(json!({"type": "file", "slot": "a", "file-path": "storage-pool/a.img"})),
        400,
        Some("missing value(s) of argument(s) file-size"),
    );
    assert_error(
        put(json!({"type": "file", "slot": "a", "file-path": "storage-pool/b.img", "file-size": "200G"})),
        400,
        Some("failure: not enough space"),
    );
    // Shrinking is refused and changes nothing.
    assert_error(
        sim.request(
            "PATCH",
            &path,
            Some(&json!({"file-size": "512M", "comment": "no"})),
        ),
        400,
        Some("failure: file-size cannot be decreased"),
    );
    let (_, d) = sim.request("GET", &path, None);
    assert_eq!(d["comment"], "c-pvc-err");
    // Wrong credentials.
    assert_error(
        sim.request_as("GET", "/rest/disk", None, "Basic YWRtaW46bm9wZQ=="),
        401,
        None,
    );
    assert_error(sim.request_as("GET", "/rest/disk", None, "Bearer x"), 401, None);
    // Unknown menu.
    let (status, _) = sim.request("GET", "/rest/nothing/here", None);
    assert_eq!(status, 400);
    // Remove, then remove again: a plain 404.
    let (status, body) = sim.request("DELETE", &path, None);
    assert_eq!((status, body), (204, Value::Null));
    assert_error(sim.request("DELETE", &path, None), 404, None);
}

#[test]
fn disks_are_real_sparse_files_and_files_outlive_disks() {
    let sim = Sim::start();
    let disk = add(&sim, "pvc-sparse", "4G");
    let real = sim.backing_path("storage-pool/csi/pvc-sparse.img");
    let meta = std::fs::metadata(&real).unwrap();
    assert_eq!(meta.len(), 4 * GIB);
    assert!(meta.blocks() * 512 < 1 << 20, "sparse: {} blocks", meta.blocks());

    // Grow extends the real file.
    let path = format!("/rest/disk/{}", disk[".id"].as_str().unwrap());
    let (status, grown) = sim.request("PATCH", &path, Some(&json!({"file-size": "5G"})));
    assert_eq!(status, 200, "{grown}");
    assert_eq!(grown["size"], (5 * GIB).to_string());
    assert_eq!(std::fs::metadata(&real).unwrap().len(), 5 * GIB);

    // The file cannot go while the disk uses it.
    let (_, files) = sim.request("GET", "/rest/file?name=storage-pool/csi/pvc-sparse.img", None);
    let file_id = files[0][".id"].as_str().unwrap().to_string();
    let (status, body) = sim.request("DELETE", &format!("/rest/file/{file_id}"), None);
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "failure: file is in use by disk pvc-sparse");
    // Removing the disk keeps the file (and its space).
    assert_eq!(sim.request("DELETE", &path, None).0, 204);
    assert!(real.exists());
    let (_, pool) = sim.request("GET", "/rest/disk?slot=storage-pool", None);
    assert_eq!(pool[0]["free"], (95 * GIB).to_string());
    // Then the file can go, and the directory once empty.
    assert_eq!(
        sim.request("DELETE", &format!("/rest/file/{file_id}"), None).0,
        204
    );
    assert!(!real.exists());
    let (_, dirs) = sim.request("GET", "/rest/file?name=storage-pool/csi", None);
    let dir_id = dirs[0][".id"].as_str().unwrap().to_string();
    assert_eq!(dirs[0]["type"], "directory");
    assert_eq!(
        sim.request("DELETE", &format!("/rest/file/{dir_id}"), None).0,
        204
    );
    assert_error(
        sim.request("DELETE", &format!("/rest/file/{file_id}"), None),
        404,
        None,
    );
}

#[test]
fn exports_json_lists_exported_disks() {
    let sim = Sim::with(SimOptions {
        extra_args: vec!["--nvme-address".into(), "10.9.8.7".into()],
        ..SimOptions::default()
    });
    let a = add(&sim, "pvc-ea", "1G");
    add(&sim, "pvc-eb", "2G");
    assert_eq!(sim.exports_file()["exports"], json!([]));
    let path = format!("/rest/disk/{}", a[".id"].as_str().unwrap());
    let (status, _) = sim.request(
        "PATCH",
        &path,
        Some(&json!({"nvme-tcp-export": "true", "nvme-tcp-server-port": "4430",
                     "nvme-tcp-server-nqn": "nqn.2000-02.com.mikrotik:pvc-ea"})),
    );
    assert_eq!(status, 200);
    let exports = sim.exports_file();
    assert_eq!(exports, sim.exports());
    assert_eq!(exports["nvme_address"], "10.9.8.7");
    let list = exports["exports"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["slot"], "pvc-ea");
    assert_eq!(list[0]["nqn"], "nqn.2000-02.com.mikrotik:pvc-ea");
    assert_eq!(list[0]["port"], 4430);
    assert_eq!(list[0]["size"], GIB);
    let backing = std::path::PathBuf::from(list[0]["backing_file"].as_str().unwrap());
    assert!(backing.is_absolute());
    assert_eq!(std::fs::metadata(&backing).unwrap().len(), GIB);
    sim.request("PATCH", &path, Some(&json!({"nvme-tcp-export": "false"})));
    assert_eq!(sim.exports_file()["exports"], json!([]));
}

#[test]
fn restart_after_kill_keeps_every_disk_and_file() {
    let sim = Sim::start();
    for i in 0..5 {
        let d = add(&sim, &format!("pvc-keep-{i}"), "1G");
        if i % 2 == 0 {
            let path = format!("/rest/disk/{}", d[".id"].as_str().unwrap());
            sim.request("PATCH", &path, Some(&json!({"nvme-tcp-export": "true"})));
        }
    }
    sim.request(
        "PUT",
        "/rest/file",
        Some(&json!({"name": "storage-pool/other", "type": "directory"})),
    );
    let (_, disks) = sim.request("GET", "/rest/disk", None);
    let (_, files) = sim.request("GET", "/rest/file", None);
    let exports = sim.exports_file();
    let fingerprint = sim.fingerprint.clone();

    let sim = sim.restart();
    let (_, disks_after) = sim.request("GET", "/rest/disk", None);
    let (_, files_after) = sim.request("GET", "/rest/file", None);
    assert_eq!(disks_after, disks);
    // The pool's own directory shows the (new) boot time; all else is equal.
    let strip = |v: &Value| -> Vec<Value> { v.as_array().unwrap()[1..].to_vec() };
    assert_eq!(strip(&files_after), strip(&files));
    assert_eq!(sim.exports_file(), exports);
    assert_eq!(sim.fingerprint, fingerprint, "the certificate survives a reboot");
    // New ids do not collide with old ones.
    let d = add(&sim, "pvc-after", "1G");
    let ids: Vec<&str> = disks
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[".id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&d[".id"].as_str().unwrap()));
}

#[test]
fn faults_drop_fail_delay_and_go_down() {
    let sim = Sim::start();
    sim.fault(json!({"fail_next": 1, "fail_kind": "5xx"}));
    assert_error(sim.request("GET", "/rest/disk", None), 503, None);
    assert_eq!(sim.request("GET", "/rest/disk", None).0, 200);
    sim.fault(json!({"fail_next": 1, "fail_kind": "session-closed"}));
    assert_error(
        sim.request("GET", "/rest/disk", None),
        400,
        Some("Session closed"),
    );

    sim.fault(json!({"latency_ms": 300}));
    let started = Instant::now();
    sim.request("GET", "/rest/system/resource", None);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.reset_faults();
    assert_eq!(sim.stat("injected_failures"), 2);

    // A dropped connection: the client sees no answer.
    let agent = ureq::AgentBuilder::new().build();
    let plain = Sim::with(SimOptions {
        tls: common::SimTls::Plain,
        ..SimOptions::default()
    });
    plain.fault(json!({"fail_next": 1, "fail_kind": "drop"}));
    let e = agent.get(&format!("{}/rest/disk", plain.url)).call().unwrap_err();
    assert!(matches!(e, ureq::Error::Transport(_)), "{e}");

    // Down: connections are refused, then it comes back by itself.
    // Down long enough that a loaded machine still finds it down.
    plain.fault(json!({"down_for_ms": 5000}));
    std::thread::sleep(Duration::from_millis(300));
    let refused = std::net::TcpStream::connect(("127.0.0.1", plain.port));
    assert!(refused.is_err(), "connection accepted while down");
    plain.wait_until_up(Duration::from_secs(10));
    assert_eq!(plain.request("GET", "/rest/disk", None).0, 200);
}

#[test]
fn sigterm_stops_cleanly() {
    let mut sim = Sim::start();
    add(&sim, "pvc-term", "1M");
    let status = sim.terminate();
    assert!(status.success(), "{status:?}; log:\n{}", sim.log());
    let state = std::fs::read_to_string(sim.data_dir.join("state.json")).unwrap();
    assert!(state.contains("pvc-term"));
}

#[test]
fn bad_command_lines_fail_with_a_message() {
    let out = std::process::Command::new(common::SIM_BIN)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rds-sim: error:"), "{err}");
    let out = std::process::Command::new(common::SIM_BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("/sim/fault") && help.contains("--self-signed"),
        "{help}"
    );
}

#[test]
fn unknown_menus_and_commands_answer_no_such_command_like_routeros() {
    let sim = Sim::start();
    let no_such = |method: &str, path: &str, word: &str| {
        assert_error(
            sim.request(method, path, Some(&json!({}))),
            400,
            Some(&format!("no such command or directory ({word})")),
        )
    };
    no_such("GET", "/rest/wireless", "wireless");
    no_such("GET", "/rest/system/package2", "package2");
    no_such("POST", "/rest/disk/frobnicate", "frobnicate");
    no_such("DELETE", "/rest/disk", "remove");
    // An item that is gone is still `no such item` / 404.
    assert_error(sim.request("DELETE", "/rest/disk/*FFF", None), 404, None);
    // The faults produce RouterOS's answers too.
    sim.fault(json!({"fail_next": 1, "fail_kind": "no-such-command", "fail_method": "DELETE"}));
    assert_eq!(
        sim.request("GET", "/rest/disk", None).0,
        200,
        "only DELETE counts down"
    );
    no_such("DELETE", "/rest/disk/*FFF", "remove");
    sim.fault(json!({"fail_next": 1, "fail_kind": "not-allowed", "fail_method": null}));
    assert_error(
        sim.request("GET", "/rest/disk", None),
        500,
        Some("std failure: not allowed (9)"),
    );
}

#[test]
fn documented_disk_fields_are_accepted_with_their_version_gates() {
    let sim = Sim::start();
    let (status, disk) = sim.request(
        "PUT",
        "/rest/disk",
        Some(&json!({
            "type": "file", "slot": "pvc-fields", "file-path": "storage-pool/csi/pvc-fields.img",
            "file-size": "1G", "mount-filesystem": "false", "compress": "yes",
            "mount-read-only": "no", "file-offset": "0", "disabled": "no",
            "nvme-tcp-server-password": "s3cret-value", "nvme-tcp-server-allow-host-name": "",
            "iscsi-export": "no", "nfs-sharing": "no", "smb-sharing": "no",
            "media-sharing": "no", "swap": "no"
        })),
    );
    assert_eq!(status, 200, "{disk}");
    assert_eq!(disk["compress"], "true");
    assert_eq!(disk["mount-read-only"], "false");
    assert_eq!(disk["file-offset"], "0");
    assert_eq!(disk["disabled"], "false");
    assert_eq!(disk["nvme-tcp-server-allow-host-name"], "");
    assert!(!disk.to_string().contains("s3cret-value"), "{disk}");
    let path = format!("/rest/disk/{}", disk[".id"].as_str().unwrap());
    let (status, set) = sim.request(
        "PATCH",
        &path,
        Some(&json!({"mount-read-only": "yes", "nvme-tcp-server-password": "other"})),
    );
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["mount-read-only"], "true");
    assert_eq!(set["compress"], "true", "unchanged fields stay");
    assert_error(
        sim.request("PATCH", &path, Some(&json!({"disabled": "maybe"}))),
        400,
        Some("invalid value for argument disabled"),
    );

    // The pool is labelled `<slot>-fs`, and its root lists as a disk.
    let (_, pool) = sim.request("GET", "/rest/disk?slot=storage-pool", None);
    assert_eq!(pool[0]["fs-label"], "storage-pool-fs");
    let (_, root) = sim.request("GET", "/rest/file?name=storage-pool", None);
    assert_eq!(root[0]["type"], "disk", "{root}");

    // compress is 7.18+, and Btrfs only.
    let old = Sim::with(SimOptions {
        version: Some("7.17 (stable)".into()),
        ..SimOptions::default()
    });
    assert_error(
        old.request(
            "PUT",
            "/rest/disk",
            Some(
                &json!({"type": "file", "slot": "a", "file-path": "storage-pool/a.img",
                         "file-size": "1M", "compress": "yes"}),
            ),
        ),
        400,
        Some("unknown parameter compress"),
    );
    let xfs = Sim::with(SimOptions {
        extra_args: vec!["--pool-fs".into(), "xfs".into()],
        ..SimOptions::default()
    });
    assert_error(
        xfs.request(
            "PUT",
            "/rest/disk",
            Some(
                &json!({"type": "file", "slot": "a", "file-path": "storage-pool/a.img",
                         "file-size": "1M", "compress": "yes"}),
            ),
        ),
        400,
        Some("invalid value for argument compress"),
    );
}

#[test]
fn file_size_changes_can_be_refused_or_ignored() {
    let sim = Sim::start();
    let disk = add(&sim, "pvc-fixed", "1G");
    let path = format!("/rest/disk/{}", disk[".id"].as_str().unwrap());
    sim.fault(json!({"file_size": "refuse"}));
    assert_error(
        sim.request("PATCH", &path, Some(&json!({"file-size": "2G"}))),
        400,
        Some("failure: cannot change file-size"),
    );
    sim.fault(json!({"file_size": "ignore"}));
    let (status, same) = sim.request("PATCH", &path, Some(&json!({"file-size": "2G"})));
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["size"], GIB.to_string());
    sim.fault(json!({"file_size": "apply"}));
    let (_, grown) = sim.request("PATCH", &path, Some(&json!({"file-size": "2G"})));
    assert_eq!(grown["size"], (2 * GIB).to_string());
}

#[test]
fn console_commands_behind_the_verbs_work_too() {
    let sim = Sim::start();
    let (status, added) = sim.request(
        "POST",
        "/rest/disk/add",
        Some(
            &json!({"type": "file", "slot": "pvc-cmd", "file-path": "storage-pool/csi/pvc-cmd.img",
                     "file-size": "1M"}),
        ),
    );
    assert_eq!(status, 200, "{added}");
    let id = added["ret"].as_str().expect("ret").to_string();
    let (status, set) = sim.request(
        "POST",
        "/rest/disk/set",
        Some(&json!({".id": id, "comment": "via set"})),
    );
    assert_eq!((status, set), (200, json!([])));
    let (_, disk) = sim.request("GET", &format!("/rest/disk/{id}"), None);
    assert_eq!(disk["comment"], "via set");
    let (status, removed) = sim.request("POST", "/rest/disk/remove", Some(&json!({"numbers": id})));
    assert_eq!((status, removed), (200, json!([])));
    assert_error(
        sim.request("POST", "/rest/disk/remove", Some(&json!({".id": id}))),
        404,
        None,
    );
}
