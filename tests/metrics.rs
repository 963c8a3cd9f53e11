//! `/metrics` of the real driver, parsed by Prometheus's own Python parser
//! (prometheus_client, installed by scripts/setup.sh), checked to move
//! after calls.

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
fn metrics_url(env: &ControllerEnv) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let log = env.driver.log_text();
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
    let url = metrics_url(&env);
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
    // A disk create is several REST requests (look, add, export, read back).
    let key = "rds_csi_rds_requests_total{operation=create_disk,outcome=ok}";
    assert!(after.get(key) - before.get(key) >= 2.0, "{key}");
    moved("rds_csi_rds_retries_total{operation=read_disk}", 1.0);
    assert!(after.get("rds_csi_rpc_duration_seconds_sum{code=OK,method=CreateVolume}") > 0.0);
    assert_eq!(after.get("rds_csi_rpc_in_flight{}"), 0.0);
}

#[test]
fn other_paths_are_not_found_and_the_flag_is_checked() {
    let env = ControllerEnv::start(&["--metrics-address", "127.0.0.1:0"]);
    let url = metrics_url(&env);
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
