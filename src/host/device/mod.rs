//! NQN → block device through sysfs: the connected NVMe subsystems, their
//! controllers (with state) and namespace block devices, for native
//! multipath on (head `nvmeXnY` in the subsystem, hidden `nvmeXcYnZ` paths)
//! and off (`nvmeXnY` under the controller). Nothing is cached: every lookup
//! reads sysfs again, because the numbers change when a controller is lost
//! and comes back.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::host::{DevNum, Roots};

/// How often the device wait looks again: the wait is most of the attach
/// time a user sees, so tens of milliseconds, not seconds.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// One NVMe controller (`<sys>/class/nvme/nvmeN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// `nvme3`.
    pub name: String,
    /// `live`, `connecting`, `resetting`, `deleting`, `new`, `dead`, ...
    pub state: String,
    /// `traddr=10.0.0.1,trsvcid=4420` (newer kernels add more keys).
    pub address: String,
    pub transport: String,
}

impl Controller {
    /// A value of the `address` attribute: `field("traddr")`.
    pub fn address_field(&self, key: &str) -> Option<&str> {
        self.address
            .split(',')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// One namespace block device of a subsystem (the multipath head, or the
/// per-controller device with multipath off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `nvme2n1`.
    pub name: String,
    pub dev: DevNum,
    pub size_bytes: u64,
}

/// One connected NVMe subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subsystem {
    /// `nvme-subsys2`.
    pub name: String,
    pub nqn: String,
    pub controllers: Vec<Controller>,
    pub namespaces: Vec<Namespace>,
}

impl Subsystem {
    /// True when at least one controller is `live`.
    pub fn is_live(&self) -> bool {
        self.controllers.iter().any(|c| c.state == "live")
    }

    /// True when no controller is live but one is `connecting` or
    /// `resetting`: the kernel is retrying, and we must not interfere.
    pub fn is_reconnecting(&self) -> bool {
        !self.is_live()
            && self
                .controllers
                .iter()
                .any(|c| c.state == "connecting" || c.state == "resetting")
    }

    /// `nvme2=live, nvme3=connecting`, for messages.
    pub fn states(&self) -> String {
        if self.controllers.is_empty() {
            return "no controllers".into();
        }
        self.controllers
            .iter()
            .map(|c| format!("{}={}", c.name, c.state))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The namespace the volume is (RDS exports one per subsystem; should
    /// there be more, the lowest-numbered).
    pub fn namespace(&self) -> Option<&Namespace> {
        self.namespaces.first()
    }
}

/// A namespace whose device node is there and matches sysfs: usable now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    pub name: String,
    /// `<dev>/nvme2n1`.
    pub path: PathBuf,
    pub dev: DevNum,
    pub size_bytes: u64,
}

/// What sysfs says about an NQN right now.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    NotConnected,
    /// Connected, but no usable block device (yet, or any more): the reason.
    NoDevice(Subsystem, Unusable),
    Ready(Subsystem, BlockDevice),
}

#[derive(Debug)]
pub enum Error {
    ReadDir {
        path: PathBuf,
        source: io::Error,
    },
    ReadAttr {
        path: PathBuf,
        source: io::Error,
    },
    ParseAttr {
        path: PathBuf,
        value: String,
    },
    WaitDevice {
        nqn: String,
        waited: Duration,
        /// Why the device was not usable at the last look.
        last: Unusable,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReadDir { path, .. } => write!(f, "cannot list {}", path.display()),
            Error::ReadAttr { path, .. } => write!(f, "cannot read {}", path.display()),
            Error::ParseAttr { path, value } => {
                write!(f, "unexpected content {value:?} in {}", path.display())
            }
            Error::WaitDevice { nqn, waited, last } => write!(
                f,
                "the block device of {nqn} did not appear within {:.1}s ({last})",
                waited.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ReadDir { source, .. } | Error::ReadAttr { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub use super::is_namespace_name;

mod busy;
pub use busy::{device_users, Depth, BUSY_GRACE, BUSY_POLL};

/// Why an NQN has no usable block device (yet, or any more).
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    NotConnected,
    /// Connected, but the subsystem shows no namespace block device.
    NoNamespace {
        subsystem: String,
        states: String,
    },
    /// The namespace's device node is not (yet) the device sysfs names.
    Node(NodeProblem),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::NotConnected => write!(f, "not connected"),
            Unusable::NoNamespace { subsystem, states } => {
                write!(f, "{subsystem} ({states}) has no namespace block device")
            }
            Unusable::Node(problem) => problem.fmt(f),
        }
    }
}

/// Why a namespace's device node is not usable (yet, or any more).
#[derive(Debug)]
pub enum NodeProblem {
    /// No node at the path yet (udev has not made it).
    Missing {
        path: PathBuf,
    },
    /// Something that is not a block device is at the path.
    NotBlockDevice {
        path: PathBuf,
    },
    /// The node is another device than the one sysfs names.
    OtherDevice {
        path: PathBuf,
        found: DevNum,
        expected: DevNum,
    },
    Stat {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for NodeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeProblem::Missing { path } => write!(f, "no device node {} yet", path.display()),
            NodeProblem::NotBlockDevice { path } => write!(f, "{} is not a block device", path.display()),
            NodeProblem::OtherDevice {
                path,
                found,
                expected,
            } => write!(f, "{} is device {found}, sysfs says {expected}", path.display()),
            NodeProblem::Stat { path, source } => write!(f, "cannot stat {}: {source}", path.display()),
        }
    }
}

/// By value; a stat failure by path and error kind (io::Error has no `==`).
impl PartialEq for NodeProblem {
    fn eq(&self, other: &Self) -> bool {
        use NodeProblem::*;
        match (self, other) {
            (Missing { path: a }, Missing { path: b }) => a == b,
            (NotBlockDevice { path: a }, NotBlockDevice { path: b }) => a == b,
            (
                OtherDevice {
                    path: a,
                    found: fa,
                    expected: ea,
                },
                OtherDevice {
                    path: b,
                    found: fb,
                    expected: eb,
                },
            ) => a == b && fa == fb && ea == eb,
            (Stat { path: a, source: sa }, Stat { path: b, source: sb }) => {
                a == b && sa.kind() == sb.kind() && sa.raw_os_error() == sb.raw_os_error()
            }
            _ => false,
        }
    }
}

impl Eq for NodeProblem {}

impl std::error::Error for NodeProblem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeProblem::Stat { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `nvme<digits>`: a controller.
pub fn is_controller_name(name: &str) -> bool {
    name.strip_prefix("nvme")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Orders `nvme2n1` before `nvme10n1`.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut num = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            if !num.is_empty() {
                parts.push((std::mem::take(&mut text), num.parse().unwrap_or(u64::MAX)));
                num.clear();
            }
            text.push(c);
        }
    }
    parts.push((text, num.parse().unwrap_or(0)));
    parts
}

/// Reads sysfs and the device nodes under the host roots.
#[derive(Debug, Clone)]
pub struct Sysfs {
    roots: Roots,
}

/// An attribute, trimmed; `Ok(None)` when the file is gone (sysfs entries
/// vanish under us while a controller is torn down).
fn attr(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::ReadAttr {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Entry names of a directory, sorted naturally; empty when it is gone.
fn entries(dir: &Path) -> Result<Vec<String>, Error> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::ReadDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort_by_cached_key(|n| natural_key(n));
    Ok(names)
}

impl Sysfs {
    pub fn new(roots: Roots) -> Sysfs {
        Sysfs { roots }
    }

    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// True when `<sys>/module/<name>` exists (loaded, or built in with parameters).
    pub fn module_loaded(&self, name: &str) -> bool {
        self.roots.sys(&format!("module/{name}")).exists()
    }

    fn controller(&self, name: &str) -> Result<Option<(Controller, String)>, Error> {
        let dir = self.roots.sys(&format!("class/nvme/{name}"));
        let Some(nqn) = attr(&dir.join("subsysnqn"))? else {
            return Ok(None);
        };
        Ok(Some((
            Controller {
                name: name.to_string(),
                state: attr(&dir.join("state"))?.unwrap_or_default(),
                address: attr(&dir.join("address"))?.unwrap_or_default(),
                transport: attr(&dir.join("transport"))?.unwrap_or_default(),
            },
            nqn,
        )))
    }

    fn namespace(&self, dir: &Path, name: &str) -> Result<Option<Namespace>, Error> {
        let Some(dev_text) = attr(&dir.join("dev"))? else {
            return Ok(None);
        };
        let dev = DevNum::parse(&dev_text).ok_or_else(|| Error::ParseAttr {
            path: dir.join("dev"),
            value: dev_text.clone(),
        })?;
        let size_bytes = self.size_in(dir)?.unwrap_or(0);
        Ok(Some(Namespace {
            name: name.to_string(),
            dev,
            size_bytes,
        }))
    }

    fn size_in(&self, dir: &Path) -> Result<Option<u64>, Error> {
        let path = dir.join("size");
        match attr(&path)? {
            None => Ok(None),
            Some(s) => s
                .parse::<u64>()
                .map(|sectors| Some(sectors * 512))
                .map_err(|_| Error::ParseAttr { path, value: s }),
        }
    }

    /// Every connected subsystem with its controllers and namespaces.
    pub fn subsystems(&self) -> Result<Vec<Subsystem>, Error> {
        // Controllers by subsystem NQN, in name order.
        let mut controllers: std::collections::HashMap<String, Vec<Controller>> =
            std::collections::HashMap::new();
        for name in entries(&self.roots.sys("class/nvme"))? {
            if is_controller_name(&name) {
                if let Some((c, nqn)) = self.controller(&name)? {
                    controllers.entry(nqn).or_default().push(c);
                }
            }
        }
        let base = self.roots.sys("class/nvme-subsystem");
        let mut out = Vec::new();
        for name in entries(&base)? {
            let dir = base.join(&name);
            let Some(nqn) = attr(&dir.join("subsysnqn"))? else {
                continue;
            };
            let ctrls: Vec<Controller> = controllers.get(&nqn).cloned().unwrap_or_default();
            let mut namespaces: Vec<Namespace> = Vec::new();
            // Multipath on: the heads live in the subsystem.
            for entry in entries(&dir)? {
                if is_namespace_name(&entry) {
                    if let Some(ns) = self.namespace(&dir.join(&entry), &entry)? {
                        namespaces.push(ns);
                    }
                }
            }
            // Multipath off: the namespaces live under each controller. (With
            // multipath on, only hidden per-path nodes are there: skip the
            // listing, which matters when scanning hundreds of subsystems.)
            let heads_found = !namespaces.is_empty();
            for c in ctrls.iter().filter(|_| !heads_found) {
                let cdir = self.roots.sys(&format!("class/nvme/{}", c.name));
                for entry in entries(&cdir)? {
                    if is_namespace_name(&entry) && !namespaces.iter().any(|n| n.name == entry) {
                        if let Some(ns) = self.namespace(&cdir.join(&entry), &entry)? {
                            namespaces.push(ns);
                        }
                    }
                }
            }
            namespaces.sort_by_key(|n| natural_key(&n.name));
            out.push(Subsystem {
                name,
                nqn,
                controllers: ctrls,
                namespaces,
            });
        }
        Ok(out)
    }

    /// The subsystem with exactly this NQN (not one that merely starts with it).
    pub fn subsystem(&self, nqn: &str) -> Result<Option<Subsystem>, Error> {
        Ok(self.subsystems()?.into_iter().find(|s| s.nqn == nqn))
    }

    /// The device node of a namespace, when it exists and is the block
    /// device sysfs names.
    pub fn device_node(&self, ns: &Namespace) -> Result<BlockDevice, NodeProblem> {
        let path = self.roots.dev(&ns.name);
        match fs::metadata(&path) {
            Ok(m) if m.file_type().is_block_device() && DevNum::from_raw(m.rdev()) == ns.dev => {
                Ok(BlockDevice {
                    name: ns.name.clone(),
                    path,
                    dev: ns.dev,
                    size_bytes: ns.size_bytes,
                })
            }
            Ok(m) if m.file_type().is_block_device() => Err(NodeProblem::OtherDevice {
                path,
                found: DevNum::from_raw(m.rdev()),
                expected: ns.dev,
            }),
            Ok(_) => Err(NodeProblem::NotBlockDevice { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NodeProblem::Missing { path }),
            Err(source) => Err(NodeProblem::Stat { path, source }),
        }
    }

    /// Where the NQN stands now.
    pub fn lookup(&self, nqn: &str) -> Result<Lookup, Error> {
        let Some(sub) = self.subsystem(nqn)? else {
            return Ok(Lookup::NotConnected);
        };
        let Some(ns) = sub.namespace().cloned() else {
            let why = Unusable::NoNamespace {
                subsystem: sub.name.clone(),
                states: sub.states(),
            };
            return Ok(Lookup::NoDevice(sub, why));
        };
        match self.device_node(&ns) {
            Ok(dev) => Ok(Lookup::Ready(sub, dev)),
            Err(why) => Ok(Lookup::NoDevice(sub, Unusable::Node(why))),
        }
    }

    /// Polls [`Sysfs::lookup`] every [`POLL_INTERVAL`] until the NQN's
    /// device is usable, up to `limit`.
    pub fn wait_for_device(&self, nqn: &str, limit: Duration) -> Result<(Subsystem, BlockDevice), Error> {
        let started = Instant::now();
        loop {
            let last = match self.lookup(nqn)? {
                Lookup::Ready(sub, dev) => return Ok((sub, dev)),
                Lookup::NoDevice(_, why) => why,
                Lookup::NotConnected => Unusable::NotConnected,
            };
            if started.elapsed() >= limit {
                return Err(Error::WaitDevice {
                    nqn: nqn.to_string(),
                    waited: started.elapsed(),
                    last,
                });
            }
            std::thread::sleep(POLL_INTERVAL.min(limit.saturating_sub(started.elapsed())));
        }
    }

    /// The subsystem and namespace whose block device is `dev`, if any.
    pub fn owner(&self, dev: DevNum) -> Result<Option<(Subsystem, Namespace)>, Error> {
        for sub in self.subsystems()? {
            if let Some(ns) = sub.namespaces.iter().find(|n| n.dev == dev).cloned() {
                return Ok(Some((sub, ns)));
            }
        }
        Ok(None)
    }

    /// The block devices stacked on `name` (device-mapper, md, ...).
    pub fn holders(&self, name: &str) -> Result<Vec<String>, Error> {
        entries(&self.roots.sys(&format!("class/block/{name}/holders")))
    }

    /// The partitions of `name` with their device numbers.
    pub fn partitions(&self, name: &str) -> Result<Vec<(String, DevNum)>, Error> {
        let dir = self.roots.sys(&format!("class/block/{name}"));
        let mut out = Vec::new();
        for entry in entries(&dir)? {
            if entry.starts_with(name) && entry.len() > name.len() {
                if let Some(text) = attr(&dir.join(&entry).join("dev"))? {
                    if let Some(dev) = DevNum::parse(&text) {
                        out.push((entry, dev));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The current size of block device `name` (sysfs `size`, 512-byte sectors).
    pub fn size_bytes(&self, name: &str) -> Result<u64, Error> {
        let dir = self.roots.sys(&format!("class/block/{name}"));
        self.size_in(&dir)?.ok_or_else(|| Error::ReadAttr {
            path: dir.join("size"),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }
}

/// Builders of fake sysfs trees for unit tests here and in `orphan`.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    pub struct Tree {
        pub root: PathBuf,
    }

    impl Tree {
        pub fn new(tag: &str) -> Tree {
            let root = std::env::temp_dir().join(format!(
                "rds-csi-sysfs-{tag}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            fs::create_dir_all(root.join("sys/class/nvme")).unwrap();
            fs::create_dir_all(root.join("sys/class/nvme-subsystem")).unwrap();
            fs::create_dir_all(root.join("sys/class/block")).unwrap();
            fs::create_dir_all(root.join("dev")).unwrap();
            Tree { root }
        }

        pub fn roots(&self) -> Roots {
            Roots {
                sys: self.root.join("sys"),
                dev: self.root.join("dev"),
                proc: PathBuf::from("/proc"),
                etc: self.root.join("etc"),
            }
        }

        pub fn sysfs(&self) -> Sysfs {
            Sysfs::new(self.roots())
        }

        fn write(&self, rel: &str, content: &str) {
            let p = self.root.join("sys").join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("{content}\n")).unwrap();
        }

        /// Controller `ctrl` of subsystem `subsys` (numbers) for `nqn`.
        pub fn controller(&self, ctrl: u32, subsys: u32, nqn: &str, state: &str) {
            let c = format!("class/nvme/nvme{ctrl}");
            self.write(&format!("{c}/subsysnqn"), nqn);
            self.write(&format!("{c}/state"), state);
            self.write(&format!("{c}/transport"), "tcp");
            self.write(&format!("{c}/address"), "traddr=10.0.0.1,trsvcid=4420");
            self.write(
                &format!("class/nvme-subsystem/nvme-subsys{subsys}/subsysnqn"),
                nqn,
            );
        }

        /// A namespace block device; `multipath` puts the head in the
        /// subsystem (plus a hidden path under the controller), else under
        /// the controller.
        pub fn namespace(&self, ctrl: u32, subsys: u32, multipath: bool, dev: &str) -> String {
            let (dir, name) = if multipath {
                let hidden = format!("class/nvme/nvme{ctrl}/nvme{subsys}c{ctrl}n1");
                self.write(&format!("{hidden}/size"), "2048");
                (
                    format!("class/nvme-subsystem/nvme-subsys{subsys}/nvme{subsys}n1"),
                    format!("nvme{subsys}n1"),
                )
            } else {
                (
                    format!("class/nvme/nvme{ctrl}/nvme{ctrl}n1"),
                    format!("nvme{ctrl}n1"),
                )
            };
            self.write(&format!("{dir}/dev"), dev);
            self.write(&format!("{dir}/size"), "2097152");
            fs::create_dir_all(self.root.join("sys").join(&dir).join("holders")).unwrap();
            let link = self.root.join("sys/class/block").join(&name);
            let _ = std::os::unix::fs::symlink(self.root.join("sys").join(&dir), link);
            name
        }

        /// A device node (block) for `name` with the given numbers; needs root.
        pub fn node(&self, name: &str, major: u32, minor: u32) {
            let p = self.root.join("dev").join(name);
            let st = std::process::Command::new("mknod")
                .arg(&p)
                .arg("b")
                .arg(major.to_string())
                .arg(minor.to_string())
                .status()
                .unwrap();
            assert!(st.success(), "mknod {}", p.display());
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Tree;
    use super::*;

    const NQN: &str = "nqn.2000-02.com.mikrotik:pvc-1";

    #[test]
    fn names() {
        for ok in ["nvme0n1", "nvme12n3"] {
            assert!(is_namespace_name(ok), "{ok}");
        }
        for bad in [
            "nvme0",
            "nvme0c1n1",
            "nvme0n1p1",
            "nvmen1",
            "nvme0n",
            "sda",
            "nvme-subsys0",
        ] {
            assert!(!is_namespace_name(bad), "{bad}");
        }
        assert!(is_controller_name("nvme10"));
        assert!(!is_controller_name("nvme-fabrics") && !is_controller_name("nvme0n1"));
        let mut v = vec!["nvme10n1", "nvme2n1", "nvme1n1"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, vec!["nvme1n1", "nvme2n1", "nvme10n1"]);
    }

    #[test]
    fn a_missing_tree_means_nothing_is_connected() {
        let t = Tree::new("empty");
        fs::remove_dir_all(t.root.join("sys/class")).unwrap();
        assert!(t.sysfs().subsystems().unwrap().is_empty());
        assert_eq!(t.sysfs().lookup(NQN).unwrap(), Lookup::NotConnected);
    }

    #[test]
    fn multipath_head_is_found_and_hidden_paths_are_not() {
        let t = Tree::new("mp");
        t.controller(3, 1, NQN, "live");
        let name = t.namespace(3, 1, true, "259:4");
        assert_eq!(name, "nvme1n1");
        let subs = t.sysfs().subsystems().unwrap();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].nqn, NQN);
        assert_eq!(subs[0].controllers[0].name, "nvme3");
        assert_eq!(subs[0].controllers[0].address_field("trsvcid"), Some("4420"));
        assert_eq!(
            subs[0].namespaces,
            vec![Namespace {
                name: "nvme1n1".into(),
                dev: DevNum { major: 259, minor: 4 },
                size_bytes: 2097152 * 512
            }]
        );
        assert!(subs[0].is_live() && !subs[0].is_reconnecting());
    }

    #[test]
    fn without_multipath_the_namespace_is_under_the_controller() {
        let t = Tree::new("nomp");
        t.controller(0, 0, NQN, "connecting");
        t.namespace(0, 0, false, "259:0");
        let sub = t.sysfs().subsystem(NQN).unwrap().unwrap();
        assert_eq!(sub.namespace().unwrap().name, "nvme0n1");
        assert!(!sub.is_live() && sub.is_reconnecting());
        assert_eq!(sub.states(), "nvme0=connecting");
    }

    #[test]
    fn an_nqn_matches_exactly_not_by_prefix() {
        let t = Tree::new("exact");
        t.controller(0, 0, &format!("{NQN}0"), "live");
        assert_eq!(t.sysfs().lookup(NQN).unwrap(), Lookup::NotConnected);
        assert!(t.sysfs().subsystem(&format!("{NQN}0")).unwrap().is_some());
    }

    #[test]
    fn a_device_needs_a_matching_node() {
        let t = Tree::new("node");
        t.controller(0, 0, NQN, "live");
        // Connected, no namespace yet.
        assert!(matches!(t.sysfs().lookup(NQN).unwrap(), Lookup::NoDevice(..)));
        t.namespace(0, 0, true, "7:200");
        match t.sysfs().lookup(NQN).unwrap() {
            Lookup::NoDevice(_, why) => assert!(why.to_string().contains("no device node"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A node with other numbers is not the device.
        t.node("nvme0n1", 7, 201);
        match t.sysfs().lookup(NQN).unwrap() {
            Lookup::NoDevice(_, why) => assert!(why.to_string().contains("sysfs says 7:200"), "{why}"),
            other => panic!("{other:?}"),
        }
        fs::remove_file(t.root.join("dev/nvme0n1")).unwrap();
        t.node("nvme0n1", 7, 200);
        let Lookup::Ready(_, dev) = t.sysfs().lookup(NQN).unwrap() else {
            panic!("not ready");
        };
        assert_eq!(dev.path, t.root.join("dev/nvme0n1"));
        assert_eq!(
            t.sysfs()
                .owner(DevNum { major: 7, minor: 200 })
                .unwrap()
                .unwrap()
                .0
                .nqn,
            NQN
        );
        assert!(t.sysfs().owner(DevNum { major: 7, minor: 1 }).unwrap().is_none());
        assert_eq!(t.sysfs().size_bytes("nvme0n1").unwrap(), 2097152 * 512);
        assert!(t.sysfs().holders("nvme0n1").unwrap().is_empty());
    }

    #[test]
    fn a_process_holding_the_device_open_makes_it_busy() {
        // A real block device we may open: a loop device over a small file.
        let t = Tree::new("busy");
        let img = t.root.join("disk.img");
        fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "SKIPPED: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let loop_dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let rdev = DevNum::from_raw(fs::metadata(&loop_dev).unwrap().rdev());
        t.controller(0, 0, NQN, "live");
        t.namespace(0, 0, true, &rdev.to_string());
        t.node("nvme0n1", rdev.major, rdev.minor);
        let sysfs = Sysfs::new(Roots {
            proc: PathBuf::from("/proc"),
            ..t.roots()
        });
        let ns = sysfs.subsystem(NQN).unwrap().unwrap().namespaces[0].clone();
        assert!(sysfs.busy(&ns, Depth::Full).unwrap().is_empty());
        // A child holding it open through another name (the loop device).
        let mut holder = std::process::Command::new("sleep")
            .arg("60")
            .stdin(fs::File::open(&loop_dev).unwrap())
            .spawn()
            .unwrap();
        let users = sysfs.busy(&ns, Depth::Full).unwrap();
        assert!(
            users
                .iter()
                .any(|u| u.contains(&format!("pid {}", holder.id())) && u.contains("sleep")),
            "{users:?}"
        );
        // Without the process scan (a look right after a full one) a plain
        // reader is not seen: nothing else holds the device.
        assert!(sysfs.busy(&ns, Depth::NoProcessScan).unwrap().is_empty());
        holder.kill().unwrap();
        holder.wait().unwrap();
        // An exclusive holder (what mkfs is): the probe says so.
        {
            use std::os::unix::fs::OpenOptionsExt;
            let _excl = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_EXCL)
                .open(&loop_dev)
                .unwrap();
            let why = sysfs.exclusive_probe(&ns).expect("busy");
            assert!(why.contains("held exclusively"), "{why}");
        }
        assert_eq!(sysfs.exclusive_probe(&ns), None);
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&loop_dev)
            .status();
    }

    #[test]
    fn the_wait_polls_fast_and_times_out_with_the_reason() {
        let t = Tree::new("wait");
        t.controller(0, 0, NQN, "live");
        let started = Instant::now();
        let e = t
            .sysfs()
            .wait_for_device(NQN, Duration::from_millis(100))
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(e.to_string().contains("no namespace block device"), "{e}");
        let sysfs = t.sysfs();
        let root = t.root.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let tree = Tree { root };
            tree.namespace(0, 0, true, "7:210");
            tree.node("nvme0n1", 7, 210);
            std::mem::forget(tree);
        });
        let started = Instant::now();
        let (_, dev) = sysfs.wait_for_device(NQN, Duration::from_secs(10)).unwrap();
        let took = started.elapsed();
        writer.join().unwrap();
        assert_eq!(dev.dev, DevNum { major: 7, minor: 210 });
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn why_a_device_is_unusable_reads_as_before() {
        let gone = Unusable::Node(NodeProblem::Missing {
            path: PathBuf::from("/dev/nvme1n1"),
        });
        assert_eq!(gone.to_string(), "no device node /dev/nvme1n1 yet");
        let other = NodeProblem::OtherDevice {
            path: PathBuf::from("/dev/nvme1n1"),
            found: DevNum { major: 7, minor: 1 },
            expected: DevNum { major: 259, minor: 1 },
        };
        assert_eq!(other.to_string(), "/dev/nvme1n1 is device 7:1, sysfs says 259:1");
        let none = Unusable::NoNamespace {
            subsystem: "nvme-subsys1".into(),
            states: "nvme1=live".into(),
        };
        assert_eq!(
            none.to_string(),
            "nvme-subsys1 (nvme1=live) has no namespace block device"
        );
        assert_eq!(Unusable::NotConnected.to_string(), "not connected");
    }
}
