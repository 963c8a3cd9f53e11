//! Node figures: stage + unstage through the driver against the same
//! steps done directly, the device wait, and the driver's memory.

use super::*;

/// The fake fabric's tree, laid out as the integration tests lay it out
/// (one file, `tests/common/fabric_tree.rs`, serves both).
pub(crate) fn make_fabric(bins: &Path, dir: &Path, sim: &Sim) -> Res<FabricTree> {
    FabricTree::create(dir, &bins.join("fake-nvme"), &sim.data.join("exports.json"), true)
        .map_err(|e| format!("lay out the fake fabric in {}: {e}", dir.display()))
}

/// The host roots of `f` for the driver's own sysfs lookups.
pub(crate) fn roots(f: &FabricTree) -> Roots {
    Roots {
        sys: f.sys.clone(),
        dev: f.dev.clone(),
        proc: PathBuf::from("/proc"),
        etc: f.etc.clone(),
    }
}

/// `serve` flags for the bench's node plugin. Its staging and target paths
/// lie under the fabric's kubelet directory (the plugin refuses others).
pub(crate) fn node_args(f: &FabricTree) -> Vec<String> {
    f.node_args("bench")
}

pub(crate) fn command(program: &Path, args: &[&str]) -> Res<()> {
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

pub(crate) struct NodeVolume {
    pub(crate) id: String,
    pub(crate) nqn: String,
    pub(crate) staging: PathBuf,
    pub(crate) target: PathBuf,
    pub(crate) ctx: HashMap<String, String>,
}

pub(crate) fn node_volume(sim: &Sim, dir: &Path, tag: &str) -> Res<NodeVolume> {
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

pub(crate) fn stage(n: &NodeClient, v: &NodeVolume) -> Res<()> {
    let mut r = csi::NodeStageVolumeRequest::new();
    r.volume_id = v.id.clone();
    r.staging_target_path = v.staging.display().to_string();
    r.volume_capability = Some(mount_cap()).into();
    r.volume_context = v.ctx.clone();
    n.node_stage_volume(&r, opt())
        .map(|_| ())
        .map_err(|e| format!("NodeStageVolume: {e}"))
}

pub(crate) fn unstage(n: &NodeClient, v: &NodeVolume) -> Res<()> {
    let mut r = csi::NodeUnstageVolumeRequest::new();
    r.volume_id = v.id.clone();
    r.staging_target_path = v.staging.display().to_string();
    n.node_unstage_volume(&r, opt())
        .map(|_| ())
        .map_err(|e| format!("NodeUnstageVolume: {e}"))
}

pub(crate) fn driver_cycle(n: &NodeClient, v: &NodeVolume) -> Res<()> {
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
pub(crate) fn direct_cycle(f: &FabricTree, v: &NodeVolume) -> Res<()> {
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

pub(crate) fn status_kib(pid: u32, field: &str) -> Res<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

pub(crate) fn node_figures(
    bins: &Path,
    work: &Work,
    grpc: &Arc<Environment>,
    quick: bool,
) -> Res<Vec<Figure>> {
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
pub(crate) fn log_time_ms(line: &str) -> Option<f64> {
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
