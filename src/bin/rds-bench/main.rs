//! `rds-bench`: the figures of `scripts/bench.sh`, measured in one run on
//! this machine against the real binaries (`rds-csi`, `rds-sim`,
//! `fake-nvme`, found next to this one). Overheads are ratios of the driver
//! against the same work done directly, measured interleaved, so a busy or
//! slow machine moves both sides alike.
//!
//! Usage: rds-bench [--json FILE] [--dist PATH] [--quick]
//!   --dist   the shipped static binary whose size is reported (default: the
//!            rds-csi next to this program)
//!   --quick  fewer repetitions (for a smoke run)
//!   --cheap-only     only the cheap-call load (see `cheap.rs`); with
//!                    --compare-bin OLD it also measures OLD, interleaved
//!   --wrap 'PROG ARGS'  runs the driver under PROG (e.g. valgrind)
//! Needs root: loop devices, mkfs, mounts.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder, Environment};
use rds_csi::controller::Ownership;
use rds_csi::host::device::Sysfs;
use rds_csi::host::nvme::{connect_args, Target};
use rds_csi::host::Roots;
use rds_csi::proto::csi;
use rds_csi::proto::csi::volume_capability::access_mode::Mode;
use rds_csi::proto::grpc::{ControllerClient, IdentityClient, NodeClient};
use rds_csi::rds::{self, NewDisk};
use rds_csi::volume::{ConnectionConfig, Nqn, VolumeId};
use serde_json::{json, Value};

// The fake fabric's layout, shared with the integration tests.
#[allow(dead_code)]
#[path = "../../../tests/common/fabric_tree.rs"]
mod fabric_tree;
use fabric_tree::FabricTree;

mod cheap;
mod controller;
mod node;
mod procs;
mod startup;

use controller::*;
use node::*;
use procs::*;
use startup::*;

const GIB: u64 = 1 << 30;
const PREFIX: &str = "nqn.2000-02.com.mikrotik";
/// RouterOS answers a REST request in several milliseconds on real
/// hardware; the emulator is told to take this long per request so the
/// controller figures compare like with like (lower makes them stricter).
const SIM_LATENCY_MS: u64 = 2;

type Res<T> = Result<T, String>;
/// One create+delete pair, by the driver or directly.
type PairOp = Arc<dyn Fn(&str) -> Res<()> + Send + Sync>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rds-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    json: Option<PathBuf>,
    dist: Option<PathBuf>,
    quick: bool,
    /// Only the cheap-call load (see `cheap`).
    cheap_only: bool,
    cheap: cheap::CheapOpts,
}

fn parse_args() -> Res<Opts> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut o = Opts {
        json: None,
        dist: None,
        quick: false,
        cheap_only: false,
        cheap: cheap::CheapOpts {
            compare: None,
            wrap: Vec::new(),
            clients: 64,
            seconds: 4.0,
            rounds: 3,
            sequential: 300,
        },
    };
    let number = |p: &mut lexopt::Parser| -> Res<f64> {
        let v = p.value().map_err(|e| e.to_string())?;
        v.to_str()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .ok_or_else(|| format!("{v:?} is not a positive number"))
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("json") => o.json = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("dist") => o.dist = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("quick") => o.quick = true,
            Long("cheap-only") => o.cheap_only = true,
            Long("compare-bin") => o.cheap.compare = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("wrap") => {
                let v = p.value().map_err(|e| e.to_string())?;
                let v = v.to_str().ok_or("--wrap is not UTF-8")?;
                o.cheap.wrap = v.split_whitespace().map(str::to_string).collect();
            }
            Long("seconds") => o.cheap.seconds = number(&mut p)?,
            Long("rounds") => o.cheap.rounds = number(&mut p)? as usize,
            Long("clients") => o.cheap.clients = number(&mut p)? as usize,
            Long("sequential") => o.cheap.sequential = number(&mut p)? as usize,
            Long("help") => {
                println!(
                    "usage: rds-bench [--json FILE] [--dist PATH] [--quick] [--cheap-only]\n                 \
                     [--compare-bin OLD-RDS-CSI] [--wrap 'PROGRAM ARGS'] [--seconds S]\n                 \
                     [--rounds N] [--clients N] [--sequential N]"
                );
                std::process::exit(0);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if o.quick {
        o.cheap.seconds = o.cheap.seconds.min(1.0);
        o.cheap.rounds = 1;
        o.cheap.sequential = o.cheap.sequential.min(50);
    }
    Ok(o)
}

/// One figure of the table.
struct Figure {
    key: &'static str,
    label: &'static str,
    value: f64,
    shown: String,
    target: &'static str,
    met: bool,
    detail: Value,
}

fn run() -> Res<()> {
    let opts = parse_args()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("run as root: the node figures use loop devices, mkfs and mounts".into());
    }
    let bins = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("no directory of this program")?
        .to_path_buf();
    let work = Work::new()?;
    let grpc = Arc::new(EnvBuilder::new().cq_count(2).build());
    let mut figures = Vec::new();

    if opts.cheap_only {
        eprintln!("rds-bench: cheap calls under load ...");
        figures.extend(cheap::cheap_load(&bins, &work, &grpc, &opts.cheap)?);
        return report(&opts, &figures);
    }
    let dist = opts.dist.clone().unwrap_or_else(|| bins.join("rds-csi"));
    let bytes = fs::metadata(&dist)
        .map_err(|e| format!("{}: {e}", dist.display()))?
        .len();
    figures.push(Figure {
        key: "binary_bytes",
        label: "binary size (static, stripped)",
        value: bytes as f64,
        shown: format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64),
        target: "≤ 8 MiB",
        met: bytes <= 8 << 20,
        detail: json!({ "path": dist.display().to_string() }),
    });

    eprintln!("rds-bench: controller overhead ...");
    figures.extend(controller_overhead(&bins, &work, &grpc, opts.quick)?);
    eprintln!("rds-bench: REST requests per CSI operation ...");
    figures.push(request_counts(&bins, &work, &grpc)?);
    eprintln!("rds-bench: node overhead, device wait, memory ...");
    figures.extend(node_figures(&bins, &work, &grpc, opts.quick)?);
    eprintln!("rds-bench: start-up ...");
    figures.push(startup(&bins, &work, &grpc, opts.quick)?);
    eprintln!("rds-bench: orphan scan ...");
    figures.push(orphan_scan(&bins, &work)?);
    eprintln!("rds-bench: cheap calls under load ...");
    figures.extend(cheap::cheap_load(&bins, &work, &grpc, &opts.cheap)?);
    report(&opts, &figures)
}

/// Prints the table and writes the JSON file.
fn report(opts: &Opts, figures: &[Figure]) -> Res<()> {
    let machine = machine();
    let date = today();
    println!("rds-csi benchmark, {date}, {machine}");
    println!("(RDS emulated by rds-sim answering each REST request after {SIM_LATENCY_MS} ms; NVMe/TCP by fake-nvme over loop devices)\n");
    println!("{:<46} {:>22}  {:<10} met", "figure", "value", "target");
    for f in figures {
        println!(
            "{:<46} {:>22}  {:<10} {}",
            f.label,
            f.shown,
            f.target,
            if f.met { "yes" } else { "NO" }
        );
    }
    if let Some(f) = figures.iter().find(|f| f.key == "rest_requests_per_rpc") {
        println!("\nREST requests per CSI operation:");
        if let Value::Object(counts) = &f.detail {
            for (rpc, n) in counts {
                println!("  {rpc:<30} {n}");
            }
        }
    }
    if let Some(path) = &opts.json {
        let mut out = serde_json::Map::new();
        for f in figures {
            out.insert(f.key.into(), json!(f.value));
        }
        out.insert("date".into(), json!(date));
        out.insert("machine".into(), json!(machine));
        out.insert("sim_latency_ms".into(), json!(SIM_LATENCY_MS));
        out.insert(
            "targets".into(),
            Value::Object(
                figures
                    .iter()
                    .map(|f| (f.key.to_string(), json!(f.target)))
                    .collect(),
            ),
        );
        out.insert(
            "met".into(),
            Value::Object(
                figures
                    .iter()
                    .map(|f| (f.key.to_string(), json!(f.met)))
                    .collect(),
            ),
        );
        out.insert(
            "details".into(),
            Value::Object(
                figures
                    .iter()
                    .map(|f| (f.key.to_string(), f.detail.clone()))
                    .collect(),
            ),
        );
        fs::write(
            path,
            serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default(),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("\nwritten to {}", path.display());
    }
    Ok(())
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_kib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {} GiB, Linux {}",
        mem_kib / (1 << 20),
        kernel.trim()
    )
}

fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Civil from days (the inverse of `log_time_ms`'s conversion).
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_and_dates() {
        let t = log_time_ms("[2026-11-22T08:10:05.123Z INFO  rds_csi::nvme] connected x").unwrap();
        assert_eq!(t, 1_795_335_005_123.0);
        assert_eq!(log_time_ms("no timestamp"), None);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
    }
}
