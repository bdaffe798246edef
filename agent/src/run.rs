//! Starting and stopping the agent: live capture (`run`) or a pcap file
//! (`replay`), both through the same shards and emitter.

use std::path::Path;
use std::thread;
use std::time::Duration;

use actix::prelude::*;

use crate::capture::{interfaces, AfPacketConfig, AfPacketSource, CaptureError, PcapSource};
use crate::config::{AgentConfig, EbpfMode};
use crate::ebpf_source::{spawn_reader, EbpfRouter, EbpfShard, SocketFlowConfig};
use crate::flow::FlowConfig;
use crate::host::local_addresses;
use crate::output::OutputWriter;
use crate::pipeline::merge::{MergeConfig, Merger};
use crate::pipeline::{
    Clock, Emitter, FlowShard, Flush, Router, Shutdown, StopFlag, POLL_INTERVAL,
};
use crate::process::ProcessTable;
use crate::records::CaptureSource;
use crate::sender::{Sender, SenderHandle};
use crate::telemetry::TELEMETRY;

/// The flow engine settings a config asks for, per shard.
pub fn flow_config(cfg: &AgentConfig, shards: usize, source: CaptureSource) -> FlowConfig {
    let f = &cfg.flow;
    let mut fc = FlowConfig {
        capacity: (f.max_flows / shards.max(1)).max(1),
        tcp_established_timeout: Duration::from_secs(f.tcp_idle_timeout_s),
        udp_timeout: Duration::from_secs(f.udp_idle_timeout_s),
        l7_request_timeout: Duration::from_millis(f.l7_timeout_ms),
        report_interval: Duration::from_secs(f.flow_report_interval_s),
        source,
        ..FlowConfig::default()
    };
    fc.session_limits.max_buffer = f.max_buffer_per_direction;
    fc
}

/// The socket engine settings a config asks for, per eBPF shard.
pub fn socket_flow_config(
    cfg: &AgentConfig,
    shards: usize,
    unix_offset_ns: u64,
) -> SocketFlowConfig {
    let f = &cfg.flow;
    let mut sc = SocketFlowConfig {
        capacity: (f.max_flows / shards.max(1)).max(1),
        idle_timeout: Duration::from_secs(f.tcp_idle_timeout_s),
        udp_idle_timeout: Duration::from_secs(f.udp_idle_timeout_s),
        l7_request_timeout: Duration::from_millis(f.l7_timeout_ms),
        unix_offset_ns,
        ..SocketFlowConfig::default()
    };
    sc.session_limits.max_buffer = f.max_buffer_per_direction;
    sc
}

/// Load the eBPF programs as `capture.ebpf` asks: None when off, or when
/// they cannot be loaded and are not required (with a warning saying why).
fn load_ebpf(cfg: &AgentConfig) -> Result<Option<fathom_ebpf::EbpfCapture>, String> {
    let mode = cfg.capture.ebpf;
    if mode == EbpfMode::Off {
        return Ok(None);
    }
    let ec = fathom_ebpf::Config {
        capture_bytes: cfg.capture.ebpf_capture_bytes,
        ..fathom_ebpf::Config::default()
    };
    match fathom_ebpf::EbpfCapture::load(ec) {
        Ok(c) => {
            let ssl = c.ssl_libraries().iter().filter(|l| l.error.is_none()).count();
            tracing::info!(ssl_libraries = ssl, "eBPF programs loaded");
            Ok(Some(c))
        }
        Err(e) if mode == EbpfMode::Required => Err(format!("eBPF capture (required): {e}")),
        Err(e) => {
            tracing::warn!("eBPF capture not loaded: {e}; set capture.ebpf = \"off\" to silence");
            Ok(None)
        }
    }
}

fn shard_count(cfg: &AgentConfig) -> usize {
    if cfg.flow.shards > 0 {
        cfg.flow.shards
    } else {
        thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

/// Which outputs the config asks for: (NDJSON, server).
fn outputs(cfg: &AgentConfig) -> Result<(bool, bool), String> {
    match cfg.output.format.as_str() {
        "json" => Ok((true, false)),
        "server" => Ok((false, true)),
        "both" => Ok((true, true)),
        other => Err(format!(
            "output format {other:?} is not supported (use \"json\", \"server\" or \"both\")"
        )),
    }
}

fn open_output(cfg: &AgentConfig) -> Result<OutputWriter, String> {
    if cfg.output.path == "-" {
        Ok(OutputWriter::stdout())
    } else {
        OutputWriter::create(&cfg.output.path)
            .map_err(|e| format!("cannot open output {}: {e}", cfg.output.path))
    }
}

/// The merge settings a config asks for, per shard (see `pipeline::merge`).
pub fn merge_config(cfg: &AgentConfig, shards: usize) -> MergeConfig {
    let f = &cfg.flow;
    MergeConfig {
        window: Duration::from_millis(f.ebpf_merge_window_ms),
        capacity: (f.max_flows / shards.max(1)).max(1),
        // Longer than a live flow goes without an L4 record.
        retain: Duration::from_secs(f.tcp_idle_timeout_s.max(f.flow_report_interval_s) + 30),
        ..MergeConfig::default()
    }
}

/// Start shards, each on its own arbiter (thread), and the emitter; with
/// `merge`, the shards merge what eBPF observes.
fn start_actors(
    cfg: &AgentConfig,
    clock: Clock,
    source: CaptureSource,
    sender: Option<SenderHandle>,
    merge: bool,
) -> Result<(Addr<Emitter>, Vec<Addr<FlowShard>>), String> {
    let (json, _) = outputs(cfg)?;
    let out = if json { Some(open_output(cfg)?) } else { None };
    let processes = (clock == Clock::Wall).then(ProcessTable::new);
    let emitter_arbiter = Arbiter::new();
    let emitter = Emitter::start_in_arbiter(&emitter_arbiter.handle(), move |_| {
        Emitter::with_outputs(out, sender, clock, processes)
    });
    let n = shard_count(cfg);
    let template = flow_config(cfg, n, source);
    let mc = merge.then(|| (merge_config(cfg, n), local_addresses()));
    let shards = (0..n)
        .map(|_| {
            let arbiter = Arbiter::new();
            let t = template.clone();
            let e = emitter.clone();
            let m = mc.clone();
            FlowShard::start_in_arbiter(&arbiter.handle(), move |_| {
                let shard = FlowShard::new(t, e, clock);
                match m {
                    Some((c, ips)) => shard.with_merger(Merger::new(c, ips)),
                    None => shard,
                }
            })
        })
        .collect();
    Ok((emitter, shards))
}

/// Starts the sender when the output goes to the server; `pool_config` is the version
/// of the pushed pool config `cfg` includes (0 = none).
fn start_sender(cfg: &AgentConfig, pool_config: u64) -> Result<Option<Sender>, String> {
    let (_, server) = outputs(cfg)?;
    if server {
        Sender::start_with_pool_config(cfg.sender.clone(), pool_config).map(Some)
    } else {
        Ok(None)
    }
}

/// How long a stopping agent waits for the server to take the spool.
const SENDER_DRAIN: Duration = Duration::from_secs(5);

async fn drain(emitter: &Addr<Emitter>, shards: &[Addr<FlowShard>], ebpf: &[Addr<EbpfShard>]) {
    // eBPF first: its last batches announce sockets the packet shards'
    // held records wait for.
    for s in ebpf {
        let _ = s.send(Flush).await;
    }
    for s in shards {
        let _ = s.send(Flush).await;
    }
    let _ = emitter.send(Shutdown).await;
}

/// Why a live agent stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// SIGINT or SIGTERM.
    Signal,
    /// The controller pushed a valid pool config: start again to run with it.
    PoolConfigPushed,
}

/// Capture live traffic until SIGINT or SIGTERM, or until a pool config is pushed,
/// then flush everything. `pool_config` is the version of the pushed pool config
/// `cfg` includes (0 = none).
pub fn run_live(cfg: AgentConfig, pool_config: u64) -> Result<Stopped, String> {
    let ebpf = load_ebpf(&cfg)?;
    let all = cfg.capture.interfaces.is_empty();
    let names = if !cfg.capture.afpacket {
        Vec::new()
    } else if all {
        let mut names = interfaces::list_up().map_err(|e| e.to_string())?;
        // Loopback traffic is between local processes, which eBPF sees with
        // their identity; packets on lo are only needed without it.
        if ebpf.is_none() && !names.iter().any(|n| n == "lo") {
            names.push("lo".into());
        }
        names
    } else {
        cfg.capture.interfaces.clone()
    };
    // Open every ring before starting anything, so a bad interface or a
    // missing capability fails at once with its own message.
    let mut sources = Vec::new();
    for name in &names {
        let ac = AfPacketConfig {
            snaplen: cfg.capture.snaplen,
            block_size: cfg.capture.ring_block_size,
            block_count: cfg.capture.ring_block_count,
            retire_timeout_ms: cfg.capture.retire_timeout_ms,
            exclude_ports: cfg.capture.exclude_ports.clone(),
            ..AfPacketConfig::for_interface(name)
        };
        match AfPacketSource::open(&ac) {
            Ok(s) => sources.push(s),
            // With "all interfaces", links we cannot filter are skipped.
            Err(e @ CaptureError::InvalidConfig(_)) if all => {
                tracing::warn!(interface = %name, "not captured: {e}");
            }
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    if sources.is_empty() && ebpf.is_none() {
        return Err(if cfg.capture.afpacket {
            "no network interface is up to capture from".into()
        } else {
            "nothing to capture: capture.afpacket is false and eBPF is not loaded".into()
        });
    }
    let sender = start_sender(&cfg, pool_config)?;
    let handle = sender.as_ref().map(Sender::handle);
    let pushed = sender.as_ref().map(Sender::pool_config_pushed);
    let sys = System::new();
    let stopped = sys.block_on(async move {
        // Both sources: the packet shards merge what eBPF observes.
        let merge = ebpf.is_some() && !sources.is_empty();
        let (emitter, shards) =
            start_actors(&cfg, Clock::Wall, CaptureSource::Packet, handle, merge)?;
        let stop = StopFlag::default();
        let mut threads = Vec::new();
        for mut src in sources {
            let name = src.interface().name.clone();
            let link = src.interface().link;
            let mut router = Router::new(shards.clone(), &name, link);
            let stop = stop.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("capture-{name}"))
                    .spawn(move || {
                        let mut last_drops = 0;
                        while !stop.stopped() {
                            let r = src.next_batch(POLL_INTERVAL, |pkt| {
                                router.route(pkt.link, pkt.data, pkt.wire_len, pkt.ts_ns / 1000);
                            });
                            if let Err(e) = r {
                                tracing::error!(interface = %name, "capture failed: {e}");
                                break;
                            }
                            router.ship_all();
                            if let Ok(s) = src.stats() {
                                TELEMETRY.kernel_drops.add(s.drops.saturating_sub(last_drops));
                                last_drops = s.drops;
                            }
                        }
                    })
                    .map_err(|e| format!("cannot start capture thread: {e}"))?,
            );
        }
        let mut ebpf_shards = Vec::new();
        if let Some(capture) = ebpf {
            let offset = capture.to_unix_ns(0);
            let sc = socket_flow_config(&cfg, shards.len(), offset);
            let (spent_to, spent) = std::sync::mpsc::channel();
            ebpf_shards = (0..shards.len())
                .map(|_| {
                    let arbiter = Arbiter::new();
                    let (c, e, s) = (sc.clone(), emitter.clone(), spent_to.clone());
                    let p = if merge { shards.clone() } else { Vec::new() };
                    EbpfShard::start_in_arbiter(&arbiter.handle(), move |_| {
                        EbpfShard::new(c, e).announce_to(p).give_buffers_to(s)
                    })
                })
                .collect();
            let router = EbpfRouter::new(ebpf_shards.clone(), emitter.clone(), offset)
                .exclude_ports(&cfg.capture.exclude_ports)
                .reuse_buffers(spent);
            threads.push(
                spawn_reader(capture, router, stop.clone())
                    .map_err(|e| format!("cannot start eBPF reader thread: {e}"))?,
            );
        }
        crate::http::serve(&cfg.http.listen).await?;
        tracing::info!(
            interfaces = ?names,
            shards = shards.len(),
            ebpf = !ebpf_shards.is_empty(),
            "capturing"
        );
        let pool_config_pushed = async {
            match &pushed {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        let stopped = tokio::select! {
            _ = wait_for_signal() => Stopped::Signal,
            _ = pool_config_pushed => Stopped::PoolConfigPushed,
        };
        tracing::info!(?stopped, "stopping: flushing flows and metrics");
        stop.stop();
        for t in threads {
            let _ = t.join();
        }
        drain(&emitter, &shards, &ebpf_shards).await;
        System::current().stop();
        Ok::<Stopped, String>(stopped)
    })?;
    if let Some(s) = sender {
        s.shutdown(SENDER_DRAIN);
    }
    Ok(stopped)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Run a pcap file through the pipeline, as if captured live, then flush.
/// Nothing is dropped: the reader waits for shards that are behind.
pub fn replay(path: &Path, cfg: AgentConfig) -> Result<u64, String> {
    let mut src = PcapSource::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // pcapng gives each packet its own link type; the router follows it.
    let link = src.link_type().unwrap_or(crate::packet::LinkType::Ethernet);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sender = start_sender(&cfg, 0)?;
    let handle = sender.as_ref().map(Sender::handle);
    let sys = System::new();
    let packets = sys.block_on(async move {
        let (emitter, shards) =
            start_actors(&cfg, Clock::Packets, CaptureSource::Pcap, handle, false)?;
        // The same /metrics as live; a replay still runs if the port is taken.
        if let Err(e) = crate::http::serve(&cfg.http.listen).await {
            tracing::warn!("{e}");
        }
        let mut router = Router::new(shards.clone(), &name, link).reliable();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reader = thread::spawn(move || {
            let r = src
                .for_each(|pkt| router.route(pkt.link, pkt.data, pkt.wire_len, pkt.ts_ns / 1000));
            router.ship_all();
            let _ = tx.send(());
            r
        });
        let _ = rx.await;
        let read = reader.join().map_err(|_| "pcap reader panicked".to_string())?;
        let packets = read.map_err(|e| format!("{}: {e}", path.display()))?;
        drain(&emitter, &shards, &[]).await;
        System::current().stop();
        Ok::<u64, String>(packets)
    })?;
    if let Some(s) = sender {
        s.shutdown(SENDER_DRAIN);
    }
    Ok(packets)
}
