//! A node test environment beside `csi::ControllerEnv`: a real `rds-sim`,
//! the fake NVMe fabric serving its exports over real loop devices, and the
//! real driver serving `--node` on that fabric; with the node calls the
//! tests make.

#![allow(dead_code)]

use std::path::Path;

use rds_csi::proto::csi;
use rds_csi::proto::grpc::NodeClient;

use super::csi::capability;
use super::driver::{opt, Driver, DriverOpts};
use super::fabric::{self, context, Fabric, Volume};
use super::Sim;

/// Fields drop in order: the driver stops first, then the fabric unmounts
/// and detaches, then the emulator goes.
pub struct NodeEnv {
    pub driver: Driver,
    pub fabric: Fabric,
    pub sim: Sim,
}

impl NodeEnv {
    /// A sim, a fabric (`multipath` chooses its sysfs layout) and a node
    /// plugin with the default flags.
    pub fn start(multipath: bool) -> NodeEnv {
        NodeEnv::with_args(multipath, &[])
    }

    /// As `start`, with `extra` flags for the node plugin.
    pub fn with_args(multipath: bool, extra: &[&str]) -> NodeEnv {
        let sim = Sim::start();
        let fabric = Fabric::new(&sim, multipath);
        let driver = fabric.start_driver(extra);
        NodeEnv { driver, fabric, sim }
    }

    /// Stops the plugin gracefully (it must exit 0) and starts a new one
    /// with the default flags on the same fabric.
    pub fn restart(&mut self) {
        assert_eq!(self.driver.stop().code(), Some(0), "{}", self.driver.log_text());
        self.driver = self.fabric.start_driver(&[]);
    }

    pub fn client(&self) -> NodeClient {
        self.driver.node()
    }

    pub fn stage(
        &self,
        vol: &Volume,
        staging: &Path,
        block: bool,
        fs: &str,
        extra: &[(&str, &str)],
    ) -> Result<(), grpcio::Error> {
        let req = fabric::stage_request(vol, staging, capability(block, fs), context(vol, extra));
        self.client().node_stage_volume(&req, opt(120)).map(|_| ())
    }

    pub fn unstage(&self, vol: &Volume, staging: &Path) -> Result<(), grpcio::Error> {
        self.client()
            .node_unstage_volume(&fabric::unstage_request(vol, staging), opt(60))
            .map(|_| ())
    }

    pub fn publish(
        &self,
        vol: &Volume,
        staging: &Path,
        target: &Path,
        block: bool,
        readonly: bool,
    ) -> Result<(), grpcio::Error> {
        let req = fabric::publish_request(vol, staging, target, capability(block, "ext4"), readonly);
        self.client().node_publish_volume(&req, opt(60)).map(|_| ())
    }

    pub fn unpublish(&self, vol: &Volume, target: &Path) -> Result<(), grpcio::Error> {
        self.client()
            .node_unpublish_volume(&fabric::unpublish_request(vol, target), opt(60))
            .map(|_| ())
    }

    pub fn stats(&self, vol: &Volume, path: &Path) -> Result<csi::NodeGetVolumeStatsResponse, grpcio::Error> {
        self.client()
            .node_get_volume_stats(&fabric::stats_request(vol, path), opt(30))
    }

    pub fn log(&self) -> String {
        self.driver.log_text()
    }
}

impl Fabric {
    /// Starts a node plugin on this fabric, with `extra` flags.
    pub fn start_driver(&self, extra: &[&str]) -> Driver {
        let mut args = self.driver_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        Driver::start_with(DriverOpts {
            args,
            ..Default::default()
        })
    }
}

/// The value of a call that must succeed; else the error and the plugin's log.
pub fn expect_ok<T>(what: &str, env: &NodeEnv, r: Result<T, grpcio::Error>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e:?}\ndriver log:\n{}", env.log()))
}
