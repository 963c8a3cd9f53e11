//! Node paths: staging and publish paths confined strictly under the
//! kubelet directory (after resolving the symlinks of their existing
//! part), and the small markers that record, on the host, which volume a
//! path was staged or published for.
//!
//! A marker is a file next to the path, in the directory kubelet made for
//! it: `<dir>/.<name>.rds-csi-staged` or `.rds-csi-published`, holding the
//! volume id and the device number that was mounted there. It is written
//! before the path is created or mounted and removed once the path is torn
//! down, so it survives a plugin restart and tells, without any memory:
//! - that a path without a mount is a publish (or staging) path of this
//!   volume whose mount went away (stats: abnormal, not NOT_FOUND);
//! - that a mount whose device is no longer an attached namespace (the
//!   controller was lost) is still this volume's (same device number);
//! - that a plain file or directory at a target is one we created and may
//!   remove.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::echo::echo;
use crate::host::DevNum;

/// Why a request path is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not absolute (or empty).
    NotAbsolute { field: &'static str, raw: String },
    /// Contains `..` or a NUL byte.
    Unclean { field: &'static str, raw: String },
    /// An existing part of it cannot be resolved (a dangling symlink, no
    /// permission): where it leads is unknown.
    Unresolvable {
        field: &'static str,
        raw: String,
        part: PathBuf,
        why: String,
    },
    /// It resolves to somewhere not strictly under the kubelet directory.
    Outside {
        field: &'static str,
        raw: String,
        resolved: PathBuf,
        kubelet_dir: PathBuf,
    },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotAbsolute { field, raw } => {
                write!(f, "{field} {} must be an absolute path", echo(raw))
            }
            PathError::Unclean { field, raw } => write!(
                f,
                "{field} {} must be an absolute path without '..' or NUL bytes",
                echo(raw)
            ),
            PathError::Unresolvable {
                field,
                raw,
                part,
                why,
            } => write!(
                f,
                "{field} {}: cannot resolve {} ({why}); refusing a path whose target is unknown",
                echo(raw),
                echo(&part.to_string_lossy())
            ),
            PathError::Outside {
                field,
                raw,
                resolved,
                kubelet_dir,
            } => write!(
                f,
                "{field} {} (resolved {}) is not under the kubelet directory {} (--kubelet-dir): \
                 the node plugin only stages and publishes below it",
                echo(raw),
                echo(&resolved.to_string_lossy()),
                kubelet_dir.display()
            ),
        }
    }
}

impl std::error::Error for PathError {}

/// `raw` as an absolute path with `..` and NUL refused and `.` and
/// repeated slashes dropped.
pub fn clean_absolute(field: &'static str, raw: &str) -> Result<PathBuf, PathError> {
    if raw.contains('\0') {
        return Err(PathError::Unclean {
            field,
            raw: raw.to_string(),
        });
    }
    let p = Path::new(raw);
    if !p.is_absolute() {
        return Err(PathError::NotAbsolute {
            field,
            raw: raw.to_string(),
        });
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(PathError::Unclean {
            field,
            raw: raw.to_string(),
        });
    }
    Ok(p.components().collect())
}

/// `path` with every symlink in its longest existing prefix resolved, and
/// the rest (which does not exist yet) appended as written. An entry that
/// exists but cannot be resolved (a dangling symlink) is an error: we would
/// later create whatever it points at.
pub fn resolve_existing(path: &Path) -> Result<PathBuf, (PathBuf, io::Error)> {
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    let mut current = path;
    loop {
        match fs::canonicalize(current) {
            Ok(mut resolved) => {
                for part in rest.iter().rev() {
                    resolved.push(part);
                }
                return Ok(resolved);
            }
            Err(e) => {
                // Missing: look one level up. Present but unresolvable: refuse.
                if fs::symlink_metadata(current).is_ok() || e.kind() != io::ErrorKind::NotFound {
                    return Err((current.to_path_buf(), e));
                }
                match (current.parent(), current.file_name()) {
                    (Some(parent), Some(name)) => {
                        rest.push(name);
                        current = parent;
                    }
                    _ => return Err((current.to_path_buf(), e)),
                }
            }
        }
    }
}

/// The kubelet directory as it resolves now (as given when it does not exist).
pub fn resolved_kubelet_dir(kubelet_dir: &Path) -> PathBuf {
    fs::canonicalize(kubelet_dir).unwrap_or_else(|_| kubelet_dir.to_path_buf())
}

/// A request path, resolved and checked to lie strictly under `kubelet_dir`.
/// The resolved path is what the caller then works on, so a symlink cannot
/// redirect the work after the check.
pub fn confine(field: &'static str, raw: &str, kubelet_dir: &Path) -> Result<PathBuf, PathError> {
    let clean = clean_absolute(field, raw)?;
    let resolved = resolve_existing(&clean).map_err(|(part, e)| PathError::Unresolvable {
        field,
        raw: raw.to_string(),
        part,
        why: e.to_string(),
    })?;
    let base = resolved_kubelet_dir(kubelet_dir);
    if resolved != base && resolved.starts_with(&base) {
        Ok(resolved)
    } else {
        Err(PathError::Outside {
            field,
            raw: raw.to_string(),
            resolved,
            kubelet_dir: base,
        })
    }
}

// ---------------------------------------------------------------------------
// Markers
// ---------------------------------------------------------------------------

/// What a path was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Staged,
    Published,
}

impl Role {
    fn suffix(self) -> &'static str {
        match self {
            Role::Staged => "rds-csi-staged",
            Role::Published => "rds-csi-published",
        }
    }
}

/// The record next to a staging or publish path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub volume: String,
    /// The device mounted there when it was made.
    pub dev: DevNum,
}

const MARKER_HEADER: &str = "rds-csi marker v1";

/// `<dir>/.<name>.<suffix>` for `<dir>/<name>`; None for `/`.
pub fn marker_path(path: &Path, role: Role) -> Option<PathBuf> {
    let name = path.file_name()?;
    let parent = path.parent()?;
    let mut file = std::ffi::OsString::from(".");
    file.push(name);
    file.push(".");
    file.push(role.suffix());
    Some(parent.join(file))
}

impl Marker {
    fn render(&self) -> String {
        format!("{MARKER_HEADER}\nvolume {}\ndev {}\n", self.volume, self.dev)
    }

    /// Parses a marker; None for anything not exactly in our format.
    pub fn parse(text: &str) -> Option<Marker> {
        let mut lines = text.lines();
        if lines.next()? != MARKER_HEADER {
            return None;
        }
        let volume = lines.next()?.strip_prefix("volume ")?.to_string();
        let dev = DevNum::parse(lines.next()?.strip_prefix("dev ")?)?;
        if volume.is_empty() || lines.next().is_some() {
            return None;
        }
        Some(Marker { volume, dev })
    }
}

/// Writes the marker for `path` (creating its directory), replacing any
/// older one. Written to a temporary file and renamed, so a reader never
/// sees half of it.
pub fn write_marker(path: &Path, role: Role, marker: &Marker) -> io::Result<()> {
    let file = marker_path(path, role).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut tmp = file.clone().into_os_string();
    tmp.push(".tmp");
    fs::write(&tmp, marker.render())?;
    fs::rename(&tmp, &file)
}

/// The marker for `path`, if there is one in our format.
pub fn read_marker(path: &Path, role: Role) -> Option<Marker> {
    let file = marker_path(path, role)?;
    Marker::parse(&fs::read_to_string(file).ok()?)
}

/// True when the marker for `path` names `volume`.
pub fn marked_for(path: &Path, role: Role, volume: &str) -> Option<Marker> {
    read_marker(path, role).filter(|m| m.volume == volume)
}

/// Removes the marker for `path`; gone already is fine.
pub fn remove_marker(path: &Path, role: Role) -> io::Result<()> {
    let Some(file) = marker_path(path, role) else {
        return Ok(());
    };
    match fs::remove_file(file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "rds-csi-paths-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&d).unwrap();
        fs::canonicalize(&d).unwrap()
    }

    #[test]
    fn only_paths_strictly_under_the_kubelet_dir_pass() {
        let d = scratch("confine");
        let kubelet = d.join("kubelet");
        fs::create_dir_all(kubelet.join("pods/p")).unwrap();
        let k = kubelet.to_str().unwrap();
        let ok = confine("target_path", &format!("{k}/pods/p/volumes/v/mount"), &kubelet).unwrap();
        assert_eq!(ok, kubelet.join("pods/p/volumes/v/mount"));
        // `.` and doubled slashes are harmless.
        let ok = confine("target_path", &format!("{k}//pods/./p/x"), &kubelet).unwrap();
        assert_eq!(ok, kubelet.join("pods/p/x"));
        for (raw, needle) in [
            (k.to_string(), "not under"),
            (format!("{k}/../etc"), "'..'"),
            ("/tmp/x/precious.txt".to_string(), "not under"),
            ("/proc/self".to_string(), "not under"),
            (format!("{k}x/pods"), "not under"),
            ("relative/path".to_string(), "absolute"),
            (String::new(), "absolute"),
            (format!("{k}/a\0b"), "NUL"),
        ] {
            let e = confine("staging_target_path", &raw, &kubelet).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(needle) && msg.starts_with("staging_target_path"),
                "{raw:?}: {msg}"
            );
        }
        // A symlink inside that leads out is followed, then refused.
        std::os::unix::fs::symlink("/etc", kubelet.join("pods/p/escape")).unwrap();
        let e = confine("target_path", &format!("{k}/pods/p/escape/passwd"), &kubelet).unwrap_err();
        assert!(
            matches!(e, PathError::Outside { ref resolved, .. } if resolved == Path::new("/etc/passwd")),
            "{e}"
        );
        // A dangling symlink: where it leads is unknown until created.
        std::os::unix::fs::symlink(d.join("nowhere/else"), kubelet.join("pods/p/dangling")).unwrap();
        let e = confine("target_path", &format!("{k}/pods/p/dangling/x"), &kubelet).unwrap_err();
        assert!(matches!(e, PathError::Unresolvable { .. }), "{e}");
        // A symlinked kubelet dir: paths through either name pass.
        let link = d.join("kubelet-link");
        std::os::unix::fs::symlink(&kubelet, &link).unwrap();
        let via = confine("target_path", &format!("{}/pods/q", link.display()), &kubelet).unwrap();
        assert_eq!(via, kubelet.join("pods/q"));
        assert!(confine("target_path", &format!("{k}/pods/q"), &link).is_ok());
        // A huge value is echoed bounded.
        let huge = format!("/{}", "x".repeat(1 << 20));
        let msg = confine("target_path", &huge, &kubelet).unwrap_err().to_string();
        assert!(msg.len() < 1024, "{} bytes", msg.len());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn markers_round_trip_and_reject_anything_else() {
        let d = scratch("marker");
        let target = d.join("pod/volumes/pv-1/mount");
        assert_eq!(
            marker_path(&target, Role::Published).unwrap(),
            d.join("pod/volumes/pv-1/.mount.rds-csi-published")
        );
        assert_eq!(read_marker(&target, Role::Published), None);
        let m = Marker {
            volume: "pvc-1".into(),
            dev: DevNum { major: 259, minor: 3 },
        };
        write_marker(&target, Role::Published, &m).unwrap();
        assert_eq!(read_marker(&target, Role::Published), Some(m.clone()));
        assert_eq!(marked_for(&target, Role::Published, "pvc-1"), Some(m));
        assert_eq!(marked_for(&target, Role::Published, "pvc-2"), None);
        assert_eq!(read_marker(&target, Role::Staged), None);
        remove_marker(&target, Role::Published).unwrap();
        remove_marker(&target, Role::Published).unwrap();
        assert_eq!(read_marker(&target, Role::Published), None);
        for bad in [
            "",
            "volume pvc-1\ndev 1:2\n",
            "rds-csi marker v1\nvolume \ndev 1:2\n",
            "rds-csi marker v1\nvolume pvc-1\ndev x\n",
            "rds-csi marker v1\nvolume pvc-1\ndev 1:2\nextra\n",
        ] {
            assert_eq!(Marker::parse(bad), None, "{bad:?}");
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
