//! rds-csi: a Kubernetes CSI driver for the MikroTik RDS over NVMe/TCP, as one
//! small synchronous binary. `main.rs` wires these modules together; see
//! the README's "Layout" section for the flow of data between them.

pub mod cli;
pub mod config;
pub mod controller;
pub mod csi;
pub mod echo;
pub mod fence;
pub mod health;
pub mod host;
pub mod locks;
pub mod metrics;
/// The node plugin's rules (attach over NVMe/TCP, format, mount, publish).
pub mod node;
pub mod ops;
pub mod rds;
pub mod retry;
pub mod volume;

/// The generated CSI messages and gRPC clients, for the binaries and the
/// integration tests (which talk to the driver as kubelet would).
pub use csi::proto;

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
