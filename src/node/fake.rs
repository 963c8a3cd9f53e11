//! An in-memory host for the node rules' unit tests: a mount table,
//! connected subsystems, device contents, paths and markers, all in one
//! mutex, with a log of every effect so a test can say what happened (and,
//! above all, what did not: no mkfs, no unmount, no disconnect).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{Error, Host, NodeService, Settings};
use crate::host::device::{
    BlockDevice, Controller, Depth, Lookup, Namespace, NodeProblem, Subsystem, Unusable,
};
use crate::host::mount::{self, MountEntry, MountOptions, Mounted, Probe};
use crate::host::nvme::{self, Attached, Target};
use crate::host::paths::{Marker, Role};
use crate::host::sys::FsStats;
use crate::host::{DevNum, Roots};
use crate::volume::{ConnectionConfig, FsType, Nqn, NqnPrefix, VolumeContext, VolumeId};

/// What is on a fake device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    Blank,
    Filesystem(String),
    /// Another signature (a partition table, ...).
    Other(String),
    /// The probe cannot read it (a reconnecting namespace, say).
    Unreadable,
}

/// One fake mount.
#[derive(Debug, Clone)]
pub struct FakeMount {
    pub at: PathBuf,
    pub dev: DevNum,
    pub block: bool,
    pub fstype: String,
    pub read_only: bool,
}

#[derive(Debug, Default)]
pub struct State {
    /// In mount order: the last one at a path is the topmost.
    pub mounts: Vec<FakeMount>,
    pub connected: Vec<Subsystem>,
    /// What `attach` of an NQN makes appear.
    pub exports: HashMap<String, Namespace>,
    pub disks: HashMap<DevNum, Disk>,
    pub paths: HashSet<PathBuf>,
    pub markers: HashMap<(PathBuf, bool), Marker>,
    /// Users of a device other than mounts (a process holding it open).
    pub users: HashMap<DevNum, Vec<String>>,
    /// The filesystem size statvfs reports per device; a device without
    /// an entry reports 1000 bytes.
    pub fs_bytes: HashMap<DevNum, u64>,
    pub fail_mount: bool,
    pub fail_bind: bool,
    /// Every effect, in order: `connect <nqn>`, `mkfs <dev> <fs>`,
    /// `mount <dev> <path>`, `bind <from> <path>`, `unmount <path>`,
    /// `disconnect <nqn>`, `remove <path>`.
    pub log: Vec<String>,
}

#[derive(Default)]
pub struct FakeHost {
    state: Mutex<State>,
}

fn key(path: &Path, role: Role) -> (PathBuf, bool) {
    (path.to_path_buf(), role == Role::Staged)
}

fn other(what: &str) -> io::Error {
    io::Error::other(what.to_string())
}

/// A fake device the test did not set up: an error naming the path.
fn unknown(device: &Path) -> Error {
    Error::Mount(mount::Error::OpenDevice {
        device: device.to_path_buf(),
        source: other("no such fake device"),
    })
}

impl FakeHost {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The effects logged so far that start with `what`.
    pub fn effects(&self, what: &str) -> Vec<String> {
        self.state()
            .log
            .iter()
            .filter(|l| l.starts_with(what))
            .cloned()
            .collect()
    }

    /// Makes `nqn` attachable with a namespace `name` of device `dev`
    /// holding `disk`.
    pub fn export(&self, nqn: &str, name: &str, dev: DevNum, disk: Disk) {
        let mut s = self.state();
        s.exports.insert(
            nqn.to_string(),
            Namespace {
                name: name.to_string(),
                dev,
                size_bytes: 1 << 30,
            },
        );
        s.disks.insert(dev, disk);
    }

    fn device_of(s: &State, device: &Path) -> Option<DevNum> {
        let name = device.file_name()?.to_str()?;
        s.connected
            .iter()
            .flat_map(|sub| sub.namespaces.iter())
            .find(|ns| ns.name == name)
            .map(|ns| ns.dev)
    }

    fn top<'a>(s: &'a State, path: &Path) -> Option<&'a FakeMount> {
        s.mounts.iter().rev().find(|m| m.at == path)
    }
}

impl Host for FakeHost {
    fn mounted(&self, path: &Path) -> Result<Option<Mounted>, Error> {
        let s = self.state();
        Ok(FakeHost::top(&s, path).map(|m| Mounted {
            entry: MountEntry {
                id: 1,
                parent: 0,
                dev: m.dev,
                root: "/".into(),
                mount_point: m.at.clone(),
                options: if m.read_only { "ro" } else { "rw" }.into(),
                fstype: m.fstype.clone(),
                source: "fake".into(),
                super_options: "rw".into(),
            },
            dev: m.dev,
            block: m.block,
        }))
    }

    fn mount_users(&self, dev: DevNum) -> Result<Vec<(PathBuf, bool)>, Error> {
        let s = self.state();
        let mut out: Vec<(PathBuf, bool)> = Vec::new();
        for m in s.mounts.iter().filter(|m| m.dev == dev) {
            if !out.iter().any(|(p, _)| *p == m.at) {
                let ro = FakeHost::top(&s, &m.at).is_some_and(|t| t.read_only);
                out.push((m.at.clone(), ro));
            }
        }
        Ok(out)
    }

    fn owner(&self, dev: DevNum) -> Result<Option<(Subsystem, Namespace)>, Error> {
        let s = self.state();
        Ok(s.connected.iter().find_map(|sub| {
            let ns = sub.namespaces.iter().find(|n| n.dev == dev)?;
            Some((sub.clone(), ns.clone()))
        }))
    }

    fn lookup(&self, nqn: &str) -> Result<Lookup, Error> {
        let Some(sub) = self.subsystem(nqn)? else {
            return Ok(Lookup::NotConnected);
        };
        let Some(ns) = sub.namespace().cloned() else {
            return Ok(Lookup::NoDevice(
                sub,
                Unusable::NoNamespace {
                    subsystem: "fake".into(),
                    states: "live".into(),
                },
            ));
        };
        Ok(match self.device_node(&ns) {
            Ok(dev) => Lookup::Ready(sub, dev),
            Err(why) => Lookup::NoDevice(sub, Unusable::Node(why)),
        })
    }

    fn subsystem(&self, nqn: &str) -> Result<Option<Subsystem>, Error> {
        Ok(self.state().connected.iter().find(|s| s.nqn == nqn).cloned())
    }

    fn size_bytes(&self, name: &str) -> Result<u64, Error> {
        let s = self.state();
        Ok(s.connected
            .iter()
            .flat_map(|sub| sub.namespaces.iter())
            .find(|ns| ns.name == name)
            .map_or(0, |ns| ns.size_bytes))
    }

    fn device_node(&self, ns: &Namespace) -> Result<BlockDevice, NodeProblem> {
        Ok(BlockDevice {
            name: ns.name.clone(),
            path: PathBuf::from("/dev").join(&ns.name),
            dev: ns.dev,
            size_bytes: ns.size_bytes,
        })
    }

    fn device_users(&self, ns: &Namespace, except: &[&Path], depth: Depth) -> Result<Vec<String>, Error> {
        let s = self.state();
        let mut users: Vec<String> = Vec::new();
        for m in s.mounts.iter().filter(|m| m.dev == ns.dev) {
            let line = format!("mounted at {}", m.at.display());
            if !except.contains(&m.at.as_path()) && !users.contains(&line) {
                users.push(line);
            }
        }
        // `users` stands for the processes holding the device open.
        if depth == Depth::Full {
            users.extend(s.users.get(&ns.dev).cloned().unwrap_or_default());
        }
        Ok(users)
    }

    fn attach(&self, target: &Target, _conn: &ConnectionConfig) -> Result<Attached, Error> {
        let nqn = target.nqn.as_str();
        if let Some(sub) = self.subsystem(nqn)? {
            let ns = sub.namespaces[0].clone();
            if let Ok(device) = self.device_node(&ns) {
                return Ok(Attached {
                    subsystem: sub,
                    device,
                    connected_now: false,
                });
            }
        }
        let mut s = self.state();
        let Some(ns) = s.exports.get(nqn).cloned() else {
            return Err(Error::Nvme(nvme::Error::NotManaged {
                nqn: nqn.to_string(),
                prefix: "not exported by the fake".into(),
            }));
        };
        let n = s.connected.len();
        let sub = Subsystem {
            name: format!("nvme-subsys{n}"),
            nqn: nqn.to_string(),
            controllers: vec![Controller {
                name: format!("nvme{n}"),
                state: "live".into(),
                address: format!("traddr={},trsvcid={}", target.address, target.port),
                transport: "tcp".into(),
            }],
            namespaces: vec![ns.clone()],
        };
        s.connected.push(sub.clone());
        s.log.push(format!("connect {nqn}"));
        Ok(Attached {
            subsystem: sub,
            device: BlockDevice {
                name: ns.name.clone(),
                path: PathBuf::from("/dev").join(&ns.name),
                dev: ns.dev,
                size_bytes: ns.size_bytes,
            },
            connected_now: true,
        })
    }

    fn disconnect(&self, nqn: &str, _depth: Depth) -> Result<bool, Error> {
        let mut s = self.state();
        let before = s.connected.len();
        s.connected.retain(|sub| sub.nqn != nqn);
        s.log.push(format!("disconnect {nqn}"));
        Ok(s.connected.len() != before)
    }

    fn rescan(&self, controller: &str) -> Result<(), Error> {
        self.state().log.push(format!("rescan {controller}"));
        Ok(())
    }

    fn probe(&self, device: &Path) -> Result<Probe, Error> {
        let s = self.state();
        let disk = FakeHost::device_of(&s, device).and_then(|d| s.disks.get(&d).cloned());
        match disk {
            Some(Disk::Blank) => Ok(Probe::Empty),
            Some(Disk::Filesystem(fs)) => Ok(Probe::Filesystem(fs)),
            Some(Disk::Other(what)) => Ok(Probe::Other(what)),
            Some(Disk::Unreadable) | None => Err(Error::Mount(mount::Error::ReadDevice {
                device: device.to_path_buf(),
                source: other("the fake device does not answer"),
            })),
        }
    }

    fn mkfs(&self, device: &Path, fs: FsType) -> Result<(), Error> {
        let mut s = self.state();
        let dev = FakeHost::device_of(&s, device).ok_or_else(|| unknown(device))?;
        s.disks.insert(dev, Disk::Filesystem(fs.as_str().into()));
        s.log.push(format!("mkfs {} {fs}", device.display()));
        Ok(())
    }

    fn grow(&self, device: &Path, _mount_point: &Path, _fstype: &str) -> Result<(), Error> {
        let mut s = self.state();
        let dev = FakeHost::device_of(&s, device).ok_or_else(|| unknown(device))?;
        let size = s
            .connected
            .iter()
            .flat_map(|sub| sub.namespaces.iter())
            .find(|ns| ns.dev == dev)
            .map_or(0, |ns| ns.size_bytes);
        s.fs_bytes.insert(dev, size);
        s.log.push(format!("grow {}", device.display()));
        Ok(())
    }

    fn fs_bytes(&self, device: &Path, _fs: FsType) -> Option<u64> {
        let s = self.state();
        let dev = FakeHost::device_of(&s, device)?;
        s.fs_bytes.get(&dev).copied()
    }

    fn fs_stats(&self, path: &Path) -> Result<FsStats, Error> {
        let s = self.state();
        let total = FakeHost::top(&s, path)
            .and_then(|m| s.fs_bytes.get(&m.dev).copied())
            .unwrap_or(1000);
        Ok(FsStats {
            total_bytes: total,
            available_bytes: 600,
            used_bytes: 400,
            total_inodes: 100,
            free_inodes: 90,
            used_inodes: 10,
            read_only: false,
        })
    }

    fn ensure_dir(&self, path: &Path) -> Result<(), Error> {
        self.state().paths.insert(path.to_path_buf());
        Ok(())
    }

    fn ensure_file(&self, path: &Path) -> Result<(), Error> {
        self.state().paths.insert(path.to_path_buf());
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.state().paths.contains(path)
    }

    fn mount_filesystem(
        &self,
        device: &Path,
        target: &Path,
        fs: FsType,
        _options: &MountOptions,
        read_only: bool,
    ) -> Result<(), Error> {
        let mut s = self.state();
        if s.fail_mount {
            return Err(Error::Mount(mount::Error::Mount {
                device: device.to_path_buf(),
                target: target.to_path_buf(),
                fs,
                source: io::Error::from_raw_os_error(libc::EIO),
            }));
        }
        let dev = FakeHost::device_of(&s, device).ok_or_else(|| unknown(device))?;
        s.mounts.push(FakeMount {
            at: target.to_path_buf(),
            dev,
            block: false,
            fstype: fs.as_str().into(),
            read_only,
        });
        s.log
            .push(format!("mount {} {}", device.display(), target.display()));
        Ok(())
    }

    fn bind(&self, from: &Path, target: &Path, read_only: bool) -> Result<(), Error> {
        let mut s = self.state();
        if s.fail_bind {
            return Err(Error::Mount(mount::Error::Bind {
                from: from.to_path_buf(),
                target: target.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::EIO),
            }));
        }
        let (dev, block, fstype) = match FakeHost::top(&s, from) {
            Some(m) => (m.dev, m.block, m.fstype.clone()),
            None => {
                let dev = FakeHost::device_of(&s, from).ok_or_else(|| unknown(from))?;
                (dev, true, "devtmpfs".into())
            }
        };
        s.mounts.push(FakeMount {
            at: target.to_path_buf(),
            dev,
            block,
            fstype,
            read_only,
        });
        s.log
            .push(format!("bind {} {}", from.display(), target.display()));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<bool, Error> {
        let mut s = self.state();
        let Some(i) = s.mounts.iter().rposition(|m| m.at == target) else {
            return Ok(false);
        };
        s.mounts.remove(i);
        s.log.push(format!("unmount {}", target.display()));
        Ok(true)
    }

    fn remove_if_empty(&self, path: &Path) -> Result<bool, Error> {
        let mut s = self.state();
        if s.paths.remove(path) {
            s.log.push(format!("remove {}", path.display()));
        }
        Ok(true)
    }

    fn write_marker(&self, path: &Path, role: Role, marker: &Marker) -> io::Result<()> {
        self.state().markers.insert(key(path, role), marker.clone());
        Ok(())
    }

    fn read_marker(&self, path: &Path, role: Role) -> Option<Marker> {
        self.state().markers.get(&key(path, role)).cloned()
    }

    fn remove_marker(&self, path: &Path, role: Role) -> io::Result<()> {
        self.state().markers.remove(&key(path, role));
        Ok(())
    }

    fn busy_grace(&self) -> (Duration, Duration) {
        (Duration::ZERO, Duration::ZERO)
    }

    fn resize_wait(&self) -> (Duration, Duration) {
        (Duration::ZERO, Duration::ZERO)
    }
}

/// The managed prefix of the fakes.
pub const PREFIX: &str = "nqn.2000-02.com.mikrotik";

/// A node service over a fresh fake host.
pub fn service() -> NodeService<FakeHost> {
    let settings = Settings {
        node_id: "node-a".into(),
        max_volumes_per_node: 0,
        kubelet_dir: PathBuf::from("/var/lib/kubelet"),
        roots: Roots::default(),
        nvme: nvme::Settings {
            bin: "nvme".into(),
            host_nqn: None,
            prefix: NqnPrefix::parse(PREFIX).expect("prefix"),
            device_wait: Duration::from_secs(1),
            policy: nvme::Settings::connect_policy(1),
        },
    };
    NodeService::with_host(settings, FakeHost::default())
}

/// The volume id, its NQN, and a VolumeContext naming that NQN.
pub fn volume(id: &str) -> (VolumeId, String, VolumeContext) {
    let id = VolumeId::parse(id).expect("volume id");
    let prefix = NqnPrefix::parse(PREFIX).expect("prefix");
    let nqn = Nqn::for_volume(&prefix, &id);
    let ctx = VolumeContext {
        nqn: nqn.clone(),
        nvme_address: "10.0.0.1".into(),
        nvme_port: 4420,
        fs_type: None,
        connection: ConnectionConfig::default(),
        host: None,
    };
    (id, nqn.to_string(), ctx)
}

pub fn dev(minor: u32) -> DevNum {
    DevNum { major: 259, minor }
}

pub const STAGING: &str = "/var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/abc/globalmount";
pub const TARGET: &str = "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pv1/mount";
pub const TARGET2: &str = "/var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/pv1/mount";

/// A filesystem access with the default type (the context's, else ext4).
pub fn filesystem() -> super::Access {
    super::Access::Filesystem {
        fs: None,
        options: MountOptions::default(),
    }
}
