//! The mount table: `<proc>/self/mountinfo` parsed into exact mount points,
//! and which block device each mount (or bound device node) is.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::Error;
use crate::host::{is_namespace_name, DevNum, Roots};

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
}
