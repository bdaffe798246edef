//! Zero-copy decode of a captured frame: link layer (Ethernet with 802.1Q /
//! QinQ tags, raw IP, Linux cooked SLL / SLL2), IPv4 / IPv6, TCP / UDP.
//!
//! The view borrows the frame. Its payload is the captured L4 payload cut at
//! the IP packet's end, so Ethernet padding never becomes payload; the wire
//! payload length comes from the IP header and may exceed the captured bytes
//! when the capture's snaplen cut the frame.

pub mod build;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How a frame starts (pcap link types 1, 101/12/14, 113, 276, 228, 229).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    Ethernet,
    /// An IP packet with no link header; the version nibble tells v4 from v6.
    RawIp,
    /// Linux cooked capture v1 (`-i any` with libpcap < 1.10).
    LinuxSll,
    /// Linux cooked capture v2.
    LinuxSll2,
    /// Anything else: the pcap LINKTYPE_ value, or for live capture the
    /// ARPHRD_ device type. Such frames are counted and skipped.
    Other(u32),
}

impl LinkType {
    /// The link type of a pcap `LINKTYPE_*` value, if we decode it.
    pub fn from_pcap(linktype: u32) -> Option<LinkType> {
        match LinkType::from_linktype(linktype) {
            LinkType::Other(_) => None,
            l => Some(l),
        }
    }

    /// From a pcap / pcapng LINKTYPE_ value.
    pub fn from_linktype(value: u32) -> LinkType {
        match value {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            // LINKTYPE_RAW, the two historical DLT_RAW values, IPV4, IPV6.
            101 | 12 | 14 | 228 | 229 => LinkType::RawIp,
            other => LinkType::Other(other),
        }
    }

    /// From a Linux ARPHRD_ device type (what AF_PACKET reports).
    pub fn from_arphrd(hatype: u16) -> LinkType {
        match hatype {
            // ETHER, LOOPBACK (loopback frames have a zeroed Ethernet header).
            1 | 772 => LinkType::Ethernet,
            // RAWIP, TUNNEL (ipip), TUNNEL6, SIT, IPGRE, NONE (tun, wireguard).
            519 | 768 | 769 | 776 | 778 | 0xfffe => LinkType::RawIp,
            other => LinkType::Other(u32::from(other)),
        }
    }
}

/// Why a frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The frame ends inside a header.
    Truncated,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
    /// A header field is impossible (IHL < 5, TCP data offset < 5, ...).
    BadHeader,
    /// More VLAN tags or IPv6 extension headers than we follow.
    TooManyHeaders,
}

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Header length in bytes (data offset * 4).
    pub header_len: u8,
}

impl TcpHeader {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What the IP packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp(TcpHeader),
    Udp,
    /// A non-first IP fragment: no L4 header, no ports.
    Fragment,
    /// Another protocol (ICMP, SCTP, ...), by IP protocol number.
    Other(u8),
}

/// A decoded frame, borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct PacketView<'a> {
    /// Capture timestamp, microseconds since the epoch.
    pub ts_us: u64,
    /// Frame length on the wire (pcap `orig_len`, AF_PACKET `tp_len`), which
    /// is what flow byte counters add up.
    pub wire_len: u32,
    /// The outermost 802.1Q / 802.1ad VLAN id, if tagged.
    pub vlan: Option<u16>,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    /// IP packet length from the IP header (headers included).
    pub ip_len: u32,
    /// The first fragment of a fragmented IPv4/IPv6 packet: ports are real,
    /// the payload is only this fragment's part.
    pub first_fragment: bool,
    pub l4: L4,
    pub src_port: u16,
    pub dst_port: u16,
    /// Captured L4 payload, bounded by the IP packet's end.
    pub payload: &'a [u8],
    /// L4 payload length on the wire according to the IP header.
    pub payload_len: u32,
}

/// A decoded frame without its bytes: decoded once where the packet is
/// routed, turned back into a [`PacketView`] over the same frame where it
/// is processed.
#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    /// The view with an empty payload.
    head: PacketView<'static>,
    payload_off: u32,
    payload_cap: u32,
}

impl Decoded {
    /// `view` must have been decoded from `frame`.
    pub fn new(view: &PacketView<'_>, frame: &[u8]) -> Decoded {
        let off = (view.payload.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
        let (off, cap) = if off.checked_add(view.payload.len()).is_some_and(|e| e <= frame.len()) {
            (off as u32, view.payload.len() as u32)
        } else {
            (0, 0)
        };
        Decoded { head: PacketView { payload: &[], ..*view }, payload_off: off, payload_cap: cap }
    }

    /// The view over `frame`, the bytes it was decoded from.
    pub fn view<'a>(&self, frame: &'a [u8]) -> PacketView<'a> {
        let (s, n) = (self.payload_off as usize, self.payload_cap as usize);
        PacketView { payload: frame.get(s..s + n).unwrap_or(&[]), ..self.head }
    }
}

impl PacketView<'_> {
    pub fn tcp(&self) -> Option<&TcpHeader> {
        match &self.l4 {
            L4::Tcp(h) => Some(h),
            _ => None,
        }
    }
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86DD;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88A8;
const ETH_QINQ_OLD: u16 = 0x9100;
const MAX_VLAN_TAGS: usize = 4;
const MAX_IPV6_EXT: usize = 8;

fn be16(b: &[u8], at: usize) -> Result<u16, DecodeError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(DecodeError::Truncated),
    }
}

fn be32(b: &[u8], at: usize) -> Result<u32, DecodeError> {
    match b.get(at..at + 4) {
        Some(s) => Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
        None => Err(DecodeError::Truncated),
    }
}

/// Decode one captured frame. `wire_len` is the frame's length on the wire
/// (>= `frame.len()` when the snaplen cut it).
pub fn decode(
    link: LinkType,
    frame: &[u8],
    wire_len: u32,
    ts_us: u64,
) -> Result<PacketView<'_>, DecodeError> {
    let mut vlan = None;
    let (ethertype, off) = match link {
        LinkType::Ethernet => {
            let mut et = be16(frame, 12)?;
            let mut off = 14;
            let mut tags = 0;
            while matches!(et, ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD) {
                tags += 1;
                if tags > MAX_VLAN_TAGS {
                    return Err(DecodeError::TooManyHeaders);
                }
                let tci = be16(frame, off)?;
                vlan.get_or_insert(tci & 0x0fff);
                et = be16(frame, off + 2)?;
                off += 4;
            }
            (et, off)
        }
        LinkType::RawIp => {
            let v = frame.first().ok_or(DecodeError::Truncated)? >> 4;
            match v {
                4 => (ETH_IPV4, 0),
                6 => (ETH_IPV6, 0),
                _ => return Err(DecodeError::NotIp),
            }
        }
        LinkType::LinuxSll => (be16(frame, 14)?, 16),
        LinkType::LinuxSll2 => (be16(frame, 0)?, 20),
        LinkType::Other(_) => return Err(DecodeError::NotIp),
    };
    let ip = frame.get(off..).ok_or(DecodeError::Truncated)?;
    let mut v = match ethertype {
        ETH_IPV4 => decode_ipv4(ip)?,
        ETH_IPV6 => decode_ipv6(ip)?,
        _ => return Err(DecodeError::NotIp),
    };
    v.ts_us = ts_us;
    v.wire_len = wire_len.max(frame.len() as u32);
    v.vlan = vlan;
    Ok(v)
}

fn view(src_ip: IpAddr, dst_ip: IpAddr, ip_len: u32) -> PacketView<'static> {
    PacketView {
        ts_us: 0,
        wire_len: 0,
        vlan: None,
        src_ip,
        dst_ip,
        ip_len,
        first_fragment: false,
        l4: L4::Other(0),
        src_port: 0,
        dst_port: 0,
        payload: &[],
        payload_len: 0,
    }
}

fn decode_ipv4(ip: &[u8]) -> Result<PacketView<'_>, DecodeError> {
    let b0 = *ip.first().ok_or(DecodeError::Truncated)?;
    if b0 >> 4 != 4 {
        return Err(DecodeError::BadHeader);
    }
    let ihl = usize::from(b0 & 0x0f) * 4;
    if ihl < 20 {
        return Err(DecodeError::BadHeader);
    }
    if ip.len() < ihl {
        return Err(DecodeError::Truncated);
    }
    let mut total = usize::from(be16(ip, 2)?);
    if total == 0 {
        // Segmentation offload hands up super-packets with no length.
        total = ip.len();
    }
    if total < ihl {
        return Err(DecodeError::BadHeader);
    }
    let frag = be16(ip, 6)?;
    let more_fragments = frag & 0x2000 != 0;
    let offset = frag & 0x1fff;
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let mut v = view(src.into(), dst.into(), total as u32);
    if offset != 0 {
        v.l4 = L4::Fragment;
        return Ok(v);
    }
    v.first_fragment = more_fragments;
    // The IP packet ends at its total length or where the capture stopped.
    let end = total.min(ip.len());
    decode_l4(&mut v, proto, &ip[ihl..end], (total - ihl) as u32)?;
    Ok(v)
}

fn decode_ipv6(ip: &[u8]) -> Result<PacketView<'_>, DecodeError> {
    if ip.len() < 40 {
        return Err(DecodeError::Truncated);
    }
    if ip[0] >> 4 != 6 {
        return Err(DecodeError::BadHeader);
    }
    let mut payload_len = usize::from(be16(ip, 4)?);
    if payload_len == 0 {
        // Jumbogram or offload: take what was captured.
        payload_len = ip.len() - 40;
    }
    let total = 40 + payload_len;
    let src: [u8; 16] = ip[8..24].try_into().map_err(|_| DecodeError::Truncated)?;
    let dst: [u8; 16] = ip[24..40].try_into().map_err(|_| DecodeError::Truncated)?;
    let mut v = view(Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into(), total as u32);
    let end = total.min(ip.len());
    let mut next = ip[6];
    // Extension headers are read within the packet, never from padding.
    let ip = &ip[..end];
    let mut off = 40;
    for _ in 0..=MAX_IPV6_EXT {
        match next {
            // Hop-by-hop, routing, destination options.
            0 | 43 | 60 => {
                let h = ip.get(off..off + 2).ok_or(DecodeError::Truncated)?;
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            // Fragment header.
            44 => {
                let h = ip.get(off..off + 8).ok_or(DecodeError::Truncated)?;
                let fo = u16::from_be_bytes([h[2], h[3]]);
                if fo >> 3 != 0 {
                    v.l4 = L4::Fragment;
                    return Ok(v);
                }
                v.first_fragment = fo & 1 != 0;
                next = h[0];
                off += 8;
            }
            // Authentication header.
            51 => {
                let h = ip.get(off..off + 2).ok_or(DecodeError::Truncated)?;
                next = h[0];
                off += (usize::from(h[1]) + 2) * 4;
            }
            _ => {
                if off > total {
                    return Err(DecodeError::BadHeader);
                }
                if off > end {
                    return Err(DecodeError::Truncated);
                }
                decode_l4(&mut v, next, &ip[off..end], (total - off) as u32)?;
                return Ok(v);
            }
        }
    }
    Err(DecodeError::TooManyHeaders)
}

/// Decode the L4 header from `l4` (captured bytes up to the IP packet's
/// end); `wire_len` is the L4 length per the IP header.
fn decode_l4<'a>(
    v: &mut PacketView<'a>,
    proto: u8,
    l4: &'a [u8],
    wire_len: u32,
) -> Result<(), DecodeError> {
    match proto {
        6 => {
            if l4.len() < 20 {
                return Err(DecodeError::Truncated);
            }
            let header_len = usize::from(l4[12] >> 4) * 4;
            if header_len < 20 || header_len as u32 > wire_len {
                return Err(DecodeError::BadHeader);
            }
            if l4.len() < header_len {
                return Err(DecodeError::Truncated);
            }
            v.src_port = be16(l4, 0)?;
            v.dst_port = be16(l4, 2)?;
            v.l4 = L4::Tcp(TcpHeader {
                seq: be32(l4, 4)?,
                ack: be32(l4, 8)?,
                flags: l4[13],
                window: be16(l4, 14)?,
                header_len: header_len as u8,
            });
            v.payload = &l4[header_len..];
            v.payload_len = wire_len - header_len as u32;
        }
        17 => {
            if l4.len() < 8 {
                return Err(DecodeError::Truncated);
            }
            if wire_len < 8 {
                return Err(DecodeError::BadHeader);
            }
            v.src_port = be16(l4, 0)?;
            v.dst_port = be16(l4, 2)?;
            v.l4 = L4::Udp;
            // The UDP length bounds the payload too, unless this is the first
            // of several fragments (then it describes the whole datagram).
            let udp_len = u32::from(be16(l4, 4)?);
            let mut plen = wire_len - 8;
            if !v.first_fragment && (8..=wire_len).contains(&udp_len) {
                plen = udp_len - 8;
            }
            let cap = (l4.len() - 8).min(plen as usize);
            v.payload = &l4[8..8 + cap];
            v.payload_len = plen;
        }
        p => v.l4 = L4::Other(p),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
