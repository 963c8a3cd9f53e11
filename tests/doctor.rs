//! `rds-csi doctor` against the emulator and a fake node: healthy, then one
//! fault at a time, each reported with ✘ and what to do, exit code 1.

mod common;

use common::csi::controller_args;
use common::driver::run_cli;
use common::fabric::Fabric;
use common::{Sim, SimOptions, TempDir};

/// `rds-csi doctor <controller flags for sim> <extra>`; returns (code, stdout).
fn doctor(sim: &Sim, extra: &[&str]) -> (i32, String) {
    let mut args: Vec<String> = vec!["doctor".into()];
    // The controller's serve flags minus those doctor does not take.
    let serve_only = ["--rds-retry-for", "--rds-check-interval"];
    let mut it = controller_args(sim, &[]).into_iter();
    while let Some(a) = it.next() {
        if serve_only.contains(&a.as_str()) {
            it.next();
        } else {
            args.push(a);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run_cli(&argv, &[("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")]);
    assert!(!err.contains("password"), "{err}");
    (code, out)
}

fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!(" {check}:")))
        .unwrap_or_else(|| panic!("no line for {check}:\n{out}"))
}

#[test]
fn a_healthy_rds_passes_every_check() {
    let sim = Sim::start();
    let (code, out) = doctor(&sim, &[]);
    assert_eq!(code, 0, "{out}");
    for check in [
        "RDS reachable",
        "TLS trusted",
        "credentials accepted",
        "RouterOS version",
        "pool",
        "snapshots",
        "REST write access",
        "fencing",
    ] {
        assert!(line(&out, check).starts_with('✔'), "{out}");
    }
    assert!(line(&out, "RouterOS version").contains("7.24.4"), "{out}");
    // rds-sim's pool is Btrfs by default: snapshots and clones are offered.
    let snapshots = line(&out, "snapshots");
    assert!(snapshots.contains("offered: pool storage-pool is btrfs"), "{out}");
    // Eight checks: the fencing mode and the snapshot offer joined the six.
    assert!(out.contains("all 8 checks passed"), "{out}");
    assert!(line(&out, "fencing").contains("export on publish"), "{out}");
    let (code, out) = doctor(&sim, &["--nvme-host-acl"]);
    assert_eq!(code, 0, "{out}");
    assert!(line(&out, "fencing").contains("host ACLs"), "{out}");
    let (code, out) = doctor(&sim, &["--export-always"]);
    assert_eq!(code, 0, "{out}");
    assert!(line(&out, "fencing").contains("export always"), "{out}");
    // The folder for volumes now exists on the RDS.
    let (_, files) = sim.request("GET", "/rest/file", None);
    assert!(files.to_string().contains("storage-pool/csi"), "{files}");
}

#[test]
fn an_unreachable_rds_is_reported_and_later_checks_skipped() {
    let mut sim = Sim::start();
    let url = sim.url.clone();
    sim.kill();
    let (code, out) = doctor(&sim, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "RDS reachable").starts_with('✘'), "{out}");
    assert!(out.contains("www-ssl"), "{out}");
    assert!(line(&out, "pool").starts_with("- "), "{out}");
    assert!(line(&out, "snapshots").starts_with("- "), "{out}");
    assert!(out.contains(url.trim_start_matches("https://")), "{out}");
}

#[test]
fn an_untrusted_certificate_shows_its_fingerprint() {
    let sim = Sim::start();
    let wrong = format!("sha256:{}", "00".repeat(32));
    let (code, out) = doctor(&sim, &["--rds-tls-fingerprint", &wrong]);
    assert_eq!(code, 1, "{out}");
    let tls = line(&out, "TLS trusted");
    assert!(tls.starts_with('✘'), "{out}");
    // The real fingerprint, to compare and pin.
    assert!(out.contains(sim.fingerprint.as_deref().unwrap()), "{out}");
    assert!(out.contains("--rds-tls-fingerprint"), "{out}");
}

#[test]
fn wrong_credentials_are_reported_without_the_password() {
    let sim = Sim::start();
    let dir = TempDir::new("doctor-creds");
    let (user, pass) = common::write_credentials(&dir.path, "admin", "hunter2-wrong");
    let (code, out) = doctor(
        &sim,
        &[
            "--rds-username-file",
            user.to_str().unwrap(),
            "--rds-password-file",
            pass.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "credentials accepted").starts_with('✘'), "{out}");
    assert!(out.contains("read,write,test,api,rest-api"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
}

#[test]
fn an_old_routeros_and_a_missing_pool_are_reported() {
    let sim = Sim::with(SimOptions {
        version: Some("7.20.2 (stable)".into()),
        ..Default::default()
    });
    let (code, out) = doctor(&sim, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "RouterOS version").starts_with('✘'), "{out}");
    assert!(line(&out, "RouterOS version").contains("7.20.2"), "{out}");

    let sim = Sim::start();
    let (code, out) = doctor(&sim, &["--rds-pool", "no-such-pool"]);
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "pool").starts_with('✘'), "{out}");
    assert!(line(&out, "snapshots").starts_with("- "), "{out}");
    assert!(out.contains("--rds-pool"), "{out}");
}

#[test]
fn an_xfs_pool_says_snapshots_are_not_offered_and_why() {
    let sim = Sim::with(SimOptions {
        extra_args: vec!["--pool-fs".into(), "xfs".into()],
        ..SimOptions::default()
    });
    let (code, out) = doctor(&sim, &[]);
    assert_eq!(code, 0, "not offered is no fault: {out}");
    let snapshots = line(&out, "snapshots");
    assert!(snapshots.starts_with('✔'), "{out}");
    assert!(
        snapshots.contains("not offered") && snapshots.contains("is xfs") && snapshots.contains("Btrfs pool"),
        "{out}"
    );
    assert!(line(&out, "pool").contains("(xfs)"), "{out}");
}

#[test]
fn a_full_pool_is_reported() {
    let sim = Sim::with(SimOptions {
        pool_size: 3 << 30,
        ..Default::default()
    });
    let (code, out) = doctor(&sim, &["--capacity-reserve", "2Gi"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "pool").starts_with('✘') && line(&out, "pool").contains("free"),
        "{out}"
    );
}

#[test]
fn node_checks_on_a_prepared_and_an_unprepared_node() {
    let sim = Sim::start();
    let fabric = Fabric::new(&sim, true);
    // The node plugin's own flags on the fabric (kubelet's directory is the
    // fabric's, which exists and is writable).
    let mut args: Vec<String> = vec!["doctor".into()];
    args.extend(fabric.driver_args());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run_cli(&argv, &[]);
    assert_eq!(code, 0, "{out}{err}");
    for check in [
        "nvme_tcp module",
        "nvme tool",
        "host NQN",
        "filesystem tools",
        "kubelet dir",
    ] {
        assert!(line(&out, check).starts_with('✔'), "{out}");
    }
    assert!(line(&out, "host NQN").contains(&fabric.host_nqn), "{out}");

    // An empty node: no module, no host NQN, a kubelet dir that is not there.
    let bare = TempDir::new("bare-node");
    std::fs::create_dir_all(bare.join("sys")).unwrap();
    std::fs::create_dir_all(bare.join("etc")).unwrap();
    let (code, out, _) = run_cli(
        &[
            "doctor",
            "--node",
            "--sys-root",
            bare.join("sys").to_str().unwrap(),
            "--etc-root",
            bare.join("etc").to_str().unwrap(),
            "--nvme-bin",
            "/nonexistent/nvme",
            "--kubelet-dir",
            bare.join("no-kubelet").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    for check in ["nvme_tcp module", "nvme tool", "host NQN", "kubelet dir"] {
        assert!(line(&out, check).starts_with('✘'), "{check}: {out}");
    }
    assert!(
        out.contains("modprobe nvme_tcp") && out.contains("nvme gen-hostnqn"),
        "{out}"
    );
}

#[test]
fn nothing_to_check_is_a_usage_error() {
    let (code, _, err) = run_cli(&["doctor"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--controller") && err.contains("--node"), "{err}");
}
