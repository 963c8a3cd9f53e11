//! The gRPC server on the CSI unix socket: binding it (mode 0660 from the
//! first instant), the socket-level settings, and graceful shutdown. What
//! happens to each call is `dispatch`'s.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use grpcio::{RpcStatus, RpcStatusCode};
use log::{info, warn};

pub use super::codec::{decode_request, encode_request, oversized_field, Bounded, Decoded, NotDecoded};
use super::dispatch::block_on;
pub use super::dispatch::{CallInfo, Dispatcher, MAX_FIELD_BYTES};
use super::endpoint::prepare_socket_path;
pub use super::endpoint::{Endpoint, EndpointError, ServerError};
pub use super::reply::MAX_STATUS_MESSAGE;

/// The largest single socket read gRPC may make (see `start`).
const MAX_READ_CHUNK_BYTES: i32 = 64 * 1024;

/// The default answer of every generated handler the driver does not
/// implement.
pub fn unimplemented(method: &str) -> RpcStatus {
    RpcStatus::with_message(
        RpcStatusCode::UNIMPLEMENTED,
        format!("{method} is not implemented by this driver"),
    )
}

/// A running server; [`Running::shutdown`] stops it.
pub struct Running {
    server: grpcio::Server,
    dispatcher: Dispatcher,
    endpoint: Endpoint,
}

/// Binds `endpoint`, registers `services` and starts serving.
pub fn start(
    endpoint: &Endpoint,
    dispatcher: Dispatcher,
    services: Vec<grpcio::Service>,
) -> Result<Running, ServerError> {
    let path = endpoint.path();
    prepare_socket_path(path)?;
    // One completion queue is enough: handlers only hand work off.
    let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).name_prefix("grpc").build());
    // Memory of a burst of calls on kubelet's one connection (measured with
    // rds-bench: peak RSS under 64 concurrent calls 8.33-8.52 MiB before,
    // 7.75-8.45, median 7.97, after): gRPC's BDP probing grows the HTTP/2 flow-control window and,
    // with it, socket reads that double up to 4 MiB each. CSI messages are a
    // few hundred bytes on a local socket: the default 64 KiB window and
    // 64 KiB reads cost nothing in speed here.
    let args = grpcio::ChannelBuilder::new(Arc::clone(&env))
        .raw_cfg_int(std::ffi::CString::from(c"grpc.http2.bdp_probe"), 0)
        .raw_cfg_int(
            std::ffi::CString::from(c"grpc.experimental.tcp_max_read_chunk_size"),
            MAX_READ_CHUNK_BYTES,
        )
        .build_args();
    let mut builder = grpcio::ServerBuilder::new(env).channel_args(args);
    for service in services {
        builder = builder.register_service(service);
    }
    let mut server = builder
        .build()
        .map_err(|e| ServerError::Bind(endpoint.to_string(), e))?;
    // Create the socket without world access from the first instant; the
    // chmod afterwards makes the mode exact whatever umask we inherited.
    let old_mask = crate::host::sys::umask(0o117);
    let bound = server.add_listening_port(endpoint.grpc_address(), grpcio::ServerCredentials::insecure());
    crate::host::sys::umask(old_mask);
    bound.map_err(|e| ServerError::Bind(endpoint.to_string(), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .map_err(|e| ServerError::SetSocketMode(path.to_path_buf(), e))?;
    server.start();
    info!("serving CSI on {endpoint}");
    Ok(Running {
        server,
        dispatcher,
        endpoint: endpoint.clone(),
    })
}

impl Running {
    /// Stops taking calls, lets the running ones finish within `grace`,
    /// cancels what is left, and removes the socket.
    pub fn shutdown(mut self, grace: Duration) {
        let running = self.dispatcher.in_flight();
        info!(
            "shutting down: {running} call(s) in flight, waiting up to {}s",
            grace.as_secs_f64()
        );
        // Stop accepting connections and calls; calls already handed to
        // workers keep their sinks and can still answer.
        let stopped = self.server.shutdown();
        let left = self.dispatcher.drain(grace);
        if left > 0 {
            warn!("grace period over: cancelling {left} call(s) still running or still sending their reply");
            self.server.cancel_all_calls();
        }
        // The shutdown future completes once gRPC has flushed the replies.
        let _ = block_on(stopped, Duration::from_secs(2));
        let path = self.endpoint.path();
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                if let Err(e) = fs::remove_file(path) {
                    warn!("cannot remove socket {}: {e}", path.display());
                }
            }
        }
        info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn endpoint_accepts_unix_forms() {
        let e = Endpoint::parse("unix:///csi/csi.sock").unwrap();
        assert_eq!(e.path(), Path::new("/csi/csi.sock"));
        assert_eq!(e.grpc_address(), "unix:/csi/csi.sock");
        assert_eq!(e.to_string(), "unix:///csi/csi.sock");
        assert_eq!(Endpoint::parse("unix:/a/b").unwrap().path(), Path::new("/a/b"));
    }

    #[test]
    fn endpoint_rejects_other_forms() {
        for bad in [
            "tcp://1.2.3.4:5",
            "/csi/csi.sock",
            "unix://relative.sock",
            "unix://",
            "unix:///",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
        }
        let msg = Endpoint::parse("tcp://x").unwrap_err().to_string();
        assert!(msg.contains("tcp://x") && msg.contains("unix:///"), "{msg}");
    }

    #[test]
    fn oversized_fields_are_found_anywhere_and_named() {
        use crate::csi::proto::csi;
        let mut req = csi::NodePublishVolumeRequest::new();
        req.volume_id = "pvc-1".into();
        req.target_path = "/var/lib/kubelet/x".into();
        assert_eq!(oversized_field(&req, 64), None);
        let mut cap = csi::VolumeCapability::new();
        let mut mount = csi::volume_capability::MountVolume::new();
        mount.mount_flags = vec!["ro".into(), "x".repeat(65)];
        cap.set_mount(mount);
        req.volume_capability = protobuf::MessageField::some(cap);
        assert_eq!(
            oversized_field(&req, 64),
            Some(("volume_capability.mount.mount_flags[1]".to_string(), 65))
        );
        let mut req = csi::NodeStageVolumeRequest::new();
        req.secrets.insert("password".into(), "s".repeat(100));
        let (field, bytes) = oversized_field(&req, 64).unwrap();
        assert_eq!((field.as_str(), bytes), ("secrets[\"password\"]", 100));
        let mut req = csi::CreateVolumeRequest::new();
        req.parameters.insert("k".repeat(70), "v".into());
        assert_eq!(oversized_field(&req, 64).unwrap().0, "a key of parameters");
    }

    #[test]
    fn stale_socket_is_removed_but_other_files_are_not() {
        let dir = std::env::temp_dir().join(format!("rds-csi-sock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("csi.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(listener);
        prepare_socket_path(&sock).unwrap();
        assert!(!sock.exists());
        let file = dir.join("plain");
        fs::write(&file, "keep me").unwrap();
        assert!(matches!(
            prepare_socket_path(&file),
            Err(ServerError::SocketPathOccupied(_))
        ));
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
        // A missing directory is created.
        prepare_socket_path(&dir.join("sub/csi.sock")).unwrap();
        assert!(dir.join("sub").is_dir());
        fs::remove_dir_all(&dir).unwrap();
    }
}
