//! The leader's placement loop: whenever gossip membership changes (a node joins, dies
//! or changes what it says about itself), and every few seconds in any case (drains,
//! new agents, a new leader), recompute every agent's ingest node with
//! `fathom_regions::place` and write only the moves, in batches.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fathom_cluster::state::AgentStatus;
use fathom_cluster::{Command, Membership, MetaRouter, MetaState};
use fathom_regions::{place, AgentSlot, NodeSlot, PlacementParams};

use crate::settings;

/// Re-check this often even when gossip is quiet.
const PERIOD: Duration = Duration::from_secs(2);
/// A node this one has not heard from yet is given this long after start before its
/// agents move: a fresh leader's gossip has not met its peers yet.
const GOSSIP_GRACE: Duration = Duration::from_secs(10);
/// Assignments per Raft entry.
const BATCH: usize = 1000;

/// Which nodes may take agents, as gossip sees them now.
pub struct Liveness {
    pub me: u64,
    pub live: HashSet<u64>,
    pub dead: HashSet<u64>,
    /// Past the start-up grace: silence now means down.
    pub settled: bool,
}

impl Liveness {
    pub fn is_up(&self, id: u64) -> bool {
        id == self.me || self.live.contains(&id) || (!self.settled && !self.dead.contains(&id))
    }
}

/// The assignment changes placement wants now: `(agent, new node)`. Nodes and settings
/// come from `global`, agents from `region` (the same state without a region group).
pub fn moves(global: &MetaState, region: &MetaState, up: &Liveness) -> Vec<(String, Option<u64>)> {
    let nodes: Vec<NodeSlot> = global
        .nodes
        .values()
        .map(|n| NodeSlot {
            id: n.id,
            region: n.region.clone(),
            az: n.az.clone(),
            accepting: !n.drained && n.roles.iter().any(|r| r == "ingest") && up.is_up(n.id),
        })
        .collect();
    let mut out = Vec::new();
    let mut agents = Vec::with_capacity(region.agents.len());
    for a in region.agents.values() {
        if a.status == AgentStatus::Revoked {
            if a.ingest_node.is_some() {
                out.push((a.id.clone(), None));
            }
            continue;
        }
        agents.push(AgentSlot {
            id: a.id.clone(),
            region: a.region.clone(),
            az: a.az.clone(),
            current: a.ingest_node,
        });
    }
    let params = PlacementParams {
        load_factor: settings::parsed(global, settings::LOAD_FACTOR),
        vnodes: settings::parsed(global, settings::VNODES),
    };
    let p = place(&agents, &nodes, &params);
    out.extend(p.changes(&agents).map(|(i, n)| (agents[i].id.clone(), n)));
    out
}

/// Run by the leader of this node's region group for the region's agents (the global
/// leader when there is no region group), so a region cut off from the others keeps
/// placing its agents on its own ingest nodes.
pub fn spawn(meta: MetaRouter, membership: Arc<Membership>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut changes = membership.watch();
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = changes.changed() => if r.is_err() { return },
            }
            let group = meta.regional();
            if !group.is_leader() {
                continue;
            }
            let up = Liveness {
                me: meta.id(),
                live: membership.live_nodes().iter().map(|n| n.id).collect(),
                dead: membership.dead_nodes().await.into_iter().collect(),
                settled: started.elapsed() >= GOSSIP_GRACE,
            };
            let todo = meta.read_both(|g, r| moves(g, r, &up));
            if todo.is_empty() {
                continue;
            }
            tracing::info!(agents = todo.len(), "placement: moving agents");
            for chunk in todo.chunks(BATCH) {
                let cmd = Command::AssignIngestMany { assignments: chunk.to_vec() };
                if let Err(e) = group.write(cmd).await {
                    tracing::warn!(error = %e, "placement: writing assignments; will retry");
                    break;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fathom_cluster::state::{AgentRecord, NodeRecord};

    fn state(nodes: &[(u64, &str, bool)], agents: usize) -> MetaState {
        let mut s = MetaState::default();
        for (id, az, drained) in nodes {
            s.apply(Command::UpsertNode(NodeRecord {
                id: *id,
                region: "r".into(),
                az: az.to_string(),
                roles: vec!["controller".into(), "ingest".into()],
                raft_addr: format!("n{id}:20040"),
                drained: *drained,
            }));
        }
        for i in 0..agents {
            s.apply(Command::UpsertAgent(AgentRecord {
                id: format!("agent-{i}"),
                host: format!("host-{i}"),
                pool: "p".into(),
                region: "r".into(),
                az: if i % 2 == 0 { "a" } else { "b" }.into(),
                cert_serial: String::new(),
                status: AgentStatus::Active,
                ingest_node: None,
                last_heartbeat_ms: 0,
                config_version: 0,
            }));
        }
        s
    }

    fn all_up(me: u64) -> Liveness {
        Liveness { me, live: (1..=10).collect(), dead: HashSet::new(), settled: true }
    }

    fn settle(s: &mut MetaState, up: &Liveness) -> usize {
        let m = moves(s, s, up);
        let n = m.len();
        s.apply(Command::AssignIngestMany { assignments: m });
        n
    }

    #[test]
    fn a_dead_node_loses_exactly_its_agents_and_they_stay_in_their_az() {
        let mut s = state(&[(1, "a", false), (2, "a", false), (3, "b", false)], 200);
        let mut up = all_up(1);
        assert_eq!(settle(&mut s, &up), 200);
        assert_eq!(moves(&s, &s, &up), vec![], "a settled placement is stable");
        let on_2: HashSet<String> =
            s.agents.values().filter(|a| a.ingest_node == Some(2)).map(|a| a.id.clone()).collect();
        assert!(!on_2.is_empty());
        up.live.remove(&2);
        up.dead.insert(2);
        let m = moves(&s, &s, &up);
        let moved: HashSet<String> = m.iter().map(|(a, _)| a.clone()).collect();
        assert_eq!(moved, on_2);
        assert!(m.iter().all(|(_, n)| *n == Some(1)), "AZ a's only other node takes them");
    }

    #[test]
    fn unheard_nodes_keep_agents_during_the_grace_then_lose_them() {
        let mut s = state(&[(1, "a", false), (2, "a", false)], 50);
        assert_eq!(settle(&mut s, &all_up(1)), 50);
        let fresh =
            Liveness { me: 1, live: HashSet::from([1]), dead: HashSet::new(), settled: false };
        assert!(moves(&s, &s, &fresh).is_empty());
        let later = Liveness { settled: true, ..fresh };
        assert!(moves(&s, &s, &later).iter().all(|(_, n)| *n == Some(1)));
        assert!(!moves(&s, &s, &later).is_empty());
    }

    #[test]
    fn drained_nodes_and_revoked_agents_are_emptied() {
        let mut s = state(&[(1, "a", false), (2, "b", false)], 20);
        let up = all_up(1);
        settle(&mut s, &up);
        s.apply(Command::SetAgentStatus { id: "agent-0".into(), status: AgentStatus::Revoked });
        let mut n2 = s.nodes[&2].clone();
        n2.drained = true;
        s.apply(Command::UpsertNode(n2));
        settle(&mut s, &up);
        assert_eq!(s.agents["agent-0"].ingest_node, None);
        assert!(s.agents.values().filter(|a| a.id != "agent-0").all(|a| a.ingest_node == Some(1)));
    }
}

/// The loop on real cluster members: three in-process nodes on loopback with gossip
/// and Raft; a node dies and its agents, and only they, move to the survivors.
#[cfg(test)]
mod cluster_tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use fathom_cluster::state::{AgentRecord, AgentStatus};
    use fathom_cluster::{
        Cluster, ClusterConfig, Command, Load, MembershipConfig, MetaConfig, NodeInfo, Role,
    };

    fn free_tcp() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    fn free_udp() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        for _ in 0..600 {
            if let Some(v) = f() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agents_of_a_dead_ingest_node_move_to_the_survivors_and_no_others_move() {
        let base = std::env::temp_dir().join(format!("fathom-placement-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let gossip: Vec<SocketAddr> = (0..3).map(|_| free_udp()).collect();
        let mut nodes = Vec::new();
        for i in 0..3u64 {
            let raft = free_tcp();
            let mut meta = MetaConfig::new(i + 1, raft, base.join(format!("n{}", i + 1)));
            meta.advertise_addr = raft.to_string();
            let info = NodeInfo {
                id: i + 1,
                region: "r".into(),
                az: "a".into(),
                roles: vec![Role::Controller, Role::Ingest],
                raft_addr: raft.to_string(),
                region_raft_addr: String::new(),
                api_addr: String::new(),
                ingest_addr: String::new(),
                gossip_addr: gossip[i as usize],
                version: "test".into(),
                load: Load::default(),
            };
            let mut membership = MembershipConfig::new(info, vec![gossip[0].to_string()]);
            membership.gossip_interval = Duration::from_millis(200);
            let c = Cluster::start(ClusterConfig {
                meta,
                membership,
                bootstrap_expect: 3,
                region: None,
            })
            .await
            .unwrap();
            let task = super::spawn(c.router(), c.membership.clone());
            nodes.push(Some((c, task)));
        }
        let metas: Vec<fathom_cluster::MetaNode> =
            nodes.iter().map(|n| n.as_ref().unwrap().0.meta.clone()).collect();
        let m0 = metas[0].clone();
        poll("three registered nodes", || (m0.read(|s| s.nodes.len()) == 3).then_some(())).await;
        for a in 0..90 {
            let rec = AgentRecord {
                id: format!("agent-{a}"),
                host: format!("host-{a}"),
                pool: "p".into(),
                region: "r".into(),
                az: "a".into(),
                cert_serial: String::new(),
                status: AgentStatus::Active,
                ingest_node: None,
                last_heartbeat_ms: 0,
                config_version: 0,
            };
            m0.write(Command::UpsertAgent(rec)).await.unwrap();
        }
        let assigned = |m: &fathom_cluster::MetaNode| -> BTreeMap<String, Option<u64>> {
            m.read(|s| s.agents.values().map(|a| (a.id.clone(), a.ingest_node)).collect())
        };
        let before = poll("every agent assigned", || {
            let a = assigned(&m0);
            (a.len() == 90 && a.values().all(Option::is_some)).then_some(a)
        })
        .await;
        let leader = m0.status().leader.expect("a leader");
        // A follower that carries agents dies.
        let victim = (1..=3u64)
            .find(|&n| n != leader && before.values().any(|v| *v == Some(n)))
            .expect("agents on a follower");
        let (c, task) = nodes[victim as usize - 1].take().unwrap();
        task.abort();
        let _ = task.await;
        c.shutdown().await.unwrap();

        let survivor = metas[if victim == 1 { 1 } else { 0 }].clone();
        let after = poll("the dead node's agents moved", || {
            let a = assigned(&survivor);
            a.values().all(|v| v.is_some() && *v != Some(victim)).then_some(a)
        })
        .await;
        for (agent, node) in &before {
            if *node != Some(victim) {
                assert_eq!(after[agent], *node, "{agent} was not on the dead node but moved");
            }
        }
        for n in nodes.into_iter().flatten() {
            n.1.abort();
            let _ = n.1.await;
            let _ = n.0.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
