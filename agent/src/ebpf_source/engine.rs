//! The socket table of one eBPF shard and the per-socket state it drives.
//!
//! Pure: events and clock ticks in, records out through a [`RecordSink`].
//! Each socket's data events arrive in syscall order per direction, each a
//! prefix of what one syscall moved, so no reassembly is needed: every event
//! is fed to the socket's L7 session with the uncaptured rest as `missing`.
//!
//! - Key: (pid, fd, TLS or not, local and remote address). The socket under
//!   an SSL object carries ciphertext in its syscalls and plaintext in the
//!   SSL uprobe events: two entries, the plaintext one makes the records.
//!   An unconnected UDP socket is one entry per peer.
//! - Role: connect(2) makes the caller the client (egress = request),
//!   accept(2) the server (ingress = request). A socket opened before the
//!   agent started takes its role from L7 detection.
//! - Entries end on close(2), when their process exits (processed at the
//!   next tick), after an idle timeout without events, or by LRU eviction
//!   beyond `capacity`; their unanswered requests are then reported as
//!   timeouts.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use fathom_ebpf::{
    Comm, Direction as Way, Event, L4Proto, ProcessEventKind, SocketDataEvent, SocketEvent,
    SocketEventKind,
};
use fathom_protocols::{Direction, SessionLimits, Transport};
use lru::LruCache;

use super::l7::{FeedCounts, MsgMeta, SocketL7, Stamp};
use crate::flow::RecordSink;
use crate::pipeline::merge::LocalSocket;
use crate::records::{CaptureSource, FlowTuple, L4Protocol, ObservationPoint, ProcessRef};

#[derive(Clone, Debug)]
pub struct SocketFlowConfig {
    /// Sockets tracked at once; the least recently used is evicted.
    pub capacity: usize,
    /// A TCP socket without events for this long is forgotten.
    pub idle_timeout: Duration,
    /// Likewise a UDP peer (UDP has no close for most sockets' peers).
    pub udp_idle_timeout: Duration,
    /// A request with no response after this is reported as timed out.
    pub l7_request_timeout: Duration,
    /// Messages with payload tried for L7 detection before a socket is
    /// treated as not speaking a known protocol.
    pub detect_messages: u8,
    pub session_limits: SessionLimits,
    /// Added to the events' CLOCK_MONOTONIC timestamps to get Unix time
    /// (`EbpfCapture::to_unix_ns(0)`).
    pub unix_offset_ns: u64,
    /// Exited processes remembered between ticks; beyond it their sockets
    /// are left to the idle timeout.
    pub max_exited: usize,
    /// An L7 session with nothing in flight and no event for this long
    /// gives back its reusable buffers at the next tick.
    pub release_idle_after: Duration,
}

impl Default for SocketFlowConfig {
    fn default() -> Self {
        SocketFlowConfig {
            capacity: 100_000,
            idle_timeout: Duration::from_secs(300),
            udp_idle_timeout: Duration::from_secs(30),
            l7_request_timeout: Duration::from_secs(10),
            detect_messages: 4,
            session_limits: SessionLimits::default(),
            unix_offset_ns: 0,
            max_exited: 4096,
            release_idle_after: Duration::from_secs(1),
        }
    }
}

/// Counters of everything the engine saw, made and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketFlowStats {
    pub data_events: u64,
    /// TLS plaintext events among them.
    pub tls_events: u64,
    pub connects: u64,
    pub accepts: u64,
    pub closes: u64,
    pub process_events: u64,
    /// Data events with nothing moved (no bytes to parse).
    pub empty_events: u64,
    pub sockets_active: u64,
    pub sockets_created: u64,
    pub sockets_closed: u64,
    pub sockets_evicted: u64,
    pub sockets_idle: u64,
    /// Sockets ended because their process exited.
    pub sockets_exited: u64,
    pub l7_detected: u64,
    /// Sockets given up on as not speaking a known protocol.
    pub l7_undetected: u64,
    /// Sockets whose syscalls carry TLS records: given up at once (their
    /// plaintext comes from the SSL uprobes when the library is OpenSSL).
    pub tls_ciphertext: u64,
    pub l7_parse_errors: u64,
    pub l7_records: u64,
    pub l7_timeouts: u64,
    /// Process exits not remembered because `max_exited` was reached.
    pub exits_dropped: u64,
}

/// Which end of the connection this socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Client,
    Server,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketKey {
    pub pid: u32,
    pub fd: i32,
    /// Plaintext from the SSL uprobes rather than the socket's own bytes.
    pub tls: bool,
    pub l4: L4Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl SocketKey {
    fn of_data(e: &SocketDataEvent) -> SocketKey {
        SocketKey {
            pid: e.pid,
            fd: e.fd,
            tls: e.is_tls(),
            l4: e.l4,
            local: e.local(),
            remote: e.remote(),
        }
    }

    fn of_socket(e: &SocketEvent, tls: bool) -> SocketKey {
        // connect/close report the local end as `src`, accept the peer.
        let (local, remote) = match e.kind {
            SocketEventKind::Accept => (e.dst, e.src),
            SocketEventKind::Connect | SocketEventKind::Close => (e.src, e.dst),
        };
        SocketKey { pid: e.pid, fd: e.fd, tls, l4: e.l4, local, remote }
    }

    fn transport(&self) -> Transport {
        match self.l4 {
            L4Proto::Tcp => Transport::Tcp,
            L4Proto::Udp => Transport::Udp,
        }
    }

    /// The packet side's key of this socket's connection; None when an
    /// end is not a real address (an unconnected UDP socket's wildcard).
    fn flow_key(&self) -> Option<crate::flow::FlowKey> {
        let (l, r) = (self.local.ip().to_canonical(), self.remote.ip().to_canonical());
        if l.is_unspecified() || r.is_unspecified() || self.remote.port() == 0 {
            return None;
        }
        let proto = match self.l4 {
            L4Proto::Tcp => L4Protocol::Tcp,
            L4Proto::Udp => L4Protocol::Udp,
        };
        Some(crate::flow::FlowKey::of(l, self.local.port(), r, self.remote.port(), proto).0)
    }

    fn tuple(&self, role: Role) -> FlowTuple {
        let (client, server) = match role {
            Role::Server => (self.remote, self.local),
            Role::Client | Role::Unknown => (self.local, self.remote),
        };
        FlowTuple {
            client_ip: client.ip(),
            client_port: client.port(),
            server_ip: server.ip(),
            server_port: server.port(),
            protocol: match self.l4 {
                L4Proto::Tcp => L4Protocol::Tcp,
                L4Proto::Udp => L4Protocol::Udp,
            },
        }
    }
}

enum L7 {
    /// Messages with payload tried so far.
    Detecting(u8),
    Active(Box<SocketL7>),
    Off,
}

struct SocketFlow {
    role: Role,
    l7: L7,
    /// The thread name of the first event: the process's name as the kernel
    /// knows it (`comm`).
    comm: Comm,
    last_us: u64,
}

impl SocketFlow {
    fn new(role: Role, comm: Comm, now_us: u64) -> SocketFlow {
        SocketFlow { role, l7: L7::Detecting(0), comm, last_us: now_us }
    }

    /// Report what is still pending, as the socket ends.
    fn finish(mut self, key: &SocketKey, sink: &mut dyn RecordSink, stats: &mut SocketFlowStats) {
        if let L7::Active(l7) = &mut self.l7 {
            let mut counts = FeedCounts::default();
            let stamp = flow_stamp(key, self.role, &self.comm);
            l7.expire(0, 0, true, &stamp, sink, &mut counts);
            add(stats, &counts);
        }
    }
}

fn add(stats: &mut SocketFlowStats, c: &FeedCounts) {
    stats.l7_records += c.records;
    stats.l7_parse_errors += c.parse_errors;
    stats.l7_timeouts += c.timeouts;
}

/// TLS record header: handshake, alert, change cipher spec or application
/// data, version 3.x. What a TLS socket's syscalls carry.
fn is_tls_record(b: &[u8]) -> bool {
    b.len() >= 3 && matches!(b[0], 0x14..=0x17) && b[1] == 3 && b[2] <= 4
}

pub struct SocketFlowEngine {
    cfg: SocketFlowConfig,
    table: LruCache<SocketKey, SocketFlow>,
    stats: SocketFlowStats,
    exited: Vec<u32>,
    /// Keys to end after a tick's scan, reused.
    expired: Vec<SocketKey>,
    /// Sockets to announce to the packet shards (role known, L7 detected).
    announce: Option<Vec<LocalSocket>>,
    /// Payload buffers of processed events, to give back to the reader.
    spent: Vec<Vec<u8>>,
}

impl SocketFlowEngine {
    pub fn new(cfg: SocketFlowConfig) -> SocketFlowEngine {
        let cap = NonZeroUsize::new(cfg.capacity).unwrap_or(NonZeroUsize::MIN);
        SocketFlowEngine {
            cfg,
            table: LruCache::new(cap),
            stats: SocketFlowStats::default(),
            exited: Vec::new(),
            expired: Vec::new(),
            announce: None,
            spent: Vec::new(),
        }
    }

    /// Collect [`LocalSocket`] announcements for the packet side (taken
    /// with [`take_announcements`](Self::take_announcements)).
    pub fn set_announcing(&mut self, on: bool) {
        self.announce = on.then(Vec::new);
    }

    /// Announcements since the last call.
    pub fn take_announcements(&mut self, into: &mut Vec<LocalSocket>) {
        if let Some(a) = self.announce.as_mut() {
            into.append(a);
        }
    }

    pub fn config(&self) -> &SocketFlowConfig {
        &self.cfg
    }

    pub fn stats(&self) -> SocketFlowStats {
        SocketFlowStats { sockets_active: self.table.len() as u64, ..self.stats }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Unix microseconds of an event timestamp.
    pub fn unix_us(&self, ts_ns: u64) -> u64 {
        ts_ns.saturating_add(self.cfg.unix_offset_ns) / 1000
    }

    pub fn process(&mut self, event: Event, sink: &mut dyn RecordSink) {
        match event {
            Event::Data(d) => self.on_data(d, sink),
            Event::Socket(s) => self.on_socket(s, sink),
            Event::Process(p) => {
                self.stats.process_events += 1;
                if let ProcessEventKind::Exit { .. } = p.kind {
                    if self.exited.len() < self.cfg.max_exited {
                        self.exited.push(p.pid);
                    } else {
                        self.stats.exits_dropped += 1;
                    }
                }
            }
        }
    }

    /// Insert a socket, ending the one evicted to make room.
    fn insert(&mut self, key: SocketKey, flow: SocketFlow, sink: &mut dyn RecordSink) {
        self.stats.sockets_created += 1;
        if let Some((old_key, old)) = self.table.push(key, flow) {
            if old_key != key {
                self.stats.sockets_evicted += 1;
                old.finish(&old_key, sink, &mut self.stats);
            }
        }
    }

    fn on_socket(&mut self, e: SocketEvent, sink: &mut dyn RecordSink) {
        let now = self.unix_us(e.ts_ns);
        match e.kind {
            SocketEventKind::Connect | SocketEventKind::Accept => {
                let (role, count) = if e.kind == SocketEventKind::Connect {
                    (Role::Client, &mut self.stats.connects)
                } else {
                    (Role::Server, &mut self.stats.accepts)
                };
                *count += 1;
                let key = SocketKey::of_socket(&e, false);
                // A new connection on a reused fd and tuple starts afresh.
                if let Some(old) = self.table.pop(&key) {
                    self.stats.sockets_closed += 1;
                    old.finish(&key, sink, &mut self.stats);
                }
                if let (Some(a), Some(k)) = (self.announce.as_mut(), key.flow_key()) {
                    let process = ProcessRef { pid: e.pid, tid: e.tid, name: e.comm.to_string() };
                    a.push(LocalSocket {
                        key: k,
                        local_ip: key.local.ip().to_canonical(),
                        client: role == Role::Client,
                        process,
                        l7: false,
                    });
                }
                self.insert(key, SocketFlow::new(role, e.comm, now), sink);
            }
            SocketEventKind::Close => {
                self.stats.closes += 1;
                for tls in [false, true] {
                    let key = SocketKey::of_socket(&e, tls);
                    if let Some(f) = self.table.pop(&key) {
                        self.stats.sockets_closed += 1;
                        f.finish(&key, sink, &mut self.stats);
                    }
                }
            }
        }
    }

    fn on_data(&mut self, e: SocketDataEvent, sink: &mut dyn RecordSink) {
        self.on_data_bytes(&e, sink);
        if e.payload.capacity() > 0 && self.spent.len() < fathom_ebpf::MAX_SPARE_BUFFERS {
            self.spent.push(e.payload);
        }
    }

    /// Payload buffers of the events processed since the last call, for
    /// the reader to decode later events into ([`fathom_ebpf::EbpfCapture::recycle`]).
    pub fn take_spent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.spent)
    }

    fn on_data_bytes(&mut self, e: &SocketDataEvent, sink: &mut dyn RecordSink) {
        self.stats.data_events += 1;
        self.stats.tls_events += u64::from(e.is_tls());
        if e.payload.is_empty() {
            self.stats.empty_events += 1;
            return;
        }
        let now = self.unix_us(e.ts_ns);
        let key = SocketKey::of_data(e);
        if !self.table.contains(&key) {
            // Plaintext of a socket takes the role its syscalls revealed.
            let role = if key.tls {
                let raw = SocketKey { tls: false, ..key };
                self.table.peek(&raw).map_or(Role::Unknown, |f| f.role)
            } else {
                Role::Unknown
            };
            self.insert(key, SocketFlow::new(role, e.comm, now), sink);
        }
        let cfg = &self.cfg;
        let stats = &mut self.stats;
        let Some(flow) = self.table.get_mut(&key) else { return };
        flow.last_us = flow.last_us.max(now);
        let way_dir = |role: Role| match (role, e.direction) {
            (Role::Client, Way::Egress) | (Role::Server, Way::Ingress) => Some(Direction::Request),
            (Role::Client, Way::Ingress) | (Role::Server, Way::Egress) => Some(Direction::Response),
            (Role::Unknown, _) => None,
        };
        if let L7::Detecting(tries) = flow.l7 {
            if !key.tls && is_tls_record(&e.payload) {
                stats.tls_ciphertext += 1;
                flow.l7 = L7::Off;
                return;
            }
            let hint = way_dir(flow.role);
            match fathom_protocols::detect(&e.payload, key.transport(), hint) {
                Some((protocol, dir)) => {
                    match SocketL7::new(protocol, key.transport(), cfg.session_limits) {
                        Some(l7) => {
                            stats.l7_detected += 1;
                            flow.l7 = L7::Active(Box::new(l7));
                            if flow.role == Role::Unknown {
                                flow.role = match (dir, e.direction) {
                                    (Direction::Request, Way::Egress)
                                    | (Direction::Response, Way::Ingress) => Role::Client,
                                    _ => Role::Server,
                                };
                            }
                            if let (Some(a), Some(k)) = (self.announce.as_mut(), key.flow_key()) {
                                let name = flow.comm.to_string();
                                a.push(LocalSocket {
                                    key: k,
                                    local_ip: key.local.ip().to_canonical(),
                                    client: flow.role == Role::Client,
                                    process: ProcessRef { pid: e.pid, tid: e.tid, name },
                                    l7: true,
                                });
                            }
                        }
                        None => {
                            stats.l7_undetected += 1;
                            flow.l7 = L7::Off;
                        }
                    }
                }
                None if tries + 1 >= cfg.detect_messages => {
                    stats.l7_undetected += 1;
                    flow.l7 = L7::Off;
                }
                None => flow.l7 = L7::Detecting(tries + 1),
            }
        }
        let Some(dir) = way_dir(flow.role) else { return };
        let L7::Active(l7) = &mut flow.l7 else { return };
        let meta = MsgMeta {
            tid: e.tid,
            seq: (e.l4 == L4Proto::Tcp && !e.is_tls()).then_some(e.tcp_seq),
            trace_id: (e.syscall_trace_id != 0).then_some(e.syscall_trace_id),
        };
        let missing = e.syscall_len.saturating_sub(e.payload.len() as u64);
        let stamp = flow_stamp(&key, flow.role, &flow.comm);
        let mut counts = FeedCounts::default();
        l7.feed(dir, meta, &e.payload, missing, now, &stamp, sink, &mut counts);
        add(stats, &counts);
    }

    /// Time passes (`now_us`, Unix): report unanswered requests past the
    /// timeout, end sockets of exited processes and idle ones. Scans every
    /// socket: call it about once a second.
    pub fn tick(&mut self, now_us: u64, sink: &mut dyn RecordSink) {
        let timeout_us = self.cfg.l7_request_timeout.as_micros() as u64;
        let tcp_idle_us = self.cfg.idle_timeout.as_micros() as u64;
        let udp_idle_us = self.cfg.udp_idle_timeout.as_micros() as u64;
        let release_us = self.cfg.release_idle_after.as_micros() as u64;
        self.exited.sort_unstable();
        self.exited.dedup();
        let SocketFlowEngine { table, stats, exited, expired, .. } = self;
        for (key, flow) in table.iter_mut() {
            if exited.binary_search(&key.pid).is_ok() {
                stats.sockets_exited += 1;
                expired.push(*key);
            } else if now_us.saturating_sub(flow.last_us)
                >= if key.l4 == L4Proto::Udp { udp_idle_us } else { tcp_idle_us }
            {
                stats.sockets_idle += 1;
                expired.push(*key);
            } else if let L7::Active(l7) = &mut flow.l7 {
                let mut counts = FeedCounts::default();
                let stamp = flow_stamp(key, flow.role, &flow.comm);
                l7.expire(now_us, timeout_us, false, &stamp, sink, &mut counts);
                add(stats, &counts);
                if now_us.saturating_sub(flow.last_us) >= release_us {
                    l7.release_idle();
                }
            }
        }
        exited.clear();
        for key in expired.drain(..) {
            if let Some(f) = table.pop(&key) {
                f.finish(&key, sink, stats);
            }
        }
    }

    /// Shutdown: end every socket, reporting unanswered requests.
    pub fn flush(&mut self, sink: &mut dyn RecordSink) {
        while let Some((key, f)) = self.table.pop_lru() {
            f.finish(&key, sink, &mut self.stats);
        }
    }
}

fn flow_stamp<'a>(key: &SocketKey, role: Role, comm: &'a str) -> Stamp<'a> {
    Stamp {
        tuple: key.tuple(role),
        source: if key.tls { CaptureSource::Tls } else { CaptureSource::Syscall },
        point: match role {
            Role::Server => ObservationPoint::ServerProcess,
            Role::Client | Role::Unknown => ObservationPoint::ClientProcess,
        },
        pid: key.pid,
        comm,
    }
}
