//! gRPC status codes: the one place domain errors become a code and a
//! message, plus the validators for request fields shared by the services.
//! Every mapping is an exhaustive match, so a new variant does not compile
//! until it is mapped; the controller's table test below walks one example of
//! every variant, so it fails until the new variant has its row.

use grpcio::{RpcStatus, RpcStatusCode};

use crate::controller::Error as ControllerError;
use crate::volume::CapacityError;

/// The canonical upper-case name of a status code, for logs and `ctl`.
pub fn code_name(code: RpcStatusCode) -> &'static str {
    match i32::from(code) {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "INVALID_STATUS_CODE",
    }
}

macro_rules! constructors {
    ($($name:ident => $code:ident),+ $(,)?) => {
        $(
            #[doc = concat!("A `", stringify!($code), "` status with `message`.")]
            pub fn $name(message: impl Into<String>) -> RpcStatus {
                RpcStatus::with_message(RpcStatusCode::$code, message.into())
            }
        )+
    };
}

constructors! {
    invalid_argument => INVALID_ARGUMENT,
    not_found => NOT_FOUND,
    already_exists => ALREADY_EXISTS,
    failed_precondition => FAILED_PRECONDITION,
    resource_exhausted => RESOURCE_EXHAUSTED,
    out_of_range => OUT_OF_RANGE,
    aborted => ABORTED,
    internal => INTERNAL,
    unavailable => UNAVAILABLE,
    deadline_exceeded => DEADLINE_EXCEEDED,
    unimplemented => UNIMPLEMENTED,
}

/// Maps a RouterOS client failure to a status, once for the whole driver.
/// `what` says which CSI operation on which volume failed; the client's own
/// message adds which REST operation and what the RDS said.
pub fn from_rds(what: &str, err: &crate::rds::Error) -> RpcStatus {
    let message = format!("{what}: {}", crate::error_chain(err));
    RpcStatus::with_message(rds_code(err.kind()), message)
}

/// The code for each kind of RouterOS client failure.
fn rds_code(kind: crate::rds::Kind) -> RpcStatusCode {
    use crate::rds::Kind;
    match kind {
        // Transient after the client's own retries: the sidecar retries later.
        Kind::Unavailable => RpcStatusCode::UNAVAILABLE,
        Kind::NotEnoughSpace => RpcStatusCode::RESOURCE_EXHAUSTED,
        Kind::NotFound => RpcStatusCode::NOT_FOUND,
        Kind::AlreadyExists => RpcStatusCode::ALREADY_EXISTS,
        // RouterOS refused a value derived from the request's parameters.
        Kind::InvalidValue => RpcStatusCode::INVALID_ARGUMENT,
        // The operator fixes credentials or trust; until then the RDS is
        // unavailable to us, and retrying is right.
        Kind::Unauthorized | Kind::Tls => RpcStatusCode::UNAVAILABLE,
        Kind::TooOld | Kind::Rejected | Kind::Config => RpcStatusCode::FAILED_PRECONDITION,
        Kind::Protocol => RpcStatusCode::INTERNAL,
    }
}

/// A required string field: present and non-empty, or INVALID_ARGUMENT
/// naming the field.
pub fn require<'a>(field: &str, value: &'a str) -> Result<&'a str, RpcStatus> {
    if value.is_empty() {
        Err(invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

// ---------------------------------------------------------------------------
// Controller errors
// ---------------------------------------------------------------------------
/// The gRPC status for a controller error: its code, and the error's own
/// message (with its causes) as the status message.
pub fn controller_error(e: &ControllerError) -> RpcStatus {
    use RpcStatusCode as C;
    let code = match e {
        // The RDS's own failure keeps the one mapping of RDS failure kinds.
        ControllerError::Rds { context, source } => return from_rds(context, source),
        ControllerError::Invalid { .. } => C::INVALID_ARGUMENT,
        // A size the source does not fit into can never succeed.
        ControllerError::SmallerThanSource { .. } => C::OUT_OF_RANGE,
        ControllerError::Capacity {
            source: CapacityError::Invalid(_),
            ..
        } => C::INVALID_ARGUMENT,
        ControllerError::Capacity {
            source: CapacityError::OutOfRange(_),
            ..
        } => C::OUT_OF_RANGE,
        // Another call on the volume is running: the sidecar retries.
        ControllerError::Busy { .. } => C::ABORTED,
        // A token from another driver or release: the CO restarts the listing.
        ControllerError::BadToken { .. } => C::ABORTED,
        // A node id that cannot name a node names no node (CSI spec).
        ControllerError::NoSuchVolume { .. } | ControllerError::UnknownNode { .. } => C::NOT_FOUND,
        ControllerError::SlotTaken { .. }
        | ControllerError::SlotCollision { .. }
        | ControllerError::ParametersDiffer { .. }
        | ControllerError::SizeOutsideRange { .. } => C::ALREADY_EXISTS,
        ControllerError::NoSpaceToCreate { .. } | ControllerError::NoSpaceToGrow { .. } => {
            C::RESOURCE_EXHAUSTED
        }
        // More than the pool holds can never succeed.
        ControllerError::BeyondPool { .. } => C::OUT_OF_RANGE,
        // An unmounted pool may come back: retry later.
        ControllerError::PoolNotMounted { .. } | ControllerError::PoolNotReadYet { .. } => C::UNAVAILABLE,
        ControllerError::StillPublished { .. } | ControllerError::PublishedElsewhere { .. } => {
            C::FAILED_PRECONDITION
        }
        ControllerError::RecordNotKept { .. } | ControllerError::AllowListNotKept { .. } => C::INTERNAL,
        ControllerError::HostNqnRule { .. } => C::INVALID_ARGUMENT,
        // Not on this pool, not of this volume: the CO must not retry as is.
        ControllerError::SnapshotsUnsupported { .. } | ControllerError::FlatVolume { .. } => {
            C::FAILED_PRECONDITION
        }
        ControllerError::SnapshotNameTaken { .. } => C::ALREADY_EXISTS,
        ControllerError::NoSuchSnapshot { .. } => C::NOT_FOUND,
    };
    RpcStatus::with_message(code, crate::error_chain(e))
}

// ---------------------------------------------------------------------------
// Node plugin errors: one function per domain error type.
// ---------------------------------------------------------------------------

/// NVMe attach/detach errors. A kernel still reconnecting or a connect that
/// kept failing transiently is UNAVAILABLE (kubelet retries); a connect that
/// failed definitely (not exported, bad arguments, no nvme tool) and an NQN
/// outside the managed prefix are FAILED_PRECONDITION.
pub fn nvme_error(e: &crate::host::nvme::Error) -> RpcStatus {
    use crate::host::nvme::Error as E;
    use crate::retry::GaveUp;
    let msg = crate::error_chain(e);
    match e {
        E::NotManaged { .. } | E::Busy { .. } => failed_precondition(msg),
        E::Reconnecting { .. } => unavailable(msg),
        E::Connect {
            gave_up: GaveUp::Definite,
            ..
        } => failed_precondition(msg),
        E::Connect { .. } => unavailable(msg),
        E::Disconnect { .. } | E::StillConnected { .. } | E::Rescan { .. } | E::Sysfs(_) => internal(msg),
    }
}

/// sysfs errors: a device that did not appear in time is UNAVAILABLE.
pub fn device_error(e: &crate::host::device::Error) -> RpcStatus {
    use crate::host::device::Error as E;
    let msg = crate::error_chain(e);
    match e {
        E::WaitDevice { .. } => unavailable(msg),
        E::ReadDir { .. } | E::ReadAttr { .. } | E::ParseAttr { .. } => internal(msg),
    }
}

/// Filesystem and mount errors: a device holding something we will not
/// format over is FAILED_PRECONDITION, a bad mount flag INVALID_ARGUMENT.
pub fn mount_error(e: &crate::host::mount::Error) -> RpcStatus {
    use crate::host::mount::Error as E;
    let msg = crate::error_chain(e);
    match e {
        E::BadMountFlag { .. } => invalid_argument(msg),
        E::ForeignSignature { .. } | E::OtherFilesystem { .. } | E::Unformatted { .. } => {
            failed_precondition(msg)
        }
        E::UnsupportedResize { .. } => invalid_argument(msg),
        // Every variant is named, so a new one must choose its code here.
        E::ReadMountTable { .. }
        | E::OpenDevice { .. }
        | E::ReadDevice { .. }
        | E::Probe { .. }
        | E::ProbeUnclear { .. }
        | E::Format { .. }
        | E::Mount { .. }
        | E::Bind { .. }
        | E::RemountReadOnly { .. }
        | E::Unmount { .. }
        | E::CreateTarget { .. }
        | E::RemoveTarget { .. }
        | E::Stat { .. }
        | E::Resize { .. } => internal(msg),
    }
}

/// Node service errors; wrapped domain errors map as above.
pub fn node_error(e: &crate::node::Error) -> RpcStatus {
    use crate::node::Error as E;
    match e {
        E::Nvme(e) => nvme_error(e),
        E::Device(e) => device_error(e),
        E::Mount(e) => mount_error(e),
        E::StagedOtherDevice { .. } | E::StagedOtherwise { .. } | E::PublishedOtherwise { .. } => {
            already_exists(crate::error_chain(e))
        }
        E::NotStaged { .. }
        | E::InUse { .. }
        | E::NotAttached { .. }
        | E::OtherVolume { .. }
        | E::NotOurs { .. }
        | E::SingleWriter { .. }
        | E::MountGone { .. } => failed_precondition(crate::error_chain(e)),
        E::NoSuchVolumePath { .. } | E::NotMounted { .. } | E::NotThisVolume { .. } => {
            not_found(crate::error_chain(e))
        }
        E::Marker { .. } => internal(crate::error_chain(e)),
        E::SizeNotReached { .. } => unavailable(crate::error_chain(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(RpcStatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(RpcStatusCode::OK), "OK");
        assert_eq!(code_name(RpcStatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
        assert_eq!(code_name(RpcStatusCode::from(99)), "INVALID_STATUS_CODE");
    }

    #[test]
    fn every_rds_failure_kind_has_its_code() {
        use crate::rds::Kind;
        use RpcStatusCode as C;
        // Exhaustive: a new kind breaks this test's build until it has a row.
        let row = |k: Kind| match k {
            Kind::Config => 0,
            Kind::NotFound => 1,
            Kind::AlreadyExists => 2,
            Kind::NotEnoughSpace => 3,
            Kind::InvalidValue => 4,
            Kind::Unauthorized => 5,
            Kind::TooOld => 6,
            Kind::Unavailable => 7,
            Kind::Tls => 8,
            Kind::Rejected => 9,
            Kind::Protocol => 10,
        };
        let table = [
            (Kind::Config, C::FAILED_PRECONDITION),
            (Kind::NotFound, C::NOT_FOUND),
            (Kind::AlreadyExists, C::ALREADY_EXISTS),
            (Kind::NotEnoughSpace, C::RESOURCE_EXHAUSTED),
            (Kind::InvalidValue, C::INVALID_ARGUMENT),
            (Kind::Unauthorized, C::UNAVAILABLE),
            (Kind::TooOld, C::FAILED_PRECONDITION),
            (Kind::Unavailable, C::UNAVAILABLE),
            (Kind::Tls, C::UNAVAILABLE),
            (Kind::Rejected, C::FAILED_PRECONDITION),
            (Kind::Protocol, C::INTERNAL),
        ];
        for (i, (kind, code)) in table.into_iter().enumerate() {
            assert_eq!(row(kind), i, "{kind:?} out of order");
            assert_eq!(rds_code(kind), code, "{kind:?}");
        }
    }

    #[test]
    fn require_names_the_field() {
        let err = require("volume_id", "").unwrap_err();
        assert_eq!(err.code(), RpcStatusCode::INVALID_ARGUMENT);
        assert_eq!(err.message(), "volume_id is required");
        assert_eq!(require("volume_id", "v").unwrap(), "v");
    }

    /// Each variant's row number: exhaustive, so a new variant breaks the
    /// build of this test until it has a row, and the table below must
    /// then hold an example of it.
    fn row(e: &ControllerError) -> usize {
        match e {
            ControllerError::Invalid { .. } => 0,
            ControllerError::SmallerThanSource { .. } => 1,
            ControllerError::Capacity { .. } => 2,
            ControllerError::Busy { .. } => 3,
            ControllerError::NoSuchVolume { .. } => 4,
            ControllerError::UnknownNode { .. } => 5,
            ControllerError::SlotTaken { .. } => 6,
            ControllerError::SlotCollision { .. } => 7,
            ControllerError::ParametersDiffer { .. } => 8,
            ControllerError::SizeOutsideRange { .. } => 9,
            ControllerError::NoSpaceToCreate { .. } => 10,
            ControllerError::NoSpaceToGrow { .. } => 11,
            ControllerError::BeyondPool { .. } => 12,
            ControllerError::PoolNotMounted { .. } => 13,
            ControllerError::StillPublished { .. } => 14,
            ControllerError::PublishedElsewhere { .. } => 15,
            ControllerError::RecordNotKept { .. } => 16,
            ControllerError::BadToken { .. } => 17,
            ControllerError::Rds { .. } => 18,
            ControllerError::SnapshotsUnsupported { .. } => 19,
            ControllerError::FlatVolume { .. } => 20,
            ControllerError::SnapshotNameTaken { .. } => 21,
            ControllerError::NoSuchSnapshot { .. } => 22,
            ControllerError::HostNqnRule { .. } => 23,
            ControllerError::AllowListNotKept { .. } => 24,
            ControllerError::PoolNotReadYet { .. } => 25,
        }
    }
    const ROWS: usize = 26;

    #[test]
    fn every_controller_error_has_its_code() {
        use RpcStatusCode as C;
        // The examples, in order, with the code each must map to.
        let expected = [
            C::INVALID_ARGUMENT,
            C::OUT_OF_RANGE,
            C::INVALID_ARGUMENT,
            C::OUT_OF_RANGE,
            C::ABORTED,
            C::NOT_FOUND,
            C::NOT_FOUND,
            C::ALREADY_EXISTS,
            C::ALREADY_EXISTS,
            C::ALREADY_EXISTS,
            C::ALREADY_EXISTS,
            C::RESOURCE_EXHAUSTED,
            C::RESOURCE_EXHAUSTED,
            C::OUT_OF_RANGE,
            C::UNAVAILABLE,
            C::UNAVAILABLE,
            C::FAILED_PRECONDITION,
            C::FAILED_PRECONDITION,
            C::INTERNAL,
            C::INVALID_ARGUMENT,
            C::INTERNAL,
            C::ABORTED,
            C::FAILED_PRECONDITION,
            C::FAILED_PRECONDITION,
            C::ALREADY_EXISTS,
            C::NOT_FOUND,
            C::RESOURCE_EXHAUSTED,
            C::UNAVAILABLE,
        ];
        let examples = ControllerError::examples();
        assert_eq!(examples.len(), expected.len(), "one expected code per example");
        let mut seen = [false; ROWS];
        for (e, code) in examples.iter().zip(expected) {
            seen[row(e)] = true;
            let st = controller_error(e);
            assert_eq!(st.code(), code, "{e:?} -> {}", st.message());
            let msg = st.message();
            assert!(!msg.is_empty() && !msg.contains('\n'), "{e:?}: {msg:?}");
            // Messages start lower-case or with the CSI call's name.
            let first = msg.chars().next().unwrap_or(' ');
            let call = msg
                .split(' ')
                .next()
                .is_some_and(|w| w.trim_end_matches(':').chars().all(|c| c.is_ascii_alphabetic()));
            assert!(first.is_lowercase() || call, "{msg}");
        }
        let missing: Vec<usize> = (0..ROWS).filter(|r| !seen[*r]).collect();
        assert!(missing.is_empty(), "no example for variant row(s) {missing:?}");
    }

    #[test]
    fn rds_failures_keep_their_context_and_cause() {
        let e = ControllerError::examples().pop().unwrap();
        let st = controller_error(&e);
        assert!(
            st.message().starts_with("DeleteVolume pvc-1: ") && st.message().contains("refused"),
            "{}",
            st.message()
        );
    }
}
