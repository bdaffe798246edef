//! Protobuf messages and gRPC services between agents and servers.
//!
//! The messages are hand-written prost structs (field numbers are the wire
//! contract: never renumber or reuse one), so building needs no protoc.

pub mod admin;
pub mod agent;
pub mod codec;
pub mod control;
pub mod tls;
pub mod view;

pub use agent::*;
