//! The gRPC edge: the only code that sees grpcio or the generated proto
//! types. One adapter per service turns a request into validated domain
//! input, calls the domain, and turns the result into a response.

pub mod node;
