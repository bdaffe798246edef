//! Generates the gRPC clients and servers from a Rust description (tonic-build's
//! manual builder): the messages are hand-written prost structs in src/, so no protoc
//! is needed.

use tonic_build::manual::{Builder, Method, Service};

fn unary(name: &str, route: &str, input: &str, output: &str) -> Method {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(input)
        .output_type(output)
        .codec_path("tonic::codec::ProstCodec")
        .build()
}

fn main() {
    let agent_data = Service::builder()
        .name("AgentData")
        .package("fathom.agent.v1")
        .comment(
            "Agent -> server data: one unary Push per batch, answered once the batch is durable.",
        )
        // FathomCodec answers an undecodable batch with INVALID_ARGUMENT (not retryable).
        .method(
            Method::builder()
                .name("push")
                .route_name("Push")
                .input_type("crate::agent::RecordBatch")
                .output_type("crate::agent::Ack")
                .codec_path("crate::codec::FathomCodec")
                .build(),
        )
        .build();

    // name, route, input, output (all in crate::admin).
    let admin_methods = [
        ("cluster_status", "ClusterStatus", "Empty", "ClusterStatusReply"),
        ("list_nodes", "ListNodes", "Empty", "NodeList"),
        ("add_node", "AddNode", "AddNodeRequest", "Empty"),
        ("remove_node", "RemoveNode", "NodeId", "Empty"),
        ("drain_node", "DrainNode", "DrainRequest", "Empty"),
        ("list_regions", "ListRegions", "Empty", "RegionList"),
        ("create_region", "CreateRegion", "CreateRegionRequest", "Empty"),
        ("list_azs", "ListAzs", "Filter", "AzList"),
        ("create_az", "CreateAz", "CreateAzRequest", "Empty"),
        ("list_pools", "ListPools", "Filter", "PoolList"),
        ("create_pool", "CreatePool", "CreatePoolRequest", "Empty"),
        ("set_pool_config", "SetPoolConfig", "SetPoolConfigRequest", "PoolConfigReply"),
        ("list_agents", "ListAgents", "Filter", "AgentList"),
        ("get_agent", "GetAgent", "AgentId", "AgentView"),
        ("revoke_agent", "RevokeAgent", "AgentId", "Empty"),
        ("create_token", "CreateToken", "CreateTokenRequest", "CreateTokenReply"),
        ("list_tokens", "ListTokens", "Filter", "TokenList"),
        ("revoke_token", "RevokeToken", "TokenId", "Empty"),
        ("get_config", "GetConfig", "ConfigKey", "ConfigList"),
        ("set_config", "SetConfig", "ConfigEntry", "Empty"),
    ];
    let mut admin = Service::builder()
        .name("Admin")
        .package("fathom.admin.v1")
        .comment("Fleet administration: cluster, nodes, topology, agents, tokens, settings.");
    for (name, route, input, output) in admin_methods {
        admin = admin.method(unary(
            name,
            route,
            &format!("crate::admin::{input}"),
            &format!("crate::admin::{output}"),
        ));
    }


    let control = Service::builder()
        .name("AgentControl")
        .package("fathom.control.v1")
        .comment(
            "Agent <-> server control: enrollment, heartbeats with config push, certificate renewal.",
        )
        .method(unary("enroll", "Enroll", "crate::control::EnrollRequest", "crate::control::EnrollResponse"))
        .method(unary(
            "heartbeat",
            "Heartbeat",
            "crate::control::HeartbeatRequest",
            "crate::control::HeartbeatResponse",
        ))
        .method(unary("renew", "Renew", "crate::control::RenewRequest", "crate::control::RenewResponse"))
        .build();

    Builder::new().compile(&[agent_data, admin.build(), control]);
    println!("cargo:rerun-if-changed=build.rs");
}
