//! CSI request builders (the one capability builder among them), the one
//! helper that reads a failed call's status, and a controller test
//! environment: a real `rds-sim` plus the real driver serving `--controller`
//! against it.

#![allow(dead_code)]

use std::collections::HashMap;

use grpcio::{RpcStatus, RpcStatusCode};
use protobuf::MessageField;
use rds_csi::proto::csi;
use rds_csi::proto::csi::volume_capability::access_mode::Mode;
use serde_json::Value;

use super::driver::{opt, Driver, DriverOpts};
use super::{Sim, SimOptions};

pub const GIB: i64 = 1 << 30;

/// What a capability asks for: a filesystem mount (`fs` may be empty: the
/// driver's default; `flags` are mount flags) or a raw block device.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    Mount { fs: &'a str, flags: &'a [&'a str] },
    Block,
}

/// The one capability builder every test uses: `access` with access `mode`.
pub fn capability_of(access: Access, mode: Mode) -> csi::VolumeCapability {
    let mut cap = csi::VolumeCapability::new();
    match access {
        Access::Mount { fs, flags } => {
            let mut mount = csi::volume_capability::MountVolume::new();
            mount.fs_type = fs.to_string();
            mount.mount_flags = flags.iter().map(|f| f.to_string()).collect();
            cap.set_mount(mount);
        }
        Access::Block => cap.set_block(csi::volume_capability::BlockVolume::new()),
    }
    let mut am = csi::volume_capability::AccessMode::new();
    am.mode = mode.into();
    cap.access_mode = Some(am).into();
    cap
}

/// A mount capability (`fs` may be empty) with the given access mode.
pub fn mount_cap(fs: &str, mode: Mode) -> csi::VolumeCapability {
    capability_of(Access::Mount { fs, flags: &[] }, mode)
}

pub fn block_cap(mode: Mode) -> csi::VolumeCapability {
    capability_of(Access::Block, mode)
}

pub fn rwo() -> csi::VolumeCapability {
    mount_cap("ext4", Mode::SINGLE_NODE_WRITER)
}

/// A single-node-writer capability as a request field: `block`, or a mount
/// of `fs`.
pub fn capability(block: bool, fs: &str) -> MessageField<csi::VolumeCapability> {
    capability_with_flags(block, fs, &[])
}

/// As `capability`, with mount flags (ignored for block).
pub fn capability_with_flags(block: bool, fs: &str, flags: &[&str]) -> MessageField<csi::VolumeCapability> {
    let access = if block {
        Access::Block
    } else {
        Access::Mount { fs, flags }
    };
    MessageField::some(capability_of(access, Mode::SINGLE_NODE_WRITER))
}

pub fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn create_request(name: &str, bytes: i64, parameters: &[(&str, &str)]) -> csi::CreateVolumeRequest {
    let mut req = csi::CreateVolumeRequest::new();
    req.name = name.to_string();
    let mut range = csi::CapacityRange::new();
    range.required_bytes = bytes;
    req.capacity_range = Some(range).into();
    req.volume_capabilities = vec![rwo()];
    req.parameters = params(parameters);
    req
}

/// The one status helper: the gRPC status of a failed call (any other
/// error fails the test).
pub fn status_of(err: grpcio::Error) -> RpcStatus {
    match err {
        grpcio::Error::RpcFailure(s) => s,
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

/// The code and message of a failed call.
pub fn code(err: grpcio::Error) -> (RpcStatusCode, String) {
    let s = status_of(err);
    (s.code(), s.message().to_string())
}

/// The code of a call that should have failed.
pub fn code_of<T: std::fmt::Debug>(r: grpcio::Result<T>) -> RpcStatusCode {
    status_of(r.expect_err("the call should fail")).code()
}

/// A sim and a controller talking to it over pinned TLS.
pub struct ControllerEnv {
    pub sim: Sim,
    pub driver: Driver,
    pub extra: Vec<String>,
}

impl ControllerEnv {
    pub fn start(extra: &[&str]) -> ControllerEnv {
        ControllerEnv::with_sim(Sim::start(), extra)
    }

    pub fn with_pool(pool_size: u64, extra: &[&str]) -> ControllerEnv {
        ControllerEnv::with_sim(
            Sim::with(SimOptions {
                pool_size,
                ..Default::default()
            }),
            extra,
        )
    }

    pub fn with_sim(sim: Sim, extra: &[&str]) -> ControllerEnv {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let driver = Driver::start_with(DriverOpts {
            args: controller_args(&sim, &extra),
            ..Default::default()
        });
        ControllerEnv { sim, driver, extra }
    }

    /// Kills the driver (SIGKILL: no clean-up) and starts a fresh one.
    pub fn restart_driver(&mut self) {
        let _ = self.driver.child.take().map(|mut c| {
            let _ = c.kill();
            c.wait()
        });
        self.driver = Driver::start_with(DriverOpts {
            args: controller_args(&self.sim, &self.extra),
            ..Default::default()
        });
    }

    pub fn controller(&self) -> rds_csi::proto::grpc::ControllerClient {
        self.driver.controller()
    }

    pub fn create(&self, req: &csi::CreateVolumeRequest) -> grpcio::Result<csi::CreateVolumeResponse> {
        self.controller().create_volume(req, opt(30))
    }

    pub fn delete(&self, id: &str) -> grpcio::Result<csi::DeleteVolumeResponse> {
        let mut req = csi::DeleteVolumeRequest::new();
        req.volume_id = id.to_string();
        self.controller().delete_volume(&req, opt(30))
    }

    pub fn publish(
        &self,
        id: &str,
        node: &str,
        cap: csi::VolumeCapability,
    ) -> grpcio::Result<csi::ControllerPublishVolumeResponse> {
        let mut req = csi::ControllerPublishVolumeRequest::new();
        req.volume_id = id.to_string();
        req.node_id = node.to_string();
        req.volume_capability = Some(cap).into();
        self.controller().controller_publish_volume(&req, opt(30))
    }

    pub fn unpublish(&self, id: &str, node: &str) -> grpcio::Result<csi::ControllerUnpublishVolumeResponse> {
        let mut req = csi::ControllerUnpublishVolumeRequest::new();
        req.volume_id = id.to_string();
        req.node_id = node.to_string();
        self.controller().controller_unpublish_volume(&req, opt(30))
    }

    pub fn expand(
        &self,
        id: &str,
        bytes: i64,
        block: bool,
    ) -> grpcio::Result<csi::ControllerExpandVolumeResponse> {
        let mut req = csi::ControllerExpandVolumeRequest::new();
        req.volume_id = id.to_string();
        let mut range = csi::CapacityRange::new();
        range.required_bytes = bytes;
        req.capacity_range = Some(range).into();
        req.volume_capability = Some(if block {
            block_cap(Mode::SINGLE_NODE_WRITER)
        } else {
            rwo()
        })
        .into();
        self.controller().controller_expand_volume(&req, opt(30))
    }

    /// The sim's `/disk` record of `slot`, as RouterOS prints it.
    pub fn disk(&self, slot: &str) -> Option<Value> {
        let (status, v) = self.sim.request("GET", &format!("/rest/disk?slot={slot}"), None);
        assert_eq!(status, 200, "{v}");
        v.as_array().and_then(|a| a.first().cloned())
    }

    /// Every `/file` name on the sim.
    pub fn files(&self) -> Vec<String> {
        let (status, v) = self.sim.request("GET", "/rest/file", None);
        assert_eq!(status, 200, "{v}");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every disk slot on the sim except the pool's.
    pub fn volume_slots(&self) -> Vec<String> {
        let (_, v) = self.sim.request("GET", "/rest/disk", None);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|d| d["type"] == "file")
                    .filter_map(|d| d["slot"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The driver's controller flags for `sim`: pinned fingerprint, short
/// timeouts and retries so failure tests finish quickly.
pub fn controller_args(sim: &Sim, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--controller".into(),
        "--rds-address".into(),
        sim.url.clone(),
        "--rds-username-file".into(),
        sim.username_file.display().to_string(),
        "--rds-password-file".into(),
        sim.password_file.display().to_string(),
        "--rds-timeout".into(),
        "5".into(),
        "--rds-retry-for".into(),
        "2".into(),
        "--rds-check-interval".into(),
        "1".into(),
        "--nvme-address".into(),
        "127.0.0.1".into(),
    ];
    if let Some(fp) = &sim.fingerprint {
        args.push("--rds-tls-fingerprint".into());
        args.push(fp.clone());
    }
    args.extend(extra.iter().cloned());
    args
}
