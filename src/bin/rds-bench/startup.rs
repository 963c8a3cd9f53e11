//! Start-up (spawn → first Probe answered) and the orphan scan over
//! 1,000 fake subsystems.

use super::*;

pub(crate) fn startup(bins: &Path, work: &Work, grpc: &Arc<Environment>, quick: bool) -> Res<Figure> {
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
pub(crate) fn orphan_scan(bins: &Path, work: &Work) -> Res<Figure> {
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
