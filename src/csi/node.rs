//! The CSI Node service adapter: request → validated domain input →
//! [`NodeService`] call → response. The only node code that sees grpcio or
//! proto types; the node rules live in `crate::node`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use grpcio::RpcStatus;
use protobuf::MessageField;

use crate::csi::proto::csi;
use crate::csi::proto::grpc::Node;
use crate::csi::server::CallInfo;
use crate::csi::status;
use crate::echo::echo;
use crate::health::Readiness;
use crate::host::mount::MountOptions;
use crate::host::nvme;
use crate::host::paths;
use crate::locks::VolumeGuard;
use crate::node::{Access, Error, NodeReadiness, NodeService, Unit, VolumeStats};
use crate::volume::{FsType, Nqn, VolumeContext, VolumeId};

fn invalid(message: impl Into<String>) -> RpcStatus {
    status::invalid_argument(message)
}

/// A volume id of ours; empty is INVALID_ARGUMENT, anything we could not
/// have made is NOT_FOUND.
fn volume_id(raw: &str) -> Result<VolumeId, RpcStatus> {
    status::require("volume_id", raw)?;
    VolumeId::parse(raw)
        .ok_or_else(|| status::not_found(format!("volume {} is not a volume of this driver", echo(raw))))
}

/// A required staging or target path, resolved and confined strictly under
/// the kubelet directory; anything else is INVALID_ARGUMENT naming the field.
fn confined(field: &'static str, raw: &str, kubelet_dir: &Path) -> Result<PathBuf, RpcStatus> {
    status::require(field, raw)?;
    paths::confine(field, raw, kubelet_dir).map_err(|e| invalid(e.to_string()))
}

/// The `volume_path` of stats and expand: one that does not exist (a
/// relative one included: it names nothing here) is NOT_FOUND, as the CSI
/// spec says; an existing one must lie under the kubelet directory.
fn volume_path(raw: &str, kubelet_dir: &Path) -> Result<PathBuf, RpcStatus> {
    status::require("volume_path", raw)?;
    let gone = || status::not_found(format!("volume_path {} does not exist", echo(raw)));
    if !Path::new(raw).is_absolute() {
        return Err(gone());
    }
    let clean = paths::clean_absolute("volume_path", raw).map_err(|e| invalid(e.to_string()))?;
    if !clean.exists() {
        return Err(gone());
    }
    paths::confine("volume_path", raw, kubelet_dir).map_err(|e| invalid(e.to_string()))
}

/// True for SINGLE_NODE_SINGLE_WRITER: one read-write publish at a time.
fn single_writer(cap: &MessageField<csi::VolumeCapability>) -> bool {
    use csi::volume_capability::access_mode::Mode;
    cap.as_ref()
        .is_some_and(|c| c.access_mode.mode.enum_value_or_default() == Mode::SINGLE_NODE_SINGLE_WRITER)
}

/// The access type and whether the access mode is read-only.
fn access(cap: &MessageField<csi::VolumeCapability>) -> Result<(Access, bool), RpcStatus> {
    use csi::volume_capability::access_mode::Mode;
    let Some(cap) = cap.as_ref() else {
        return Err(invalid("volume_capability is required"));
    };
    let mode = cap.access_mode.mode.enum_value_or_default();
    // SINGLE_NODE_SINGLE_WRITER and SINGLE_NODE_MULTI_WRITER are single-node
    // writers like SINGLE_NODE_WRITER: the node stages and publishes them
    // the same way (the CO keeps a single-writer volume to one pod).
    let read_only = match mode {
        Mode::SINGLE_NODE_READER_ONLY | Mode::MULTI_NODE_READER_ONLY => true,
        Mode::SINGLE_NODE_WRITER
        | Mode::SINGLE_NODE_SINGLE_WRITER
        | Mode::SINGLE_NODE_MULTI_WRITER
        | Mode::MULTI_NODE_SINGLE_WRITER
        | Mode::MULTI_NODE_MULTI_WRITER => false,
        // Not set: a writer, as it always was here.
        Mode::UNKNOWN => false,
    };
    let access = if cap.has_block() {
        Access::Block
    } else if cap.has_mount() {
        if matches!(
            mode,
            Mode::MULTI_NODE_MULTI_WRITER | Mode::MULTI_NODE_SINGLE_WRITER
        ) {
            return Err(invalid(format!(
                "access mode {mode:?} needs a shared filesystem; ext4 and xfs volumes are single-node \
                 (use a block volume)"
            )));
        }
        let m = cap.mount();
        let fs = if m.fs_type.is_empty() {
            None
        } else {
            Some(
                FsType::parse(&m.fs_type)
                    .map_err(|rule| invalid(format!("volume_capability.mount.fs_type: {rule}")))?,
            )
        };
        crate::volume::check_mount_flags(&m.mount_flags).map_err(|e| invalid(e.to_string()))?;
        let options = MountOptions::parse(&m.mount_flags).map_err(|e| invalid(e.to_string()))?;
        Access::Filesystem { fs, options }
    } else {
        return Err(invalid("volume_capability needs an access type: block or mount"));
    };
    Ok((access, read_only))
}

impl Readiness for NodeReadiness {
    fn check(&self) -> Result<(), String> {
        NodeReadiness::check(self)
    }
}

impl NodeService {
    /// The Probe check for this node.
    pub fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(self.node_readiness())
    }
}

/// The volume's in-flight guard, or ABORTED while another call holds it.
fn lock(node: &NodeService, id: &VolumeId) -> Result<VolumeGuard, RpcStatus> {
    node.lock(id).map_err(|busy| {
        status::aborted(format!(
            "an operation on volume {} is already in progress",
            busy.key
        ))
    })
}

fn condition(problem: Option<String>) -> MessageField<csi::VolumeCondition> {
    let mut c = csi::VolumeCondition::new();
    if let Some(message) = problem {
        c.abnormal = true;
        c.message = message;
    } else {
        c.message = "healthy".into();
    }
    MessageField::some(c)
}

/// The stats response for the domain's [`VolumeStats`].
fn stats_response(stats: VolumeStats) -> csi::NodeGetVolumeStatsResponse {
    use csi::volume_usage::Unit as ProtoUnit;
    let mut resp = csi::NodeGetVolumeStatsResponse::new();
    for u in stats.usage {
        let mut usage = csi::VolumeUsage::new();
        usage.total = u.total as i64;
        usage.available = u.available as i64;
        usage.used = u.used as i64;
        usage.unit = match u.unit {
            Unit::Bytes => ProtoUnit::BYTES,
            Unit::Inodes => ProtoUnit::INODES,
        }
        .into();
        resp.usage.push(usage);
    }
    resp.volume_condition = condition(stats.problem);
    resp
}

fn node_status(e: Error) -> RpcStatus {
    status::node_error(&e)
}

impl Node for NodeService {
    fn node_stage_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeStageVolumeRequest,
    ) -> Result<csi::NodeStageVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let kubelet = &self.settings().kubelet_dir;
        let staging = confined("staging_target_path", &req.staging_target_path, kubelet)?;
        let (access, read_only) = access(&req.volume_capability)?;
        let mut ctx = VolumeContext::from_map(&req.volume_context).map_err(|e| invalid(e.to_string()))?;
        // With --nvme-host-acl the controller names the host identity to
        // connect with in the publish context.
        ctx.host = crate::fence::from_publish_context(&req.publish_context).map_err(invalid)?;
        if !self.prefix().manages(ctx.nqn.as_str()) {
            return Err(node_status(Error::Nvme(nvme::Error::NotManaged {
                nqn: ctx.nqn.to_string(),
                prefix: self.prefix().as_str().to_string(),
            })));
        }
        // The context must be this volume's: another volume's context under
        // this id would attach and mount that volume under this id's lock.
        let own = Nqn::for_volume(self.prefix(), &id);
        if ctx.nqn != own {
            return Err(invalid(format!(
                "volume_context.nqn {} is not the NQN of volume {} (expected {})",
                echo(ctx.nqn.as_str()),
                id,
                own
            )));
        }
        let _guard = lock(self, &id)?;
        self.stage(&id, &staging, &access, read_only, &ctx)
            .map_err(node_status)?;
        Ok(csi::NodeStageVolumeResponse::new())
    }

    fn node_unstage_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeUnstageVolumeRequest,
    ) -> Result<csi::NodeUnstageVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let staging = confined(
            "staging_target_path",
            &req.staging_target_path,
            &self.settings().kubelet_dir,
        )?;
        let _guard = lock(self, &id)?;
        self.unstage(&id, &staging).map_err(node_status)?;
        Ok(csi::NodeUnstageVolumeResponse::new())
    }

    fn node_publish_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodePublishVolumeRequest,
    ) -> Result<csi::NodePublishVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let kubelet = &self.settings().kubelet_dir;
        let staging = confined("staging_target_path", &req.staging_target_path, kubelet)?;
        let target = confined("target_path", &req.target_path, kubelet)?;
        if target == staging || target.starts_with(&staging) || staging.starts_with(&target) {
            return Err(invalid(format!(
                "target_path {} and staging_target_path {} must not contain each other",
                echo(&req.target_path),
                echo(&req.staging_target_path)
            )));
        }
        let (access, read_only_mode) = access(&req.volume_capability)?;
        let _guard = lock(self, &id)?;
        let single = single_writer(&req.volume_capability);
        self.publish(
            &id,
            &staging,
            &target,
            &access,
            req.readonly || read_only_mode,
            single,
        )
        .map_err(node_status)?;
        Ok(csi::NodePublishVolumeResponse::new())
    }

    fn node_unpublish_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeUnpublishVolumeRequest,
    ) -> Result<csi::NodeUnpublishVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let target = confined("target_path", &req.target_path, &self.settings().kubelet_dir)?;
        let _guard = lock(self, &id)?;
        self.unpublish(&id, &target).map_err(node_status)?;
        Ok(csi::NodeUnpublishVolumeResponse::new())
    }

    fn node_get_volume_stats(
        &self,
        _call: &CallInfo,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse, RpcStatus> {
        // Read-only: no volume guard, so stats never wait for or abort a stage.
        let id = volume_id(&req.volume_id)?;
        let path = volume_path(&req.volume_path, &self.settings().kubelet_dir)?;
        self.stats(&id, &path).map(stats_response).map_err(node_status)
    }

    fn node_expand_volume(
        &self,
        _call: &CallInfo,
        req: csi::NodeExpandVolumeRequest,
    ) -> Result<csi::NodeExpandVolumeResponse, RpcStatus> {
        let id = volume_id(&req.volume_id)?;
        let path = volume_path(&req.volume_path, &self.settings().kubelet_dir)?;
        let required = req.capacity_range.required_bytes.max(0) as u64;
        let _guard = lock(self, &id)?;
        let size = self.expand(&id, &path, required).map_err(node_status)?;
        let mut resp = csi::NodeExpandVolumeResponse::new();
        resp.capacity_bytes = size as i64;
        Ok(resp)
    }

    fn node_get_capabilities(
        &self,
        _call: &CallInfo,
        _req: csi::NodeGetCapabilitiesRequest,
    ) -> Result<csi::NodeGetCapabilitiesResponse, RpcStatus> {
        use csi::node_service_capability::{rpc::Type, RPC};
        let mut resp = csi::NodeGetCapabilitiesResponse::new();
        for t in [
            Type::STAGE_UNSTAGE_VOLUME,
            Type::EXPAND_VOLUME,
            Type::GET_VOLUME_STATS,
            Type::VOLUME_CONDITION,
            // Like the controller: SINGLE_NODE_SINGLE_WRITER and
            // SINGLE_NODE_MULTI_WRITER are staged and published here.
            Type::SINGLE_NODE_MULTI_WRITER,
        ] {
            let mut rpc = RPC::new();
            rpc.type_ = t.into();
            let mut cap = csi::NodeServiceCapability::new();
            cap.set_rpc(rpc);
            resp.capabilities.push(cap);
        }
        Ok(resp)
    }

    fn node_get_info(
        &self,
        _call: &CallInfo,
        _req: csi::NodeGetInfoRequest,
    ) -> Result<csi::NodeGetInfoResponse, RpcStatus> {
        let mut resp = csi::NodeGetInfoResponse::new();
        resp.node_id = self.settings().node_id.clone();
        resp.max_volumes_per_node = self.settings().max_volumes_per_node;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi::volume_capability::{access_mode::Mode, AccessMode, BlockVolume, MountVolume};

    fn cap(block: bool, mode: Mode, fs: &str, flags: &[&str]) -> MessageField<csi::VolumeCapability> {
        let mut c = csi::VolumeCapability::new();
        if block {
            c.set_block(BlockVolume::new());
        } else {
            let mut m = MountVolume::new();
            m.fs_type = fs.into();
            m.mount_flags = flags.iter().map(|s| s.to_string()).collect();
            c.set_mount(m);
        }
        let mut am = AccessMode::new();
        am.mode = mode.into();
        c.access_mode = MessageField::some(am);
        MessageField::some(c)
    }

    #[test]
    fn capabilities_become_access() {
        let (a, ro) = access(&cap(true, Mode::MULTI_NODE_MULTI_WRITER, "", &[])).unwrap();
        assert_eq!(a, Access::Block);
        assert!(!ro);
        let (a, ro) = access(&cap(false, Mode::SINGLE_NODE_READER_ONLY, "xfs", &["noatime"])).unwrap();
        assert!(ro);
        match a {
            Access::Filesystem { fs, options } => {
                assert_eq!(fs, Some(FsType::Xfs));
                assert_eq!(options.flags, libc::MS_NOATIME);
            }
            other => panic!("{other:?}"),
        }
        let (a, _) = access(&cap(false, Mode::SINGLE_NODE_WRITER, "", &[])).unwrap();
        assert!(matches!(a, Access::Filesystem { fs: None, .. }));
        for bad in [
            cap(false, Mode::MULTI_NODE_MULTI_WRITER, "ext4", &[]),
            cap(false, Mode::SINGLE_NODE_WRITER, "btrfs", &[]),
            cap(false, Mode::SINGLE_NODE_WRITER, "ext4", &["remount"]),
            MessageField::none(),
        ] {
            let e = access(&bad).unwrap_err();
            assert_eq!(
                e.code(),
                grpcio::RpcStatusCode::INVALID_ARGUMENT,
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn request_fields_are_checked() {
        assert_eq!(
            volume_id("").unwrap_err().code(),
            grpcio::RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(
            volume_id("Bad Id").unwrap_err().code(),
            grpcio::RpcStatusCode::NOT_FOUND
        );
        assert!(volume_id("pvc-1").is_ok());
        let long = "x".repeat(1 << 20);
        let e = volume_id(&long).unwrap_err();
        assert!(e.message().len() < 1024, "{} bytes", e.message().len());
        let kubelet = std::env::temp_dir().join(format!("rds-csi-node-fields-{}", std::process::id()));
        std::fs::create_dir_all(kubelet.join("pods")).unwrap();
        let k = kubelet.display().to_string();
        assert!(confined("target_path", &format!("{k}/pods/a/b"), &kubelet).is_ok());
        for bad in [
            "",
            "relative/x",
            "/a/../b",
            "/tmp/x/precious.txt",
            "/proc/self",
            k.as_str(),
        ] {
            let e = confined("target_path", bad, &kubelet).unwrap_err();
            assert_eq!(e.code(), grpcio::RpcStatusCode::INVALID_ARGUMENT, "{bad}");
            assert!(e.message().contains("target_path"), "{bad}: {}", e.message());
        }
        // Stats and expand: what does not exist is NOT_FOUND, a relative
        // path included; an existing path outside is INVALID_ARGUMENT.
        for gone in ["relative/x", "/no/such/path", &format!("{k}/pods/missing")] {
            let e = volume_path(gone, &kubelet).unwrap_err();
            assert_eq!(e.code(), grpcio::RpcStatusCode::NOT_FOUND, "{gone}");
        }
        assert_eq!(
            volume_path("", &kubelet).unwrap_err().code(),
            grpcio::RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(
            volume_path("/proc/self", &kubelet).unwrap_err().code(),
            grpcio::RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(
            volume_path(&format!("{k}/pods"), &kubelet).unwrap(),
            std::fs::canonicalize(kubelet.join("pods")).unwrap()
        );
        std::fs::remove_dir_all(&kubelet).unwrap();
    }

    #[test]
    fn single_node_writer_modes_are_writers() {
        for mode in [
            Mode::SINGLE_NODE_WRITER,
            Mode::SINGLE_NODE_SINGLE_WRITER,
            Mode::SINGLE_NODE_MULTI_WRITER,
        ] {
            for block in [false, true] {
                let (_, ro) = access(&cap(block, mode, "ext4", &[])).unwrap();
                assert!(!ro, "{mode:?}");
            }
        }
        let (_, ro) = access(&cap(false, Mode::MULTI_NODE_READER_ONLY, "ext4", &[])).unwrap();
        assert!(ro);
    }

    /// Every node rule's error and the code kubelet sees for it: the match
    /// below names each variant, so a new one fails to build until it is
    /// added here (and mapped in `status::node_error`).
    #[test]
    fn every_node_error_maps_to_its_code() {
        use crate::host::mount;
        use crate::host::DevNum;
        use grpcio::RpcStatusCode as C;
        use std::path::PathBuf;
        let p = || PathBuf::from("/var/lib/kubelet/x");
        let dev = DevNum { major: 259, minor: 1 };
        let cases = vec![
            (
                Error::Nvme(nvme::Error::Reconnecting {
                    nqn: "n".into(),
                    states: "nvme1=connecting".into(),
                }),
                C::UNAVAILABLE,
            ),
            (
                Error::Device(crate::host::device::Error::WaitDevice {
                    nqn: "n".into(),
                    waited: std::time::Duration::from_secs(1),
                    last: crate::host::device::Unusable::NotConnected,
                }),
                C::UNAVAILABLE,
            ),
            (
                Error::Mount(mount::Error::Unformatted { device: p() }),
                C::FAILED_PRECONDITION,
            ),
            (
                Error::StagedOtherDevice {
                    path: p(),
                    found: dev,
                    expected: "259:2".into(),
                },
                C::ALREADY_EXISTS,
            ),
            (
                Error::StagedOtherwise {
                    path: p(),
                    found: "x".into(),
                },
                C::ALREADY_EXISTS,
            ),
            (Error::NotStaged { path: p() }, C::FAILED_PRECONDITION),
            (
                Error::PublishedOtherwise {
                    path: p(),
                    found: "x".into(),
                },
                C::ALREADY_EXISTS,
            ),
            (
                Error::InUse {
                    nqn: "n".into(),
                    users: vec!["mounted at /x".into()],
                },
                C::FAILED_PRECONDITION,
            ),
            (Error::NoSuchVolumePath { path: p() }, C::NOT_FOUND),
            (Error::NotMounted { path: p() }, C::NOT_FOUND),
            (Error::NotAttached { path: p(), dev }, C::FAILED_PRECONDITION),
            (
                Error::OtherVolume {
                    path: p(),
                    nqn: "n2".into(),
                },
                C::FAILED_PRECONDITION,
            ),
            (
                Error::SizeNotReached {
                    device: "nvme1n1".into(),
                    size: 1,
                    required: 2,
                },
                C::UNAVAILABLE,
            ),
            (
                Error::NotOurs {
                    path: p(),
                    found: "x".into(),
                },
                C::FAILED_PRECONDITION,
            ),
            (
                Error::NotThisVolume {
                    path: p(),
                    found: "x".into(),
                },
                C::NOT_FOUND,
            ),
            (Error::MountGone { path: p() }, C::FAILED_PRECONDITION),
            (
                Error::SingleWriter {
                    path: p(),
                    other: p(),
                },
                C::FAILED_PRECONDITION,
            ),
            (
                Error::Marker {
                    path: p(),
                    source: std::io::Error::other("x"),
                },
                C::INTERNAL,
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        for (e, code) in &cases {
            let name = match e {
                Error::Nvme(_) => "Nvme",
                Error::Device(_) => "Device",
                Error::Mount(_) => "Mount",
                Error::StagedOtherDevice { .. } => "StagedOtherDevice",
                Error::StagedOtherwise { .. } => "StagedOtherwise",
                Error::NotStaged { .. } => "NotStaged",
                Error::PublishedOtherwise { .. } => "PublishedOtherwise",
                Error::InUse { .. } => "InUse",
                Error::NoSuchVolumePath { .. } => "NoSuchVolumePath",
                Error::NotMounted { .. } => "NotMounted",
                Error::NotAttached { .. } => "NotAttached",
                Error::OtherVolume { .. } => "OtherVolume",
                Error::SizeNotReached { .. } => "SizeNotReached",
                Error::NotOurs { .. } => "NotOurs",
                Error::NotThisVolume { .. } => "NotThisVolume",
                Error::MountGone { .. } => "MountGone",
                Error::SingleWriter { .. } => "SingleWriter",
                Error::Marker { .. } => "Marker",
            };
            seen.insert(name);
            let status = status::node_error(e);
            assert_eq!(status.code(), *code, "{name}: {}", status.message());
            assert!(!status.message().is_empty(), "{name}");
        }
        assert_eq!(seen.len(), 18, "a node error variant has no case here");
    }
}
