//! This node's cluster member: the `[cluster]` section turned into a running
//! `fathom_cluster::Cluster` (gossip + Raft metadata).

use std::net::SocketAddr;
use std::path::PathBuf;

use fathom_cluster::{
    ClusterConfig, Load, MembershipConfig, MetaConfig, NodeInfo, RegionGroupConfig, Role,
};

use crate::config::{advertised, ServerConfig};

fn addr(key: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse().map_err(|e| format!("cluster.{key} = {v:?}: want ip:port ({e})"))
}

pub fn cluster_config(cfg: &ServerConfig) -> Result<ClusterConfig, String> {
    let c = &cfg.cluster;
    if c.node_id == 0 {
        return Err("cluster.node_id must be non-zero".into());
    }
    let mut roles = Vec::new();
    for r in &c.roles {
        roles.push(Role::parse(r).ok_or_else(|| {
            format!("cluster.roles: unknown role {r:?} (use controller, ingest, query)")
        })?);
    }
    fathom_regions::check_name("region", &c.region).map_err(|e| format!("cluster.region: {e}"))?;
    let raft_listen = addr("raft_listen", &c.raft_listen)?;
    let gossip_listen = addr("gossip_listen", &c.gossip_listen)?;
    let gossip_advertise =
        addr("gossip_advertise", &advertised(&c.gossip_listen, &c.gossip_advertise))?;
    let data_dir = if c.data_dir.is_empty() {
        cfg.ingest.data_dir.join("cluster")
    } else {
        PathBuf::from(&c.data_dir)
    };
    let raft_advertise = advertised(&c.raft_listen, &c.raft_advertise);
    let region_listen = addr("region_raft_listen", &c.region_raft_listen)?;
    let region_advertise = advertised(&c.region_raft_listen, &c.region_raft_advertise);
    if region_listen == raft_listen {
        return Err("cluster.region_raft_listen must differ from cluster.raft_listen".into());
    }
    let mut meta = MetaConfig::new(c.node_id, raft_listen, &data_dir);
    meta.advertise_addr = raft_advertise.clone();
    // The region group: same node id and TLS, its own port and directory.
    let mut region_meta =
        MetaConfig::new(c.node_id, region_listen, data_dir.join(format!("region-{}", c.region)));
    region_meta.advertise_addr = region_advertise.clone();
    let node = NodeInfo {
        id: c.node_id,
        region: c.region.clone(),
        az: c.az.clone(),
        roles,
        raft_addr: raft_advertise,
        region_raft_addr: region_advertise,
        api_addr: advertised(&cfg.controller.listen, &cfg.controller.advertise),
        ingest_addr: crate::controller::ingest_addr(cfg),
        gossip_addr: gossip_advertise,
        version: env!("CARGO_PKG_VERSION").to_string(),
        load: Load::default(),
    };
    let mut membership = MembershipConfig::new(node, c.seeds.clone());
    membership.listen_addr = gossip_listen;
    Ok(ClusterConfig {
        meta,
        membership,
        bootstrap_expect: c.bootstrap_expect,
        region: Some(RegionGroupConfig {
            meta: region_meta,
            bootstrap_expect: c.region_bootstrap_expect,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_one_node_cluster_under_the_data_dir() {
        let cfg = ServerConfig::default();
        let cc = cluster_config(&cfg).unwrap();
        assert_eq!(cc.bootstrap_expect, 1);
        assert_eq!(cc.meta.data_dir, cfg.ingest.data_dir.join("cluster"));
        assert_eq!(cc.meta.advertise_addr, "127.0.0.1:20040");
        assert_eq!(cc.membership.node.gossip_addr.to_string(), "127.0.0.1:20041");
        assert_eq!(cc.membership.listen_addr.to_string(), "0.0.0.0:20041");
        assert_eq!(cc.membership.node.api_addr, "127.0.0.1:20035");
        let region = cc.region.unwrap();
        assert_eq!(region.meta.data_dir, cfg.ingest.data_dir.join("cluster/region-default"));
        assert_eq!(region.meta.listen_addr.to_string(), "0.0.0.0:20042");
        assert_eq!(cc.membership.node.region_raft_addr, "127.0.0.1:20042");
        assert_eq!(region.bootstrap_expect, 1);
    }

    #[test]
    fn bad_values_are_named() {
        let mut cfg = ServerConfig::default();
        cfg.cluster.roles = vec!["chef".into()];
        assert!(cluster_config(&cfg).unwrap_err().contains("chef"));
        let mut cfg = ServerConfig::default();
        cfg.cluster.raft_listen = "nowhere".into();
        assert!(cluster_config(&cfg).unwrap_err().contains("raft_listen"));
        let mut cfg = ServerConfig::default();
        cfg.cluster.node_id = 0;
        assert!(cluster_config(&cfg).is_err());
    }
}
