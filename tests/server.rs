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
    common::csi::status_of(err).code()
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

// The slow calls below are real ones: CreateVolume against an rds-sim that
// answers every REST request after a delay.

#[test]
fn slow_calls_do_not_delay_a_fast_one() {
    use common::csi::{create_request, ControllerEnv, GIB};
    use std::sync::Arc;
    use std::time::Instant;
    let env = Arc::new(ControllerEnv::start(&[]));
    // Each create makes several REST calls; four go to the RDS at a time.
    env.sim.fault(serde_json::json!({"latency_ms": 300}));
    let slow: Vec<_> = (0..63)
        .map(|i| {
            let env = Arc::clone(&env);
            std::thread::spawn(move || {
                let r = env.create(&create_request(&format!("vol-slow-{i}"), GIB, &[]));
                (r.is_ok(), Instant::now())
            })
        })
        .collect();
    // Wait until the slow calls are in the driver, then make a fast one
    // among them.
    let pid = env.driver.pid();
    let end = Instant::now() + Duration::from_secs(60);
    while call_threads(pid) < 32 {
        assert!(
            Instant::now() < end,
            "only {} call threads after 60 s",
            call_threads(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let info = env
        .driver
        .identity()
        .get_plugin_info(&csi::GetPluginInfoRequest::new(), opt(10))
        .unwrap();
    let fast_done = Instant::now();
    assert_eq!(info.name, "rds.csi.srvlab.io");
    let results: Vec<(bool, Instant)> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    // Some creates may give up waiting for a turn at the RDS (4 requests at
    // a time): slow either way, which is all this test needs.
    assert!(results.iter().any(|(ok, _)| *ok), "no slow create succeeded");
    // The fast call was answered while most slow ones were still running.
    let still_running = results.iter().filter(|(_, done)| *done > fast_done).count();
    assert!(
        still_running > 32,
        "only {still_running} slow calls outlived the fast one"
    );
}

/// Threads of `pid` that run CSI calls (named `csi-...`, whatever the
/// design: one per call, or pooled workers).
fn call_threads(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter(|t| {
                    fs::read_to_string(t.path().join("comm"))
                        .map(|c| c.starts_with("csi-"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn cheap_calls_answer_promptly_with_64_blocking_calls_in_flight() {
    use common::csi::{create_request, ControllerEnv, GIB};
    use std::sync::Arc;
    use std::time::Instant;
    let env = Arc::new(ControllerEnv::start(&[]));
    // Every REST request takes 2 s: each create blocks its worker for
    // seconds (four go to the RDS at a time, the rest wait for a turn).
    env.sim.fault(serde_json::json!({"latency_ms": 2000}));
    let slow: Vec<_> = (0..64)
        .map(|i| {
            let env = Arc::clone(&env);
            std::thread::spawn(move || {
                let _ = env.create(&create_request(&format!("vol-blocked-{i}"), GIB, &[]));
            })
        })
        .collect();
    let pid = env.driver.pid();
    let end = Instant::now() + Duration::from_secs(60);
    while call_threads(pid) < 64 {
        assert!(
            Instant::now() < end,
            "only {} call threads after 60 s",
            call_threads(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // All 64 are in flight, and each will take 2 s or more: the cheap
    // calls must not wait for any of them.
    let id = env.driver.identity();
    for _ in 0..3 {
        let started = Instant::now();
        id.probe(&csi::ProbeRequest::new(), opt(10)).unwrap();
        id.get_plugin_capabilities(&csi::GetPluginCapabilitiesRequest::new(), opt(10))
            .unwrap();
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1000),
            "Probe + GetPluginCapabilities took {took:?} behind 64 blocked calls"
        );
    }
    let finished = slow.iter().filter(|t| t.is_finished()).count();
    assert_eq!(
        finished, 0,
        "a blocking call ended before the cheap ones were timed"
    );
    env.sim.fault(serde_json::json!({"latency_ms": 0}));
    for t in slow {
        t.join().unwrap();
    }
}

#[test]
fn the_in_flight_bound_refuses_at_once() {
    use common::csi::{create_request, status_of, ControllerEnv, GIB};
    use std::sync::Arc;
    use std::time::Instant;
    let env = Arc::new(ControllerEnv::start(&["--max-in-flight", "2"]));
    // Each busy create takes well over a second: four REST requests of
    // 400 ms each (the test client's RDS read timeout is shorter than 2 s).
    env.sim.fault(serde_json::json!({"latency_ms": 400}));
    let busy: Vec<_> = (0..2)
        .map(|i| {
            let env = Arc::clone(&env);
            std::thread::spawn(move || env.create(&create_request(&format!("vol-busy-{i}"), GIB, &[])))
        })
        .collect();
    // Both are in the driver once two call threads run them.
    let pid = env.driver.pid();
    let end = Instant::now() + Duration::from_secs(60);
    while call_threads(pid) < 2 {
        assert!(Instant::now() < end, "the busy calls did not start within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = status_of(env.create(&create_request("vol-third", GIB, &[])).unwrap_err());
    assert_eq!(err.code(), RpcStatusCode::RESOURCE_EXHAUSTED, "{}", err.message());
    assert!(err.message().contains("limit 2"), "{}", err.message());
    // Refused at once: before either busy call (seconds long) has ended.
    assert!(
        busy.iter().all(|t| !t.is_finished()),
        "the refusal waited for a busy call to end"
    );
    // Probe is exempt: a busy driver is not a dead one.
    assert!(env
        .driver
        .identity()
        .probe(&csi::ProbeRequest::new(), opt(5))
        .is_ok());
    env.sim.fault(serde_json::json!({"latency_ms": 0}));
    for t in busy {
        t.join().unwrap().unwrap();
    }
}

#[test]
fn sigterm_lets_a_call_in_flight_finish_then_removes_the_socket() {
    use common::csi::{create_request, ControllerEnv, GIB};
    let mut env = ControllerEnv::start(&[]);
    env.sim.fault(serde_json::json!({"latency_ms": 300}));
    let client = env.controller();
    let call =
        std::thread::spawn(move || client.create_volume(&create_request("vol-drain", GIB, &[]), opt(30)));
    // SIGTERM once the call is in the driver (a call thread runs it).
    let pid = env.driver.pid();
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while call_threads(pid) < 1 {
        assert!(
            std::time::Instant::now() < end,
            "the call did not start within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    env.driver.signal(libc::SIGTERM);
    let resp = call.join().unwrap().expect("the call in flight completes");
    assert_eq!(resp.volume.capacity_bytes, GIB);
    assert_eq!(env.driver.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert!(!env.driver.socket.exists(), "socket left behind");
    assert!(env.disk(&resp.volume.volume_id).is_some());
    let log = env.driver.log_text();
    assert!(
        log.contains("SIGTERM received") && log.contains("1 call(s) in flight"),
        "{log}"
    );
}

#[test]
fn the_grace_period_bounds_the_wait() {
    use common::csi::{create_request, ControllerEnv, GIB};
    use std::time::Instant;
    let mut env = ControllerEnv::start(&["--shutdown-grace", "1"]);
    env.sim.fault(serde_json::json!({"latency_ms": 3000}));
    let client = env.controller();
    let call =
        std::thread::spawn(move || client.create_volume(&create_request("vol-slow-stop", GIB, &[]), opt(30)));
    // SIGTERM once the call is in the driver (a call thread runs it).
    let pid = env.driver.pid();
    let end = Instant::now() + Duration::from_secs(60);
    while call_threads(pid) < 1 {
        assert!(Instant::now() < end, "the call did not start within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    env.driver.signal(libc::SIGTERM);
    assert_eq!(env.driver.wait_exit(Duration::from_secs(20)).code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(
        call.join().unwrap().is_err(),
        "the abandoned call cannot have succeeded"
    );
    assert!(
        env.driver.log_text().contains("grace period over"),
        "{}",
        env.driver.log_text()
    );
}

#[test]
fn clients_within_the_in_flight_bound_are_never_refused() {
    use std::sync::Arc;
    // As many clients as the bound, each calling again as soon as it has
    // its answer: a call counts until it is answered, not until gRPC has
    // confirmed the reply, so no call is ever refused. (Counted until the
    // confirmation, a client's next call often met its last one still
    // counted, and a steady load of half the bound was refused.)
    let d = Arc::new(Driver::start(&[
        "--node",
        "--node-id",
        "n1",
        "--max-in-flight",
        "4",
    ]));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let d = Arc::clone(&d);
            std::thread::spawn(move || {
                let node = d.node();
                let mut refused = 0;
                for _ in 0..150 {
                    // Answered on a worker: the path is not there.
                    let mut r = csi::NodeGetVolumeStatsRequest::new();
                    r.volume_id = format!("pvc-{i}");
                    r.volume_path = "/nonexistent/rds-csi-test".into();
                    match node.node_get_volume_stats(&r, opt(30)).map_err(status_code) {
                        Err(RpcStatusCode::RESOURCE_EXHAUSTED) => refused += 1,
                        Err(_) => {}
                        Ok(_) => panic!("stats of a path that is not there"),
                    }
                }
                refused
            })
        })
        .collect();
    let refused: usize = clients.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        refused, 0,
        "{refused} of 600 calls refused with 4 clients and --max-in-flight 4"
    );
}
