//! Agent configuration: one TOML file, every key overridable by an
//! environment variable `FATHOM_AGENT_<SECTION>__<KEY>` (double underscore
//! between section and key), e.g. `FATHOM_AGENT_FLOW__MAX_FLOWS=200000`.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub capture: CaptureSection,
    pub flow: FlowSection,
    pub output: OutputSection,
    pub http: HttpSection,
    pub sender: crate::sender::SenderConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureSection {
    /// Interfaces to capture with AF_PACKET; empty = every interface that is up, `lo` included.
    pub interfaces: Vec<String>,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    /// TPACKET_V3 ring: bytes per block and blocks per interface.
    pub ring_block_size: u32,
    pub ring_block_count: u32,
    /// A block is handed over after this long even when not full, so quiet links still report.
    pub retire_timeout_ms: u32,
    /// Ports never captured (e.g. the agent's own connection to the server).
    pub exclude_ports: Vec<u16>,
}

impl Default for CaptureSection {
    fn default() -> Self {
        CaptureSection {
            interfaces: Vec::new(),
            snaplen: 65535,
            ring_block_size: 1 << 20,
            ring_block_count: 32,
            retire_timeout_ms: 50,
            exclude_ports: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowSection {
    /// Flow shards (one actor each); 0 = one per CPU.
    pub shards: usize,
    /// Flows tracked at once across all shards; the least recently seen is evicted beyond it.
    pub max_flows: usize,
    /// Bytes buffered per flow direction while a message is incomplete.
    pub max_buffer_per_direction: usize,
    /// A request without a response for this long is reported as a timeout.
    pub l7_timeout_ms: u64,
    /// Idle time after which a TCP / UDP flow is closed.
    pub tcp_idle_timeout_s: u64,
    pub udp_idle_timeout_s: u64,
    /// Long flows report an L4 record this often even when still open.
    pub flow_report_interval_s: u64,
}

impl Default for FlowSection {
    fn default() -> Self {
        FlowSection {
            shards: 0,
            max_flows: 100_000,
            max_buffer_per_direction: 16 * 1024,
            l7_timeout_ms: 10_000,
            tcp_idle_timeout_s: 300,
            udp_idle_timeout_s: 30,
            flow_report_interval_s: 60,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputSection {
    /// `json` writes newline-delimited JSON records to `path`; `server`
    /// sends them to `[sender] server`; `both` does both.
    pub format: String,
    /// Where to write: `-` for stdout, or a file path.
    pub path: String,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection { format: "json".into(), path: "-".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Local endpoint: the agent's own Prometheus `/metrics`.
    pub listen: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection { listen: "127.0.0.1:38086".into() }
    }
}

/// Every key with its default and meaning, for `--help`.
pub const KEYS_HELP: &str = "\
Configuration (TOML file; each key also FATHOM_AGENT_<SECTION>__<KEY>):
  [capture]
    interfaces = []            AF_PACKET interfaces; empty = all that are up, lo included
    snaplen = 65535            bytes kept of each packet
    ring_block_size = 1048576  TPACKET_V3 block size (bytes)
    ring_block_count = 32      blocks per interface ring
    retire_timeout_ms = 50     hand over a partly filled block after this long
    exclude_ports = []         ports never captured
  [flow]
    shards = 0                 flow shard actors; 0 = one per CPU
    max_flows = 100000         flows tracked at once; least recently seen evicted beyond
    max_buffer_per_direction = 16384  bytes buffered per direction for incomplete messages
    l7_timeout_ms = 10000      unanswered requests reported as timeouts after this
    tcp_idle_timeout_s = 300   idle TCP flows closed after this
    udp_idle_timeout_s = 30    idle UDP flows closed after this
    flow_report_interval_s = 60  long flows report L4 records this often
  [output]
    format = \"json\"            json (NDJSON to path), server ([sender]) or both
    path = \"-\"                 '-' = stdout, else a file
  [http]
    listen = \"127.0.0.1:38086\" serves /metrics (the agent's own Prometheus metrics)
  [sender]                     used when output.format is server or both
    server = \"\"                the server's data service, host:port (e.g. \"fathom:20033\")
    agent_id = \"\"              this agent's identity at the server; empty = host name
    spool_dir = \"/var/lib/fathom-agent/spool\"  unacknowledged batches, kept across restarts
    spool_max_bytes = 1073741824  spool bound; the oldest batches are dropped beyond it
    spool_fsync = true         fsync each spooled batch before it counts as kept
    batch_max_records = 8192   a batch is cut at this many records,
    batch_max_bytes = 4194304  or this many encoded bytes,
    batch_linger_ms = 1000     or this long after its first record
    zstd_level = 3             batch compression level (1..19)
    queue_capacity = 65536     records queued for the batcher; more are dropped and counted
    request_timeout_ms = 30000 deadline of one push to the server
    max_backoff_ms = 5000      longest wait between retries
";

impl AgentConfig {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<AgentConfig, String> {
        let mut fig = Figment::from(Serialized::defaults(AgentConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("FATHOM_AGENT_").split("__"));
        fig.extract().map_err(|e| format!("invalid configuration: {e}"))
    }
}

#[cfg(test)]
// figment's Jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_and_env_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "agent.toml",
                "[flow]\nmax_flows = 5000\n[capture]\ninterfaces = [\"lo\"]\n",
            )?;
            jail.set_env("FATHOM_AGENT_FLOW__L7_TIMEOUT_MS", "2500");
            let c = AgentConfig::load(Some(Path::new("agent.toml"))).unwrap();
            assert_eq!(c.flow.max_flows, 5000);
            assert_eq!(c.flow.l7_timeout_ms, 2500);
            assert_eq!(c.capture.interfaces, vec!["lo".to_string()]);
            assert_eq!(c.output.path, "-");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[flow]\nmax_flowz = 1\n")?;
            let e = AgentConfig::load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(e.contains("max_flowz"), "{e}");
            jail.create_file("bad2.toml", "[flow]\nmax_flows = \"many\"\n")?;
            let e = AgentConfig::load(Some(Path::new("bad2.toml"))).unwrap_err();
            assert!(e.contains("max_flows"), "{e}");
            let e = AgentConfig::load(Some(Path::new("missing.toml"))).unwrap_err();
            assert!(e.contains("does not exist"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn help_names_every_key() {
        let v = serde_json::to_value(AgentConfig::default()).unwrap();
        for (section, keys) in v.as_object().unwrap() {
            assert!(KEYS_HELP.contains(&format!("[{section}]")), "section {section}");
            for key in keys.as_object().unwrap().keys() {
                assert!(KEYS_HELP.contains(&format!("    {key} =")), "key {section}.{key}");
            }
        }
    }
}
