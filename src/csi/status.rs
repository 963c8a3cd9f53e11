//! The one mapping from the controller's typed errors to gRPC codes and
//! messages. The match is exhaustive, so a new variant does not compile
//! until it is mapped, and the table test below walks one example of every
//! variant, so it fails until the new variant has its row.

use grpcio::{RpcStatus, RpcStatusCode};

use crate::controller::Error;
use crate::volume::CapacityError;

/// The gRPC status for a controller error: its code, and the error's own
/// message (with its causes) as the status message.
pub fn controller_error(e: &Error) -> RpcStatus {
    use RpcStatusCode as C;
    let code = match e {
        // The RDS's own failure keeps the one mapping of RDS failure kinds.
        Error::Rds { context, source } => return crate::status::from_rds(context, source),
        Error::Invalid { .. } | Error::ContentSourceUnsupported { .. } => C::INVALID_ARGUMENT,
        Error::Capacity {
            source: CapacityError::Invalid(_),
            ..
        } => C::INVALID_ARGUMENT,
        Error::Capacity {
            source: CapacityError::OutOfRange(_),
            ..
        } => C::OUT_OF_RANGE,
        // Another call on the volume is running: the sidecar retries.
        Error::Busy { .. } => C::ABORTED,
        // A token from another driver or release: the CO restarts the listing.
        Error::BadToken { .. } => C::ABORTED,
        // A node id that cannot name a node names no node (CSI spec).
        Error::NoSuchVolume { .. } | Error::UnknownNode { .. } => C::NOT_FOUND,
        Error::SlotTaken { .. }
        | Error::SlotCollision { .. }
        | Error::ParametersDiffer { .. }
        | Error::SizeOutsideRange { .. } => C::ALREADY_EXISTS,
        Error::NoSpaceToCreate { .. } | Error::NoSpaceToGrow { .. } => C::RESOURCE_EXHAUSTED,
        // More than the pool holds can never succeed.
        Error::BeyondPool { .. } => C::OUT_OF_RANGE,
        // An unmounted pool may come back: retry later.
        Error::PoolNotMounted { .. } => C::UNAVAILABLE,
        Error::StillPublished { .. } | Error::PublishedElsewhere { .. } => C::FAILED_PRECONDITION,
        Error::RecordNotKept { .. } | Error::AllowListNotKept { .. } => C::INTERNAL,
        Error::HostNqnRule { .. } => C::INVALID_ARGUMENT,
    };
    RpcStatus::with_message(code, crate::error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant's row number: exhaustive, so a new variant breaks the
    /// build of this test until it has a row, and the table below must
    /// then hold an example of it.
    fn row(e: &Error) -> usize {
        match e {
            Error::Invalid { .. } => 0,
            Error::ContentSourceUnsupported { .. } => 1,
            Error::Capacity { .. } => 2,
            Error::Busy { .. } => 3,
            Error::NoSuchVolume { .. } => 4,
            Error::UnknownNode { .. } => 5,
            Error::SlotTaken { .. } => 6,
            Error::SlotCollision { .. } => 7,
            Error::ParametersDiffer { .. } => 8,
            Error::SizeOutsideRange { .. } => 9,
            Error::NoSpaceToCreate { .. } => 10,
            Error::NoSpaceToGrow { .. } => 11,
            Error::BeyondPool { .. } => 12,
            Error::PoolNotMounted { .. } => 13,
            Error::StillPublished { .. } => 14,
            Error::PublishedElsewhere { .. } => 15,
            Error::RecordNotKept { .. } => 16,
            Error::BadToken { .. } => 17,
            Error::Rds { .. } => 18,
            Error::HostNqnRule { .. } => 19,
            Error::AllowListNotKept { .. } => 20,
        }
    }
    const ROWS: usize = 21;

    #[test]
    fn every_controller_error_has_its_code() {
        use RpcStatusCode as C;
        // The examples, in order, with the code each must map to.
        let expected = [
            C::INVALID_ARGUMENT,
            C::INVALID_ARGUMENT,
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
            C::FAILED_PRECONDITION,
            C::FAILED_PRECONDITION,
            C::INTERNAL,
            C::INVALID_ARGUMENT,
            C::INTERNAL,
            C::ABORTED,
            C::RESOURCE_EXHAUSTED,
            C::UNAVAILABLE,
        ];
        let examples = Error::examples();
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
        let e = Error::examples().pop().unwrap();
        let st = controller_error(&e);
        assert!(
            st.message().starts_with("DeleteVolume pvc-1: ") && st.message().contains("refused"),
            "{}",
            st.message()
        );
    }
}
