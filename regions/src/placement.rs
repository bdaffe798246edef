//! Which ingest node each agent sends to: consistent hashing with bounded loads
//! (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2018),
//! scoped by topology, and sticky.
//!
//! [`place`] is a pure function of the agents (with their current node), the nodes and
//! the parameters, so every leader computes the same answer and tests need no cluster.
//!
//! - **Scope**: an agent is placed among the accepting nodes of its own AZ; if its AZ has
//!   none, of its region; if its region has none, of the whole cluster. Traffic stays in
//!   the AZ whenever it can.
//! - **Ring**: each node has `vnodes` points on a 64-bit hash ring (a stable FNV-1a +
//!   splitmix64 hash, identical on every build); an agent's preferred node is the owner of
//!   the first point at or after its own hash.
//! - **Bounded load**: a node takes at most `ceil(c * expected)` agents, where `expected`
//!   is its fair share (the agents of each scope it serves, divided by that scope's node
//!   count). A new agent walks the ring past full nodes. With `c = 1.25` no node carries
//!   more than 25 % above its share.
//! - **Stickiness**: an agent keeps its current node while that node accepts, is in the
//!   agent's scope and is not over its bound. So a lost (dead or drained) node moves only
//!   its own agents; a joined node pulls, up to its share, only agents that prefer it on
//!   the ring, and only while it is well below its share (under `expected / c`), which a
//!   node that has been in the cluster does not drop to when another node leaves.

use std::collections::HashMap;

/// A server node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSlot {
    pub id: u64,
    pub region: String,
    pub az: String,
    /// Live, not drained and running ingest: may be given agents.
    pub accepting: bool,
}

/// An agent as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSlot {
    pub id: String,
    pub region: String,
    pub az: String,
    /// The node it is assigned to now, if any.
    pub current: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacementParams {
    /// `c` of bounded-load hashing: a node carries at most `ceil(c * fair share)`.
    pub load_factor: f64,
    /// Ring points per node; more points, smoother shares, slower placement.
    pub vnodes: u32,
}

impl Default for PlacementParams {
    fn default() -> Self {
        PlacementParams { load_factor: 1.25, vnodes: 128 }
    }
}

/// The result of [`place`]: one entry per input agent, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub assignment: Vec<Option<u64>>,
    /// Agents whose node differs from their `current` one.
    pub moved: usize,
}

impl Placement {
    /// `(agent index, new node)` for every agent that changes node.
    pub fn changes<'a>(
        &'a self,
        agents: &'a [AgentSlot],
    ) -> impl Iterator<Item = (usize, Option<u64>)> + 'a {
        self.assignment
            .iter()
            .enumerate()
            .filter(move |(i, a)| agents[*i].current != **a)
            .map(|(i, a)| (i, *a))
    }

    /// Agents per node (only nodes with at least one agent).
    pub fn loads(&self) -> HashMap<u64, usize> {
        let mut m = HashMap::new();
        for n in self.assignment.iter().flatten() {
            *m.entry(*n).or_insert(0) += 1;
        }
        m
    }
}

/// 64-bit FNV-1a finished with splitmix64: stable across builds and platforms (std's
/// hashers are not), and well mixed even for ids that differ in one character.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Where an agent may be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Scope {
    /// Index into the list of (region, az) pairs that have accepting nodes.
    Az(usize),
    /// Index into the list of regions that have accepting nodes.
    Region(usize),
    Global,
}

/// The nodes of one scope and their points on the ring.
struct Ring {
    nodes: Vec<usize>,
    points: Vec<(u64, usize)>,
}

impl Ring {
    fn new(nodes: Vec<usize>, all: &[NodeSlot], vnodes: u32) -> Ring {
        let mut points = Vec::with_capacity(nodes.len() * vnodes as usize);
        for &n in &nodes {
            let id = all[n].id.to_le_bytes();
            for v in 0..vnodes {
                points.push((stable_hash(&[b"node", &id, &v.to_le_bytes()]), n));
            }
        }
        points.sort_unstable();
        Ring { nodes, points }
    }

    fn start(&self, h: u64) -> usize {
        let i = self.points.partition_point(|(p, _)| *p < h);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    fn preferred(&self, h: u64) -> Option<usize> {
        self.points.get(self.start(h)).map(|(_, n)| *n)
    }

    /// The first node clockwise from `h` for which `fits` holds.
    fn walk(&self, h: u64, mut fits: impl FnMut(usize) -> bool) -> Option<usize> {
        let s = self.start(h);
        let len = self.points.len();
        (0..len).map(|k| self.points[(s + k) % len].1).find(|&n| fits(n))
    }
}

/// Assign every agent an accepting node (or none, when no node accepts), moving as few
/// agents as the bounds allow. See the module docs for the rules.
pub fn place(agents: &[AgentSlot], nodes: &[NodeSlot], params: &PlacementParams) -> Placement {
    let c = if params.load_factor.is_finite() { params.load_factor.max(1.0) } else { 1.25 };
    let vnodes = params.vnodes.max(1);

    // Scopes that have accepting nodes.
    let mut az_index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut region_index: HashMap<&str, usize> = HashMap::new();
    let mut az_nodes: Vec<Vec<usize>> = Vec::new();
    let mut region_nodes: Vec<Vec<usize>> = Vec::new();
    let mut global_nodes = Vec::new();
    let mut by_id: HashMap<u64, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if !n.accepting || by_id.insert(n.id, i).is_some() {
            continue;
        }
        let a = *az_index.entry((&n.region, &n.az)).or_insert_with(|| {
            az_nodes.push(Vec::new());
            az_nodes.len() - 1
        });
        az_nodes[a].push(i);
        let r = *region_index.entry(&n.region).or_insert_with(|| {
            region_nodes.push(Vec::new());
            region_nodes.len() - 1
        });
        region_nodes[r].push(i);
        global_nodes.push(i);
    }
    let rings_az: Vec<Ring> = az_nodes.into_iter().map(|v| Ring::new(v, nodes, vnodes)).collect();
    let rings_region: Vec<Ring> =
        region_nodes.into_iter().map(|v| Ring::new(v, nodes, vnodes)).collect();
    let ring_global = Ring::new(global_nodes, nodes, vnodes);
    let ring = |s: Scope| match s {
        Scope::Az(i) => &rings_az[i],
        Scope::Region(i) => &rings_region[i],
        Scope::Global => &ring_global,
    };

    let scope: Vec<Scope> = agents
        .iter()
        .map(|a| {
            if let Some(&i) = az_index.get(&(a.region.as_str(), a.az.as_str())) {
                Scope::Az(i)
            } else if let Some(&i) = region_index.get(a.region.as_str()) {
                Scope::Region(i)
            } else {
                Scope::Global
            }
        })
        .collect();
    let hash: Vec<u64> = agents.iter().map(|a| stable_hash(&[b"agent", a.id.as_bytes()])).collect();
    let in_scope = |s: Scope, n: usize| -> bool {
        let node = &nodes[n];
        match s {
            Scope::Az(i) => rings_az[i]
                .nodes
                .first()
                .is_some_and(|&f| nodes[f].region == node.region && nodes[f].az == node.az),
            Scope::Region(i) => {
                rings_region[i].nodes.first().is_some_and(|&f| nodes[f].region == node.region)
            }
            Scope::Global => true,
        }
    };

    // Fair share and bound of each node: every scope spreads its agents evenly.
    let mut per_scope: HashMap<Scope, usize> = HashMap::new();
    for s in &scope {
        *per_scope.entry(*s).or_insert(0) += 1;
    }
    let mut expected = vec![0f64; nodes.len()];
    for (s, m) in &per_scope {
        let r = ring(*s);
        for &n in &r.nodes {
            expected[n] += *m as f64 / r.nodes.len() as f64;
        }
    }
    let cap: Vec<usize> =
        expected.iter().map(|e| (c * e - 1e-9).ceil().max(0.0) as usize).collect();

    // 1. Keep current nodes that still accept and are in scope.
    let mut assign: Vec<Option<usize>> = agents
        .iter()
        .zip(&scope)
        .map(|(a, s)| a.current.and_then(|id| by_id.get(&id).copied()).filter(|&n| in_scope(*s, n)))
        .collect();
    let mut load = vec![0usize; nodes.len()];
    for n in assign.iter().flatten() {
        load[*n] += 1;
    }
    let preferred: Vec<Option<usize>> =
        (0..agents.len()).map(|i| ring(scope[i]).preferred(hash[i])).collect();

    // 2. A node well below its share (typically one that just joined) pulls the agents
    //    that prefer it on the ring, up to its share.
    //    Pulling can leave a node it pulled from well below its share in turn: repeat
    //    until no node pulls, so the result is a fixed point. Every move puts an agent
    //    on its preferred node, so this ends.
    for _ in 0..=nodes.len() {
        let mut pull: HashMap<usize, Vec<usize>> = HashMap::new();
        for i in 0..agents.len() {
            if let (Some(p), Some(cur)) = (preferred[i], assign[i]) {
                if p != cur && (load[p] as f64) < expected[p] / c {
                    pull.entry(p).or_default().push(i);
                }
            }
        }
        if pull.is_empty() {
            break;
        }
        let mut pullers: Vec<usize> = pull.keys().copied().collect();
        pullers.sort_unstable_by_key(|&n| nodes[n].id);
        for p in pullers {
            let mut cands = pull.remove(&p).unwrap_or_default();
            cands.sort_unstable_by_key(|&i| (hash[i], i));
            let share = expected[p].floor() as usize;
            for i in cands {
                if load[p] >= share {
                    break;
                }
                if let Some(cur) = assign[i] {
                    load[cur] -= 1;
                }
                assign[i] = Some(p);
                load[p] += 1;
            }
        }
    }

    // 3. Nodes over their bound (shares shrink when nodes join) shed the agents that
    //    least prefer them.
    let mut over: Vec<usize> = (0..nodes.len()).filter(|&n| load[n] > cap[n]).collect();
    if !over.is_empty() {
        over.sort_unstable_by_key(|&n| nodes[n].id);
        let mut on: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, a) in assign.iter().enumerate() {
            if let Some(n) = a {
                if load[*n] > cap[*n] {
                    on.entry(*n).or_default().push(i);
                }
            }
        }
        for n in over {
            let mut list = on.remove(&n).unwrap_or_default();
            list.sort_unstable_by_key(|&i| (preferred[i] == Some(n), hash[i], i));
            for i in list {
                if load[n] <= cap[n] {
                    break;
                }
                assign[i] = None;
                load[n] -= 1;
            }
        }
    }

    // 4. Place the rest: narrow scopes first, so that fallback agents take what is left.
    let mut todo: Vec<usize> = (0..agents.len()).filter(|&i| assign[i].is_none()).collect();
    todo.sort_unstable_by_key(|&i| (scope[i], hash[i], i));
    for i in todo {
        let r = ring(scope[i]);
        let chosen = r.walk(hash[i], |n| load[n] < cap[n]).or_else(|| {
            // Every node of the scope is at its bound (other scopes' fallback agents
            // filled it): take the least loaded rather than leave the agent unplaced.
            r.nodes.iter().copied().min_by_key(|&n| (load[n], nodes[n].id))
        });
        if let Some(n) = chosen {
            load[n] += 1;
            assign[i] = Some(n);
        }
    }

    let assignment: Vec<Option<u64>> = assign.iter().map(|a| a.map(|n| nodes[n].id)).collect();
    let moved = assignment.iter().zip(agents).filter(|(n, a)| **n != a.current).count();
    Placement { assignment, moved }
}
