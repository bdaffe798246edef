//! Our side: read a pcap, decode Ethernet/IPv4/IPv6/TCP/UDP by hand,
//! reassemble each TCP direction in sequence order, detect the protocol from
//! a flow's first payload and drive one `Session` per connection.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::IpAddr;

use fathom_protocols::{
    detect, AnyParser, Direction, L7Protocol, L7Record, MessageType, Session, Transport,
};
use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;

/// One record our crate produced, with the connection it came from.
#[derive(Clone, Debug)]
pub struct OurRecord {
    /// The client's port: identifies the connection within one capture.
    pub client_port: u16,
    pub transport: Transport,
    pub rec: L7Record,
    pub start_us: u64,
}

/// What happened to each flow: detection outcome, for diagnostics.
#[derive(Clone, Debug)]
pub struct FlowInfo {
    pub client_port: u16,
    pub server_port: u16,
    pub transport: Transport,
    pub detected: Option<(L7Protocol, Direction)>,
    /// First payload bytes seen (either direction), for messages on failure.
    pub first_bytes: Vec<u8>,
    pub bytes: [u64; 2],
}

pub struct Decoded {
    pub records: Vec<OurRecord>,
    pub flows: Vec<FlowInfo>,
    pub packets: usize,
}

impl Decoded {
    pub fn print_flows(&self) {
        for f in &self.flows {
            let det = match f.detected {
                Some((p, d)) => format!("{p} (first bytes travel {d:?})"),
                None => "NOT DETECTED".to_string(),
            };
            eprintln!(
                "  flow {:?} client :{} -> server :{}: {} req bytes, {} resp bytes, {det}; first bytes: {}",
                f.transport,
                f.client_port,
                f.server_port,
                f.bytes[0],
                f.bytes[1],
                escape(&f.first_bytes[..f.first_bytes.len().min(48)])
            );
        }
    }
}

pub fn escape(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Endpoint {
    ip: IpAddr,
    port: u16,
}

struct Packet<'a> {
    src: Endpoint,
    dst: Endpoint,
    transport: Transport,
    /// TCP only.
    seq: u32,
    syn: bool,
    ack: bool,
    fin: bool,
    payload: &'a [u8],
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(off)?, *b.get(off + 1)?, *b.get(off + 2)?, *b.get(off + 3)?]))
}

/// Link layer -> (ethertype, network bytes).
fn link(dl: DataLink, data: &[u8]) -> Option<(u16, &[u8])> {
    match dl {
        DataLink::ETHERNET => {
            let mut et = be16(data, 12)?;
            let mut off = 14;
            while et == 0x8100 || et == 0x88a8 {
                et = be16(data, off + 2)?;
                off += 4;
            }
            Some((et, data.get(off..)?))
        }
        DataLink::LINUX_SLL => Some((be16(data, 14)?, data.get(16..)?)),
        DataLink::LINUX_SLL2 => Some((be16(data, 0)?, data.get(20..)?)),
        DataLink::NULL => {
            let fam = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            let et = if fam == 2 { 0x0800 } else { 0x86dd };
            Some((et, data.get(4..)?))
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
            let v = data.first()? >> 4;
            Some((if v == 4 { 0x0800 } else { 0x86dd }, data))
        }
        other => panic!("unsupported pcap link type {other:?}"),
    }
}

fn decode(dl: DataLink, data: &[u8]) -> Option<Packet<'_>> {
    let (et, net) = link(dl, data)?;
    let (src_ip, dst_ip, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match et {
        0x0800 => {
            let ihl = ((*net.first()? & 0x0f) as usize) * 4;
            let total = be16(net, 2)? as usize;
            let frag = be16(net, 6)?;
            if frag & 0x3fff != 0 {
                return None; // fragments: not produced on loopback here
            }
            let src: [u8; 4] = net.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = net.get(16..20)?.try_into().ok()?;
            let end = total.min(net.len());
            (src.into(), dst.into(), net[9], net.get(ihl..end)?)
        }
        0x86dd => {
            let plen = be16(net, 4)? as usize;
            let mut next = *net.get(6)?;
            let src: [u8; 16] = net.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = net.get(24..40)?.try_into().ok()?;
            let mut off = 40;
            let end = (40 + plen).min(net.len());
            // Skip hop-by-hop, routing, destination options headers.
            while matches!(next, 0 | 43 | 60) {
                next = *net.get(off)?;
                off += (*net.get(off + 1)? as usize + 1) * 8;
            }
            (src.into(), dst.into(), next, net.get(off..end)?)
        }
        _ => return None,
    };
    match proto {
        6 => {
            let sp = be16(l4, 0)?;
            let dp = be16(l4, 2)?;
            let seq = be32(l4, 4)?;
            let doff = ((*l4.get(12)? >> 4) as usize) * 4;
            let flags = *l4.get(13)?;
            Some(Packet {
                src: Endpoint { ip: src_ip, port: sp },
                dst: Endpoint { ip: dst_ip, port: dp },
                transport: Transport::Tcp,
                seq,
                syn: flags & 0x02 != 0,
                ack: flags & 0x10 != 0,
                fin: flags & 0x01 != 0,
                payload: l4.get(doff..)?,
            })
        }
        17 => {
            let sp = be16(l4, 0)?;
            let dp = be16(l4, 2)?;
            let len = (be16(l4, 4)? as usize).min(l4.len());
            Some(Packet {
                src: Endpoint { ip: src_ip, port: sp },
                dst: Endpoint { ip: dst_ip, port: dp },
                transport: Transport::Udp,
                seq: 0,
                syn: false,
                ack: false,
                fin: false,
                payload: l4.get(8..len)?,
            })
        }
        _ => None,
    }
}

/// One direction of a TCP connection being put back in order.
#[derive(Default)]
struct HalfStream {
    next_seq: Option<u32>,
    /// Out-of-order segments by sequence number (bounded).
    ooo: BTreeMap<u32, Vec<u8>>,
    ooo_bytes: usize,
    fin: bool,
}

const MAX_OOO_BYTES: usize = 4 << 20;

impl HalfStream {
    /// Accept a segment; return the in-order bytes it makes available.
    fn segment(&mut self, seq: u32, syn: bool, payload: &[u8], out: &mut Vec<u8>) {
        if syn {
            self.next_seq = Some(seq.wrapping_add(1));
            if payload.is_empty() {
                return;
            }
        }
        if payload.is_empty() {
            return;
        }
        let seq = if syn { seq.wrapping_add(1) } else { seq };
        let next = *self.next_seq.get_or_insert(seq);
        let diff = seq.wrapping_sub(next) as i32;
        if diff > 0 {
            // A gap: keep for later, bounded.
            if self.ooo_bytes + payload.len() <= MAX_OOO_BYTES {
                self.ooo_bytes += payload.len();
                let e = self.ooo.entry(seq).or_default();
                if payload.len() > e.len() {
                    self.ooo_bytes -= e.len();
                    *e = payload.to_vec();
                } else {
                    self.ooo_bytes -= payload.len();
                }
            }
            return;
        }
        let dup = (-(diff as i64)) as usize;
        if dup < payload.len() {
            out.extend_from_slice(&payload[dup..]);
            self.next_seq = Some(next.wrapping_add((payload.len() - dup) as u32));
        }
        self.drain(out);
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        loop {
            let Some(next) = self.next_seq else { return };
            let Some((&seq, _)) =
                self.ooo.iter().find(|(&s, _)| (s.wrapping_sub(next) as i32) <= 0)
            else {
                return;
            };
            let data = self.ooo.remove(&seq).unwrap();
            self.ooo_bytes -= data.len();
            let dup = next.wrapping_sub(seq) as usize;
            if dup < data.len() {
                out.extend_from_slice(&data[dup..]);
                self.next_seq = Some(next.wrapping_add((data.len() - dup) as u32));
            }
        }
    }
}

struct Flow {
    client: Endpoint,
    server: Endpoint,
    transport: Transport,
    halves: [HalfStream; 2],
    session: Option<Session<AnyParser>>,
    detect_tries: u32,
    info_idx: usize,
}

fn didx(d: Direction) -> usize {
    match d {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

/// Read `path` and run every flow through our parsers. `server_ports` tells
/// which side is the server when a flow's SYN was not captured (and for UDP).
#[allow(clippy::map_entry)]
pub fn decode_pcap(path: &std::path::Path, server_ports: &[u16]) -> Decoded {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut reader =
        PcapReader::new(file).unwrap_or_else(|e| panic!("read pcap {}: {e}", path.display()));
    let dl = reader.header().datalink;
    let mut flows: HashMap<(Endpoint, Endpoint, bool), Flow> = HashMap::new();
    let mut order: Vec<(Endpoint, Endpoint, bool)> = Vec::new();
    let mut infos: Vec<FlowInfo> = Vec::new();
    let mut records: Vec<OurRecord> = Vec::new();
    let mut packets = 0;
    let mut chunk = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap_or_else(|e| panic!("pcap {}: {e}", path.display()));
        packets += 1;
        let ts_us = pkt.timestamp.as_micros() as u64;
        let Some(p) = decode(dl, &pkt.data) else { continue };
        let tcp = p.transport == Transport::Tcp;
        // Canonical key: the smaller endpoint first.
        let (a, b) = if (p.src.ip, p.src.port) <= (p.dst.ip, p.dst.port) {
            (p.src, p.dst)
        } else {
            (p.dst, p.src)
        };
        let key = (a, b, tcp);
        if !flows.contains_key(&key) {
            if tcp && p.payload.is_empty() && !p.syn {
                continue; // a stray ACK/RST of a flow we did not see start
            }
            let src_is_client = if tcp && p.syn {
                !p.ack
            } else if server_ports.contains(&p.dst.port) {
                true
            } else if server_ports.contains(&p.src.port) {
                false
            } else {
                true // first sender is the client
            };
            let (client, server) = if src_is_client { (p.src, p.dst) } else { (p.dst, p.src) };
            infos.push(FlowInfo {
                client_port: client.port,
                server_port: server.port,
                transport: p.transport,
                detected: None,
                first_bytes: Vec::new(),
                bytes: [0, 0],
            });
            flows.insert(
                key,
                Flow {
                    client,
                    server,
                    transport: p.transport,
                    halves: Default::default(),
                    session: None,
                    detect_tries: 0,
                    info_idx: infos.len() - 1,
                },
            );
            order.push(key);
        }
        let flow = flows.get_mut(&key).unwrap();
        let dir = if p.src == flow.client { Direction::Request } else { Direction::Response };
        chunk.clear();
        if tcp {
            let h = &mut flow.halves[didx(dir)];
            h.segment(p.seq, p.syn, p.payload, &mut chunk);
            if p.fin {
                h.fin = true;
            }
        } else {
            chunk.extend_from_slice(p.payload);
        }
        if chunk.is_empty() {
            continue;
        }
        let info = &mut infos[flow.info_idx];
        info.bytes[didx(dir)] += chunk.len() as u64;
        if info.first_bytes.is_empty() {
            info.first_bytes = chunk[..chunk.len().min(64)].to_vec();
        }
        if flow.session.is_none() && flow.detect_tries < 8 {
            flow.detect_tries += 1;
            if let Some((proto, d)) = detect(&chunk, flow.transport, Some(dir)) {
                info.detected = Some((proto, d));
                let parser = AnyParser::new(proto, flow.transport)
                    .unwrap_or_else(|| panic!("no parser for detected {proto}"));
                flow.session = Some(Session::new(parser));
            }
        }
        let client_port = flow.client.port;
        let transport = flow.transport;
        if let Some(s) = flow.session.as_mut() {
            s.feed(dir, &chunk, 0, ts_us, &mut |ev| {
                records.push(OurRecord {
                    client_port,
                    transport,
                    rec: ev.record.clone(),
                    start_us: ev.start_us,
                })
            });
        }
        let _ = flow.server;
    }
    // End of capture: requests still waiting are reported (as timeouts).
    for key in order {
        let flow = flows.get_mut(&key).unwrap();
        let client_port = flow.client.port;
        let transport = flow.transport;
        if let Some(s) = flow.session.as_mut() {
            s.close(&mut |ev| {
                records.push(OurRecord {
                    client_port,
                    transport,
                    rec: ev.record.clone(),
                    start_us: ev.start_us,
                })
            });
        }
    }
    Decoded { records, flows: infos, packets }
}

/// Short human description of a record, for diagnostics.
pub fn describe(r: &OurRecord) -> String {
    let x = &r.rec;
    let mt = match x.msg_type {
        MessageType::Request => "req",
        MessageType::Response => "resp",
        MessageType::Session => "session",
    };
    format!(
        ":{} {} {mt} v={:?} type={:?} domain={:?} resource={:?} id={:?} code={:?} status={} exc={:?}",
        r.client_port,
        x.protocol,
        x.version,
        x.request_type,
        x.request_domain,
        cut(&x.request_resource, 80),
        x.request_id,
        x.response_code,
        x.response_status.as_str(),
        cut(&x.response_exception, 60)
    )
}

pub fn cut(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut c = n;
    while !s.is_char_boundary(c) {
        c -= 1;
    }
    format!("{}...", &s[..c])
}

/// Check our TCP reassembly against tshark: in-order payload bytes per flow
/// and direction must equal tshark's non-retransmitted segment bytes.
pub fn check_tcp_bytes(pcap: &std::path::Path, d: &Decoded) {
    let rows = crate::harness::tshark_fields(
        pcap,
        &[],
        "tcp.len > 0 && !tcp.analysis.retransmission && !tcp.analysis.spurious_retransmission",
        &["tcp.srcport", "tcp.dstport", "tcp.len"],
    );
    let mut theirs: HashMap<(u16, u16), u64> = HashMap::new();
    for r in rows {
        let sp = crate::harness::num(&r[0]) as u16;
        let dp = crate::harness::num(&r[1]) as u16;
        *theirs.entry((sp, dp)).or_default() += crate::harness::num(&r[2]);
    }
    for f in d.flows.iter().filter(|f| f.transport == Transport::Tcp) {
        let req = theirs.get(&(f.client_port, f.server_port)).copied().unwrap_or(0);
        let resp = theirs.get(&(f.server_port, f.client_port)).copied().unwrap_or(0);
        assert_eq!(
            (f.bytes[0], f.bytes[1]),
            (req, resp),
            "TCP reassembly of :{} <-> :{} disagrees with tshark's segment bytes (ours req/resp, tshark req/resp)",
            f.client_port,
            f.server_port
        );
    }
}

#[cfg(test)]
mod reassembly_tests {
    use super::HalfStream;

    fn feed(h: &mut HalfStream, seq: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        h.segment(seq, false, data, &mut out);
        out
    }

    #[test]
    fn in_order_retransmit_overlap_and_out_of_order() {
        let mut h = HalfStream::default();
        let mut out = Vec::new();
        h.segment(999, true, b"", &mut out); // SYN: data starts at 1000
        assert!(out.is_empty());
        assert_eq!(feed(&mut h, 1000, b"hello "), b"hello ");
        assert_eq!(feed(&mut h, 1000, b"hello "), b""); // retransmission
        assert_eq!(feed(&mut h, 1003, b"lo wor"), b"wor"); // overlap
        assert_eq!(feed(&mut h, 1013, b"!!"), b""); // gap: buffered
        assert_eq!(feed(&mut h, 1009, b"ld, "), b"ld, !!"); // fills it
        assert_eq!(feed(&mut h, 1015, b"end"), b"end");
    }

    #[test]
    fn sequence_wraps_and_no_syn() {
        let mut h = HalfStream::default();
        let start = u32::MAX - 2;
        assert_eq!(feed(&mut h, start, b"abc"), b"abc"); // first data seen sets the start
        assert_eq!(feed(&mut h, 1, b"e"), b""); // after the wrap, out of order
        assert_eq!(feed(&mut h, 0, b"d"), b"de");
    }
}
