//! The agent's own Prometheus metrics: counters updated lock-free by the
//! pipeline, rendered in the text exposition format at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A named monotonic counter or gauge.
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    value: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Metric {
    pub const fn counter(name: &'static str, help: &'static str) -> Metric {
        Metric { name, help, kind: Kind::Counter, value: AtomicU64::new(0) }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Metric {
        Metric { name, help, kind: Kind::Gauge, value: AtomicU64::new(0) }
    }

    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, n: u64) {
        self.value.store(n, Ordering::Relaxed);
    }

    /// Move a gauge by a signed amount (gauges fed by deltas from several shards).
    pub fn add_signed(&self, delta: i64) {
        self.value.fetch_add(delta as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

const HOOKS: usize = fathom_ebpf::Hook::ALL.len();

/// The eBPF programs' own per-hook counters (cumulative in the kernel, so
/// set rather than added), rendered with a `hook` label.
pub struct HookMetrics {
    calls: [AtomicU64; HOOKS],
    events: [AtomicU64; HOOKS],
}

impl HookMetrics {
    /// Copy the kernel's totals.
    pub fn set(&self, counters: &fathom_ebpf::Counters) {
        for c in &counters.hooks {
            if let Some(i) = fathom_ebpf::Hook::ALL.iter().position(|h| *h == c.hook) {
                self.calls[i].store(c.calls, Ordering::Relaxed);
                self.events[i].store(c.events, Ordering::Relaxed);
            }
        }
    }

    fn render(&self, out: &mut String) {
        for (name, help, values) in [
            (
                "fathom_agent_ebpf_hook_calls_total",
                "Socket syscalls (or scheduler events) each eBPF hook saw.",
                &self.calls,
            ),
            (
                "fathom_agent_ebpf_hook_events_total",
                "Events each eBPF hook delivered.",
                &self.events,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (hook, v) in fathom_ebpf::Hook::ALL.iter().zip(values) {
                let _ = writeln!(out, "{name}{{hook=\"{hook}\"}} {}", v.load(Ordering::Relaxed));
            }
        }
    }
}

/// Every metric the agent exports.
pub struct Telemetry {
    pub packets: Metric,
    pub packet_bytes: Metric,
    pub kernel_drops: Metric,
    pub batches_dropped: Metric,
    pub decode_errors: Metric,
    pub flows_active: Metric,
    pub flows_created: Metric,
    pub flows_evicted: Metric,
    pub reassembly_drops: Metric,
    pub l7_parse_errors: Metric,
    pub l7_records: Metric,
    pub l4_records: Metric,
    pub metric_rows: Metric,
    pub output_errors: Metric,
    pub ebpf_events: Metric,
    pub ebpf_lost: Metric,
    pub ebpf_malformed: Metric,
    pub ebpf_batches_dropped: Metric,
    pub ebpf_events_dropped: Metric,
    pub ebpf_sockets_active: Metric,
    pub ebpf_sockets_undetected: Metric,
    pub ebpf_sockets_evicted: Metric,
    pub merge_l7_suppressed: Metric,
    pub merge_l7_held: Metric,
    pub merge_l7_hold_overflows: Metric,
    pub merge_l4_with_process: Metric,
    pub merge_sockets_evicted: Metric,
    pub rss: Metric,
    pub ebpf_hooks: HookMetrics,
}

pub static TELEMETRY: Telemetry = Telemetry {
    packets: Metric::counter("fathom_agent_packets_total", "Packets read from capture rings."),
    packet_bytes: Metric::counter("fathom_agent_packet_bytes_total", "Bytes of packets read."),
    kernel_drops: Metric::counter(
        "fathom_agent_kernel_drops_total",
        "Packets the kernel dropped because a capture ring was full.",
    ),
    batches_dropped: Metric::counter(
        "fathom_agent_batches_dropped_total",
        "Packet batches dropped because a flow shard was behind.",
    ),
    decode_errors: Metric::counter(
        "fathom_agent_decode_errors_total",
        "Frames whose headers could not be decoded.",
    ),
    flows_active: Metric::gauge("fathom_agent_flows_active", "Flows tracked now."),
    flows_created: Metric::counter("fathom_agent_flows_created_total", "Flows created."),
    flows_evicted: Metric::counter(
        "fathom_agent_flows_evicted_total",
        "Flows evicted to stay within the flow table capacity.",
    ),
    reassembly_drops: Metric::counter(
        "fathom_agent_reassembly_drops_total",
        "TCP gaps and overflows in stream reassembly.",
    ),
    l7_parse_errors: Metric::counter(
        "fathom_agent_l7_parse_errors_total",
        "Messages an L7 parser rejected.",
    ),
    l7_records: Metric::counter("fathom_agent_l7_records_total", "L7 log records emitted."),
    l4_records: Metric::counter("fathom_agent_l4_records_total", "L4 flow records emitted."),
    metric_rows: Metric::counter(
        "fathom_agent_metric_rows_total",
        "RED and network metric rows emitted.",
    ),
    output_errors: Metric::counter(
        "fathom_agent_output_errors_total",
        "Records the output failed to write.",
    ),
    ebpf_events: Metric::counter("fathom_agent_ebpf_events_total", "Events read from eBPF."),
    ebpf_lost: Metric::counter(
        "fathom_agent_ebpf_lost_total",
        "eBPF events lost because the ring buffer was full.",
    ),
    ebpf_malformed: Metric::counter(
        "fathom_agent_ebpf_malformed_total",
        "eBPF ring buffer records that did not decode.",
    ),
    ebpf_batches_dropped: Metric::counter(
        "fathom_agent_ebpf_batches_dropped_total",
        "eBPF event batches dropped because an eBPF shard was behind.",
    ),
    ebpf_events_dropped: Metric::counter(
        "fathom_agent_ebpf_events_dropped_total",
        "eBPF events in those dropped batches.",
    ),
    ebpf_sockets_active: Metric::gauge(
        "fathom_agent_ebpf_sockets_active",
        "Sockets tracked from eBPF events now.",
    ),
    ebpf_sockets_undetected: Metric::counter(
        "fathom_agent_ebpf_sockets_undetected_total",
        "Sockets seen by eBPF whose protocol was not recognised (TLS ciphertext included).",
    ),
    ebpf_sockets_evicted: Metric::counter(
        "fathom_agent_ebpf_sockets_evicted_total",
        "Sockets evicted to stay within the eBPF socket table capacity.",
    ),
    merge_l7_suppressed: Metric::counter(
        "fathom_agent_merge_l7_suppressed_total",
        "Packet L7 records not emitted because eBPF covered the same connection.",
    ),
    merge_l7_held: Metric::counter(
        "fathom_agent_merge_l7_held_total",
        "Packet L7 records of flows with a local end held for the merge window.",
    ),
    merge_l7_hold_overflows: Metric::counter(
        "fathom_agent_merge_l7_hold_overflows_total",
        "Packet L7 records emitted without waiting because the hold queue was full.",
    ),
    merge_l4_with_process: Metric::counter(
        "fathom_agent_merge_l4_with_process_total",
        "Packet L4 records given a local process identity learned from eBPF.",
    ),
    merge_sockets_evicted: Metric::counter(
        "fathom_agent_merge_sockets_evicted_total",
        "eBPF-seen connections the packet shards forgot to stay within capacity.",
    ),
    rss: Metric::gauge("fathom_agent_resident_memory_bytes", "Resident set size."),
    ebpf_hooks: HookMetrics {
        calls: [const { AtomicU64::new(0) }; HOOKS],
        events: [const { AtomicU64::new(0) }; HOOKS],
    },
};

impl Telemetry {
    fn all(&self) -> [&Metric; 28] {
        [
            &self.packets,
            &self.packet_bytes,
            &self.kernel_drops,
            &self.batches_dropped,
            &self.decode_errors,
            &self.flows_active,
            &self.flows_created,
            &self.flows_evicted,
            &self.reassembly_drops,
            &self.l7_parse_errors,
            &self.l7_records,
            &self.l4_records,
            &self.metric_rows,
            &self.output_errors,
            &self.ebpf_events,
            &self.ebpf_lost,
            &self.ebpf_malformed,
            &self.ebpf_batches_dropped,
            &self.ebpf_events_dropped,
            &self.ebpf_sockets_active,
            &self.ebpf_sockets_undetected,
            &self.ebpf_sockets_evicted,
            &self.merge_l7_suppressed,
            &self.merge_l7_held,
            &self.merge_l7_hold_overflows,
            &self.merge_l4_with_process,
            &self.merge_sockets_evicted,
            &self.rss,
        ]
    }

    /// Refresh the RSS gauge from /proc.
    pub fn set_rss(&self) {
        if let Some(rss) = rss_bytes() {
            self.rss.set(rss);
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for m in self.all() {
            let kind = match m.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} {}\n{} {}",
                m.name,
                m.help,
                m.name,
                kind,
                m.name,
                m.get()
            );
        }
        self.ebpf_hooks.render(&mut out);
        crate::sender::render_metrics(&mut out);
        out
    }
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        TELEMETRY.l7_records.add(3);
        let text = TELEMETRY.render();
        assert!(text.contains("# TYPE fathom_agent_l7_records_total counter"));
        let line = text.lines().find(|l| l.starts_with("fathom_agent_l7_records_total ")).unwrap();
        let v: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(v >= 3);
        assert!(rss_bytes().unwrap() > 0);
        assert!(text.contains("fathom_agent_ebpf_hook_events_total{hook=\"SSL_write\"} "));
        // Every sample line is `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let mut it = l.split(' ');
            assert!(it.next().unwrap().starts_with("fathom_agent_"));
            it.next().unwrap().parse::<u64>().unwrap();
        }
    }
}
