//! Frames built from fields, for tests, benchmarks and synthetic traffic.
//! Checksums are left zero: the decoder does not verify them.

use std::net::{IpAddr, SocketAddr};

use super::LinkType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp { seq: u32, ack: u32, flags: u8, window: u16 },
    Udp,
}

/// One frame's fields. Both addresses must be of the same IP version.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    pub link: LinkType,
    pub vlans: Vec<u16>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    /// Bytes of IPv4 options (a multiple of 4, at most 40).
    pub ipv4_options: usize,
    /// Pad the Ethernet frame to this length (60 = the Ethernet minimum).
    pub pad_to: usize,
}

impl FrameBuilder {
    pub fn tcp(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, flags: u8) -> FrameBuilder {
        FrameBuilder {
            link: LinkType::Ethernet,
            vlans: Vec::new(),
            src,
            dst,
            transport: Transport::Tcp { seq, ack, flags, window: 65535 },
            ipv4_options: 0,
            pad_to: 60,
        }
    }

    pub fn udp(src: SocketAddr, dst: SocketAddr) -> FrameBuilder {
        FrameBuilder { transport: Transport::Udp, ..Self::tcp(src, dst, 0, 0, 0) }
    }

    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.build_into(payload, &mut out);
        out
    }

    /// Write the frame into `out` (cleared first), reusing its capacity.
    pub fn build_into(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let v6 = self.src.is_ipv6();
        let ethertype: u16 = if v6 { 0x86DD } else { 0x0800 };
        match self.link {
            LinkType::Ethernet => {
                out.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
                for &id in &self.vlans {
                    out.extend_from_slice(&0x8100u16.to_be_bytes());
                    out.extend_from_slice(&id.to_be_bytes());
                }
                out.extend_from_slice(&ethertype.to_be_bytes());
            }
            LinkType::RawIp => {}
            LinkType::LinuxSll => {
                out.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                out.extend_from_slice(&ethertype.to_be_bytes());
            }
            LinkType::LinuxSll2 => {
                out.extend_from_slice(&ethertype.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            }
            // No header we know how to build: the frame starts at IP.
            LinkType::Other(_) => {}
        }
        let l4_len = match self.transport {
            Transport::Tcp { .. } => 20,
            Transport::Udp => 8,
        } + payload.len();
        let proto = match self.transport {
            Transport::Tcp { .. } => 6u8,
            Transport::Udp => 17,
        };
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = 20 + self.ipv4_options;
                let total = (ihl + l4_len) as u16;
                out.push(0x40 | (ihl / 4) as u8);
                out.push(0);
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                // NOP options.
                out.extend(std::iter::repeat_n(1u8, self.ipv4_options));
            }
            (s, d) => {
                let to16 = |a: IpAddr| match a {
                    IpAddr::V6(a) => a.octets(),
                    IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                };
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&(l4_len as u16).to_be_bytes());
                out.push(proto);
                out.push(64);
                out.extend_from_slice(&to16(s));
                out.extend_from_slice(&to16(d));
            }
        }
        out.extend_from_slice(&self.src.port().to_be_bytes());
        out.extend_from_slice(&self.dst.port().to_be_bytes());
        match self.transport {
            Transport::Tcp { seq, ack, flags, window } => {
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&ack.to_be_bytes());
                out.push(5 << 4);
                out.push(flags);
                out.extend_from_slice(&window.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0]);
            }
            Transport::Udp => {
                out.extend_from_slice(&(l4_len as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
        }
        out.extend_from_slice(payload);
        if self.link == LinkType::Ethernet && out.len() < self.pad_to {
            out.resize(self.pad_to, 0);
        }
    }
}
