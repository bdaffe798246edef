//! `fathom.admin.v1`: fleet administration (fathomctl -> any server node).
//!
//! Served on the control port (20035) next to the agent control service, over mTLS with
//! an admin client certificate. Any node answers: reads come from its replica of the
//! metadata (linearizable where the answer must be current), writes are forwarded to
//! the Raft leader. Errors are gRPC statuses with a message meant for the operator:
//!
//! | status | meaning |
//! |---|---|
//! | INVALID_ARGUMENT | bad name, kind, arch, kernel range, config key or value |
//! | NOT_FOUND | no such node, region, AZ, pool, agent or token |
//! | FAILED_PRECONDITION | refused by the metadata rules (e.g. an AZ of another region) |
//! | UNAVAILABLE | no Raft leader reachable in time |
//! | INTERNAL | anything else |
//!
//! Optional numbers use 0 for "none" (node ids and times start at 1).

/// No arguments / no answer.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message, serde::Serialize)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct NodeView {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub region: String,
    #[prost(string, tag = "3")]
    pub az: String,
    /// controller, ingest, query.
    #[prost(string, repeated, tag = "4")]
    pub roles: Vec<String>,
    #[prost(string, tag = "5")]
    pub raft_addr: String,
    /// The node's control (admin) address, from gossip.
    #[prost(string, tag = "6")]
    pub api_addr: String,
    /// Seen alive by this node's failure detector.
    #[prost(bool, tag = "7")]
    pub live: bool,
    #[prost(bool, tag = "8")]
    pub drained: bool,
    /// voter, learner, or empty when not a Raft member.
    #[prost(string, tag = "9")]
    pub raft_member: String,
    /// Agents assigned to it for ingest.
    #[prost(uint64, tag = "10")]
    pub agents: u64,
    #[prost(string, tag = "11")]
    pub version: String,
    /// Recorded in the metadata (not only seen through gossip).
    #[prost(bool, tag = "12")]
    pub registered: bool,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct NodeList {
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<NodeView>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct ClusterStatusReply {
    /// The node that answered.
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
    /// Its Raft state: Leader, Follower, Candidate, Learner.
    #[prost(string, tag = "2")]
    pub state: String,
    #[prost(uint64, tag = "3")]
    pub leader: u64,
    #[prost(uint64, tag = "4")]
    pub term: u64,
    #[prost(uint64, repeated, tag = "5")]
    pub voters: Vec<u64>,
    #[prost(uint64, repeated, tag = "6")]
    pub learners: Vec<u64>,
    #[prost(uint64, tag = "7")]
    pub last_log_index: u64,
    #[prost(uint64, tag = "8")]
    pub last_applied: u64,
    #[prost(message, repeated, tag = "9")]
    pub nodes: Vec<NodeView>,
    #[prost(uint64, tag = "10")]
    pub regions: u64,
    #[prost(uint64, tag = "11")]
    pub azs: u64,
    #[prost(uint64, tag = "12")]
    pub pools: u64,
    #[prost(uint64, tag = "13")]
    pub agents: u64,
    /// Agents with no ingest node (none accepting in reach).
    #[prost(uint64, tag = "14")]
    pub unassigned_agents: u64,
    /// Regions whose agents are not counted: none of their nodes answered.
    #[prost(string, repeated, tag = "15")]
    pub unreachable_regions: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct AddNodeRequest {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// host:port of the node's Raft endpoint.
    #[prost(string, tag = "2")]
    pub raft_addr: String,
    /// Promote to voter once it has caught up (otherwise it stays a learner).
    #[prost(bool, tag = "3")]
    pub voter: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message, serde::Serialize)]
pub struct NodeId {
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message, serde::Serialize)]
pub struct DrainRequest {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// false undoes a drain.
    #[prost(bool, tag = "2")]
    pub drained: bool,
}

/// Narrows a list; empty fields match everything.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Filter {
    #[prost(string, tag = "1")]
    pub region: String,
    #[prost(string, tag = "2")]
    pub az: String,
    #[prost(string, tag = "3")]
    pub pool: String,
    /// Agents: enrolled, active, lost, revoked.
    #[prost(string, tag = "4")]
    pub status: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RegionView {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(uint64, tag = "3")]
    pub azs: u64,
    #[prost(uint64, tag = "4")]
    pub nodes: u64,
    #[prost(uint64, tag = "5")]
    pub agents: u64,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RegionList {
    #[prost(message, repeated, tag = "1")]
    pub regions: Vec<RegionView>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct CreateRegionRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct AzView {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub region: String,
    #[prost(uint64, tag = "3")]
    pub nodes: u64,
    #[prost(uint64, tag = "4")]
    pub pools: u64,
    #[prost(uint64, tag = "5")]
    pub agents: u64,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct AzList {
    #[prost(message, repeated, tag = "1")]
    pub azs: Vec<AzView>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct CreateAzRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub region: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct PoolView {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub region: String,
    #[prost(string, tag = "3")]
    pub az: String,
    /// k8s, vm, bare-metal.
    #[prost(string, tag = "4")]
    pub kind: String,
    /// x86_64, aarch64.
    #[prost(string, tag = "5")]
    pub arch: String,
    #[prost(string, tag = "6")]
    pub kernel_range: String,
    /// 0 = no agent config set for the pool.
    #[prost(uint64, tag = "7")]
    pub config_version: u64,
    #[prost(uint64, tag = "8")]
    pub agents: u64,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct PoolList {
    #[prost(message, repeated, tag = "1")]
    pub pools: Vec<PoolView>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct CreatePoolRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub region: String,
    #[prost(string, tag = "3")]
    pub az: String,
    #[prost(string, tag = "4")]
    pub kind: String,
    #[prost(string, tag = "5")]
    pub arch: String,
    /// `5.4-6.8`, `>=5.4`, `*` ...
    #[prost(string, tag = "6")]
    pub kernel_range: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct SetPoolConfigRequest {
    #[prost(string, tag = "1")]
    pub pool: String,
    /// The agent config (TOML) pushed to the pool's agents.
    #[prost(string, tag = "2")]
    pub body: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct PoolConfigReply {
    #[prost(string, tag = "1")]
    pub pool: String,
    #[prost(uint64, tag = "2")]
    pub version: u64,
    #[prost(string, tag = "3")]
    pub body: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct AgentView {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub host: String,
    #[prost(string, tag = "3")]
    pub pool: String,
    #[prost(string, tag = "4")]
    pub region: String,
    #[prost(string, tag = "5")]
    pub az: String,
    /// enrolled, active, lost, revoked.
    #[prost(string, tag = "6")]
    pub status: String,
    #[prost(uint64, tag = "7")]
    pub ingest_node: u64,
    #[prost(uint64, tag = "8")]
    pub last_heartbeat_ms: u64,
    #[prost(uint64, tag = "9")]
    pub config_version: u64,
    #[prost(string, tag = "10")]
    pub cert_serial: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct AgentList {
    #[prost(message, repeated, tag = "1")]
    pub agents: Vec<AgentView>,
    /// Regions whose agents are missing: none of their nodes answered.
    #[prost(string, repeated, tag = "2")]
    pub unreachable_regions: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct AgentId {
    #[prost(string, tag = "1")]
    pub id: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct CreateTokenRequest {
    #[prost(string, tag = "1")]
    pub region: String,
    #[prost(string, tag = "2")]
    pub az: String,
    #[prost(string, tag = "3")]
    pub pool: String,
    /// 0 = the cluster setting `token.default_ttl_seconds`.
    #[prost(uint64, tag = "4")]
    pub ttl_seconds: u64,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct TokenView {
    /// SHA-256 of the secret (hex); the secret itself is never stored.
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub region: String,
    #[prost(string, tag = "3")]
    pub az: String,
    #[prost(string, tag = "4")]
    pub pool: String,
    #[prost(uint64, tag = "5")]
    pub expires_at_ms: u64,
    #[prost(string, tag = "6")]
    pub used_by: String,
    #[prost(bool, tag = "7")]
    pub revoked: bool,
    /// valid, used, expired or revoked, as of the answer.
    #[prost(string, tag = "8")]
    pub state: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct CreateTokenReply {
    /// Shown once: give it to the agent (`fathom-agent enroll`).
    #[prost(string, tag = "1")]
    pub secret: String,
    #[prost(message, optional, tag = "2")]
    pub token: Option<TokenView>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct TokenList {
    #[prost(message, repeated, tag = "1")]
    pub tokens: Vec<TokenView>,
    /// Regions whose tokens are missing: none of their nodes answered.
    #[prost(string, repeated, tag = "2")]
    pub unreachable_regions: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct TokenId {
    /// The id, or a prefix of it that names one token (at least 8 characters).
    #[prost(string, tag = "1")]
    pub id: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct ConfigKey {
    /// Empty = every setting.
    #[prost(string, tag = "1")]
    pub key: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct ConfigEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    /// In answers: what the setting does; ignored in requests.
    #[prost(string, tag = "3")]
    pub description: String,
    /// In answers: the value is the default (never set).
    #[prost(bool, tag = "4")]
    pub default: bool,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct ConfigList {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<ConfigEntry>,
}

/// The generated client (`admin_client::AdminClient`) and server
/// (`admin_server::{Admin, AdminServer}`).
#[allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/fathom.admin.v1.Admin.rs"));
}
pub use generated::{admin_client, admin_server};

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let v = NodeView {
            id: 3,
            region: "eu".into(),
            roles: vec!["ingest".into()],
            live: true,
            ..Default::default()
        };
        let bytes = v.encode_to_vec();
        assert_eq!(NodeView::decode(bytes.as_slice()).unwrap(), v);
        assert!(NodeList::decode(&[0x0a, 0xff, 0xff][..]).is_err());
    }
}
