//! The CSI edge: the only code that sees grpcio and the generated proto
//! types. One adapter per service turns a request into validated domain
//! input, calls the domain, and turns the domain's typed errors into gRPC
//! statuses (`status`). The identity service and the server still live in
//! `crate::{identity, server}` until they move here.

pub mod controller;
pub mod node;
pub mod status;
