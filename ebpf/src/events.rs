//! Typed events decoded from the ring buffer records of `bpf/fathom_events.h`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Largest payload prefix the kernel side can capture per message.
pub const MAX_CAPTURE_BYTES: u32 = 4096;

const EVENT_DATA: u32 = 1;
const EVENT_CONNECT: u32 = 2;
const EVENT_ACCEPT: u32 = 3;
const EVENT_CLOSE: u32 = 4;
const EVENT_EXEC: u32 = 5;
const EVENT_EXIT: u32 = 6;
const EVENT_FORK: u32 = 7;

const DIR_EGRESS: u8 = 1;
const DIR_INGRESS: u8 = 2;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

const SOCKET_EVENT_HDR_LEN: usize = 112;
const PROCESS_EVENT_LEN: usize = 304;

/// A task's `comm` (at most 15 bytes), inline: decoding an event allocates
/// nothing for it. Always valid UTF-8 (invalid bytes read as '?').
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Comm {
    bytes: [u8; 16],
    len: u8,
}

impl Comm {
    /// The bytes up to the first NUL (at most 16), invalid UTF-8 as '?'.
    pub fn from_bytes(b: &[u8]) -> Comm {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len()).min(16);
        let mut bytes = [0u8; 16];
        bytes[..end].copy_from_slice(&b[..end]);
        if std::str::from_utf8(&bytes[..end]).is_err() {
            for c in &mut bytes[..end] {
                if !c.is_ascii() {
                    *c = b'?';
                }
            }
        }
        Comm { bytes, len: end as u8 }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl std::ops::Deref for Comm {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Comm {
    fn from(s: &str) -> Comm {
        // Cut on a char boundary, as the kernel never splits one.
        let mut end = s.len().min(15);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Comm::from_bytes(&s.as_bytes()[..end])
    }
}

impl PartialEq<str> for Comm {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hook (syscall or scheduler tracepoint) that produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Read,
    Write,
    Sendto,
    Recvfrom,
    Readv,
    Writev,
    Sendmsg,
    Recvmsg,
    Connect,
    Accept,
    Accept4,
    Close,
    Exec,
    Exit,
    /// OpenSSL SSL_write/SSL_write_ex (uprobes): plaintext being sent.
    SslWrite,
    /// OpenSSL SSL_read/SSL_read_ex (uprobes): plaintext received.
    SslRead,
    /// sched_process_fork (raw tracepoint): a new process, not a thread.
    Fork,
    /// sendmmsg/recvmmsg: one event per message, for the first four.
    Sendmmsg,
    Recvmmsg,
}

impl Hook {
    /// Every hook, in the kernel's counter order.
    pub const ALL: [Hook; 19] = [
        Hook::Read,
        Hook::Write,
        Hook::Sendto,
        Hook::Recvfrom,
        Hook::Readv,
        Hook::Writev,
        Hook::Sendmsg,
        Hook::Recvmsg,
        Hook::Connect,
        Hook::Accept,
        Hook::Accept4,
        Hook::Close,
        Hook::Exec,
        Hook::Exit,
        Hook::SslWrite,
        Hook::SslRead,
        Hook::Fork,
        Hook::Sendmmsg,
        Hook::Recvmmsg,
    ];

    pub(crate) fn from_raw(raw: u8) -> Option<Hook> {
        Hook::ALL.get(usize::from(raw)).copied()
    }

    pub(crate) fn index(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            Hook::Read => "read",
            Hook::Write => "write",
            Hook::Sendto => "sendto",
            Hook::Recvfrom => "recvfrom",
            Hook::Readv => "readv",
            Hook::Writev => "writev",
            Hook::Sendmsg => "sendmsg",
            Hook::Recvmsg => "recvmsg",
            Hook::Connect => "connect",
            Hook::Accept => "accept",
            Hook::Accept4 => "accept4",
            Hook::Close => "close",
            Hook::Exec => "sched_process_exec",
            Hook::Exit => "sched_process_exit",
            Hook::SslWrite => "SSL_write",
            Hook::SslRead => "SSL_read",
            Hook::Fork => "sched_process_fork",
            Hook::Sendmmsg => "sendmmsg",
            Hook::Recvmmsg => "recvmmsg",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which way the bytes went, seen from the traced process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the process (write, sendto, ...); `src` is the local end.
    Egress,
    /// Received by the process (read, recvfrom, ...); `dst` is the local end.
    Ingress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Proto {
    Tcp,
    Udp,
}

/// A message read or written on a TCP or UDP socket, or handed to or
/// returned by OpenSSL (then `hook` is `SslWrite`/`SslRead`, `payload` is
/// plaintext, `tcp_seq` is 0, and `src`/`dst` are unspecified (0.0.0.0:0) when
/// the socket under the SSL object was not seen yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketDataEvent {
    /// CLOCK_MONOTONIC at syscall exit, in ns (see `EbpfCapture::to_unix_ns`).
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub comm: Comm,
    pub hook: Hook,
    /// Sender of the bytes.
    pub src: SocketAddr,
    /// Receiver of the bytes.
    pub dst: SocketAddr,
    pub l4: L4Proto,
    pub direction: Direction,
    /// TCP sequence number of the first byte of this message (0 for UDP). The
    /// same bytes carry the same number at both ends of a connection.
    pub tcp_seq: u32,
    /// Bytes the syscall really moved.
    pub syscall_len: u64,
    /// Links a thread's inbound request to the outbound calls it then makes.
    pub syscall_trace_id: u64,
    /// The first bytes of the message (at most the configured capture size;
    /// for vectored I/O, from the first buffer only).
    pub payload: Vec<u8>,
}

impl SocketDataEvent {
    pub fn local(&self) -> SocketAddr {
        match self.direction {
            Direction::Egress => self.src,
            Direction::Ingress => self.dst,
        }
    }

    pub fn remote(&self) -> SocketAddr {
        match self.direction {
            Direction::Egress => self.dst,
            Direction::Ingress => self.src,
        }
    }

    /// Plaintext from the OpenSSL uprobes rather than bytes of a syscall.
    pub fn is_tls(&self) -> bool {
        matches!(self.hook, Hook::SslWrite | Hook::SslRead)
    }

    /// True when fewer bytes were captured than the syscall moved.
    pub fn is_truncated(&self) -> bool {
        (self.payload.len() as u64) < self.syscall_len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketEventKind {
    /// connect(2) succeeded or is in progress: `src` is the local (client) end.
    Connect,
    /// accept(2)/accept4(2) returned `fd`: `src` is the peer (client).
    Accept,
    /// close(2) of a socket: `src` is the local end.
    Close,
}

/// Socket lifecycle, attributed to the process that made the syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEvent {
    pub kind: SocketEventKind,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub comm: Comm,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub l4: L4Proto,
    /// write_seq (connect, close) or copied_seq (accept) at the time; 0 for UDP.
    pub tcp_seq: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEventKind {
    /// A new process (`pid`) forked from `ppid`; it still runs the parent's image.
    Fork,
    /// The process replaced its image with `filename`.
    Exec { filename: String },
    /// The last thread of the process exited with this wait status.
    Exit { exit_code: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEvent {
    pub kind: ProcessEventKind,
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub comm: Comm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Data(SocketDataEvent),
    Socket(SocketEvent),
    Process(ProcessEvent),
}

/// A ring buffer record that does not decode; counted, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its header ({need} bytes)")]
    Short { len: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("unknown {field} value {value}")]
    BadField { field: &'static str, value: u64 },
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(raw)
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn addr(family: u16, raw: &[u8], port: u16) -> Result<SocketAddr, DecodeError> {
    let ip = match family {
        // A TLS event whose socket is unknown.
        0 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AF_INET => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        AF_INET6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&raw[..16]);
            // Dual-stack sockets carry IPv4 peers as ::ffff:a.b.c.d.
            Ipv6Addr::from(octets).to_canonical()
        }
        other => return Err(DecodeError::BadField { field: "family", value: u64::from(other) }),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Decodes one ring buffer record.
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    decode_reusing(record, &mut Vec::new())
}

/// Decodes one ring buffer record; a data event's payload goes into one of
/// `spare` buffers (emptied first) when there is one, else a new one.
pub fn decode_reusing(record: &[u8], spare: &mut Vec<Vec<u8>>) -> Result<Event, DecodeError> {
    if record.len() < 4 {
        return Err(DecodeError::Short { len: record.len(), need: 4 });
    }
    match u32_at(record, 0) {
        EVENT_DATA | EVENT_CONNECT | EVENT_ACCEPT | EVENT_CLOSE => decode_socket(record, spare),
        EVENT_EXEC | EVENT_EXIT | EVENT_FORK => decode_process(record),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn decode_socket(b: &[u8], spare: &mut Vec<Vec<u8>>) -> Result<Event, DecodeError> {
    if b.len() < SOCKET_EVENT_HDR_LEN {
        return Err(DecodeError::Short { len: b.len(), need: SOCKET_EVENT_HDR_LEN });
    }
    let kind = u32_at(b, 0);
    let pid = u32_at(b, 4);
    let tid = u32_at(b, 8);
    let fd = u32_at(b, 12) as i32;
    let ts_ns = u64_at(b, 16);
    let syscall_trace_id = u64_at(b, 24);
    let syscall_len = u64_at(b, 32);
    let tcp_seq = u32_at(b, 40);
    let cap_len = u32_at(b, 44) as usize;
    let family = u16_at(b, 48);
    let sport = u16_at(b, 50);
    let dport = u16_at(b, 52);
    let l4 = match b[54] {
        6 => L4Proto::Tcp,
        17 => L4Proto::Udp,
        other => return Err(DecodeError::BadField { field: "l4_proto", value: u64::from(other) }),
    };
    let direction = match b[55] {
        DIR_EGRESS => Direction::Egress,
        DIR_INGRESS => Direction::Ingress,
        other => return Err(DecodeError::BadField { field: "direction", value: u64::from(other) }),
    };
    let hook = Hook::from_raw(b[56])
        .ok_or(DecodeError::BadField { field: "hook", value: u64::from(b[56]) })?;
    let src = addr(family, &b[64..80], sport)?;
    let dst = addr(family, &b[80..96], dport)?;
    let comm = Comm::from_bytes(&b[96..112]);
    let payload_end = SOCKET_EVENT_HDR_LEN + cap_len;
    if cap_len > MAX_CAPTURE_BYTES as usize || payload_end > b.len() {
        return Err(DecodeError::BadField { field: "cap_len", value: cap_len as u64 });
    }

    let kind = match kind {
        EVENT_DATA => {
            let mut payload = spare.pop().unwrap_or_default();
            payload.clear();
            payload.extend_from_slice(&b[SOCKET_EVENT_HDR_LEN..payload_end]);
            return Ok(Event::Data(SocketDataEvent {
                ts_ns,
                pid,
                tid,
                fd,
                comm,
                hook,
                src,
                dst,
                l4,
                direction,
                tcp_seq,
                syscall_len,
                syscall_trace_id,
                payload,
            }));
        }
        EVENT_CONNECT => SocketEventKind::Connect,
        EVENT_ACCEPT => SocketEventKind::Accept,
        _ => SocketEventKind::Close,
    };
    Ok(Event::Socket(SocketEvent { kind, ts_ns, pid, tid, fd, comm, src, dst, l4, tcp_seq }))
}

fn decode_process(b: &[u8]) -> Result<Event, DecodeError> {
    if b.len() < PROCESS_EVENT_LEN {
        return Err(DecodeError::Short { len: b.len(), need: PROCESS_EVENT_LEN });
    }
    let filename_len = (u32_at(b, 28) as usize).min(PROCESS_EVENT_LEN - 48);
    let kind = match u32_at(b, 0) {
        EVENT_EXEC => ProcessEventKind::Exec { filename: c_string(&b[48..48 + filename_len]) },
        EVENT_FORK => ProcessEventKind::Fork,
        _ => ProcessEventKind::Exit { exit_code: u32_at(b, 24) as i32 },
    };
    Ok(Event::Process(ProcessEvent {
        kind,
        pid: u32_at(b, 4),
        tid: u32_at(b, 8),
        ppid: u32_at(b, 12),
        ts_ns: u64_at(b, 16),
        comm: Comm::from_bytes(&b[32..48]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_record(kind: u32, cap: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; SOCKET_EVENT_HDR_LEN];
        b[0..4].copy_from_slice(&kind.to_ne_bytes());
        b[4..8].copy_from_slice(&42u32.to_ne_bytes());
        b[8..12].copy_from_slice(&43u32.to_ne_bytes());
        b[12..16].copy_from_slice(&7i32.to_ne_bytes());
        b[32..40].copy_from_slice(&(cap.len() as u64 + 10).to_ne_bytes());
        b[40..44].copy_from_slice(&1000u32.to_ne_bytes());
        b[44..48].copy_from_slice(&(cap.len() as u32).to_ne_bytes());
        b[48..50].copy_from_slice(&AF_INET6.to_ne_bytes());
        b[50..52].copy_from_slice(&5555u16.to_ne_bytes());
        b[52..54].copy_from_slice(&80u16.to_ne_bytes());
        b[54] = 6;
        b[55] = DIR_INGRESS;
        b[56] = 0;
        // src ::ffff:127.0.0.1, dst ::1
        b[74] = 0xff;
        b[75] = 0xff;
        b[76..80].copy_from_slice(&[127, 0, 0, 1]);
        b[95] = 1;
        b[96..100].copy_from_slice(b"curl");
        b.extend_from_slice(cap);
        b
    }

    #[test]
    fn payloads_reuse_spare_buffers_and_comm_is_inline() {
        let spare = Vec::with_capacity(64);
        let at = spare.as_ptr();
        let mut pool = vec![spare];
        let rec = socket_record(EVENT_DATA, b"GET /");
        let Event::Data(ev) = decode_reusing(&rec, &mut pool).unwrap() else {
            panic!("not a data event");
        };
        assert!(pool.is_empty());
        assert_eq!(ev.payload.as_ptr(), at);
        assert_eq!(ev.payload, b"GET /");
        assert_eq!(ev.comm.as_str(), "curl");
        assert_eq!(Comm::from_bytes(b"a\xffb\0junk"), "a?b");
        assert_eq!(Comm::from_bytes(&[b'x'; 16]).len(), 16);
        assert_eq!(Comm::from("kworker/u16:0-events"), "kworker/u16:0-e");
        assert_eq!(Comm::from("ééééééééé").as_str(), "ééééééé");
    }

    #[test]
    fn decodes_data_event_and_maps_v4_in_v6() {
        let Event::Data(ev) = decode(&socket_record(EVENT_DATA, b"GET /")).unwrap() else {
            panic!("not a data event");
        };
        assert_eq!(ev.pid, 42);
        assert_eq!(ev.tid, 43);
        assert_eq!(ev.fd, 7);
        assert_eq!(ev.comm, "curl");
        assert_eq!(ev.src, "127.0.0.1:5555".parse().unwrap());
        assert_eq!(ev.dst, "[::1]:80".parse().unwrap());
        assert_eq!(ev.local(), ev.dst);
        assert_eq!(ev.direction, Direction::Ingress);
        assert_eq!(ev.payload, b"GET /");
        assert_eq!(ev.syscall_len, 15);
        assert!(ev.is_truncated());
        assert_eq!(ev.hook, Hook::Read);
    }

    #[test]
    fn rejects_bad_records_without_panicking() {
        assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
        assert!(matches!(decode(&[9, 0, 0, 0]), Err(DecodeError::UnknownKind(9))));
        let mut rec = socket_record(EVENT_DATA, b"abc");
        rec.truncate(SOCKET_EVENT_HDR_LEN + 1); // cap_len says 3
        assert!(matches!(decode(&rec), Err(DecodeError::BadField { field: "cap_len", .. })));
        let mut rec = socket_record(EVENT_DATA, b"");
        rec[48] = 1; // AF_UNIX
        assert!(matches!(decode(&rec), Err(DecodeError::BadField { field: "family", .. })));
        let mut rec = socket_record(EVENT_DATA, b"");
        rec[56] = 200;
        assert!(matches!(decode(&rec), Err(DecodeError::BadField { field: "hook", .. })));
        assert!(matches!(decode(&EVENT_EXEC.to_ne_bytes()), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn decodes_process_events() {
        let mut b = vec![0u8; PROCESS_EVENT_LEN];
        b[0..4].copy_from_slice(&EVENT_EXEC.to_ne_bytes());
        b[4..8].copy_from_slice(&100u32.to_ne_bytes());
        b[12..16].copy_from_slice(&1u32.to_ne_bytes());
        b[28..32].copy_from_slice(&13u32.to_ne_bytes());
        b[32..36].copy_from_slice(b"curl");
        b[48..61].copy_from_slice(b"/usr/bin/curl");
        let Event::Process(ev) = decode(&b).unwrap() else {
            panic!("not a process event");
        };
        assert_eq!(ev.pid, 100);
        assert_eq!(ev.ppid, 1);
        assert_eq!(ev.kind, ProcessEventKind::Exec { filename: "/usr/bin/curl".into() });
        // A lying filename_len is clamped to the record.
        b[28..32].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(decode(&b).is_ok());
    }
}
