//! The CSI Identity service: who the driver is, what it offers, and whether
//! it is ready (from `health` checks that run elsewhere, never inside Probe).

use std::sync::Arc;

use grpcio::RpcStatus;
use log::{info, warn};
use protobuf::well_known_types::wrappers::BoolValue;
use protobuf::MessageField;

use super::proto::csi;
use super::proto::grpc::Identity;
use super::server::CallInfo;
use crate::health::{self, Readiness};

pub struct IdentityService {
    driver_name: String,
    controller: bool,
    checks: Vec<Arc<dyn Readiness>>,
    /// The last Probe answer, so a change of readiness is logged once, not
    /// on every liveness probe.
    last_ready: std::sync::Mutex<Option<bool>>,
}

impl IdentityService {
    pub fn new(driver_name: String, controller: bool, checks: Vec<Arc<dyn Readiness>>) -> Self {
        IdentityService {
            driver_name,
            controller,
            checks,
            last_ready: std::sync::Mutex::new(None),
        }
    }
}

impl Identity for IdentityService {
    fn get_plugin_info(
        &self,
        _call: &CallInfo,
        _req: csi::GetPluginInfoRequest,
    ) -> Result<csi::GetPluginInfoResponse, RpcStatus> {
        let mut resp = csi::GetPluginInfoResponse::new();
        resp.name = self.driver_name.clone();
        resp.vendor_version = crate::version();
        Ok(resp)
    }

    fn get_plugin_capabilities(
        &self,
        _call: &CallInfo,
        _req: csi::GetPluginCapabilitiesRequest,
    ) -> Result<csi::GetPluginCapabilitiesResponse, RpcStatus> {
        use csi::plugin_capability::{service, volume_expansion, Service, VolumeExpansion};
        let mut resp = csi::GetPluginCapabilitiesResponse::new();
        if self.controller {
            let mut svc = Service::new();
            svc.type_ = service::Type::CONTROLLER_SERVICE.into();
            let mut cap = csi::PluginCapability::new();
            cap.set_service(svc);
            resp.capabilities.push(cap);
        }
        // NVMe namespaces grow under a mounted filesystem; both ext4 and
        // xfs grow online, so expansion never needs the volume detached.
        let mut exp = VolumeExpansion::new();
        exp.type_ = volume_expansion::Type::ONLINE.into();
        let mut cap = csi::PluginCapability::new();
        cap.set_volume_expansion(exp);
        resp.capabilities.push(cap);
        Ok(resp)
    }

    fn probe(&self, _call: &CallInfo, _req: csi::ProbeRequest) -> Result<csi::ProbeResponse, RpcStatus> {
        let ready = health::check_all(&self.checks);
        let now_ready = ready.is_ok();
        let mut last = self.last_ready.lock().unwrap_or_else(|p| p.into_inner());
        if *last != Some(now_ready) {
            match &ready {
                Ok(()) => info!("ready"),
                Err(why) => warn!("not ready: {why}"),
            }
            *last = Some(now_ready);
        }
        let mut resp = csi::ProbeResponse::new();
        resp.ready = MessageField::some(BoolValue {
            value: now_ready,
            ..Default::default()
        });
        Ok(resp)
    }
}
