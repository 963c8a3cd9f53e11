//! The benchmark runs end to end and reports every figure (values and
//! targets are not asserted here: figures are judged from scripts/bench.sh
//! on a quiet machine, never from a timed test).

mod common;

use std::process::Command;

#[test]
fn the_benchmark_reports_every_figure() {
    let dir = common::TempDir::new("bench");
    let json = dir.join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rds-bench"))
        .arg("--quick")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run rds-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in [
        "controller_overhead_c1",
        "controller_overhead_c32",
        "node_overhead",
        "device_wait_ms",
        "rss_idle_kib",
        "rss_peak_kib",
        "binary_bytes",
        "startup_ms",
        "orphan_scan_ms",
        "cheap_cpu_us_per_call",
        "cheap_calls_per_s",
        "cheap_p99_us",
        "probe_p50_us",
        "cheap_peak_rss_kib",
    ] {
        let value = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(value > 0.0, "{key} = {value}");
        assert!(
            v["targets"][key].is_string() && v["met"][key].is_boolean(),
            "{key}: {v}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(v["targets"][key].as_str().unwrap())),
            "{stdout}"
        );
    }
}
