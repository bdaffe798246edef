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
    data_dir = \"/var/lib/fathom\"  tag dictionaries and batch high-water marks
    max_batch_bytes = 16777216  largest compressed batch accepted
    max_decompressed_bytes = 67108864  largest batch once decompressed
    queue_depth = 4             batches waiting per writer
    writers = 2                 writer tasks
    known_agents = []           agents allowed to push; empty = any
    region = \"\"                 region of this node's agents
    az = \"\"                     AZ of this node's agents
  [query]
    listen = \"0.0.0.0:20416\"    SQL API: POST /v1/query; Prometheus /metrics
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
