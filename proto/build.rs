//! Generates the gRPC client and server of the agent data service from a
//! Rust description (tonic-build's manual builder): the messages are
//! hand-written prost structs in src/, so no protoc is needed.

fn main() {
    use tonic_build::manual::{Builder, Method, Service};
    let push = Method::builder()
        .name("push")
        .route_name("Push")
        .input_type("crate::agent::RecordBatch")
        .output_type("crate::agent::Ack")
        .codec_path("crate::codec::FathomCodec")
        .build();
    let svc = Service::builder()
        .name("AgentData")
        .package("fathom.agent.v1")
        .comment(
            "Agent -> server data: one unary Push per batch, answered once the batch is durable.",
        )
        .method(push)
        .build();
    Builder::new().compile(&[svc]);
    println!("cargo:rerun-if-changed=build.rs");
}
