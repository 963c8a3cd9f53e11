//! With `--nvmet`: the emulated RDS's exports served for real by the kernel's NVMe/TCP target through configfs — a subsystem per NQN, namespace 1 on the disk's backing file, a port per address:port — kept in step with every change, restored at start, and only ever touching what it made itself.
//!
//! What it made is recorded in `<data-dir>/nvmet.json` *before* it is made
//! (subsystem NQNs with the backing file and size last served, port ids
//! with their address), so after a crash (SIGKILL) the next start adopts its
//! own leftovers and removes those no longer wanted; a subsystem or port it
//! did not record is never changed or removed, even when it carries a
//! wanted NQN (that export is then skipped with a warning).
//!
//! Layout under the nvmet root (`/sys/kernel/config/nvmet`):
//! - `subsystems/<nqn>/attr_allow_any_host` = 1 when the disk allows any
//!   host; with an allow list, 0 and `allowed_hosts/<hostnqn>` links to
//!   `hosts/<hostnqn>` (host entries are made when first needed and left:
//!   they grant nothing by themselves and may be shared),
//!   `attr_serial` and the namespace's `device_uuid`/`device_nguid` derived
//!   from the NQN (stable across reboots, as on a real RDS);
//!   `namespaces/1/device_path` = the backing file, `buffered_io` = 1 when
//!   the file's file system refuses `O_DIRECT` (tmpfs), `enable` = 1;
//!   `revalidate_size` = 1 when the file grew;
//! - `ports/<id>/addr_{trtype,adrfam,traddr,trsvcid}`, and the export
//!   itself: the link `ports/<id>/subsystems/<nqn>` → the subsystem.
//!
//! An outage (`POST /sim/nvmet {"outage": true}`, or SIGUSR1) removes every
//! link of the ports it owns, as an RDS whose export vanished; `false` (or
//! SIGUSR2) links them again.
//! The root can be a plain directory (the unit tests): configfs creates an
//! item's default children on `mkdir` and removes them on `rmdir`, so on a
//! plain directory this module creates and removes them itself.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Where the kernel target's configfs tree is.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/nvmet";

/// `statfs` magic of configfs.
const CONFIGFS_MAGIC: i64 = 0x6265_6570;
/// The longest NQN the NVMe specification allows (bytes, without the NUL).
const MAX_NQN: usize = 223;

#[derive(Debug)]
pub enum Error {
    /// The nvmet root does not exist: configfs unmounted or `nvmet` not loaded.
    NoTarget {
        root: PathBuf,
    },
    Configfs {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    Record {
        path: PathBuf,
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoTarget { root } => write!(
                f,
                "no kernel NVMe target at {} (mount configfs and load nvmet and nvmet-tcp)",
                root.display()
            ),
            Error::Configfs { op, path, .. } => write!(f, "nvmet: cannot {op} {}", path.display()),
            Error::Record { path, reason } => {
                write!(f, "nvmet: bad record {}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Configfs { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn cfs<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Configfs {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One export as `exports.json` lists it.
#[derive(Debug, Clone, PartialEq)]
struct Export {
    nqn: String,
    addr: String,
    port: u16,
    backing: String,
    size: u64,
    /// Host NQNs allowed to connect; empty: any host.
    allowed: Vec<String>,
}

/// A subsystem this module made.
#[derive(Debug, Clone, PartialEq)]
struct OwnedSub {
    backing: String,
    /// The file size the target was last told about.
    size: u64,
}

/// A port this module made.
#[derive(Debug, Clone, PartialEq)]
struct OwnedPort {
    id: u32,
    addr: String,
    port: u16,
}

/// The kernel target, as far as this emulator owns it.
pub struct Nvmet {
    root: PathBuf,
    record: PathBuf,
    /// False when the root is a plain directory (tests).
    configfs: bool,
    subs: BTreeMap<String, OwnedSub>,
    ports: Vec<OwnedPort>,
    outage: bool,
}

/// A name the kernel will take as a directory: an NQN, never a path.
fn valid_nqn(nqn: &str) -> bool {
    !nqn.is_empty()
        && nqn.len() <= MAX_NQN
        && nqn != "."
        && nqn != ".."
        && nqn.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

fn is_configfs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data that statfs(2) fills; `c` is a valid
    // NUL-terminated path that outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` is a valid out pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == CONFIGFS_MAGIC
}

/// Whether `path` can be opened with `O_DIRECT` (tmpfs cannot: the target
/// then needs `buffered_io`, or `enable` fails with EINVAL).
fn direct_io_works(path: &Path) -> bool {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .is_ok()
}

/// Stable identities of an NQN's subsystem and namespace: the serial
/// number, the namespace UUID and NGUID, all from SHA-256 of the NQN. The
/// kernel target makes random ones for every new subsystem; a host that
/// reconnects after an RDS reboot and finds other identifiers drops the
/// namespace (its size goes to 0 under a mounted filesystem). A real RDS
/// keeps them across reboots, so the emulator must too.
fn identities(nqn: &str) -> (String, String, String) {
    let d = ring::digest::digest(&ring::digest::SHA256, nqn.as_bytes());
    let b = d.as_ref();
    let hex = |bytes: &[u8]| bytes.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let uuid_of = |bytes: &[u8]| {
        let mut u = [0u8; 16];
        u.copy_from_slice(bytes);
        // RFC 9562 version 8 (custom), variant 10.
        u[6] = (u[6] & 0x0f) | 0x80;
        u[8] = (u[8] & 0x3f) | 0x80;
        format!(
            "{}-{}-{}-{}-{}",
            hex(&u[0..4]),
            hex(&u[4..6]),
            hex(&u[6..8]),
            hex(&u[8..10]),
            hex(&u[10..16])
        )
    };
    (hex(&b[0..10]), uuid_of(&b[0..16]), uuid_of(&b[16..32]))
}

fn read_attr(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn write_attr(path: &Path, value: &str) -> Result<(), Error> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(false)
        .open(path)
        .or_else(|e| {
            // A plain directory (tests) has no attribute files until written.
            if e.kind() == io::ErrorKind::NotFound && path.parent().is_some_and(Path::is_dir) {
                fs::File::create(path)
            } else {
                Err(e)
            }
        })
        .map_err(cfs("open", path))?;
    f.write_all(format!("{value}\n").as_bytes())
        .map_err(cfs("write", path))
}

fn exports_of(v: &Value) -> Vec<Export> {
    let addr = v["nvme_address"].as_str().unwrap_or("").to_string();
    v["exports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Export {
                nqn: e["nqn"].as_str()?.to_string(),
                addr: addr.clone(),
                port: u16::try_from(e["port"].as_u64()?).ok()?,
                backing: e["backing_file"].as_str()?.to_string(),
                size: e["size"].as_u64().unwrap_or(0),
                allowed: e["allowed_hosts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h.as_str())
                    .filter(|h| valid_nqn(h))
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

impl Nvmet {
    /// Opens the target at `root` with the record in `data_dir`, dropping
    /// recorded items that no longer exist (the machine rebooted). Call
    /// [`Nvmet::sync`] next to serve the saved exports.
    pub fn open(root: &Path, data_dir: &Path) -> Result<Nvmet, Error> {
        if !root.join("subsystems").is_dir() || !root.join("ports").is_dir() {
            return Err(Error::NoTarget {
                root: root.to_path_buf(),
            });
        }
        let record = data_dir.join("nvmet.json");
        let mut n = Nvmet {
            root: root.to_path_buf(),
            configfs: is_configfs(root),
            record: record.clone(),
            subs: BTreeMap::new(),
            ports: Vec::new(),
            outage: false,
        };
        match fs::read(&record) {
            Ok(bytes) => n.load(&bytes).map_err(|reason| Error::Record {
                path: record.clone(),
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(cfs("read", &record)(e)),
        }
        let before = (n.subs.len(), n.ports.len());
        n.subs.retain(|nqn, _| root.join("subsystems").join(nqn).is_dir());
        n.ports
            .retain(|p| root.join("ports").join(p.id.to_string()).is_dir());
        log::info!(
            "nvmet: serving exports through {} ({}); adopted {} subsystem(s) and {} port(s) of {} and {} recorded",
            root.display(),
            if n.configfs { "configfs" } else { "a plain directory" },
            n.subs.len(),
            n.ports.len(),
            before.0,
            before.1
        );
        n.save()?;
        Ok(n)
    }

    fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        for (nqn, s) in v["subsystems"].as_object().into_iter().flatten() {
            if !valid_nqn(nqn) {
                return Err(format!("subsystem name {nqn:?} is not an NQN"));
            }
            self.subs.insert(
                nqn.clone(),
                OwnedSub {
                    backing: s["backing_file"].as_str().unwrap_or("").to_string(),
                    size: s["size"].as_u64().unwrap_or(0),
                },
            );
        }
        for p in v["ports"].as_array().into_iter().flatten() {
            let id = p["id"].as_u64().and_then(|i| u32::try_from(i).ok());
            let port = p["port"].as_u64().and_then(|i| u16::try_from(i).ok());
            let (Some(id), Some(port)) = (id, port) else {
                return Err(format!("port entry {p} lacks id or port"));
            };
            self.ports.push(OwnedPort {
                id,
                addr: p["addr"].as_str().unwrap_or("").to_string(),
                port,
            });
        }
        Ok(())
    }

    fn to_json(&self) -> Value {
        let subs: serde_json::Map<String, Value> = self
            .subs
            .iter()
            .map(|(nqn, s)| (nqn.clone(), json!({ "backing_file": s.backing, "size": s.size })))
            .collect();
        json!({
            "subsystems": subs,
            "ports": self.ports.iter().map(|p| json!({ "id": p.id, "addr": p.addr, "port": p.port })).collect::<Vec<_>>(),
        })
    }

    /// Writes the record (temporary file, fsync, rename): before anything
    /// is made in configfs, so a crash never leaves an unrecorded item.
    fn save(&self) -> Result<(), Error> {
        let tmp = self.record.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.to_json()).unwrap_or_default();
        let mut f = fs::File::create(&tmp).map_err(cfs("create", &tmp))?;
        f.write_all(&text).map_err(cfs("write", &tmp))?;
        f.sync_all().map_err(cfs("sync", &tmp))?;
        fs::rename(&tmp, &self.record).map_err(cfs("rename", &self.record))
    }

    /// What `GET /sim/nvmet` shows.
    pub fn status(&self) -> Value {
        let mut v = self.to_json();
        v["outage"] = Value::Bool(self.outage);
        v["root"] = Value::String(self.root.display().to_string());
        v
    }

    pub fn set_outage(&mut self, outage: bool) {
        if self.outage != outage {
            log::info!(
                "nvmet: outage {}",
                if outage {
                    "begins: every export unlinked"
                } else {
                    "ends: exports linked again"
                }
            );
        }
        self.outage = outage;
    }

    fn port_dir(&self, id: u32) -> PathBuf {
        self.root.join("ports").join(id.to_string())
    }

    fn sub_dir(&self, nqn: &str) -> PathBuf {
        self.root.join("subsystems").join(nqn)
    }

    /// Makes the kernel target serve exactly `exports` (the content of
    /// `exports.json`) on what this module owns; outage: nothing linked.
    /// Every step is checked against what is there, so calling it twice
    /// changes nothing the second time. Stops at the first failure (the
    /// next change retries).
    pub fn sync(&mut self, exports: &Value) -> Result<(), Error> {
        let mut wanted = exports_of(exports);
        wanted.retain(|e| {
            let ok = valid_nqn(&e.nqn);
            if !ok {
                log::warn!("nvmet: not exporting {:?}: not a valid NQN", e.nqn);
            }
            ok
        });
        // Subsystems no longer wanted, or now on another file, go first.
        let stale: Vec<String> = self
            .subs
            .iter()
            .filter(|(nqn, s)| !wanted.iter().any(|e| &e.nqn == *nqn && e.backing == s.backing))
            .map(|(nqn, _)| nqn.clone())
            .collect();
        for nqn in stale {
            self.remove_subsystem(&nqn)?;
        }
        // Links on our ports that should not be there.
        for p in self.ports.clone() {
            let dir = self.port_dir(p.id).join("subsystems");
            for entry in fs::read_dir(&dir).map_err(cfs("list", &dir))? {
                let entry = entry.map_err(cfs("list", &dir))?;
                let nqn = entry.file_name().to_string_lossy().into_owned();
                let keep = !self.outage
                    && wanted
                        .iter()
                        .any(|e| e.nqn == nqn && e.addr == p.addr && e.port == p.port);
                if !keep && self.subs.contains_key(&nqn) {
                    let link = entry.path();
                    fs::remove_file(&link).map_err(cfs("unlink", &link))?;
                    log::info!(
                        "nvmet: {nqn} no longer served on port {} ({}:{})",
                        p.id,
                        p.addr,
                        p.port
                    );
                }
            }
        }
        for e in &wanted {
            if !self.ensure_subsystem(e)? {
                continue;
            }
            let id = self.ensure_port(&e.addr, e.port)?;
            if !self.outage {
                let link = self.port_dir(id).join("subsystems").join(&e.nqn);
                if fs::symlink_metadata(&link).is_err() {
                    let sub = self.sub_dir(&e.nqn);
                    symlink(&sub, &link).map_err(cfs("link", &link))?;
                    log::info!("nvmet: {} served on {}:{} (port {id})", e.nqn, e.addr, e.port);
                }
            }
        }
        // Ports no export needs any more, when nothing else is linked there.
        for p in self.ports.clone() {
            if wanted.iter().any(|e| e.addr == p.addr && e.port == p.port) {
                continue;
            }
            let dir = self.port_dir(p.id);
            let linked = fs::read_dir(dir.join("subsystems"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if linked {
                log::warn!(
                    "nvmet: port {} still has subsystems linked by someone else: kept",
                    p.id
                );
                continue;
            }
            self.remove_item(&dir, &["subsystems", "referrals", "ana_groups"])?;
            self.ports.retain(|q| q.id != p.id);
            self.save()?;
            log::info!("nvmet: port {} ({}:{}) removed", p.id, p.addr, p.port);
        }
        Ok(())
    }

    /// Makes (or checks) the subsystem of `e`; false when a subsystem of
    /// that name exists that this module did not make (left alone).
    fn ensure_subsystem(&mut self, e: &Export) -> Result<bool, Error> {
        let dir = self.sub_dir(&e.nqn);
        let ns = dir.join("namespaces").join("1");
        match self.subs.get(&e.nqn).cloned() {
            None if dir.exists() => {
                log::warn!(
                    "nvmet: a subsystem {} exists that rds-sim did not make: not touching it",
                    e.nqn
                );
                return Ok(false);
            }
            None => {
                self.subs.insert(
                    e.nqn.clone(),
                    OwnedSub {
                        backing: e.backing.clone(),
                        size: e.size,
                    },
                );
                self.save()?;
                fs::create_dir(&dir).map_err(cfs("create", &dir))?;
                if !self.configfs {
                    for child in ["namespaces", "allowed_hosts"] {
                        let c = dir.join(child);
                        fs::create_dir_all(&c).map_err(cfs("create", &c))?;
                    }
                }
                write_attr(&dir.join("attr_allow_any_host"), "1")?;
                write_attr(&dir.join("attr_serial"), &identities(&e.nqn).0)?;
                log::info!("nvmet: subsystem {} made on {}", e.nqn, e.backing);
            }
            Some(owned) => {
                if e.size > owned.size && read_attr(&ns.join("enable")) == "1" {
                    write_attr(&ns.join("revalidate_size"), "1")?;
                    log::info!(
                        "nvmet: {} grew from {} to {} bytes: size revalidated",
                        e.nqn,
                        owned.size,
                        e.size
                    );
                }
                if e.size != owned.size {
                    if let Some(s) = self.subs.get_mut(&e.nqn) {
                        s.size = e.size;
                    }
                    self.save()?;
                }
            }
        }
        self.sync_hosts(e)?;
        if read_attr(&ns.join("enable")) != "1" {
            // Made now, or a crash came between mkdir and enable.
            if !ns.is_dir() {
                fs::create_dir(&ns).map_err(cfs("create", &ns))?;
            }
            write_attr(&ns.join("device_path"), &e.backing)?;
            let (_, uuid, nguid) = identities(&e.nqn);
            write_attr(&ns.join("device_uuid"), &uuid)?;
            write_attr(&ns.join("device_nguid"), &nguid)?;
            let buffered = !direct_io_works(Path::new(&e.backing));
            write_attr(&ns.join("buffered_io"), if buffered { "1" } else { "0" })?;
            write_attr(&ns.join("enable"), "1")?;
        }
        Ok(true)
    }

    /// Makes the subsystem's host access what the disk says: any host when
    /// its allow list is empty, else only the listed ones. The list is
    /// narrowed before any-host is turned off and widened after it is on,
    /// so no moment allows a host the disk does not.
    fn sync_hosts(&mut self, e: &Export) -> Result<(), Error> {
        let dir = self.sub_dir(&e.nqn);
        let links = dir.join("allowed_hosts");
        let any = read_attr(&dir.join("attr_allow_any_host")) == "1";
        if !e.allowed.is_empty() && any {
            // Close first: nothing is allowed until the links are in.
            write_attr(&dir.join("attr_allow_any_host"), "0")?;
            log::info!("nvmet: {} now allows only {:?}", e.nqn, e.allowed);
        }
        let have: Vec<String> = fs::read_dir(&links)
            .map(|d| {
                d.flatten()
                    .map(|x| x.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for h in &have {
            if !e.allowed.contains(h) {
                let link = links.join(h);
                fs::remove_file(&link).map_err(cfs("unlink", &link))?;
                log::info!("nvmet: {} no longer allows {h}", e.nqn);
            }
        }
        for h in &e.allowed {
            if have.contains(h) {
                continue;
            }
            let host = self.root.join("hosts").join(h);
            if !host.is_dir() {
                fs::create_dir_all(&host).map_err(cfs("create", &host))?;
            }
            let link = links.join(h);
            symlink(&host, &link).map_err(cfs("link", &link))?;
            log::info!("nvmet: {} allows {h}", e.nqn);
        }
        if e.allowed.is_empty() && !any {
            write_attr(&dir.join("attr_allow_any_host"), "1")?;
            log::info!("nvmet: {} allows any host", e.nqn);
        }
        Ok(())
    }

    /// The id of our port at addr:port, made when there is none.
    fn ensure_port(&mut self, addr: &str, port: u16) -> Result<u32, Error> {
        if let Some(p) = self.ports.iter().find(|p| p.addr == addr && p.port == port) {
            return Ok(p.id);
        }
        let ports = self.root.join("ports");
        let id = (1u32..)
            .find(|i| !ports.join(i.to_string()).exists() && !self.ports.iter().any(|p| p.id == *i))
            .unwrap_or(u32::MAX);
        self.ports.push(OwnedPort {
            id,
            addr: addr.to_string(),
            port,
        });
        self.save()?;
        let dir = self.port_dir(id);
        fs::create_dir(&dir).map_err(cfs("create", &dir))?;
        if !self.configfs {
            let c = dir.join("subsystems");
            fs::create_dir_all(&c).map_err(cfs("create", &c))?;
        }
        let family = if addr.contains(':') { "ipv6" } else { "ipv4" };
        write_attr(&dir.join("addr_trtype"), "tcp")?;
        write_attr(&dir.join("addr_adrfam"), family)?;
        write_attr(&dir.join("addr_traddr"), addr)?;
        write_attr(&dir.join("addr_trsvcid"), &port.to_string())?;
        log::info!("nvmet: port {id} made for {addr}:{port}");
        Ok(id)
    }

    /// Unlinks an owned subsystem from our ports, disables and removes its
    /// namespace, removes it, forgets it.
    fn remove_subsystem(&mut self, nqn: &str) -> Result<(), Error> {
        for p in &self.ports {
            let link = self.port_dir(p.id).join("subsystems").join(nqn);
            if fs::symlink_metadata(&link).is_ok() {
                fs::remove_file(&link).map_err(cfs("unlink", &link))?;
            }
        }
        let dir = self.sub_dir(nqn);
        let ns = dir.join("namespaces").join("1");
        if ns.is_dir() {
            if read_attr(&ns.join("enable")) == "1" {
                write_attr(&ns.join("enable"), "0")?;
            }
            self.remove_item(&ns, &[])?;
        }
        // Host links go before the subsystem (configfs refuses otherwise).
        if let Ok(links) = fs::read_dir(dir.join("allowed_hosts")) {
            for link in links.flatten() {
                let path = link.path();
                fs::remove_file(&path).map_err(cfs("unlink", &path))?;
            }
        }
        if dir.is_dir() {
            self.remove_item(&dir, &["namespaces", "allowed_hosts", "passthru"])?;
        }
        self.subs.remove(nqn);
        self.save()?;
        log::info!("nvmet: subsystem {nqn} removed");
        Ok(())
    }

    /// `rmdir` of a configfs item; on a plain directory, its attribute
    /// files and default `children` go first, as configfs does itself.
    fn remove_item(&self, dir: &Path, children: &[&str]) -> Result<(), Error> {
        if !self.configfs {
            for entry in fs::read_dir(dir).map_err(cfs("list", dir))?.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if children.iter().any(|c| name == std::ffi::OsStr::new(c)) {
                    fs::remove_dir(&path).map_err(cfs("remove", &path))?;
                } else if path.is_file() {
                    fs::remove_file(&path).map_err(cfs("remove", &path))?;
                }
            }
        }
        match fs::remove_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(cfs("remove", dir)(e)),
            _ => Ok(()),
        }
    }
}

/// An error with its causes, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// SIGUSR1 (outage begins) and SIGUSR2 (it ends): the same as `POST
/// /sim/nvmet`, for a shell with no HTTP client.
pub fn outage_signal(app: &crate::api::App, outage: bool) {
    if app.store().nvmet_outage(Some(outage)).is_none() {
        log::warn!("outage signal ignored: rds-sim runs without --nvmet");
    }
}

impl crate::api::App {
    /// `GET /sim/nvmet` (what is served, whether an outage is on) and
    /// `POST /sim/nvmet {"outage": true|false}`.
    pub fn nvmet_control(
        &self,
        method: &str,
        body: &serde_json::Map<String, Value>,
    ) -> crate::http::Response {
        use crate::http::Response;
        let outage = match (method, body.get("outage")) {
            ("GET", _) | ("POST", None) => None,
            ("POST", Some(Value::Bool(b))) => Some(*b),
            ("POST", Some(_)) => {
                return Response::json(400, &json!({ "error": "outage must be true or false" }))
            }
            _ => return Response::json(405, &json!({ "error": "GET or POST" })),
        };
        match self.store().nvmet_outage(outage) {
            Some(status) => Response::json(200, &status),
            None => Response::json(400, &json!({ "error": "rds-sim runs without --nvmet" })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch {
        dir: PathBuf,
    }

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("rds-sim-nvmet-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            for d in ["nvmet/subsystems", "nvmet/ports", "data"] {
                fs::create_dir_all(dir.join(d)).unwrap();
            }
            Scratch { dir }
        }
        fn root(&self) -> PathBuf {
            self.dir.join("nvmet")
        }
        fn data(&self) -> PathBuf {
            self.dir.join("data")
        }
        fn backing(&self, name: &str, size: u64) -> String {
            let p = self.data().join(name);
            fs::File::create(&p).unwrap().set_len(size).unwrap();
            p.display().to_string()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn exports(list: &[(&str, u16, &str, u64)]) -> Value {
        json!({
            "nvme_address": "127.0.0.1",
            "exports": list.iter().map(|(nqn, port, file, size)| json!({
                "nqn": nqn, "port": port, "slot": "x", "backing_file": file, "size": size,
            })).collect::<Vec<_>>(),
        })
    }

    const A: &str = "nqn.2000-02.com.mikrotik:pvc-a";
    const B: &str = "nqn.2000-02.com.mikrotik:pvc-b";

    #[test]
    fn an_export_becomes_a_subsystem_a_port_and_a_link_and_goes_away_with_it() {
        let s = Scratch::new("life");
        let file = s.backing("a.img", 1 << 20);
        let mut n = Nvmet::open(&s.root(), &s.data()).unwrap();
        n.sync(&exports(&[(A, 4420, &file, 1 << 20)])).unwrap();
        let sub = s.root().join("subsystems").join(A);
        assert_eq!(read_attr(&sub.join("attr_allow_any_host")), "1");
        assert_eq!(read_attr(&sub.join("namespaces/1/device_path")), file);
        assert_eq!(read_attr(&sub.join("namespaces/1/enable")), "1");
        let port = s.root().join("ports/1");
        assert_eq!(read_attr(&port.join("addr_traddr")), "127.0.0.1");
        assert_eq!(read_attr(&port.join("addr_trsvcid")), "4420");
        assert_eq!(read_attr(&port.join("addr_trtype")), "tcp");
        assert_eq!(fs::read_link(port.join("subsystems").join(A)).unwrap(), sub);
        // Twice: nothing changes.
        n.sync(&exports(&[(A, 4420, &file, 1 << 20)])).unwrap();
        assert!(!s.root().join("ports/2").exists());
        // Export off: unlinked, subsystem and port gone.
        n.sync(&exports(&[])).unwrap();
        assert!(!sub.exists());
        assert!(!port.exists());
        assert_eq!(n.status()["subsystems"], json!({}));
    }

    #[test]
    fn an_allow_list_closes_the_subsystem_to_other_hosts_and_opening_it_again() {
        let t = Scratch::new("acl");
        let mut n = Nvmet::open(&t.root(), &t.data()).unwrap();
        let file = t.backing("a.img", 1 << 20);
        let nqn = "nqn.2000-02.com.mikrotik:pvc-acl";
        let with_hosts = |hosts: &[&str]| {
            let mut v = exports(&[(nqn, 4420, file.as_str(), 1 << 20)]);
            v["exports"][0]["allowed_hosts"] = json!(hosts);
            v
        };
        let sub = t.root().join("subsystems").join(nqn);
        let (h1, h2) = (
            "nqn.2014-08.org.nvmexpress:uuid:1",
            "nqn.2014-08.org.nvmexpress:uuid:2",
        );
        n.sync(&with_hosts(&[h1, h2])).unwrap();
        assert_eq!(read_attr(&sub.join("attr_allow_any_host")), "0");
        let linked = |h: &str| fs::symlink_metadata(sub.join("allowed_hosts").join(h)).is_ok();
        assert!(linked(h1) && linked(h2));
        assert!(t.root().join("hosts").join(h1).is_dir());
        n.sync(&with_hosts(&[h2])).unwrap();
        assert!(!linked(h1) && linked(h2));
        assert_eq!(read_attr(&sub.join("attr_allow_any_host")), "0");
        n.sync(&with_hosts(&[])).unwrap();
        assert!(!linked(h2));
        assert_eq!(read_attr(&sub.join("attr_allow_any_host")), "1");
        n.sync(&with_hosts(&[h1])).unwrap();
        // Unexported: the subsystem and its host links go.
        n.sync(&exports(&[])).unwrap();
        assert!(!sub.exists());
    }

    #[test]
    fn identities_are_stable_per_nqn_and_differ_between_nqns() {
        let s = Scratch::new("ids");
        let file = s.backing("a.img", 1 << 20);
        let mut n = Nvmet::open(&s.root(), &s.data()).unwrap();
        n.sync(&exports(&[(A, 4420, &file, 1 << 20), (B, 4420, &file, 1 << 20)]))
            .unwrap();
        let ns = s.root().join("subsystems").join(A).join("namespaces/1");
        let uuid = read_attr(&ns.join("device_uuid"));
        assert_eq!(uuid.len(), 36, "{uuid}");
        assert_eq!(&uuid[14..15], "8", "{uuid}");
        assert_eq!(read_attr(&ns.join("device_nguid")).len(), 36);
        let serial = read_attr(&s.root().join("subsystems").join(A).join("attr_serial"));
        assert_eq!(serial.len(), 20);
        // A reboot makes the subsystem anew with the same identities.
        n.sync(&exports(&[])).unwrap();
        n.sync(&exports(&[(A, 4420, &file, 1 << 20)])).unwrap();
        assert_eq!(read_attr(&ns.join("device_uuid")), uuid);
        let other = s
            .root()
            .join("subsystems")
            .join(B)
            .join("namespaces/1/device_uuid");
        n.sync(&exports(&[(A, 4420, &file, 1 << 20), (B, 4420, &file, 1 << 20)]))
            .unwrap();
        assert_ne!(read_attr(&other), uuid);
        assert_eq!(identities(A), identities(A));
    }

    #[test]
    fn a_grown_file_is_revalidated_once() {
        let s = Scratch::new("grow");
        let file = s.backing("a.img", 1 << 20);
        let mut n = Nvmet::open(&s.root(), &s.data()).unwrap();
        n.sync(&exports(&[(A, 4420, &file, 1 << 20)])).unwrap();
        let reval = s
            .root()
            .join("subsystems")
            .join(A)
            .join("namespaces/1/revalidate_size");
        assert!(!reval.exists());
        n.sync(&exports(&[(A, 4420, &file, 2 << 20)])).unwrap();
        assert_eq!(read_attr(&reval), "1");
        fs::remove_file(&reval).unwrap();
        n.sync(&exports(&[(A, 4420, &file, 2 << 20)])).unwrap();
        assert!(!reval.exists(), "no second revalidation without a change");
    }

    #[test]
    fn foreign_subsystems_and_links_are_never_touched() {
        let s = Scratch::new("foreign");
        let file = s.backing("a.img", 1 << 20);
        // Someone else's subsystem with a wanted name, and one of its own.
        let theirs = s.root().join("subsystems").join(A);
        fs::create_dir_all(theirs.join("namespaces")).unwrap();
        fs::write(theirs.join("attr_allow_any_host"), "0\n").unwrap();
        let other = s.root().join("subsystems/nqn.2024-01.io.example:other");
        fs::create_dir_all(&other).unwrap();
        let mut n = Nvmet::open(&s.root(), &s.data()).unwrap();
        n.sync(&exports(&[(A, 4420, &file, 1 << 20), (B, 4420, &file, 1 << 20)]))
            .unwrap();
        assert_eq!(read_attr(&theirs.join("attr_allow_any_host")), "0");
        assert!(!s.root().join("ports/1/subsystems").join(A).exists());
        // Someone links their subsystem into our port: kept, and the port too.
        symlink(
            &other,
            s.root().join("ports/1/subsystems/nqn.2024-01.io.example:other"),
        )
        .unwrap();
        n.sync(&exports(&[])).unwrap();
        assert!(theirs.exists() && other.exists());
        assert!(s
            .root()
            .join("ports/1/subsystems/nqn.2024-01.io.example:other")
            .exists());
        assert!(!s.root().join("subsystems").join(B).exists());
    }

    #[test]
    fn an_outage_unlinks_and_the_end_of_it_links_again() {
        let s = Scratch::new("outage");
        let file = s.backing("a.img", 1 << 20);
        let mut n = Nvmet::open(&s.root(), &s.data()).unwrap();
        let want = exports(&[(A, 4420, &file, 1 << 20)]);
        n.sync(&want).unwrap();
        let link = s.root().join("ports/1/subsystems").join(A);
        n.set_outage(true);
        n.sync(&want).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(
            s.root().join("subsystems").join(A).exists(),
            "the subsystem stays"
        );
        n.set_outage(false);
        n.sync(&want).unwrap();
        assert!(fs::symlink_metadata(&link).is_ok());
    }

    #[test]
    fn a_restart_adopts_its_leftovers_and_drops_what_vanished() {
        let s = Scratch::new("restart");
        let file = s.backing("a.img", 1 << 20);
        let mut n = Nvmet::open(&s.root(), &s.data()).unwrap();
        n.sync(&exports(&[(A, 4420, &file, 1 << 20), (B, 4421, &file, 1 << 20)]))
            .unwrap();
        drop(n);
        // As after SIGKILL: everything still there; B no longer wanted.
        let mut n = Nvmet::open(&s.root(), &s.data()).unwrap();
        n.sync(&exports(&[(A, 4420, &file, 1 << 20)])).unwrap();
        assert!(s.root().join("ports/1/subsystems").join(A).exists());
        assert!(!s.root().join("subsystems").join(B).exists());
        assert!(!s.root().join("ports/2").exists());
        assert!(
            !s.root().join("ports/3").exists(),
            "no second port for the same address"
        );
        // As after a reboot: the kernel state is gone; the record is
        // pruned and the export made again.
        fs::remove_dir_all(s.root()).unwrap();
        fs::create_dir_all(s.root().join("subsystems")).unwrap();
        fs::create_dir_all(s.root().join("ports")).unwrap();
        let mut n = Nvmet::open(&s.root(), &s.data()).unwrap();
        assert_eq!(n.status()["subsystems"], json!({}));
        n.sync(&exports(&[(A, 4420, &file, 1 << 20)])).unwrap();
        assert!(s.root().join("ports/1/subsystems").join(A).exists());
    }

    #[test]
    fn names_that_are_paths_are_not_exported() {
        let s = Scratch::new("names");
        let file = s.backing("a.img", 1 << 20);
        let mut n = Nvmet::open(&s.root(), &s.data()).unwrap();
        n.sync(&exports(&[
            ("../../evil", 4420, &file, 1),
            ("..", 4420, &file, 1),
            ("a b", 4420, &file, 1),
        ]))
        .unwrap();
        assert_eq!(fs::read_dir(s.root().join("subsystems")).unwrap().count(), 0);
        assert!(valid_nqn(A));
        assert!(!valid_nqn(&"x".repeat(224)));
    }

    #[test]
    fn a_missing_target_is_said_plainly() {
        let s = Scratch::new("none");
        let e = Nvmet::open(&s.dir.join("nope"), &s.data()).err().unwrap();
        assert!(e.to_string().contains("load nvmet"), "{e}");
    }
}
