//! Filesystems on the host: the mount table (`<proc>/self/mountinfo`, exact
//! mount points), the format-or-not probe, mkfs, mount/bind/unmount through
//! mount(2), online resize, and statvfs.
//!
//! A device is formatted only on a definite "no signature": we opened and
//! read it ourselves, and `blkid -p` answered "nothing found" (exit code 2,
//! no output). A probe that fails, times out, or finds anything at all is
//! never followed by mkfs, and mkfs is never given a force flag.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::device::is_namespace_name;
use crate::echo::echo;
use crate::exec;
use crate::host::{self, DevNum, Roots};
use crate::volume::FsType;

/// blkid reads a few superblocks; a device that takes longer is not healthy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// mkfs discards the whole device first, which takes a while on big volumes.
const MKFS_TIMEOUT: Duration = Duration::from_secs(600);
const RESIZE_TIMEOUT: Duration = Duration::from_secs(600);
/// What the probe reads itself before it believes blkid's "nothing found".
const PROBE_READ_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub enum Error {
    ReadMountTable {
        path: PathBuf,
        source: io::Error,
    },
    OpenDevice {
        device: PathBuf,
        source: io::Error,
    },
    ReadDevice {
        device: PathBuf,
        source: io::Error,
    },
    /// blkid could not run, timed out, or failed.
    Probe {
        device: PathBuf,
        source: Box<exec::Error>,
    },
    /// blkid answered something we cannot read as yes or no.
    ProbeUnclear {
        device: PathBuf,
        answer: String,
    },
    /// The device holds a signature that is not a filesystem we mount
    /// (a partition table, swap, LVM, ...): left alone.
    ForeignSignature {
        device: PathBuf,
        found: String,
    },
    /// A blank device where formatting is not allowed (read-only access).
    Unformatted {
        device: PathBuf,
    },
    /// The device holds a filesystem other than the one asked for.
    OtherFilesystem {
        device: PathBuf,
        found: String,
        wanted: FsType,
    },
    Format {
        device: PathBuf,
        fs: FsType,
        source: Box<exec::Error>,
    },
    BadMountFlag {
        flag: String,
        why: &'static str,
    },
    Mount {
        device: PathBuf,
        target: PathBuf,
        fs: FsType,
        source: io::Error,
    },
    Bind {
        from: PathBuf,
        target: PathBuf,
        source: io::Error,
    },
    RemountReadOnly {
        target: PathBuf,
        source: io::Error,
    },
    Unmount {
        target: PathBuf,
        source: io::Error,
    },
    CreateTarget {
        path: PathBuf,
        source: io::Error,
    },
    RemoveTarget {
        path: PathBuf,
        source: io::Error,
    },
    Stat {
        path: PathBuf,
        source: io::Error,
    },
    Resize {
        device: PathBuf,
        fs: String,
        source: Box<exec::Error>,
    },
    UnsupportedResize {
        target: PathBuf,
        fs: String,
    },
}

/// A path for a message: targets come from requests, so bounded and escaped.
fn shown(path: &Path) -> String {
    echo(&path.to_string_lossy()).to_string()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReadMountTable { path, .. } => write!(f, "cannot read the mount table {}", shown(path)),
            Error::OpenDevice { device, .. } => write!(f, "cannot open {} to probe it", shown(device)),
            Error::ReadDevice { device, .. } => write!(f, "cannot read {} to probe it", shown(device)),
            Error::Probe { device, .. } => write!(
                f,
                "cannot tell whether {} holds a filesystem (not formatting it)",
                shown(device)
            ),
            Error::ProbeUnclear { device, answer } => write!(
                f,
                "unclear probe answer for {} (not formatting it): {answer}",
                shown(device)
            ),
            Error::ForeignSignature { device, found } => write!(
                f,
                "{} holds {found}, not an ext4 or xfs filesystem; leaving it alone",
                shown(device)
            ),
            Error::Unformatted { device } => write!(
                f,
                "{} holds no filesystem and the volume is read-only: not formatting it",
                shown(device)
            ),
            Error::OtherFilesystem {
                device,
                found,
                wanted,
            } => write!(
                f,
                "{} holds a {found} filesystem but the volume asks for {wanted}; not reformatting it",
                shown(device)
            ),
            Error::Format { device, fs, .. } => {
                write!(f, "cannot make a {fs} filesystem on {}", shown(device))
            }
            Error::BadMountFlag { flag, why } => write!(f, "mount flag {}: {why}", echo(flag)),
            Error::Mount {
                device, target, fs, ..
            } => write!(f, "cannot mount {} ({fs}) at {}", shown(device), shown(target)),
            Error::Bind { from, target, .. } => {
                write!(f, "cannot bind-mount {} at {}", shown(from), shown(target))
            }
            Error::RemountReadOnly { target, .. } => {
                write!(f, "cannot make the bind mount at {} read-only", shown(target))
            }
            Error::Unmount { target, .. } => write!(f, "cannot unmount {}", shown(target)),
            Error::CreateTarget { path, .. } => write!(f, "cannot create {}", shown(path)),
            Error::RemoveTarget { path, .. } => write!(f, "cannot remove {}", shown(path)),
            Error::Stat { path, .. } => write!(f, "cannot stat {}", shown(path)),
            Error::Resize { device, fs, .. } => {
                write!(f, "cannot grow the {fs} filesystem on {}", shown(device))
            }
            Error::UnsupportedResize { target, fs } => {
                write!(
                    f,
                    "cannot grow the {fs} filesystem at {}: only ext4 and xfs",
                    shown(target)
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ReadMountTable { source, .. }
            | Error::OpenDevice { source, .. }
            | Error::ReadDevice { source, .. }
            | Error::Mount { source, .. }
            | Error::Bind { source, .. }
            | Error::RemountReadOnly { source, .. }
            | Error::Unmount { source, .. }
            | Error::CreateTarget { source, .. }
            | Error::RemoveTarget { source, .. }
            | Error::Stat { source, .. } => Some(source),
            Error::Probe { source, .. } | Error::Format { source, .. } | Error::Resize { source, .. } => {
                Some(source.as_ref())
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// The mount table
// ---------------------------------------------------------------------------

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    /// For a filesystem: its block device. For a bind mount of a device
    /// node: the device of the filesystem holding the node (see `bound_device`).
    pub dev: DevNum,
    /// The path inside that filesystem that is mounted (`/` for a whole filesystem).
    pub root: String,
    pub mount_point: PathBuf,
    pub options: String,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

impl MountEntry {
    fn has(options: &str, opt: &str) -> bool {
        options.split(',').any(|o| o == opt)
    }

    /// This mount is read-only (e.g. a read-only publish).
    pub fn read_only(&self) -> bool {
        Self::has(&self.options, "ro")
    }

    /// The filesystem itself went read-only (ext4 `errors=remount-ro` after
    /// I/O errors): every mount of it is.
    pub fn filesystem_read_only(&self) -> bool {
        Self::has(&self.super_options, "ro")
    }

    /// True when this looks like a bind mount of an NVMe namespace's device node.
    fn binds_device_node(&self) -> bool {
        // Most mounts are whole filesystems (root `/`): answer those without
        // parsing a path, since orphan scans ask for every mount of the
        // host once per connected namespace.
        if self.root == "/" {
            return false;
        }
        Path::new(&self.root)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_namespace_name)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let id = l.next()?.parse().ok()?;
    let parent = l.next()?.parse().ok()?;
    let dev = DevNum::parse(l.next()?)?;
    let root = unescape(l.next()?);
    let mount_point = PathBuf::from(unescape(l.next()?));
    let options = l.next()?.to_string();
    let mut r = right.split(' ');
    let fstype = r.next()?.to_string();
    let source = unescape(r.next()?);
    let super_options = r.next().unwrap_or("").to_string();
    Some(MountEntry {
        id,
        parent,
        dev,
        root,
        mount_point,
        options,
        fstype,
        source,
        super_options,
    })
}

/// The mount table as the kernel reports it now.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    pub entries: Vec<MountEntry>,
}

/// What is mounted at a path, resolved to the block device behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub entry: MountEntry,
    pub dev: DevNum,
    /// A bind mount of a block device node (block volume), not a filesystem.
    pub block: bool,
}

impl MountTable {
    /// Reads `<proc>/self/mountinfo`.
    pub fn read(roots: &Roots) -> Result<MountTable, Error> {
        let path = roots.proc("self/mountinfo");
        let text = fs::read_to_string(&path).map_err(|source| Error::ReadMountTable { path, source })?;
        Ok(MountTable {
            entries: parse_mountinfo(&text),
        })
    }

    /// The topmost mount at exactly `path` (which should be canonical).
    pub fn at(&self, path: &Path) -> Option<&MountEntry> {
        self.entries.iter().rev().find(|e| e.mount_point == path)
    }

    /// What is mounted at exactly `path`, and which block device it is: for a
    /// bind-mounted device node the node's own device (from stat), for a
    /// filesystem the one mountinfo names.
    pub fn mounted(&self, path: &Path) -> Option<Mounted> {
        let entry = self.at(path)?.clone();
        if let Ok(meta) = fs::metadata(path) {
            if meta.file_type().is_block_device() {
                return Some(Mounted {
                    dev: DevNum::from_raw(meta.rdev()),
                    entry,
                    block: true,
                });
            }
        }
        Some(Mounted {
            dev: entry.dev,
            entry,
            block: false,
        })
    }

    /// Every mount point that uses block device `dev`: filesystems on it
    /// and bind mounts of its device node (block volumes).
    pub fn users_of(&self, dev: DevNum) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for e in &self.entries {
            let uses = if e.dev == dev && !e.binds_device_node() {
                true
            } else if e.binds_device_node() {
                // Only these are stat'ed: a stat of an arbitrary mount point
                // could hang on a dead network filesystem.
                fs::metadata(&e.mount_point)
                    .map(|m| m.file_type().is_block_device() && DevNum::from_raw(m.rdev()) == dev)
                    .unwrap_or(false)
            } else {
                false
            };
            if uses && !out.contains(&e.mount_point) {
                out.push(e.mount_point.clone());
            }
        }
        out
    }
}

/// `path` with symlinks resolved when it exists (mountinfo shows canonical
/// paths), else as given.
pub fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

// ---------------------------------------------------------------------------
// Probe and format
// ---------------------------------------------------------------------------

/// What is on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Definitely nothing: safe to format.
    Empty,
    /// A filesystem of this type (`ext4`, `xfs`, `swap`, ...).
    Filesystem(String),
    /// Some other signature (a partition table, ...), described.
    Other(String),
}

/// Reads blkid's answer. `Err` carries why the answer is not usable; only
/// exit code 2 with no output at all means "nothing there".
pub fn interpret_blkid(code: Option<i32>, stdout: &str, stderr: &str) -> Result<Probe, String> {
    match code {
        Some(0) => {
            let field = |key: &str| {
                stdout
                    .lines()
                    .filter_map(|l| l.trim().split_once('='))
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.trim().to_string())
            };
            if let Some(t) = field("TYPE") {
                Ok(Probe::Filesystem(t))
            } else if let Some(pt) = field("PTTYPE") {
                Ok(Probe::Other(format!("a {pt} partition table")))
            } else {
                Ok(Probe::Other(format!(
                    "an unidentified signature ({})",
                    stdout.split_whitespace().collect::<Vec<_>>().join(" ")
                )))
            }
        }
        Some(2) if stdout.trim().is_empty() && stderr.trim().is_empty() => Ok(Probe::Empty),
        other => Err(format!(
            "blkid exit {}{}{}",
            other.map_or_else(|| "by signal".to_string(), |c| c.to_string()),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!(", stdout {:?}", stdout.trim())
            },
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!(", stderr {:?}", stderr.trim())
            },
        )),
    }
}

/// Reads the start of the device ourselves: blkid's "nothing found" only
/// counts when the device demonstrably answers reads.
fn read_start(device: &Path) -> Result<(), Error> {
    let mut f = fs::File::open(device).map_err(|source| Error::OpenDevice {
        device: device.to_path_buf(),
        source,
    })?;
    let mut buf = vec![0u8; PROBE_READ_BYTES];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::ReadDevice {
                    device: device.to_path_buf(),
                    source,
                })
            }
        }
    }
    if got == 0 {
        return Err(Error::ReadDevice {
            device: device.to_path_buf(),
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "the device returned no data"),
        });
    }
    Ok(())
}

/// [`read_start`] on a thread of its own, given up after `limit`: a read
/// from a namespace whose controller is reconnecting blocks in the kernel
/// until it is back, and the call must not hang with it (the thread is
/// left to finish whenever the kernel lets it).
fn read_start_within(device: &Path, limit: Duration) -> Result<(), Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = device.to_path_buf();
    std::thread::Builder::new()
        .name("probe-read".into())
        .spawn(move || {
            let _ = tx.send(read_start(&path));
        })
        .map_err(|source| Error::ReadDevice {
            device: device.to_path_buf(),
            source,
        })?;
    rx.recv_timeout(limit).unwrap_or_else(|_| {
        Err(Error::ReadDevice {
            device: device.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {:.0}s", limit.as_secs_f64()),
            ),
        })
    })
}

/// What is on `device`; `Err` whenever the answer is not certain.
pub fn probe(device: &Path) -> Result<Probe, Error> {
    read_start_within(device, PROBE_TIMEOUT)?;
    let out = exec::run(
        "blkid",
        &[Path::new("-p"), Path::new("-o"), Path::new("export"), device],
        PROBE_TIMEOUT,
    )
    .map_err(|source| Error::Probe {
        device: device.to_path_buf(),
        source: Box::new(source),
    })?;
    interpret_blkid(out.code, &out.stdout, &out.stderr).map_err(|answer| Error::ProbeUnclear {
        device: device.to_path_buf(),
        answer,
    })
}

/// Makes sure `device` holds a `wanted` filesystem: formats it only when the
/// probe is definitely empty and `may_format` (false for read-only access,
/// where a blank device is an error). Returns true when it formatted.
/// Called twice, the second call finds the filesystem and does nothing.
pub fn ensure_filesystem(device: &Path, wanted: FsType, may_format: bool) -> Result<bool, Error> {
    match probe(device)? {
        Probe::Empty if !may_format => Err(Error::Unformatted {
            device: device.to_path_buf(),
        }),
        Probe::Empty => {
            let program = match wanted {
                FsType::Ext4 => "mkfs.ext4",
                FsType::Xfs => "mkfs.xfs",
            };
            // No force flag, ever: should a signature have appeared since the
            // probe, the tool refuses on its own (stdin is /dev/null).
            exec::run_ok(program, &[Path::new("-q"), device], MKFS_TIMEOUT).map_err(|source| {
                Error::Format {
                    device: device.to_path_buf(),
                    fs: wanted,
                    source: Box::new(source),
                }
            })?;
            log::info!("formatted {} as {wanted}", device.display());
            Ok(true)
        }
        Probe::Filesystem(found) if found == wanted.as_str() => Ok(false),
        Probe::Filesystem(found) if FsType::parse(&found).is_ok() => Err(Error::OtherFilesystem {
            device: device.to_path_buf(),
            found,
            wanted,
        }),
        Probe::Filesystem(found) => Err(Error::ForeignSignature {
            device: device.to_path_buf(),
            found: format!("a {found} signature"),
        }),
        Probe::Other(found) => Err(Error::ForeignSignature {
            device: device.to_path_buf(),
            found,
        }),
    }
}

// ---------------------------------------------------------------------------
// Mounting
// ---------------------------------------------------------------------------

/// Mount flags from a CSI request, split into mount(2) flags and the
/// filesystem's own option string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: libc::c_ulong,
    pub data: Vec<String>,
}

impl MountOptions {
    /// Parses `mount_flags` (each entry may itself be comma-separated).
    /// Options that only mean something to mount(8) or fstab are dropped;
    /// ones that would change what kind of mount this is are refused.
    pub fn parse(flags: &[String]) -> Result<MountOptions, Error> {
        let mut opts = MountOptions::default();
        for flag in flags.iter().flat_map(|f| f.split(',')).map(str::trim) {
            let bit = match flag {
                "" | "defaults" | "rw" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "nouser"
                | "users" | "owner" | "group" => continue,
                f if f.starts_with("x-") || f.starts_with("comment=") => continue,
                "bind" | "rbind" | "remount" | "move" | "make-shared" | "make-private" | "make-slave"
                | "make-rshared" | "make-rprivate" | "make-rslave" => {
                    return Err(Error::BadMountFlag {
                        flag: flag.to_string(),
                        why: "changes the kind of mount; not allowed in a volume's mount flags",
                    })
                }
                "ro" => libc::MS_RDONLY,
                "nosuid" => libc::MS_NOSUID,
                "nodev" => libc::MS_NODEV,
                "noexec" => libc::MS_NOEXEC,
                "sync" => libc::MS_SYNCHRONOUS,
                "dirsync" => libc::MS_DIRSYNC,
                "noatime" => libc::MS_NOATIME,
                "nodiratime" => libc::MS_NODIRATIME,
                "relatime" => libc::MS_RELATIME,
                "strictatime" => libc::MS_STRICTATIME,
                "lazytime" => libc::MS_LAZYTIME,
                "suid" | "dev" | "exec" | "async" | "atime" | "diratime" | "norelatime" | "nostrictatime"
                | "nolazytime" => continue,
                f if f.bytes().all(|b| b.is_ascii_graphic() && b != b',') => {
                    opts.data.push(f.to_string());
                    continue;
                }
                _ => {
                    return Err(Error::BadMountFlag {
                        flag: flag.to_string(),
                        why: "contains spaces or control characters",
                    })
                }
            };
            opts.flags |= bit;
        }
        Ok(opts)
    }

    fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// Creates `path` as a directory (filesystem targets) if missing.
pub fn ensure_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(|source| Error::CreateTarget {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `path` as an empty file (block targets) if missing.
pub fn ensure_file(path: &Path) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    match fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(source) => Err(Error::CreateTarget {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Mounts the filesystem on `device` at `target`.
pub fn mount_filesystem(
    device: &Path,
    target: &Path,
    fs: FsType,
    options: &MountOptions,
    read_only: bool,
) -> Result<(), Error> {
    let mut flags = options.flags;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    host::mount(
        Some(device),
        target,
        Some(fs.as_str()),
        flags,
        options.data().as_deref(),
    )
    .map_err(|source| Error::Mount {
        device: device.to_path_buf(),
        target: target.to_path_buf(),
        fs,
        source,
    })
}

/// Bind-mounts `from` at `target`, read-only when asked (a second mount
/// call: the kernel ignores MS_RDONLY on the bind itself).
pub fn bind(from: &Path, target: &Path, read_only: bool) -> Result<(), Error> {
    host::mount(Some(from), target, None, libc::MS_BIND, None).map_err(|source| Error::Bind {
        from: from.to_path_buf(),
        target: target.to_path_buf(),
        source,
    })?;
    if read_only {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        if let Err(source) = host::mount(None, target, None, flags, None) {
            // Never leave a writable mount where a read-only one was asked for.
            let _ = host::umount(target, 0);
            return Err(Error::RemountReadOnly {
                target: target.to_path_buf(),
                source,
            });
        }
    }
    Ok(())
}

/// Unmounts `target`. Returns false when nothing was mounted there (or the
/// path does not exist): a second call is a no-op.
pub fn unmount(target: &Path) -> Result<bool, Error> {
    match host::umount(target, 0) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(false),
        Err(source) => Err(Error::Unmount {
            target: target.to_path_buf(),
            source,
        }),
    }
}

/// Removes `path` when it is an empty directory or an empty regular file
/// (a target or block file we made, with nothing mounted on it); gone
/// already is fine. Anything else (a file with content, a directory that is
/// not empty, a device node, a symlink) is left alone: returns false.
pub fn remove_if_empty(path: &Path) -> Result<bool, Error> {
    let removed = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(source) => Err(source),
        Ok(m) if m.is_dir() => match fs::remove_dir(path) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                return Ok(false)
            }
            other => other,
        },
        Ok(m) if m.is_file() && m.len() == 0 => fs::remove_file(path),
        Ok(_) => return Ok(false),
    };
    match removed {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(Error::RemoveTarget {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Grows the filesystem mounted at `mount_point` from `device` to fill it,
/// online: `resize2fs <device>` for ext4, `xfs_growfs <mount point>` for xfs.
/// Growing to the size it already has is a no-op for both tools.
pub fn grow_filesystem(device: &Path, mount_point: &Path, fstype: &str) -> Result<(), Error> {
    let (program, arg) = match fstype {
        "ext4" => ("resize2fs", device),
        "xfs" => ("xfs_growfs", mount_point),
        other => {
            return Err(Error::UnsupportedResize {
                target: mount_point.to_path_buf(),
                fs: other.to_string(),
            })
        }
    };
    exec::run_ok(program, &[arg], RESIZE_TIMEOUT).map_err(|source| Error::Resize {
        device: device.to_path_buf(),
        fs: fstype.to_string(),
        source: Box::new(source),
    })?;
    Ok(())
}

/// statvfs of a mounted filesystem.
pub fn stats(path: &Path) -> Result<host::FsStats, Error> {
    host::statvfs(path).map_err(|source| Error::Stat {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme9n1p2 rw,errors=remount-ro
100 27 259:4 / /var/lib/kubelet/plugins/x/globalmount rw,relatime shared:50 - ext4 /dev/nvme1n1 rw
101 27 259:4 / /var/lib/kubelet/pods/p/volumes/v\\040with\\040space/mount ro,relatime shared:50 - ext4 /dev/nvme1n1 ro,errors=remount-ro
102 27 0:6 /nvme2n1 /var/lib/kubelet/plugins/y/staging/device rw,nosuid shared:2 - devtmpfs udev rw,size=100k
garbage line
";

    #[test]
    fn mountinfo_fields_and_escapes() {
        let entries = parse_mountinfo(SAMPLE);
        assert_eq!(entries.len(), 5);
        let root = &entries[1];
        assert_eq!(root.dev, DevNum { major: 259, minor: 2 });
        assert_eq!(root.fstype, "ext4");
        assert_eq!(root.source, "/dev/nvme9n1p2");
        let spaced = &entries[3];
        assert_eq!(
            spaced.mount_point,
            PathBuf::from("/var/lib/kubelet/pods/p/volumes/v with space/mount")
        );
        assert!(spaced.read_only());
        assert!(!entries[2].read_only() && !entries[2].filesystem_read_only());
        assert!(spaced.filesystem_read_only());
        assert_eq!(entries[4].root, "/nvme2n1");
        assert!(entries[4].binds_device_node() && !entries[2].binds_device_node());
    }

    #[test]
    fn exact_mount_points_only() {
        let t = MountTable {
            entries: parse_mountinfo(SAMPLE),
        };
        assert!(t
            .at(Path::new("/var/lib/kubelet/plugins/x/globalmount"))
            .is_some());
        // A path inside a mount is not a mount point (findmnt --target would say it is).
        assert!(t
            .at(Path::new("/var/lib/kubelet/plugins/x/globalmount/sub"))
            .is_none());
        assert!(t.at(Path::new("/var/lib/kubelet/plugins/x")).is_none());
        let users = t.users_of(DevNum { major: 259, minor: 4 });
        assert_eq!(users.len(), 2, "{users:?}");
        assert!(t.users_of(DevNum { major: 259, minor: 7 }).is_empty());
    }

    #[test]
    fn unescape_handles_octal_and_plain_backslashes() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("tab\\011x"), "tab\tx");
        assert_eq!(unescape("back\\134slash"), "back\\slash");
        assert_eq!(unescape("trail\\"), "trail\\");
        assert_eq!(unescape("not\\9oct"), "not\\9oct");
    }

    #[test]
    fn only_exit_2_with_silence_means_empty() {
        assert_eq!(interpret_blkid(Some(2), "", ""), Ok(Probe::Empty));
        assert_eq!(
            interpret_blkid(Some(0), "DEVNAME=/dev/nvme0n1\nUUID=x\nTYPE=ext4\n", ""),
            Ok(Probe::Filesystem("ext4".into()))
        );
        assert_eq!(
            interpret_blkid(Some(0), "DEVNAME=/dev/x\nPTUUID=y\nPTTYPE=gpt\n", ""),
            Ok(Probe::Other("a gpt partition table".into()))
        );
        assert!(matches!(
            interpret_blkid(Some(0), "DEVNAME=/dev/x\n", ""),
            Ok(Probe::Other(_))
        ));
        // Anything else is an error, never "empty".
        for (code, out, err) in [
            (Some(2), "", "blkid: error: /dev/x: No such device"),
            (Some(2), "junk", ""),
            (Some(4), "", "usage"),
            (Some(8), "", "ambivalent result"),
            (Some(1), "", ""),
            (None, "", ""),
        ] {
            assert!(interpret_blkid(code, out, err).is_err(), "{code:?} {out} {err}");
        }
    }

    #[test]
    fn mount_flags_split_into_bits_and_data() {
        let o = MountOptions::parse(&[
            "noatime".into(),
            "discard,nosuid".into(),
            "errors=remount-ro".into(),
        ])
        .unwrap();
        assert_eq!(o.flags, libc::MS_NOATIME | libc::MS_NOSUID);
        assert_eq!(o.data(), Some("discard,errors=remount-ro".into()));
        let o = MountOptions::parse(&["defaults".into(), "_netdev".into(), "rw".into()]).unwrap();
        assert_eq!(o, MountOptions::default());
        assert_eq!(
            MountOptions::parse(&["ro".into()]).unwrap().flags,
            libc::MS_RDONLY
        );
        for bad in ["bind", "remount", "a b"] {
            let e = MountOptions::parse(&[bad.into()]).unwrap_err();
            assert!(e.to_string().contains(bad.split(' ').next().unwrap()), "{e}");
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "rds-csi-mount-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn probe_formats_nothing_it_cannot_read() {
        let d = scratch("probe");
        // A block node whose device does not exist: open fails, so no verdict.
        let node = d.join("nvme0n1");
        let st = std::process::Command::new("mknod")
            .args([node.to_str().unwrap(), "b", "4000", "4000"])
            .status()
            .unwrap();
        assert!(st.success());
        let e = ensure_filesystem(&node, FsType::Ext4, true).unwrap_err();
        assert!(matches!(e, Error::OpenDevice { .. }), "{e}");
        // An empty regular file reads as no data: not "empty" either.
        let empty = d.join("empty.img");
        fs::write(&empty, b"").unwrap();
        assert!(matches!(probe(&empty), Err(Error::ReadDevice { .. })));
        // A read that does not come back in time is an error too (a FIFO
        // with no writer blocks its reader, like a reconnecting namespace).
        let fifo = d.join("hangs");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let started = std::time::Instant::now();
        let e = read_start_within(&fifo, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Unblock the leftover reader thread.
        drop(fs::OpenOptions::new().write(true).open(&fifo));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn probe_tells_blank_from_formatted_images() {
        let d = scratch("img");
        let img = d.join("disk.img");
        let f = fs::File::create(&img).unwrap();
        f.set_len(64 << 20).unwrap();
        assert_eq!(probe(&img).unwrap(), Probe::Empty);
        let e = ensure_filesystem(&img, FsType::Ext4, false).unwrap_err();
        assert!(matches!(e, Error::Unformatted { .. }), "{e}");
        assert!(ensure_filesystem(&img, FsType::Ext4, true).unwrap());
        assert_eq!(probe(&img).unwrap(), Probe::Filesystem("ext4".into()));
        // Twice: nothing to do.
        assert!(!ensure_filesystem(&img, FsType::Ext4, true).unwrap());
        // The other filesystem is refused, never reformatted.
        let e = ensure_filesystem(&img, FsType::Xfs, true).unwrap_err();
        assert!(matches!(e, Error::OtherFilesystem { .. }), "{e}");
        assert_eq!(probe(&img).unwrap(), Probe::Filesystem("ext4".into()));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bind_mounts_show_in_the_table_and_unmount_twice_is_fine() {
        let d = scratch("bind");
        let (src, dst) = (d.join("src"), d.join("dst"));
        ensure_dir(&src).unwrap();
        ensure_dir(&dst).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        bind(&src, &dst, true).unwrap();
        let roots = Roots::default();
        let table = MountTable::read(&roots).unwrap();
        let entry = table.at(&canonical(&dst)).expect("mounted").clone();
        assert!(entry.read_only());
        assert!(
            fs::write(dst.join("g"), b"y").is_err(),
            "read-only bind is writable"
        );
        assert!(unmount(&dst).unwrap());
        assert!(!unmount(&dst).unwrap());
        assert!(!unmount(&d.join("missing")).unwrap());
        assert!(remove_if_empty(&dst).unwrap());
        assert!(remove_if_empty(&dst).unwrap());
        // Only empty files and directories go.
        assert!(!remove_if_empty(&src).unwrap() && src.join("f").exists());
        assert!(!remove_if_empty(&src.join("f")).unwrap());
        let empty = d.join("empty-file");
        ensure_file(&empty).unwrap();
        assert!(remove_if_empty(&empty).unwrap() && !empty.exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
