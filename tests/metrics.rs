//! `/metrics` of the real driver, parsed by Prometheus's own Python parser
//! (prometheus_client, installed by scripts/setup.sh), checked to move
//! after calls.

// Test helpers may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::csi::{create_request, ControllerEnv, GIB};
use serde_json::{json, Value};

fn python() -> PathBuf {
    let tools = std::env::var_os("RDS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools"));
    let py = tools.join("venv/bin/python3");
    assert!(py.exists(), "{} missing: run scripts/setup.sh", py.display());
    py
}

/// The metrics port, from the driver's log line.
fn metrics_url(driver: &common::driver::Driver) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let log = driver.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("serving metrics on ")) {
            let url = line.split("serving metrics on ").nth(1).unwrap().trim();
            return url.to_string();
        }
        assert!(Instant::now() < end, "no metrics line in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Scrape {
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }
}

fn scrape(url: &str) -> Scrape {
    let resp = ureq::get(url).call().expect("scrape /metrics");
    assert!(
        resp.content_type().starts_with("text/plain"),
        "{}",
        resp.content_type()
    );
    let text = resp.into_string().unwrap();
    let mut child = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/parse_metrics.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the prometheus parser");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Scrape {
        samples: v["samples"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
            .collect(),
        types: v["types"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect(),
    }
}

#[test]
fn metrics_parse_and_move_after_calls() {
    let env = ControllerEnv::start(&["--metrics-address", "127.0.0.1:0"]);
    let url = metrics_url(&env.driver);
    let before = scrape(&url);
    assert_eq!(before.types["rds_csi_rpc_requests"], "counter");
    assert_eq!(before.types["rds_csi_rpc_duration_seconds"], "histogram");
    assert_eq!(before.types["rds_csi_rds_requests"], "counter");
    let version = format!("rds_csi_build_info{{version={}}}", rds_csi::version());
    assert_eq!(
        before.get(&version),
        1.0,
        "{:?}",
        before.samples.keys().collect::<Vec<_>>()
    );

    let created = env.create(&create_request("vol-metrics", GIB, &[])).unwrap();
    // One transient failure: retried by the client, counted.
    env.sim.fault(json!({"fail_next": 1, "fail_kind": "5xx"}));
    env.delete(&created.volume.volume_id).unwrap();
    let bad = env.create(&create_request("vol-metrics-bad", GIB, &[("nvmePort", "0")]));
    assert!(bad.is_err());

    let after = scrape(&url);
    let moved = |key: &str, by: f64| {
        let (b, a) = (before.get(key), after.get(key));
        assert_eq!(a - b, by, "{key}: {b} -> {a}");
    };
    moved("rds_csi_rpc_requests_total{code=OK,method=CreateVolume}", 1.0);
    moved("rds_csi_rpc_requests_total{code=OK,method=DeleteVolume}", 1.0);
    moved(
        "rds_csi_rpc_requests_total{code=INVALID_ARGUMENT,method=CreateVolume}",
        1.0,
    );
    moved(
        "rds_csi_rpc_duration_seconds_count{code=OK,method=CreateVolume}",
        1.0,
    );
    // A disk create is a PUT (create_disk) and the export PATCH (export_disk).
    let key = "rds_csi_rds_requests_total{operation=create_disk,outcome=ok}";
    assert!(after.get(key) - before.get(key) >= 1.0, "{key}");
    let key = "rds_csi_rds_requests_total{operation=export_disk,outcome=ok}";
    assert!(after.get(key) - before.get(key) >= 1.0, "{key}");
    moved("rds_csi_rds_retries_total{operation=read_disk}", 1.0);
    assert!(after.get("rds_csi_rpc_duration_seconds_sum{code=OK,method=CreateVolume}") > 0.0);
    // A worker lets go of its call a moment after the client has the reply.
    let end = Instant::now() + Duration::from_secs(5);
    while scrape(&url).get("rds_csi_rpc_in_flight{}") != 0.0 {
        assert!(Instant::now() < end, "calls still in flight");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn other_paths_are_not_found_and_the_flag_is_checked() {
    let env = ControllerEnv::start(&["--metrics-address", "127.0.0.1:0"]);
    let url = metrics_url(&env.driver);
    let other = url.replace("/metrics", "/other");
    match ureq::get(&other).call() {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    let (code, _, err) = common::driver::run_cli(
        &[
            "serve",
            "--node",
            "--node-id",
            "n",
            "--metrics-address",
            "nine-thousand",
            "--check-config",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--metrics-address"), "{err}");
}

#[test]
fn node_metrics_follow_connects_stages_and_orphans() {
    use common::csi::capability;
    use common::driver::opt;
    use common::fabric::{context, create_volume, stage_request, unstage_request, Fabric};
    let sim = common::Sim::start();
    let fabric = Fabric::new(&sim, true);
    // An orphan: connected before the node plugin starts, used by nothing.
    let orphan = create_volume(&sim, "orphan", 1 << 30);
    fabric.connect(&orphan.nqn);
    let driver = fabric.start_driver(&["--metrics-address", "127.0.0.1:0"]);
    let url = metrics_url(&driver);
    let before = scrape(&url);
    assert_eq!(before.get("rds_csi_orphans_cleaned_total{}"), 1.0);
    assert_eq!(before.get("rds_csi_volumes_staged{}"), 0.0);

    let vol = create_volume(&sim, "metrics", 1 << 30);
    let staging = fabric.path("staging-metrics");
    std::fs::create_dir_all(&staging).unwrap();
    driver
        .node()
        .node_stage_volume(
            &stage_request(&vol, &staging, capability(false, "ext4"), context(&vol, &[])),
            opt(60),
        )
        .unwrap();
    let staged = scrape(&url);
    assert_eq!(staged.get("rds_csi_nvme_connects_total{outcome=connected}"), 1.0);
    assert_eq!(staged.get("rds_csi_nvme_connect_duration_seconds_count{}"), 1.0);
    assert_eq!(staged.get("rds_csi_volumes_staged{}"), 1.0);
    assert_eq!(staged.get("rds_csi_volumes_abnormal{}"), 0.0);

    // The RDS goes away: the kernel would be reconnecting.
    fabric.fault(&["state", &vol.nqn, "connecting"]);
    assert_eq!(scrape(&url).get("rds_csi_volumes_abnormal{}"), 1.0);
    fabric.fault(&["state", &vol.nqn, "live"]);

    driver
        .node()
        .node_unstage_volume(&unstage_request(&vol, &staging), opt(60))
        .unwrap();
    let after = scrape(&url);
    assert_eq!(
        after.get("rds_csi_nvme_disconnects_total{outcome=ok}")
            - staged.get("rds_csi_nvme_disconnects_total{outcome=ok}"),
        1.0
    );
    assert_eq!(after.get("rds_csi_volumes_staged{}"), 0.0);
}

/// Reads from `conn` without blocking long: `Some(true)` when the peer
/// closed it, `Some(false)` while it stays open and silent.
fn closed_by_peer(conn: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    conn.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match conn.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    conn.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn an_idle_or_dripping_connection_never_delays_a_scrape() {
    use std::net::TcpStream;
    let driver =
        common::driver::Driver::start(&["--node", "--node-id", "n1", "--metrics-address", "127.0.0.1:0"]);
    let url = metrics_url(&driver);
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    // One connection that says nothing, one that drips a request head a
    // byte at a time, slower than any deadline allows.
    let mut idle = TcpStream::connect(&addr).unwrap();
    let mut drip = TcpStream::connect(&addr).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dripper = {
        let stop = std::sync::Arc::clone(&stop);
        let mut drip = drip.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"GET /metrics HTTP/1.1\r\n".iter() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) || drip.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };
    // Both connections are in the listen queue before the scrape's, so a
    // server taking one connection at a time would serve them first.
    let resp = ureq::get(&url)
        .timeout(Duration::from_secs(30))
        .call()
        .expect("scrape /metrics");
    assert_eq!(resp.status(), 200);
    let body = resp.into_string().unwrap();
    // The scrape was answered while the idle connection was still open:
    // the server did not wait for it to time out first.
    let idle_closed = closed_by_peer(&mut idle);
    assert!(body.contains("rds_csi_build_info"), "{body}");
    assert!(
        !idle_closed,
        "the scrape was answered only after the idle connection was given up"
    );
    // And the idle and dripping connections are closed by the server's
    // deadline, not kept for ever.
    let end = Instant::now() + Duration::from_secs(30);
    while !(closed_by_peer(&mut idle) && closed_by_peer(&mut drip)) {
        assert!(Instant::now() < end, "slow connections were never closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    dripper.join().unwrap();
}
