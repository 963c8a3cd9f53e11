//! Operator tools: `doctor` (checks the RDS connection and this node's
//! prerequisites) and `ctl` (a CSI client for any socket).

pub mod ctl;
pub mod doctor;
