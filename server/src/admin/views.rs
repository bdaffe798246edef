//! Metadata records -> admin messages, with filters and counts.

use std::collections::{BTreeMap, HashMap};

use fathom_cluster::state::{AgentRecord, AgentStatus, EnrollmentToken};
use fathom_cluster::{ClusterStatus, MetaState, NodeInfo};
use fathom_proto::admin::{AgentView, AzView, Filter, NodeView, PoolView, RegionView, TokenView};

fn matches(filter: &str, value: &str) -> bool {
    filter.is_empty() || filter == value
}

pub fn parse_status(s: &str) -> Option<AgentStatus> {
    match s.to_ascii_lowercase().as_str() {
        "enrolled" => Some(AgentStatus::Enrolled),
        "active" => Some(AgentStatus::Active),
        "lost" => Some(AgentStatus::Lost),
        "revoked" => Some(AgentStatus::Revoked),
        _ => None,
    }
}

pub fn status_name(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Enrolled => "enrolled",
        AgentStatus::Active => "active",
        AgentStatus::Lost => "lost",
        AgentStatus::Revoked => "revoked",
    }
}

/// Adds the agents of `s` (a region group's state) to their ingest nodes' counts.
pub fn count_assigned(s: &MetaState, per_node: &mut HashMap<u64, u64>) {
    for a in s.agents.values() {
        if let Some(n) = a.ingest_node {
            *per_node.entry(n).or_default() += 1;
        }
    }
}

/// Every node known to the metadata (`s`: the global group) or to gossip, by id;
/// `per_node`: agents assigned to each, counted over the region groups.
pub fn nodes(
    s: &MetaState,
    status: &ClusterStatus,
    live: &[NodeInfo],
    per_node: &HashMap<u64, u64>,
) -> Vec<NodeView> {
    let gossip: HashMap<u64, &NodeInfo> = live.iter().map(|n| (n.id, n)).collect();
    let mut out: BTreeMap<u64, NodeView> = BTreeMap::new();
    for n in s.nodes.values() {
        out.insert(
            n.id,
            NodeView {
                id: n.id,
                region: n.region.clone(),
                az: n.az.clone(),
                roles: n.roles.clone(),
                raft_addr: n.raft_addr.clone(),
                drained: n.drained,
                registered: true,
                ..Default::default()
            },
        );
    }
    for n in live {
        let v = out.entry(n.id).or_insert_with(|| NodeView {
            id: n.id,
            region: n.region.clone(),
            az: n.az.clone(),
            roles: n.roles.iter().map(|r| r.as_str().to_string()).collect(),
            raft_addr: n.raft_addr.clone(),
            ..Default::default()
        });
        v.api_addr = n.api_addr.clone();
        v.version = n.version.clone();
    }
    for id in status.voters.iter().chain(&status.learners) {
        out.entry(*id).or_insert_with(|| NodeView {
            id: *id,
            raft_addr: status.addrs.get(id).cloned().unwrap_or_default(),
            ..Default::default()
        });
    }
    for v in out.values_mut() {
        v.live = gossip.contains_key(&v.id);
        v.agents = per_node.get(&v.id).copied().unwrap_or(0);
        v.raft_member = if status.voters.contains(&v.id) {
            "voter".into()
        } else if status.learners.contains(&v.id) {
            "learner".into()
        } else {
            String::new()
        };
    }
    out.into_values().collect()
}

/// `s`: the global group's state; `r`: this node's region group's (agents, agent
/// config), the same state when there is no region group.
pub fn regions(s: &MetaState, r: &MetaState) -> Vec<RegionView> {
    s.regions
        .values()
        .map(|x| RegionView {
            name: x.name.clone(),
            description: x.description.clone(),
            azs: s.azs.values().filter(|a| a.region == x.name).count() as u64,
            nodes: s.nodes.values().filter(|n| n.region == x.name).count() as u64,
            agents: r.agents.values().filter(|a| a.region == x.name).count() as u64,
        })
        .collect()
}

pub fn azs(s: &MetaState, r: &MetaState, f: &Filter) -> Vec<AzView> {
    s.azs
        .values()
        .filter(|a| matches(&f.region, &a.region))
        .map(|a| AzView {
            name: a.name.clone(),
            region: a.region.clone(),
            nodes: s.nodes.values().filter(|n| n.az == a.name).count() as u64,
            pools: s.pools.values().filter(|p| p.az == a.name).count() as u64,
            agents: r.agents.values().filter(|x| x.az == a.name).count() as u64,
        })
        .collect()
}

pub fn pools(s: &MetaState, r: &MetaState, f: &Filter) -> Vec<PoolView> {
    s.pools
        .values()
        .filter(|p| matches(&f.region, &p.region) && matches(&f.az, &p.az))
        .map(|p| PoolView {
            name: p.name.clone(),
            region: p.region.clone(),
            az: p.az.clone(),
            kind: p.kind.clone(),
            arch: p.arch.clone(),
            kernel_range: p.kernel_range.clone(),
            config_version: r.agent_configs.get(&p.name).map(|c| c.version).unwrap_or(0),
            agents: r.agents.values().filter(|a| a.pool == p.name).count() as u64,
        })
        .collect()
}

pub fn agent(a: &AgentRecord) -> AgentView {
    AgentView {
        id: a.id.clone(),
        host: a.host.clone(),
        pool: a.pool.clone(),
        region: a.region.clone(),
        az: a.az.clone(),
        status: status_name(a.status).into(),
        ingest_node: a.ingest_node.unwrap_or(0),
        last_heartbeat_ms: a.last_heartbeat_ms,
        config_version: a.config_version,
        cert_serial: a.cert_serial.clone(),
    }
}

pub fn agents(s: &MetaState, f: &Filter) -> Vec<AgentView> {
    let status = parse_status(&f.status);
    s.agents
        .values()
        .filter(|a| {
            matches(&f.region, &a.region)
                && matches(&f.az, &a.az)
                && matches(&f.pool, &a.pool)
                && status.is_none_or(|st| a.status == st)
        })
        .map(agent)
        .collect()
}

pub fn token(t: &EnrollmentToken, now_ms: u64) -> TokenView {
    let state = if t.revoked {
        "revoked"
    } else if t.used_by.is_some() {
        "used"
    } else if now_ms >= t.expires_at_ms {
        "expired"
    } else {
        "valid"
    };
    TokenView {
        id: t.id.clone(),
        region: t.region.clone(),
        az: t.az.clone(),
        pool: t.pool.clone(),
        expires_at_ms: t.expires_at_ms,
        used_by: t.used_by.clone().unwrap_or_default(),
        revoked: t.revoked,
        state: state.into(),
    }
}

pub fn tokens(s: &MetaState, f: &Filter, now_ms: u64) -> Vec<TokenView> {
    s.tokens
        .values()
        .filter(|t| {
            matches(&f.region, &t.region) && matches(&f.az, &t.az) && matches(&f.pool, &t.pool)
        })
        .map(|t| token(t, now_ms))
        .collect()
}
