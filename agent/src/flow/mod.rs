//! The flow table of one shard and the per-flow state machines it drives.
//!
//! Pure: packets and clock ticks in, records out through a [`RecordSink`];
//! no I/O, no threads. A shard owns one [`FlowEngine`] and calls
//! [`FlowEngine::process_packet`] for each decoded packet, [`FlowEngine::tick`]
//! about once a second with the current time, and [`FlowEngine::flush`] at
//! shutdown.
//!
//! Rules worth knowing:
//! - Both directions of a 5-tuple are one flow; which end is the client is
//!   decided by [`key::first_sender_is_client`] and corrected by a later SYN
//!   or by L7 detection.
//! - Byte counters add up frame lengths on the wire ([`PacketView::wire_len`]),
//!   link header included, as `tshark -z conv,tcp` counts them.
//! - A TCP connection closed by FINs or a RST lingers `tcp_closed_linger`
//!   before its record goes out, so its last packets are counted; a new SYN
//!   on the same 5-tuple ends it at once.
//! - A TCP flow is created by a SYN or a segment with payload; a bare ACK,
//!   FIN or RST of an unknown flow (a connection's tail seen after its
//!   record went out) is counted in [`FlowStats::untracked_packets`].
//! - L4 records are emitted when a flow closes and every `report_interval`
//!   for long ones; each record's counters cover the time since the previous
//!   record of the same flow, so a flow's records add up to its totals.
//! - UDP flows have no close; a DNS flow ends (close type `Fin`) once every
//!   query it carried is answered.
//! - Memory: a flow without L7 is its state and an LRU node; an L7 session
//!   is boxed, created on detection, and gives back the buffers and records
//!   it keeps for reuse once idle for `release_idle_after`; reassembly
//!   buffers exist only while out-of-order bytes wait.

mod conn;
pub mod key;
mod l7;
pub(crate) use l7::FeedCounts;
pub mod reasm;

use std::num::NonZeroUsize;
use std::time::Duration;

use fathom_protocols::SessionLimits;
use lru::LruCache;

use crate::packet::tcp_flags::{ACK, SYN};
use crate::packet::{self, DecodeError, LinkType, PacketView, L4};
use crate::records::{CaptureSource, CloseType, L4Flow, L4Protocol, L7Log};
use conn::{Cx, Flow};
pub use key::FlowKey;
use reasm::{ReasmCounters, ReasmLimits};

/// Where records go.
pub trait RecordSink {
    fn l7(&mut self, log: L7Log);
    fn l4(&mut self, flow: L4Flow);
}

/// Keeps every record, for tests and tools.
#[derive(Debug, Default)]
pub struct VecSink {
    pub l7: Vec<L7Log>,
    pub l4: Vec<L4Flow>,
}

impl RecordSink for VecSink {
    fn l7(&mut self, log: L7Log) {
        self.l7.push(log);
    }
    fn l4(&mut self, flow: L4Flow) {
        self.l4.push(flow);
    }
}

#[derive(Clone, Debug)]
pub struct FlowConfig {
    /// Most flows tracked at once; the least recently used is evicted.
    pub capacity: usize,
    pub tcp_established_timeout: Duration,
    /// After a FIN.
    pub tcp_closing_timeout: Duration,
    /// SYN or SYN-ACK without the rest of the handshake.
    pub tcp_handshake_timeout: Duration,
    /// A connection ended by FINs or a RST stays this long (counting its
    /// last ACKs and stray RSTs) before its record goes out; zero: at once.
    pub tcp_closed_linger: Duration,
    pub udp_timeout: Duration,
    /// A request with no response after this is reported as timed out.
    pub l7_request_timeout: Duration,
    /// Long flows get an L4 record this often.
    pub report_interval: Duration,
    /// Out-of-order bytes wait this long for the hole before them to fill.
    pub reassembly_timeout: Duration,
    /// Out-of-order segments held per direction.
    pub max_ooo_segments: usize,
    /// Out-of-order bytes held per direction.
    pub max_ooo_bytes: usize,
    /// Out-of-order bytes held by all flows together.
    pub max_ooo_total_bytes: usize,
    /// Payload packets per direction tried for L7 detection before the
    /// flow is treated as L4-only.
    pub detect_packets: u8,
    pub session_limits: SessionLimits,
    /// An L7 session with nothing in flight and no packet for this long
    /// gives back its reusable buffers at the next tick (idle keep-alive
    /// connections are most of a busy host's flows).
    pub release_idle_after: Duration,
    /// Stamped on every record.
    pub interface: Option<String>,
    pub source: CaptureSource,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            capacity: 100_000,
            tcp_established_timeout: Duration::from_secs(300),
            tcp_closing_timeout: Duration::from_secs(5),
            tcp_handshake_timeout: Duration::from_secs(5),
            tcp_closed_linger: Duration::from_secs(2),
            udp_timeout: Duration::from_secs(30),
            l7_request_timeout: Duration::from_secs(10),
            report_interval: Duration::from_secs(60),
            reassembly_timeout: Duration::from_secs(2),
            max_ooo_segments: 16,
            max_ooo_bytes: 64 * 1024,
            max_ooo_total_bytes: 64 * 1024 * 1024,
            detect_packets: 4,
            session_limits: SessionLimits::default(),
            release_idle_after: Duration::from_secs(1),
            interface: None,
            source: CaptureSource::Packet,
        }
    }
}

impl FlowConfig {
    fn reasm_limits(&self) -> ReasmLimits {
        ReasmLimits {
            max_segments: self.max_ooo_segments.max(1),
            max_bytes: self.max_ooo_bytes,
            max_total_bytes: self.max_ooo_total_bytes,
        }
    }
}

/// Counters of everything the engine saw, made and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets handed to the engine, decode failures included.
    pub packets: u64,
    /// Wire bytes of those packets.
    pub bytes: u64,
    pub tcp_packets: u64,
    pub udp_packets: u64,
    /// IP packets neither TCP nor UDP.
    pub other_packets: u64,
    /// Non-first IP fragments (no ports: not attributed to a flow).
    pub fragments: u64,
    pub decode_errors: u64,
    /// TCP packets with no payload and no SYN for a flow not in the table.
    pub untracked_packets: u64,
    pub flows_active: u64,
    pub flows_created: u64,
    /// Closed by FIN, RST, DNS answer or timeout.
    pub flows_closed: u64,
    pub flows_evicted: u64,
    pub reassembly_gaps: u64,
    pub reassembly_gap_bytes: u64,
    /// Holes given up because a reassembly buffer was full.
    pub reassembly_overflows: u64,
    pub reassembly_buffered_bytes: u64,
    pub l7_detected: u64,
    /// Flows given up on as L4-only.
    pub l7_undetected: u64,
    pub l7_parse_errors: u64,
    pub l7_records: u64,
    /// L7 records of requests that got no response (also in `l7_records`).
    pub l7_timeouts: u64,
    pub l4_records: u64,
}

impl FlowStats {
    fn add(&mut self, n: &l7::FeedCounts) {
        self.l7_records += n.records;
        self.l7_parse_errors += n.parse_errors;
        self.l7_timeouts += n.timeouts;
    }
}

pub struct FlowEngine {
    cfg: FlowConfig,
    table: LruCache<FlowKey, Flow>,
    stats: FlowStats,
    reasm: ReasmCounters,
    /// Flows to end after a tick's scan, reused.
    expired: Vec<(FlowKey, CloseType)>,
}

impl FlowEngine {
    pub fn new(config: FlowConfig) -> FlowEngine {
        let cap = NonZeroUsize::new(config.capacity).unwrap_or(NonZeroUsize::MIN);
        FlowEngine {
            cfg: config,
            table: LruCache::new(cap),
            stats: FlowStats::default(),
            reasm: ReasmCounters::default(),
            expired: Vec::new(),
        }
    }

    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    pub fn stats(&self) -> FlowStats {
        FlowStats {
            flows_active: self.table.len() as u64,
            reassembly_gaps: self.reasm.gaps,
            reassembly_gap_bytes: self.reasm.gap_bytes,
            reassembly_overflows: self.reasm.overflows,
            reassembly_buffered_bytes: self.reasm.buffered_bytes as u64,
            ..self.stats
        }
    }

    /// Decode a frame and process it; decode failures are counted.
    pub fn process_frame(
        &mut self,
        link: LinkType,
        frame: &[u8],
        wire_len: u32,
        ts_us: u64,
        sink: &mut impl RecordSink,
    ) -> Result<(), DecodeError> {
        match packet::decode(link, frame, wire_len, ts_us) {
            Ok(p) => {
                self.process_packet(&p, sink);
                Ok(())
            }
            Err(e) => {
                self.decode_error(e, wire_len.max(frame.len() as u32));
                Err(e)
            }
        }
    }

    /// Count a frame the caller failed to decode.
    pub fn decode_error(&mut self, _error: DecodeError, wire_len: u32) {
        self.stats.packets += 1;
        self.stats.bytes += u64::from(wire_len);
        self.stats.decode_errors += 1;
    }

    pub fn process_packet(&mut self, p: &PacketView<'_>, sink: &mut impl RecordSink) {
        let FlowEngine { cfg, table, stats, reasm, .. } = self;
        stats.packets += 1;
        stats.bytes += u64::from(p.wire_len);
        let (protocol, tcp) = match &p.l4 {
            L4::Tcp(h) => {
                stats.tcp_packets += 1;
                (L4Protocol::Tcp, Some(h))
            }
            L4::Udp => {
                stats.udp_packets += 1;
                (L4Protocol::Udp, None)
            }
            L4::Fragment => {
                stats.fragments += 1;
                return;
            }
            L4::Other(_) => {
                stats.other_packets += 1;
                return;
            }
        };
        let (key, from_a) = FlowKey::of(p.src_ip, p.src_port, p.dst_ip, p.dst_port, protocol);
        let mut cx = Cx { cfg, stats, sink };
        let new_syn = tcp.is_some_and(|h| h.flags & (SYN | ACK) == SYN);
        if new_syn && table.peek(&key).is_some_and(|f| f.is_closed()) {
            // The 5-tuple is reused by a new connection.
            if let Some(f) = table.pop(&key) {
                cx.stats.flows_closed += 1;
                let close = f.close_type_now();
                f.finish(&key, close, &mut cx, reasm);
            }
        }
        let end = match table.get_mut(&key) {
            Some(f) => on_packet(f, &key, from_a, p, tcp, &mut cx, reasm),
            None => {
                if let Some(h) = tcp {
                    if !h.has(SYN) && p.payload_len == 0 {
                        cx.stats.untracked_packets += 1;
                        return;
                    }
                }
                cx.stats.flows_created += 1;
                if let Some((old_key, old)) = table.push(key, Flow::new(from_a, p, tcp)) {
                    if old_key != key {
                        cx.stats.flows_evicted += 1;
                        old.finish(&old_key, CloseType::Evicted, &mut cx, reasm);
                    }
                }
                match table.peek_mut(&key) {
                    Some(f) => on_packet(f, &key, from_a, p, tcp, &mut cx, reasm),
                    None => None,
                }
            }
        };
        if let Some(close) = end {
            if let Some(f) = table.pop(&key) {
                cx.stats.flows_closed += 1;
                f.finish(&key, close, &mut cx, reasm);
            }
        }
    }

    /// Time passes (`now_us` from the capture clock): give up stale
    /// reassembly holes, time out unanswered requests, end idle flows and
    /// report long ones. Scans every flow: call it about once a second.
    pub fn tick(&mut self, now_us: u64, sink: &mut impl RecordSink) {
        let FlowEngine { cfg, table, stats, reasm, expired } = self;
        let mut cx = Cx { cfg, stats, sink };
        for (key, flow) in table.iter_mut() {
            if let Some(close) = flow.tick(key, now_us, &mut cx, reasm) {
                expired.push((*key, close));
            }
        }
        for (key, close) in expired.drain(..) {
            if let Some(f) = table.pop(&key) {
                cx.stats.flows_closed += 1;
                f.finish(&key, close, &mut cx, reasm);
            }
        }
    }

    /// Shutdown: end every flow, with [`CloseType::Shutdown`] unless it had
    /// already closed and was lingering.
    pub fn flush(&mut self, sink: &mut impl RecordSink) {
        let FlowEngine { cfg, table, stats, reasm, .. } = self;
        let mut cx = Cx { cfg, stats, sink };
        while let Some((key, f)) = table.pop_lru() {
            cx.stats.flows_closed += 1;
            let close = f.close_type_now();
            f.finish(&key, close, &mut cx, reasm);
        }
    }

    /// Flows in the table now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Approximate bytes one flow without a detected L7 session costs: its
    /// state, its key and the LRU's node and index.
    pub fn bytes_per_flow() -> usize {
        std::mem::size_of::<Flow>() + 2 * std::mem::size_of::<FlowKey>() + 4 * 8
    }
}

fn on_packet(
    f: &mut Flow,
    key: &FlowKey,
    from_a: bool,
    p: &PacketView<'_>,
    tcp: Option<&packet::TcpHeader>,
    cx: &mut Cx<'_>,
    reasm: &mut ReasmCounters,
) -> Option<CloseType> {
    match tcp {
        Some(h) => f.on_tcp(key, from_a, p, h, cx, reasm),
        None => f.on_udp(key, from_a, p, cx),
    }
}

#[cfg(test)]
mod tests;
