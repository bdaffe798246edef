//! Ingest settings (the server's `[ingest]` section).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Agent data service address.
    pub listen: String,
    /// High-water marks (`<data_dir>/ingest`) and tag dictionaries (`<data_dir>/tags`).
    pub data_dir: PathBuf,
    /// Largest compressed payload accepted.
    pub max_batch_bytes: usize,
    /// Largest payload once decompressed (refuses zstd bombs).
    pub max_decompressed_bytes: usize,
    /// Batches decoded and waiting for a writer, per writer.
    pub queue_depth: usize,
    /// A writer stores the batches queued for it together, one insert per
    /// table, up to this many rows (the engine's cost per insert is large:
    /// fewer, larger inserts under load).
    pub group_max_rows: usize,
    /// Writer threads; an agent's batches always go to the same one.
    pub writers: usize,
    /// Agents allowed to push; empty = any (until enrollment assigns them).
    pub known_agents: Vec<String>,
    /// Region and AZ of the agents this node serves.
    pub region: String,
    pub az: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: "0.0.0.0:20033".into(),
            data_dir: PathBuf::from("/var/lib/fathom"),
            max_batch_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            queue_depth: 8,
            group_max_rows: 65_536,
            writers: 2,
            known_agents: Vec::new(),
            region: String::new(),
            az: String::new(),
        }
    }
}
