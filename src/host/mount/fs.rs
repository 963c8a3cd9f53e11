//! Filesystems on a device: the format-or-not probe, mkfs, online growth,
//! and statvfs of a mounted one.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use super::Error;
use crate::host::{exec, sys};
use crate::volume::FsType;

/// blkid reads a few superblocks; a device that takes longer is not healthy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// mkfs discards the whole device first, which takes a while on big volumes.
const MKFS_TIMEOUT: Duration = Duration::from_secs(600);
const RESIZE_TIMEOUT: Duration = Duration::from_secs(600);
/// What the probe reads itself before it believes blkid's "nothing found".
const PROBE_READ_BYTES: usize = 64 * 1024;

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

/// A blkid answer that is neither "nothing there" nor a signature: the
/// exit code (None: killed by a signal) and what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnclearAnswer {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for UnclearAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(c) => write!(f, "blkid exit {c}")?,
            None => write!(f, "blkid exit by signal")?,
        }
        if !self.stdout.trim().is_empty() {
            write!(f, ", stdout {:?}", self.stdout.trim())?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, ", stderr {:?}", self.stderr.trim())?;
        }
        Ok(())
    }
}

/// Reads blkid's answer. `Err` carries the answer that is not usable; only
/// exit code 2 with no output at all means "nothing there".
pub fn interpret_blkid(code: Option<i32>, stdout: &str, stderr: &str) -> Result<Probe, UnclearAnswer> {
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
        code => Err(UnclearAnswer {
            code,
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
        }),
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

/// The format rule, on a probe's answer: `Ok(true)` when `device` must be
/// formatted (definitely empty, and `may_format`: false for read-only
/// access, where a blank device is an error), `Ok(false)` when it already
/// holds a `wanted` filesystem, and an error for anything else (another
/// filesystem or signature is never formatted over).
pub fn format_decision(device: &Path, probe: Probe, wanted: FsType, may_format: bool) -> Result<bool, Error> {
    match probe {
        Probe::Empty if !may_format => Err(Error::Unformatted {
            device: device.to_path_buf(),
        }),
        Probe::Empty => Ok(true),
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

/// Makes a `fs` filesystem on `device`. No force flag, ever: should a
/// signature have appeared since the probe, the tool refuses on its own
/// (stdin is /dev/null).
pub fn mkfs(device: &Path, fs: FsType) -> Result<(), Error> {
    let program = match fs {
        FsType::Ext4 => "mkfs.ext4",
        FsType::Xfs => "mkfs.xfs",
    };
    exec::run_ok(program, &[Path::new("-q"), device], MKFS_TIMEOUT).map_err(|source| Error::Format {
        device: device.to_path_buf(),
        fs,
        source: Box::new(source),
    })?;
    log::info!("formatted {} as {fs}", device.display());
    Ok(())
}

/// Makes sure `device` holds a `wanted` filesystem: probes it and formats
/// it only as [`format_decision`] says. Returns true when it formatted.
/// Called twice, the second call finds the filesystem and does nothing.
pub fn ensure_filesystem(device: &Path, wanted: FsType, may_format: bool) -> Result<bool, Error> {
    let format = format_decision(device, probe(device)?, wanted, may_format)?;
    if format {
        mkfs(device, wanted)?;
    }
    Ok(format)
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

/// The size a filesystem has given itself, in bytes, read from its
/// superblock on `device`; `None` when it cannot be read or is not the
/// filesystem expected. Exact, unlike statvfs (which leaves out the
/// filesystem's own metadata), so a stage can tell "fills its device" from
/// "was made smaller than it" without running a grow tool.
pub fn filesystem_bytes(device: &Path, fs: FsType) -> Option<u64> {
    let mut head = vec![0u8; 4096];
    fs::File::open(device).ok()?.read_exact(&mut head).ok()?;
    superblock_bytes(fs, &head)
}

/// The filesystem size a superblock records (`head`: the device's first
/// 4 KiB): ext4's block count × block size (superblock at 1024, little
/// endian, the high half of the count when the 64-bit feature is on); XFS's
/// data blocks × block size (superblock at 0, big endian).
pub fn superblock_bytes(fs: FsType, head: &[u8]) -> Option<u64> {
    let le32 = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let be32 = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match fs {
        FsType::Ext4 => {
            const SB: usize = 1024;
            let magic = head.get(SB + 0x38..SB + 0x3a)?;
            if magic != [0x53, 0xEF] {
                return None;
            }
            let lo = u64::from(le32(SB + 0x04)?);
            let log_block = le32(SB + 0x18)?;
            let incompat = le32(SB + 0x60)?;
            let hi = if incompat & 0x80 != 0 {
                u64::from(le32(SB + 0x150)?)
            } else {
                0
            };
            let block = 1024u64.checked_shl(log_block)?;
            ((hi << 32) | lo).checked_mul(block)
        }
        FsType::Xfs => {
            if be32(0)? != 0x5846_5342 {
                return None;
            }
            let block = u64::from(be32(4)?);
            let blocks = u64::from_be_bytes(head.get(8..16)?.try_into().ok()?);
            blocks.checked_mul(block)
        }
    }
}

/// statvfs of a mounted filesystem.
pub fn stats(path: &Path) -> Result<sys::FsStats, Error> {
    sys::statvfs(path).map_err(|source| Error::Stat {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unclear_blkid_answer_carries_what_blkid_said() {
        let e = interpret_blkid(Some(2), "junk", "no such device").unwrap_err();
        assert_eq!(e.code, Some(2));
        assert_eq!(
            e.to_string(),
            "blkid exit 2, stdout \"junk\", stderr \"no such device\""
        );
        assert_eq!(
            interpret_blkid(None, "", "").unwrap_err().to_string(),
            "blkid exit by signal"
        );
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

    use super::super::scratch;

    /// mkfs on a sparse file of `bytes`, with `-b`/`-s` options as given.
    fn made(tag: &str, bytes: u64, tool: &str, args: &[&str]) -> Option<std::path::PathBuf> {
        let d = scratch(tag);
        let image = d.join("fs.img");
        fs::File::create(&image).unwrap().set_len(bytes).unwrap();
        let ok = std::process::Command::new(tool)
            .args(args)
            .arg(&image)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("*** SKIPPED: {tool} is not installed or failed here ***");
            assert!(std::env::var("CI").is_err(), "{tool} must run under CI");
            return None;
        }
        Some(image)
    }

    #[test]
    fn the_superblock_gives_the_size_mkfs_made() {
        // ext4 on 64 MiB, then told to use only 48 MiB of it.
        if let Some(image) = made("sb-ext4", 64 << 20, "mkfs.ext4", &["-q", "-F"]) {
            assert_eq!(filesystem_bytes(&image, FsType::Ext4), Some(64 << 20));
            assert_eq!(filesystem_bytes(&image, FsType::Xfs), None);
        }
        if let Some(image) = made(
            "sb-ext4-small",
            64 << 20,
            "mkfs.ext4",
            &["-q", "-F", "-b", "4096"],
        ) {
            // Rewrite the block count as a smaller filesystem would have it.
            let mut head = fs::read(&image).unwrap()[..4096].to_vec();
            head[1024 + 4..1024 + 8].copy_from_slice(&((48u32 << 20) / 4096).to_le_bytes());
            assert_eq!(superblock_bytes(FsType::Ext4, &head), Some(48 << 20));
        }
        // XFS needs 300 MiB at least.
        if let Some(image) = made("sb-xfs", 512 << 20, "mkfs.xfs", &["-q", "-f"]) {
            assert_eq!(filesystem_bytes(&image, FsType::Xfs), Some(512 << 20));
            assert_eq!(filesystem_bytes(&image, FsType::Ext4), None);
        }
    }

    #[test]
    fn a_short_or_foreign_superblock_gives_no_size() {
        assert_eq!(superblock_bytes(FsType::Ext4, &[0u8; 4096]), None);
        assert_eq!(superblock_bytes(FsType::Xfs, &[0u8; 4096]), None);
        assert_eq!(superblock_bytes(FsType::Ext4, &[0u8; 100]), None);
        let mut xfs = vec![0u8; 16];
        xfs[..4].copy_from_slice(b"XFSB");
        xfs[4..8].copy_from_slice(&4096u32.to_be_bytes());
        xfs[8..16].copy_from_slice(&1000u64.to_be_bytes());
        assert_eq!(superblock_bytes(FsType::Xfs, &xfs), Some(4096 * 1000));
        // A block size that would overflow is no size, not a panic.
        let mut ext4 = vec![0u8; 2048];
        ext4[1024 + 0x38..1024 + 0x3a].copy_from_slice(&[0x53, 0xEF]);
        ext4[1024 + 0x18..1024 + 0x1c].copy_from_slice(&70u32.to_le_bytes());
        ext4[1024 + 4..1024 + 8].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(superblock_bytes(FsType::Ext4, &ext4), None);
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
}
