//! Gossip membership and failure detection (chitchat over UDP).
//!
//! Each node publishes what the rest of the cluster needs to place work on it as flat
//! key-values: identity and topology (`region`, `az`, `roles`), where to reach it
//! (`raft_addr`, `region_raft_addr`, `api_addr`), what it runs (`version`) and how
//! loaded it is (`load.*`).
//! chitchat's phi-accrual detector decides who is live; a node that restarts comes back
//! under a new generation (its start time), so stale state from its previous life is
//! not mistaken for the new one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub const DEFAULT_GOSSIP_PORT: u16 = 20041;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Controller,
    Ingest,
    Query,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Ingest => "ingest",
            Role::Query => "query",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "controller" => Some(Role::Controller),
            "ingest" => Some(Role::Ingest),
            "query" => Some(Role::Query),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub agents: u64,
    pub records_per_sec: f64,
    pub disk_used_bytes: u64,
    pub disk_free_bytes: u64,
}

/// What one node says about itself through gossip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The Raft node id.
    pub id: u64,
    pub region: String,
    pub az: String,
    pub roles: Vec<Role>,
    pub raft_addr: String,
    /// Where this node's member of its region's Raft group listens (host:port); empty =
    /// no region group here.
    #[serde(default)]
    pub region_raft_addr: String,
    pub api_addr: String,
    /// Where agents push data to this node (host:port); empty = no ingest here.
    #[serde(default)]
    pub ingest_addr: String,
    pub gossip_addr: SocketAddr,
    pub version: String,
    pub load: Load,
}

#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub cluster_id: String,
    pub node: NodeInfo,
    pub listen_addr: SocketAddr,
    /// host:port of a few existing members; DNS names are re-resolved periodically.
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    /// Phi above which a silent node is declared dead (chitchat's default is 8).
    pub phi_threshold: f64,
}

impl MembershipConfig {
    pub fn new(node: NodeInfo, seeds: Vec<String>) -> Self {
        MembershipConfig {
            cluster_id: "fathom".into(),
            listen_addr: node.gossip_addr,
            node,
            seeds,
            gossip_interval: Duration::from_millis(500),
            phi_threshold: 8.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("starting gossip on {addr}: {source}")]
    Start {
        addr: SocketAddr,
        #[source]
        source: anyhow::Error,
    },
}

/// A running gossip member. Dropping it leaves the gossip loop running until
/// [`Membership::shutdown`].
pub struct Membership {
    handle: ChitchatHandle,
    live: watch::Receiver<Vec<NodeInfo>>,
    task: tokio::task::JoinHandle<()>,
}

const K_ID: &str = "id";
const K_REGION: &str = "region";
const K_AZ: &str = "az";
const K_ROLES: &str = "roles";
const K_RAFT: &str = "raft_addr";
const K_REGION_RAFT: &str = "region_raft_addr";
const K_API: &str = "api_addr";
const K_INGEST: &str = "ingest_addr";
const K_VERSION: &str = "version";
const K_AGENTS: &str = "load.agents";
const K_RPS: &str = "load.records_per_sec";
const K_DISK_USED: &str = "load.disk_used_bytes";
const K_DISK_FREE: &str = "load.disk_free_bytes";

fn load_kvs(load: &Load) -> [(&'static str, String); 4] {
    [
        (K_AGENTS, load.agents.to_string()),
        (K_RPS, format!("{:.1}", load.records_per_sec)),
        (K_DISK_USED, load.disk_used_bytes.to_string()),
        (K_DISK_FREE, load.disk_free_bytes.to_string()),
    ]
}

fn node_kvs(n: &NodeInfo) -> Vec<(String, String)> {
    let roles: Vec<&str> = n.roles.iter().map(|r| r.as_str()).collect();
    let mut kvs = vec![
        (K_ID.to_string(), n.id.to_string()),
        (K_REGION.to_string(), n.region.clone()),
        (K_AZ.to_string(), n.az.clone()),
        (K_ROLES.to_string(), roles.join(",")),
        (K_RAFT.to_string(), n.raft_addr.clone()),
        (K_REGION_RAFT.to_string(), n.region_raft_addr.clone()),
        (K_API.to_string(), n.api_addr.clone()),
        (K_INGEST.to_string(), n.ingest_addr.clone()),
        (K_VERSION.to_string(), n.version.clone()),
    ];
    kvs.extend(load_kvs(&n.load).into_iter().map(|(k, v)| (k.to_string(), v)));
    kvs
}

/// Rebuild a [`NodeInfo`] from gossiped state. Anything malformed or missing makes the
/// node invisible rather than half-known: another node's bugs must not crash this one.
pub fn parse_node(id: &ChitchatId, s: &NodeState) -> Option<NodeInfo> {
    let num = |k| s.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(NodeInfo {
        id: s.get(K_ID)?.parse().ok()?,
        region: s.get(K_REGION)?.to_string(),
        az: s.get(K_AZ)?.to_string(),
        roles: s.get(K_ROLES)?.split(',').filter_map(Role::parse).collect(),
        raft_addr: s.get(K_RAFT)?.to_string(),
        region_raft_addr: s.get(K_REGION_RAFT).unwrap_or_default().to_string(),
        api_addr: s.get(K_API).unwrap_or_default().to_string(),
        ingest_addr: s.get(K_INGEST).unwrap_or_default().to_string(),
        gossip_addr: id.gossip_advertise_addr,
        version: s.get(K_VERSION).unwrap_or_default().to_string(),
        load: Load {
            agents: num(K_AGENTS),
            records_per_sec: s.get(K_RPS).and_then(|v| v.parse().ok()).unwrap_or(0.0),
            disk_used_bytes: num(K_DISK_USED),
            disk_free_bytes: num(K_DISK_FREE),
        },
    })
}

fn to_infos(m: &BTreeMap<ChitchatId, NodeState>) -> Vec<NodeInfo> {
    // A restarted node may briefly appear under two generations: keep the newest.
    let mut by_id: BTreeMap<u64, (u64, NodeInfo)> = BTreeMap::new();
    for (cid, st) in m {
        if let Some(info) = parse_node(cid, st) {
            match by_id.get(&info.id) {
                Some((g, _)) if *g >= cid.generation_id => {}
                _ => {
                    by_id.insert(info.id, (cid.generation_id, info));
                }
            }
        }
    }
    by_id.into_values().map(|(_, i)| i).collect()
}

impl Membership {
    pub async fn start(config: MembershipConfig) -> Result<Membership, MembershipError> {
        let generation =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let chitchat_id =
            ChitchatId::new(config.node.id.to_string(), generation, config.node.gossip_addr);
        let failure_detector_config = FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            initial_interval: config.gossip_interval * 2,
            dead_node_grace_period: Duration::from_secs(24 * 3600),
            ..Default::default()
        };
        let cc = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.listen_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config,
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            // V0 until every node can decode V1 (see chitchat docs); a mixed-version cluster is normal during upgrades.
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let handle = spawn_chitchat(cc, node_kvs(&config.node), &UdpTransport)
            .await
            .map_err(|source| MembershipError::Start { addr: config.listen_addr, source })?;
        let mut raw = handle.chitchat().lock().await.live_nodes_watcher();
        let (tx, live) = watch::channel(to_infos(&raw.borrow_and_update()));
        let task = tokio::spawn(async move {
            while raw.changed().await.is_ok() {
                let infos = to_infos(&raw.borrow_and_update());
                tx.send_if_modified(|cur| {
                    let changed = *cur != infos;
                    *cur = infos;
                    changed
                });
            }
        });
        Ok(Membership { handle, live, task })
    }

    /// Live nodes, this one included, ordered by id.
    pub fn live_nodes(&self) -> Vec<NodeInfo> {
        self.live.borrow().clone()
    }

    /// Ids of nodes the failure detector has declared dead (and not seen again since).
    pub async fn dead_nodes(&self) -> Vec<u64> {
        let cc = self.handle.chitchat();
        let g = cc.lock().await;
        let live: Vec<u64> = self.live.borrow().iter().map(|n| n.id).collect();
        let mut dead: Vec<u64> = g
            .dead_nodes()
            .filter_map(|c| c.node_id.parse().ok())
            .filter(|id| !live.contains(id))
            .collect();
        dead.sort_unstable();
        dead.dedup();
        dead
    }

    /// Publish this node's load; peers see it within a few gossip rounds.
    pub async fn set_load(&self, load: Load) {
        let cc = self.handle.chitchat();
        let mut g = cc.lock().await;
        let me = g.self_node_state();
        for (k, v) in load_kvs(&load) {
            me.set(k, v);
        }
    }

    /// Changes to the live set or to any live node's key-values (not heartbeats).
    pub fn watch(&self) -> watch::Receiver<Vec<NodeInfo>> {
        self.live.clone()
    }

    pub fn chitchat(&self) -> Arc<tokio::sync::Mutex<chitchat::Chitchat>> {
        self.handle.chitchat()
    }

    pub async fn shutdown(self) {
        self.task.abort();
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!(error = %e, "gossip shutdown");
        }
    }
}
