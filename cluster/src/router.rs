//! [`MetaRouter`]: which Raft group a metadata command goes to.
//!
//! A server node is a member of two groups: the global one (regions, AZs, pools, the
//! CA, admin and node certificates, server nodes, settings) and its own region's group
//! (agents and their heartbeats, enrollment tokens, per-pool agent config, ingest
//! assignments, the SmartEncoding dictionaries of tags born in the region). Region
//! commands go to the region group, so a region cut off from the others keeps writing
//! them; the rest go to the global group. Without a region group (a node built with
//! [`MetaRouter::global_only`]) everything goes to the global group.

use crate::node::{MetaError, MetaNode};
use crate::state::{Command, MetaState, Response};
use crate::types::NodeId;

/// Which group holds what a command writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Region,
}

/// The group a command belongs to. `RevokeCert` and `PruneCerts` touch certificates,
/// which live in both groups (agents' in their region's, the others globally): the
/// router handles them itself.
pub fn scope(cmd: &Command) -> Scope {
    use Command::*;
    match cmd {
        UpsertAgent(_)
        | SetAgentStatus { .. }
        | AssignIngest { .. }
        | AssignIngestMany { .. }
        | AgentHeartbeats { .. }
        | AgentConfigVersions { .. }
        | CreateToken(_)
        | ConsumeToken { .. }
        | RevokeToken { .. }
        | SetAgentConfig { .. }
        | ReserveTagIds { .. }
        | BindTags { .. }
        | RevokeAgent { .. }
        | MarkLost { .. }
        | InitRegionGroup { .. } => Scope::Region,
        RecordCert { cert, .. } if cert.subject.starts_with("agent/") => Scope::Region,
        UpsertNode(_)
        | RemoveNode { .. }
        | UpsertRegion(_)
        | UpsertAz(_)
        | UpsertPool(_)
        | SetCa(_)
        | RecordCert { .. }
        | RevokeCert { .. }
        | PruneCerts { .. }
        | Put { .. }
        | AssignRegionNumber { .. } => Scope::Global,
    }
}

impl From<MetaNode> for MetaRouter {
    fn from(global: MetaNode) -> MetaRouter {
        MetaRouter::global_only(global)
    }
}

#[derive(Clone)]
struct RegionMember {
    name: String,
    meta: MetaNode,
}

/// This node's members of the global group and of its region's group. Cheap to clone.
#[derive(Clone)]
pub struct MetaRouter {
    global: MetaNode,
    region: Option<RegionMember>,
}

impl MetaRouter {
    /// Everything in one group (a node without a region group).
    pub fn global_only(global: MetaNode) -> MetaRouter {
        MetaRouter { global, region: None }
    }

    pub fn with_region(global: MetaNode, region: &str, meta: MetaNode) -> MetaRouter {
        MetaRouter { global, region: Some(RegionMember { name: region.to_string(), meta }) }
    }

    pub fn id(&self) -> NodeId {
        self.global.id()
    }

    pub fn global(&self) -> &MetaNode {
        &self.global
    }

    /// The member of this node's region group, if it runs one.
    pub fn region_group(&self) -> Option<&MetaNode> {
        self.region.as_ref().map(|r| &r.meta)
    }

    /// The region this node's region group serves.
    pub fn region_name(&self) -> Option<&str> {
        self.region.as_ref().map(|r| r.name.as_str())
    }

    /// Where region data lives on this node: the region group, or the global group
    /// when there is none.
    pub fn regional(&self) -> &MetaNode {
        self.region_group().unwrap_or(&self.global)
    }

    /// The group that takes `cmd` here.
    pub fn group_of(&self, cmd: &Command) -> &MetaNode {
        match scope(cmd) {
            Scope::Global => &self.global,
            Scope::Region => self.regional(),
        }
    }

    /// Commit `cmd` in its group. A region command about another region that has a
    /// group of its own (a token or a pool config for it) is refused: that region's own
    /// nodes write it, and they keep doing so while this one cannot reach them.
    pub async fn write(&self, cmd: Command) -> Result<Response, MetaError> {
        match &cmd {
            Command::RevokeCert { serial } => {
                // An agent's certificate is recorded in its region's group.
                let regional = self.regional().read(|s| s.certs.contains_key(serial));
                let meta = if regional { self.regional() } else { &self.global };
                return meta.write(cmd).await;
            }
            Command::PruneCerts { .. } => {
                let r = self.global.write(cmd.clone()).await?;
                return match self.region_group() {
                    Some(m) => m.write(cmd).await,
                    None => Ok(r),
                };
            }
            _ => {}
        }
        if let Some(mine) = self.region_name() {
            let theirs = match &cmd {
                Command::CreateToken(t) => Some(t.region.clone()),
                Command::SetAgentConfig { pool, .. } => {
                    self.global.read(|s| s.pools.get(pool).map(|p| p.region.clone()))
                }
                _ => None,
            };
            // A region with a group of its own (numbered in the global group) is written
            // there; one without (no server node of its own) is served by the group of
            // the node that writes it.
            let own_group = |r: &String| self.global.read(|s| s.region_numbers.contains_key(r));
            if let Some(theirs) = theirs.filter(|r| r != mine && own_group(r)) {
                return Err(MetaError::Rejected(format!(
                    "region {theirs:?} is written by its own nodes; this node serves {mine:?}"
                )));
            }
        }
        self.group_of(&cmd).write(cmd).await
    }

    /// Whether a certificate must be refused: revoked in either group, or issued to a
    /// revoked agent.
    pub fn cert_revoked(&self, serial: &str) -> bool {
        self.global.read(|s| s.cert_revoked(serial))
            || self.region_group().is_some_and(|m| m.read(|s| s.cert_revoked(serial)))
    }

    /// [`MetaNode::allocate_tag_ids`] in the region group, inside the region's id range.
    pub async fn allocate_tag_ids(
        &self,
        tag_type: &str,
        names: &[String],
    ) -> Result<Vec<u32>, MetaError> {
        let Some(region) = self.region_group() else {
            return self.global.allocate_tag_ids(tag_type, names).await;
        };
        if region.read(|s| s.region_group.is_none()) {
            return Err(MetaError::Rejected(
                "the region group has no tag id range yet (it needs the global group once)".into(),
            ));
        }
        region.allocate_tag_ids(tag_type, names).await
    }

    /// Both replicas as they are here: the global one and the region one (the global
    /// one again when there is no region group).
    pub fn read_both<T>(&self, f: impl FnOnce(&MetaState, &MetaState) -> T) -> T {
        match self.region_group() {
            Some(region) => self.global.read(|g| region.read(|r| f(g, r))),
            None => self.global.read(|g| f(g, g)),
        }
    }
}

/// What a read that spans regions got from one other region.
#[derive(Debug, Clone)]
pub struct RegionRead {
    pub region: String,
    /// The region group's state, or why no node of the region answered.
    pub state: Result<MetaState, String>,
}

impl MetaRouter {
    /// The region groups of every other region this node knows of (numbered in the
    /// global group, or gossiped by a live node), or only of region `only` when it is
    /// not empty, each read from a live node of that region (`live`: gossip); a region
    /// none of whose nodes answers within `timeout` comes back as an error, never left
    /// out.
    pub async fn read_other_regions(
        &self,
        live: &[crate::membership::NodeInfo],
        only: &str,
        timeout: std::time::Duration,
    ) -> Vec<RegionRead> {
        let Some(mine) = self.region_name() else { return Vec::new() };
        // Regions with a group: numbered ones, and those of recorded controller nodes
        // (a node cut off before its region got its number still runs the group).
        let mut regions: std::collections::BTreeSet<String> = self.global.read(|s| {
            let controllers =
                s.nodes.values().filter(|n| n.roles.iter().any(|r| r == "controller"));
            s.region_numbers.keys().cloned().chain(controllers.map(|n| n.region.clone())).collect()
        });
        regions.extend(
            live.iter().filter(|n| !n.region_raft_addr.is_empty()).map(|n| n.region.clone()),
        );
        regions.remove(mine);
        if !only.is_empty() {
            regions.retain(|r| r == only);
        }
        let mut out = Vec::with_capacity(regions.len());
        for region in regions {
            let mut state = Err(format!("no live node of region {region:?} is known"));
            for n in live.iter().filter(|n| n.region == region && !n.region_raft_addr.is_empty()) {
                match self.regional().read_remote(&n.region_raft_addr, timeout).await {
                    Ok(s) => {
                        state = Ok(s);
                        break;
                    }
                    Err(e) => state = Err(format!("node {}: {e}", n.id)),
                }
            }
            out.push(RegionRead { region, state });
        }
        out
    }
}

/// What a region group numbered `number` starts from: the first region takes over the
/// region data the global group held before sharding (see `Command::InitRegionGroup`).
pub(crate) fn carried_data(number: u32, global: &MetaState) -> crate::state::RegionData {
    if number == 0 {
        crate::state::RegionData::of(global)
    } else {
        crate::state::RegionData::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::IssuedCert;

    fn cert(subject: &str) -> Command {
        Command::RecordCert {
            serial: "01".into(),
            cert: IssuedCert { subject: subject.into(), expires_at_ms: 1, revoked: false },
        }
    }

    #[test]
    fn region_data_goes_to_the_region_group_and_the_rest_to_the_global_one() {
        let region = [
            Command::AgentHeartbeats { beats: vec![] },
            Command::ConsumeToken { id: "t".into(), agent: "a".into(), now_ms: 0 },
            Command::SetAgentConfig { pool: "p".into(), body: String::new() },
            Command::ReserveTagIds { tag_type: "pod".into(), node: 1, count: 1 },
            Command::BindTags { tag_type: "pod".into(), node: 1, pairs: vec![] },
            Command::AssignIngestMany { assignments: vec![] },
            Command::RevokeAgent { id: "a".into() },
            cert("agent/a"),
        ];
        for c in &region {
            assert_eq!(scope(c), Scope::Region, "{c:?}");
        }
        let global = [
            Command::RemoveNode { id: 1 },
            Command::Put { key: "k".into(), value: "v".into() },
            Command::AssignRegionNumber { region: "r".into() },
            cert("admin/ops"),
            cert("node/2"),
        ];
        for c in &global {
            assert_eq!(scope(c), Scope::Global, "{c:?}");
        }
    }
}
