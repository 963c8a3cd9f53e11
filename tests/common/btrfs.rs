//! A loop-mounted Btrfs filesystem for tests of snapshots: `mkfs.btrfs` on a sparse file, `losetup`, `mount`; unmounted and detached when dropped.

use std::path::PathBuf;
use std::process::Command;

use super::{Sim, SimOptions, TempDir};

/// A real Btrfs filesystem mounted at `mount_point`.
pub struct BtrfsMount {
    pub mount_point: PathBuf,
    loop_dev: String,
    /// Holds the image and the mount point; removed after the unmount.
    _dir: TempDir,
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl BtrfsMount {
    /// Makes and mounts a 512 MiB (sparse) Btrfs filesystem, or says why
    /// it cannot (no `mkfs.btrfs`, no loop device, no Btrfs in the kernel).
    pub fn new() -> Result<BtrfsMount, String> {
        let dir = TempDir::new("btrfs");
        let image = dir.join("fs.img");
        let file = std::fs::File::create(&image).map_err(|e| format!("create {}: {e}", image.display()))?;
        file.set_len(512 << 20)
            .map_err(|e| format!("size the image: {e}"))?;
        drop(file);
        let image_text = image.display().to_string();
        run("mkfs.btrfs", &["-q", "-f", &image_text])?;
        let loop_dev = run("losetup", &["--find", "--show", &image_text])?;
        let mount_point = dir.join("mnt");
        std::fs::create_dir_all(&mount_point).map_err(|e| format!("mkdir: {e}"))?;
        let mp = mount_point.display().to_string();
        if let Err(e) = run("mount", &["-t", "btrfs", &loop_dev, &mp]) {
            let _ = run("losetup", &["-d", &loop_dev]);
            return Err(e);
        }
        Ok(BtrfsMount {
            mount_point,
            loop_dev,
            _dir: dir,
        })
    }

    /// `btrfs filesystem du -s --raw PATH`: (total, exclusive, shared) bytes.
    pub fn du(&self, path: &std::path::Path) -> (u64, u64, u64) {
        let out = run(
            "btrfs",
            &["filesystem", "du", "-s", "--raw", &path.display().to_string()],
        )
        .expect("btrfs filesystem du");
        let line = out.lines().last().unwrap_or("");
        let n: Vec<u64> = line
            .split_whitespace()
            .take(3)
            .map(|w| w.parse().unwrap_or(u64::MAX))
            .collect();
        (n[0], n[1], n[2])
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        let mp = self.mount_point.display().to_string();
        if let Err(e) = run("umount", &[&mp]) {
            eprintln!("cleanup: {e}");
        }
        if let Err(e) = run("losetup", &["-d", &self.loop_dev]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// `rds-sim` with a Btrfs pool whose data directory is on a real Btrfs
/// filesystem: its subvolumes and snapshots are real. `sim` is declared
/// first so it stops before the filesystem is unmounted.
pub struct BtrfsSim {
    pub sim: Sim,
    pub fs: BtrfsMount,
}

impl BtrfsSim {
    /// `None` (after a loud SKIPPED, or a failure under CI) when this
    /// machine cannot make a Btrfs filesystem.
    pub fn start(test: &str, options: SimOptions) -> Option<BtrfsSim> {
        let fs = match BtrfsMount::new() {
            Ok(fs) => fs,
            Err(why) => {
                super::skip(
                    test,
                    &format!("no loop-mounted btrfs: {why} (install btrfs-progs: scripts/setup.sh)"),
                );
                return None;
            }
        };
        let mut options = options;
        options
            .extra_args
            .extend(["--pool-fs".to_string(), "btrfs".to_string()]);
        let sim = Sim::with_data_dir(options, fs.mount_point.join("data"));
        Some(BtrfsSim { sim, fs })
    }

    /// The real path of a `/file` name on the pool.
    pub fn real(&self, name: &str) -> PathBuf {
        self.sim.backing_path(name)
    }
}

impl std::ops::Deref for BtrfsSim {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}
