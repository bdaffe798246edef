//! Agent configuration: one TOML file, every key overridable by an
//! environment variable `FATHOM_AGENT_<SECTION>__<KEY>` (double underscore
//! between section and key), e.g. `FATHOM_AGENT_FLOW__MAX_FLOWS=200000`.
//!
//! An enrolled agent also runs with its pool's config, pushed by the controller and
//! kept in `<cert_dir>/pushed-config.json`: a TOML overlay with the same keys, applied
//! over the file and under the environment (defaults < file < pool < environment <
//! command line), so a host's explicit overrides stay in force.

use std::path::{Path, PathBuf};

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
    /// Interfaces to capture with AF_PACKET; empty = every interface that is up
    /// (`lo` too when eBPF is off: with it, local processes are seen by eBPF).
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
    /// Capture packets with AF_PACKET at all (false: eBPF only).
    pub afpacket: bool,
    /// The eBPF source: socket syscalls and OpenSSL plaintext, with process identity.
    pub ebpf: EbpfMode,
    /// Bytes of each socket message the eBPF programs copy (0..=4096).
    pub ebpf_capture_bytes: u32,
}

/// Whether to load the eBPF programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EbpfMode {
    /// Load them when possible (root or CAP_BPF+CAP_PERFMON, kernel BTF);
    /// when not, warn with the reason and run on packets alone.
    #[default]
    Auto,
    /// Never load them.
    Off,
    /// Load them or refuse to start.
    Required,
}

impl EbpfMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EbpfMode::Auto => "auto",
            EbpfMode::Off => "off",
            EbpfMode::Required => "required",
        }
    }
}

impl Serialize for EbpfMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `true`/`false` are accepted for `auto`/`off`, so `ebpf = false` reads naturally.
impl<'de> Deserialize<'de> for EbpfMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EbpfMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"auto\", \"off\", \"required\", true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<EbpfMode, E> {
                Ok(if v { EbpfMode::Auto } else { EbpfMode::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EbpfMode, E> {
                match v.to_ascii_lowercase().as_str() {
                    "auto" | "true" | "on" => Ok(EbpfMode::Auto),
                    "off" | "false" => Ok(EbpfMode::Off),
                    "required" => Ok(EbpfMode::Required),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
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
            afpacket: true,
            ebpf: EbpfMode::Auto,
            ebpf_capture_bytes: 1024,
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
    /// With eBPF on, packet L7 records of flows with a local end wait this
    /// long for eBPF to cover the connection (then they are dropped as
    /// duplicates) before they are emitted.
    pub ebpf_merge_window_ms: u64,
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
            ebpf_merge_window_ms: 1000,
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
Configuration (TOML file; each key also FATHOM_AGENT_<SECTION>__<KEY>).
Precedence: defaults < file < pool config pushed by the controller (kept in
<cert_dir>/pushed-config.json; may not set sender.agent_id, cert_dir, spool_dir,
control_addr, enroll_token or ca_file) < environment < command-line flags.
A valid pushed config restarts the agent in place (flushed, spool kept) to apply it.
  [capture]
    interfaces = []            AF_PACKET interfaces; empty = all that are up (lo only when eBPF is off)
    snaplen = 65535            bytes kept of each packet
    ring_block_size = 1048576  TPACKET_V3 block size (bytes)
    ring_block_count = 32      blocks per interface ring
    retire_timeout_ms = 50     hand over a partly filled block after this long
    exclude_ports = []         ports never captured
    afpacket = true            capture packets with AF_PACKET; false = eBPF only
    ebpf = \"auto\"              eBPF socket + OpenSSL hooks (L7 records with process identity):
                               \"auto\" (or true) loads them when possible (root or CAP_BPF +
                               CAP_PERFMON, kernel BTF) and otherwise warns why and runs on
                               packets alone; \"off\" (or false) never; \"required\" refuses
                               to start without them
    ebpf_capture_bytes = 1024  bytes of each socket message copied by eBPF (0..=4096)
  [flow]
    shards = 0                 flow shard actors; 0 = one per CPU
    max_flows = 100000         flows tracked at once; least recently seen evicted beyond
    max_buffer_per_direction = 16384  bytes buffered per direction for incomplete messages
    l7_timeout_ms = 10000      unanswered requests reported as timeouts after this
    tcp_idle_timeout_s = 300   idle TCP flows closed after this
    udp_idle_timeout_s = 30    idle UDP flows closed after this
    flow_report_interval_s = 60  long flows report L4 records this often
    ebpf_merge_window_ms = 1000  with eBPF on, packet L7 records of flows with a local end
                               wait this long; dropped if eBPF saw the connection (its
                               records name the process), else emitted
  [output]
    format = \"json\"            json (NDJSON to path), server ([sender]) or both
    path = \"-\"                 '-' = stdout, else a file
  [http]
    listen = \"127.0.0.1:38086\" serves /metrics (the agent's own Prometheus metrics)
  [sender]                     used when output.format is server or both
    server = \"\"                the server's data service, host:port (e.g. \"fathom:20033\"); empty with enrollment = the ingest node assigned at enrollment, then wherever placement moves the agent (heartbeats)
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
    control_addr = \"\"          the server's control service, host:port (e.g. \"fathom:20035\"); empty = no enrollment, plain data channel
    enroll_token = \"\"          one-time enrollment token (fathomctl token create); used only while cert_dir has no certificate
    ca_file = \"\"               the cluster CA certificate (PEM) trusted when enrolling
    cert_dir = \"/var/lib/fathom-agent/certs\"  the agent's certificate, key and CA (0600); data and control are mTLS with them; server empty = the ingest address enrollment assigned
";

/// Keys a pool config may not set: they are per host, and say where this agent's
/// identity and state live (the pool config itself is found through `cert_dir`).
const HOST_KEYS: &[(&str, &str)] = &[
    ("sender", "agent_id"),
    ("sender", "cert_dir"),
    ("sender", "spool_dir"),
    ("sender", "control_addr"),
    ("sender", "enroll_token"),
    ("sender", "ca_file"),
];

/// A pool config the controller pushed, as the agent keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushedConfig {
    pub version: u64,
    /// TOML with the keys of the config file.
    pub body: String,
}

impl PushedConfig {
    pub const FILE: &str = "pushed-config.json";

    pub fn path(cert_dir: &Path) -> PathBuf {
        cert_dir.join(Self::FILE)
    }

    /// The pushed config kept in `cert_dir`, if any.
    pub fn read(cert_dir: &Path) -> Result<Option<PushedConfig>, String> {
        let path = Self::path(cert_dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("pushed config {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("pushed config {}: {e}", path.display())),
        }
    }

    /// Whether the agent could run with this overlay: valid TOML, no per-host key,
    /// and the checks the config file gets (known keys, typed values, an output
    /// format the agent has).
    pub fn validate(&self) -> Result<(), String> {
        let table: toml::Table =
            toml::from_str(&self.body).map_err(|e| format!("not valid TOML: {e}"))?;
        for (section, key) in HOST_KEYS {
            if table.get(*section).and_then(|s| s.get(*key)).is_some() {
                return Err(format!("{section}.{key} is per host and cannot be set by the pool"));
            }
        }
        let c: AgentConfig = Figment::from(Serialized::defaults(AgentConfig::default()))
            .merge(Toml::string(&self.body))
            .extract()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        if !["json", "server", "both"].contains(&c.output.format.as_str()) {
            return Err(format!(
                "output format {:?} is not supported (use \"json\", \"server\" or \"both\")",
                c.output.format
            ));
        }
        Ok(())
    }
}

impl AgentConfig {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<AgentConfig, String> {
        Self::layered(file, None)
    }

    /// What the agent runs with: defaults, the file, the pool config pushed into
    /// `cert_dir` (if any), the environment; and that pool config's version (0 =
    /// none). A pushed config that does not validate is left out, with an error.
    pub fn load_with_pushed(file: Option<&Path>) -> Result<(AgentConfig, u64), String> {
        let base = Self::load(file)?;
        let pushed = match PushedConfig::read(Path::new(&base.sender.cert_dir)) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok((base, 0)),
            Err(e) => {
                tracing::error!("{e}; running without the pool config");
                return Ok((base, 0));
            }
        };
        match pushed.validate().and_then(|()| Self::layered(file, Some(&pushed.body))) {
            Ok(c) => Ok((c, pushed.version)),
            Err(e) => {
                tracing::error!(
                    version = pushed.version,
                    "pool config not applied, running without it: {e}"
                );
                Ok((base, 0))
            }
        }
    }

    fn layered(file: Option<&Path>, pool: Option<&str>) -> Result<AgentConfig, String> {
        let mut fig = Figment::from(Serialized::defaults(AgentConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            fig = fig.merge(Toml::file(path));
        }
        if let Some(body) = pool {
            fig = fig.merge(Toml::string(body));
        }
        // FATHOM_AGENT_LOG (log filter) and FATHOM_AGENT_CONFIG (the file)
        // share the prefix but are not configuration keys.
        let env = Env::prefixed("FATHOM_AGENT_").ignore(&["LOG", "CONFIG"]).split("__");
        fig = fig.merge(env);
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
            jail.set_env("FATHOM_AGENT_LOG", "debug");
            jail.set_env("FATHOM_AGENT_CONFIG", "agent.toml");
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
    fn ebpf_mode_takes_words_and_booleans() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(AgentConfig::default().capture.ebpf, EbpfMode::Auto);
            jail.create_file("off.toml", "[capture]\nebpf = false\n")?;
            let c = AgentConfig::load(Some(Path::new("off.toml"))).unwrap();
            assert_eq!(c.capture.ebpf, EbpfMode::Off);
            jail.create_file("req.toml", "[capture]\nebpf = \"required\"\nafpacket = false\n")?;
            let c = AgentConfig::load(Some(Path::new("req.toml"))).unwrap();
            assert_eq!(c.capture.ebpf, EbpfMode::Required);
            assert!(!c.capture.afpacket);
            jail.set_env("FATHOM_AGENT_LOG", "debug");
            jail.set_env("FATHOM_AGENT_CONFIG", "req.toml");
            jail.set_env("FATHOM_AGENT_CAPTURE__EBPF", "true");
            assert_eq!(AgentConfig::load(None).unwrap().capture.ebpf, EbpfMode::Auto);
            jail.set_env("FATHOM_AGENT_CAPTURE__EBPF", "off");
            assert_eq!(AgentConfig::load(None).unwrap().capture.ebpf, EbpfMode::Off);
            jail.set_env("FATHOM_AGENT_CAPTURE__EBPF", "sometimes");
            let e = AgentConfig::load(None).unwrap_err();
            assert!(e.contains("sometimes") && e.contains("required"), "{e}");
            Ok(())
        });
    }

    fn pushed(version: u64, body: &str) -> PushedConfig {
        PushedConfig { version, body: body.into() }
    }

    #[test]
    fn pushed_overlays_validate_like_the_config_file() {
        assert_eq!(pushed(1, "[flow]\nmax_flows = 7\n").validate(), Ok(()));
        assert_eq!(pushed(1, "").validate(), Ok(()));
        let e = pushed(2, "[flow\nmax_flows = 7").validate().unwrap_err();
        assert!(e.contains("not valid TOML"), "{e}");
        let e = pushed(2, "[flow]\nmax_flowz = 7\n").validate().unwrap_err();
        assert!(e.contains("max_flowz"), "{e}");
        let e = pushed(2, "[flow]\nmax_flows = \"many\"\n").validate().unwrap_err();
        assert!(e.contains("max_flows"), "{e}");
        let e = pushed(2, "[output]\nformat = \"xml\"\n").validate().unwrap_err();
        assert!(e.contains("xml"), "{e}");
        for key in ["cert_dir", "agent_id", "spool_dir", "control_addr"] {
            let e = pushed(2, &format!("[sender]\n{key} = \"x\"\n")).validate().unwrap_err();
            assert!(e.contains(&format!("sender.{key}")) && e.contains("per host"), "{e}");
        }
    }

    #[test]
    fn the_pushed_overlay_sits_between_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            let certs = jail.directory().join("certs");
            std::fs::create_dir_all(&certs).unwrap();
            jail.create_file(
                "agent.toml",
                &format!(
                    "[flow]\nmax_flows = 5000\nl7_timeout_ms = 100\nshards = 3\n\
                     [sender]\ncert_dir = {:?}\n",
                    certs.display().to_string()
                ),
            )?;
            let file = Some(Path::new("agent.toml"));
            // Nothing pushed: the file alone, version 0.
            let (c, v) = AgentConfig::load_with_pushed(file).unwrap();
            assert_eq!((c.flow.max_flows, v), (5000, 0));
            let p = pushed(4, "[flow]\nmax_flows = 9000\nl7_timeout_ms = 200\n");
            std::fs::write(PushedConfig::path(&certs), serde_json::to_vec(&p).unwrap()).unwrap();
            jail.set_env("FATHOM_AGENT_FLOW__L7_TIMEOUT_MS", "300");
            let (c, v) = AgentConfig::load_with_pushed(file).unwrap();
            assert_eq!(v, 4);
            assert_eq!(c.flow.max_flows, 9000, "the pool wins over the file");
            assert_eq!(c.flow.l7_timeout_ms, 300, "the environment wins over the pool");
            assert_eq!(c.flow.shards, 3, "keys the pool does not set keep the file's value");
            assert_eq!(AgentConfig::load(file).unwrap().flow.max_flows, 5000);
            // An invalid one kept there (written by an older agent, say) is left out.
            let p = pushed(5, "[flow]\nmax_flowz = 1\n");
            std::fs::write(PushedConfig::path(&certs), serde_json::to_vec(&p).unwrap()).unwrap();
            let (c, v) = AgentConfig::load_with_pushed(file).unwrap();
            assert_eq!((c.flow.max_flows, v), (5000, 0));
            std::fs::write(PushedConfig::path(&certs), b"{not json").unwrap();
            assert_eq!(AgentConfig::load_with_pushed(file).unwrap().1, 0);
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
