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
//! **Status**: built, with these pieces:
//!
//! - every server node runs two `fathom_cluster::MetaNode`s: the global group's
//!   (`cluster.raft_listen`, 20040) and its region's (`cluster.region_raft_listen`,
//!   20042, data in `<cluster data>/region-<name>`, same mTLS), whose address is gossiped
//!   as `NodeInfo::region_raft_addr`. The region group bootstraps like the global one
//!   but among the live controllers of the same region (`cluster.region_bootstrap_expect`,
//!   default 1); `fathomctl node add` of a node of the same region adds it to both;
//! - `fathom_cluster::MetaRouter` sends the region commands (`UpsertAgent`,
//!   `AgentHeartbeats`, `AgentConfigVersions`, `CreateToken`/`ConsumeToken`/
//!   `RevokeToken`, `SetAgentConfig`, `AssignIngest*`, `RevokeAgent`, `MarkLost`,
//!   `ReserveTagIds`/`BindTags`, agents' `RecordCert`) to the region group and the rest
//!   to the global group; a token or pool config for another region is refused (its own
//!   nodes write it). The controller (enrollment, heartbeats, revocation checks against
//!   both groups), the admin service (tokens, agents) and placement (run by the region
//!   group's leader for the region's agents, nodes read from the global replica) use it;
//! - tag id ranges: the global group numbers each region once (`AssignRegionNumber`,
//!   high 8 bits of the id, see `fathom_cluster::state::region_tag_ids`) and the region
//!   group records it (`InitRegionGroup`); its `ReserveTagIds` allocates only inside the
//!   range. Region 0 starts at id 1 and takes over what the global group held before
//!   sharding (agents, tokens, pool config, agents' certificates, tag dictionaries), so
//!   existing data directories carry on and existing ids keep their names;
//! - tests: state machine tests of the ranges; `cluster/tests/multiprocess.rs` cuts a
//!   region of two nodes off (its bridge's link) and checks tokens, agents and tag ids
//!   commit in it while the others commit global writes; `server/tests/regions.rs` does
//!   the same with `fathom-server` processes and a real `fathom-agent` enrolling in the
//!   cut-off region.
//!
//! - admin reads (`fathomctl agent list`, `agent show`, `token list`, `cluster status`)
//!   merge the regions: this node's region from its replica, each other region read
//!   from a live node of it (`MetaRouter::read_other_regions`); a region none of whose
//!   nodes answers is named in the reply (fathomctl says so on stderr);
//! - a region with no server node of its own (an operator's topology label only) has
//!   no group: its tokens and agents go to the group of the node that writes them.
//!
//! Not built yet: pool lists count agents and config versions of this node's region
//! only; an agent certificate is known only in its region's group, so an agent placed
//! on an ingest node of another region (the cross-region fallback) is refused there;
//! the global group's voters are whichever controllers bootstrapped it (not yet spread
//! "at most two per region" by a rule).

pub mod placement;
pub mod topology;

pub use placement::{place, stable_hash, AgentSlot, NodeSlot, Placement, PlacementParams};
pub use topology::{
    check_name, Arch, KernelRange, KernelVersion, PoolKind, PoolSpec, Topology, TopologyError,
};
