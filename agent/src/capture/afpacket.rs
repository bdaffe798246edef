//! AF_PACKET capture through a TPACKET_V3 mmap'd RX ring, one per interface.
//!
//! The kernel fills fixed-size blocks with variable-size packets and hands a
//! block to user space when it is full or when the retire timeout expires (so
//! an idle link still delivers within `retire_timeout_ms`). We walk the
//! packets of the block in place, then give the block back. Blocks are used
//! strictly in ring order, as the kernel fills them.
//!
//! On loopback every packet passes the tap twice (once leaving, once
//! arriving); the outgoing copy is dropped so each packet is seen once: in
//! the kernel with PACKET_IGNORE_OUTGOING (Linux 4.20+), and again while
//! walking the ring for older kernels.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::bpf::{self, FilterLink};
use super::interfaces::{self, Interface};
use super::{CaptureError, Direction, KernelStats, LinkType, RawPacket};

/// One ring's parameters. Defaults: 16 blocks of 1 MiB (ring memory is
/// pinned kernel memory, per interface), 50 ms retire
/// timeout, 65535-byte snaplen, TCP/UDP filter on. Deserializable so the
/// agent's config file can hold it (missing keys take the defaults).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AfPacketConfig {
    /// Interface name in the calling thread's network namespace ("lo" allowed).
    pub interface: String,
    /// Bytes per block: a multiple of the page size, large enough for the
    /// largest packet kept (snaplen plus ~100 bytes of headers).
    pub block_size: u32,
    pub block_count: u32,
    /// Only used by the kernel to validate the layout in TPACKET_V3: a
    /// multiple of 16 that divides `block_size`.
    pub frame_size: u32,
    /// A partly filled block is handed over after this long.
    pub retire_timeout_ms: u32,
    /// Bytes kept per packet.
    pub snaplen: u32,
    /// Attach the TCP/UDP filter ([`bpf::tcp_udp_filter`]); when false every
    /// packet is kept (still truncated to `snaplen`).
    pub filter: bool,
    /// Ports dropped in the kernel (source or destination), e.g. the agent's
    /// own connection to its server. Needs `filter`.
    pub exclude_ports: Vec<u16>,
}

impl Default for AfPacketConfig {
    fn default() -> Self {
        AfPacketConfig {
            interface: String::new(),
            block_size: 1 << 20,
            block_count: 16,
            frame_size: 2048,
            retire_timeout_ms: 50,
            snaplen: 65535,
            filter: true,
            exclude_ports: Vec::new(),
        }
    }
}

impl AfPacketConfig {
    pub fn for_interface(interface: &str) -> AfPacketConfig {
        AfPacketConfig { interface: interface.to_string(), ..AfPacketConfig::default() }
    }

    /// Total bytes of the ring.
    pub fn ring_bytes(&self) -> u64 {
        u64::from(self.block_size) * u64::from(self.block_count)
    }

    fn validate(&self) -> Result<(), CaptureError> {
        let bad = |why: String| Err(CaptureError::InvalidConfig(why));
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
        if self.block_size == 0 || !self.block_size.is_multiple_of(page) {
            return bad(format!("block_size {} is not a multiple of {page}", self.block_size));
        }
        if self.block_count == 0 {
            return bad("block_count is 0".into());
        }
        if self.frame_size < libc::TPACKET3_HDRLEN as u32
            || !self.frame_size.is_multiple_of(libc::TPACKET_ALIGNMENT as u32)
            || !self.block_size.is_multiple_of(self.frame_size)
        {
            return bad(format!(
                "frame_size {} must be a multiple of {} >= {} dividing block_size",
                self.frame_size,
                libc::TPACKET_ALIGNMENT,
                libc::TPACKET3_HDRLEN
            ));
        }
        if self.snaplen == 0 {
            return bad("snaplen is 0".into());
        }
        if self.exclude_ports.len() > bpf::MAX_EXCLUDED_PORTS {
            return bad(format!("at most {} excluded ports", bpf::MAX_EXCLUDED_PORTS));
        }
        if !self.exclude_ports.is_empty() && !self.filter {
            return bad("exclude_ports needs filter = true".into());
        }
        // The kernel keeps the ring size in 32 bits.
        if self.ring_bytes() > u64::from(u32::MAX) {
            return Err(CaptureError::RingTooBig { bytes: self.ring_bytes(), source: None });
        }
        Ok(())
    }
}

/// An open TPACKET_V3 ring bound to one interface. `Send`, not `Sync`: one
/// capture thread owns it.
pub struct AfPacketSource {
    fd: OwnedFd,
    ring: *mut u8,
    block_size: usize,
    block_count: usize,
    next_block: usize,
    iface: Interface,
    stats: KernelStats,
}

// SAFETY: the ring mapping is owned by this value alone and only touched
// through &mut self.
unsafe impl Send for AfPacketSource {}

impl AfPacketSource {
    /// Opens a ring on `cfg.interface` in the calling thread's network
    /// namespace. Packets are captured from the moment this returns.
    pub fn open(cfg: &AfPacketConfig) -> Result<AfPacketSource, CaptureError> {
        cfg.validate()?;
        let iface = interfaces::lookup(&cfg.interface)?;

        // Protocol 0: receive nothing until bound to the interface below, so
        // no packet of another interface slips in meanwhile.
        // SAFETY: plain socket() call; the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => CaptureError::PermissionDenied,
                _ => CaptureError::Io { op: "socket(AF_PACKET)", source: e },
            });
        }
        // SAFETY: raw is a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version, "PACKET_VERSION")?;

        if iface.loopback {
            let on: libc::c_int = 1;
            // Older kernels lack the option; walk_block filters instead.
            let _ = setsockopt(
                &fd,
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                &on,
                "PACKET_IGNORE_OUTGOING",
            );
        }

        let program = match (cfg.filter, iface.link) {
            (true, LinkType::Ethernet) => {
                bpf::tcp_udp_filter(FilterLink::Ethernet, cfg.snaplen, &cfg.exclude_ports)
            }
            (true, LinkType::RawIp) => {
                bpf::tcp_udp_filter(FilterLink::RawIp, cfg.snaplen, &cfg.exclude_ports)
            }
            (true, other) => {
                return Err(CaptureError::InvalidConfig(format!(
                    "no TCP/UDP filter for link type {other:?} of {}; set filter = false",
                    iface.name
                )))
            }
            (false, _) => Ok(bpf::accept_all(cfg.snaplen)),
        }
        .map_err(|e| CaptureError::InvalidConfig(e.to_string()))?;
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog, "SO_ATTACH_FILTER")?;

        let req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: cfg.frame_size,
            tp_frame_nr: (cfg.ring_bytes() / u64::from(cfg.frame_size)) as u32,
            tp_retire_blk_tov: cfg.retire_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req, "PACKET_RX_RING").map_err(
            |e| match e {
                CaptureError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOMEM) => {
                    CaptureError::RingTooBig { bytes: cfg.ring_bytes(), source: Some(source) }
                }
                e => e,
            },
        )?;

        let len = cfg.ring_bytes() as usize;
        // SAFETY: mapping the ring the kernel just allocated for this fd.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            let source = std::io::Error::last_os_error();
            return Err(CaptureError::RingTooBig { bytes: len as u64, source: Some(source) });
        }
        let source = AfPacketSource {
            fd,
            ring: ring.cast(),
            block_size: cfg.block_size as usize,
            block_count: cfg.block_count as usize,
            next_block: 0,
            iface,
            stats: KernelStats::default(),
        };

        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = source.iface.index as i32;
        // SAFETY: sll is a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                source.fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV) => CaptureError::NoSuchInterface(cfg.interface.clone()),
                _ => CaptureError::Io { op: "bind(AF_PACKET)", source: e },
            });
        }
        Ok(source)
    }

    /// Opens one ring per interface. An explicit list must open completely.
    /// An empty list means every interface that is up, except loopback
    /// ([`interfaces::list_up`]); of those, links the filter cannot parse
    /// (neither Ethernet nor raw IP) are skipped with a warning.
    pub fn open_each(
        template: &AfPacketConfig,
        interfaces: &[String],
    ) -> Result<Vec<AfPacketSource>, CaptureError> {
        let open = |name: &str| {
            AfPacketSource::open(&AfPacketConfig {
                interface: name.to_string(),
                ..template.clone()
            })
        };
        if !interfaces.is_empty() {
            return interfaces.iter().map(|name| open(name)).collect();
        }
        let mut sources = Vec::new();
        for name in interfaces::list_up()? {
            let iface = match interfaces::lookup(&name) {
                Ok(iface) => iface,
                // Gone between listing and opening.
                Err(CaptureError::NoSuchInterface(_)) => continue,
                Err(e) => return Err(e),
            };
            if template.filter && matches!(iface.link, LinkType::Other(_)) {
                tracing::warn!(interface = %name, hatype = iface.hatype, "not captured: unsupported link type");
                continue;
            }
            match open(&name) {
                Err(CaptureError::NoSuchInterface(_)) => continue,
                other => sources.push(other?),
            }
        }
        Ok(sources)
    }

    pub fn interface(&self) -> &Interface {
        &self.iface
    }

    /// Waits up to `timeout` for the next block, calls `f` for each of its
    /// packets (borrowed from the ring), then hands the block back to the
    /// kernel. Returns the number of packets passed to `f`: 0 on timeout or
    /// signal. One block per call, so a caller can check for shutdown between
    /// blocks.
    ///
    /// [`CaptureError::InterfaceDown`] is reported once each time the link
    /// goes down or is removed; the ring stays usable and delivers again when
    /// the same interface comes back up.
    pub fn next_batch<F>(&mut self, timeout: Duration, mut f: F) -> Result<usize, CaptureError>
    where
        F: FnMut(RawPacket<'_>),
    {
        if !self.block_ready() {
            let mut pfd =
                libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, ms) } < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    return Ok(0);
                }
                return Err(CaptureError::Io { op: "poll(AF_PACKET)", source: e });
            }
            if pfd.revents & libc::POLLERR != 0 {
                // Reading SO_ERROR clears it; left pending, poll would spin.
                self.take_socket_error()?;
            }
            if !self.block_ready() {
                return Ok(0);
            }
        }
        let block = self.block_ptr(self.next_block);
        let delivered = self.walk_block(block, &mut f);
        // Everything read from the block happens before the kernel may reuse it.
        self.block_status(block).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next_block = (self.next_block + 1) % self.block_count;
        Ok(delivered)
    }

    /// Cumulative kernel counters. The kernel resets its counters on every
    /// read, so they are accumulated here.
    pub fn stats(&mut self) -> Result<KernelStats, CaptureError> {
        let mut st = libc::tpacket_stats_v3 { tp_packets: 0, tp_drops: 0, tp_freeze_q_cnt: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: st and len describe a valid buffer of the right size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(CaptureError::last_os("getsockopt(PACKET_STATISTICS)"));
        }
        self.stats.packets += u64::from(st.tp_packets);
        self.stats.drops += u64::from(st.tp_drops);
        self.stats.freeze_q_cnt += u64::from(st.tp_freeze_q_cnt);
        Ok(self.stats)
    }

    fn take_socket_error(&self) -> Result<(), CaptureError> {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: err and len describe a valid int buffer.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(CaptureError::last_os("getsockopt(SO_ERROR)"));
        }
        match err {
            0 => Ok(()),
            libc::ENETDOWN | libc::ENODEV | libc::ENXIO => {
                Err(CaptureError::InterfaceDown(self.iface.name.clone()))
            }
            e => Err(CaptureError::Io {
                op: "AF_PACKET socket",
                source: std::io::Error::from_raw_os_error(e),
            }),
        }
    }

    fn block_ptr(&self, index: usize) -> *mut u8 {
        // SAFETY: index < block_count, so the offset is inside the mapping.
        unsafe { self.ring.add(index * self.block_size) }
    }

    fn block_status(&self, block: *mut u8) -> &AtomicU32 {
        // block_status is the u32 at offset 8 of tpacket_block_desc (after
        // version and offset_to_priv); the kernel writes it concurrently.
        // SAFETY: in the mapping, 4-byte aligned (blocks are page aligned).
        unsafe { AtomicU32::from_ptr(block.add(8).cast()) }
    }

    fn block_ready(&self) -> bool {
        // Acquire: the packets the kernel wrote are visible once we see USER.
        self.block_status(self.block_ptr(self.next_block)).load(Ordering::Acquire)
            & libc::TP_STATUS_USER
            != 0
    }

    fn walk_block(&self, block: *mut u8, f: &mut impl FnMut(RawPacket<'_>)) -> usize {
        // SAFETY: the kernel owns no part of this block until we release it;
        // the block is block_size bytes of the mapping.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(block, self.block_size) };
        let desc = block.cast::<libc::tpacket_block_desc>();
        // SAFETY: the block descriptor heads the block; bh1 is the V3 layout.
        let (num_pkts, first) = unsafe {
            let h = &(*desc).hdr.bh1;
            (h.num_pkts, h.offset_to_first_pkt as usize)
        };
        let hdr_len = std::mem::size_of::<libc::tpacket3_hdr>();
        let sll_at = (hdr_len + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1);
        let sll_len = std::mem::size_of::<libc::sockaddr_ll>();
        let mut delivered = 0;
        let mut at = first;
        for _ in 0..num_pkts {
            // Never trust offsets blindly: a bad one ends the block.
            if at + sll_at + sll_len > bytes.len() || at % 4 != 0 {
                break;
            }
            // SAFETY: bounds checked above; tpacket3_hdr has 4-byte alignment.
            let h = unsafe { &*(block.add(at) as *const libc::tpacket3_hdr) };
            // SAFETY: as above, sockaddr_ll follows the aligned header.
            let sll = unsafe { &*(block.add(at + sll_at) as *const libc::sockaddr_ll) };
            let start = at + usize::from(h.tp_mac);
            let Some(data) = bytes.get(start..start + h.tp_snaplen as usize) else { break };
            let skip = self.iface.loopback && sll.sll_pkttype == libc::PACKET_OUTGOING;
            if !skip {
                let vlan_tci = (h.tp_status & libc::TP_STATUS_VLAN_VALID != 0)
                    .then_some(h.hv1.tp_vlan_tci as u16);
                f(RawPacket {
                    data,
                    ts_ns: u64::from(h.tp_sec) * 1_000_000_000 + u64::from(h.tp_nsec),
                    wire_len: h.tp_len,
                    captured: h.tp_snaplen,
                    ifindex: sll.sll_ifindex as u32,
                    direction: Direction::from_pkttype(sll.sll_pkttype),
                    link: self.iface.link,
                    vlan_tci,
                });
                delivered += 1;
            }
            if h.tp_next_offset == 0 {
                break;
            }
            at += h.tp_next_offset as usize;
        }
        delivered
    }
}

impl AsRawFd for AfPacketSource {
    /// For multiplexing several rings with poll/epoll (POLLIN = block ready).
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for AfPacketSource {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what open() mapped; the fd closes after.
        unsafe { libc::munmap(self.ring.cast(), self.block_size * self.block_count) };
    }
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    op: &'static str,
) -> Result<(), CaptureError> {
    // SAFETY: value points to a T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(CaptureError::Io { op, source: std::io::Error::last_os_error() });
    }
    Ok(())
}
