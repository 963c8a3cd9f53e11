//! The CSI edge: the only code that sees grpcio and the generated proto
//! types. `server` owns the socket and runs each call on its own thread; one
//! adapter per service turns requests into the domain modules' inputs, and
//! `status` maps their typed errors to gRPC codes. The node service still
//! lives in `crate::node` until it moves here.

pub mod controller;
pub mod identity;
pub mod proto;
pub mod server;
pub mod status;
