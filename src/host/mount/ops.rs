//! Mount syscalls and their targets: mount options from a request,
//! mount/bind/unmount through mount(2), and the directories and files
//! mounted on.

use std::fs;
use std::io;
use std::path::Path;

use super::Error;
use crate::host::sys;
use crate::volume::FsType;

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

    /// These options with what every mount of `fs` needs. XFS gets
    /// `nouuid`: a volume restored from a snapshot or cloned from another
    /// carries its source's filesystem UUID byte for byte, and XFS refuses
    /// to mount a second filesystem with a UUID already mounted ("duplicate
    /// UUID"), so the copy could never be staged on a node that has the
    /// source. The check guards against mounting one filesystem twice
    /// through two device nodes; the stage mounts one namespace's single
    /// device once, so skipping it loses nothing.
    pub fn for_fs(&self, fs: FsType) -> MountOptions {
        let mut opts = self.clone();
        if fs == FsType::Xfs && !opts.data.iter().any(|d| d == "nouuid") {
            opts.data.push("nouuid".to_string());
        }
        opts
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
    let options = options.for_fs(fs);
    let mut flags = options.flags;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    sys::mount(
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
    sys::mount(Some(from), target, None, libc::MS_BIND, None).map_err(|source| Error::Bind {
        from: from.to_path_buf(),
        target: target.to_path_buf(),
        source,
    })?;
    if read_only {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        if let Err(source) = sys::mount(None, target, None, flags, None) {
            // Never leave a writable mount where a read-only one was asked for.
            let _ = sys::umount(target, 0);
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
    match sys::umount(target, 0) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mount::{canonical, MountTable};
    use crate::host::Roots;

    #[test]
    fn xfs_mounts_get_nouuid_once_and_ext4_mounts_nothing_added() {
        let opts = MountOptions::parse(&["noatime,inode64".to_string()]).unwrap();
        let xfs = opts.for_fs(FsType::Xfs);
        assert_eq!(xfs.data, vec!["inode64", "nouuid"]);
        assert_eq!(xfs.flags, libc::MS_NOATIME);
        assert_eq!(xfs.for_fs(FsType::Xfs).data, vec!["inode64", "nouuid"]);
        assert_eq!(opts.for_fs(FsType::Ext4), opts);
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

    use super::super::scratch;

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
