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
#[path = "../../tests/common/fabric_tree.rs"]
mod fabric_tree;
use fabric_tree::FabricTree;

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
}

fn parse_args() -> Res<Opts> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut o = Opts {
        json: None,
        dist: None,
        quick: false,
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("json") => o.json = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("dist") => o.dist = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("quick") => o.quick = true,
            Long("help") => {
                println!("usage: rds-bench [--json FILE] [--dist PATH] [--quick]");
                std::process::exit(0);
            }
            other => return Err(other.unexpected().to_string()),
        }
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

    let machine = machine();
    let date = today();
    println!("rds-csi benchmark, {date}, {machine}");
    println!("(RDS emulated by rds-sim answering each REST request after {SIM_LATENCY_MS} ms; NVMe/TCP by fake-nvme over loop devices)\n");
    println!("{:<46} {:>22}  {:<10} met", "figure", "value", "target");
    for f in &figures {
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
        for f in &figures {
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

// ---------------------------------------------------------------------------
// Processes and places
// ---------------------------------------------------------------------------

/// A scratch directory, removed on drop after unmounting anything left
/// there and detaching the fabrics' loop devices (also after a failure).
struct Work {
    dir: PathBuf,
    fabrics: std::sync::Mutex<Vec<PathBuf>>,
}

impl Work {
    fn new() -> Res<Work> {
        let dir = std::env::temp_dir().join(format!("rds-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        Ok(Work {
            dir,
            fabrics: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Remembers a fabric's `nvme` so its connections are dropped at the end.
    fn track_fabric(&self, nvme: &Path) {
        if let Ok(mut f) = self.fabrics.lock() {
            f.push(nvme.to_path_buf());
        }
    }

    fn sub(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        let _ = fs::create_dir_all(&p);
        p
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        // Deepest mounts first.
        if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(self.dir.to_str().unwrap_or("/nonexistent")))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").arg(p).status();
            }
        }
        for nvme in self.fabrics.lock().map(|f| f.clone()).unwrap_or_default() {
            let _ = Command::new(nvme).arg("disconnect-all").output();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Sim {
    _proc: Proc,
    url: String,
    fingerprint: String,
    data: PathBuf,
    user: PathBuf,
    pass: PathBuf,
}

fn start_sim(bins: &Path, dir: &Path, latency_ms: u64) -> Res<Sim> {
    start_sim_with(bins, dir, latency_ms, true)
}

/// `tls: false` serves plain HTTP, so the bench can read `/sim/stats` itself.
fn start_sim_with(bins: &Path, dir: &Path, latency_ms: u64, tls: bool) -> Res<Sim> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let data = dir.join("data");
    let (user, pass) = (dir.join("username"), dir.join("password"));
    fs::write(&user, "admin\n").map_err(|e| e.to_string())?;
    fs::write(&pass, "bench-password\n").map_err(|e| e.to_string())?;
    let log = dir.join("sim.log");
    let mut child = Command::new(bins.join("rds-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--pool-size",
            "4T",
            "--username",
            "admin",
            if tls { "--self-signed" } else { "--plain-http" },
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--password-file")
        .arg(&pass)
        .args(["--latency-ms", &latency_ms.to_string()])
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("start rds-sim: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (mut url, mut fingerprint) = (String::new(), String::new());
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(fp) = line.strip_prefix("fingerprint ") {
            fingerprint = fp.trim().to_string();
        }
        if let Some(u) = line.strip_prefix("listening ") {
            url = u.trim().to_string();
            break;
        }
    }
    if url.is_empty() {
        return Err(format!(
            "rds-sim did not start: {}",
            fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    Ok(Sim {
        _proc: Proc { child, log },
        url,
        fingerprint,
        data,
        user,
        pass,
    })
}

fn sim_client(sim: &Sim) -> Res<rds::Client> {
    let mut cfg = rds::ClientConfig::new(sim.url.clone(), &sim.user, &sim.pass);
    cfg.trust = rds::Trust::Fingerprint(rds::parse_fingerprint(&sim.fingerprint).map_err(|e| e.to_string())?);
    // Deletes only under the controller's default base path, as the driver.
    Ok(rds::Client::new(cfg)
        .map_err(|e| e.to_string())?
        .with_base_path("storage-pool/csi"))
}

fn controller_args(sim: &Sim) -> Vec<String> {
    [
        "--controller",
        "--rds-address",
        &sim.url,
        "--rds-tls-fingerprint",
        &sim.fingerprint,
        "--rds-username-file",
        sim.user.to_str().unwrap_or_default(),
        "--rds-password-file",
        sim.pass.to_str().unwrap_or_default(),
        "--nvme-address",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts `rds-csi serve <args>` on `<dir>/csi.sock`; waits until it answers.
fn start_driver(bins: &Path, dir: &Path, args: &[String]) -> Res<(Proc, PathBuf)> {
    let socket = dir.join("csi.sock");
    let _ = fs::remove_file(&socket);
    let log = dir.join("driver.log");
    let child = Command::new(bins.join("rds-csi"))
        .arg("serve")
        .arg("--endpoint")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("start rds-csi: {e}"))?;
    let proc = Proc { child, log };
    let end = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&socket).is_err() {
        if Instant::now() > end {
            return Err(format!("rds-csi did not listen: {}", proc.log_text()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((proc, socket))
}

fn channel(grpc: &Arc<Environment>, socket: &Path) -> grpcio::Channel {
    ChannelBuilder::new(Arc::clone(grpc)).connect(&format!("unix:{}", socket.display()))
}

fn opt() -> CallOption {
    CallOption::default().timeout(Duration::from_secs(120))
}

fn mount_cap() -> csi::VolumeCapability {
    let mut m = csi::volume_capability::MountVolume::new();
    m.fs_type = "ext4".into();
    let mut cap = csi::VolumeCapability::new();
    cap.set_mount(m);
    let mut am = csi::volume_capability::AccessMode::new();
    am.mode = Mode::SINGLE_NODE_WRITER.into();
    cap.access_mode = Some(am).into();
    cap
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

// ---------------------------------------------------------------------------
// Controller overhead
// ---------------------------------------------------------------------------

/// One CreateVolume + DeleteVolume through the driver.
fn driver_pair(c: &ControllerClient, name: &str) -> Res<()> {
    let mut req = csi::CreateVolumeRequest::new();
    req.name = name.to_string();
    let mut range = csi::CapacityRange::new();
    range.required_bytes = GIB as i64;
    req.capacity_range = Some(range).into();
    req.volume_capabilities = vec![mount_cap()];
    let v = c
        .create_volume(&req, opt())
        .map_err(|e| format!("CreateVolume {name}: {e}"))?;
    let mut del = csi::DeleteVolumeRequest::new();
    del.volume_id = v.volume.volume_id.clone();
    c.delete_volume(&del, opt())
        .map_err(|e| format!("DeleteVolume {name}: {e}"))?;
    Ok(())
}

/// The REST requests the controller makes for the same pair, issued
/// directly with the same client library and settings: look up the slot,
/// read the pool, create and export the disk; look it up, remove it.
fn direct_pair(client: &rds::Client, name: &str) -> Res<()> {
    let id = VolumeId::for_name(name);
    let slot = id.slot();
    let file_path = format!("storage-pool/csi/{slot}.img");
    let e = |what: &str, err: rds::Error| format!("{what} {slot}: {err}");
    let found = client.disk(slot).map_err(|x| e("look up", x))?;
    client.pool("storage-pool").map_err(|x| e("pool", x))?;
    let own = Ownership {
        name: name.to_string(),
        params_digest: "000000000000".into(),
        ..Default::default()
    };
    let new = NewDisk {
        slot: slot.to_string(),
        file_path,
        size_bytes: GIB,
        comment: own.to_comment(),
        nqn: Some(format!("{PREFIX}:{slot}")),
        port: 4420,
    };
    client
        .create_disk_known(&new, found.as_ref())
        .map_err(|x| e("create", x))?;
    let disk = client
        .disk(slot)
        .map_err(|x| e("look up", x))?
        .ok_or_else(|| format!("{slot}: gone after create"))?;
    client.remove_disk_known(&disk).map_err(|x| e("remove", x))?;
    Ok(())
}

/// REST requests each controller RPC makes, counted by rds-sim
/// (`rest_requests` of `/sim/stats`) around one call of each, after a
/// warm-up (cached RouterOS version, the volume folder made) and with the
/// background health check held off so only the RPC is counted.
fn request_counts(bins: &Path, work: &Work, grpc: &Arc<Environment>) -> Res<Figure> {
    let dir = work.sub("requests");
    let sim = start_sim_with(bins, &dir.join("sim"), 0, false)?;
    let args: Vec<String> = [
        "--controller",
        "--rds-address",
        &sim.url,
        "--rds-username-file",
        sim.user.to_str().unwrap_or_default(),
        "--rds-password-file",
        sim.pass.to_str().unwrap_or_default(),
        "--nvme-address",
        "127.0.0.1",
        "--rds-check-interval",
        "3600",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (driver, socket) = start_driver(bins, &dir, &args)?;
    let identity = IdentityClient::new(channel(grpc, &socket));
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = identity
            .probe(&csi::ProbeRequest::new(), opt())
            .map_err(|e| e.to_string())?
            .ready
            .value;
        if ready {
            break;
        }
        if Instant::now() > end {
            return Err(format!(
                "the controller never became ready: {}",
                driver.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let password = fs::read_to_string(&sim.pass).map_err(|e| e.to_string())?;
    let auth = {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("admin:{}", password.trim_end_matches('\n')));
        format!("Basic {token}")
    };
    let stats_url = format!("{}/sim/stats", sim.url);
    let rest_requests = || -> Res<u64> {
        let text = ureq::get(&stats_url)
            .set("Authorization", &auth)
            .call()
            .map_err(|e| format!("GET /sim/stats: {e}"))?
            .into_string()
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        v["rest_requests"]
            .as_u64()
            .ok_or_else(|| format!("/sim/stats has no rest_requests: {text}"))
    };
    let ctl = ControllerClient::new(channel(grpc, &socket));
    driver_pair(&ctl, "bench-requests-warm")?;

    let mut create = csi::CreateVolumeRequest::new();
    create.name = "bench-requests".into();
    create.volume_capabilities = vec![mount_cap()];
    let mut counts: Vec<(&str, u64)> = Vec::new();
    let mut count = |rpc: &'static str, f: &dyn Fn() -> Res<()>| -> Res<()> {
        let before = rest_requests()?;
        f()?;
        counts.push((rpc, rest_requests()? - before));
        Ok(())
    };
    let id = std::cell::RefCell::new(String::new());
    let rpc_err = |rpc: &'static str| move |e: grpcio::Error| format!("{rpc}: {e}");
    count("CreateVolume", &|| {
        *id.borrow_mut() = ctl
            .create_volume(&create, opt())
            .map_err(rpc_err("CreateVolume"))?
            .volume
            .volume_id
            .clone();
        Ok(())
    })?;
    let id = id.into_inner();
    count("CreateVolume (again)", &|| {
        ctl.create_volume(&create, opt())
            .map(|_| ())
            .map_err(rpc_err("CreateVolume"))
    })?;
    count("ControllerPublishVolume", &|| {
        let mut r = csi::ControllerPublishVolumeRequest::new();
        r.volume_id = id.clone();
        r.node_id = "node-a".into();
        r.volume_capability = Some(mount_cap()).into();
        ctl.controller_publish_volume(&r, opt())
            .map(|_| ())
            .map_err(rpc_err("ControllerPublishVolume"))
    })?;
    count("ControllerUnpublishVolume", &|| {
        let mut r = csi::ControllerUnpublishVolumeRequest::new();
        r.volume_id = id.clone();
        r.node_id = "node-a".into();
        ctl.controller_unpublish_volume(&r, opt())
            .map(|_| ())
            .map_err(rpc_err("ControllerUnpublishVolume"))
    })?;
    count("ControllerExpandVolume", &|| {
        let mut r = csi::ControllerExpandVolumeRequest::new();
        r.volume_id = id.clone();
        let mut range = csi::CapacityRange::new();
        range.required_bytes = 2 * GIB as i64;
        r.capacity_range = Some(range).into();
        ctl.controller_expand_volume(&r, opt())
            .map(|_| ())
            .map_err(rpc_err("ControllerExpandVolume"))
    })?;
    count("DeleteVolume", &|| {
        let mut r = csi::DeleteVolumeRequest::new();
        r.volume_id = id.clone();
        ctl.delete_volume(&r, opt())
            .map(|_| ())
            .map_err(rpc_err("DeleteVolume"))
    })?;
    for (rpc, n) in &counts {
        eprintln!("  {rpc}: {n} REST requests");
    }
    let get = |rpc: &str| counts.iter().find(|(r, _)| *r == rpc).map_or(0, |(_, n)| *n);
    let (c, d) = (get("CreateVolume"), get("DeleteVolume"));
    Ok(Figure {
        key: "rest_requests_per_rpc",
        label: "REST requests per create / delete",
        value: (c + d) as f64,
        shown: format!("{c} / {d}"),
        target: "≤ 4 / ≤ 5",
        met: c <= 4 && d <= 5,
        detail: Value::Object(counts.iter().map(|(r, n)| (r.to_string(), json!(n))).collect()),
    })
}

/// Runs `pairs` pairs on `threads` threads; returns each pair's latency in ms.
fn timed_pairs(threads: usize, pairs: usize, tag: &str, op: PairOp) -> Res<(Vec<f64>, f64)> {
    let per = pairs.div_ceil(threads);
    let barrier = Arc::new(Barrier::new(threads));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (op, barrier, tag) = (Arc::clone(&op), Arc::clone(&barrier), tag.to_string());
            std::thread::spawn(move || -> Res<Vec<f64>> {
                barrier.wait();
                let mut lat = Vec::new();
                for i in 0..per {
                    let name = format!("bench-{tag}-{t}-{i}-{}", fastrand::u32(..));
                    let s = Instant::now();
                    op(&name)?;
                    lat.push(ms(s.elapsed()));
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().map_err(|_| "a benchmark thread panicked")??);
    }
    Ok((all, ms(started.elapsed())))
}

fn controller_overhead(bins: &Path, work: &Work, grpc: &Arc<Environment>, quick: bool) -> Res<Vec<Figure>> {
    let dir = work.sub("controller");
    let sim = start_sim(bins, &dir.join("sim"), SIM_LATENCY_MS)?;
    let (_driver, socket) = start_driver(bins, &dir, &controller_args(&sim))?;
    let ctl = ControllerClient::new(channel(grpc, &socket));
    let client = sim_client(&sim)?;
    client
        .make_directory("storage-pool/csi")
        .map_err(|e| e.to_string())?;
    // Warm both paths: TLS sessions, cached RouterOS version, the folder.
    for i in 0..3 {
        driver_pair(&ctl, &format!("bench-warm-d-{i}"))?;
        direct_pair(&client, &format!("bench-warm-r-{i}"))?;
    }
    // The floor of any CSI call: a round trip that does no work.
    let identity = IdentityClient::new(channel(grpc, &socket));
    let mut rtt = Vec::new();
    for _ in 0..200 {
        let s = Instant::now();
        identity
            .get_plugin_info(&csi::GetPluginInfoRequest::new(), opt())
            .map_err(|e| e.to_string())?;
        rtt.push(ms(s.elapsed()));
    }
    let rtt = sorted(rtt);
    eprintln!(
        "  empty call round trip: p50 {:.3} ms, p99 {:.3} ms",
        percentile(&rtt, 0.5),
        percentile(&rtt, 0.99)
    );
    let ctl = Arc::new(ctl);
    let client = Arc::new(client);
    let d: PairOp = {
        let ctl = Arc::clone(&ctl);
        Arc::new(move |n: &str| driver_pair(&ctl, n))
    };
    let r: PairOp = {
        let client = Arc::clone(&client);
        Arc::new(move |n: &str| direct_pair(&client, n))
    };
    let mut out = Vec::new();
    for (threads, key, label, target, limit) in [
        (
            1usize,
            "controller_overhead_c1",
            "controller overhead, concurrency 1 (p50)",
            "≤ 1.05",
            1.05,
        ),
        (
            32,
            "controller_overhead_c32",
            "controller overhead, concurrency 32 (p50)",
            "≤ 1.10",
            1.10,
        ),
    ] {
        let (rounds, pairs) = match (threads, quick) {
            (1, false) => (10, 10),
            (1, true) => (2, 5),
            (_, false) => (5, 128),
            (_, true) => (1, 64),
        };
        let (mut dl, mut rl, mut dw, mut rw) = (Vec::new(), Vec::new(), 0.0, 0.0);
        // Interleaved rounds: drift on a shared machine hits both sides.
        for round in 0..rounds {
            let (l, w) = timed_pairs(threads, pairs, &format!("d{threads}-{round}"), Arc::clone(&d))?;
            dl.extend(l);
            dw += w;
            let (l, w) = timed_pairs(threads, pairs, &format!("r{threads}-{round}"), Arc::clone(&r))?;
            rl.extend(l);
            rw += w;
        }
        let (dl, rl) = (sorted(dl), sorted(rl));
        let (d50, r50, d99, r99) = (
            percentile(&dl, 0.5),
            percentile(&rl, 0.5),
            percentile(&dl, 0.99),
            percentile(&rl, 0.99),
        );
        let ratio = d50 / r50;
        out.push(Figure {
            key,
            label,
            value: ratio,
            shown: format!("{ratio:.3} ({d50:.1}/{r50:.1} ms)"),
            target,
            met: ratio <= limit,
            detail: json!({
                "pairs": dl.len(),
                "driver_p50_ms": d50, "direct_p50_ms": r50,
                "driver_p99_ms": d99, "direct_p99_ms": r99,
                "p99_ratio": d99 / r99,
                "wall_ratio": dw / rw,
            }),
        });
        eprintln!(
            "  concurrency {threads}: driver p50 {d50:.2} ms p99 {d99:.2} ms; direct p50 {r50:.2} ms p99 {r99:.2} ms; p50 ratio {ratio:.3}, p99 ratio {:.3}, wall ratio {:.3}",
            d99 / r99,
            dw / rw
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Node: overhead, device wait, memory
// ---------------------------------------------------------------------------

/// The fake fabric's tree, laid out as the integration tests lay it out
/// (one file, `tests/common/fabric_tree.rs`, serves both).
fn make_fabric(bins: &Path, dir: &Path, sim: &Sim) -> Res<FabricTree> {
    FabricTree::create(dir, &bins.join("fake-nvme"), &sim.data.join("exports.json"), true)
        .map_err(|e| format!("lay out the fake fabric in {}: {e}", dir.display()))
}

/// The host roots of `f` for the driver's own sysfs lookups.
fn roots(f: &FabricTree) -> Roots {
    Roots {
        sys: f.sys.clone(),
        dev: f.dev.clone(),
        proc: PathBuf::from("/proc"),
        etc: f.etc.clone(),
    }
}

/// `serve` flags for the bench's node plugin. Its staging and target paths
/// lie under the fabric's kubelet directory (the plugin refuses others).
fn node_args(f: &FabricTree) -> Vec<String> {
    f.node_args("bench")
}

fn command(program: &Path, args: &[&str]) -> Res<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

struct NodeVolume {
    id: String,
    nqn: String,
    staging: PathBuf,
    target: PathBuf,
    ctx: HashMap<String, String>,
}

fn node_volume(sim: &Sim, dir: &Path, tag: &str) -> Res<NodeVolume> {
    let slot = format!("pvc-bench-{tag}-{:08x}", fastrand::u32(..));
    let nqn = format!("{PREFIX}:{slot}");
    sim_client(sim)?
        .create_disk(&NewDisk {
            slot: slot.clone(),
            file_path: format!("storage-pool/csi/{slot}.img"),
            size_bytes: GIB,
            comment: "bench".into(),
            nqn: Some(nqn.clone()),
            port: 4420,
        })
        .map_err(|e| e.to_string())?;
    let staging = dir.join(format!("staging-{tag}"));
    let target = dir.join(format!("target-{tag}"));
    fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    let mut ctx = HashMap::new();
    ctx.insert("nqn".to_string(), nqn.clone());
    ctx.insert("nvmeAddress".to_string(), "127.0.0.1".to_string());
    ctx.insert("nvmePort".to_string(), "4420".to_string());
    ctx.insert("fsType".to_string(), "ext4".to_string());
    Ok(NodeVolume {
        id: slot,
        nqn,
        staging,
        target,
        ctx,
    })
}

fn stage(n: &NodeClient, v: &NodeVolume) -> Res<()> {
    let mut r = csi::NodeStageVolumeRequest::new();
    r.volume_id = v.id.clone();
    r.staging_target_path = v.staging.display().to_string();
    r.volume_capability = Some(mount_cap()).into();
    r.volume_context = v.ctx.clone();
    n.node_stage_volume(&r, opt())
        .map(|_| ())
        .map_err(|e| format!("NodeStageVolume: {e}"))
}

fn unstage(n: &NodeClient, v: &NodeVolume) -> Res<()> {
    let mut r = csi::NodeUnstageVolumeRequest::new();
    r.volume_id = v.id.clone();
    r.staging_target_path = v.staging.display().to_string();
    n.node_unstage_volume(&r, opt())
        .map(|_| ())
        .map_err(|e| format!("NodeUnstageVolume: {e}"))
}

fn driver_cycle(n: &NodeClient, v: &NodeVolume) -> Res<()> {
    stage(n, v)?;
    let mut p = csi::NodePublishVolumeRequest::new();
    p.volume_id = v.id.clone();
    p.staging_target_path = v.staging.display().to_string();
    p.target_path = v.target.display().to_string();
    p.volume_capability = Some(mount_cap()).into();
    p.volume_context = v.ctx.clone();
    n.node_publish_volume(&p, opt())
        .map_err(|e| format!("NodePublishVolume: {e}"))?;
    let mut u = csi::NodeUnpublishVolumeRequest::new();
    u.volume_id = v.id.clone();
    u.target_path = v.target.display().to_string();
    n.node_unpublish_volume(&u, opt())
        .map_err(|e| format!("NodeUnpublishVolume: {e}"))?;
    unstage(n, v)
}

/// The external commands of one cycle, run directly: connect (same
/// arguments as the driver), wait for the device, probe, mount, bind,
/// unmount twice, disconnect.
fn direct_cycle(f: &FabricTree, v: &NodeVolume) -> Res<()> {
    let target = Target {
        nqn: Nqn::parse(&v.nqn)?,
        address: "127.0.0.1".into(),
        port: 4420,
        host: None,
    };
    let args = connect_args(&target, &ConnectionConfig::default(), Some(&f.host_nqn));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    command(&f.nvme, &argv)?;
    let (_, dev) = Sysfs::new(roots(f))
        .wait_for_device(&v.nqn, Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let dev = dev.path.display().to_string();
    command(Path::new("blkid"), &["-p", "-o", "export", &dev])?;
    let (staging, target_path) = (v.staging.display().to_string(), v.target.display().to_string());
    command(Path::new("mount"), &["-t", "ext4", &dev, &staging])?;
    fs::create_dir_all(&v.target).map_err(|e| e.to_string())?;
    command(Path::new("mount"), &["--bind", &staging, &target_path])?;
    command(Path::new("umount"), &[&target_path])?;
    command(Path::new("umount"), &[&staging])?;
    command(&f.nvme, &["disconnect", "-n", &v.nqn])
}

fn status_kib(pid: u32, field: &str) -> Res<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

fn node_figures(bins: &Path, work: &Work, grpc: &Arc<Environment>, quick: bool) -> Res<Vec<Figure>> {
    let dir = work.sub("node");
    let sim = start_sim(bins, &dir.join("sim"), 0)?;
    let fabric = make_fabric(bins, &dir.join("fabric-root"), &sim)?;
    work.track_fabric(&fabric.nvme);
    let mut out = Vec::new();

    // Memory first, on a fresh node plugin: idle, then 64 calls at once.
    {
        let (driver, socket) = start_driver(bins, &dir, &node_args(&fabric))?;
        std::thread::sleep(Duration::from_secs(2));
        let idle = status_kib(driver.pid(), "VmRSS:")?;
        let vol = node_volume(&sim, &fabric.kubelet, "mem")?;
        let n = NodeClient::new(channel(grpc, &socket));
        stage(&n, &vol)?;
        // 64 calls at once over one connection, as kubelet makes them.
        let barrier = Arc::new(Barrier::new(64));
        let shared = channel(grpc, &socket);
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let (barrier, id, path) = (Arc::clone(&barrier), vol.id.clone(), vol.staging.clone());
                let n = NodeClient::new(shared.clone());
                std::thread::spawn(move || -> Res<()> {
                    barrier.wait();
                    for _ in 0..5 {
                        let mut r = csi::NodeGetVolumeStatsRequest::new();
                        r.volume_id = id.clone();
                        r.volume_path = path.display().to_string();
                        n.node_get_volume_stats(&r, opt()).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        // Where the peak goes: sampled while the calls run.
        let pid = driver.pid();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut anon, mut file, mut threads) = (0.0f64, 0.0f64, 0.0f64);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    anon = anon.max(status_kib(pid, "RssAnon:").unwrap_or(0.0));
                    file = file.max(status_kib(pid, "RssFile:").unwrap_or(0.0));
                    threads = threads.max(status_kib(pid, "Threads:").unwrap_or(0.0));
                    std::thread::sleep(Duration::from_millis(1));
                }
                (anon, file, threads)
            })
        };
        for h in handles {
            h.join().map_err(|_| "a stats thread panicked")??;
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (peak_anon, peak_file, peak_threads) = sampler.join().map_err(|_| "sampler panicked")?;
        eprintln!("  under load: RssAnon up to {peak_anon} KiB, RssFile up to {peak_file} KiB, {peak_threads} threads");
        let peak = status_kib(driver.pid(), "VmHWM:")?;
        let anon = status_kib(driver.pid(), "RssAnon:")?;
        unstage(&n, &vol)?;
        driver.stop();
        out.push(Figure {
            key: "rss_idle_kib",
            label: "node plugin RSS, idle",
            value: idle,
            shown: format!("{:.2} MiB", idle / 1024.0),
            target: "≤ 4 MiB",
            met: idle <= 4096.0,
            detail: json!({}),
        });
        out.push(Figure {
            key: "rss_peak_kib",
            label: "node plugin RSS, peak under 64 concurrent calls",
            value: peak,
            shown: format!("{:.2} MiB", peak / 1024.0),
            target: "≤ 8 MiB",
            met: peak <= 8192.0,
            detail: json!({
                "rss_anon_after_kib": anon,
                "calls": 64 * 5,
                "call": "NodeGetVolumeStats, 64 at a time over one connection",
            }),
        });
    }

    // Overhead: stage → publish → unpublish → unstage through the driver
    // against the same commands run directly, interleaved.
    let (driver, socket) = start_driver(bins, &dir, &node_args(&fabric))?;
    let n = NodeClient::new(channel(grpc, &socket));
    let vol = node_volume(&sim, &fabric.kubelet, "cycle")?;
    driver_cycle(&n, &vol)?; // formats once
    direct_cycle(&fabric, &vol)?;
    let cycles = if quick { 3 } else { 12 };
    let (mut dl, mut rl) = (Vec::new(), Vec::new());
    for _ in 0..cycles {
        let s = Instant::now();
        driver_cycle(&n, &vol)?;
        dl.push(ms(s.elapsed()));
        let s = Instant::now();
        direct_cycle(&fabric, &vol)?;
        rl.push(ms(s.elapsed()));
    }
    let (dl, rl) = (sorted(dl), sorted(rl));
    let (d50, r50) = (percentile(&dl, 0.5), percentile(&rl, 0.5));
    let ratio = d50 / r50;
    eprintln!("  node cycle: driver p50 {d50:.1} ms, direct p50 {r50:.1} ms, ratio {ratio:.3}");
    out.push(Figure {
        key: "node_overhead",
        label: "node overhead, stage→publish→unpublish→unstage (p50)",
        value: ratio,
        shown: format!("{ratio:.3} ({d50:.1}/{r50:.1} ms)"),
        target: "≤ 1.10",
        met: ratio <= 1.10,
        detail: json!({ "cycles": cycles, "driver_ms": dl, "direct_ms": rl }),
    });

    // Device wait: the namespace appears late; how long until the driver has it.
    let delay_ms = 300;
    command(&fabric.nvme, &["fault", "device-delay", &delay_ms.to_string()])?;
    let mut waits = Vec::new();
    for _ in 0..(if quick { 2 } else { 6 }) {
        let _ = fs::remove_file(fabric.state.join("appeared.jsonl"));
        let before = driver.log_text().len();
        stage(&n, &vol)?;
        let appeared = fs::read_to_string(fabric.state.join("appeared.jsonl")).map_err(|e| e.to_string())?;
        let appeared_us = appeared
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|v| v["unix_us"].as_u64())
            .ok_or("fake-nvme recorded no appearance")?;
        let log = driver.log_text();
        let line = log[before..]
            .lines()
            .find(|l| l.contains(&format!("connected {}", vol.nqn)))
            .ok_or("no 'connected' line in the driver log")?;
        let used_ms = log_time_ms(line).ok_or_else(|| format!("no timestamp in {line:?}"))?;
        waits.push(used_ms - appeared_us as f64 / 1000.0);
        unstage(&n, &vol)?;
    }
    command(&fabric.nvme, &["fault", "clear"])?;
    driver.stop();
    let waits = sorted(waits);
    let median = percentile(&waits, 0.5);
    let worst = waits.last().copied().unwrap_or(0.0);
    out.push(Figure {
        key: "device_wait_ms",
        label: "device node appears → driver uses it (median)",
        value: median,
        shown: format!("{median:.1} ms (max {worst:.1})"),
        target: "≤ 20 ms",
        met: median <= 20.0,
        detail: json!({ "samples_ms": waits, "delay_ms": delay_ms, "resolution_ms": 1 }),
    });
    Ok(out)
}

/// The time of an env_logger line `[2026-11-22T08:10:05.123Z INFO ...]` in
/// milliseconds since the epoch.
fn log_time_ms(line: &str) -> Option<f64> {
    let ts = line.strip_prefix('[')?.split_whitespace().next()?;
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (proleptic Gregorian), as in Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60) as f64 + sec) * 1000.0)
}

// ---------------------------------------------------------------------------
// Start-up and orphan scan
// ---------------------------------------------------------------------------

fn startup(bins: &Path, work: &Work, grpc: &Arc<Environment>, quick: bool) -> Res<Figure> {
    let dir = work.sub("startup");
    let sim = start_sim(bins, &dir.join("sim"), 0)?;
    let fabric = make_fabric(bins, &dir.join("fabric-root"), &sim)?;
    work.track_fabric(&fabric.nvme);
    let mut args = controller_args(&sim);
    args.extend(node_args(&fabric));
    let socket = dir.join("csi.sock");
    let mut samples = Vec::new();
    for _ in 0..(if quick { 2 } else { 7 }) {
        let _ = fs::remove_file(&socket);
        let started = Instant::now();
        let child = Command::new(bins.join("rds-csi"))
            .arg("serve")
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .args(&args)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let proc = Proc {
            child,
            log: dir.join("none"),
        };
        while UnixStream::connect(&socket).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                return Err("rds-csi did not start".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let id = IdentityClient::new(channel(grpc, &socket));
        id.probe(&csi::ProbeRequest::new(), opt())
            .map_err(|e| format!("Probe: {e}"))?;
        samples.push(ms(started.elapsed()));
        proc.stop();
    }
    let samples = sorted(samples);
    let median = percentile(&samples, 0.5);
    Ok(Figure {
        key: "startup_ms",
        label: "start → first Probe answered (median)",
        value: median,
        shown: format!("{median:.1} ms"),
        target: "≤ 50 ms",
        met: median <= 50.0,
        detail: json!({ "samples_ms": samples, "mode": "--controller --node" }),
    })
}

/// 1,000 connected subsystems under our prefix in a fake sysfs, every one
/// mounted (so none is an orphan): the scan reads them all and keeps them.
fn orphan_scan(bins: &Path, work: &Work) -> Res<Figure> {
    let dir = work.sub("orphans");
    let count = 1000u32;
    let sys = dir.join("sys");
    let w = |rel: String, content: String| -> Res<()> {
        let p = sys.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        fs::write(&p, format!("{content}\n")).map_err(|e| e.to_string())
    };
    fs::create_dir_all(sys.join("module/nvme_tcp")).map_err(|e| e.to_string())?;
    fs::create_dir_all(sys.join("class/block")).map_err(|e| e.to_string())?;
    let mut mountinfo = String::new();
    for i in 0..count {
        let nqn = format!("{PREFIX}:pvc-orphanscan-{i:05}");
        let c = format!("class/nvme/nvme{i}");
        w(format!("{c}/subsysnqn"), nqn.clone())?;
        w(format!("{c}/state"), "live".into())?;
        w(format!("{c}/transport"), "tcp".into())?;
        w(format!("{c}/address"), "traddr=10.0.0.1,trsvcid=4420".into())?;
        let s = format!("class/nvme-subsystem/nvme-subsys{i}");
        w(format!("{s}/subsysnqn"), nqn)?;
        w(format!("{c}/nvme{i}c{i}n1/size"), "2097152".into())?;
        let ns = format!("{s}/nvme{i}n1");
        w(format!("{ns}/dev"), format!("259:{i}"))?;
        w(format!("{ns}/size"), "2097152".into())?;
        fs::create_dir_all(sys.join(&ns).join("holders")).map_err(|e| e.to_string())?;
        let _ = std::os::unix::fs::symlink(sys.join(&ns), sys.join(format!("class/block/nvme{i}n1")));
        mountinfo.push_str(&format!(
            "{} 25 259:{i} / /var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/v{i}/globalmount rw,relatime - ext4 /dev/nvme{i}n1 rw\n",
            100 + i
        ));
    }
    fs::create_dir_all(dir.join("proc/self")).map_err(|e| e.to_string())?;
    fs::write(dir.join("proc/self/mountinfo"), mountinfo).map_err(|e| e.to_string())?;
    fs::create_dir_all(dir.join("dev")).map_err(|e| e.to_string())?;
    fs::create_dir_all(dir.join("etc")).map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    for _ in 0..3 {
        let args: Vec<String> = vec![
            "--node".into(),
            "--node-id".into(),
            "bench".into(),
            "--nvme-bin".into(),
            "/bin/true".into(),
            "--sys-root".into(),
            sys.display().to_string(),
            "--dev-root".into(),
            dir.join("dev").display().to_string(),
            "--proc-root".into(),
            dir.join("proc").display().to_string(),
            "--etc-root".into(),
            dir.join("etc").display().to_string(),
            // The clean-up's summary line, which carries its duration, is at info.
            "--log-level".into(),
            "info".into(),
        ];
        let (driver, _) = start_driver(bins, &dir, &args)?;
        let log = driver.log_text();
        driver.stop();
        let line = log
            .lines()
            .find(|l| l.contains("orphan clean-up done in "))
            .ok_or_else(|| format!("no clean-up summary in the log:\n{log}"))?;
        if !line.contains(&format!("0 disconnected, {count} kept")) {
            return Err(format!("the scan should keep all {count}: {line}"));
        }
        let took: f64 = line
            .split("orphan clean-up done in ")
            .nth(1)
            .and_then(|r| r.split("ms").next())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no duration in {line:?}"))?;
        samples.push(took);
    }
    let samples = sorted(samples);
    let median = percentile(&samples, 0.5);
    Ok(Figure {
        key: "orphan_scan_ms",
        label: "orphan scan, 1,000 connected subsystems (median)",
        value: median,
        shown: format!("{median:.1} ms"),
        target: "≤ 100 ms",
        met: median <= 100.0,
        detail: json!({ "samples_ms": samples, "subsystems": count }),
    })
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
