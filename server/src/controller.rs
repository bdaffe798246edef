//! This node's controller: the `[controller]` section turned into the cluster CA and
//! node certificate (before Raft starts), the `ControlPlane` (once Raft has a leader)
//! and the TLS settings of the Raft, control and ingest ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fathom_controller::{ControlConfig, NodeTls};

use crate::config::{advertised, ServerConfig};

const DAY: u64 = 86_400;

/// The host of `host:port` (IPv6 brackets removed), or the whole string.
fn host_of(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).to_string(),
    }
}

/// The names and addresses in this node's certificate: how agents, peers and fathomctl
/// dial it.
pub fn cert_names(cfg: &ServerConfig) -> Vec<String> {
    let c = &cfg.controller;
    let mut names = vec![
        host_of(&advertised(&c.listen, &c.advertise)),
        host_of(&advertised(&cfg.cluster.raft_listen, &cfg.cluster.raft_advertise)),
    ];
    names.extend(c.cert_names.iter().cloned());
    names.sort();
    names.dedup();
    names
}

pub fn ca_dir(cfg: &ServerConfig) -> PathBuf {
    match cfg.controller.ca_dir.as_str() {
        "" => cfg.ingest.data_dir.join("ca"),
        d => PathBuf::from(d),
    }
}

/// Where the admin bundle for fathomctl goes; None when turned off.
pub fn admin_dir(cfg: &ServerConfig) -> Option<PathBuf> {
    match cfg.controller.admin_dir.as_str() {
        "off" => None,
        "" => Some(cfg.ingest.data_dir.join("admin")),
        d => Some(PathBuf::from(d)),
    }
}

/// The CA from `ca_dir` (made there on the very first start) and a fresh node
/// certificate: what the Raft port needs before the metadata exists.
pub fn node_tls(cfg: &ServerConfig) -> Result<NodeTls, String> {
    let c = &cfg.controller;
    let dir = ca_dir(cfg);
    NodeTls::load_or_create(
        &dir,
        cfg.cluster.node_id,
        &cert_names(cfg),
        Duration::from_secs(c.ca_ttl_days * DAY),
        Duration::from_secs(c.node_cert_ttl_days * DAY),
    )
    .map_err(|e| format!("cluster CA in {}: {e}", dir.display()))
}

/// The ingest address agents of this node push to: given at enrollment and gossiped,
/// so heartbeats can send agents placed on this node here.
pub fn ingest_addr(cfg: &ServerConfig) -> String {
    match cfg.controller.ingest_addr.as_str() {
        "" => advertised(&cfg.ingest.listen, ""),
        a => a.to_string(),
    }
}

pub fn control_config(cfg: &ServerConfig) -> Result<ControlConfig, String> {
    let c = &cfg.controller;
    let listen = c
        .listen
        .parse()
        .map_err(|e| format!("controller.listen = {:?}: want ip:port ({e})", c.listen))?;
    Ok(ControlConfig {
        listen,
        advertise: cert_names(cfg),
        ingest_addr: ingest_addr(cfg),
        ca_ttl: Duration::from_secs(c.ca_ttl_days * DAY),
        agent_cert_ttl: Duration::from_secs(c.agent_cert_ttl_days * DAY),
        node_cert_ttl: Duration::from_secs(c.node_cert_ttl_days * DAY),
        admin_cert_ttl: Duration::from_secs(c.admin_cert_ttl_days * DAY),
        heartbeat_interval: Duration::from_secs(c.heartbeat_interval_secs.max(1)),
        heartbeat_flush: Duration::from_millis(c.heartbeat_flush_ms.max(10)),
        lost_after: Duration::from_secs(c.lost_after_secs.max(1)),
        lost_check_interval: Duration::from_secs(c.lost_check_interval_secs.max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_put_the_ca_and_admin_bundle_under_the_data_dir() {
        let cfg = ServerConfig::default();
        assert_eq!(ca_dir(&cfg), cfg.ingest.data_dir.join("ca"));
        assert_eq!(admin_dir(&cfg), Some(cfg.ingest.data_dir.join("admin")));
        assert_eq!(cert_names(&cfg), ["127.0.0.1"]);
        let cc = control_config(&cfg).unwrap();
        assert_eq!(cc.ingest_addr, "127.0.0.1:20033");
        assert_eq!(cc.listen.port(), 20035);
    }

    #[test]
    fn advertised_hosts_go_into_the_certificate() {
        let mut cfg = ServerConfig::default();
        cfg.controller.advertise = "fathom.example:20035".into();
        cfg.cluster.raft_advertise = "[fd00::1]:20040".into();
        cfg.controller.cert_names = vec!["10.0.0.1".into()];
        assert_eq!(cert_names(&cfg), ["10.0.0.1", "fathom.example", "fd00::1"]);
        cfg.controller.admin_dir = "off".into();
        assert_eq!(admin_dir(&cfg), None);
    }
}
