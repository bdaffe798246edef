//! The replicated metadata: commands, their results and the deterministic state machine
//! that applies them. Everything here is pure (no I/O, no clock), so every replica that
//! applies the same log reaches the same state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Id 0 means "no tag / unknown" in the columnar tables, so dictionaries start at 1.
pub const FIRST_TAG_ID: u32 = 1;

/// Tag ids are split by region: the high bits are the region's number, so region groups
/// allocate without asking each other. 24 low bits give each region 16M ids per tag
/// type; 8 high bits allow 256 regions.
pub const REGION_TAG_BITS: u32 = 24;
pub const MAX_REGIONS: u32 = 1 << (32 - REGION_TAG_BITS);

/// The tag ids region number `number` allocates from. Region 0 starts at
/// [`FIRST_TAG_ID`], where ids allocated before the metadata was sharded live.
pub fn region_tag_ids(number: u32) -> std::ops::Range<u32> {
    let start = (number << REGION_TAG_BITS).max(FIRST_TAG_ID);
    let end = (number as u64 + 1) << REGION_TAG_BITS;
    start..end.min(u32::MAX as u64) as u32
}

/// Region data a region group starts from (see `Command::InitRegionGroup`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionData {
    #[serde(default)]
    pub tags: BTreeMap<String, TagDict>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentRecord>,
    #[serde(default)]
    pub tokens: BTreeMap<String, EnrollmentToken>,
    #[serde(default)]
    pub agent_configs: BTreeMap<String, AgentConfig>,
    /// Agents' certificates (the others stay global).
    #[serde(default)]
    pub certs: BTreeMap<String, IssuedCert>,
}

impl RegionData {
    /// The region data in `s` (a global group's state from before sharding).
    pub fn of(s: &MetaState) -> RegionData {
        RegionData {
            tags: s.tags.clone(),
            agents: s.agents.clone(),
            tokens: s.tokens.clone(),
            agent_configs: s.agent_configs.clone(),
            certs: s
                .certs
                .iter()
                .filter(|(_, c)| c.subject.starts_with("agent/"))
                .map(|(k, c)| (k.clone(), c.clone()))
                .collect(),
        }
    }
}

/// Which region a region group serves and the number that gives its tag id range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionGroup {
    pub region: String,
    pub number: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub region: String,
    pub az: String,
    pub roles: Vec<String>,
    pub raft_addr: String,
    /// A drained node keeps its data but gets no new agents.
    pub drained: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Az {
    pub name: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub region: String,
    pub az: String,
    /// "k8s", "vm" or "bare-metal".
    pub kind: String,
    pub arch: String,
    pub kernel_range: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Enrolled,
    Active,
    Lost,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub host: String,
    pub pool: String,
    pub region: String,
    pub az: String,
    pub cert_serial: String,
    pub status: AgentStatus,
    pub ingest_node: Option<u64>,
    /// Unix milliseconds, as stamped by the proposing node.
    pub last_heartbeat_ms: u64,
    pub config_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// A hash of the secret, never the secret itself.
    pub id: String,
    pub region: String,
    pub az: String,
    pub pool: String,
    pub expires_at_ms: u64,
    pub used_by: Option<String>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub version: u64,
    pub body: String,
}

/// The cluster CA: its certificate and private key (PEM). Replicated so that every
/// controller can sign; see the controller crate for what protects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRecord {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate the CA issued, by serial (hex): whom it names and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// "agent/<id>", "admin/<name>" or "node/<id>".
    pub subject: String,
    pub expires_at_ms: u64,
    pub revoked: bool,
}

/// A range of ids `[start, end)` reserved for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagBlock {
    pub start: u32,
    pub end: u32,
    pub node: u64,
}

/// One SmartEncoding dictionary: a bijection between names and ids that only grows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagDict {
    /// The next id never reserved: ids below it are never handed out again.
    pub next_id: u32,
    pub by_name: BTreeMap<String, u32>,
    pub by_id: BTreeMap<u32, String>,
    /// Every block ever reserved, keyed by start: a binding must come from its node's block.
    pub blocks: BTreeMap<u32, TagBlock>,
}

impl Default for TagDict {
    fn default() -> Self {
        TagDict {
            next_id: FIRST_TAG_ID,
            by_name: BTreeMap::new(),
            by_id: BTreeMap::new(),
            blocks: BTreeMap::new(),
        }
    }
}

impl TagDict {
    fn block_of(&self, id: u32) -> Option<&TagBlock> {
        self.blocks.range(..=id).next_back().map(|(_, b)| b).filter(|b| id < b.end)
    }
}

/// A write to the metadata. Every command is idempotent where a retried forward could
/// apply it twice (upserts, bindings), and carries its own timestamps so that applying it
/// never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    UpsertNode(NodeRecord),
    RemoveNode {
        id: u64,
    },
    UpsertRegion(Region),
    UpsertAz(Az),
    UpsertPool(Pool),
    UpsertAgent(AgentRecord),
    SetAgentStatus {
        id: String,
        status: AgentStatus,
    },
    AssignIngest {
        agent: String,
        node: Option<u64>,
    },
    /// Heartbeats arrive in batches: one entry per flush, not per agent beat.
    AgentHeartbeats {
        beats: Vec<(String, u64)>,
    },
    /// The config versions agents report running (only changes are sent).
    AgentConfigVersions {
        versions: Vec<(String, u64)>,
    },
    CreateToken(EnrollmentToken),
    /// Single use: fails when the token is expired, revoked or already used by another agent.
    ConsumeToken {
        id: String,
        agent: String,
        now_ms: u64,
    },
    RevokeToken {
        id: String,
    },
    SetAgentConfig {
        pool: String,
        body: String,
    },
    /// Reserve `count` fresh ids of `tag_type` for `node`.
    ReserveTagIds {
        tag_type: String,
        node: u64,
        count: u32,
    },
    /// Bind names to ids that `node` took from its reserved blocks. A name already bound
    /// keeps its id (the offered one is retired); the result lists the id each name has.
    BindTags {
        tag_type: String,
        node: u64,
        pairs: Vec<(String, u32)>,
    },
    /// Many `AssignIngest` in one entry (placement moves agents in batches). Pairs
    /// naming an unknown agent or node are skipped: they raced with a removal, and the
    /// next placement round sees the removal.
    AssignIngestMany {
        assignments: Vec<(String, Option<u64>)>,
    },
    /// Install the cluster CA. The first one wins: a second bootstrap racing the first
    /// gets `Rejected` and must use the replicated one.
    SetCa(CaRecord),
    /// Record a certificate the CA signed (an agent's certificate also becomes its
    /// record's `cert_serial`).
    RecordCert {
        serial: String,
        cert: IssuedCert,
    },
    /// Revoke one certificate by serial.
    RevokeCert {
        serial: String,
    },
    /// Revoke an agent: its status becomes `Revoked` and every certificate issued to it
    /// is revoked, so it is refused on every node once this entry is applied there.
    RevokeAgent {
        id: String,
    },
    /// Drop records of certificates expired before `now_ms` (they are refused by the
    /// TLS layer anyway).
    PruneCerts {
        now_ms: u64,
    },
    /// Agents whose last beat is older than `before_ms` become `Lost` (Active/Enrolled
    /// ones only; a revoked agent stays revoked).
    MarkLost {
        before_ms: u64,
    },
    /// A key-value write: cluster settings (`setting/<key>`), and measuring replication.
    Put {
        key: String,
        value: String,
    },
    /// Global group: give `region` a number (its tag id range), once. Answers the
    /// number, the same one on every retry.
    AssignRegionNumber {
        region: String,
    },
    /// Region group: say which region this group serves, once. `carried` is region
    /// data to start from (entries this group does not have yet): the first region takes
    /// over what the global group held before the metadata was sharded, so enrolled
    /// agents, tokens and pool config carry on, names keep their tag ids and new ids
    /// come after them.
    InitRegionGroup {
        group: RegionGroup,
        #[serde(default)]
        carried: RegionData,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    /// The command was valid Raft-wise but rejected by the metadata rules.
    Rejected {
        reason: String,
    },
    ConfigVersion {
        version: u64,
    },
    TagBlock {
        start: u32,
        end: u32,
    },
    TagIds {
        ids: Vec<u32>,
    },
    RegionNumber {
        number: u32,
    },
}

impl Response {
    fn rejected(reason: impl Into<String>) -> Self {
        Response::Rejected { reason: reason.into() }
    }
}

/// Blocks are bounded so that a bad request cannot exhaust a dictionary in one entry.
pub const MAX_TAG_BLOCK: u32 = 1 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<u64, NodeRecord>,
    pub regions: BTreeMap<String, Region>,
    pub azs: BTreeMap<String, Az>,
    pub pools: BTreeMap<String, Pool>,
    pub agents: BTreeMap<String, AgentRecord>,
    pub tokens: BTreeMap<String, EnrollmentToken>,
    pub tags: BTreeMap<String, TagDict>,
    pub agent_configs: BTreeMap<String, AgentConfig>,
    pub kv: BTreeMap<String, String>,
    #[serde(default)]
    pub ca: Option<CaRecord>,
    /// Every certificate issued and not yet pruned, by serial (hex).
    #[serde(default)]
    pub certs: BTreeMap<String, IssuedCert>,
    /// Global group: each region's number (see [`region_tag_ids`]).
    #[serde(default)]
    pub region_numbers: BTreeMap<String, u32>,
    /// Region group: the region it serves. Tag ids are reserved only inside that
    /// region's range once it is set.
    #[serde(default)]
    pub region_group: Option<RegionGroup>,
}

impl MetaState {
    /// Whether a certificate (by serial) must be refused: revoked itself, or issued to an
    /// agent that is revoked.
    pub fn cert_revoked(&self, serial: &str) -> bool {
        match self.certs.get(serial) {
            Some(c) => {
                c.revoked
                    || c.subject.strip_prefix("agent/").is_some_and(|id| {
                        self.agents.get(id).is_some_and(|a| a.status == AgentStatus::Revoked)
                    })
            }
            None => false,
        }
    }
}

impl MetaState {
    /// Whether an ingest assignment may name node `id`. Nodes are recorded in the global
    /// group: a region group takes the assigner's word (placement read them from its
    /// replica of the global group).
    fn knows_node(&self, id: u64) -> bool {
        self.region_group.is_some() || self.nodes.contains_key(&id)
    }

    pub fn apply(&mut self, cmd: Command) -> Response {
        match cmd {
            Command::UpsertNode(n) => {
                self.nodes.insert(n.id, n);
                Response::Ok
            }
            Command::RemoveNode { id } => {
                self.nodes.remove(&id);
                for a in self.agents.values_mut() {
                    if a.ingest_node == Some(id) {
                        a.ingest_node = None;
                    }
                }
                Response::Ok
            }
            Command::UpsertRegion(r) => {
                if r.name.is_empty() {
                    return Response::rejected("region name is empty");
                }
                self.regions.insert(r.name.clone(), r);
                Response::Ok
            }
            Command::UpsertAz(az) => {
                if !self.regions.contains_key(&az.region) {
                    return Response::rejected(format!("unknown region {:?}", az.region));
                }
                if let Some(old) = self.azs.get(&az.name) {
                    if old.region != az.region {
                        return Response::rejected(format!(
                            "az {:?} already belongs to region {:?}",
                            az.name, old.region
                        ));
                    }
                }
                self.azs.insert(az.name.clone(), az);
                Response::Ok
            }
            Command::UpsertPool(p) => match self.azs.get(&p.az) {
                Some(az) if az.region == p.region => {
                    self.pools.insert(p.name.clone(), p);
                    Response::Ok
                }
                Some(az) => Response::rejected(format!(
                    "az {:?} is in region {:?}, not {:?}",
                    p.az, az.region, p.region
                )),
                None => Response::rejected(format!("unknown az {:?}", p.az)),
            },
            Command::UpsertAgent(a) => {
                if a.id.is_empty() {
                    return Response::rejected("agent id is empty");
                }
                self.agents.insert(a.id.clone(), a);
                Response::Ok
            }
            Command::SetAgentStatus { id, status } => match self.agents.get_mut(&id) {
                Some(a) => {
                    a.status = status;
                    Response::Ok
                }
                None => Response::rejected(format!("unknown agent {id:?}")),
            },
            Command::AssignIngest { agent, node } => {
                if let Some(n) = node {
                    if !self.knows_node(n) {
                        return Response::rejected(format!("unknown node {n}"));
                    }
                }
                match self.agents.get_mut(&agent) {
                    Some(a) => {
                        a.ingest_node = node;
                        Response::Ok
                    }
                    None => Response::rejected(format!("unknown agent {agent:?}")),
                }
            }
            Command::AgentHeartbeats { beats } => {
                for (id, at) in beats {
                    if let Some(a) = self.agents.get_mut(&id) {
                        // Beats may be re-ordered by forwarding: time only moves forward.
                        a.last_heartbeat_ms = a.last_heartbeat_ms.max(at);
                        if a.status == AgentStatus::Lost || a.status == AgentStatus::Enrolled {
                            a.status = AgentStatus::Active;
                        }
                    }
                }
                Response::Ok
            }
            Command::AgentConfigVersions { versions } => {
                for (id, v) in versions {
                    if let Some(a) = self.agents.get_mut(&id) {
                        a.config_version = v;
                    }
                }
                Response::Ok
            }
            Command::CreateToken(t) => {
                if self.tokens.contains_key(&t.id) {
                    return Response::rejected("token id already exists");
                }
                self.tokens.insert(t.id.clone(), t);
                Response::Ok
            }
            Command::ConsumeToken { id, agent, now_ms } => {
                let Some(t) = self.tokens.get_mut(&id) else {
                    return Response::rejected("unknown token");
                };
                if t.revoked {
                    return Response::rejected("token revoked");
                }
                if now_ms >= t.expires_at_ms {
                    return Response::rejected("token expired");
                }
                match &t.used_by {
                    Some(by) if *by == agent => Response::Ok,
                    Some(_) => Response::rejected("token already used"),
                    None => {
                        t.used_by = Some(agent);
                        Response::Ok
                    }
                }
            }
            Command::RevokeToken { id } => match self.tokens.get_mut(&id) {
                Some(t) => {
                    t.revoked = true;
                    Response::Ok
                }
                None => Response::rejected("unknown token"),
            },
            Command::SetAgentConfig { pool, body } => {
                let c = self
                    .agent_configs
                    .entry(pool)
                    .or_insert(AgentConfig { version: 0, body: String::new() });
                if c.body != body || c.version == 0 {
                    c.version += 1;
                    c.body = body;
                }
                Response::ConfigVersion { version: c.version }
            }
            Command::ReserveTagIds { tag_type, node, count } => {
                if count == 0 || count > MAX_TAG_BLOCK {
                    return Response::rejected(format!(
                        "block size {count} outside 1..={MAX_TAG_BLOCK}"
                    ));
                }
                let range = self.region_group.as_ref().map(|g| region_tag_ids(g.number));
                let dict = self.tags.entry(tag_type).or_default();
                let start = match &range {
                    Some(r) => dict.next_id.max(r.start),
                    None => dict.next_id,
                };
                let Some(end) = start.checked_add(count) else {
                    return Response::rejected("tag id space exhausted");
                };
                if range.is_some_and(|r| end > r.end) {
                    return Response::rejected("the region's tag id range is exhausted");
                }
                dict.next_id = end;
                dict.blocks.insert(start, TagBlock { start, end, node });
                Response::TagBlock { start, end }
            }
            Command::BindTags { tag_type, node, pairs } => {
                let dict = self.tags.entry(tag_type).or_default();
                // Validate first so that a bad pair rejects the whole entry, not half of it.
                for (name, id) in &pairs {
                    if dict.by_name.contains_key(name) {
                        continue;
                    }
                    if let Some(owner) = dict.by_id.get(id) {
                        return Response::rejected(format!(
                            "id {id} is already bound to {owner:?}"
                        ));
                    }
                    match dict.block_of(*id) {
                        Some(b) if b.node == node => {}
                        _ => {
                            return Response::rejected(format!(
                                "id {id} is not in a block reserved for node {node}"
                            ))
                        }
                    }
                }
                let mut ids = Vec::with_capacity(pairs.len());
                for (name, id) in pairs {
                    if let Some(existing) = dict.by_name.get(&name) {
                        ids.push(*existing);
                        continue;
                    }
                    if dict.by_id.contains_key(&id) {
                        // Same id offered twice for two names in one entry.
                        return Response::rejected(format!("id {id} offered twice"));
                    }
                    dict.by_name.insert(name.clone(), id);
                    dict.by_id.insert(id, name);
                    ids.push(id);
                }
                Response::TagIds { ids }
            }
            Command::AssignIngestMany { assignments } => {
                for (agent, node) in assignments {
                    if node.is_some_and(|n| !self.knows_node(n)) {
                        continue;
                    }
                    if let Some(a) = self.agents.get_mut(&agent) {
                        a.ingest_node = node;
                    }
                }
                Response::Ok
            }
            Command::SetCa(ca) => {
                if self.ca.is_some() {
                    return Response::rejected("the cluster CA is already set");
                }
                self.ca = Some(ca);
                Response::Ok
            }
            Command::RecordCert { serial, cert } => {
                if let Some(id) = cert.subject.strip_prefix("agent/") {
                    match self.agents.get_mut(id) {
                        Some(a) if a.status == AgentStatus::Revoked => {
                            return Response::rejected(format!("agent {id:?} is revoked"))
                        }
                        Some(a) => a.cert_serial = serial.clone(),
                        None => return Response::rejected(format!("unknown agent {id:?}")),
                    }
                }
                self.certs.entry(serial).or_insert(cert);
                Response::Ok
            }
            Command::RevokeCert { serial } => match self.certs.get_mut(&serial) {
                Some(c) => {
                    c.revoked = true;
                    Response::Ok
                }
                None => Response::rejected(format!("unknown certificate {serial:?}")),
            },
            Command::RevokeAgent { id } => {
                let Some(a) = self.agents.get_mut(&id) else {
                    return Response::rejected(format!("unknown agent {id:?}"));
                };
                a.status = AgentStatus::Revoked;
                let subject = format!("agent/{id}");
                for c in self.certs.values_mut().filter(|c| c.subject == subject) {
                    c.revoked = true;
                }
                Response::Ok
            }
            Command::PruneCerts { now_ms } => {
                self.certs.retain(|_, c| c.expires_at_ms > now_ms);
                Response::Ok
            }
            Command::MarkLost { before_ms } => {
                for a in self.agents.values_mut() {
                    if matches!(a.status, AgentStatus::Active | AgentStatus::Enrolled)
                        && a.last_heartbeat_ms < before_ms
                    {
                        a.status = AgentStatus::Lost;
                    }
                }
                Response::Ok
            }
            Command::Put { key, value } => {
                self.kv.insert(key, value);
                Response::Ok
            }
            Command::AssignRegionNumber { region } => {
                if region.is_empty() {
                    return Response::rejected("region name is empty");
                }
                if let Some(&number) = self.region_numbers.get(&region) {
                    return Response::RegionNumber { number };
                }
                let used: std::collections::BTreeSet<u32> =
                    self.region_numbers.values().copied().collect();
                let Some(number) = (0..MAX_REGIONS).find(|n| !used.contains(n)) else {
                    return Response::rejected(format!("more than {MAX_REGIONS} regions"));
                };
                self.region_numbers.insert(region, number);
                Response::RegionNumber { number }
            }
            Command::InitRegionGroup { group, carried } => {
                match &self.region_group {
                    Some(g) if *g == group => return Response::Ok,
                    Some(g) => {
                        return Response::rejected(format!(
                            "this group serves region {:?} (number {})",
                            g.region, g.number
                        ))
                    }
                    None => {}
                }
                if group.number >= MAX_REGIONS {
                    return Response::rejected(format!("region number {} too large", group.number));
                }
                let range = region_tag_ids(group.number);
                let RegionData { tags, agents, tokens, agent_configs, certs } = carried;
                for (id, a) in agents {
                    self.agents.entry(id).or_insert(a);
                }
                for (id, t) in tokens {
                    self.tokens.entry(id).or_insert(t);
                }
                for (pool, c) in agent_configs {
                    self.agent_configs.entry(pool).or_insert(c);
                }
                for (serial, c) in certs {
                    self.certs.entry(serial).or_insert(c);
                }
                for (tag_type, dict) in tags {
                    // Only dictionaries inside the region's range can be taken over.
                    let inside =
                        dict.by_id.keys().all(|id| range.contains(id)) && dict.next_id <= range.end;
                    if inside && !self.tags.contains_key(&tag_type) {
                        self.tags.insert(tag_type, dict);
                    }
                }
                self.region_group = Some(group);
                Response::Ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve(s: &mut MetaState, node: u64, count: u32) -> (u32, u32) {
        match s.apply(Command::ReserveTagIds { tag_type: "pod".into(), node, count }) {
            Response::TagBlock { start, end } => (start, end),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn tag_blocks_never_overlap_and_bindings_are_first_wins() {
        let mut s = MetaState::default();
        let (a0, a1) = reserve(&mut s, 1, 10);
        let (b0, b1) = reserve(&mut s, 2, 10);
        assert_eq!((a0, a1), (1, 11));
        assert_eq!((b0, b1), (11, 21));
        let r = s.apply(Command::BindTags {
            tag_type: "pod".into(),
            node: 1,
            pairs: vec![("web".into(), a0), ("db".into(), a0 + 1)],
        });
        assert_eq!(r, Response::TagIds { ids: vec![1, 2] });
        // Node 2 offers its own id for "web": the existing id wins, node 2's is retired.
        let r = s.apply(Command::BindTags {
            tag_type: "pod".into(),
            node: 2,
            pairs: vec![("web".into(), b0), ("cache".into(), b0 + 1)],
        });
        assert_eq!(r, Response::TagIds { ids: vec![1, 12] });
        // Binding another node's id, or an id bound to another name, is refused whole.
        let r = s.apply(Command::BindTags {
            tag_type: "pod".into(),
            node: 2,
            pairs: vec![("x".into(), a0 + 5)],
        });
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        let r = s.apply(Command::BindTags {
            tag_type: "pod".into(),
            node: 1,
            pairs: vec![("y".into(), a0 + 1)],
        });
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        assert!(!s.tags["pod"].by_name.contains_key("y"));
        // Re-applying the same binding (a retried forward) is harmless.
        let r = s.apply(Command::BindTags {
            tag_type: "pod".into(),
            node: 1,
            pairs: vec![("db".into(), a0 + 1)],
        });
        assert_eq!(r, Response::TagIds { ids: vec![2] });
        let d = &s.tags["pod"];
        assert_eq!(d.by_name.len(), d.by_id.len());
    }

    #[test]
    fn region_numbers_are_assigned_once_and_never_shared() {
        let mut s = MetaState::default();
        let number = |s: &mut MetaState, r: &str| match s
            .apply(Command::AssignRegionNumber { region: r.into() })
        {
            Response::RegionNumber { number } => number,
            r => panic!("{r:?}"),
        };
        assert_eq!(number(&mut s, "eu"), 0);
        assert_eq!(number(&mut s, "us"), 1);
        assert_eq!(number(&mut s, "eu"), 0, "a retry gets the same number");
        assert_eq!(number(&mut s, "ap"), 2);
        assert_eq!(region_tag_ids(0), 1..1 << 24);
        assert_eq!(region_tag_ids(2), 2 << 24..3 << 24);
        assert_eq!(region_tag_ids(MAX_REGIONS - 1).end, u32::MAX);
    }

    #[test]
    fn a_region_group_reserves_only_inside_its_range() {
        let mut s = MetaState::default();
        let group = RegionGroup { region: "us".into(), number: 1 };
        let init = |g: &RegionGroup| Command::InitRegionGroup {
            group: g.clone(),
            carried: RegionData::default(),
        };
        assert_eq!(s.apply(init(&group)), Response::Ok);
        assert_eq!(s.apply(init(&group)), Response::Ok, "a retry is harmless");
        let other = RegionGroup { region: "eu".into(), number: 0 };
        assert!(matches!(s.apply(init(&other)), Response::Rejected { .. }));
        assert_eq!(reserve(&mut s, 7, 10), (1 << 24, (1 << 24) + 10));
        assert_eq!(reserve(&mut s, 8, 10), ((1 << 24) + 10, (1 << 24) + 20));
        // Binding stays checked against the node's block.
        let r = s.apply(Command::BindTags {
            tag_type: "pod".into(),
            node: 7,
            pairs: vec![("web".into(), 1 << 24)],
        });
        assert_eq!(r, Response::TagIds { ids: vec![1 << 24] });
        // The range end is a hard limit: a block crossing it is refused whole.
        s.tags.get_mut("pod").unwrap().next_id = (2 << 24) - 5;
        let r = s.apply(Command::ReserveTagIds { tag_type: "pod".into(), node: 7, count: 10 });
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        assert_eq!(reserve(&mut s, 7, 5), ((2 << 24) - 5, 2 << 24));
        let r = s.apply(Command::ReserveTagIds { tag_type: "pod".into(), node: 7, count: 1 });
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        assert!(s.tags["pod"]
            .blocks
            .values()
            .all(|b| region_tag_ids(1).contains(&b.start) && b.end <= region_tag_ids(1).end));
    }

    #[test]
    fn the_first_region_takes_over_the_region_data_from_before_sharding() {
        let mut global = MetaState::default();
        global.apply(Command::UpsertAgent(agent("a")));
        global.apply(Command::RecordCert {
            serial: "0a".into(),
            cert: IssuedCert { subject: "agent/a".into(), expires_at_ms: 9, revoked: false },
        });
        global.apply(Command::RecordCert {
            serial: "0b".into(),
            cert: IssuedCert { subject: "admin/ops".into(), expires_at_ms: 9, revoked: false },
        });
        global.apply(Command::SetAgentConfig { pool: "p".into(), body: "x = 1".into() });
        reserve(&mut global, 1, 4);
        global.apply(Command::BindTags {
            tag_type: "pod".into(),
            node: 1,
            pairs: vec![("web".into(), 1)],
        });
        let mut region = MetaState::default();
        let group = RegionGroup { region: "eu".into(), number: 0 };
        let r = region.apply(Command::InitRegionGroup { group, carried: RegionData::of(&global) });
        assert_eq!(r, Response::Ok);
        assert_eq!(region.tags["pod"].by_name["web"], 1);
        assert_eq!(region.agents["a"], global.agents["a"]);
        assert_eq!(region.agent_configs["p"].version, 1);
        assert!(region.certs.contains_key("0a") && !region.certs.contains_key("0b"));
        // Revoking the carried agent in its region group refuses its old certificate.
        region.apply(Command::RevokeAgent { id: "a".into() });
        assert!(region.cert_revoked("0a"));
        assert_eq!(reserve(&mut region, 2, 4), (5, 9), "new ids come after the old ones");
        // Another region cannot take them over: they are outside its range.
        let mut us = MetaState::default();
        let group = RegionGroup { region: "us".into(), number: 1 };
        let carried = RegionData { tags: global.tags.clone(), ..Default::default() };
        us.apply(Command::InitRegionGroup { group, carried });
        assert!(us.tags.is_empty());
    }

    #[test]
    fn reserve_rejects_bad_sizes_and_exhaustion() {
        let mut s = MetaState::default();
        assert!(matches!(
            s.apply(Command::ReserveTagIds { tag_type: "t".into(), node: 1, count: 0 }),
            Response::Rejected { .. }
        ));
        s.tags.entry("t".into()).or_default().next_id = u32::MAX - 5;
        assert!(matches!(
            s.apply(Command::ReserveTagIds { tag_type: "t".into(), node: 1, count: 10 }),
            Response::Rejected { .. }
        ));
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let mut s = MetaState::default();
        let t = EnrollmentToken {
            id: "h1".into(),
            region: "r".into(),
            az: "z".into(),
            pool: "p".into(),
            expires_at_ms: 1000,
            used_by: None,
            revoked: false,
        };
        assert_eq!(s.apply(Command::CreateToken(t.clone())), Response::Ok);
        let consume = |agent: &str, now_ms| Command::ConsumeToken {
            id: "h1".into(),
            agent: agent.into(),
            now_ms,
        };
        assert_eq!(s.apply(consume("a", 10)), Response::Ok);
        assert_eq!(s.apply(consume("a", 11)), Response::Ok);
        assert!(matches!(s.apply(consume("b", 12)), Response::Rejected { .. }));
        let mut t2 = t;
        t2.id = "h2".into();
        s.apply(Command::CreateToken(t2));
        let late = Command::ConsumeToken { id: "h2".into(), agent: "c".into(), now_ms: 1000 };
        assert!(matches!(s.apply(late), Response::Rejected { .. }));
    }

    #[test]
    fn batched_assignments_skip_unknown_agents_and_nodes() {
        let mut s = MetaState::default();
        s.apply(Command::UpsertNode(NodeRecord {
            id: 1,
            region: "r".into(),
            az: "z".into(),
            roles: vec!["ingest".into()],
            raft_addr: "n1:20040".into(),
            drained: false,
        }));
        for id in ["a", "b"] {
            s.apply(Command::UpsertAgent(AgentRecord {
                id: id.into(),
                host: id.into(),
                pool: "p".into(),
                region: "r".into(),
                az: "z".into(),
                cert_serial: String::new(),
                status: AgentStatus::Active,
                ingest_node: Some(9),
                last_heartbeat_ms: 0,
                config_version: 0,
            }));
        }
        let r = s.apply(Command::AssignIngestMany {
            assignments: vec![
                ("a".into(), Some(1)),
                ("b".into(), Some(7)),
                ("ghost".into(), Some(1)),
            ],
        });
        assert_eq!(r, Response::Ok);
        assert_eq!(s.agents["a"].ingest_node, Some(1));
        assert_eq!(s.agents["b"].ingest_node, Some(9), "unknown node 7 is skipped");
        assert!(!s.agents.contains_key("ghost"));
    }

    #[test]
    fn topology_is_checked_and_config_versions_grow() {
        let mut s = MetaState::default();
        let az = Az { name: "z1".into(), region: "r1".into() };
        assert!(matches!(s.apply(Command::UpsertAz(az.clone())), Response::Rejected { .. }));
        s.apply(Command::UpsertRegion(Region { name: "r1".into(), description: String::new() }));
        assert_eq!(s.apply(Command::UpsertAz(az)), Response::Ok);
        let set = |body: &str| Command::SetAgentConfig { pool: "p".into(), body: body.into() };
        assert_eq!(s.apply(set("a")), Response::ConfigVersion { version: 1 });
        assert_eq!(s.apply(set("a")), Response::ConfigVersion { version: 1 });
        assert_eq!(s.apply(set("b")), Response::ConfigVersion { version: 2 });
    }

    fn agent(id: &str) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            host: id.into(),
            pool: "p".into(),
            region: "r".into(),
            az: "z".into(),
            cert_serial: String::new(),
            status: AgentStatus::Enrolled,
            ingest_node: None,
            last_heartbeat_ms: 100,
            config_version: 0,
        }
    }

    #[test]
    fn revoking_an_agent_revokes_all_its_certificates_and_sticks() {
        let mut s = MetaState::default();
        s.apply(Command::UpsertAgent(agent("a")));
        s.apply(Command::UpsertAgent(agent("b")));
        let cert = |subject: &str| IssuedCert {
            subject: subject.into(),
            expires_at_ms: 1000,
            revoked: false,
        };
        for (serial, subject) in [("01", "agent/a"), ("02", "agent/a"), ("03", "agent/b")] {
            let r = s.apply(Command::RecordCert { serial: serial.into(), cert: cert(subject) });
            assert_eq!(r, Response::Ok);
        }
        assert_eq!(s.agents["a"].cert_serial, "02");
        assert_eq!(s.apply(Command::RevokeAgent { id: "a".into() }), Response::Ok);
        assert!(s.cert_revoked("01") && s.cert_revoked("02") && !s.cert_revoked("03"));
        // A beat does not bring a revoked agent back, nor can it get a new certificate.
        s.apply(Command::AgentHeartbeats { beats: vec![("a".into(), 500)] });
        assert_eq!(s.agents["a"].status, AgentStatus::Revoked);
        let r = s.apply(Command::RecordCert { serial: "04".into(), cert: cert("agent/a") });
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        // The CA is set once.
        let ca = CaRecord { cert_pem: "c".into(), key_pem: "k".into() };
        assert_eq!(s.apply(Command::SetCa(ca.clone())), Response::Ok);
        assert!(matches!(s.apply(Command::SetCa(ca)), Response::Rejected { .. }));
        s.apply(Command::PruneCerts { now_ms: 1000 });
        assert!(s.certs.is_empty());
    }

    #[test]
    fn silent_agents_are_lost_until_they_beat() {
        let mut s = MetaState::default();
        s.apply(Command::UpsertAgent(agent("a")));
        s.apply(Command::UpsertAgent(agent("b")));
        s.apply(Command::AgentHeartbeats { beats: vec![("b".into(), 300)] });
        s.apply(Command::MarkLost { before_ms: 200 });
        assert_eq!(s.agents["a"].status, AgentStatus::Lost);
        assert_eq!(s.agents["b"].status, AgentStatus::Active);
        s.apply(Command::AgentHeartbeats { beats: vec![("a".into(), 400)] });
        assert_eq!(s.agents["a"].status, AgentStatus::Active);
        s.apply(Command::AgentConfigVersions { versions: vec![("a".into(), 3)] });
        assert_eq!(s.agents["a"].config_version, 3);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = MetaState::default();
        reserve(&mut s, 1, 4);
        s.apply(Command::BindTags {
            tag_type: "pod".into(),
            node: 1,
            pairs: vec![("web".into(), 1)],
        });
        let back: MetaState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
