//! The server and Identity service through the real binary over its unix
//! socket: plugin info, capabilities, Probe, UNIMPLEMENTED for what is not
//! built, socket handling, shutdown.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use common::driver::{opt, Driver, DriverOpts};
use common::TempDir;
use grpcio::RpcStatusCode;
use rds_csi::proto::csi;

fn status_code(err: grpcio::Error) -> RpcStatusCode {
    match err {
        grpcio::Error::RpcFailure(s) => s.code(),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

#[test]
fn plugin_info_reports_name_and_version() {
    let d = Driver::start(&["--node", "--node-id", "n1", "--driver-name", "test.csi.example"]);
    let info = d
        .identity()
        .get_plugin_info(&csi::GetPluginInfoRequest::new(), opt(5))
        .unwrap();
    assert_eq!(info.name, "test.csi.example");
    assert!(
        info.vendor_version.starts_with(env!("CARGO_PKG_VERSION")),
        "version {:?}",
        info.vendor_version
    );
}

fn capability_names(resp: &csi::GetPluginCapabilitiesResponse) -> Vec<String> {
    resp.capabilities
        .iter()
        .map(|c| {
            if c.has_service() {
                format!("service:{:?}", c.service().type_.enum_value_or_default())
            } else {
                format!(
                    "expansion:{:?}",
                    c.volume_expansion().type_.enum_value_or_default()
                )
            }
        })
        .collect()
}

#[test]
fn capabilities_follow_the_enabled_services() {
    let node_only = Driver::start(&["--node", "--node-id", "n1"]);
    let caps = node_only
        .identity()
        .get_plugin_capabilities(&csi::GetPluginCapabilitiesRequest::new(), opt(5))
        .unwrap();
    assert_eq!(capability_names(&caps), vec!["expansion:ONLINE"]);
}

#[test]
fn probe_is_ready_and_logged_at_debug_only() {
    // A node is ready with the nvme_tcp module and an nvme tool; give it both.
    let host = TempDir::new("ready-host");
    fs::create_dir_all(host.join("sys/module/nvme_tcp")).unwrap();
    let mut d = Driver::start_with(DriverOpts {
        args: vec![
            "--node".into(),
            "--node-id".into(),
            "n1".into(),
            "--log-level".into(),
            "info".into(),
            "--sys-root".into(),
            host.join("sys").display().to_string(),
            "--nvme-bin".into(),
            "/bin/true".into(),
        ],
        ..Default::default()
    });
    let resp = d.identity().probe(&csi::ProbeRequest::new(), opt(5)).unwrap();
    assert!(resp.ready.value, "probe not ready");
    d.identity()
        .get_plugin_info(&csi::GetPluginInfoRequest::new(), opt(5))
        .unwrap();
    assert_eq!(d.stop().code(), Some(0));
    let log = d.log_text();
    assert!(!log.contains("rpc Probe"), "Probe logged at info:\n{log}");
}

#[test]
fn every_call_is_logged_with_method_code_and_duration() {
    let mut d = Driver::start(&["--node", "--node-id", "n1"]);
    d.identity()
        .get_plugin_info(&csi::GetPluginInfoRequest::new(), opt(5))
        .unwrap();
    let mut req = csi::NodeUnstageVolumeRequest::new();
    req.volume_id = "pvc-log-me".into();
    let _ = d.node().node_unstage_volume(&req, opt(5));
    d.stop();
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("rpc GetPluginInfo"))
        .unwrap_or_else(|| panic!("no line:\n{log}"));
    assert!(line.contains("code=OK") && line.contains("duration="), "{line}");
    let line = log
        .lines()
        .find(|l| l.contains("rpc NodeUnstageVolume"))
        .unwrap_or_else(|| panic!("no line:\n{log}"));
    assert!(
        line.contains("volume=pvc-log-me") && line.contains("code="),
        "{line}"
    );
}

#[test]
fn unbuilt_services_answer_unimplemented() {
    let d = Driver::start(&["--node", "--node-id", "n1"]);
    // The controller is not enabled in this process: not registered at all.
    let err = d
        .controller()
        .controller_get_capabilities(&csi::ControllerGetCapabilitiesRequest::new(), opt(5))
        .unwrap_err();
    assert_eq!(status_code(err), RpcStatusCode::UNIMPLEMENTED);
    // Group snapshots are not built.
    let err = d
        .group_controller()
        .group_controller_get_capabilities(&csi::GroupControllerGetCapabilitiesRequest::new(), opt(5))
        .unwrap_err();
    assert_eq!(status_code(err), RpcStatusCode::UNIMPLEMENTED);
}

#[test]
fn stale_socket_is_replaced_and_the_socket_is_not_world_writable() {
    let dir = TempDir::new("stale");
    let socket = dir.join("csi.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let d = Driver::start_in(
        dir,
        socket.clone(),
        DriverOpts {
            args: vec!["--node".into(), "--node-id".into(), "n1".into()],
            ..Default::default()
        },
    );
    d.identity().probe(&csi::ProbeRequest::new(), opt(5)).unwrap();
    let meta = fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let dir = TempDir::new("occupied");
    let socket = dir.join("csi.sock");
    fs::write(&socket, "not a socket").unwrap();
    let mut d = Driver::start_in(
        dir,
        socket.clone(),
        DriverOpts {
            args: vec!["--node".into(), "--node-id".into(), "n1".into()],
            wait: false,
            ..Default::default()
        },
    );
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert_eq!(fs::read_to_string(&socket).unwrap(), "not a socket");
    assert!(d.log_text().contains("is not a socket"), "{}", d.log_text());
}

#[test]
fn sigterm_when_idle_exits_zero_and_removes_the_socket() {
    let mut d = Driver::start(&["--node", "--node-id", "n1"]);
    let status = d.stop();
    assert_eq!(status.code(), Some(0));
    assert!(!d.socket.exists(), "socket left behind");
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut d = Driver::start(&["--node", "--node-id", "n1"]);
    d.signal(libc::SIGINT);
    assert_eq!(d.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert!(!d.socket.exists());
}
