//! The host the node plugin works on: injectable roots for /sys, /dev,
//! /proc and /etc (so tests can use fake trees), device numbers and NVMe
//! device names, and the modules that touch the host: `exec` (the one
//! place that spawns), `sys` (the libc calls), `nvme`, `device` (sysfs),
//! `mount`, `orphan` and `paths`.

use std::path::PathBuf;

pub mod device;
pub mod exec;
pub mod mount;
pub mod nvme;
pub mod orphan;
pub mod paths;
pub mod sys;

/// Where the node plugin finds the host's /sys, /dev, /proc and /etc. In
/// production these are the real ones (or the host's, mounted into the
/// container); tests point them at fake trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub proc: PathBuf,
    pub etc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            proc: PathBuf::from("/proc"),
            etc: PathBuf::from("/etc"),
        }
    }
}

impl Roots {
    /// `<sys>/<rel>`.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }

    /// `<dev>/<rel>`.
    pub fn dev(&self, rel: &str) -> PathBuf {
        self.dev.join(rel)
    }

    /// `<proc>/<rel>`.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }

    /// `<etc>/<rel>`.
    pub fn etc(&self, rel: &str) -> PathBuf {
        self.etc.join(rel)
    }
}

/// A device number split the way sysfs (`dev`) and mountinfo print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// From a `st_rdev`/`st_dev` value.
    pub fn from_raw(dev: u64) -> DevNum {
        DevNum {
            major: libc::major(dev as libc::dev_t),
            minor: libc::minor(dev as libc::dev_t),
        }
    }

    /// `"259:3"` (a sysfs `dev` file or a mountinfo field).
    pub fn parse(text: &str) -> Option<DevNum> {
        let (major, minor) = text.trim().split_once(':')?;
        Some(DevNum {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// `nvme<digits>n<digits>`: a namespace block device (not a hidden path
/// `nvme0c1n1`, not a partition `nvme0n1p1`, not a controller `nvme0`).
pub fn is_namespace_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let Some((ctrl, ns)) = rest.split_once('n') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(ctrl) && digits(ns)
}
