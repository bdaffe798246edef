//! A server node's cluster layer: gossip membership plus the Raft metadata member, and
//! the bootstrap that turns a seed list into a cluster.
//!
//! Bootstrap: every node starts gossiping; once `bootstrap_expect` controller nodes are
//! live, the one with the lowest id initializes Raft with all live controllers as voters.
//! The others are brought in by the new leader's replication. A node with Raft state on
//! disk never bootstraps again, so restarts and late joiners cannot split the cluster;
//! later nodes join through `add_learner` + `promote` (driven by fathomctl).
//!
//! The region group (when configured) bootstraps the same way among the live
//! controllers of this node's region only, with its own expected count. Once formed,
//! it learns which region it serves and that region's tag id range from the global
//! group (`AssignRegionNumber`, once per region), after which it needs the global group
//! no more.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::membership::{Membership, MembershipConfig, MembershipError, Role};
use crate::node::{MetaConfig, MetaError, MetaNode};
use crate::router::MetaRouter;
use crate::state::{Command, NodeRecord, RegionGroup, Response};

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub meta: MetaConfig,
    pub membership: MembershipConfig,
    /// Number of controller nodes to wait for before forming a new cluster.
    pub bootstrap_expect: usize,
    /// This node's member of its region's group; None = everything in the global group.
    pub region: Option<RegionGroupConfig>,
}

/// The region group's member on this node (its own port and data directory; gossip
/// must advertise its address as `NodeInfo::region_raft_addr`).
#[derive(Debug, Clone)]
pub struct RegionGroupConfig {
    pub meta: MetaConfig,
    /// Controllers of this region to wait for before forming the region's group.
    pub bootstrap_expect: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

pub struct Cluster {
    /// The global group's member.
    pub meta: MetaNode,
    /// The region group's member, when configured.
    pub region: Option<MetaNode>,
    pub membership: std::sync::Arc<Membership>,
    region_name: String,
    bootstrap: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    pub async fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        Self::start_with_tls(config, crate::network::Transport::plain(), None).await
    }

    /// [`start`](Self::start) with the Raft endpoint and its client over mTLS (the
    /// controller's `NodeTls` gives both configs).
    pub async fn start_with_tls(
        config: ClusterConfig,
        transport: crate::network::Transport,
        server_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> Result<Cluster, ClusterError> {
        let meta =
            MetaNode::start_with_tls(config.meta.clone(), transport.clone(), server_tls.clone())
                .await?;
        let region = match &config.region {
            Some(r) => {
                match MetaNode::start_with_tls(r.meta.clone(), transport, server_tls).await {
                    Ok(m) => Some(m),
                    Err(e) => {
                        let _ = meta.shutdown().await;
                        return Err(e.into());
                    }
                }
            }
            None => None,
        };
        let membership = match Membership::start(config.membership.clone()).await {
            Ok(m) => std::sync::Arc::new(m),
            Err(e) => {
                let _ = meta.shutdown().await;
                if let Some(r) = &region {
                    let _ = r.shutdown().await;
                }
                return Err(e.into());
            }
        };
        let me = config.membership.node.clone();
        let mut tasks = vec![tokio::spawn(bootstrap(
            meta.clone(),
            membership.clone(),
            config.bootstrap_expect,
            me.clone(),
        ))];
        if let (Some(r), Some(cfg)) = (&region, &config.region) {
            tasks.push(tokio::spawn(bootstrap_region(
                meta.clone(),
                r.clone(),
                membership.clone(),
                cfg.bootstrap_expect,
                me,
            )));
        }
        let region_name = config.membership.node.region.clone();
        Ok(Cluster { meta, region, membership, region_name, bootstrap: tasks })
    }

    /// Where this node sends each metadata command (see [`MetaRouter`]).
    pub fn router(&self) -> MetaRouter {
        match &self.region {
            Some(r) => MetaRouter::with_region(self.meta.clone(), &self.region_name, r.clone()),
            None => MetaRouter::global_only(self.meta.clone()),
        }
    }

    pub async fn shutdown(self) -> Result<(), ClusterError> {
        for t in &self.bootstrap {
            t.abort();
        }
        if let Some(r) = &self.region {
            if let Err(e) = r.shutdown().await {
                tracing::warn!(error = %e, "region group shutdown");
            }
        }
        let res = self.meta.shutdown().await;
        if let Ok(m) = std::sync::Arc::try_unwrap(self.membership) {
            m.shutdown().await;
        }
        Ok(res?)
    }
}

/// Waits until `meta`'s group is initialized; once `expect` live members (those
/// `member` gives a Raft address for) are seen and this node has the lowest id, it
/// initializes the group with them. False when Raft stopped first.
async fn form_group(
    meta: &MetaNode,
    membership: &Membership,
    expect: usize,
    what: &str,
    member: impl Fn(&crate::membership::NodeInfo) -> Option<String>,
) -> bool {
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tick.tick().await;
        match meta.is_initialized().await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, group = what, "raft stopped before bootstrap");
                return false;
            }
        }
        if expect == 0 {
            continue;
        }
        let voters: BTreeMap<u64, String> =
            membership.live_nodes().iter().filter_map(|n| Some((n.id, member(n)?))).collect();
        if voters.len() >= expect && voters.keys().next() == Some(&meta.id()) {
            tracing::info!(group = what, voters = ?voters.keys().collect::<Vec<_>>(), "forming");
            if let Err(e) = meta.initialize(voters).await {
                tracing::warn!(error = %e, group = what, "bootstrap failed; retrying");
            }
        }
    }
}

async fn bootstrap(
    meta: MetaNode,
    membership: std::sync::Arc<Membership>,
    expect: usize,
    me: crate::membership::NodeInfo,
) {
    let controllers = |n: &crate::membership::NodeInfo| {
        n.roles.contains(&Role::Controller).then(|| n.raft_addr.clone())
    };
    if !form_group(&meta, &membership, expect, "the cluster", controllers).await {
        return;
    }
    // Record this node in the metadata (forwarded to the leader), retrying through
    // elections: placement reads the node table, not gossip alone.
    let record = NodeRecord {
        id: me.id,
        region: me.region,
        az: me.az,
        roles: me.roles.iter().map(|r| r.as_str().to_string()).collect(),
        raft_addr: me.raft_addr,
        drained: false,
    };
    loop {
        // An operator's drain outlives restarts: keep the recorded flag.
        let (known, drained) = meta.read(|s| match s.nodes.get(&record.id) {
            Some(n) => (NodeRecord { drained: n.drained, ..record.clone() } == *n, n.drained),
            None => (false, false),
        });
        if known {
            break;
        }
        let record = NodeRecord { drained, ..record.clone() };
        match meta.write(Command::UpsertNode(record)).await {
            Ok(_) => break,
            Err(e) => {
                tracing::debug!(error = %e, "registering node; will retry");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Forms this region's group among the live controllers of the region (like
/// [`bootstrap`], filtered by region), then tells it which region it serves.
async fn bootstrap_region(
    global: MetaNode,
    region: MetaNode,
    membership: std::sync::Arc<Membership>,
    expect: usize,
    me: crate::membership::NodeInfo,
) {
    let controllers = |n: &crate::membership::NodeInfo| {
        (n.roles.contains(&Role::Controller)
            && n.region == me.region
            && !n.region_raft_addr.is_empty())
        .then(|| n.region_raft_addr.clone())
    };
    let what = format!("the group of region {}", me.region);
    if !form_group(&region, &membership, expect, &what, controllers).await {
        return;
    }
    // The region's number (its tag id range) comes from the global group, once.
    loop {
        if region.read(|s| s.region_group.is_some()) {
            return;
        }
        let known = global.read(|s| s.region_numbers.get(&me.region).copied());
        let number = match known {
            Some(n) => Ok(n),
            None => {
                match global.write(Command::AssignRegionNumber { region: me.region.clone() }).await
                {
                    Ok(Response::RegionNumber { number }) => Ok(number),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let res = match number {
            Ok(number) => {
                // The first region takes over the region data from before sharding;
                // read it from an up-to-date replica.
                let carried = match number {
                    0 => global.read_linearizable(|s| crate::router::carried_data(0, s)).await,
                    n => Ok(global.read(|s| crate::router::carried_data(n, s))),
                };
                let group = RegionGroup { region: me.region.clone(), number };
                match carried {
                    Ok(carried) => {
                        match region.write(Command::InitRegionGroup { group, carried }).await {
                            Ok(Response::Ok) => Ok(()),
                            Ok(other) => {
                                tracing::error!(answer = ?other, "region group serves another region");
                                return;
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "naming the region group; will retry");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
