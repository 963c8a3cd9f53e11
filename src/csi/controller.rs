//! The CSI Controller service over gRPC: each call checks the request's
//! required fields, turns the proto message into the controller's domain
//! input, calls the controller, and turns the answer back into proto. The
//! rules themselves live in `controller`; the gRPC codes in `csi::status`.

use std::collections::HashMap;

use grpcio::RpcStatus;

use super::proto::csi;
use super::proto::csi::volume_capability::access_mode::Mode;
use super::proto::grpc;
use super::server::CallInfo;
use super::status;
use crate::controller::{
    AccessMode, AccessType, Capability, CapacityRange, Condition, ContentSource, Controller,
    ControllerSettings, CreateRequest, RdsApi, SnapshotInfo, VolumeInfo,
};
use crate::rds;

use super::status::controller_error;

/// The Controller service: the controller's rules behind the CSI protocol.
pub struct ControllerService<R: RdsApi = rds::Client> {
    core: Controller<R>,
}

impl ControllerService<rds::Client> {
    pub fn new(rds: rds::Client, settings: ControllerSettings) -> Self {
        ControllerService {
            core: Controller::with_client(rds, settings),
        }
    }
}

impl<R: RdsApi> ControllerService<R> {
    /// The service over any RDS stand-in (tests).
    pub fn with_core(core: Controller<R>) -> Self {
        ControllerService { core }
    }

    /// The pool-filesystem cache the background health check keeps fresh.
    pub fn pool_fs_cache(&self) -> crate::controller::PoolFsCache {
        self.core.pool_fs_cache()
    }
}

/// A proto capability as the controller's rules see it.
pub fn capability(cap: &csi::VolumeCapability) -> Capability {
    let access_type = if cap.has_block() {
        Some(AccessType::Block)
    } else if cap.has_mount() {
        Some(AccessType::Mount {
            fs_type: cap.mount().fs_type.clone(),
            mount_flags: cap.mount().mount_flags.clone(),
        })
    } else {
        None
    };
    let mode = match cap.access_mode.mode.enum_value_or_default() {
        Mode::UNKNOWN => None,
        Mode::SINGLE_NODE_WRITER => Some(AccessMode::SingleNodeWriter),
        Mode::SINGLE_NODE_READER_ONLY => Some(AccessMode::SingleNodeReaderOnly),
        Mode::SINGLE_NODE_SINGLE_WRITER => Some(AccessMode::SingleNodeSingleWriter),
        Mode::SINGLE_NODE_MULTI_WRITER => Some(AccessMode::SingleNodeMultiWriter),
        Mode::MULTI_NODE_READER_ONLY => Some(AccessMode::MultiNodeReaderOnly),
        Mode::MULTI_NODE_SINGLE_WRITER => Some(AccessMode::MultiNodeSingleWriter),
        Mode::MULTI_NODE_MULTI_WRITER => Some(AccessMode::MultiNodeMultiWriter),
    };
    Capability { access_type, mode }
}

fn capabilities(caps: &[csi::VolumeCapability]) -> Vec<Capability> {
    caps.iter().map(capability).collect()
}

fn capacity_range(range: Option<&csi::CapacityRange>) -> CapacityRange {
    range.map_or(CapacityRange::default(), |r| CapacityRange {
        required: r.required_bytes,
        limit: r.limit_bytes,
    })
}

fn volume_message(id: &str, capacity: u64, ctx: Option<HashMap<String, String>>) -> csi::Volume {
    let mut v = csi::Volume::new();
    v.volume_id = id.to_string();
    v.capacity_bytes = capacity as i64;
    if let Some(ctx) = ctx {
        v.volume_context = ctx;
    }
    v
}

fn condition_message(c: &Condition) -> csi::VolumeCondition {
    let mut m = csi::VolumeCondition::new();
    m.abnormal = c.abnormal;
    m.message = c.message.clone();
    m
}

fn int64(value: u64) -> protobuf::MessageField<protobuf::well_known_types::wrappers::Int64Value> {
    Some(protobuf::well_known_types::wrappers::Int64Value {
        value: value as i64,
        ..Default::default()
    })
    .into()
}

/// `volume_content_source` as the controller sees it; a set source must
/// name a snapshot or a volume by a non-empty id.
fn content_source(src: Option<&csi::VolumeContentSource>) -> Result<Option<ContentSource<'_>>, RpcStatus> {
    use csi::volume_content_source::Type;
    let Some(src) = src else {
        return Ok(None);
    };
    match &src.type_ {
        Some(Type::Snapshot(s)) => {
            status::require("volume_content_source.snapshot.snapshot_id", &s.snapshot_id)?;
            Ok(Some(ContentSource::Snapshot(&s.snapshot_id)))
        }
        Some(Type::Volume(v)) => {
            status::require("volume_content_source.volume.volume_id", &v.volume_id)?;
            Ok(Some(ContentSource::Volume(&v.volume_id)))
        }
        None => Err(status::invalid_argument(
            "volume_content_source: a snapshot or a volume is required",
        )),
    }
}

fn snapshot_message(info: &SnapshotInfo) -> csi::Snapshot {
    let mut m = csi::Snapshot::new();
    m.snapshot_id = info.id.to_string();
    m.source_volume_id = info.source_volume_id.to_string();
    m.size_bytes = info.size_bytes as i64;
    m.ready_to_use = info.ready_to_use;
    m.creation_time = Some(protobuf::well_known_types::timestamp::Timestamp {
        seconds: info.creation_time as i64,
        ..Default::default()
    })
    .into();
    m
}

fn controller_capability(
    t: csi::controller_service_capability::rpc::Type,
) -> csi::ControllerServiceCapability {
    let mut rpc = csi::controller_service_capability::RPC::new();
    rpc.type_ = t.into();
    let mut cap = csi::ControllerServiceCapability::new();
    cap.set_rpc(rpc);
    cap
}

impl<R: RdsApi + 'static> grpc::Controller for ControllerService<R> {
    fn controller_get_capabilities(
        &self,
        _call: &CallInfo,
        _req: csi::ControllerGetCapabilitiesRequest,
    ) -> Result<csi::ControllerGetCapabilitiesResponse, RpcStatus> {
        use csi::controller_service_capability::rpc::Type;
        let mut resp = csi::ControllerGetCapabilitiesResponse::new();
        for t in [
            Type::CREATE_DELETE_VOLUME,
            Type::PUBLISH_UNPUBLISH_VOLUME,
            Type::EXPAND_VOLUME,
            Type::GET_CAPACITY,
            Type::LIST_VOLUMES,
            Type::LIST_VOLUMES_PUBLISHED_NODES,
            Type::GET_VOLUME,
            Type::VOLUME_CONDITION,
            Type::SINGLE_NODE_MULTI_WRITER,
        ] {
            resp.capabilities.push(controller_capability(t));
        }
        // Snapshots and clones only on a Btrfs pool, as last read.
        if self
            .core
            .snapshots_supported()
            .map_err(|e| controller_error(&e))?
        {
            for t in [
                Type::CREATE_DELETE_SNAPSHOT,
                Type::LIST_SNAPSHOTS,
                Type::CLONE_VOLUME,
                Type::GET_SNAPSHOT,
            ] {
                resp.capabilities.push(controller_capability(t));
            }
        }
        Ok(resp)
    }

    fn create_snapshot(
        &self,
        _call: &CallInfo,
        req: csi::CreateSnapshotRequest,
    ) -> Result<csi::CreateSnapshotResponse, RpcStatus> {
        status::require("name", &req.name)?;
        status::require("source_volume_id", &req.source_volume_id)?;
        let info = self
            .core
            .create_snapshot(&req.name, &req.source_volume_id, &req.parameters)
            .map_err(|e| controller_error(&e))?;
        let mut resp = csi::CreateSnapshotResponse::new();
        resp.snapshot = Some(snapshot_message(&info)).into();
        Ok(resp)
    }

    fn delete_snapshot(
        &self,
        _call: &CallInfo,
        req: csi::DeleteSnapshotRequest,
    ) -> Result<csi::DeleteSnapshotResponse, RpcStatus> {
        status::require("snapshot_id", &req.snapshot_id)?;
        self.core
            .delete_snapshot(&req.snapshot_id)
            .map_err(|e| controller_error(&e))?;
        Ok(csi::DeleteSnapshotResponse::new())
    }

    fn get_snapshot(
        &self,
        _call: &CallInfo,
        req: csi::GetSnapshotRequest,
    ) -> Result<csi::GetSnapshotResponse, RpcStatus> {
        status::require("snapshot_id", &req.snapshot_id)?;
        let page = self
            .core
            .list_snapshots(Some(&req.snapshot_id), None, None, None)
            .map_err(|e| controller_error(&e))?;
        let info = page.entries.first().ok_or_else(|| {
            controller_error(&crate::controller::Error::NoSuchSnapshot {
                op: "GetSnapshot",
                snapshot_id: req.snapshot_id.clone(),
            })
        })?;
        let mut resp = csi::GetSnapshotResponse::new();
        resp.snapshot = Some(snapshot_message(info)).into();
        Ok(resp)
    }

    fn list_snapshots(
        &self,
        _call: &CallInfo,
        req: csi::ListSnapshotsRequest,
    ) -> Result<csi::ListSnapshotsResponse, RpcStatus> {
        if req.max_entries < 0 {
            return Err(status::invalid_argument("max_entries must not be negative"));
        }
        let max = (req.max_entries > 0).then_some(req.max_entries as usize);
        let some = |s: &str| (!s.is_empty()).then_some(s.to_string());
        let (snapshot_id, source, token) = (
            some(&req.snapshot_id),
            some(&req.source_volume_id),
            some(&req.starting_token),
        );
        let page = self
            .core
            .list_snapshots(snapshot_id.as_deref(), source.as_deref(), token.as_deref(), max)
            .map_err(|e| controller_error(&e))?;
        let mut resp = csi::ListSnapshotsResponse::new();
        for info in &page.entries {
            let mut entry = csi::list_snapshots_response::Entry::new();
            entry.snapshot = Some(snapshot_message(info)).into();
            resp.entries.push(entry);
        }
        resp.next_token = page.next_token.unwrap_or_default();
        Ok(resp)
    }

    fn create_volume(
        &self,
        _call: &CallInfo,
        req: csi::CreateVolumeRequest,
    ) -> Result<csi::CreateVolumeResponse, RpcStatus> {
        let caps = capabilities(&req.volume_capabilities);
        let content_source = content_source(req.volume_content_source.as_ref())?;
        let created = self
            .core
            .create(CreateRequest {
                name: &req.name,
                capabilities: &caps,
                parameters: &req.parameters,
                capacity: capacity_range(req.capacity_range.as_ref()),
                content_source,
            })
            .map_err(|e| controller_error(&e))?;
        let mut resp = csi::CreateVolumeResponse::new();
        let mut volume = volume_message(
            created.id.as_str(),
            created.capacity,
            Some(created.context.to_map()),
        );
        // The CSI spec: the source the volume was made from, echoed.
        volume.content_source = req.volume_content_source.clone();
        resp.volume = Some(volume).into();
        Ok(resp)
    }

    fn delete_volume(
        &self,
        _call: &CallInfo,
        req: csi::DeleteVolumeRequest,
    ) -> Result<csi::DeleteVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        self.core
            .delete(&req.volume_id)
            .map_err(|e| controller_error(&e))?;
        Ok(csi::DeleteVolumeResponse::new())
    }

    fn controller_publish_volume(
        &self,
        _call: &CallInfo,
        req: csi::ControllerPublishVolumeRequest,
    ) -> Result<csi::ControllerPublishVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        status::require("node_id", &req.node_id)?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| status::invalid_argument("volume_capability is required"))?;
        let publish_context = self
            .core
            .publish(
                &req.volume_id,
                &req.node_id,
                &capability(cap),
                &req.volume_context,
            )
            .map_err(|e| controller_error(&e))?;
        let mut resp = csi::ControllerPublishVolumeResponse::new();
        resp.publish_context = publish_context;
        Ok(resp)
    }

    fn controller_unpublish_volume(
        &self,
        _call: &CallInfo,
        req: csi::ControllerUnpublishVolumeRequest,
    ) -> Result<csi::ControllerUnpublishVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        // No node id: unpublish from every node (CSI spec).
        let node = (!req.node_id.is_empty()).then_some(req.node_id.as_str());
        self.core
            .unpublish(&req.volume_id, node)
            .map_err(|e| controller_error(&e))?;
        Ok(csi::ControllerUnpublishVolumeResponse::new())
    }

    fn controller_expand_volume(
        &self,
        _call: &CallInfo,
        req: csi::ControllerExpandVolumeRequest,
    ) -> Result<csi::ControllerExpandVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        let range = req
            .capacity_range
            .as_ref()
            .ok_or_else(|| status::invalid_argument("capacity_range is required"))?;
        let block = req.volume_capability.as_ref().is_some_and(|c| c.has_block());
        let expanded = self
            .core
            .expand(&req.volume_id, capacity_range(Some(range)), block)
            .map_err(|e| controller_error(&e))?;
        let mut resp = csi::ControllerExpandVolumeResponse::new();
        resp.capacity_bytes = expanded.capacity as i64;
        resp.node_expansion_required = expanded.node_expansion_required;
        Ok(resp)
    }

    fn validate_volume_capabilities(
        &self,
        _call: &CallInfo,
        req: csi::ValidateVolumeCapabilitiesRequest,
    ) -> Result<csi::ValidateVolumeCapabilitiesResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(status::invalid_argument("volume_capabilities is required"));
        }
        let caps = capabilities(&req.volume_capabilities);
        let refused = self
            .core
            .validate(&req.volume_id, &caps, &req.parameters)
            .map_err(|e| controller_error(&e))?;
        let mut resp = csi::ValidateVolumeCapabilitiesResponse::new();
        match refused {
            None => {
                let mut confirmed = csi::validate_volume_capabilities_response::Confirmed::new();
                confirmed.volume_context = req.volume_context;
                confirmed.volume_capabilities = req.volume_capabilities;
                confirmed.parameters = req.parameters;
                resp.confirmed = Some(confirmed).into();
            }
            Some(why) => resp.message = why.to_string(),
        }
        Ok(resp)
    }

    fn list_volumes(
        &self,
        _call: &CallInfo,
        req: csi::ListVolumesRequest,
    ) -> Result<csi::ListVolumesResponse, RpcStatus> {
        if req.max_entries < 0 {
            return Err(status::invalid_argument("max_entries must not be negative"));
        }
        let max = (req.max_entries > 0).then_some(req.max_entries as usize);
        let token = (!req.starting_token.is_empty()).then_some(req.starting_token.as_str());
        let page = self.core.list(token, max).map_err(|e| controller_error(&e))?;
        let mut resp = csi::ListVolumesResponse::new();
        for info in &page.entries {
            let mut entry = csi::list_volumes_response::Entry::new();
            entry.volume = Some(volume_message(info.id.as_str(), info.capacity, None)).into();
            let mut st = csi::list_volumes_response::VolumeStatus::new();
            st.published_node_ids = info.nodes.clone();
            st.volume_condition = Some(condition_message(&info.condition)).into();
            entry.status = Some(st).into();
            resp.entries.push(entry);
        }
        resp.next_token = page.next_token.unwrap_or_default();
        Ok(resp)
    }

    fn get_capacity(
        &self,
        _call: &CallInfo,
        req: csi::GetCapacityRequest,
    ) -> Result<csi::GetCapacityResponse, RpcStatus> {
        let caps = capabilities(&req.volume_capabilities);
        let info = self
            .core
            .capacity(&req.parameters, &caps)
            .map_err(|e| controller_error(&e))?;
        let mut resp = csi::GetCapacityResponse::new();
        resp.available_capacity = info.available as i64;
        resp.maximum_volume_size = int64(info.maximum_volume_size);
        resp.minimum_volume_size = int64(info.minimum_volume_size);
        Ok(resp)
    }

    fn controller_get_volume(
        &self,
        _call: &CallInfo,
        req: csi::ControllerGetVolumeRequest,
    ) -> Result<csi::ControllerGetVolumeResponse, RpcStatus> {
        status::require("volume_id", &req.volume_id)?;
        let VolumeInfo {
            id,
            capacity,
            nodes,
            condition,
        } = self.core.get(&req.volume_id).map_err(|e| controller_error(&e))?;
        let mut resp = csi::ControllerGetVolumeResponse::new();
        resp.volume = Some(volume_message(id.as_str(), capacity, None)).into();
        let mut st = csi::controller_get_volume_response::VolumeStatus::new();
        st.published_node_ids = nodes;
        st.volume_condition = Some(condition_message(&condition)).into();
        resp.status = Some(st).into();
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_access_mode_keeps_its_csi_name() {
        for mode in [
            Mode::SINGLE_NODE_WRITER,
            Mode::SINGLE_NODE_READER_ONLY,
            Mode::SINGLE_NODE_SINGLE_WRITER,
            Mode::SINGLE_NODE_MULTI_WRITER,
            Mode::MULTI_NODE_READER_ONLY,
            Mode::MULTI_NODE_SINGLE_WRITER,
            Mode::MULTI_NODE_MULTI_WRITER,
        ] {
            let mut cap = csi::VolumeCapability::new();
            cap.set_block(Default::default());
            cap.access_mode.mut_or_insert_default().mode = mode.into();
            let domain = capability(&cap);
            assert_eq!(domain.access_type, Some(AccessType::Block));
            assert_eq!(
                domain.mode.map(AccessMode::as_str),
                Some(format!("{mode:?}").as_str())
            );
        }
        let unset = capability(&csi::VolumeCapability::new());
        assert_eq!((unset.access_type, unset.mode), (None, None));
    }

    #[test]
    fn mount_capabilities_carry_filesystem_and_flags() {
        let mut cap = csi::VolumeCapability::new();
        let mut mount = csi::volume_capability::MountVolume::new();
        mount.fs_type = "xfs".into();
        mount.mount_flags = vec!["noatime".into()];
        cap.set_mount(mount);
        assert_eq!(
            capability(&cap).access_type,
            Some(AccessType::Mount {
                fs_type: "xfs".into(),
                mount_flags: vec!["noatime".into()]
            })
        );
    }
}
