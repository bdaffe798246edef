//! Gossip membership (chitchat) and Raft-replicated metadata (openraft).
//!
//! Two layers, both running on every server node:
//!
//! - [`Membership`]: who is alive and what it offers. chitchat gossips each node's id,
//!   region, AZ, roles, addresses, version and load over UDP (port 20041) and runs a
//!   phi-accrual failure detector. It is eventually consistent and cheap: placement and
//!   load balancing read it, nothing that must never be lost is kept in it.
//! - [`MetaNode`]: the metadata that must be agreed on (nodes, regions, AZs, pools,
//!   agents, enrollment tokens, SmartEncoding dictionaries, agent config versions) as a
//!   deterministic state machine ([`MetaState`]) replicated by openraft. Writes go to the
//!   leader (followers forward them); reads are local, or linearizable through the
//!   leader's read index.
//!
//! [`Cluster`] composes the two and turns a seed list into a cluster: once
//! `bootstrap_expect` controllers gossip, the lowest id initializes Raft with them.
//!
//! ## Choices
//!
//! - **Log store**: an append-only file of CRC-checked JSON records with fsync per append
//!   batch, plus atomically replaced files for the vote, committed id and purge point
//!   ([`log_store`]); the state machine lives in memory and is snapshotted to one JSON file
//!   ([`sm_store`]). The metadata is small and compacted often, so an embedded database
//!   (sled, redb) would add a dependency without removing any of the work; both stores
//!   pass openraft's storage conformance suite.
//! - **Transport**: JSON over HTTP/1.1 (axum server, reqwest client) on port 20040 for
//!   Raft RPC, write forwarding, read-index and membership changes ([`network`]).
//!   openraft's messages already serialize with serde, so there is no .proto to mirror
//!   them and no protoc in the build. With TLS ([`MetaNode::start_with_tls`],
//!   [`network::Transport::with_tls`]) only nodes holding a certificate of the cluster CA
//!   get in; the controller crate makes the configs.
//! - **Groups**: a `MetaNode` is one Raft group with its own data directory and port.
//!   A server node runs two: the global group's and its region's ([`RegionGroupConfig`],
//!   bootstrapped among the region's live controllers only, address gossiped as
//!   `NodeInfo::region_raft_addr`). [`MetaRouter`] sends region commands (agents,
//!   heartbeats, tokens, agent config, ingest assignments, tag ids) to the region group,
//!   so a region cut off from the others keeps enrolling agents and allocating tag ids,
//!   and the rest (regions, AZs, pools, CA, nodes, settings) to the global group. Reads
//!   of other regions ask a live node there ([`MetaRouter::read_other_regions`]). The
//!   regions crate documents the choice.
//! - **Tag ids**: a node reserves blocks of ids through Raft (`ReserveTagIds`) and binds a
//!   whole batch of new names in one entry (`BindTags`): known names never touch Raft, new
//!   names cost one entry per batch. The first binding of a name wins on every replica; an
//!   id is never bound to two names and never reused. Each region allocates only inside
//!   its own range (`state::region_tag_ids`: the high 8 bits are the region's number,
//!   given once by the global group), so ids are unique across regions with no
//!   coordination between them.
//! - **Determinism**: commands carry their own timestamps; applying them reads no clock
//!   and no randomness, so replicas cannot diverge.

pub mod cluster;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod router;
pub mod sm_store;
pub mod state;
pub mod types;

pub use cluster::{Cluster, ClusterConfig, ClusterError, RegionGroupConfig};
pub use membership::{Load, Membership, MembershipConfig, NodeInfo, Role};
pub use node::{AdminOp, ClusterStatus, MetaConfig, MetaError, MetaNode, WeakMetaNode};
pub use router::{MetaRouter, RegionRead, Scope};
pub use state::{Command, MetaState, Response};
