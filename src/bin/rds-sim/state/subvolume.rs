//! `/disk/btrfs/subvolume` of the emulated RDS: subvolumes and snapshots on a Btrfs pool, real ones (`btrfs subvolume ...`) when the data directory is on Btrfs.
//!
//! A subvolume's `name` is relative to the pool filesystem's root, which is
//! the pool's mount point: `csi/pvc-1` is the `/file` directory
//! `storage-pool/csi/pvc-1`. `fs` is the filesystem label (`fs-label` of the
//! pool), never its slot.
//!
//! When `<data-dir>/files` is on a Btrfs filesystem, every subvolume is a
//! real one made with `btrfs subvolume create`, `snapshot [-r]` and
//! `delete` (explicit argv, no shell), so snapshots share blocks with their
//! source and stay independent of it. Elsewhere a subvolume is a plain
//! directory and a snapshot a sparse copy: the same answers, without the
//! space sharing.
//!
//! Guessed RouterOS behaviour (documented nowhere; the client fails loudly
//! on a wrong guess): the `detail` texts; `parent` printed as the source's
//! name (empty for a subvolume made from nothing); refusing a snapshot of a
//! name that is not a subvolume, the removal of a subvolume holding a disk's
//! backing file or another subvolume, an unknown `fs` label (`input does
//! not match any value of fs`), and writing into a read-only subvolume.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value};

use super::{
    bool_text, clean_name, now_secs, parse_bool, parse_id, ros_id, storage, Error, FileRec, Params, Store,
};

/// `statfs` magic of Btrfs.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// One subvolume; persisted in `state.json`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SubvolRec {
    pub(super) id: u32,
    /// Relative to the pool filesystem's root: `csi/pvc-1`.
    pub(super) name: String,
    /// The subvolume this one is a snapshot of, by name.
    pub(super) parent: Option<String>,
    pub(super) read_only: bool,
}

/// Whether `path` lies on a Btrfs filesystem.
pub(super) fn on_btrfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; all zeroes is a valid value of it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a statfs the
    // call fills in; nothing is kept past the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    rc == 0 && magic == BTRFS_SUPER_MAGIC
}

/// Runs `btrfs <args>`; a failure becomes the emulator's storage error.
fn btrfs(args: &[&str], path: &Path) -> Result<(), Error> {
    let out = Command::new("btrfs")
        .args(args)
        .output()
        .map_err(storage("run btrfs", path))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(Error::Storage {
            op: "btrfs subvolume",
            path: path.to_path_buf(),
            source: io::Error::other(format!("btrfs {} failed: {text}", args.join(" "))),
        })
    }
}

/// `lseek(SEEK_DATA|SEEK_HOLE)` from `pos`; `None` past the last data.
fn seek_data(file: &fs::File, pos: u64, whence: i32) -> io::Result<Option<u64>> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a plain lseek on an open descriptor this function borrows.
    let off = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, whence) };
    if off >= 0 {
        return Ok(Some(off as u64));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Copies a directory tree, keeping files sparse (holes stay holes).
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else {
            let mut from = fs::File::open(entry.path())?;
            let len = from.metadata()?.len();
            let mut out = fs::File::create(&to)?;
            // Only the data regions (SEEK_DATA/SEEK_HOLE): a sparse 1 GiB
            // image with a few MiB written copies in a moment.
            let mut pos: u64 = 0;
            let mut buf = vec![0u8; 1 << 16];
            while pos < len {
                let Some(start) = seek_data(&from, pos, libc::SEEK_DATA)? else {
                    break;
                };
                let end = seek_data(&from, start, libc::SEEK_HOLE)?.unwrap_or(len);
                from.seek(SeekFrom::Start(start))?;
                out.seek(SeekFrom::Start(start))?;
                let mut left = end - start;
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = from.read(&mut buf[..want])?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                pos = end;
            }
            out.set_len(len)?;
        }
    }
    Ok(())
}

impl Store {
    /// The menu exists from RouterOS 7.18.
    pub fn has_btrfs_menu(&self) -> bool {
        self.version() >= (7, 18)
    }

    /// The subvolume holding `file_name` (a `/file` name), if any.
    pub(super) fn read_only_subvolume_of(&self, file_name: &str) -> Option<&SubvolRec> {
        self.subvolumes
            .iter()
            .find(|s| s.read_only && file_name.starts_with(&format!("{}/{}/", self.cfg.pool_slot, s.name)))
    }

    fn subvol_record(&self, s: &SubvolRec) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(".id".into(), ros_id(s.id).into());
        m.insert("fs".into(), self.cfg.pool_fs_label.clone().into());
        m.insert("name".into(), s.name.clone().into());
        m.insert("parent".into(), s.parent.clone().unwrap_or_default().into());
        m.insert("read-only".into(), bool_text(s.read_only).into());
        m
    }

    pub fn list_subvolumes(&self) -> Vec<Map<String, Value>> {
        self.subvolumes.iter().map(|s| self.subvol_record(s)).collect()
    }

    pub fn get_subvolume(&self, id: &str) -> Result<Map<String, Value>, Error> {
        let id = parse_id(id).ok_or(Error::NoSuchItem)?;
        let s = self
            .subvolumes
            .iter()
            .find(|s| s.id == id)
            .ok_or(Error::NoSuchItem)?;
        Ok(self.subvol_record(s))
    }

    /// `PUT /rest/disk/btrfs/subvolume`: a new empty subvolume, or with
    /// `parent` a snapshot of that subvolume (`read-only` or writable).
    pub fn add_subvolume(&mut self, body: &Map<String, Value>) -> Result<Map<String, Value>, Error> {
        let p = Params(body);
        p.check_known(&["fs", "name", "parent", "read-only"])?;
        let fs_label = p.text("fs")?.ok_or(Error::MissingArgument { name: "fs" })?;
        if self.cfg.pool_fs != "btrfs" || fs_label != self.cfg.pool_fs_label {
            return Err(Error::NoSuchValue {
                argument: "fs".into(),
            });
        }
        let name = p.text("name")?.ok_or(Error::MissingArgument { name: "name" })?;
        let name = clean_name(name).ok_or_else(|| Error::InvalidValue {
            argument: "name".into(),
        })?;
        let read_only = p.parsed("read-only", parse_bool)?.unwrap_or(false);
        let parent = p.text("parent")?.filter(|s| !s.is_empty()).map(str::to_string);
        let full = format!("{}/{}", self.cfg.pool_slot, name);
        if self.subvolumes.iter().any(|s| s.name == name) || self.files.iter().any(|f| f.name == full) {
            return Err(Error::SubvolumeExists);
        }
        if let Some(ro) = self.read_only_subvolume_of(&full) {
            return Err(Error::ReadOnlySubvolume {
                name: ro.name.clone(),
            });
        }
        let source = match &parent {
            Some(parent) => Some(
                self.subvolumes
                    .iter()
                    .find(|s| &s.name == parent)
                    .cloned()
                    .ok_or_else(|| Error::NotASubvolume { name: parent.clone() })?,
            ),
            None => None,
        };
        self.make_parents(&full)?;
        let real = self.real_path(&full);
        let real_text = real.display().to_string();
        match &source {
            None if self.btrfs_real => btrfs(&["subvolume", "create", &real_text], &real)?,
            None => fs::create_dir(&real).map_err(storage("create", &real))?,
            Some(src) => {
                let src_real = self.real_path(&format!("{}/{}", self.cfg.pool_slot, src.name));
                let src_text = src_real.display().to_string();
                if self.btrfs_real {
                    let mut args = vec!["subvolume", "snapshot"];
                    if read_only {
                        args.push("-r");
                    }
                    args.extend([src_text.as_str(), real_text.as_str()]);
                    btrfs(&args, &real)?;
                } else {
                    copy_tree(&src_real, &real).map_err(storage("copy", &real))?;
                }
            }
        }
        // `/file` lists the new subvolume's directory and, for a snapshot,
        // every file the source held.
        let now = now_secs();
        let mut new_files = vec![FileRec {
            id: 0,
            name: full.clone(),
            dir: true,
            modified: now,
        }];
        if let Some(src) = &source {
            let src_prefix = format!("{}/{}/", self.cfg.pool_slot, src.name);
            for f in self.files.iter().filter(|f| f.name.starts_with(&src_prefix)) {
                new_files.push(FileRec {
                    id: 0,
                    name: format!("{full}/{}", &f.name[src_prefix.len()..]),
                    dir: f.dir,
                    modified: f.modified,
                });
            }
        }
        for mut f in new_files {
            f.id = self.next_file;
            self.next_file += 1;
            self.files.push(f);
        }
        let rec = SubvolRec {
            id: self.next_subvol,
            name,
            parent,
            read_only,
        };
        self.next_subvol += 1;
        log::info!(
            "subvolume {} added{}{}",
            rec.name,
            rec.parent
                .as_deref()
                .map(|p| format!(" as a snapshot of {p}"))
                .unwrap_or_default(),
            if rec.read_only { " (read-only)" } else { "" }
        );
        self.subvolumes.push(rec.clone());
        self.save()?;
        Ok(self.subvol_record(&rec))
    }

    /// `DELETE /rest/disk/btrfs/subvolume/<id>`: refused while a disk's
    /// backing file or another subvolume is inside it.
    pub fn remove_subvolume(&mut self, id: &str) -> Result<(), Error> {
        let id = parse_id(id).ok_or(Error::NotFound)?;
        let index = self
            .subvolumes
            .iter()
            .position(|s| s.id == id)
            .ok_or(Error::NotFound)?;
        let sub = self.subvolumes[index].clone();
        let full = format!("{}/{}", self.cfg.pool_slot, sub.name);
        let prefix = format!("{full}/");
        if let Some(d) = self.disks.iter().find(|d| d.file_path.starts_with(&prefix)) {
            return Err(Error::SubvolumeInUse { slot: d.slot.clone() });
        }
        if self
            .subvolumes
            .iter()
            .any(|s| s.name.starts_with(&format!("{}/", sub.name)))
        {
            return Err(Error::DirectoryNotEmpty);
        }
        let real = self.real_path(&full);
        if real.exists() {
            if self.btrfs_real {
                btrfs(&["subvolume", "delete", &real.display().to_string()], &real)?;
            } else {
                fs::remove_dir_all(&real).map_err(storage("remove", &real))?;
            }
        }
        self.files
            .retain(|f| f.name != full && !f.name.starts_with(&prefix));
        self.subvolumes.remove(index);
        log::info!("subvolume {} removed", sub.name);
        self.save()
    }

    /// Whether `name` (a `/file` name) is a subvolume's directory.
    pub(super) fn is_subvolume_dir(&self, name: &str) -> bool {
        self.subvolumes
            .iter()
            .any(|s| name == format!("{}/{}", self.cfg.pool_slot, s.name))
    }
}
