//! The fake NVMe fabric's file tree, laid out in one place for both its
//! users: the integration tests (`tests/common/fabric.rs`) and `rds-bench`
//! (`src/bin/rds-bench.rs` includes this file with `#[path]`). A fake sysfs,
//! `/dev` and `/etc` (with the host NQN), `fabric/nvme` (a link to the
//! `fake-nvme` binary, which finds `fabric.json` beside itself) and the
//! directory the node plugin is told is kubelet's; and the `serve` flags
//! that point a node plugin at all of it.
//!
//! Only `std`, `serde_json` and `fastrand`: both crates have them, and
//! nothing here panics, so the benchmark can report a failure as an error.

use std::io;
use std::path::{Path, PathBuf};

/// The paths of a laid-out fabric.
#[derive(Debug, Clone)]
pub struct FabricTree {
    pub root: PathBuf,
    /// `<root>/fabric/nvme`: what `--nvme-bin` points at.
    pub nvme: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub etc: PathBuf,
    /// fake-nvme's own records (`connects.jsonl`, `appeared.jsonl`, faults).
    pub state: PathBuf,
    /// `<root>/mnt`, given as `--kubelet-dir`: the node plugin refuses
    /// staging and target paths outside it, so they go under it.
    pub kubelet: PathBuf,
    /// What `<etc>/nvme/hostnqn` says: a fresh NQN per tree.
    pub host_nqn: String,
}

impl FabricTree {
    /// Lays the tree out under `root` (made if missing). `fake_nvme` is the
    /// binary the `nvme` link runs; `exports` is rds-sim's `exports.json`,
    /// the targets fake-nvme can connect to; `multipath` chooses the sysfs
    /// layout (native NVMe multipath or not).
    pub fn create(root: &Path, fake_nvme: &Path, exports: &Path, multipath: bool) -> io::Result<FabricTree> {
        let p = |rel: &str| root.join(rel);
        for dir in [
            "fabric",
            "sys/module/nvme_tcp",
            "sys/class/nvme",
            "sys/class/nvme-subsystem",
            "sys/class/block",
            "dev",
            "etc/nvme",
            "state",
            "mnt",
        ] {
            std::fs::create_dir_all(p(dir))?;
        }
        let host_nqn = format!(
            "nqn.2014-08.org.nvmexpress:uuid:fabric-{:016x}",
            fastrand::u64(..)
        );
        std::fs::write(p("etc/nvme/hostnqn"), format!("{host_nqn}\n"))?;
        let nvme = p("fabric/nvme");
        // A tree laid out again in the same place gets a fresh link.
        let _ = std::fs::remove_file(&nvme);
        std::os::unix::fs::symlink(fake_nvme, &nvme)?;
        let config = serde_json::json!({
            "sys_root": p("sys"),
            "dev_root": p("dev"),
            "exports": exports,
            "state_dir": p("state"),
            "multipath": multipath,
        });
        std::fs::write(p("fabric/fabric.json"), config.to_string())?;
        Ok(FabricTree {
            root: root.to_path_buf(),
            nvme,
            sys: p("sys"),
            dev: p("dev"),
            etc: p("etc"),
            state: p("state"),
            kubelet: p("mnt"),
            host_nqn,
        })
    }

    /// `serve` flags for a node plugin called `node_id` on this fabric.
    pub fn node_args(&self, node_id: &str) -> Vec<String> {
        let mut args: Vec<String> = vec!["--node".into(), "--node-id".into(), node_id.into()];
        for (flag, path) in [
            ("--nvme-bin", &self.nvme),
            ("--sys-root", &self.sys),
            ("--dev-root", &self.dev),
            ("--etc-root", &self.etc),
            ("--kubelet-dir", &self.kubelet),
        ] {
            args.push(flag.into());
            args.push(path.display().to_string());
        }
        args
    }
}
