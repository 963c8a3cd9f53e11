//! rds-csi: a Kubernetes CSI driver for the MikroTik RDS over NVMe/TCP, as one
//! small synchronous binary. `main.rs` wires these modules together; see
//! the README's "Layout" section for the flow of data between them.

pub mod cli;
pub mod config;
pub mod controller;
pub mod csi;
pub mod ctl;
pub mod echo;
pub mod fence;
pub mod host;
pub mod identity;
pub mod locks;
pub mod metrics;
pub mod proto;
pub mod rds;
pub mod retry;
pub mod server;
pub mod status;
pub mod volume;

// The node plugin (attach over NVMe/TCP, format, mount).
pub mod device;
pub mod doctor;
pub mod exec;
pub mod mount;
pub mod node;
pub mod nvme;
pub mod orphan;
pub mod paths;

/// The CSI driver name unless `--driver-name` says otherwise.
pub const DEFAULT_DRIVER_NAME: &str = "rds.csi.srvlab.io";

/// The crate version, plus the git commit it was built from when known
/// (`0.1.0+1a2b3c4d5e6f`).
pub fn version() -> String {
    let commit = env!("RDS_CSI_GIT_COMMIT");
    if commit.is_empty() {
        env!("CARGO_PKG_VERSION").to_string()
    } else {
        format!("{}+{commit}", env!("CARGO_PKG_VERSION"))
    }
}

/// Renders an error and its chain of causes on one line, the way `main` and
/// `ctl` print them: `cannot listen on unix:///x: permission denied`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
