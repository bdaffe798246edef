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
        .codec_path("tonic::codec::ProstCodec")
        .build();
    let svc = Service::builder()
        .name("AgentData")
        .package("fathom.agent.v1")
        .comment(
            "Agent -> server data: one unary Push per batch, answered once the batch is durable.",
        )
        .method(push)
        .build();
    let unary = |name: &str, input: &str, output: &str| {
        Method::builder()
            .name(name)
            .route_name(name.split('_').map(capitalize).collect::<String>())
            .input_type(format!("crate::control::{input}"))
            .output_type(format!("crate::control::{output}"))
            .codec_path("tonic::codec::ProstCodec")
            .build()
    };
    let control = Service::builder()
        .name("AgentControl")
        .package("fathom.control.v1")
        .comment("Agent <-> server control: enrollment, heartbeats with config push, certificate renewal.")
        .method(unary("enroll", "EnrollRequest", "EnrollResponse"))
        .method(unary("heartbeat", "HeartbeatRequest", "HeartbeatResponse"))
        .method(unary("renew", "RenewRequest", "RenewResponse"))
        .build();
    Builder::new().compile(&[svc, control]);
    println!("cargo:rerun-if-changed=build.rs");
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}
