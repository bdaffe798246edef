//! Packet sources: AF_PACKET TPACKET_V3 rings on live interfaces, and pcap /
//! pcapng files. Both hand out [`RawPacket`]s through a callback that borrows
//! the packet bytes in place (the ring's memory or the file reader's buffer),
//! so nothing is allocated or copied per packet.
//!
//! | module | what |
//! |---|---|
//! | [`afpacket`] | one mmap'd TPACKET_V3 RX ring per interface, kernel drop counters |
//! | [`bpf`] | a tiny classic-BPF assembler and the TCP/UDP socket filter |
//! | [`interfaces`] | interface names, indexes, link types in the calling thread's netns |
//! | [`pcap`] | pcap and pcapng file replay |

pub mod afpacket;
pub mod bpf;
pub mod interfaces;
pub mod pcap;

use std::fmt;
use std::io;

pub use afpacket::{AfPacketConfig, AfPacketSource};
pub use pcap::PcapSource;

pub use crate::packet::LinkType;

/// Which way a packet crossed the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received (to this host, broadcast, multicast, or promiscuously seen).
    Inbound,
    /// Sent by this host.
    Outbound,
    /// The source does not say (pcap files without a cooked header).
    Unknown,
}

impl Direction {
    /// From sockaddr_ll.sll_pkttype / the cooked-capture packet type.
    pub fn from_pkttype(pkttype: u8) -> Direction {
        if pkttype == libc::PACKET_OUTGOING {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }
}

/// One captured packet, borrowed from the source for the duration of the
/// callback.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    /// The captured bytes, starting at the link-layer header described by
    /// `link` (`captured` bytes long).
    pub data: &'a [u8],
    /// Capture time, nanoseconds since the Unix epoch (kernel timestamp for
    /// AF_PACKET).
    pub ts_ns: u64,
    /// Length on the wire (may exceed `captured` when truncated by snaplen;
    /// on veth/lo a GSO super-packet can be up to 64 KiB).
    pub wire_len: u32,
    /// Bytes captured (`data.len()`).
    pub captured: u32,
    /// Interface index in the capturing network namespace (0 for files).
    pub ifindex: u32,
    pub direction: Direction,
    pub link: LinkType,
    /// 802.1Q tag control info when the kernel stripped the tag out of the
    /// data (hardware / veth VLAN offload). Tags still inside `data` are the
    /// decoder's to parse.
    pub vlan_tci: Option<u16>,
}

/// Cumulative counters from the kernel for one AF_PACKET socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets that passed the socket filter, including the dropped ones.
    pub packets: u64,
    /// Packets the kernel dropped because the ring was full.
    pub drops: u64,
    /// Times the ring froze (all blocks owned by user space).
    pub freeze_q_cnt: u64,
}

/// Why a capture source could not be opened or read.
#[derive(Debug)]
pub enum CaptureError {
    /// socket(AF_PACKET) was refused.
    PermissionDenied,
    NoSuchInterface(String),
    /// The interface went down or was removed while capturing (transient:
    /// the ring resumes if it comes back up).
    InterfaceDown(String),
    /// The kernel (or the u32 size limit) refused a ring this large.
    RingTooBig {
        bytes: u64,
        source: Option<io::Error>,
    },
    InvalidConfig(String),
    /// A system call failed; `op` names it.
    Io {
        op: &'static str,
        source: io::Error,
    },
    /// A pcap / pcapng file could not be read or parsed.
    File(String),
}

impl CaptureError {
    pub(crate) fn last_os(op: &'static str) -> CaptureError {
        CaptureError::Io { op, source: io::Error::last_os_error() }
    }
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::PermissionDenied => f.write_str(
                "AF_PACKET needs CAP_NET_RAW: run as root or grant the capability \
                 (setcap cap_net_raw+ep)",
            ),
            CaptureError::NoSuchInterface(name) => {
                write!(f, "no such network interface {name:?} in this network namespace")
            }
            CaptureError::InterfaceDown(name) => {
                write!(f, "network interface {name:?} went down or was removed")
            }
            CaptureError::RingTooBig { bytes, source } => {
                write!(f, "capture ring of {bytes} bytes is too big")?;
                if let Some(e) = source {
                    write!(f, ": {e}")?;
                }
                f.write_str("; lower block_size or block_count")
            }
            CaptureError::InvalidConfig(why) => write!(f, "invalid capture config: {why}"),
            CaptureError::Io { op, source } => write!(f, "{op} failed: {source}"),
            CaptureError::File(why) => write!(f, "capture file: {why}"),
        }
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CaptureError::Io { source, .. } => Some(source),
            CaptureError::RingTooBig { source: Some(e), .. } => Some(e),
            _ => None,
        }
    }
}
