//! Gossip membership (chitchat) and Raft-replicated metadata (openraft).

pub mod cluster;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod sm_store;
pub mod state;
pub mod types;

pub use cluster::{Cluster, ClusterConfig, ClusterError};
pub use membership::{Load, Membership, MembershipConfig, NodeInfo, Role};
pub use node::{AdminOp, ClusterStatus, MetaConfig, MetaError, MetaNode};
pub use state::{Command, MetaState, Response};
