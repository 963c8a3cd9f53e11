//! Typed views of RouterOS records (`/disk`, `/file`, `/system/resource`) decoded from JSON whose every value is a string.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Value};

/// Why a record could not be decoded; the caller wraps it into
/// `Error::Decode` with the operation and slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

type Record = Map<String, Value>;

fn text<'a>(rec: &'a Record, field: &str) -> Option<&'a str> {
    match rec.get(field) {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn required(rec: &Record, field: &str) -> Result<String, DecodeError> {
    match rec.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        // RouterOS writes every value as a string, but a number is harmless.
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(DecodeError(format!("field {field} is {other}, not a string"))),
        None => Err(DecodeError(format!("field {field} is missing"))),
    }
}

fn optional(rec: &Record, field: &str) -> Option<String> {
    match rec.get(field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// A RouterOS number: `"1073741824"`. Missing or empty is `None`; anything
/// else that is not a whole number is an error, never a silent zero.
fn number(rec: &Record, field: &str) -> Result<Option<u64>, DecodeError> {
    match rec.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| DecodeError(format!("field {field} is {n}, not a byte count"))),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| DecodeError(format!("field {field} is {s:?}, not a whole number"))),
        Some(other) => Err(DecodeError(format!("field {field} is {other}, not a number"))),
    }
}

/// A size the client only uses as a hint (`file-size`, `free`): a plain
/// byte count, or an exact rendering with a binary unit as the CLI prints
/// it (`50GiB`, `50.0GiB`, `512M`). Anything else (`49.9GiB`, garbage) is
/// `None`: one odd field never fails a whole listing, and sizes that
/// matter come from `size`.
fn lenient_bytes(rec: &Record, field: &str) -> Option<u64> {
    match rec.get(field) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => parse_bytes_lenient(s),
        _ => None,
    }
}

/// `1073741824`, `1G`, `1GiB`, `50.0GiB`, `1.5KiB` (exact) → bytes.
pub(crate) fn parse_bytes_lenient(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return None,
    };
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    if whole.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut bytes = whole.checked_shl(shift)?;
    if whole.leading_zeros() < shift {
        return None;
    }
    if !frac.is_empty() {
        // Exact only: the fraction times the unit must be a whole number.
        let digits: u32 = u32::try_from(frac.len()).ok().filter(|d| *d <= 12)?;
        let frac: u128 = frac.parse().ok()?;
        let scaled = frac.checked_mul(1u128 << shift)?;
        let div = 10u128.pow(digits);
        if scaled % div != 0 {
            return None;
        }
        bytes = bytes.checked_add(u64::try_from(scaled / div).ok()?)?;
    }
    Some(bytes)
}

/// A flag the client only reads for information (`mounted`,
/// `mount-filesystem`): garbage is `None`, not a failed listing.
fn lenient_boolean(rec: &Record, field: &str) -> Option<bool> {
    boolean(rec, field).ok().flatten()
}

/// A RouterOS boolean: `"true"`/`"false"` (also `yes`/`no`). Missing is
/// `None` (RouterOS omits unset flags).
fn boolean(rec: &Record, field: &str) -> Result<Option<bool>, DecodeError> {
    match rec.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" => Ok(Some(true)),
            "false" | "no" => Ok(Some(false)),
            "" => Ok(None),
            _ => Err(DecodeError(format!("field {field} is {s:?}, not true/false"))),
        },
        Some(other) => Err(DecodeError(format!("field {field} is {other}, not a boolean"))),
    }
}

/// The object of a JSON answer, or why it is not one.
pub(crate) fn as_record(value: &Value) -> Result<&Record, DecodeError> {
    value
        .as_object()
        .ok_or_else(|| DecodeError(format!("expected a json object, got {}", kind_of(value))))
}

/// The objects of a JSON array answer.
pub(crate) fn as_records(value: &Value) -> Result<Vec<&Record>, DecodeError> {
    let items = value
        .as_array()
        .ok_or_else(|| DecodeError(format!("expected a json array, got {}", kind_of(value))))?;
    items.iter().map(as_record).collect()
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A `/disk` entry: a file-backed volume disk, the pool, or any other disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// RouterOS `.id`, e.g. `*1F`; stable for the disk's lifetime.
    pub id: String,
    /// The disk's unique name; the volume's slot.
    pub slot: String,
    /// `type`: `file` for volumes, `raid` for a pool, ...
    pub kind: Option<String>,
    /// Backing file, without RouterOS's leading `/`
    /// (`storage-pool/csi/pvc-x.img`).
    pub file_path: Option<String>,
    /// `file-size` as configured, in bytes.
    pub file_size: Option<u64>,
    /// `size` in bytes, as RouterOS measures the disk.
    pub size: Option<u64>,
    /// `free` bytes of a mounted filesystem on the disk.
    pub free: Option<u64>,
    /// Empty when there is none.
    pub comment: String,
    pub nvme_tcp_export: bool,
    pub nvme_tcp_port: Option<u16>,
    pub nvme_tcp_nqn: Option<String>,
    /// `nvme-tcp-server-allow-host-name` as RouterOS prints it (`""` when
    /// unset). What the field takes is unverified; this driver writes a
    /// comma-separated list of host NQNs (`--nvme-host-acl`).
    pub nvme_tcp_allow_host: String,
    pub mount_filesystem: Option<bool>,
    pub mount_point: Option<String>,
    pub mounted: bool,
    pub fs: Option<String>,
    pub state: Option<String>,
}

impl Disk {
    /// Decodes a `/disk` record. Only `.id` is required; fields this client
    /// does not know are ignored, and the informational ones (`file-size`,
    /// `free`, `mounted`, `mount-filesystem`) are read leniently, so a real
    /// RouterOS's extra or oddly rendered fields never fail a listing. What
    /// decisions rest on (`size`, the export flag, port) stays strict.
    pub(crate) fn from_record(rec: &Record) -> Result<Disk, DecodeError> {
        let port = match number(rec, "nvme-tcp-server-port")? {
            None => None,
            Some(p) => Some(
                u16::try_from(p)
                    .map_err(|_| DecodeError(format!("field nvme-tcp-server-port is {p}, not a tcp port")))?,
            ),
        };
        Ok(Disk {
            id: required(rec, ".id")?,
            slot: optional(rec, "slot").unwrap_or_default(),
            kind: optional(rec, "type"),
            file_path: text(rec, "file-path").map(strip_leading_slash),
            file_size: lenient_bytes(rec, "file-size"),
            size: number(rec, "size")?,
            free: lenient_bytes(rec, "free"),
            comment: optional(rec, "comment").unwrap_or_default(),
            nvme_tcp_export: boolean(rec, "nvme-tcp-export")?.unwrap_or(false),
            nvme_tcp_port: port,
            nvme_tcp_nqn: optional(rec, "nvme-tcp-server-nqn").filter(|s| !s.is_empty()),
            nvme_tcp_allow_host: optional(rec, "nvme-tcp-server-allow-host-name").unwrap_or_default(),
            mount_filesystem: lenient_boolean(rec, "mount-filesystem"),
            mount_point: optional(rec, "mount-point").filter(|s| !s.is_empty()),
            mounted: lenient_boolean(rec, "mounted").unwrap_or(false),
            fs: optional(rec, "fs").filter(|s| !s.is_empty()),
            state: optional(rec, "state").filter(|s| !s.is_empty()),
        })
    }

    /// The disk's size: `size`, else the configured `file-size`.
    pub fn bytes(&self) -> Option<u64> {
        self.size.or(self.file_size)
    }

    /// The NQN initiators must use: the configured one, else RouterOS's
    /// default, the bare slot.
    pub fn effective_nqn(&self) -> &str {
        self.nvme_tcp_nqn.as_deref().unwrap_or(&self.slot)
    }

    /// The export port: the configured one, else RouterOS's default 4420.
    pub fn effective_port(&self) -> u16 {
        self.nvme_tcp_port.unwrap_or(4420)
    }
}

/// `storage-pool/x` from RouterOS's `/storage-pool/x`.
pub(crate) fn strip_leading_slash(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

/// The storage pool's capacity, from its own `/disk` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub id: String,
    pub slot: String,
    pub mount_point: Option<String>,
    /// `btrfs`, `xfs`, ...
    pub fs: Option<String>,
    /// `fs-label`: the label Btrfs menus name the filesystem by.
    pub fs_label: Option<String>,
    /// Bytes.
    pub size: u64,
    /// Bytes free; `None` when RouterOS does not report it (not mounted).
    pub free: Option<u64>,
    pub state: Option<String>,
    pub mounted: bool,
}

impl Pool {
    /// The pool view of its `/disk` record; `size` is required.
    pub(crate) fn from_record(rec: &Record) -> Result<Pool, DecodeError> {
        let mut pool = Pool::from_disk(&Disk::from_record(rec)?)?;
        pool.fs_label = optional(rec, "fs-label").filter(|s| !s.is_empty());
        Ok(pool)
    }

    /// The pool view of a decoded `/disk` entry (no `fs-label`).
    pub(crate) fn from_disk(disk: &Disk) -> Result<Pool, DecodeError> {
        let size = disk
            .size
            .ok_or_else(|| DecodeError(format!("pool {} has no size", disk.slot)))?;
        Ok(Pool {
            id: disk.id.clone(),
            slot: disk.slot.clone(),
            mount_point: disk.mount_point.as_deref().map(strip_leading_slash),
            fs: disk.fs.clone(),
            fs_label: None,
            size,
            free: disk.free,
            state: disk.state.clone(),
            mounted: disk.mounted || disk.mount_point.is_some() && disk.free.is_some(),
        })
    }
}

impl Pool {
    /// The pool's Btrfs filesystem, for `/disk/btrfs/subvolume`: `None`
    /// unless the pool is Btrfs, mounted, and names its label and mount
    /// point (the label is read, never assumed).
    pub fn btrfs(&self) -> Option<BtrfsFs> {
        if self.fs.as_deref() != Some("btrfs") {
            return None;
        }
        Some(BtrfsFs {
            label: self.fs_label.clone()?,
            mount_point: self.mount_point.clone()?,
        })
    }
}

/// A Btrfs filesystem on the RDS: its label (what `fs` of a subvolume
/// names) and where it is mounted in `/file` (what subvolume names are
/// relative to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtrfsFs {
    pub label: String,
    /// Without a leading `/`: `storage-pool`.
    pub mount_point: String,
}

impl BtrfsFs {
    /// The subvolume name (relative to the filesystem root) of a `/file`
    /// path, or `None` when the path is not strictly inside the mount point.
    pub fn name_of(&self, path: &str) -> Option<String> {
        let path = strip_leading_slash(path);
        let rest = path.strip_prefix(&self.mount_point)?.strip_prefix('/')?;
        let rest = rest.trim_end_matches('/');
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// The `/file` path of a subvolume name.
    pub fn path_of(&self, name: &str) -> String {
        format!("{}/{}", self.mount_point, strip_leading_slash(name))
    }
}

/// A `/disk/btrfs/subvolume` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subvolume {
    /// RouterOS `.id`.
    pub id: String,
    /// The filesystem label.
    pub fs: String,
    /// Relative to the filesystem root: `csi/pvc-1`.
    pub name: String,
    /// The subvolume this one is a snapshot of, by name; `None` for one
    /// made from nothing.
    pub parent: Option<String>,
    pub read_only: bool,
}

impl Subvolume {
    /// Decodes a subvolume record; `.id` and `name` are required.
    pub(crate) fn from_record(rec: &Record) -> Result<Subvolume, DecodeError> {
        Ok(Subvolume {
            id: required(rec, ".id")?,
            fs: optional(rec, "fs").unwrap_or_default(),
            name: strip_leading_slash(&required(rec, "name")?),
            parent: optional(rec, "parent")
                .filter(|s| !s.is_empty())
                .map(|p| strip_leading_slash(&p)),
            read_only: boolean(rec, "read-only")?.unwrap_or(false),
        })
    }
}

/// A `/file` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub id: String,
    /// Full name without a leading `/`: `storage-pool/csi/pvc-x.img`.
    pub name: String,
    /// RouterOS's `type`: `directory`, `.img file`, ...
    pub kind: String,
    pub size: Option<u64>,
    pub last_modified: Option<String>,
}

impl File {
    /// Decodes a `/file` record; `.id` and `name` are required.
    pub(crate) fn from_record(rec: &Record) -> Result<File, DecodeError> {
        Ok(File {
            id: required(rec, ".id")?,
            name: strip_leading_slash(&required(rec, "name")?),
            kind: optional(rec, "type").unwrap_or_default(),
            size: number(rec, "size")?,
            last_modified: optional(rec, "last-modified"),
        })
    }

    pub fn is_directory(&self) -> bool {
        self.kind == "directory"
    }

    /// A place files can go: a directory, or a mounted disk's root (the
    /// pool's mount point lists as `type=disk`).
    pub fn is_folder(&self) -> bool {
        self.is_directory() || self.kind == "disk"
    }
}

/// A RouterOS version, compared numerically (`7.9` < `7.17`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version { major, minor, patch }
    }

    /// Parses `7.24.4 (stable)`, `7.21rc2 (testing)`, `7.17`: the leading
    /// digits of up to three dot-separated parts; pre-release tags count as
    /// the release they precede.
    pub fn parse(text: &str) -> Option<Version> {
        let word = text.split_whitespace().next()?;
        let mut parts = [0u32; 3];
        let mut seen = 0;
        for (i, part) in word.split('.').take(3).enumerate() {
            let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                break;
            }
            parts[i] = digits.parse().ok()?;
            seen += 1;
            if digits.len() != part.len() {
                break;
            }
        }
        if seen < 2 {
            return None;
        }
        Some(Version::new(parts[0], parts[1], parts[2]))
    }

    pub fn at_least(&self, other: Version) -> bool {
        self.cmp(&other) != Ordering::Less
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.patch == 0 {
            write!(f, "{}.{}", self.major, self.minor)
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        }
    }
}

/// `/system/resource`: what the RDS is and how it is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemResource {
    /// As RouterOS prints it, e.g. `7.24.4 (stable)`.
    pub version_text: String,
    pub version: Option<Version>,
    pub board_name: Option<String>,
    pub architecture: Option<String>,
    pub uptime: Option<String>,
    /// Percent.
    pub cpu_load: Option<u64>,
    pub free_memory: Option<u64>,
    pub total_memory: Option<u64>,
}

impl SystemResource {
    pub(crate) fn from_record(rec: &Record) -> Result<SystemResource, DecodeError> {
        let version_text = required(rec, "version")?;
        Ok(SystemResource {
            version: Version::parse(&version_text),
            version_text,
            board_name: optional(rec, "board-name"),
            architecture: optional(rec, "architecture-name"),
            uptime: optional(rec, "uptime"),
            cpu_load: number(rec, "cpu-load")?,
            free_memory: number(rec, "free-memory")?,
            total_memory: number(rec, "total-memory")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn decodes_a_full_file_disk() {
        let r = rec(json!({
            ".id": "*1F",
            "slot": "pvc-1",
            "type": "file",
            "file-path": "/storage-pool/csi/pvc-1.img",
            "file-size": "1073741824",
            "size": "1073741824",
            "comment": "csi=pvc-1",
            "nvme-tcp-export": "true",
            "nvme-tcp-server-port": "4420",
            "nvme-tcp-server-nqn": "nqn.2000-02.com.mikrotik:pvc-1",
            "mount-filesystem": "false",
            "mounted": "false"
        }));
        let d = Disk::from_record(&r).unwrap();
        assert_eq!(d.id, "*1F");
        assert_eq!(d.file_path.as_deref(), Some("storage-pool/csi/pvc-1.img"));
        assert_eq!(d.size, Some(1 << 30));
        assert_eq!(d.bytes(), Some(1 << 30));
        assert!(d.nvme_tcp_export);
        assert_eq!(d.nvme_tcp_port, Some(4420));
        assert_eq!(d.effective_nqn(), "nqn.2000-02.com.mikrotik:pvc-1");
        assert_eq!(d.mount_filesystem, Some(false));
        assert_eq!(d.comment, "csi=pvc-1");
    }

    #[test]
    fn tolerates_missing_optional_fields_and_yes_no() {
        let r = rec(json!({".id": "*2", "slot": "x", "nvme-tcp-export": "no", "file-size": "512"}));
        let d = Disk::from_record(&r).unwrap();
        assert!(!d.nvme_tcp_export);
        assert_eq!(d.size, None);
        assert_eq!(d.bytes(), Some(512));
        assert_eq!(d.comment, "");
        assert_eq!(d.file_path, None);
        assert_eq!(d.effective_nqn(), "x");
        assert_eq!(d.effective_port(), 4420);
        let r = rec(json!({".id": "*3", "nvme-tcp-export": "yes"}));
        assert!(Disk::from_record(&r).unwrap().nvme_tcp_export);
    }

    #[test]
    fn refuses_garbage_instead_of_guessing() {
        let r = rec(json!({".id": "*2", "size": "12G"}));
        let e = Disk::from_record(&r).unwrap_err();
        assert!(e.0.contains("size"), "{e:?}");
        let r = rec(json!({".id": "*2", "nvme-tcp-export": "maybe"}));
        assert!(Disk::from_record(&r).is_err());
        let r = rec(json!({".id": "*2", "nvme-tcp-server-port": "70000"}));
        assert!(Disk::from_record(&r).is_err());
        let r = rec(json!({"slot": "no-id"}));
        assert!(Disk::from_record(&r).unwrap_err().0.contains(".id"));
    }

    #[test]
    fn odd_renderings_and_unknown_fields_never_fail_a_disk() {
        // As a RouterOS 7.24 disk may print, with the CLI's unit rendering.
        let r = rec(json!({
            ".id": "*2A", "slot": "pvc-9", "type": "file", "file-path": "/storage-pool/csi/pvc-9.img",
            "file-size": "50.0GiB", "size": "53687091200", "slot-default": "", "parent": "",
            "fs": "", "model": "/storage-pool/csi/pvc-9.img", "mount-read-only": "no",
            "compress": "no", "sector-size": "512", "raid-master": "none", "iscsi-export": "no",
            "nfs-sharing": "no", "smb-sharing": "no", "media-sharing": "no", "swap": "no",
            "file-offset": "0", "disabled": "false", "mounted": "weird", "free": "n/a",
            "nvme-tcp-server-allow-host-name": "", "nvme-tcp-export": "yes"
        }));
        let d = Disk::from_record(&r).unwrap();
        assert_eq!(d.size, Some(50 << 30));
        assert_eq!(d.bytes(), Some(50 << 30));
        assert_eq!(d.file_size, Some(50 << 30));
        assert!(!d.mounted);
        assert_eq!(d.free, None);
        let r = rec(json!({".id": "*2B", "slot": "x", "file-size": "49.9GiB", "size": "1024"}));
        let d = Disk::from_record(&r).unwrap();
        assert_eq!((d.file_size, d.bytes()), (None, Some(1024)));
    }

    #[test]
    fn lenient_sizes_are_exact_or_nothing() {
        assert_eq!(parse_bytes_lenient("1073741824"), Some(1 << 30));
        assert_eq!(parse_bytes_lenient("1G"), Some(1 << 30));
        assert_eq!(parse_bytes_lenient("50.0GiB"), Some(50 << 30));
        assert_eq!(parse_bytes_lenient("1.5KiB"), Some(1536));
        assert_eq!(parse_bytes_lenient("49.9GiB"), None);
        assert_eq!(parse_bytes_lenient("12 MiB"), Some(12 << 20));
        assert_eq!(parse_bytes_lenient("GiB"), None);
        assert_eq!(parse_bytes_lenient("1XB"), None);
        assert_eq!(parse_bytes_lenient("99999999999P"), None);
        assert_eq!(parse_bytes_lenient(""), None);
    }

    #[test]
    fn pool_from_raid_disk() {
        let r = rec(json!({
            ".id": "*1", "slot": "storage-pool", "type": "raid", "mount-point": "/storage-pool",
            "fs": "btrfs", "size": "1000", "free": "400", "state": "clean", "mounted": "true"
        }));
        let p = Pool::from_disk(&Disk::from_record(&r).unwrap()).unwrap();
        assert_eq!((p.size, p.free), (1000, Some(400)));
        assert_eq!(p.mount_point.as_deref(), Some("storage-pool"));
        assert_eq!(p.fs.as_deref(), Some("btrfs"));
        assert!(p.mounted);
        let r = rec(json!({".id": "*1", "slot": "storage-pool"}));
        assert!(Pool::from_disk(&Disk::from_record(&r).unwrap()).is_err());
    }

    #[test]
    fn files() {
        let r =
            rec(json!({".id": "*A", "name": "storage-pool/csi/a.img", "type": ".img file", "size": "4096"}));
        let f = File::from_record(&r).unwrap();
        assert_eq!(f.name, "storage-pool/csi/a.img");
        assert_eq!(f.size, Some(4096));
        assert!(!f.is_directory());
        let r = rec(json!({".id": "*B", "name": "storage-pool/csi", "type": "directory"}));
        let f = File::from_record(&r).unwrap();
        assert!(f.is_directory() && f.is_folder());
        assert_eq!(f.size, None);
        let r = rec(json!({".id": "*1", "name": "storage-pool", "type": "disk"}));
        let f = File::from_record(&r).unwrap();
        assert!(f.is_folder() && !f.is_directory());
    }

    #[test]
    fn versions() {
        assert_eq!(Version::parse("7.24.4 (stable)"), Some(Version::new(7, 24, 4)));
        assert_eq!(Version::parse("7.21rc2 (testing)"), Some(Version::new(7, 21, 0)));
        assert_eq!(Version::parse("7.9"), Some(Version::new(7, 9, 0)));
        assert_eq!(Version::parse("garbage"), None);
        assert_eq!(Version::parse("7"), None);
        assert!(Version::new(7, 17, 0) > Version::new(7, 9, 5));
        assert!(Version::new(7, 24, 4).at_least(Version::new(7, 21, 0)));
        assert!(!Version::new(7, 16, 3).at_least(Version::new(7, 17, 0)));
        assert_eq!(Version::new(7, 17, 0).to_string(), "7.17");
    }

    #[test]
    fn system_resource() {
        let r = rec(
            json!({"version": "7.24.4 (stable)", "board-name": "RDS2216", "cpu-load": "3", "uptime": "1d2h"}),
        );
        let s = SystemResource::from_record(&r).unwrap();
        assert_eq!(s.version, Some(Version::new(7, 24, 4)));
        assert_eq!(s.cpu_load, Some(3));
        assert_eq!(s.board_name.as_deref(), Some("RDS2216"));
        assert!(SystemResource::from_record(&rec(json!({}))).is_err());
    }
}
