//! The emulated RDS's storage: the pool, file disks backed by real sparse files, `/file` entries, RouterOS's rules and answers, and atomic persistence (`state.json`, `exports.json`).
//!
//! Files under `<data-dir>`:
//! - `state.json`: every disk and file entry with its `.id`; rewritten
//!   atomically (write, fsync, rename, fsync dir) after every change and read
//!   at start, so killing the emulator is an RDS reboot that loses nothing.
//! - `files/<name>`: the real contents of `/file` entries; a disk's backing
//!   file `storage-pool/csi/pvc-x.img` is the sparse file
//!   `<data-dir>/files/storage-pool/csi/pvc-x.img`.
//! - `exports.json`: what the fake NVMe fabric needs, rewritten atomically on
//!   every change:
//!   ```json
//!   {"nvme_address": "127.0.0.1",
//!    "exports": [{"nqn": "nqn.2000-02.com.mikrotik:pvc-1", "port": 4420,
//!                 "slot": "pvc-1",
//!                 "backing_file": "/abs/data-dir/files/storage-pool/csi/pvc-1.img",
//!                 "size": 1073741824}]}
//!   ```
//!   One entry per disk with `nvme-tcp-export=true`, in `.id` order; `size`
//!   is the backing file's size in bytes, `port` a JSON number;
//!   `allowed_hosts` the host NQNs of `nvme-tcp-server-allow-host-name`
//!   read as a comma-separated list (how RouterOS reads the field is
//!   unverified; this is the driver's `--nvme-host-acl` format), `[]` when
//!   unset: any host.
//!
//! Guessed RouterOS behaviour (not in MikroTik's reference; the client is
//! written so a wrong guess fails loudly): the exact `detail` texts for a
//! duplicate slot, a file in use, a shrink, a non-empty directory and a slot
//! over the length limit; `DELETE` answering 204; `disk add` creating parent
//! directories and reusing an existing file at `file-path`; non-string JSON
//! values refused; `file-path` required to be on the pool; the pool's `free`
//! counting every file at its full (not sparse) size.

use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::faults::FileSizeMode;

mod disks;
mod files;
mod subvolume;

use subvolume::SubvolRec;

/// What the emulated box is; fixed for a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute.
    pub data_dir: PathBuf,
    pub pool_slot: String,
    pub pool_fs: String,
    /// The pool filesystem's label (`fs-label`); RouterOS's default after
    /// formatting is `<slot>-fs`.
    pub pool_fs_label: String,
    pub pool_size: u64,
    pub version: String,
    pub board_name: String,
    pub nvme_address: String,
    pub max_slot_len: usize,
}

/// A RouterOS answer to a refused request: HTTP status and `detail`.
#[derive(Debug)]
pub enum Error {
    /// GET/PATCH of an id that does not exist.
    NoSuchItem,
    /// DELETE of an id that does not exist (RouterOS gives no detail).
    NotFound,
    InvalidValue {
        argument: String,
    },
    UnknownParameter {
        name: String,
    },
    MissingArgument {
        name: &'static str,
    },
    SlotExists,
    FileExists,
    FileInUse {
        slot: String,
    },
    NotEnoughSpace,
    ShrinkDisk,
    /// `file-size` of an existing disk cannot change (the `file_size:
    /// refuse` fault; wording guessed).
    FileSizeFixed,
    DirectoryNotEmpty,
    /// The pool or its mount point cannot be changed or removed.
    Protected {
        what: String,
    },
    /// `.query` words the emulator does not understand.
    UnsupportedQuery {
        word: String,
    },
    /// A value that names nothing there is (`fs` of an unknown label).
    NoSuchValue {
        argument: String,
    },
    /// A subvolume or file of that name exists.
    SubvolumeExists,
    /// A snapshot's `parent` is not a subvolume.
    NotASubvolume {
        name: String,
    },
    /// A disk's backing file is inside the subvolume.
    SubvolumeInUse {
        slot: String,
    },
    /// Writing into a read-only subvolume (snapshot).
    ReadOnlySubvolume {
        name: String,
    },
    /// A subvolume's directory is removed under `/disk/btrfs/subvolume`.
    IsSubvolume,
    /// The emulator's own storage failed.
    Storage {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchItem => f.write_str("no such item"),
            Error::NotFound => f.write_str("not found"),
            Error::InvalidValue { argument } => {
                write!(f, "invalid value for argument {argument}")
            }
            Error::UnknownParameter { name } => write!(f, "unknown parameter {name}"),
            Error::MissingArgument { name } => {
                write!(f, "missing value(s) of argument(s) {name}")
            }
            Error::SlotExists => f.write_str("failure: item with such slot already exists"),
            Error::FileExists => f.write_str("failure: file already exists"),
            Error::FileInUse { slot } => write!(f, "failure: file is in use by disk {slot}"),
            Error::NotEnoughSpace => f.write_str("failure: not enough space"),
            Error::ShrinkDisk => f.write_str("failure: file-size cannot be decreased"),
            Error::FileSizeFixed => f.write_str("failure: cannot change file-size"),
            Error::DirectoryNotEmpty => f.write_str("failure: directory is not empty"),
            Error::Protected { what } => write!(f, "failure: cannot change {what}"),
            Error::UnsupportedQuery { word } => {
                write!(f, "failure: rds-sim does not support the query {word:?}")
            }
            Error::NoSuchValue { argument } => write!(f, "input does not match any value of {argument}"),
            Error::SubvolumeExists => f.write_str("failure: subvolume already exists"),
            Error::NotASubvolume { name } => write!(f, "failure: {name} is not a subvolume"),
            Error::SubvolumeInUse { slot } => {
                write!(f, "failure: subvolume is in use by disk {slot}")
            }
            Error::ReadOnlySubvolume { name } => {
                write!(f, "failure: subvolume {name} is read-only")
            }
            Error::IsSubvolume => f.write_str("failure: is a subvolume, remove it in /disk btrfs subvolume"),
            Error::Storage { op, path, source } => {
                write!(f, "failure: {op} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Storage { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// The HTTP status RouterOS answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::NoSuchItem | Error::NotFound => 404,
            Error::Storage { .. } => 500,
            _ => 400,
        }
    }

    /// RouterOS's `detail`, absent for a plain 404.
    pub fn detail(&self) -> Option<String> {
        match self {
            Error::NotFound => None,
            other => Some(other.to_string()),
        }
    }
}

fn storage<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Storage {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq)]
struct DiskRec {
    id: u32,
    slot: String,
    /// Without the leading `/`.
    file_path: String,
    mount_filesystem: bool,
    comment: String,
    export: bool,
    port: u16,
    nqn: Option<String>,
    allow_host: Option<String>,
    /// Documented writable fields the emulator keeps and prints back but
    /// gives no meaning (`compress`, `mount-read-only`, `file-offset`,
    /// `disabled`, ...), as RouterOS prints them.
    extra: Map<String, Value>,
    /// `nvme-tcp-server-password`: kept, never printed (RouterOS prints a
    /// read-only `nvme-tcp-server-secret` instead; unverified).
    password: Option<String>,
}

/// Writable `/disk` fields the emulator accepts beyond the ones it acts on:
/// name, how the value is checked, and the RouterOS version that has it
/// (`None`: as old as file disks). Taken from the 7.24 field list in
/// docs/routeros.md; `compress` is Btrfs only and 7.18+.
const EXTRA_FIELDS: &[(&str, ExtraKind, Option<Since>)] = &[
    ("compress", ExtraKind::Bool, Some((7, 18))),
    ("mount-read-only", ExtraKind::Bool, None),
    ("file-offset", ExtraKind::Size, None),
    ("disabled", ExtraKind::Bool, None),
    ("iscsi-export", ExtraKind::Bool, None),
    ("nfs-sharing", ExtraKind::Bool, None),
    ("smb-sharing", ExtraKind::Bool, None),
    ("media-sharing", ExtraKind::Bool, None),
    ("swap", ExtraKind::Bool, None),
];

/// A RouterOS version (major, minor) a field first appeared in.
type Since = (u32, u32);

/// How an extra field's value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtraKind {
    Bool,
    Size,
}

/// `nvme-tcp-server-password` arrived with the NVMe/TCP server fields
/// (guessed: with `nvme-tcp-server-nqn`, 7.21).
const PASSWORD_SINCE: (u32, u32) = (7, 21);

#[derive(Debug, Clone, PartialEq)]
struct FileRec {
    id: u32,
    name: String,
    dir: bool,
    modified: u64,
}

/// The whole persistent state of the emulated RDS.
pub struct Store {
    cfg: Config,
    started: Instant,
    started_at: u64,
    next_disk: u32,
    next_file: u32,
    disks: Vec<DiskRec>,
    files: Vec<FileRec>,
    next_subvol: u32,
    subvolumes: Vec<SubvolRec>,
    /// Subvolumes are real Btrfs ones (`files/` is on Btrfs).
    btrfs_real: bool,
    /// With `--nvmet`: the kernel target, told the exports on every save.
    nvmet: Option<RefCell<crate::nvmet::Nvmet>>,
}

/// `.id` of the pool's own `/disk` entry and of its mount point in `/file`.
const POOL_ID: u32 = 1;
const FIRST_ID: u32 = 2;

fn ros_id(id: u32) -> String {
    format!("*{id:X}")
}

/// `*1F` → 31.
pub fn parse_id(text: &str) -> Option<u32> {
    u32::from_str_radix(text.strip_prefix('*')?, 16).ok()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2025-01-31 12:34:56` (UTC), RouterOS's date style.
fn format_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `1w2d3h4m5s`, RouterOS's uptime style.
fn format_uptime(secs: u64) -> String {
    let mut out = String::new();
    let parts = [
        (secs / 604_800, 'w'),
        (secs / 86_400 % 7, 'd'),
        (secs / 3600 % 24, 'h'),
        (secs / 60 % 60, 'm'),
    ];
    for (n, unit) in parts {
        if n > 0 || !out.is_empty() {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out.push_str(&format!("{}s", secs % 60));
    out
}

/// Bytes from `1073741824`, `1G`, `512M`, `4K`, `1T` (binary units).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, mult) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&text[..i], 1 << 20),
        (i, 'G' | 'g') => (&text[..i], 1 << 30),
        (i, 'T' | 't') => (&text[..i], 1 << 40),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// `7.24.4 (stable)` → (7, 24).
fn version_of(text: &str) -> (u32, u32) {
    let word = text.split_whitespace().next().unwrap_or("");
    let mut parts = word.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .unwrap_or(0)
    });
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// A `/file` name: relative, no `.`/`..`/empty parts, no leading `/`.
fn clean_name(text: &str) -> Option<String> {
    let name = text.trim_start_matches('/');
    if name.is_empty()
        || name.ends_with('/')
        || name
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\0'))
    {
        return None;
    }
    Some(name.to_string())
}

/// A request's writable fields: RouterOS takes every value as a string.
struct Params<'a>(&'a Map<String, Value>);

impl Params<'_> {
    fn check_known(&self, known: &[&str]) -> Result<(), Error> {
        for key in self.0.keys() {
            if key != ".id" && !known.contains(&key.as_str()) {
                return Err(Error::UnknownParameter { name: key.clone() });
            }
        }
        Ok(())
    }

    fn text(&self, name: &str) -> Result<Option<&str>, Error> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            // RouterOS's convention is strings; the emulator is strict so a
            // client sending numbers or booleans is caught in tests.
            Some(_) => Err(Error::InvalidValue {
                argument: name.to_string(),
            }),
        }
    }

    fn parsed<T>(&self, name: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, Error> {
        match self.text(name)? {
            None => Ok(None),
            Some(text) => parse(text).map(Some).ok_or_else(|| Error::InvalidValue {
                argument: name.to_string(),
            }),
        }
    }
}

fn parse_port(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p > 0)
}

impl Store {
    /// Loads `state.json` from the data directory, or starts empty.
    pub fn open(cfg: Config) -> Result<Store, Error> {
        let files_dir = cfg.data_dir.join("files");
        fs::create_dir_all(&files_dir).map_err(storage("create", &files_dir))?;
        let mut store = Store {
            cfg,
            started: Instant::now(),
            started_at: now_secs(),
            next_disk: FIRST_ID,
            next_file: FIRST_ID,
            disks: Vec::new(),
            files: Vec::new(),
            next_subvol: FIRST_ID,
            subvolumes: Vec::new(),
            btrfs_real: false,
            nvmet: None,
        };
        store.btrfs_real = store.cfg.pool_fs == "btrfs" && subvolume::on_btrfs(&files_dir);
        if store.btrfs_real {
            log::info!("{} is on btrfs: subvolumes are real", files_dir.display());
        }
        let path = store.state_path();
        match fs::read(&path) {
            Ok(bytes) => store.load(&bytes).map_err(|reason| Error::Storage {
                op: "load",
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, reason),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(storage("read", &path)(e)),
        }
        let pool_dir = store.real_path(&store.cfg.pool_slot);
        fs::create_dir_all(&pool_dir).map_err(storage("create", &pool_dir))?;
        store.save()?;
        Ok(store)
    }

    fn state_path(&self) -> PathBuf {
        self.cfg.data_dir.join("state.json")
    }

    pub fn exports_path(&self) -> PathBuf {
        self.cfg.data_dir.join("exports.json")
    }

    /// Where a `/file` name lives on the host.
    fn real_path(&self, name: &str) -> PathBuf {
        self.cfg.data_dir.join("files").join(name)
    }

    fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let num = |v: &Value, k: &str| -> Result<u64, String> {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("{k} missing"))
        };
        let text =
            |v: &Value, k: &str| -> String { v.get(k).and_then(Value::as_str).unwrap_or("").to_string() };
        let flag = |v: &Value, k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        self.next_disk = num(&v, "next_disk")? as u32;
        self.next_file = num(&v, "next_file")? as u32;
        for d in v.get("disks").and_then(Value::as_array).into_iter().flatten() {
            self.disks.push(DiskRec {
                id: num(d, "id")? as u32,
                slot: text(d, "slot"),
                file_path: text(d, "file_path"),
                mount_filesystem: flag(d, "mount_filesystem"),
                comment: text(d, "comment"),
                export: flag(d, "export"),
                port: num(d, "port")? as u16,
                nqn: d.get("nqn").and_then(Value::as_str).map(str::to_string),
                allow_host: d.get("allow_host").and_then(Value::as_str).map(str::to_string),
                extra: d
                    .get("extra")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                password: d.get("password").and_then(Value::as_str).map(str::to_string),
            });
        }
        for f in v.get("files").and_then(Value::as_array).into_iter().flatten() {
            self.files.push(FileRec {
                id: num(f, "id")? as u32,
                name: text(f, "name"),
                dir: flag(f, "dir"),
                modified: num(f, "modified")?,
            });
        }
        self.next_subvol = v
            .get("next_subvol")
            .and_then(Value::as_u64)
            .unwrap_or(FIRST_ID as u64) as u32;
        for s in v
            .get("subvolumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.subvolumes.push(SubvolRec {
                id: num(s, "id")? as u32,
                name: text(s, "name"),
                parent: s.get("parent").and_then(Value::as_str).map(str::to_string),
                read_only: flag(s, "read_only"),
            });
        }
        Ok(())
    }

    fn to_json(&self) -> Value {
        json!({
            "format": 1,
            "next_disk": self.next_disk,
            "next_file": self.next_file,
            "disks": self.disks.iter().map(|d| json!({
                "id": d.id, "slot": d.slot, "file_path": d.file_path,
                "mount_filesystem": d.mount_filesystem, "comment": d.comment,
                "export": d.export, "port": d.port, "nqn": d.nqn, "allow_host": d.allow_host,
                "extra": d.extra, "password": d.password,
            })).collect::<Vec<_>>(),
            "files": self.files.iter().map(|f| json!({
                "id": f.id, "name": f.name, "dir": f.dir, "modified": f.modified,
            })).collect::<Vec<_>>(),
            "next_subvol": self.next_subvol,
            "subvolumes": self.subvolumes.iter().map(|s| json!({
                "id": s.id, "name": s.name, "parent": s.parent, "read_only": s.read_only,
            })).collect::<Vec<_>>(),
        })
    }

    /// Writes `state.json` and `exports.json`, each atomically.
    fn save(&self) -> Result<(), Error> {
        write_atomic(&self.state_path(), &self.to_json())?;
        write_atomic(&self.exports_path(), &self.exports())?;
        self.sync_nvmet();
        Ok(())
    }

    // ---- --nvmet: the kernel target follows the exports (see nvmet.rs) ----

    /// Serves the exports through `nvmet` from now on, starting with the
    /// saved ones (an RDS reboot restores every export).
    pub fn attach_nvmet(&mut self, nvmet: crate::nvmet::Nvmet) {
        self.nvmet = Some(RefCell::new(nvmet));
        self.sync_nvmet();
    }

    /// Tells the kernel target the exports. A failure is logged, not
    /// answered: the change is saved, and the next change tries again.
    fn sync_nvmet(&self) {
        if let Some(n) = &self.nvmet {
            if let Err(e) = n.borrow_mut().sync(&self.exports()) {
                log::error!("{}", crate::nvmet::chain(&e));
            }
        }
    }

    /// `POST /sim/nvmet {"outage": bool}`; None without `--nvmet`.
    pub fn nvmet_outage(&mut self, outage: Option<bool>) -> Option<Value> {
        let n = self.nvmet.as_ref()?;
        if let Some(o) = outage {
            n.borrow_mut().set_outage(o);
            self.sync_nvmet();
        }
        let status = n.borrow().status();
        Some(status)
    }

    /// The content of `exports.json` (see the module comment).
    pub fn exports(&self) -> Value {
        let exports: Vec<Value> = self
            .disks
            .iter()
            .filter(|d| d.export)
            .map(|d| {
                json!({
                    "nqn": d.nqn.clone().unwrap_or_else(|| d.slot.clone()),
                    "port": d.port,
                    "slot": d.slot,
                    "backing_file": self.real_path(&d.file_path).display().to_string(),
                    "size": self.file_size(&d.file_path),
                    "allowed_hosts": allowed_hosts(d.allow_host.as_deref()),
                })
            })
            .collect();
        json!({ "nvme_address": self.cfg.nvme_address, "exports": exports })
    }

    fn file_size(&self, name: &str) -> u64 {
        fs::metadata(self.real_path(name)).map(|m| m.len()).unwrap_or(0)
    }

    /// Bytes the pool holds: the sizes of all regular files on it (a sparse
    /// file counts at its full size, as a thick-provisioned RDS would).
    fn used(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| !f.dir)
            .map(|f| self.file_size(&f.name))
            .sum()
    }

    fn version(&self) -> (u32, u32) {
        version_of(&self.cfg.version)
    }

    // ---- /system/resource -------------------------------------------------

    pub fn system_resource(&self) -> Value {
        let uptime = self.started.elapsed().as_secs();
        json!({
            "uptime": format_uptime(uptime),
            "version": self.cfg.version,
            "build-time": "2025-01-01 00:00:00",
            "factory-software": "7.15",
            "free-memory": "30064771072",
            "total-memory": "34359738368",
            "cpu": "ARM64",
            "cpu-count": "4",
            "cpu-frequency": "2000",
            "cpu-load": "1",
            "free-hdd-space": "100663296",
            "total-hdd-space": "134217728",
            "architecture-name": "arm64",
            "board-name": self.cfg.board_name,
            "platform": "MikroTik",
        })
    }
}

/// Writes JSON to `path` so a crash leaves either the old or the new file:
/// temporary file, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, value: &Value) -> Result<(), Error> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(|e| Error::Storage {
        op: "encode",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    let mut file = fs::File::create(&tmp).map_err(storage("create", &tmp))?;
    file.write_all(&text).map_err(storage("write", &tmp))?;
    file.sync_all().map_err(storage("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(storage("rename", path))?;
    if let Some(dir) = path.parent() {
        let d = fs::File::open(dir).map_err(storage("open", dir))?;
        d.sync_all().map_err(storage("sync", dir))?;
    }
    Ok(())
}

/// The host NQNs of an allow-host value: comma-separated, blanks dropped.
fn allowed_hosts(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1073741824"), Some(1 << 30));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn ids_and_times() {
        assert_eq!(ros_id(31), "*1F");
        assert_eq!(parse_id("*1F"), Some(31));
        assert_eq!(parse_id("1F"), None);
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(format_uptime(5), "5s");
        assert_eq!(format_uptime(694_861), "1w1d1h1m1s");
        assert_eq!(version_of("7.24.4 (stable)"), (7, 24));
        assert_eq!(version_of("7.9"), (7, 9));
    }

    #[test]
    fn names() {
        assert_eq!(clean_name("/pool/a.img").as_deref(), Some("pool/a.img"));
        assert_eq!(clean_name("pool/../x"), None);
        assert_eq!(clean_name("pool//x"), None);
        assert_eq!(clean_name("pool/x/"), None);
        assert_eq!(clean_name(""), None);
    }
}
