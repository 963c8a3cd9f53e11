//! The CSI protobuf messages (`csi`) and the gRPC glue (`grpc`: method
//! descriptors, blocking clients, handler traits, registration), generated
//! by build.rs from proto/csi.proto.

include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
