//! One flow's state: orientation, TCP tracking, counters per sender, the
//! reassembly streams and the L7 side. Driven packet by packet by the engine.

use fathom_protocols::{Direction, Transport};

use super::key::{first_sender_is_client, FlowKey};
use super::l7::{FeedCounts, L7State, Stamp, L7};
use super::reasm::{seq_diff, ReasmCounters, SegClass, Stream};
use super::{FlowConfig, FlowStats, RecordSink};
use crate::packet::{tcp_flags::*, PacketView, TcpHeader};
use crate::records::{CloseType, DirectionCounters, FlowTuple, L4Flow, L4Protocol};

/// What the engine lends a flow while it handles an event.
pub(crate) struct Cx<'a> {
    pub cfg: &'a FlowConfig,
    pub stats: &'a mut FlowStats,
    pub sink: &'a mut dyn RecordSink,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TcpState {
    /// SYN seen, no SYN-ACK yet.
    SynSent,
    /// SYN-ACK seen, the client's ACK not yet.
    SynReceived,
    Established,
    /// A FIN seen.
    Closing,
    /// Ended by FINs acknowledged both ways or a RST; kept for a short
    /// linger so the connection's last packets are still counted.
    Closed(CloseType),
}

/// One sender's half of a flow.
#[derive(Default)]
struct Side {
    c: DirectionCounters,
    stream: Stream,
    fin: bool,
    fin_acked: bool,
    /// Sequence number just after this side's FIN.
    fin_end: u32,
}

pub(crate) struct Flow {
    /// Whether endpoint A of the key is the client.
    client_is_a: bool,
    /// Orientation known from a handshake or L7 detection, not guessed.
    oriented: bool,
    pub state: TcpState,
    start_us: u64,
    pub last_us: u64,
    last_report_us: u64,
    /// Counters per sender: [A, B].
    sides: [Side; 2],
    syn_ack: u32,
    syn_us: u64,
    synack_us: u64,
    /// The ACK number that completes the handshake.
    handshake_ack: u32,
    rtt_server_us: Option<u64>,
    rtt_client_us: Option<u64>,
    l7: L7,
}

fn side(from_a: bool) -> usize {
    if from_a {
        0
    } else {
        1
    }
}

pub(crate) fn tuple(key: &FlowKey, client_is_a: bool) -> FlowTuple {
    let (ci, cp, si, sp) = if client_is_a {
        (key.a_ip, key.a_port, key.b_ip, key.b_port)
    } else {
        (key.b_ip, key.b_port, key.a_ip, key.a_port)
    };
    FlowTuple {
        client_ip: ci,
        client_port: cp,
        server_ip: si,
        server_port: sp,
        protocol: key.protocol,
    }
}

/// Feed in-order bytes from one sender to the flow's L7 side, detecting the
/// protocol first if need be.
#[allow(clippy::too_many_arguments)]
fn deliver(
    l7: &mut L7,
    client_is_a: &mut bool,
    oriented: &mut bool,
    key: &FlowKey,
    from_a: bool,
    seq: Option<u32>,
    data: &[u8],
    missing: u64,
    ts_us: u64,
    cx: &mut Cx<'_>,
) {
    let transport = match key.protocol {
        L4Protocol::Tcp => Transport::Tcp,
        L4Protocol::Udp => Transport::Udp,
    };
    if let L7::Detecting(tries) = l7 {
        if data.is_empty() {
            return;
        }
        let from_client = from_a == *client_is_a;
        let as_dir = |c: bool| if c { Direction::Request } else { Direction::Response };
        let hint = oriented.then_some(as_dir(from_client));
        match fathom_protocols::detect(data, transport, hint) {
            Some((proto, dir)) => {
                if dir != as_dir(from_client) {
                    // The guess was wrong: the protocol says who asks.
                    *client_is_a = !*client_is_a;
                }
                *oriented = true;
                match L7State::new(proto, transport, cx.cfg.session_limits) {
                    Some(st) => {
                        cx.stats.l7_detected += 1;
                        *l7 = L7::Active(Box::new(st));
                    }
                    None => {
                        cx.stats.l7_undetected += 1;
                        *l7 = L7::Off;
                        return;
                    }
                }
            }
            None => {
                let t = &mut tries[side(from_a)];
                *t = t.saturating_add(1);
                let max = cx.cfg.detect_packets;
                let (ta, tb) = (tries[0], tries[1]);
                if (ta >= max && tb >= max) || u32::from(ta) + u32::from(tb) >= 4 * u32::from(max) {
                    cx.stats.l7_undetected += 1;
                    *l7 = L7::Off;
                }
                return;
            }
        }
    }
    if let L7::Active(st) = l7 {
        let dir = if from_a == *client_is_a { Direction::Request } else { Direction::Response };
        let stamp = Stamp {
            tuple: tuple(key, *client_is_a),
            source: cx.cfg.source,
            interface: &cx.cfg.interface,
        };
        let mut n = FeedCounts::default();
        st.feed(dir, seq, data, missing, ts_us, &stamp, cx.sink, &mut n);
        cx.stats.add(&n);
    }
}

impl Flow {
    pub fn new(from_a: bool, p: &PacketView<'_>, tcp: Option<&TcpHeader>) -> Flow {
        let (syn, ack) = tcp.map_or((false, false), |h| (h.has(SYN), h.has(ACK)));
        let (sender_is_client, oriented) =
            first_sender_is_client(p.src_port, p.dst_port, syn, ack, tcp.is_some());
        Flow {
            client_is_a: sender_is_client == from_a,
            oriented,
            state: if syn { TcpState::SynSent } else { TcpState::Established },
            start_us: p.ts_us,
            last_us: p.ts_us,
            last_report_us: p.ts_us,
            sides: Default::default(),
            syn_ack: 0,
            syn_us: 0,
            synack_us: 0,
            handshake_ack: 0,
            rtt_server_us: None,
            rtt_client_us: None,
            l7: L7::Detecting([0; 2]),
        }
    }

    fn count(&mut self, s: usize, p: &PacketView<'_>) {
        let c = &mut self.sides[s].c;
        c.packets += 1;
        c.bytes += u64::from(p.wire_len);
        c.payload_bytes += u64::from(p.payload_len);
        self.last_us = self.last_us.max(p.ts_us);
    }

    /// Handle a TCP segment; returns how the flow ended if it did.
    pub fn on_tcp(
        &mut self,
        key: &FlowKey,
        from_a: bool,
        p: &PacketView<'_>,
        h: &TcpHeader,
        cx: &mut Cx<'_>,
        reasm: &mut ReasmCounters,
    ) -> Option<CloseType> {
        let s = side(from_a);
        let o = 1 - s;
        self.count(s, p);
        let ts = p.ts_us;
        let (syn, ack, fin, rst) = (h.has(SYN), h.has(ACK), h.has(FIN), h.has(RST));
        {
            let c = &mut self.sides[s].c;
            if rst {
                c.rst += 1;
            } else if h.window == 0 {
                c.zero_windows += 1;
            }
            if fin {
                c.fin += 1;
            }
        }
        if syn && !ack {
            self.sides[s].c.syn += 1;
            if !self.oriented || self.client_is_a != from_a {
                // Whoever sends a SYN is the client.
                self.client_is_a = from_a;
                self.oriented = true;
            }
            let st = &mut self.sides[s].stream;
            if st.is_known() && st.next_seq() == h.seq.wrapping_add(1) {
                self.sides[s].c.retransmissions += 1;
            }
            st.init(h.seq.wrapping_add(1));
            self.syn_us = ts;
            if self.state == TcpState::Established && !self.sides[o].stream.is_known() {
                self.state = TcpState::SynSent;
            }
        } else if syn {
            self.syn_ack += 1;
            if !self.oriented {
                self.client_is_a = !from_a;
                self.oriented = true;
            }
            let st = &mut self.sides[s].stream;
            if st.is_known() && st.next_seq() == h.seq.wrapping_add(1) {
                self.sides[s].c.retransmissions += 1;
            }
            st.init(h.seq.wrapping_add(1));
            if self.synack_us == 0 {
                self.synack_us = ts;
                if self.syn_us > 0 {
                    self.rtt_server_us = Some(ts.saturating_sub(self.syn_us));
                }
            }
            self.handshake_ack = h.seq.wrapping_add(1);
            if self.state == TcpState::SynSent {
                self.state = TcpState::SynReceived;
            }
        } else if self.state == TcpState::SynReceived
            && ack
            && from_a == self.client_is_a
            && h.ack == self.handshake_ack
        {
            self.rtt_client_us = Some(ts.saturating_sub(self.synack_us));
            self.state = TcpState::Established;
        } else if matches!(self.state, TcpState::SynSent | TcpState::SynReceived)
            && p.payload_len > 0
        {
            self.state = TcpState::Established;
        }

        if p.payload_len > 0 {
            let keep = !matches!(self.l7, L7::Off);
            let lim = cx.cfg.reasm_limits();
            let Flow { sides, l7, client_is_a, oriented, .. } = self;
            let seg = p.payload_len.min(u32::MAX / 2);
            let mut out = |seq: u32, data: &[u8], missing: u64| {
                deliver(l7, client_is_a, oriented, key, from_a, Some(seq), data, missing, ts, cx)
            };
            let cls =
                sides[s].stream.segment(h.seq, p.payload, seg, ts, keep, &lim, reasm, &mut out);
            match cls {
                SegClass::InOrder => {}
                SegClass::Retransmission => sides[s].c.retransmissions += 1,
                SegClass::OutOfOrder => sides[s].c.out_of_order += 1,
            }
        }

        if fin {
            let end = h.seq.wrapping_add(p.payload_len).wrapping_add(1);
            let sd = &mut self.sides[s];
            if sd.fin && sd.fin_end == end && p.payload_len == 0 {
                sd.c.retransmissions += 1;
            }
            sd.fin = true;
            sd.fin_end = end;
            if !self.is_closed() {
                self.state = TcpState::Closing;
            }
            self.flush_side(s, key, ts, cx, reasm);
        }
        if ack {
            let other = &mut self.sides[o];
            if other.fin && !other.fin_acked && seq_diff(h.ack, other.fin_end) >= 0 {
                other.fin_acked = true;
            }
        }
        if let TcpState::Closed(_) = self.state {
            return None;
        }
        let [a, b] = &self.sides;
        let end = if rst {
            Some(if from_a == self.client_is_a {
                CloseType::ClientReset
            } else {
                CloseType::ServerReset
            })
        } else {
            (a.fin && b.fin && a.fin_acked && b.fin_acked).then_some(CloseType::Fin)
        };
        let end = end?;
        if cx.cfg.tcp_closed_linger.is_zero() {
            return Some(end);
        }
        self.state = TcpState::Closed(end);
        None
    }

    /// Whether a SYN for this 5-tuple starts a new connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, TcpState::Closed(_))
    }

    /// How the flow ends if the engine stops now.
    pub fn close_type_now(&self) -> CloseType {
        match self.state {
            TcpState::Closed(c) => c,
            _ => CloseType::Shutdown,
        }
    }

    /// Handle a UDP datagram; a DNS exchange ends the flow once answered.
    pub fn on_udp(
        &mut self,
        key: &FlowKey,
        from_a: bool,
        p: &PacketView<'_>,
        cx: &mut Cx<'_>,
    ) -> Option<CloseType> {
        self.count(side(from_a), p);
        if p.payload.is_empty() {
            return None;
        }
        let missing = u64::from(p.payload_len).saturating_sub(p.payload.len() as u64);
        let Flow { l7, client_is_a, oriented, .. } = self;
        deliver(l7, client_is_a, oriented, key, from_a, None, p.payload, missing, p.ts_us, cx);
        match &self.l7 {
            L7::Active(st)
                if st.protocol == fathom_protocols::L7Protocol::Dns
                    && from_a != self.client_is_a
                    && st.session.pending() == 0 =>
            {
                Some(CloseType::Fin)
            }
            _ => None,
        }
    }

    /// Give up the holes in one sender's stream and deliver what waited.
    fn flush_side(
        &mut self,
        s: usize,
        key: &FlowKey,
        ts: u64,
        cx: &mut Cx<'_>,
        reasm: &mut ReasmCounters,
    ) {
        let Flow { sides, l7, client_is_a, oriented, .. } = self;
        if !sides[s].stream.has_pending() {
            return;
        }
        let from_a = s == 0;
        let mut out = |seq: u32, data: &[u8], missing: u64| {
            deliver(l7, client_is_a, oriented, key, from_a, Some(seq), data, missing, ts, cx)
        };
        sides[s].stream.flush(reasm, &mut out);
    }

    /// Periodic work: stale reassembly holes, L7 request timeouts, idle
    /// timeouts and the record of long flows. Returns how the flow ended.
    pub fn tick(
        &mut self,
        key: &FlowKey,
        now_us: u64,
        cx: &mut Cx<'_>,
        reasm: &mut ReasmCounters,
    ) -> Option<CloseType> {
        let cfg = cx.cfg;
        for s in 0..2 {
            if self.sides[s].stream.stale(now_us, us(cfg.reassembly_timeout)) {
                self.flush_side(s, key, now_us, cx, reasm);
            }
        }
        if let L7::Active(st) = &mut self.l7 {
            if st.session.pending() > 0 {
                let stamp = Stamp {
                    tuple: tuple(key, self.client_is_a),
                    source: cfg.source,
                    interface: &cfg.interface,
                };
                let mut n = FeedCounts::default();
                st.expire(now_us, us(cfg.l7_request_timeout), false, &stamp, cx.sink, &mut n);
                cx.stats.add(&n);
            }
            if now_us.saturating_sub(self.last_us) >= us(cfg.release_idle_after) {
                st.release_idle();
            }
        }
        let idle = now_us.saturating_sub(self.last_us);
        let (timeout, close) = match key.protocol {
            L4Protocol::Udp => (cfg.udp_timeout, CloseType::Idle),
            L4Protocol::Tcp => match self.state {
                TcpState::SynSent | TcpState::SynReceived => {
                    (cfg.tcp_handshake_timeout, CloseType::HandshakeTimeout)
                }
                TcpState::Established => (cfg.tcp_established_timeout, CloseType::Idle),
                TcpState::Closing => {
                    let both = self.sides[0].fin && self.sides[1].fin;
                    (cfg.tcp_closing_timeout, if both { CloseType::Fin } else { CloseType::Idle })
                }
                TcpState::Closed(c) => (cfg.tcp_closed_linger, c),
            },
        };
        if idle >= us(timeout) {
            return Some(close);
        }
        if now_us.saturating_sub(self.last_report_us) >= us(cfg.report_interval) {
            let rec = self.l4_record(key, CloseType::Open, cx.cfg);
            self.last_report_us = now_us;
            // Once a record went out, the orientation must not change.
            self.oriented = true;
            cx.stats.l4_records += 1;
            cx.sink.l4(rec);
        }
        None
    }

    /// End the flow: deliver what waits, time out unanswered requests, and
    /// emit its final L4 record.
    pub fn finish(
        mut self,
        key: &FlowKey,
        close: CloseType,
        cx: &mut Cx<'_>,
        reasm: &mut ReasmCounters,
    ) {
        let ts = self.last_us;
        self.flush_side(0, key, ts, cx, reasm);
        self.flush_side(1, key, ts, cx, reasm);
        if let L7::Active(st) = &mut self.l7 {
            let stamp = Stamp {
                tuple: tuple(key, self.client_is_a),
                source: cx.cfg.source,
                interface: &cx.cfg.interface,
            };
            let mut n = FeedCounts::default();
            st.expire(ts, 0, true, &stamp, cx.sink, &mut n);
            cx.stats.add(&n);
        }
        let rec = self.l4_record(key, close, cx.cfg);
        cx.stats.l4_records += 1;
        cx.sink.l4(rec);
    }

    /// The L4 record since the previous one: counters are per record (a
    /// flow's records add up to its totals), times span the whole flow.
    fn l4_record(&mut self, key: &FlowKey, close: CloseType, cfg: &FlowConfig) -> L4Flow {
        let (c, s) = if self.client_is_a { (0, 1) } else { (1, 0) };
        L4Flow {
            flow: tuple(key, self.client_is_a),
            source: cfg.source,
            interface: cfg.interface.clone(),
            start_time_us: self.start_us,
            end_time_us: self.last_us,
            duration_us: self.last_us - self.start_us,
            tx: std::mem::take(&mut self.sides[c].c),
            rx: std::mem::take(&mut self.sides[s].c),
            syn_ack: std::mem::take(&mut self.syn_ack),
            rtt_server_us: self.rtt_server_us,
            rtt_client_us: self.rtt_client_us,
            close_type: close,
            l7_protocol: match &self.l7 {
                L7::Active(st) => Some(st.protocol.as_str().to_string()),
                _ => None,
            },
            client_process: None,
            server_process: None,
        }
    }
}

pub(crate) fn us(d: std::time::Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}
