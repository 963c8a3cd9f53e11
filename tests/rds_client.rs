//! The RouterOS client (`rds_csi::rds`) against the real `rds-sim` over HTTPS: every operation, every error kind, trust modes, retries, connection reuse and concurrency.

// Test helpers may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Sim, SimOptions, SimTls, TempDir};
use rds_csi::rds::{self, ClientConfig, Error, Kind, NewDisk, Removed, Trust};
use rds_csi::retry;
use serde_json::json;

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

/// The full error chain, as the controller would log it.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

const GIB: u64 = 1 << 30;
/// The folder the clients that delete are confined to.
const BASE: &str = "storage-pool/csi";

#[test]
fn system_resource_and_version() {
    let sim = Sim::start();
    let client = sim.client();
    let res = client.system_resource().unwrap();
    assert_eq!(res.version_text, "7.24.4 (stable)");
    assert_eq!(res.version, Some(rds::Version::new(7, 24, 4)));
    assert_eq!(res.board_name.as_deref(), Some("RDS2216"));
    assert!(res.uptime.is_some());
    assert_eq!(client.version().unwrap(), Some(rds::Version::new(7, 24, 4)));
}

#[test]
fn pool_capacity_follows_the_disks() {
    let sim = Sim::start();
    let client = sim.client();
    let pool = client.pool("storage-pool").unwrap();
    assert_eq!(pool.size, 100 * GIB);
    assert_eq!(pool.free, Some(100 * GIB));
    assert_eq!(pool.fs.as_deref(), Some("btrfs"));
    assert!(pool.mounted);
    client.create_disk(&new_disk("pvc-cap", 3 * GIB)).unwrap();
    // Found by mount point too, with or without the leading slash.
    let pool = client.pool("/storage-pool").unwrap();
    assert_eq!(pool.free, Some(97 * GIB));
    let e = client.pool("no-such-pool").unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
    assert!(e.to_string().contains("no-such-pool"), "{e}");
}

#[test]
fn create_disk_exports_verifies_and_is_idempotent() {
    let sim = Sim::start();
    let client = sim.client();
    let new = new_disk("pvc-create", 2 * GIB + 4096);
    let disk = client.create_disk(&new).unwrap();
    assert!(disk.id.starts_with('*'), "{disk:?}");
    assert_eq!(disk.slot, "pvc-create");
    assert_eq!(disk.kind.as_deref(), Some("file"));
    assert_eq!(disk.file_path.as_deref(), Some("storage-pool/csi/pvc-create.img"));
    assert_eq!(disk.size, Some(2 * GIB + 4096));
    assert!(disk.nvme_tcp_export);
    assert_eq!(disk.nvme_tcp_port, Some(4420));
    assert_eq!(disk.effective_nqn(), "nqn.2000-02.com.mikrotik:pvc-create");
    assert_eq!(disk.mount_filesystem, Some(false));
    assert_eq!(disk.comment, "csi=name-of-pvc-create");

    // A real sparse file of the exact size backs it.
    let backing = sim.backing_path("storage-pool/csi/pvc-create.img");
    assert_eq!(std::fs::metadata(&backing).unwrap().len(), 2 * GIB + 4096);

    // The fake fabric sees the export.
    let exports = sim.exports_file();
    let e = &exports["exports"][0];
    assert_eq!(e["nqn"], "nqn.2000-02.com.mikrotik:pvc-create");
    assert_eq!(e["port"], 4420);
    assert_eq!(e["size"], 2 * GIB + 4096);
    assert_eq!(
        e["backing_file"],
        backing.canonicalize().unwrap().display().to_string()
    );

    // Called again: the same disk, nothing new.
    let again = client.create_disk(&new).unwrap();
    assert_eq!(again, disk);
    assert_eq!(client.list_disks("pvc-create").unwrap().len(), 1);
    assert_eq!(client.disk("pvc-create").unwrap(), Some(disk));
    assert_eq!(client.disk("pvc-absent").unwrap(), None);
}

#[test]
fn create_finishes_a_half_created_disk() {
    let sim = Sim::start();
    let client = sim.client();
    // A create that stopped after the PUT: the disk exists, export off.
    let (status, body) = sim.request(
        "PUT",
        "/rest/disk",
        Some(&json!({
            "type": "file", "slot": "pvc-half", "file-path": "storage-pool/csi/pvc-half.img",
            "file-size": GIB.to_string(), "mount-filesystem": "false", "comment": "csi=half"
        })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nvme-tcp-export"], "false");
    let disk = client.create_disk(&new_disk("pvc-half", GIB)).unwrap();
    assert_eq!(disk.id, body[".id"].as_str().unwrap());
    assert!(disk.nvme_tcp_export);
    assert_eq!(disk.effective_nqn(), "nqn.2000-02.com.mikrotik:pvc-half");
}

#[test]
fn create_refuses_someone_elses_disk_with_the_same_slot() {
    let sim = Sim::start();
    let client = sim.client();
    client.create_disk(&new_disk("pvc-taken", GIB)).unwrap();
    let mut other = new_disk("pvc-taken", GIB);
    other.file_path = "storage-pool/other/pvc-taken.img".into();
    let e = client.create_disk(&other).unwrap_err();
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(text.contains("create disk pvc-taken"), "{text}");
    assert!(text.contains("file-path"), "{text}");

    let mut other = new_disk("pvc-taken", GIB);
    other.nqn = Some("nqn.2000-02.com.mikrotik:someone-else".into());
    assert_eq!(
        client.create_disk(&other).unwrap_err().kind(),
        Kind::AlreadyExists
    );
}

#[test]
fn create_without_nqn_uses_the_slot() {
    let sim = Sim::start();
    let client = sim.client();
    let mut new = new_disk("pvc-bare", GIB);
    new.nqn = None;
    new.port = 4421;
    let disk = client.create_disk(&new).unwrap();
    assert_eq!(disk.effective_nqn(), "pvc-bare");
    assert_eq!(disk.effective_port(), 4421);
    assert_eq!(sim.exports()["exports"][0]["nqn"], "pvc-bare");
}

#[test]
fn grow_disk_grows_reads_back_and_never_shrinks() {
    let sim = Sim::start();
    let client = sim.client();
    client.create_disk(&new_disk("pvc-grow", GIB)).unwrap();
    let grown = client.grow_disk("pvc-grow", 3 * GIB).unwrap();
    assert_eq!(grown.size, Some(3 * GIB));
    let backing = sim.backing_path("storage-pool/csi/pvc-grow.img");
    assert_eq!(std::fs::metadata(&backing).unwrap().len(), 3 * GIB);
    // Twice, or to a smaller size: nothing changes.
    assert_eq!(client.grow_disk("pvc-grow", 3 * GIB).unwrap().size, Some(3 * GIB));
    assert_eq!(client.grow_disk("pvc-grow", 2 * GIB).unwrap().size, Some(3 * GIB));
    assert_eq!(sim.exports()["exports"][0]["size"], 3 * GIB);
    let e = client.grow_disk("pvc-nope", GIB).unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
    assert!(e.to_string().contains("grow disk pvc-nope"), "{e}");
    // The pool itself is not a file disk.
    let e = client.grow_disk("storage-pool", 1000 * GIB).unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
}

#[test]
fn set_comment_is_read_back_and_idempotent() {
    let sim = Sim::start();
    let client = sim.client();
    client.create_disk(&new_disk("pvc-comment", GIB)).unwrap();
    let d = client
        .set_comment("pvc-comment", "csi=x attached=node-1")
        .unwrap();
    assert_eq!(d.comment, "csi=x attached=node-1");
    let d = client
        .set_comment("pvc-comment", "csi=x attached=node-1")
        .unwrap();
    assert_eq!(d.comment, "csi=x attached=node-1");
    assert_eq!(
        client.disk("pvc-comment").unwrap().unwrap().comment,
        "csi=x attached=node-1"
    );
    assert_eq!(
        client.set_comment("pvc-missing", "x").unwrap_err().kind(),
        Kind::NotFound
    );
}

#[test]
fn remove_disk_unexports_removes_disk_and_file_and_is_idempotent() {
    let sim = Sim::start();
    let client = sim.client().with_base_path(BASE);
    client.create_disk(&new_disk("pvc-rm", GIB)).unwrap();
    let path = "storage-pool/csi/pvc-rm.img";
    assert_eq!(
        client.remove_disk("pvc-rm", path).unwrap(),
        Removed {
            disk: true,
            file: true
        }
    );
    assert_eq!(client.disk("pvc-rm").unwrap(), None);
    assert!(client.list_files(path).unwrap().is_empty());
    assert!(!sim.backing_path(path).exists());
    assert_eq!(sim.exports()["exports"], json!([]));
    assert_eq!(
        client.remove_disk("pvc-rm", path).unwrap(),
        Removed {
            disk: false,
            file: false
        }
    );
    // The pool's free space is back.
    assert_eq!(client.pool("storage-pool").unwrap().free, Some(100 * GIB));
}

#[test]
fn remove_disk_finishes_after_a_crash_between_steps() {
    let sim = Sim::start();
    let client = sim.client().with_base_path(BASE);
    let disk = client.create_disk(&new_disk("pvc-crash", GIB)).unwrap();
    // Crash after DELETE of the disk: the file stays behind.
    let (status, _) = sim.request("DELETE", &format!("/rest/disk/{}", disk.id), None);
    assert_eq!(status, 204);
    let path = "/storage-pool/csi/pvc-crash.img";
    assert_eq!(client.list_files(path).unwrap().len(), 1);
    assert_eq!(
        client.remove_disk("pvc-crash", path).unwrap(),
        Removed {
            disk: false,
            file: true
        }
    );
    assert!(client.list_files(path).unwrap().is_empty());
}

#[test]
fn remove_disk_refuses_a_different_backing_file() {
    let sim = Sim::start();
    let client = sim.client().with_base_path(BASE);
    client.create_disk(&new_disk("pvc-guard", GIB)).unwrap();
    let e = client
        .remove_disk("pvc-guard", "storage-pool/csi/other.img")
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(client.disk("pvc-guard").unwrap().is_some());
    let e = client.remove_disk("storage-pool", "storage-pool").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
}

#[test]
fn list_and_remove_files_and_directories() {
    let sim = Sim::start();
    let client = sim.client().with_base_path(BASE);
    client.make_directory("storage-pool/csi").unwrap();
    client.make_directory("/storage-pool/csi").unwrap();
    client.create_disk(&new_disk("pvc-fa", GIB)).unwrap();
    client.create_disk(&new_disk("pvc-fb", GIB)).unwrap();
    let files = client.list_files("storage-pool/csi/").unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["storage-pool/csi/pvc-fa.img", "storage-pool/csi/pvc-fb.img"]
    );
    assert!(files.iter().all(|f| f.size == Some(GIB) && !f.is_directory()));
    let dirs = client.list_files("storage-pool/csi").unwrap();
    assert!(dirs
        .iter()
        .any(|f| f.name == "storage-pool/csi" && f.is_directory()));

    // A disk's backing file cannot go while the disk exists.
    let e = client.remove_file("storage-pool/csi/pvc-fa.img").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(e.to_string().contains("pvc-fa"), "{e}");
    assert!(e.detail().unwrap().contains("in use"), "{e}");

    // A leaked file (no disk) is removed, once.
    let (status, _) = sim.request(
        "PUT",
        "/rest/file",
        Some(&json!({"name": "storage-pool/csi/leak.img", "contents": "x"})),
    );
    assert_eq!(status, 200);
    assert!(client.remove_file("storage-pool/csi/leak.img").unwrap());
    assert!(!client.remove_file("storage-pool/csi/leak.img").unwrap());

    let disks = client.list_disks("pvc-f").unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(client.list_disks("").unwrap().len(), 3, "pool + 2 disks");
}

#[test]
fn not_enough_space_is_definite_and_not_retried() {
    let sim = Sim::with(SimOptions {
        pool_size: 10 * GIB,
        ..SimOptions::default()
    });
    let client = sim.client();
    client.system_resource().unwrap(); // warm the version cache
    let before = sim.stat("rest_requests");
    let started = Instant::now();
    let e = client.create_disk(&new_disk("pvc-huge", 11 * GIB)).unwrap_err();
    assert_eq!(e.kind(), Kind::NotEnoughSpace, "{e}");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(text.contains("create disk pvc-huge"), "{text}");
    assert!(text.contains("not enough space"), "{text}");
    // One lookup and one PUT, no retry.
    assert_eq!(sim.stat("rest_requests") - before, 2);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(client.disk("pvc-huge").unwrap(), None);

    // The injected variant, for grow too.
    client.create_disk(&new_disk("pvc-small", GIB)).unwrap();
    sim.fault(json!({"no_space": true}));
    let e = client.grow_disk("pvc-small", 2 * GIB).unwrap_err();
    assert_eq!(e.kind(), Kind::NotEnoughSpace, "{e}");
}

#[test]
fn invalid_values_carry_routeros_detail() {
    let sim = Sim::start();
    let client = sim.client();
    let slot = "s".repeat(33);
    let e = client.create_disk(&new_disk(&slot, GIB)).unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidValue, "{e}");
    assert_eq!(e.detail(), Some("invalid value for argument slot"));
    assert!(e.to_string().contains(&format!("create disk {slot}")), "{e}");
    let mut new = new_disk("pvc-outside", GIB);
    new.file_path = "elsewhere/pvc.img".into();
    let e = client.create_disk(&new).unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidValue, "{e}");
    assert!(e.detail().unwrap().contains("file-path"), "{e}");
    // 32 characters is still fine.
    client.create_disk(&new_disk(&"s".repeat(32), GIB)).unwrap();
}

#[test]
fn wrong_password_is_unauthorized_and_never_shown() {
    let sim = Sim::start();
    let dir = TempDir::new("badpw");
    let (user, pass) = common::write_credentials(&dir.path, "admin", "not-the-password");
    let mut config = sim.client_config();
    config.username_file = user;
    config.password_file = pass;
    let client = rds::Client::new(config).unwrap();
    let before = sim.stat("requests");
    let e = client.list_disks("").unwrap_err();
    assert_eq!(e.kind(), Kind::Unauthorized, "{e}");
    assert!(!e.is_transient());
    // The client's one request and the harness's second stats request.
    assert_eq!(sim.stat("requests") - before, 2, "a 401 is not retried");
    let text = format!("{} {e:?}", chain(&e));
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(!text.contains("Basic"), "{text}");
}

#[test]
fn rotated_credentials_are_picked_up() {
    let sim = Sim::start();
    let dir = TempDir::new("rotate");
    let (user, pass) = common::write_credentials(&dir.path, "admin", "old-password");
    std::fs::write(&sim.password_file, "old-password\n").unwrap();
    let mut config = sim.client_config();
    config.username_file = user;
    config.password_file = pass.clone();
    let client = rds::Client::new(config).unwrap();
    client.list_disks("").unwrap();
    // The Secret changes on both sides, the way kubelet updates a mount.
    std::fs::write(&sim.password_file, "new-password\n").unwrap();
    assert_eq!(client.list_disks("").unwrap_err().kind(), Kind::Unauthorized);
    let tmp = dir.join("pass.tmp");
    std::fs::write(&tmp, "new-password\n").unwrap();
    std::fs::rename(&tmp, &pass).unwrap();
    client.list_disks("").unwrap();
}

#[test]
fn too_old_routeros_is_reported_with_the_feature() {
    let sim = Sim::with(SimOptions {
        version: Some("7.16.2 (stable)".into()),
        ..SimOptions::default()
    });
    let client = sim.client();
    let e = client.create_disk(&new_disk("pvc-old", GIB)).unwrap_err();
    assert_eq!(e.kind(), Kind::TooOld, "{e}");
    let text = e.to_string();
    assert!(text.contains("7.16.2"), "{text}");
    assert!(text.contains("7.17"), "{text}");

    // 7.20 has file disks but no nvme-tcp-server-nqn.
    let sim = Sim::with(SimOptions {
        version: Some("7.20.1 (stable)".into()),
        ..SimOptions::default()
    });
    let client = sim.client();
    let e = client.create_disk(&new_disk("pvc-nqn", GIB)).unwrap_err();
    assert_eq!(e.kind(), Kind::TooOld, "{e}");
    assert!(e.to_string().contains("nvme-tcp-server-nqn"), "{e}");
    let mut bare = new_disk("pvc-nqn", GIB);
    bare.nqn = None;
    client.create_disk(&bare).unwrap();
}

#[test]
fn unparseable_version_falls_back_to_routeros_own_answer() {
    // A version the client cannot read: it goes ahead, and RouterOS's own
    // `unknown parameter` answer still says "too old".
    let sim = Sim::with(SimOptions {
        version: Some("custom build".into()),
        ..SimOptions::default()
    });
    let client = sim.client();
    assert_eq!(client.version().unwrap(), None);
    let e = client.create_disk(&new_disk("pvc-v", GIB)).unwrap_err();
    assert_eq!(e.kind(), Kind::TooOld, "{e}");
    assert!(e.detail().unwrap().contains("unknown parameter"), "{e}");
}

#[test]
fn tls_pinning_right_and_wrong_fingerprint() {
    let sim = Sim::start();
    // Right pin: every other test uses it; once more explicitly.
    sim.client().system_resource().unwrap();

    let mut config = sim.client_config();
    let mut wrong = sim.fingerprint_bytes();
    wrong[0] ^= 0xff;
    config.trust = Trust::Fingerprint(wrong);
    let client = rds::Client::new(config).unwrap();
    let started = Instant::now();
    let e = client.system_resource().unwrap_err();
    assert_eq!(e.kind(), Kind::Tls, "{e}");
    assert!(!e.is_transient());
    let text = e.to_string();
    let presented = sim.fingerprint.clone().unwrap();
    assert!(
        text.contains(&presented),
        "shows the presented certificate: {text}"
    );
    assert!(text.contains("--rds-tls-fingerprint"), "{text}");
    assert!(text.contains(&rds::format_fingerprint(&wrong)), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3), "not retried");
}

#[test]
fn tls_system_roots_refuse_a_self_signed_rds_and_show_its_fingerprint() {
    let sim = Sim::start();
    let mut config = sim.client_config();
    config.trust = Trust::System;
    let e = rds::Client::new(config).unwrap().list_disks("").unwrap_err();
    assert_eq!(e.kind(), Kind::Tls, "{e}");
    assert!(e.to_string().contains(sim.fingerprint.as_deref().unwrap()), "{e}");
}

#[test]
fn tls_ca_file_trusts_its_server_and_nothing_else() {
    let dir = TempDir::new("ca");
    let (ca, cert, key) = common::make_ca_and_server_cert(&dir.path, "a");
    let (other_ca, _, _) = common::make_ca_and_server_cert(&dir.path, "b");
    let sim = Sim::with(SimOptions {
        tls: SimTls::Files { cert, key },
        ..SimOptions::default()
    });
    let mut config = sim.client_config();
    config.trust = Trust::CaFile(ca.clone());
    rds::Client::new(config.clone())
        .unwrap()
        .system_resource()
        .unwrap();
    // The host name is checked against the certificate: localhost is in it.
    config.address = format!("https://localhost:{}", sim.port);
    rds::Client::new(config.clone())
        .unwrap()
        .system_resource()
        .unwrap();

    config.trust = Trust::CaFile(other_ca);
    let e = rds::Client::new(config.clone())
        .unwrap()
        .system_resource()
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Tls, "{e}");

    config.trust = Trust::CaFile(dir.join("missing.pem"));
    let e = rds::Client::new(config).unwrap_err();
    assert_eq!(e.kind(), Kind::Config, "{e}");
    assert!(e.to_string().contains("missing.pem"), "{e}");
}

#[test]
fn insecure_mode_and_plain_http() {
    let sim = Sim::start();
    let mut config = sim.client_config();
    config.trust = Trust::InsecureSkipVerify;
    rds::Client::new(config).unwrap().list_disks("").unwrap();

    let plain = Sim::with(SimOptions {
        tls: SimTls::Plain,
        ..SimOptions::default()
    });
    assert!(plain.url.starts_with("http://"));
    let client = plain.client();
    client.create_disk(&new_disk("pvc-plain", GIB)).unwrap();
    // https against a plain-http RDS is a handshake failure, not a hang.
    let mut config = plain.client_config();
    config.address = plain.url.replace("http://", "https://");
    config.trust = Trust::InsecureSkipVerify;
    config.retry.max_attempts = 1;
    assert!(rds::Client::new(config).unwrap().list_disks("").is_err());
}

#[test]
fn garbage_answer_is_a_protocol_error() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        let body = "this is not json";
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let dir = TempDir::new("garbage");
    let (user, pass) = common::write_credentials(&dir.path, "admin", "pw");
    let mut config = ClientConfig::new(format!("http://127.0.0.1:{port}"), user, pass);
    config.retry = common::fast_policy();
    let e = rds::Client::new(config).unwrap().list_disks("").unwrap_err();
    assert_eq!(e.kind(), Kind::Protocol, "{e}");
    assert!(e.to_string().contains("not json"), "{e}");
    server.join().unwrap();
}

fn slow_policy() -> retry::Policy {
    retry::Policy {
        initial: Duration::from_millis(200),
        factor: 2.0,
        cap: Duration::from_secs(2),
        jitter: 0.1,
        max_attempts: 5,
        deadline: Duration::from_secs(20),
    }
}

#[test]
fn transient_failures_are_retried_with_backoff() {
    let sim = Sim::start();
    let mut config = sim.client_config();
    config.retry = slow_policy();
    let client = rds::Client::new(config).unwrap();
    client.system_resource().unwrap();
    // The two first delays are at least 180 ms and 360 ms (200, 400 ± 10%).
    let least = Duration::from_millis(180 + 360);
    for kind in ["5xx", "drop", "session-closed"] {
        sim.fault(json!({"fail_next": 2, "fail_kind": kind}));
        let before = sim.stat("injected_failures");
        let started = Instant::now();
        let disks = client
            .list_disks("")
            .unwrap_or_else(|e| panic!("{kind}: {}", chain(&e)));
        let took = started.elapsed();
        assert_eq!(disks.len(), 1, "{kind}");
        assert_eq!(sim.stat("injected_failures") - before, 2, "{kind}");
        assert!(took >= least, "{kind}: took {took:?}, less than the backoff");
        assert!(took < Duration::from_secs(15), "{kind}: took {took:?}");
    }
}

#[test]
fn persistent_5xx_gives_up_after_max_attempts() {
    let sim = Sim::start();
    let client = sim.client();
    sim.fault(json!({"fail_next": 100, "fail_kind": "5xx"}));
    let e = client.list_disks("").unwrap_err();
    assert_eq!(e.kind(), Kind::Unavailable, "{e}");
    assert!(e.is_transient());
    let text = chain(&e);
    assert!(text.contains("list disks: gave up after 4 attempts"), "{text}");
    assert!(text.contains("503"), "{text}");
    assert_eq!(sim.stat("injected_failures"), 4);
}

#[test]
fn rds_down_longer_than_the_deadline_is_a_bounded_clear_error() {
    let sim = Sim::start();
    let mut config = sim.client_config();
    config.retry = retry::Policy {
        initial: Duration::from_millis(100),
        factor: 2.0,
        cap: Duration::from_secs(1),
        jitter: 0.1,
        max_attempts: 100,
        deadline: Duration::from_millis(1500),
    };
    config.request_timeout = Duration::from_secs(1);
    let client = rds::Client::new(config).unwrap();
    client.list_disks("").unwrap();
    sim.fault(json!({"down_for_ms": 6000}));
    let started = Instant::now();
    let e = client.list_disks("").unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), Kind::Unavailable, "{e}");
    assert!(e.is_transient());
    let text = chain(&e);
    assert!(text.contains("gave up after"), "{text}");
    assert!(text.contains("cannot reach the rds"), "{text}");
    assert!(took >= Duration::from_millis(250), "retried: {took:?}");
    assert!(took < Duration::from_secs(5), "bounded by the deadline: {took:?}");
    // It comes back, and so does the client.
    sim.wait_until_up(Duration::from_secs(20));
    client.list_disks("").unwrap();
}

#[test]
fn sequential_calls_reuse_one_tls_connection() {
    let sim = Sim::start();
    let client = sim.client();
    let before = sim.stats();
    client.create_disk(&new_disk("pvc-reuse", GIB)).unwrap();
    for _ in 0..10 {
        client.list_disks("pvc").unwrap();
        client.disk("pvc-reuse").unwrap();
        client.pool("storage-pool").unwrap();
    }
    let after = sim.stats();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    // The create (version, look up, PUT, PATCH) and 30 reads.
    assert!(delta("rest_requests") >= 34, "{after}");
    assert_eq!(delta("rest_connections"), 1, "{after}");
    // The client's one handshake, plus the harness's own stats request.
    assert_eq!(delta("tls_handshakes"), 2, "{after}");
}

#[test]
fn concurrent_creates_of_64_slots_all_succeed_within_the_in_flight_cap() {
    let sim = Sim::start();
    sim.fault(json!({"latency_ms": 5}));
    let client = sim.client();
    client.system_resource().unwrap();
    sim.reset_peak();
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || client.create_disk(&new_disk(&format!("conc-{i:02}"), 1 << 20)))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let disk = t
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("conc-{i:02}: {}", chain(&e)));
        assert!(disk.nvme_tcp_export);
    }
    let disks = client.list_disks("conc-").unwrap();
    assert_eq!(disks.len(), 64);
    let mut slots: Vec<_> = disks.iter().map(|d| d.slot.clone()).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 64);
    assert_eq!(sim.exports()["exports"].as_array().unwrap().len(), 64);
    let peak = sim.stat("peak_in_flight");
    assert!(peak <= 4, "at most max_in_flight=4 requests at once, saw {peak}");
    assert!(peak >= 2, "the creates did run concurrently, peak {peak}");
}

/// Makes a disk through the sim's REST API, as an operator would by hand.
fn hand_made_disk(sim: &Sim, slot: &str, file: &str) -> String {
    let (status, disk) = sim.request(
        "PUT",
        "/rest/disk",
        Some(&json!({
            "type": "file",
            "slot": slot,
            "file-path": file,
            "file-size": GIB.to_string(),
            "mount-filesystem": "false",
            "comment": "made by hand",
        })),
    );
    assert_eq!(status, 200, "{disk}");
    disk[".id"].as_str().unwrap().to_string()
}

#[test]
fn deletions_are_confined_to_the_base_path_whatever_the_caller_passes() {
    let sim = Sim::start();
    let client = sim.client().with_base_path(BASE);
    let file = "storage-pool/vms/backup.img";
    hand_made_disk(&sim, "vm-backup", file);
    let disk = client.disk("vm-backup").unwrap().unwrap();
    let before = sim.stat("rest_requests");
    for path in [
        file,
        "/storage-pool/vms/backup.img",
        "storage-pool/csi/../vms/backup.img",
        "storage-pool/csi",
        "storage-pool/csi2/backup.img",
        "",
    ] {
        let e = client.remove_disk("vm-backup", path).unwrap_err();
        assert_eq!(e.kind(), Kind::Rejected, "{path}: {e}");
        assert!(matches!(e, Error::FilePathMismatch { .. }), "{e:?}");
        assert!(e.to_string().contains("storage-pool/csi/"), "{e}");
        let e = client.remove_file(path).unwrap_err();
        assert_eq!(e.kind(), Kind::Rejected, "{path}: {e}");
    }
    // The disk as looked up names its own file: refused as well.
    let e = client.remove_disk_known(&disk).unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    // Refused before anything was sent.
    assert_eq!(sim.stat("rest_requests"), before);
    assert_eq!(client.disk("vm-backup").unwrap(), Some(disk));
    assert_eq!(client.list_files(file).unwrap().len(), 1);

    // A client with no base path deletes nothing at all.
    let unconfined = sim.client();
    unconfined.create_disk(&new_disk("pvc-keep", GIB)).unwrap();
    let e = unconfined
        .remove_disk("pvc-keep", "storage-pool/csi/pvc-keep.img")
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(unconfined.disk("pvc-keep").unwrap().is_some());
    // Inside the base path, removal works as before.
    assert_eq!(
        client
            .remove_disk("pvc-keep", "storage-pool/csi/pvc-keep.img")
            .unwrap(),
        Removed {
            disk: true,
            file: true
        }
    );
}

#[test]
fn calls_on_a_known_disk_skip_the_lookup() {
    let sim = Sim::start();
    let client = sim.client().with_base_path(BASE);
    client.system_resource().unwrap(); // warm the version cache
    let count = |f: &dyn Fn()| {
        let before = sim.stat("rest_requests");
        f();
        sim.stat("rest_requests") - before
    };
    let new = new_disk("pvc-known", GIB);
    let created = std::cell::RefCell::new(None);
    // PUT and the export PATCH, whose answer is the read-back.
    assert_eq!(
        count(&|| *created.borrow_mut() = Some(client.create_disk_known(&new, None).unwrap())),
        2
    );
    let disk = created.borrow().clone().unwrap();
    assert!(disk.nvme_tcp_export);
    assert_eq!(disk.effective_nqn(), "nqn.2000-02.com.mikrotik:pvc-known");
    // Already there and exported: nothing to send.
    assert_eq!(
        count(&|| assert_eq!(client.create_disk_known(&new, Some(&disk)).unwrap(), disk)),
        0
    );
    // A half-made disk (export off) is finished with one PATCH.
    let (st, half) = sim.request(
        "PATCH",
        &format!("/rest/disk/{}", disk.id),
        Some(&json!({"nvme-tcp-export": "false"})),
    );
    assert_eq!(st, 200, "{half}");
    let half = client.disk("pvc-known").unwrap().unwrap();
    assert!(!half.nvme_tcp_export);
    assert_eq!(
        count(&|| assert!(
            client
                .create_disk_known(&new, Some(&half))
                .unwrap()
                .nvme_tcp_export
        )),
        1
    );
    let disk = client.disk("pvc-known").unwrap().unwrap();
    assert_eq!(
        count(&|| assert_eq!(
            client.grow_disk_known(&disk, 2 * GIB).unwrap().size,
            Some(2 * GIB)
        )),
        1
    );
    let disk = client.disk("pvc-known").unwrap().unwrap();
    assert_eq!(
        count(&|| assert_eq!(client.set_comment_known(&disk, "x").unwrap().comment, "x")),
        1
    );
    let disk = client.disk("pvc-known").unwrap().unwrap();
    // Export off, delete the disk, find the file, delete the file.
    assert_eq!(
        count(&|| assert_eq!(
            client.remove_disk_known(&disk).unwrap(),
            Removed {
                disk: true,
                file: true
            }
        )),
        4
    );
    assert_eq!(client.disk("pvc-known").unwrap(), None);
    assert!(client
        .list_files("storage-pool/csi/pvc-known.img")
        .unwrap()
        .is_empty());
}

// ---- Btrfs subvolumes (issue 13) -------------------------------------------

/// The pool's Btrfs filesystem as the client reads it from the pool entry.
fn btrfs_fs(client: &rds::Client) -> rds::BtrfsFs {
    let pool = client.pool("storage-pool").unwrap();
    assert_eq!(pool.fs_label.as_deref(), Some("storage-pool-fs"), "{pool:?}");
    pool.btrfs().expect("a btrfs pool")
}

#[test]
fn subvolumes_snapshots_and_clones_share_blocks_and_stay_independent() {
    let Some(sim) = common::btrfs::BtrfsSim::start("subvolumes_snapshots_and_clones", SimOptions::default())
    else {
        return;
    };
    let client = sim.client().with_base_path(BASE);
    let fs = btrfs_fs(&client);
    client.make_directory(BASE).unwrap();
    let vol = client.create_subvolume(&fs, "storage-pool/csi/vol-a").unwrap();
    assert_eq!(
        (vol.name.as_str(), vol.parent.as_deref(), vol.read_only),
        ("csi/vol-a", None, false)
    );
    // A second create is the same subvolume.
    assert_eq!(
        client.create_subvolume(&fs, "storage-pool/csi/vol-a").unwrap(),
        vol
    );

    let mut new = new_disk("vol-a", 64 << 20);
    new.file_path = "storage-pool/csi/vol-a/vol-a.img".into();
    client.create_disk(&new).unwrap();
    let image = sim.real("storage-pool/csi/vol-a/vol-a.img");
    let old: Vec<u8> = (0..(8 << 20)).map(|i: u32| (i % 251) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
        f.write_all(&old).unwrap();
        f.sync_all().unwrap();
    }

    let snap = client
        .snapshot_subvolume(&fs, "storage-pool/csi/vol-a", "storage-pool/csi/snap-1", true)
        .unwrap();
    assert_eq!(
        (snap.parent.as_deref(), snap.read_only),
        (Some("csi/vol-a"), true)
    );
    assert_eq!(
        client
            .snapshot_subvolume(&fs, "storage-pool/csi/vol-a", "storage-pool/csi/snap-1", true)
            .unwrap(),
        snap,
        "a second snapshot call is the same snapshot"
    );
    let e = client
        .snapshot_subvolume(&fs, "storage-pool/csi/vol-a", "storage-pool/csi/snap-1", false)
        .unwrap_err();
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");

    // Real copy-on-write: the snapshot is a read-only btrfs subvolume whose
    // image shares all its blocks with the source.
    let snap_dir = sim.real("storage-pool/csi/snap-1");
    let ro = std::process::Command::new("btrfs")
        .args(["property", "get", "-ts"])
        .arg(&snap_dir)
        .arg("ro")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ro.stdout).trim(), "ro=true");
    let (total, exclusive, _) = sim.fs.du(&snap_dir);
    assert!(
        total >= 8 << 20 && exclusive == 0,
        "total {total}, exclusive {exclusive}"
    );

    // Overwriting the source leaves the snapshot as it was.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
        f.write_all(&vec![0xEE; 8 << 20]).unwrap();
        f.sync_all().unwrap();
    }
    let snap_image = sim.real("storage-pool/csi/snap-1/vol-a.img");
    assert_eq!(std::fs::read(&snap_image).unwrap()[..old.len()], old[..]);
    // /file lists the image inside the snapshot.
    let files = client.list_files("storage-pool/csi/snap-1/").unwrap();
    assert!(
        files
            .iter()
            .any(|f| f.name == "storage-pool/csi/snap-1/vol-a.img"),
        "{files:?}"
    );

    // A writable clone of the snapshot: the old data, writable, its own.
    let clone = client
        .snapshot_subvolume(&fs, "storage-pool/csi/snap-1", "storage-pool/csi/vol-b", false)
        .unwrap();
    assert!(!clone.read_only);
    let mut restored = new_disk("vol-b", 64 << 20);
    restored.file_path = "storage-pool/csi/vol-b/vol-a.img".into();
    client.create_disk(&restored).unwrap();
    assert_eq!(
        std::fs::read(sim.real("storage-pool/csi/vol-b/vol-a.img")).unwrap()[..old.len()],
        old[..]
    );

    // A subvolume holding a disk's file cannot go; without the disk it can,
    // once, and its snapshot lives on.
    let e = client
        .remove_subvolume(&fs, "storage-pool/csi/vol-a")
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
    client
        .remove_disk("vol-a", "storage-pool/csi/vol-a/vol-a.img")
        .unwrap();
    assert!(client.remove_subvolume(&fs, "storage-pool/csi/vol-a").unwrap());
    assert!(!client.remove_subvolume(&fs, "storage-pool/csi/vol-a").unwrap());
    assert!(!image.exists());
    assert_eq!(std::fs::read(&snap_image).unwrap()[..old.len()], old[..]);
    let names: Vec<String> = client
        .list_subvolumes(&fs, "storage-pool/csi/")
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["csi/snap-1", "csi/vol-b"]);
    // The snapshot a clone came from can be removed; the clone stays.
    assert!(client.remove_subvolume(&fs, "storage-pool/csi/snap-1").unwrap());
    assert_eq!(
        std::fs::read(sim.real("storage-pool/csi/vol-b/vol-a.img")).unwrap()[..old.len()],
        old[..]
    );
}

#[test]
fn subvolume_errors_are_typed_and_named() {
    let sim = Sim::start();
    let client = sim.client().with_base_path(BASE);
    let fs = btrfs_fs(&client);
    // A missing source.
    let e = client
        .snapshot_subvolume(&fs, "storage-pool/csi/absent", "storage-pool/csi/s", true)
        .unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
    assert!(e.to_string().contains("csi/absent"), "{e}");
    // A plain folder is not a subvolume: rds-sim refuses as RouterOS would.
    client.make_directory("storage-pool/csi/plain").unwrap();
    let (status, body) = sim.request(
        "PUT",
        "/rest/disk/btrfs/subvolume",
        Some(&json!({"fs": "storage-pool-fs", "name": "csi/s", "parent": "csi/plain", "read-only": "true"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("not a subvolume"),
        "{body}"
    );
    // An unknown filesystem label.
    let wrong = rds::BtrfsFs {
        label: "storage-pool".into(),
        mount_point: "storage-pool".into(),
    };
    let e = client.create_subvolume(&wrong, "storage-pool/csi/x").unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidValue, "{e}");
    // Outside the filesystem, and removal outside the base path.
    let e = client.create_subvolume(&fs, "other/x").unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    client.create_subvolume(&fs, "storage-pool/elsewhere").unwrap();
    let e = client
        .remove_subvolume(&fs, "storage-pool/elsewhere")
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    // A read-only snapshot takes no new disk file.
    client.create_subvolume(&fs, "storage-pool/csi/v").unwrap();
    client
        .snapshot_subvolume(&fs, "storage-pool/csi/v", "storage-pool/csi/v-snap", true)
        .unwrap();
    let mut new = new_disk("ro-disk", GIB);
    new.file_path = "storage-pool/csi/v-snap/x.img".into();
    let e = client.create_disk(&new).unwrap_err();
    assert_eq!(e.kind(), Kind::Rejected, "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");
}

#[test]
fn subvolumes_need_routeros_7_18_and_a_btrfs_pool() {
    let sim = Sim::with(SimOptions {
        version: Some("7.17.2 (stable)".into()),
        ..SimOptions::default()
    });
    let client = sim.client();
    let fs = btrfs_fs(&client);
    let e = client.create_subvolume(&fs, "storage-pool/csi/x").unwrap_err();
    assert_eq!(e.kind(), Kind::TooOld, "{e}");
    let text = e.to_string();
    assert!(text.contains("7.18") && text.contains("7.17.2"), "{text}");
    // The emulator lacks the menu there, as RouterOS would.
    let (status, body) = sim.request("GET", "/rest/disk/btrfs/subvolume", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("no such command"),
        "{body}"
    );

    let xfs = Sim::with(SimOptions {
        extra_args: vec!["--pool-fs".into(), "xfs".into()],
        ..SimOptions::default()
    });
    let pool = xfs.client().pool("storage-pool").unwrap();
    assert_eq!(pool.fs.as_deref(), Some("xfs"));
    assert_eq!(pool.btrfs(), None, "an xfs pool has no subvolumes");
    let (status, body) = xfs.request(
        "PUT",
        "/rest/disk/btrfs/subvolume",
        Some(&json!({"fs": "storage-pool-fs", "name": "csi/x"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("value of fs"), "{body}");
}

#[test]
fn a_disk_made_unexported_is_exported_and_unexported_with_read_back_and_keeps_its_allow_list() {
    let sim = Sim::start();
    let c = sim.client();
    let new = new_disk("pvc-fence-1", GIB);
    // Made with port and NQN set but the export off.
    let d = c.create_disk_known_as(&new, None, false).unwrap();
    assert!(!d.nvme_tcp_export);
    assert_eq!(d.nvme_tcp_nqn.as_deref(), new.nqn.as_deref());
    assert!(sim.exports()["exports"].as_array().unwrap().is_empty());
    // A retry of the unexported create makes no request and leaves it off.
    let before = sim.stat("rest_requests");
    let again = c.create_disk_known_as(&new, Some(&d), false).unwrap();
    assert_eq!(sim.stat("rest_requests"), before);
    assert!(!again.nvme_tcp_export);
    let on = c.set_export_known(&d, true).unwrap();
    assert!(on.nvme_tcp_export);
    assert_eq!(sim.exports()["exports"].as_array().unwrap().len(), 1);
    // An unexported create of an exported (published) disk leaves it exported.
    assert!(
        c.create_disk_known_as(&new, Some(&on), false)
            .unwrap()
            .nvme_tcp_export
    );
    let hosts = "nqn.2014-08.org.nvmexpress:uuid:a,nqn.2014-08.org.nvmexpress:uuid:b";
    let allowed = c.set_allowed_hosts_known(&on, hosts).unwrap();
    assert_eq!(allowed.nvme_tcp_allow_host, hosts);
    assert_eq!(
        sim.exports()["exports"][0]["allowed_hosts"],
        json!([
            "nqn.2014-08.org.nvmexpress:uuid:a",
            "nqn.2014-08.org.nvmexpress:uuid:b"
        ])
    );
    let off = c.set_export_known(&allowed, false).unwrap();
    assert!(!off.nvme_tcp_export);
    assert_eq!(off.nvme_tcp_allow_host, hosts);
    assert!(sim.exports()["exports"].as_array().unwrap().is_empty());
    // Already off: no request.
    let before = sim.stat("rest_requests");
    c.set_export_known(&off, false).unwrap();
    assert_eq!(sim.stat("rest_requests"), before);
}
