//! The RouterOS client's one error type: which operation on which slot failed, what the RDS said, and the kind the controller maps to a gRPC code.
//!
//! No variant carries the password or the Authorization header: credentials
//! only ever live in `transport::Credentials`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::types::Version;
use crate::echo::echo;

/// The client operation that failed; named in every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ReadSystemResource,
    ReadPool,
    ReadDisk,
    ListDisks,
    CreateDisk,
    ExportDisk,
    GrowDisk,
    SetComment,
    UnexportDisk,
    RemoveDisk,
    ListFiles,
    RemoveFile,
    MakeDirectory,
    ListSubvolumes,
    CreateSubvolume,
    SnapshotSubvolume,
    RemoveSubvolume,
    SetAllowedHosts,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::ReadSystemResource => "read system resource",
            Op::ReadPool => "read pool",
            Op::ReadDisk => "read disk",
            Op::ListDisks => "list disks",
            Op::CreateDisk => "create disk",
            Op::ExportDisk => "export disk",
            Op::GrowDisk => "grow disk",
            Op::SetComment => "set comment of disk",
            Op::UnexportDisk => "unexport disk",
            Op::RemoveDisk => "remove disk",
            Op::ListFiles => "list files",
            Op::RemoveFile => "remove file",
            Op::MakeDirectory => "make directory",
            Op::ListSubvolumes => "list btrfs subvolumes",
            Op::CreateSubvolume => "create btrfs subvolume",
            Op::SnapshotSubvolume => "snapshot btrfs subvolume",
            Op::RemoveSubvolume => "remove btrfs subvolume",
            Op::SetAllowedHosts => "set allowed hosts of disk",
        })
    }
}

/// What kind of failure, for the controller's mapping to gRPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The client configuration or a local file it needs is wrong.
    Config,
    NotFound,
    AlreadyExists,
    NotEnoughSpace,
    /// RouterOS refused a value (`invalid value for argument ...`).
    InvalidValue,
    /// Wrong credentials, or the RouterOS user lacks a policy.
    Unauthorized,
    /// The RouterOS version lacks a field or menu the operation needs.
    TooOld,
    /// Refused, reset, timed out, 5xx, `Session closed`, or too busy:
    /// trying again later may work.
    Unavailable,
    /// The RDS's certificate is not trusted.
    Tls,
    /// RouterOS refused for another definite reason (e.g. a file in use).
    Rejected,
    /// RouterOS answered something this client does not understand, or a
    /// change did not read back as asked.
    Protocol,
}

/// Any failure of the RouterOS client.
#[derive(Debug)]
pub enum Error {
    /// `ClientConfig::address` is not `https://host[:port]` or `http://host[:port]`.
    ParseAddress { address: String, reason: &'static str },
    /// A `--rds-tls-fingerprint` value is not a SHA-256 fingerprint.
    ParseFingerprint { reason: &'static str },
    /// The CA file given with `--rds-ca-file` cannot be read.
    ReadCaFile { path: PathBuf, source: io::Error },
    /// The CA file holds no usable PEM certificate.
    ParseCaFile {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate from the CA file is not acceptable as a trust anchor.
    AddCaCertificate { path: PathBuf, source: rustls::Error },
    /// rustls refused the verifier or the TLS configuration.
    BuildTls { reason: String },
    /// A credentials file cannot be read.
    ReadCredentials { path: PathBuf, source: io::Error },
    /// The username file is empty.
    EmptyUsername { path: PathBuf },
    /// RouterOS answered with an error status.
    Answer {
        op: Op,
        target: String,
        status: u16,
        message: String,
        detail: Option<String>,
        kind: Kind,
    },
    /// No answer: connection refused or reset, DNS, or a timeout. `cause`
    /// is a short summary of `source` for one-line messages.
    Connect {
        op: Op,
        target: String,
        address: String,
        cause: &'static str,
        source: Box<ureq::Transport>,
    },
    /// The TLS handshake failed: the certificate is not trusted or not the
    /// pinned one. `presented` is the SHA-256 of the certificate the server
    /// showed, so the operator can compare or pin it.
    Tls {
        op: Op,
        target: String,
        address: String,
        reason: String,
        presented: Option<String>,
        source: Box<ureq::Transport>,
    },
    /// `max_in_flight` requests were busy for the whole request timeout.
    Busy {
        op: Op,
        target: String,
        waited: Duration,
        limit: usize,
    },
    /// The answer is not the JSON shape RouterOS gives.
    Decode { op: Op, target: String, what: String },
    /// A change did not read back as asked.
    Verify {
        op: Op,
        slot: String,
        field: &'static str,
        expected: String,
        found: String,
    },
    /// A disk with this slot exists but is not the one asked for.
    Exists {
        op: Op,
        slot: String,
        field: &'static str,
        expected: String,
        found: String,
    },
    /// No disk (or pool) with this slot exists.
    NoDisk { op: Op, slot: String },
    /// The disk is not a file-backed disk (a pool, a drive): never touched.
    NotAFileDisk { op: Op, slot: String, kind: String },
    /// The disk's backing file is not the one the caller named.
    FilePathMismatch {
        op: Op,
        slot: String,
        expected: String,
        found: String,
    },
    /// Something other than a folder has the name a folder should have.
    NotAFolder { op: Op, path: String, kind: String },
    /// A subvolume with this name exists but is not the one asked for
    /// (another parent, or read-only where writable was asked).
    SubvolumeExists {
        op: Op,
        name: String,
        field: &'static str,
        expected: String,
        found: String,
    },
    /// The subvolume a snapshot is to be taken of does not exist.
    NoSubvolume { op: Op, name: String },
    /// The path is not inside the Btrfs filesystem's mount point, so it
    /// cannot be a subvolume there.
    OutsideFilesystem {
        op: Op,
        path: String,
        mount_point: String,
    },
    /// The RouterOS version lacks a feature the operation needs.
    TooOld {
        op: Op,
        target: String,
        feature: &'static str,
        needs: Version,
        version: String,
    },
    /// The retry loop stopped on a transient error.
    GaveUp {
        op: Op,
        target: String,
        attempts: u32,
        elapsed: Duration,
        last: Box<Error>,
    },
}

/// The RouterOS policies the driver's user needs, named the same way in
/// every message, the doctor and the README.
pub const REQUIRED_POLICIES: &str = "read,write,test,api,rest-api";

/// `target` is a slot, path or name that may come from a request (a volume
/// id, a CSI name): shown bare when it is a short plain name, else echoed
/// bounded and escaped.
fn target_suffix(target: &str) -> String {
    if target.is_empty() {
        String::new()
    } else {
        format!(" {}", shown(target))
    }
}

/// A value in a message: bare when it is short and plain (slots, paths,
/// numbers), else quoted, escaped and cut by `echo`.
pub(crate) fn shown(value: &str) -> String {
    let plain = value.len() <= crate::echo::ECHO_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'*'));
    if plain {
        value.to_string()
    } else {
        crate::echo::echo(value).to_string()
    }
}

/// What RouterOS itself said, which may repeat a value we sent: kept to
/// one bounded line.
fn bounded(text: &str) -> String {
    if text.len() <= crate::echo::ECHO_MAX && !text.chars().any(char::is_control) {
        text.to_string()
    } else {
        crate::echo::echo(text).to_string()
    }
}

/// `std failure: not allowed (9)`: the user lacks a policy (HTTP 500 on
/// RouterOS 7.24, but a definite answer).
fn is_policy_refusal(detail: Option<&str>) -> bool {
    detail.is_some_and(|d| d.to_ascii_lowercase().contains("not allowed"))
}

/// `no such command or directory (<word>)`: the menu or command does not
/// exist on this box.
fn is_no_such_command(detail: Option<&str>) -> bool {
    detail.is_some_and(|d| d.to_ascii_lowercase().contains("no such command"))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ParseAddress { address, reason } => {
                write!(f, "invalid rds address {address:?}: {reason}")
            }
            Error::ParseFingerprint { reason } => write!(
                f,
                "invalid --rds-tls-fingerprint: {reason} (expected 64 hex digits of the certificate's sha-256, optionally prefixed with sha256: and separated by colons)"
            ),
            Error::ReadCaFile { path, .. } => {
                write!(f, "cannot read the rds ca file {}", path.display())
            }
            Error::ParseCaFile { path, .. } => write!(
                f,
                "no pem certificate in the rds ca file {}",
                path.display()
            ),
            Error::AddCaCertificate { path, .. } => write!(
                f,
                "a certificate in the rds ca file {} is not usable as a trust anchor",
                path.display()
            ),
            Error::BuildTls { reason } => write!(f, "cannot set up tls for the rds: {reason}"),
            Error::ReadCredentials { path, .. } => {
                write!(f, "cannot read the rds credentials file {}", path.display())
            }
            Error::EmptyUsername { path } => {
                write!(f, "the rds username file {} is empty", path.display())
            }
            Error::Answer {
                op,
                target,
                status,
                message,
                detail,
                kind,
            } => {
                let what = match kind {
                    Kind::NotFound => "not found".to_string(),
                    Kind::AlreadyExists => "already exists".to_string(),
                    Kind::NotEnoughSpace => "not enough space on the rds".to_string(),
                    Kind::InvalidValue => "invalid value".to_string(),
                    Kind::Unauthorized if is_policy_refusal(detail.as_deref()) => format!(
                        "the routeros user lacks a policy: give its group exactly {REQUIRED_POLICIES}"
                    ),
                    Kind::Unauthorized => format!(
                        "unauthorized (check the rds username and password, and that the user's group has the policies {REQUIRED_POLICIES})"
                    ),
                    Kind::TooOld => "not supported by this routeros version".to_string(),
                    Kind::Unavailable => "rds temporarily unavailable".to_string(),
                    Kind::Protocol if is_no_such_command(detail.as_deref()) => {
                        "the rds has no such menu or command (a wrong path or verb, or a routeros package this rds lacks)"
                            .to_string()
                    }
                    _ => "refused by the rds".to_string(),
                };
                write!(
                    f,
                    "{op}{}: {what} (rds answered {status} {}",
                    target_suffix(target),
                    bounded(message)
                )?;
                if let Some(detail) = detail {
                    write!(f, ": {}", bounded(detail))?;
                }
                f.write_str(")")
            }
            Error::Connect {
                op,
                target,
                address,
                cause,
                ..
            } => write!(
                f,
                "{op}{}: cannot reach the rds at {address}: {cause}",
                target_suffix(target)
            ),
            Error::Tls {
                op,
                target,
                address,
                reason,
                presented,
                ..
            } => {
                write!(
                    f,
                    "{op}{}: tls handshake with the rds at {address} failed: {reason}",
                    target_suffix(target)
                )?;
                if let Some(presented) = presented {
                    write!(f, " (the server presented certificate {presented})")?;
                }
                Ok(())
            }
            Error::Busy {
                op,
                target,
                waited,
                limit,
            } => write!(
                f,
                "{op}{}: all {limit} allowed requests to the rds stayed busy for {waited:?}",
                target_suffix(target)
            ),
            Error::Decode { op, target, what } => write!(
                f,
                "{op}{}: unexpected answer from the rds: {}",
                target_suffix(target),
                bounded(what)
            ),
            Error::Verify {
                op,
                slot,
                field,
                expected,
                found,
            } => write!(
                f,
                "{op} {}: the rds did not apply the change: {field} reads back {}, expected {}",
                shown(slot),
                echo(found),
                echo(expected)
            ),
            Error::Exists {
                op,
                slot,
                field,
                expected,
                found,
            } => write!(
                f,
                "{op} {}: a different disk with this slot already exists ({field} is {}, expected {})",
                shown(slot),
                echo(found),
                echo(expected)
            ),
            Error::NoDisk { op, slot } => write!(f, "{op} {}: no such disk on the rds", shown(slot)),
            Error::NotAFileDisk { op, slot, kind } => write!(
                f,
                "{op} {}: the disk is of type {}, not a file-backed disk; refusing to touch it",
                shown(slot),
                echo(kind)
            ),
            Error::FilePathMismatch {
                op,
                slot,
                expected,
                found,
            } => write!(
                f,
                "{op} {}: the disk's backing file is {}, not {}; refusing to touch it",
                shown(slot),
                echo(found),
                echo(expected)
            ),
            Error::NotAFolder { op, path, kind } => write!(
                f,
                "{op} {}: a {} of that name exists on the rds, not a directory; refusing to use it",
                shown(path),
                echo(kind)
            ),
            Error::SubvolumeExists {
                op,
                name,
                field,
                expected,
                found,
            } => write!(
                f,
                "{op} {}: a different subvolume with this name already exists ({field} is {}, expected {})",
                shown(name),
                echo(found),
                echo(expected)
            ),
            Error::NoSubvolume { op, name } => {
                write!(f, "{op} {}: no such btrfs subvolume on the rds", shown(name))
            }
            Error::OutsideFilesystem { op, path, mount_point } => write!(
                f,
                "{op} {}: not inside the btrfs filesystem mounted at {}; refusing it",
                shown(path),
                shown(mount_point)
            ),
            Error::TooOld {
                op,
                target,
                feature,
                needs,
                version,
            } => write!(
                f,
                "{op}{}: routeros {version} is too old: {feature} needs routeros {needs} or newer",
                target_suffix(target)
            ),
            Error::GaveUp {
                op,
                target,
                attempts,
                elapsed,
                ..
            } => write!(
                f,
                "{op}{}: gave up after {attempts} attempt{} in {:.1}s",
                target_suffix(target),
                if *attempts == 1 { "" } else { "s" },
                elapsed.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ReadCaFile { source, .. } | Error::ReadCredentials { source, .. } => Some(source),
            Error::ParseCaFile { source, .. } => Some(source),
            Error::AddCaCertificate { source, .. } => Some(source),
            Error::Connect { source, .. } | Error::Tls { source, .. } => Some(source.as_ref()),
            Error::GaveUp { last, .. } => Some(last.as_ref()),
            _ => None,
        }
    }
}

impl Error {
    /// The category the controller maps to a gRPC status code.
    pub fn kind(&self) -> Kind {
        match self {
            Error::ParseAddress { .. }
            | Error::ParseFingerprint { .. }
            | Error::ReadCaFile { .. }
            | Error::ParseCaFile { .. }
            | Error::AddCaCertificate { .. }
            | Error::BuildTls { .. }
            | Error::ReadCredentials { .. }
            | Error::EmptyUsername { .. } => Kind::Config,
            Error::Answer { kind, .. } => *kind,
            Error::Connect { .. } | Error::Busy { .. } => Kind::Unavailable,
            Error::Tls { .. } => Kind::Tls,
            Error::Decode { .. } | Error::Verify { .. } => Kind::Protocol,
            Error::Exists { .. } | Error::SubvolumeExists { .. } => Kind::AlreadyExists,
            Error::NoDisk { .. } | Error::NoSubvolume { .. } => Kind::NotFound,
            Error::OutsideFilesystem { .. } => Kind::Rejected,
            Error::FilePathMismatch { .. } | Error::NotAFileDisk { .. } | Error::NotAFolder { .. } => {
                Kind::Rejected
            }
            Error::TooOld { .. } => Kind::TooOld,
            Error::GaveUp { last, .. } => last.kind(),
        }
    }

    /// True when the same call may work later: the RDS is unreachable, busy,
    /// or answered 5xx / `Session closed`. Definite answers (not found, not
    /// enough space, invalid value, auth, tls) are never transient.
    pub fn is_transient(&self) -> bool {
        self.kind() == Kind::Unavailable
    }

    /// RouterOS's own words (`detail`), when it answered with one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::Answer { detail, .. } => detail.as_deref(),
            Error::GaveUp { last, .. } => last.detail(),
            _ => None,
        }
    }

    /// True for a not-found answer; teardown treats it as done.
    pub fn is_not_found(&self) -> bool {
        self.kind() == Kind::NotFound
    }
}

/// Maps a RouterOS error answer (HTTP status and `detail`) to a kind.
///
/// RouterOS reports most failures as 400 with its own words in `detail`, so
/// the words decide first; the status only fills in.
pub(crate) fn classify(status: u16, detail: Option<&str>) -> Kind {
    let d = detail.unwrap_or("").to_ascii_lowercase();
    if d.contains("session closed") {
        return Kind::Unavailable;
    }
    if status == 401 || status == 403 || d.contains("not allowed") {
        return Kind::Unauthorized;
    }
    if d.contains("not enough space") {
        return Kind::NotEnoughSpace;
    }
    if d.contains("already exists") || d.contains("already have") {
        return Kind::AlreadyExists;
    }
    // `no such command or directory (<word>)` means the menu or command
    // does not exist (a wrong path or verb, a missing package), whatever the
    // status (400 in field reports, 406 in MikroTik's page). It is never
    // "the item is gone": treating it so would report a failed delete as
    // done. Only 404 and `no such item` mean gone.
    if d.contains("no such command") {
        return Kind::Protocol;
    }
    if status == 404 || d.contains("no such item") {
        return Kind::NotFound;
    }
    if d.contains("unknown parameter") || d.contains("expected end of command") {
        return Kind::TooOld;
    }
    if d.contains("invalid value") || d.contains("value of") {
        return Kind::InvalidValue;
    }
    if status >= 500 {
        return Kind::Unavailable;
    }
    Kind::Rejected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_routeros_answers() {
        assert_eq!(classify(404, None), Kind::NotFound);
        assert_eq!(classify(400, Some("no such item")), Kind::NotFound);
        assert_eq!(
            classify(400, Some("failure: not enough space")),
            Kind::NotEnoughSpace
        );
        assert_eq!(
            classify(400, Some("invalid value for argument file-size")),
            Kind::InvalidValue
        );
        assert_eq!(
            classify(400, Some("failure: item with such slot already exists")),
            Kind::AlreadyExists
        );
        assert_eq!(classify(401, None), Kind::Unauthorized);
        assert_eq!(classify(403, Some("not allowed (9)")), Kind::Unauthorized);
        assert_eq!(classify(500, None), Kind::Unavailable);
        assert_eq!(classify(503, None), Kind::Unavailable);
        assert_eq!(classify(400, Some("Session closed")), Kind::Unavailable);
        assert_eq!(
            classify(400, Some("unknown parameter nvme-tcp-server-nqn")),
            Kind::TooOld
        );
        assert_eq!(classify(400, Some("failure: file is in use")), Kind::Rejected);
    }

    #[test]
    fn no_such_command_is_a_protocol_error_never_gone() {
        for status in [400, 406, 404] {
            let kind = classify(status, Some("no such command or directory (remove)"));
            assert_eq!(kind, Kind::Protocol, "status {status}");
        }
        let e = Error::Answer {
            op: Op::RemoveDisk,
            target: "pvc-1".into(),
            status: 400,
            message: "Bad Request".into(),
            detail: Some("no such command or directory (remove)".into()),
            kind: classify(400, Some("no such command or directory (remove)")),
        };
        assert!(!e.is_not_found());
        assert!(!e.is_transient());
        assert!(e.to_string().contains("no such menu or command"), "{e}");
    }

    #[test]
    fn missing_policy_is_definite_and_names_the_fix() {
        let detail = "std failure: not allowed (9)";
        assert_eq!(classify(500, Some(detail)), Kind::Unauthorized);
        let e = Error::Answer {
            op: Op::ListDisks,
            target: String::new(),
            status: 500,
            message: "Internal Server Error".into(),
            detail: Some(detail.into()),
            kind: classify(500, Some(detail)),
        };
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains(REQUIRED_POLICIES) && text.contains("lacks a policy"),
            "{text}"
        );
        let e = Error::Answer {
            op: Op::ListDisks,
            target: String::new(),
            status: 401,
            message: "Unauthorized".into(),
            detail: None,
            kind: classify(401, None),
        };
        assert!(e.to_string().contains("read,write,test,api,rest-api"), "{e}");
    }

    #[test]
    fn request_values_in_messages_are_bounded_and_escaped() {
        let long = format!("pvc-{}\nINFO forged", "x".repeat(200_000));
        let e = Error::NoDisk {
            op: Op::ReadDisk,
            slot: long.clone(),
        };
        let text = e.to_string();
        assert!(text.len() < 400 && !text.contains('\n'), "{} bytes", text.len());
        let e = Error::FilePathMismatch {
            op: Op::RemoveDisk,
            slot: "pvc-1".into(),
            expected: long.clone(),
            found: "storage-pool/a.img".into(),
        };
        let text = e.to_string();
        assert!(text.starts_with("remove disk pvc-1: "), "{text}");
        assert!(text.len() < 500 && !text.contains('\n'), "{} bytes", text.len());
    }

    #[test]
    fn answer_message_names_op_slot_and_detail() {
        let e = Error::Answer {
            op: Op::CreateDisk,
            target: "pvc-1".into(),
            status: 400,
            message: "Bad Request".into(),
            detail: Some("failure: not enough space".into()),
            kind: Kind::NotEnoughSpace,
        };
        let text = e.to_string();
        assert!(text.starts_with("create disk pvc-1: not enough space"), "{text}");
        assert!(text.contains("failure: not enough space"), "{text}");
        assert!(!e.is_transient());
        assert_eq!(e.detail(), Some("failure: not enough space"));
    }

    #[test]
    fn gave_up_keeps_the_last_kind() {
        let last = Error::Answer {
            op: Op::ListDisks,
            target: String::new(),
            status: 503,
            message: "Service Unavailable".into(),
            detail: None,
            kind: Kind::Unavailable,
        };
        let e = Error::GaveUp {
            op: Op::ListDisks,
            target: String::new(),
            attempts: 3,
            elapsed: Duration::from_millis(1500),
            last: Box::new(last),
        };
        assert_eq!(e.kind(), Kind::Unavailable);
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "list disks: gave up after 3 attempts in 1.5s");
        assert!(std::error::Error::source(&e).is_some());
    }
}
