//! rds-csi as a library: the modules the `rds-csi` binary is built from, also used by the integration tests.

pub mod rds;
pub mod retry;
