//! Just enough Ethernet/IP/TCP/UDP parsing for tests to check captures.

use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4<'a> {
    pub ethertype: u16,
    /// IP protocol: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub seq: u32,
    pub payload: &'a [u8],
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// The ethertype after any VLAN tags.
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    let mut at = 12;
    loop {
        let t = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
        if t == 0x8100 || t == 0x88a8 {
            at += 4;
        } else {
            return Some(t);
        }
    }
}

/// Parses an Ethernet frame down to its L4 header (ports zero for non
/// TCP/UDP). None for non-IP frames or truncated headers.
pub fn parse(frame: &[u8]) -> Option<L4<'_>> {
    let mut at = 12;
    let ethertype = loop {
        let t = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        if t == 0x8100 || t == 0x88a8 {
            at += 2;
        } else {
            break t;
        }
    };
    let ip = frame.get(at..)?;
    let (proto, src, dst, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            // Trim Ethernet padding; a truncated capture keeps what it has.
            let end = total.clamp(ihl, ip.len().max(ihl));
            (ip[9], IpAddr::from(src), IpAddr::from(dst), ip.get(ihl..end.min(ip.len()))?)
        }
        0x86dd => {
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            (ip[6], IpAddr::from(src), IpAddr::from(dst), ip.get(40..(40 + len).min(ip.len()))?)
        }
        _ => return None,
    };
    let mut out =
        L4 { ethertype, proto, src, dst, sport: 0, dport: 0, tcp_flags: 0, seq: 0, payload: &[] };
    match proto {
        6 => {
            out.sport = u16::from_be_bytes(l4.get(0..2)?.try_into().ok()?);
            out.dport = u16::from_be_bytes(l4.get(2..4)?.try_into().ok()?);
            out.seq = u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?);
            out.tcp_flags = *l4.get(13)?;
            let off = usize::from(l4.get(12)? >> 4) * 4;
            out.payload = l4.get(off..)?;
        }
        17 => {
            out.sport = u16::from_be_bytes(l4.get(0..2)?.try_into().ok()?);
            out.dport = u16::from_be_bytes(l4.get(2..4)?.try_into().ok()?);
            out.payload = l4.get(8..)?;
        }
        _ => out.payload = l4,
    }
    Some(out)
}
