//! A server node's cluster layer: gossip membership plus the Raft metadata member, and
//! the bootstrap that turns a seed list into a cluster.
//!
//! Bootstrap: every node starts gossiping; once `bootstrap_expect` controller nodes are
//! live, the one with the lowest id initializes Raft with all live controllers as voters.
//! The others are brought in by the new leader's replication. A node with Raft state on
//! disk never bootstraps again, so restarts and late joiners cannot split the cluster;
//! later nodes join through `add_learner` + `promote` (driven by fathomctl).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::membership::{Membership, MembershipConfig, MembershipError, Role};
use crate::node::{MetaConfig, MetaError, MetaNode};
use crate::state::{Command, NodeRecord};

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub meta: MetaConfig,
    pub membership: MembershipConfig,
    /// Number of controller nodes to wait for before forming a new cluster.
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
    pub meta: MetaNode,
    pub membership: std::sync::Arc<Membership>,
    bootstrap: tokio::task::JoinHandle<()>,
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
        let meta = MetaNode::start_with_tls(config.meta.clone(), transport, server_tls).await?;
        let membership = std::sync::Arc::new(Membership::start(config.membership.clone()).await?);
        let bootstrap = tokio::spawn(bootstrap(
            meta.clone(),
            membership.clone(),
            config.bootstrap_expect,
            config.membership.node.clone(),
        ));
        Ok(Cluster { meta, membership, bootstrap })
    }

    pub async fn shutdown(self) -> Result<(), ClusterError> {
        self.bootstrap.abort();
        let res = self.meta.shutdown().await;
        if let Ok(m) = std::sync::Arc::try_unwrap(self.membership) {
            m.shutdown().await;
        }
        Ok(res?)
    }
}

async fn bootstrap(
    meta: MetaNode,
    membership: std::sync::Arc<Membership>,
    expect: usize,
    me: crate::membership::NodeInfo,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tick.tick().await;
        match meta.is_initialized().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "raft stopped before bootstrap");
                return;
            }
        }
        if expect == 0 {
            continue;
        }
        let controllers: BTreeMap<u64, String> = membership
            .live_nodes()
            .into_iter()
            .filter(|n| n.roles.contains(&Role::Controller))
            .map(|n| (n.id, n.raft_addr))
            .collect();
        if controllers.len() >= expect && controllers.keys().next() == Some(&meta.id()) {
            tracing::info!(voters = ?controllers.keys().collect::<Vec<_>>(), "forming the cluster");
            if let Err(e) = meta.initialize(controllers).await {
                tracing::warn!(error = %e, "bootstrap failed; retrying");
            }
        }
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
