//! The CSI edge: the only code that sees grpcio and the generated proto
//! types. `server` owns the socket and runs each call that may block on a
//! pooled worker thread (`pool`); one
//! adapter per service turns requests into the domain modules' inputs, and
//! `status` maps their typed errors to gRPC codes.

pub mod codec;
pub mod controller;
mod dispatch;
pub mod endpoint;
pub mod identity;
pub mod node;
mod pool;
pub mod proto;
mod reply;
pub mod server;
pub mod status;

use std::sync::Arc;

use proto::grpc;
use server::{Dispatcher, Endpoint, Running, ServerError};

/// The services one process serves, each registered on the one dispatcher:
/// `main` says which, and never sees the gRPC types.
pub struct Services {
    dispatcher: Dispatcher,
    list: Vec<grpcio::Service>,
}

impl Services {
    pub fn new(dispatcher: &Dispatcher) -> Self {
        Services {
            dispatcher: dispatcher.clone(),
            list: Vec::new(),
        }
    }

    pub fn add_controller(&mut self, svc: Arc<impl grpc::Controller>) {
        self.list.push(grpc::controller_service(svc, &self.dispatcher));
    }

    pub fn add_node(&mut self, svc: Arc<impl grpc::Node>) {
        self.list.push(grpc::node_service(svc, &self.dispatcher));
    }

    pub fn add_identity(&mut self, svc: Arc<impl grpc::Identity>) {
        self.list.push(grpc::identity_service(svc, &self.dispatcher));
    }

    /// Binds `endpoint` and serves them (see [`server::start`]).
    pub fn start(self, endpoint: &Endpoint) -> Result<Running, ServerError> {
        server::start(endpoint, self.dispatcher, self.list)
    }
}
