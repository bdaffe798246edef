//! One flow per connection seen by both sources: the packet shards learn
//! from the eBPF shards which connections eBPF observes, and merge.
//!
//! The rule (as DeepFlow-class agents do it):
//! - eBPF socket events and packets of one connection meet in one packet
//!   shard: both are routed by [`shard_of`] on the normalized 5-tuple
//!   ([`FlowKey`]). An eBPF shard announces each socket to that shard once
//!   its role is known (connect / accept) and again when its L7 protocol is
//!   detected ([`LocalSocket`]).
//! - When eBPF observes a connection's L7 (syscalls or TLS plaintext), its
//!   L7 records are authoritative: they name the process, thread and
//!   syscall trace id, carry the kernel's TCP sequence numbers and see
//!   through TLS. The packet L7 records of that connection are dropped
//!   (`fathom_agent_merge_l7_suppressed_total`), so RED counts each call
//!   once per observation point: once in the client process, once in the
//!   server process (each when eBPF sees it), never again from packets.
//! - The packet side keeps the L4 flow record (counters, RTT, close type:
//!   network facts only packets have), stamped with the local process at
//!   each end that eBPF reported (`client_process`, `server_process`).
//! - The race: eBPF events reach the agent a little later (or earlier) than
//!   the packets. A packet L7 record of a flow with a local end (an address
//!   of this host's interfaces, loopback, or one eBPF has seen a local
//!   socket bound to, such as a container's) is held for
//!   `flow.ebpf_merge_window_ms` and dropped if eBPF covered the connection
//!   meanwhile, else emitted. Flows eBPF never sees (between two remote
//!   hosts, excluded ports, eBPF off) lose nothing: remote flows are never
//!   held and without eBPF there is no merger at all.
//! - Not merged: sockets whose events name no local address (an unconnected
//!   UDP socket bound to the wildcard, e.g. some DNS clients) cannot be
//!   matched to a 5-tuple; their calls keep both records.
//! - Memory is bounded: the connection table is an LRU of `capacity`
//!   entries forgotten after `retain` without news, the hold queue holds at
//!   most `max_held` records (beyond it records go out at once, counted).

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::time::Duration;

use actix::Message;
use lru::LruCache;

use crate::flow::FlowKey;
use crate::records::{FlowTuple, L4Flow, L7Log, ProcessRef};
use crate::telemetry::TELEMETRY;

/// The shard of a flow key: the same for every router and for the eBPF
/// shards' announcements, so a connection's packets and its socket meet.
pub fn shard_of(key: &FlowKey, shards: usize) -> usize {
    static HASHER: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let h = HASHER.get_or_init(Default::default);
    (h.hash_one(key) % shards.max(1) as u64) as usize
}

/// The flow key of a record's tuple.
pub fn key_of(t: &FlowTuple) -> FlowKey {
    FlowKey::of(t.client_ip, t.client_port, t.server_ip, t.server_port, t.protocol).0
}

/// A local socket eBPF observes: which end of which connection, its process,
/// and whether eBPF parses its L7 (then it makes the L7 records).
#[derive(Clone, Debug)]
pub struct LocalSocket {
    pub key: FlowKey,
    /// The socket's own address: an address of this host (or of a
    /// container on it).
    pub local_ip: IpAddr,
    /// The socket is the connection's client end.
    pub client: bool,
    pub process: ProcessRef,
    pub l7: bool,
}

/// Announcements for one packet shard.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LocalSockets(pub Vec<LocalSocket>);

#[derive(Clone, Debug)]
pub struct MergeConfig {
    /// How long packet L7 records of flows with a local end wait for eBPF.
    pub window: Duration,
    /// Connections remembered.
    pub capacity: usize,
    /// A connection with no news (announcement, packet record) for this
    /// long is forgotten.
    pub retain: Duration,
    /// Records held at once.
    pub max_held: usize,
    /// Local addresses learned from eBPF's sockets, at most.
    pub max_learned_ips: usize,
}

impl Default for MergeConfig {
    fn default() -> Self {
        MergeConfig {
            window: Duration::from_secs(1),
            capacity: 100_000,
            retain: Duration::from_secs(330),
            max_held: 16_384,
            max_learned_ips: 65_536,
        }
    }
}

/// What eBPF told about one connection.
#[derive(Default)]
struct Ends {
    client: Option<ProcessRef>,
    server: Option<ProcessRef>,
    /// eBPF makes the connection's L7 records.
    l7: bool,
    touched_us: u64,
}

/// Counters (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub suppressed: u64,
    pub held: u64,
    pub hold_overflows: u64,
    pub l4_with_process: u64,
    pub evicted: u64,
}

/// The merge state of one packet shard.
pub struct Merger {
    cfg: MergeConfig,
    local_ips: Vec<IpAddr>,
    learned_ips: hashbrown::HashSet<IpAddr>,
    sockets: LruCache<FlowKey, Ends>,
    held: VecDeque<(u64, L7Log)>,
    stats: MergeStats,
    published: MergeStats,
}

impl Merger {
    pub fn new(cfg: MergeConfig, local_ips: Vec<IpAddr>) -> Merger {
        let cap = NonZeroUsize::new(cfg.capacity).unwrap_or(NonZeroUsize::MIN);
        Merger {
            cfg,
            local_ips,
            learned_ips: Default::default(),
            sockets: LruCache::new(cap),
            held: VecDeque::new(),
            stats: MergeStats::default(),
            published: MergeStats::default(),
        }
    }

    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    /// Records waiting now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.local_ips.contains(&ip) || self.learned_ips.contains(&ip)
    }

    /// What eBPF announced.
    pub fn on_sockets(&mut self, sockets: Vec<LocalSocket>, now_us: u64) {
        for s in sockets {
            if self.learned_ips.len() < self.cfg.max_learned_ips && !self.is_local(s.local_ip) {
                self.learned_ips.insert(s.local_ip);
            }
            if self.sockets.peek(&s.key).is_none() && self.sockets.len() == self.sockets.cap().get()
            {
                self.stats.evicted += 1;
            }
            let e = self.sockets.get_or_insert_mut(s.key, Ends::default);
            e.touched_us = now_us;
            e.l7 |= s.l7;
            let end = if s.client { &mut e.client } else { &mut e.server };
            // A new connection on a reused tuple replaces the old process.
            *end = Some(s.process);
        }
    }

    /// Sort a batch of packet L7 records: those of connections eBPF covers
    /// are dropped, those with a local end wait, the rest go to `out`.
    pub fn l7(&mut self, logs: &mut Vec<L7Log>, out: &mut Vec<L7Log>, now_us: u64) {
        let deadline = now_us + us(self.cfg.window);
        for log in logs.drain(..) {
            let key = key_of(&log.flow);
            if let Some(e) = self.sockets.get_mut(&key) {
                e.touched_us = now_us;
                if e.l7 {
                    self.stats.suppressed += 1;
                    continue;
                }
            }
            if !self.is_local(log.flow.client_ip) && !self.is_local(log.flow.server_ip) {
                out.push(log);
            } else if self.held.len() >= self.cfg.max_held {
                self.stats.hold_overflows += 1;
                out.push(log);
            } else {
                self.stats.held += 1;
                self.held.push_back((deadline, log));
            }
        }
    }

    /// Stamp a packet L4 record with the local processes eBPF reported.
    pub fn l4(&mut self, flow: &mut L4Flow, now_us: u64) {
        let Some(e) = self.sockets.get_mut(&key_of(&flow.flow)) else { return };
        e.touched_us = now_us;
        if e.client.is_none() && e.server.is_none() {
            return;
        }
        flow.client_process = e.client.clone();
        flow.server_process = e.server.clone();
        self.stats.l4_with_process += 1;
    }

    /// Release held records whose window is over (all of them with
    /// `all`, at shutdown) and forget connections without news.
    pub fn release(&mut self, now_us: u64, all: bool, out: &mut Vec<L7Log>) {
        while self.held.front().is_some_and(|(d, _)| all || *d <= now_us) {
            let Some((_, log)) = self.held.pop_front() else { break };
            if self.sockets.peek(&key_of(&log.flow)).is_some_and(|e| e.l7) {
                self.stats.suppressed += 1;
            } else {
                out.push(log);
            }
        }
        let retain = us(self.cfg.retain);
        while self
            .sockets
            .peek_lru()
            .is_some_and(|(_, e)| now_us.saturating_sub(e.touched_us) > retain)
        {
            self.sockets.pop_lru();
        }
    }

    /// Add the counters since the last call to the agent's telemetry.
    pub fn publish(&mut self) {
        let (o, n) = (self.published, self.stats);
        TELEMETRY.merge_l7_suppressed.add(n.suppressed - o.suppressed);
        TELEMETRY.merge_l7_held.add(n.held - o.held);
        TELEMETRY.merge_l7_hold_overflows.add(n.hold_overflows - o.hold_overflows);
        TELEMETRY.merge_l4_with_process.add(n.l4_with_process - o.l4_with_process);
        TELEMETRY.merge_sockets_evicted.add(n.evicted - o.evicted);
        self.published = n;
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::records::{CaptureSource, L4Protocol};

    fn tuple(client: [u8; 4], server: [u8; 4]) -> FlowTuple {
        FlowTuple {
            client_ip: IpAddr::V4(Ipv4Addr::from(client)),
            client_port: 40000,
            server_ip: IpAddr::V4(Ipv4Addr::from(server)),
            server_port: 80,
            protocol: L4Protocol::Tcp,
        }
    }

    fn log(t: FlowTuple) -> L7Log {
        let rec = fathom_protocols::L7Record::default();
        L7Log::from_call(t, CaptureSource::Packet, &rec, 1, 2)
    }

    fn socket(t: FlowTuple, client: bool, l7: bool) -> LocalSocket {
        LocalSocket {
            key: key_of(&t),
            local_ip: if client { t.client_ip } else { t.server_ip },
            client,
            process: ProcessRef { pid: 7, tid: 7, name: "curl".into() },
            l7,
        }
    }

    #[test]
    fn covered_local_flows_lose_their_packet_records_and_others_keep_them() {
        let mut m = Merger::new(MergeConfig::default(), vec!["10.0.0.1".parse().unwrap()]);
        let lo = tuple([127, 0, 0, 1], [127, 0, 0, 1]);
        let local = tuple([10, 0, 0, 1], [10, 0, 0, 9]);
        let remote = tuple([10, 0, 0, 5], [10, 0, 0, 9]);
        let late = tuple([10, 0, 0, 9], [10, 0, 0, 1]);
        m.on_sockets(vec![socket(lo, true, true)], 0);
        let (mut logs, mut out) = (vec![log(lo), log(local), log(remote), log(late)], Vec::new());
        m.l7(&mut logs, &mut out, 0);
        // Remote-to-remote goes at once; the covered one never; two wait.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].flow, remote);
        assert_eq!(m.held(), 2);
        // eBPF covers `late` within the window; `local` it never sees.
        m.on_sockets(vec![socket(late, false, true)], 500_000);
        m.release(999_999, false, &mut out);
        assert_eq!(m.held(), 2);
        m.release(1_000_000, false, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].flow, local);
        assert_eq!(m.stats().suppressed, 2);
        assert_eq!(m.stats().held, 2);
    }

    #[test]
    fn addresses_of_announced_sockets_count_as_local() {
        let mut m = Merger::new(MergeConfig::default(), Vec::new());
        // A container's address: not the host's, but eBPF saw a socket on it.
        let pod = tuple([10, 244, 1, 7], [10, 0, 0, 9]);
        let mut other = tuple([10, 0, 0, 8], [10, 244, 1, 7]);
        other.server_port = 8080;
        m.on_sockets(vec![socket(pod, true, false)], 0);
        let (mut logs, mut out) = (vec![log(other)], Vec::new());
        m.l7(&mut logs, &mut out, 0);
        assert_eq!((m.held(), out.len()), (1, 0));
    }

    #[test]
    fn l4_records_get_both_local_processes() {
        let mut m = Merger::new(MergeConfig::default(), Vec::new());
        let t = tuple([127, 0, 0, 1], [127, 0, 0, 1]);
        let mut server = socket(t, false, false);
        server.process = ProcessRef { pid: 9, tid: 9, name: "python3".into() };
        m.on_sockets(vec![socket(t, true, false), server], 0);
        let mut f = L4Flow {
            flow: t,
            source: CaptureSource::Packet,
            interface: None,
            start_time_us: 0,
            end_time_us: 0,
            duration_us: 0,
            tx: Default::default(),
            rx: Default::default(),
            syn_ack: 0,
            rtt_server_us: None,
            rtt_client_us: None,
            close_type: Default::default(),
            l7_protocol: None,
            client_process: None,
            server_process: None,
        };
        m.l4(&mut f, 0);
        assert_eq!(f.client_process.unwrap().name, "curl");
        assert_eq!(f.server_process.unwrap().name, "python3");
        // Without L7 from eBPF, packet L7 records of the flow still go out.
        let (mut logs, mut out) = (vec![log(t)], Vec::new());
        m.l7(&mut logs, &mut out, 0);
        m.release(u64::MAX, false, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn bounded_hold_and_table() {
        let cfg = MergeConfig { capacity: 2, max_held: 1, ..MergeConfig::default() };
        let mut m = Merger::new(cfg, Vec::new());
        for port in 1..=3 {
            let mut t = tuple([127, 0, 0, 1], [127, 0, 0, 1]);
            t.client_port = port;
            m.on_sockets(vec![socket(t, true, false)], 0);
        }
        assert_eq!(m.stats().evicted, 1);
        let t = tuple([127, 0, 0, 1], [127, 0, 0, 2]);
        let (mut logs, mut out) = (vec![log(t), log(t)], Vec::new());
        m.l7(&mut logs, &mut out, 0);
        assert_eq!((m.held(), out.len(), m.stats().hold_overflows), (1, 1, 1));
        m.release(0, true, &mut out);
        assert_eq!(out.len(), 2);
        // Connections without news are forgotten.
        m.release(u64::MAX, false, &mut out);
        assert_eq!(m.sockets.len(), 0);
    }
}
