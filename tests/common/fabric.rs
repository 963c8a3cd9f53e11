//! The fake NVMe fabric for node tests: a temporary tree with fake sysfs,
//! /dev and /etc, `fabric/nvme` (a symlink to the `fake-nvme` binary) with
//! its `fabric.json`, helpers to drive and inspect it, volumes exported by
//! `rds-sim`, and CSI request builders. Dropping a `Fabric` unmounts
//! everything under its tree and detaches its loop devices, also when a
//! test fails.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use protobuf::MessageField;
use rds_csi::host::nvme::{parse_list_subsys, ListedSubsystem};
use rds_csi::proto::csi;
use rds_csi::rds::NewDisk;
use serde_json::Value;

use super::fabric_tree::FabricTree;
use super::{Sim, TempDir};

/// The fake nvme-cli cargo built for these tests.
pub const FAKE_NVME_BIN: &str = env!("CARGO_BIN_EXE_fake-nvme");
pub const PREFIX: &str = "nqn.2000-02.com.mikrotik";
/// What rds-sim's exports claim (its listen address).
pub const ADDRESS: &str = "127.0.0.1";
pub const PORT: u16 = 4420;

pub struct Fabric {
    /// Dropped last (after the clean-up in `drop`).
    pub root: TempDir,
    /// `<root>/fabric/nvme`: what `--nvme-bin` points at.
    pub nvme: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub etc: PathBuf,
    pub state: PathBuf,
    pub host_nqn: String,
    /// The layout the paths above come from.
    pub tree: FabricTree,
}

/// One recorded `nvme connect`.
#[derive(Debug, Clone)]
pub struct Connect {
    pub unix_ms: u64,
    pub args: Vec<String>,
}

impl Connect {
    /// The value after option `-x`.
    pub fn opt(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }
}

impl Fabric {
    /// A fabric serving what `sim` exports; `multipath` chooses the sysfs
    /// layout. The tree is laid out by `FabricTree` (shared with rds-bench).
    pub fn new(sim: &Sim, multipath: bool) -> Fabric {
        let root = TempDir::new("fabric");
        let tree = FabricTree::create(
            &root.path,
            Path::new(FAKE_NVME_BIN),
            &sim.data_dir.join("exports.json"),
            multipath,
        )
        .expect("lay out the fake fabric");
        Fabric {
            nvme: tree.nvme.clone(),
            sys: tree.sys.clone(),
            dev: tree.dev.clone(),
            etc: tree.etc.clone(),
            state: tree.state.clone(),
            host_nqn: tree.host_nqn.clone(),
            tree,
            root,
        }
    }

    /// A path for staging or target directories, inside the fabric's tree
    /// (so the clean-up finds every mount) and under its kubelet directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.kubelet_dir().join(name)
    }

    /// What the node plugin is told is kubelet's directory (`--kubelet-dir`):
    /// it refuses staging and target paths outside it.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.tree.kubelet.clone()
    }

    /// `serve` arguments for a node plugin `n1` on this fabric.
    pub fn driver_args(&self) -> Vec<String> {
        self.tree.node_args("n1")
    }

    /// Runs the fake nvme through its symlink, as the driver does.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.nvme)
            .args(args)
            .env_clear()
            .env("PATH", rds_csi::host::exec::PATH)
            .output()
            .expect("run fake-nvme");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "fake-nvme {args:?}: {err}");
        out
    }

    /// `fake-nvme fault ...`.
    pub fn fault(&self, args: &[&str]) {
        let mut all = vec!["fault"];
        all.extend_from_slice(args);
        self.ok(&all);
    }

    /// Every `nvme connect` so far, in order.
    pub fn connects(&self) -> Vec<Connect> {
        let text = std::fs::read_to_string(self.state.join("connects.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("connect record");
                Connect {
                    unix_ms: v["unix_ms"].as_u64().expect("unix_ms"),
                    args: v["args"]
                        .as_array()
                        .expect("args")
                        .iter()
                        .map(|a| a.as_str().unwrap_or("").to_string())
                        .collect(),
                }
            })
            .collect()
    }

    /// The connects for one NQN.
    pub fn connects_of(&self, nqn: &str) -> Vec<Connect> {
        self.connects()
            .into_iter()
            .filter(|c| c.opt("-n") == Some(nqn))
            .collect()
    }

    /// `nvme list-subsys -o json`, parsed by the driver's own parser.
    pub fn subsystems(&self) -> Vec<ListedSubsystem> {
        parse_list_subsys(&self.ok(&["list-subsys", "-o", "json"])).expect("list-subsys json")
    }

    pub fn connected(&self, nqn: &str) -> bool {
        self.subsystems().iter().any(|s| s.nqn == nqn)
    }

    /// Connects directly (not through the driver), e.g. to leave an orphan.
    pub fn connect(&self, nqn: &str) {
        let port = PORT.to_string();
        self.ok(&["connect", "-t", "tcp", "-a", ADDRESS, "-s", &port, "-n", nqn]);
    }

    /// The block device node of a connected NQN.
    pub fn device_of(&self, nqn: &str) -> PathBuf {
        let sysfs = rds_csi::host::device::Sysfs::new(rds_csi::host::Roots {
            sys: self.sys.clone(),
            dev: self.dev.clone(),
            proc: PathBuf::from("/proc"),
            etc: self.etc.clone(),
        });
        match sysfs.lookup(nqn).expect("sysfs") {
            rds_csi::host::device::Lookup::Ready(_, dev) => dev.path,
            other => panic!("{nqn} has no device: {other:?}"),
        }
    }

    /// Unmounts everything mounted under the fabric's tree (lazily: clean-up).
    pub fn unmount_all(&self) {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = std::fs::canonicalize(&self.root.path).unwrap_or_else(|_| self.root.path.clone());
        let mut entries = rds_csi::host::mount::parse_mountinfo(&text);
        entries.reverse();
        for e in entries {
            if e.mount_point.starts_with(&root) {
                let _ = rds_csi::host::sys::umount(&e.mount_point, libc::MNT_DETACH);
            }
        }
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.unmount_all();
        let _ = self.run(&["disconnect-all"]);
    }
}

/// A volume exported by rds-sim.
#[derive(Debug, Clone)]
pub struct Volume {
    pub slot: String,
    pub nqn: String,
    pub size: u64,
    pub file_path: String,
}

/// A slot no other test uses: `pvc-<tag>-<hex>`, at most 32 characters.
pub fn unique_slot(tag: &str) -> String {
    let tag: String = tag.chars().take(12).collect();
    format!("pvc-{tag}-{:010x}", fastrand::u64(..) & 0xff_ffff_ffff)
}

/// Creates and exports a disk of `size` bytes with NQN `<nqn_prefix>:<slot>`.
pub fn create_volume_with(sim: &Sim, tag: &str, size: u64, nqn_prefix: &str) -> Volume {
    let slot = unique_slot(tag);
    let nqn = format!("{nqn_prefix}:{slot}");
    let file_path = format!("storage-pool/csi/{slot}.img");
    sim.client()
        .create_disk(&NewDisk {
            slot: slot.clone(),
            file_path: file_path.clone(),
            size_bytes: size,
            comment: format!("test {tag}"),
            nqn: Some(nqn.clone()),
            port: PORT,
        })
        .expect("create disk on rds-sim");
    Volume {
        slot,
        nqn,
        size,
        file_path,
    }
}

pub fn create_volume(sim: &Sim, tag: &str, size: u64) -> Volume {
    create_volume_with(sim, tag, size, PREFIX)
}

/// The VolumeContext the controller would hand over, plus `extra` keys.
pub fn context(vol: &Volume, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("nqn".to_string(), vol.nqn.clone());
    m.insert("nvmeAddress".to_string(), ADDRESS.to_string());
    m.insert("nvmePort".to_string(), PORT.to_string());
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

pub fn stage_request(
    vol: &Volume,
    staging: &Path,
    cap: MessageField<csi::VolumeCapability>,
    ctx: HashMap<String, String>,
) -> csi::NodeStageVolumeRequest {
    let mut r = csi::NodeStageVolumeRequest::new();
    r.volume_id = vol.slot.clone();
    r.staging_target_path = staging.display().to_string();
    r.volume_capability = cap;
    r.volume_context = ctx;
    r
}

pub fn unstage_request(vol: &Volume, staging: &Path) -> csi::NodeUnstageVolumeRequest {
    let mut r = csi::NodeUnstageVolumeRequest::new();
    r.volume_id = vol.slot.clone();
    r.staging_target_path = staging.display().to_string();
    r
}

pub fn publish_request(
    vol: &Volume,
    staging: &Path,
    target: &Path,
    cap: MessageField<csi::VolumeCapability>,
    readonly: bool,
) -> csi::NodePublishVolumeRequest {
    let mut r = csi::NodePublishVolumeRequest::new();
    r.volume_id = vol.slot.clone();
    r.staging_target_path = staging.display().to_string();
    r.target_path = target.display().to_string();
    r.volume_capability = cap;
    r.readonly = readonly;
    r
}

pub fn unpublish_request(vol: &Volume, target: &Path) -> csi::NodeUnpublishVolumeRequest {
    let mut r = csi::NodeUnpublishVolumeRequest::new();
    r.volume_id = vol.slot.clone();
    r.target_path = target.display().to_string();
    r
}

pub fn stats_request(vol: &Volume, path: &Path) -> csi::NodeGetVolumeStatsRequest {
    let mut r = csi::NodeGetVolumeStatsRequest::new();
    r.volume_id = vol.slot.clone();
    r.volume_path = path.display().to_string();
    r
}

/// What mountinfo says is mounted at exactly `path` (fstype, options).
pub fn mounted_at(path: &Path) -> Option<rds_csi::host::mount::MountEntry> {
    let path = std::fs::canonicalize(path).ok()?;
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    rds_csi::host::mount::parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|e| e.mount_point == path)
}

/// `blkid -p` of a file or device: the value of `tag` it finds, if any.
pub fn blkid_tag(path: &Path, tag: &str) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", tag])
        .arg(path)
        .output()
        .expect("blkid");
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!t.is_empty()).then_some(t)
}

/// The filesystem type blkid finds, if any.
pub fn blkid_type(path: &Path) -> Option<String> {
    blkid_tag(path, "TYPE")
}

/// The partition table type blkid finds, if any.
pub fn blkid_pttype(path: &Path) -> Option<String> {
    blkid_tag(path, "PTTYPE")
}
