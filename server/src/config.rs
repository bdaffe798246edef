//! Server configuration: one TOML file, every key overridable by an
//! environment variable `FATHOM_SERVER_<SECTION>__<KEY>`.

use std::path::{Path, PathBuf};

use fathom_ingest::IngestConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub store: StoreSection,
    pub ingest: IngestConfig,
    pub query: QuerySection,
    pub cluster: ClusterSection,
    pub controller: ControllerSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `embedded` (ClickHouse in-process via chDB) or `clickhouse` (a server or cluster).
    pub backend: String,
    /// Where the embedded engine keeps its tables.
    pub data_dir: PathBuf,
    /// libchdb.so; empty = FATHOM_CHDB_LIB, FATHOM_CHDB_DIR, then /var/tmp/fathom-chdb.
    pub chdb_library: String,
    /// ClickHouse HTTP endpoint for the `clickhouse` backend.
    pub clickhouse_url: String,
    pub clickhouse_user: String,
    pub clickhouse_password: String,
    /// Days kept: logs, 1 s metrics, 1 min metrics.
    pub flow_log_days: u32,
    pub metrics_1s_days: u32,
    pub metrics_1m_days: u32,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: "embedded".into(),
            data_dir: PathBuf::from("/var/lib/fathom/store"),
            chdb_library: String::new(),
            clickhouse_url: "http://127.0.0.1:8123".into(),
            clickhouse_user: String::new(),
            clickhouse_password: String::new(),
            flow_log_days: 7,
            metrics_1s_days: 7,
            metrics_1m_days: 30,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySection {
    /// SQL API (`POST /v1/query`).
    pub listen: String,
}

impl Default for QuerySection {
    fn default() -> Self {
        QuerySection { listen: "0.0.0.0:20416".into() }
    }
}

/// This node's place in the cluster. The defaults make a one-node cluster that forms
/// by itself: node 1, bootstrap_expect 1, no seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Raft node id: unique in the cluster, non-zero, never reused.
    pub node_id: u64,
    pub region: String,
    pub az: String,
    /// What this node runs: controller (Raft voter candidate), ingest, query.
    pub roles: Vec<String>,
    /// Raft and internal RPC.
    pub raft_listen: String,
    /// How peers reach `raft_listen`; empty = raft_listen (127.0.0.1 if it is 0.0.0.0).
    pub raft_advertise: String,
    /// Gossip (UDP).
    pub gossip_listen: String,
    /// How peers reach `gossip_listen`; empty = gossip_listen (127.0.0.1 if 0.0.0.0).
    pub gossip_advertise: String,
    /// Gossip addresses (host:port) of a few existing members.
    pub seeds: Vec<String>,
    /// Controllers to wait for before forming a new cluster; 0 = never form one (join
    /// an existing cluster through `fathomctl node add`).
    pub bootstrap_expect: usize,
    /// Raft of this region's group (agents, tokens, tag ids of the region).
    pub region_raft_listen: String,
    /// How peers reach `region_raft_listen`; empty = region_raft_listen (127.0.0.1 if
    /// it is 0.0.0.0).
    pub region_raft_advertise: String,
    /// Controllers of this region to wait for before forming the region's group; 0 =
    /// join only (`fathomctl node add` from a node of the region).
    pub region_bootstrap_expect: usize,
    /// Raft log and snapshots; empty = `<ingest.data_dir>/cluster`.
    pub data_dir: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            node_id: 1,
            region: "default".into(),
            az: "default".into(),
            roles: vec!["controller".into(), "ingest".into(), "query".into()],
            raft_listen: "0.0.0.0:20040".into(),
            raft_advertise: String::new(),
            gossip_listen: "0.0.0.0:20041".into(),
            gossip_advertise: String::new(),
            seeds: Vec::new(),
            bootstrap_expect: 1,
            region_raft_listen: "0.0.0.0:20042".into(),
            region_raft_advertise: String::new(),
            region_bootstrap_expect: 1,
            data_dir: String::new(),
        }
    }
}

/// The controller: the control port (agent enrollment, heartbeats, config push and
/// fleet administration), the cluster CA and the certificates of every port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerSection {
    /// Agent control and fleet administration (gRPC over TLS).
    pub listen: String,
    /// How fathomctl and agents reach `listen`; empty = listen (127.0.0.1 if 0.0.0.0).
    pub advertise: String,
    /// More names and IPs agents, peers and fathomctl dial this node by; they go into
    /// the node certificate (the hosts of advertise and raft_advertise always do).
    pub cert_names: Vec<String>,
    /// The ingest address handed to agents at enrollment; empty = ingest.listen
    /// (127.0.0.1 if 0.0.0.0).
    pub ingest_addr: String,
    /// `ca.pem` + `ca.key` of the cluster CA; empty = `<ingest.data_dir>/ca`. Made on
    /// the first node; copy it to every other node before its first start.
    pub ca_dir: String,
    /// Where this node writes an admin bundle for fathomctl at start (ca.pem,
    /// admin.pem, admin.key); empty = `<ingest.data_dir>/admin`; "off" = none.
    pub admin_dir: String,
    /// Require agent certificates on the ingest port. false = plain gRPC, for tests
    /// that push hand-made batches; never in a real deployment.
    pub ingest_tls: bool,
    pub ca_ttl_days: u64,
    pub node_cert_ttl_days: u64,
    pub agent_cert_ttl_days: u64,
    pub admin_cert_ttl_days: u64,
    pub heartbeat_interval_secs: u64,
    pub heartbeat_flush_ms: u64,
    pub lost_after_secs: u64,
    pub lost_check_interval_secs: u64,
}

impl Default for ControllerSection {
    fn default() -> Self {
        ControllerSection {
            listen: "0.0.0.0:20035".into(),
            advertise: String::new(),
            cert_names: Vec::new(),
            ingest_addr: String::new(),
            ca_dir: String::new(),
            admin_dir: String::new(),
            ingest_tls: true,
            ca_ttl_days: 3650,
            node_cert_ttl_days: 90,
            agent_cert_ttl_days: 30,
            admin_cert_ttl_days: 365,
            heartbeat_interval_secs: 10,
            heartbeat_flush_ms: 1000,
            lost_after_secs: 60,
            lost_check_interval_secs: 5,
        }
    }
}

/// `addr` as others should dial it: an unspecified host (0.0.0.0, ::) becomes loopback.
pub fn advertised(listen: &str, advertise: &str) -> String {
    if !advertise.is_empty() {
        return advertise.to_string();
    }
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip: std::net::IpAddr = if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(ip, a.port()).to_string()
        }
        _ => listen.to_string(),
    }
}

pub const KEYS_HELP: &str = "\
Configuration (TOML file; each key also FATHOM_SERVER_<SECTION>__<KEY>):
  [store]
    backend = \"embedded\"        embedded (chDB in-process) or clickhouse
    data_dir = \"/var/lib/fathom/store\"  embedded tables
    chdb_library = \"\"           libchdb.so path; empty = FATHOM_CHDB_LIB / FATHOM_CHDB_DIR / /var/tmp/fathom-chdb
    clickhouse_url = \"http://127.0.0.1:8123\"  for backend = clickhouse
    clickhouse_user = \"\"
    clickhouse_password = \"\"
    flow_log_days = 7           retention of flow logs
    metrics_1s_days = 7         retention of 1 s metrics
    metrics_1m_days = 30        retention of 1 min metrics
  [ingest]
    listen = \"0.0.0.0:20033\"    agent data (gRPC)
    data_dir = \"/var/lib/fathom\"  tag dictionaries, batch high-water marks, insert-group journals
    max_batch_bytes = 16777216  largest compressed batch accepted
    max_decompressed_bytes = 67108864  largest batch once decompressed
    queue_depth = 8             batches waiting per writer
    group_max_rows = 65536      a writer stores its queued batches together, up to this many rows
    writers = 2                 writer tasks
    known_agents = []           agents allowed to push; empty = any
    region = \"\"                 region of this node's agents
    az = \"\"                     AZ of this node's agents
  [query]
    listen = \"0.0.0.0:20416\"    SQL API: POST /v1/query; Prometheus /metrics
  [cluster]                     defaults: a one-node cluster that forms by itself
    node_id = 1                 Raft node id: unique, non-zero, never reused
    region = \"default\"          this node's region
    az = \"default\"              this node's availability zone
    roles = [\"controller\", \"ingest\", \"query\"]  controller = Raft voter candidate
    raft_listen = \"0.0.0.0:20040\"  Raft and internal RPC (TCP)
    raft_advertise = \"\"         how peers reach raft_listen; empty = raft_listen (0.0.0.0 -> 127.0.0.1)
    gossip_listen = \"0.0.0.0:20041\"  gossip (UDP)
    gossip_advertise = \"\"       how peers reach gossip_listen; empty = gossip_listen (0.0.0.0 -> 127.0.0.1)
    seeds = []                  gossip host:port of a few members, e.g. [\"10.0.0.1:20041\"]
    bootstrap_expect = 1        controllers to wait for before forming a new cluster; 0 = join only
    region_raft_listen = \"0.0.0.0:20042\"  Raft of this region's group (TCP): agents, tokens, tag ids
    region_raft_advertise = \"\"  how peers reach region_raft_listen; empty = region_raft_listen (0.0.0.0 -> 127.0.0.1)
    region_bootstrap_expect = 1  controllers of this region to wait for before forming its group; 0 = join only
    data_dir = \"\"               Raft log and snapshots (the region group's in region-<name>); empty = <ingest.data_dir>/cluster
  [controller]                  control port, cluster CA, certificates (mTLS on every port)
    listen = \"0.0.0.0:20035\"    agent enrollment and control, fleet administration (gRPC, TLS; fathomctl)
    advertise = \"\"              how fathomctl and agents reach it; empty = listen (0.0.0.0 -> 127.0.0.1)
    cert_names = []             more DNS names / IPs for the node certificate (hosts of advertise and raft_advertise are in it)
    ingest_addr = \"\"            ingest host:port given to agents at enrollment; empty = ingest.listen (0.0.0.0 -> 127.0.0.1)
    ca_dir = \"\"                 cluster CA (ca.pem, ca.key 0600); empty = <ingest.data_dir>/ca; made on first start, copy to every other node before its first start
    admin_dir = \"\"              admin bundle for fathomctl written at start (ca.pem, admin.pem, admin.key); empty = <ingest.data_dir>/admin; \"off\" = none
    ingest_tls = true           require agent certificates on the ingest port; false = plain gRPC (tests only)
    ca_ttl_days = 3650          lifetime of a new cluster CA
    node_cert_ttl_days = 90     node certificates, issued at each start
    agent_cert_ttl_days = 30    agent certificates (renewed after two thirds)
    admin_cert_ttl_days = 365   admin certificates
    heartbeat_interval_secs = 10  how often agents beat
    heartbeat_flush_ms = 1000   beats are written to Raft in one entry per this interval
    lost_after_secs = 60        an agent silent this long is marked Lost
    lost_check_interval_secs = 5  how often silence is checked
";

impl ServerConfig {
    pub fn load(file: Option<&Path>) -> Result<ServerConfig, String> {
        let mut fig = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("FATHOM_SERVER_").split("__"));
        fig.extract().map_err(|e| format!("invalid configuration: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_every_key() {
        let v = serde_json::to_value(ServerConfig::default()).unwrap();
        for (section, keys) in v.as_object().unwrap() {
            assert!(KEYS_HELP.contains(&format!("[{section}]")), "section {section}");
            for key in keys.as_object().unwrap().keys() {
                assert!(KEYS_HELP.contains(&format!("    {key} =")), "key {section}.{key}");
            }
        }
    }
}
