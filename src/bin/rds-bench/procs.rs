//! Processes and places: the scratch directory, the rds-sim and driver
//! processes, gRPC channels and the small statistics helpers.

use super::*;

/// A scratch directory, removed on drop after unmounting anything left
/// there and detaching the fabrics' loop devices (also after a failure).
pub(crate) struct Work {
    pub(crate) dir: PathBuf,
    pub(crate) fabrics: std::sync::Mutex<Vec<PathBuf>>,
}

impl Work {
    pub(crate) fn new() -> Res<Work> {
        let dir = std::env::temp_dir().join(format!("rds-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        Ok(Work {
            dir,
            fabrics: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Remembers a fabric's `nvme` so its connections are dropped at the end.
    pub(crate) fn track_fabric(&self, nvme: &Path) {
        if let Ok(mut f) = self.fabrics.lock() {
            f.push(nvme.to_path_buf());
        }
    }

    pub(crate) fn sub(&self, name: &str) -> PathBuf {
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
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn stop(mut self) {
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

pub(crate) struct Sim {
    pub(crate) _proc: Proc,
    pub(crate) url: String,
    pub(crate) fingerprint: String,
    pub(crate) data: PathBuf,
    pub(crate) user: PathBuf,
    pub(crate) pass: PathBuf,
}

pub(crate) fn start_sim(bins: &Path, dir: &Path, latency_ms: u64) -> Res<Sim> {
    start_sim_with(bins, dir, latency_ms, true)
}

/// `tls: false` serves plain HTTP, so the bench can read `/sim/stats` itself.
pub(crate) fn start_sim_with(bins: &Path, dir: &Path, latency_ms: u64, tls: bool) -> Res<Sim> {
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
        // A flat (XFS) pool: the direct side of each figure replays the
        // flat layout's requests (a Btrfs pool adds the volume's subvolume).
        .args(["--pool-fs", "xfs"])
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

pub(crate) fn sim_client(sim: &Sim) -> Res<rds::Client> {
    let mut cfg = rds::ClientConfig::new(sim.url.clone(), &sim.user, &sim.pass);
    cfg.trust = rds::Trust::Fingerprint(rds::parse_fingerprint(&sim.fingerprint).map_err(|e| e.to_string())?);
    // Deletes only under the controller's default base path, as the driver.
    Ok(rds::Client::new(cfg)
        .map_err(|e| e.to_string())?
        .with_base_path("storage-pool/csi"))
}

pub(crate) fn controller_args(sim: &Sim) -> Vec<String> {
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
pub(crate) fn start_driver(bins: &Path, dir: &Path, args: &[String]) -> Res<(Proc, PathBuf)> {
    start_driver_program(&[bins.join("rds-csi").display().to_string()], dir, args)
}

/// As [`start_driver`], running `argv` (a binary, or a wrapper such as
/// valgrind followed by the binary) with `serve <args>`.
pub(crate) fn start_driver_program(argv: &[String], dir: &Path, args: &[String]) -> Res<(Proc, PathBuf)> {
    let socket = dir.join("csi.sock");
    let _ = fs::remove_file(&socket);
    let log = dir.join("driver.log");
    let (program, wrapped) = argv.split_first().ok_or("no driver program")?;
    let child = Command::new(program)
        .args(wrapped)
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
    let end = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(&socket).is_err() {
        if Instant::now() > end {
            return Err(format!("rds-csi did not listen: {}", proc.log_text()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((proc, socket))
}

pub(crate) fn channel(grpc: &Arc<Environment>, socket: &Path) -> grpcio::Channel {
    ChannelBuilder::new(Arc::clone(grpc)).connect(&format!("unix:{}", socket.display()))
}

pub(crate) fn opt() -> CallOption {
    CallOption::default().timeout(Duration::from_secs(120))
}

pub(crate) fn mount_cap() -> csi::VolumeCapability {
    let mut m = csi::volume_capability::MountVolume::new();
    m.fs_type = "ext4".into();
    let mut cap = csi::VolumeCapability::new();
    cap.set_mount(m);
    let mut am = csi::volume_capability::AccessMode::new();
    am.mode = Mode::SINGLE_NODE_WRITER.into();
    cap.access_mode = Some(am).into();
    cap
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}
