//! Region / AZ / resource-pool topology and shard placement.
//!
//! - [`topology`]: regions contain AZs; resource pools (a K8s cluster, a VM group, a
//!   bare-metal group; x86_64 or aarch64; a kernel range) live in one AZ and carry their
//!   agents' config. The checks an operator's input goes through before it is written.
//! - [`placement`]: which ingest node each agent sends to. Consistent hashing with
//!   bounded loads inside the agent's AZ, falling back to its region, then to any node;
//!   sticky, so a node loss or join moves only the agents it concerns. A pure function:
//!   the server's leader runs it whenever membership changes and writes only the moves.
//!
//! ## Metadata sharding by region: the choice
//!
//! **Decision: one Raft group per region for the region's own data, plus one small
//! global group.**
//!
//! - The *global group* holds what every region must agree on and what changes rarely:
//!   the region list, AZ -> region and pool -> AZ links, the CA (root certificate, the
//!   admin certificates' serials and revocations), server nodes and cluster settings. Its
//!   voters are spread over regions (at most two per region, at least three regions when
//!   there are three), so losing one region does not lose its quorum.
//! - Each *region group* holds what grows with the fleet and must be written while the
//!   region is cut off: agent records and heartbeats, enrollment tokens and their
//!   consumption, per-pool agent config, ingest assignments and the SmartEncoding tag
//!   dictionaries of tags born in that region. Its voters are that region's controller
//!   nodes only, so a region cut off from the others still has its quorum and keeps
//!   enrolling agents (tokens are created in and consumed from the region's own group),
//!   placing them on its own ingest nodes and allocating tag ids.
//! - Tag ids stay globally unique without cross-region coordination: the global group
//!   hands each region a disjoint id range (high bits = region number) once, when the
//!   region is created; a region group allocates only inside its range. Names are joined
//!   back at query time per (region, id), so the same name born in two regions under two
//!   ids is harmless.
//! - Placement already respects this: an agent is placed in its AZ, then its region,
//!   and only when its region has no accepting ingest node at all, anywhere. Cross-region
//!   fallback is the one decision that needs the global view; it is made by the global
//!   leader and written to the agent's region group.
//!
//! Why not one global group (simplest) or one group per AZ: a single group stops every
//! region's writes when a partition leaves the region without a majority, which breaks
//! "a cut-off region keeps enrolling agents"; a group per AZ needs three AZ-local
//! controllers per AZ and turns every region-wide write (a pool's config, a tag of a
//! region-wide service) into cross-group transactions. Regions are the unit operators
//! already isolate failures by, and region-local writes need one group each.
//!
//! Why not a leaderless design (CRDT agent records, tag ids from hashing): enrollment
//! tokens are single-use and tag ids must never be bound twice; both need a
//! linearizable decision somewhere, and a region-local Raft group gives exactly that.
//!
//! **Status**: `fathom_cluster::MetaNode` is one Raft group with its own data directory
//! and port, and `fathom-server` runs one group today (the global one, holding
//! everything), so a region cut off from the majority of controllers can read its
//! replica but cannot enroll agents or allocate new tag ids. What remains, in order:
//!
//! 1. a second `MetaNode` per server for its region's group (own port, e.g.
//!    `cluster.region_raft_listen`, and data directory `<cluster data>/region-<name>`),
//!    bootstrapped like the global group but counting only gossip members of the same
//!    region (`Cluster`'s bootstrap filtered by `NodeInfo::region`);
//! 2. a router that sends the region-scoped commands above (`UpsertAgent`,
//!    `AgentHeartbeats`, `CreateToken`/`ConsumeToken`/`RevokeToken`, `SetAgentConfig`,
//!    `AssignIngest*`, `ReserveTagIds`/`BindTags`) to the region group of the agent's
//!    or pool's region, and the rest to the global group; admin reads merge both;
//! 3. a `RegionIdRange` command in the global group and a range check in the region
//!    group's `ReserveTagIds`;
//! 4. a chaos test: three regions in network namespaces, one cut off by dropping its
//!    links, enrolling an agent and allocating tag ids there while the others carry on.

pub mod placement;
pub mod topology;

pub use placement::{place, stable_hash, AgentSlot, NodeSlot, Placement, PlacementParams};
pub use topology::{
    check_name, Arch, KernelRange, KernelVersion, PoolKind, PoolSpec, Topology, TopologyError,
};
