//! The CSI edge: the only code that sees grpcio and the generated proto
//! types. Adapters turn requests into the domain modules' inputs and their
//! typed errors into gRPC statuses (`status`). The identity and node
//! services and the server still live in `crate::{identity, node, server}`
//! until they move here.

pub mod controller;
pub mod status;
