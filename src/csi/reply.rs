//! The answer to one call: the status message capped, the reply queued,
//! metrics counted, and the call's one log line (request values escaped,
//! the line bounded, the polled methods at debug level).

use std::time::Instant;

use grpcio::{RpcStatus, RpcStatusCode, UnarySink};
use log::{debug, info, warn};

use super::dispatch::CallInfo;
use super::status;
use crate::echo::{cap_message, echo};

/// The longest status message sent back. gRPC carries the message in a
/// header, and a header over gRPC's hard metadata limit turns any answer
/// into RESOURCE_EXHAUSTED; a message that names a request value whole
/// (a 1 MiB name) would do that, so every message is cut here, whatever
/// the handler wrote.
pub const MAX_STATUS_MESSAGE: usize = 1024;

/// The longest per-call log line body; with env_logger's prefix (time,
/// level, module) the whole line stays under 1 KiB.
const MAX_LOG_LINE: usize = 900;

/// Methods that are polled (liveness probes, sidecars asking for
/// capabilities): logged at debug level so they do not drown the calls that
/// change state.
const QUIET_METHODS: &[&str] = &[
    "Probe",
    "GetPluginInfo",
    "GetPluginCapabilities",
    "ControllerGetCapabilities",
    "NodeGetCapabilities",
    "NodeGetInfo",
];

/// Queues the reply and writes the call's one log line.
///
/// The returned future must be kept until it completes: it holds gRPC's
/// reference to the call, and dropping that before gRPC has finished the
/// call makes gRPC core cancel it — the client then sees CANCELLED instead
/// of the answer.
pub(super) fn reply<Resp>(
    call: &CallInfo,
    started: Instant,
    sink: UnarySink<Resp>,
    result: Result<Resp, RpcStatus>,
) -> grpcio::UnarySinkResult {
    let seconds = started.elapsed().as_secs_f64();
    let ms = seconds * 1000.0;
    let code = match &result {
        Ok(_) => "OK",
        Err(st) => status::code_name(st.code()),
    };
    let labels = [("method", call.method), ("code", code)];
    crate::metrics::inc("rds_csi_rpc_requests_total", &labels);
    crate::metrics::observe("rds_csi_rpc_duration_seconds", &labels, seconds);
    let volume = || {
        if call.volume_id.is_empty() {
            String::new()
        } else {
            format!(" volume={}", log_value(&call.volume_id))
        }
    };
    match result {
        Ok(resp) => {
            let quiet = QUIET_METHODS.contains(&call.method);
            // The polled methods log at debug, which is usually filtered
            // out: do not build a line nobody will see.
            if quiet && !log::log_enabled!(log::Level::Debug) {
                return sink.success(resp);
            }
            let volume = volume();
            let line = format!("rpc {}{volume} code=OK duration={ms:.1}ms", call.method);
            let line = log_line(line);
            if quiet {
                debug!("{line}");
            } else {
                info!("{line}");
            }
            sink.success(resp)
        }
        Err(st) => {
            let volume = volume();
            let st = RpcStatus::with_message(
                st.code(),
                cap_message(st.message().to_string(), MAX_STATUS_MESSAGE),
            );
            let line = log_line(format!(
                "rpc {}{volume} code={code} duration={ms:.1}ms: {}",
                call.method,
                st.message()
            ));
            // Refusals the sidecars retry by design are not warnings.
            if matches!(st.code(), RpcStatusCode::ABORTED | RpcStatusCode::NOT_FOUND) {
                info!("{line}");
            } else {
                warn!("{line}");
            }
            sink.fail(st)
        }
    }
}

/// A request value in a log line: bare when it is a short plain id (so
/// `volume=pvc-1` reads and greps as before), else [`echo`]ed: quoted,
/// escaped and cut, so it can neither forge a field nor a line.
fn log_value(value: &str) -> String {
    let plain = value.len() <= crate::echo::ECHO_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'));
    if plain {
        value.to_string()
    } else {
        echo(value).to_string()
    }
}

/// One log line, whatever went into it: control characters (a newline in a
/// message would forge a line) are escaped, and the whole is capped.
fn log_line(text: String) -> String {
    let one_line = if text.chars().any(char::is_control) {
        text.chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect()
    } else {
        text
    };
    cap_message(one_line, MAX_LOG_LINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_one_line_and_bounded() {
        let line = log_line(format!("rpc X volume=a: {}\nFORGED line\r", "m".repeat(5000)));
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert!(line.len() <= MAX_LOG_LINE, "{}", line.len());
        assert_eq!(log_line("rpc X code=OK".into()), "rpc X code=OK");
        assert_eq!(log_value("pvc-1"), "pvc-1");
        assert_eq!(log_value("a b"), "\"a b\"");
        assert!(log_value(&"z".repeat(1 << 20)).len() < 200);
    }
}
