//! The less common hooks, driven by a Python script: sendmsg and recvmsg,
//! writev and readv, unconnected UDP sendto/recvfrom over IPv6,
//! sendmmsg/recvmmsg over IPv4 UDP, fork, and syscall trace ids on two
//! proxy-like threads.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{collect_until, load_with, TempDir};
use fathom_ebpf::{Config, Direction, Event, Hook, L4Proto, ProcessEventKind, SocketDataEvent};

const SCRIPT: &str = r#"
import ctypes, os, socket, threading, sys

def pair():
    srv = socket.socket(socket.AF_INET6)
    srv.bind(("::1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname()[:2])
    a, _ = srv.accept()
    srv.close()
    return c, a

def read_exactly(sock, n):
    buf = b""
    while len(buf) < n:
        buf += sock.recv(n - len(buf))
    return buf

c, a = pair()
c.sendmsg([b"sendmsg-part1|", b"part2"])
data, _, _, _ = a.recvmsg(19)
assert data == b"sendmsg-part1|part2", data
os.writev(c.fileno(), [b"writev-a|", b"writev-b"])
buf = bytearray(17)
assert os.readv(a.fileno(), [buf]) == 17

u1 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u1.bind(("::1", 0))
u2 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u2.bind(("::1", 0))
u2.sendto(b"udp-datagram", u1.getsockname())
data, _ = u1.recvfrom(100)
assert data == b"udp-datagram"

# Two "proxy" threads: each receives a request, then calls an upstream.
# Each names itself (PR_SET_NAME) as thread pools do; events must still carry
# the process's name.
def proxy(n, inbound, upstream):
    ctypes.CDLL(None).prctl(15, b"proxy-worker-%d" % n, 0, 0, 0)
    assert read_exactly(inbound, 10) == b"proxy-in-%d" % n
    upstream.sendall(b"proxy-out-%d" % n)

conns = [(pair(), pair()) for _ in range(2)]
threads = []
for n, ((cin, ain), (cup, aup)) in enumerate(conns, 1):
    t = threading.Thread(target=proxy, args=(n, ain, cup))
    t.start()
    threads.append(t)
for n, ((cin, ain), (cup, aup)) in enumerate(conns, 1):
    cin.sendall(b"proxy-in-%d" % n)
for t in threads:
    t.join()
for n, ((cin, ain), (cup, aup)) in enumerate(conns, 1):
    assert read_exactly(aup, 11) == b"proxy-out-%d" % n
# sendmmsg/recvmmsg have no Python wrapper: call libc.
class iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

class msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]

class mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", msghdr), ("msg_len", ctypes.c_uint)]

libc = ctypes.CDLL(None, use_errno=True)
u3 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u3.bind(("127.0.0.1", 0))
u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u4.bind(("127.0.0.1", 0))
u3.connect(u4.getsockname())
payloads = [b"mmsg-query-A", b"mmsg-query-AAAA"]
keep = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), len(p)) for b, p in zip(keep, payloads)]
msgs = (mmsghdr * 2)()
for i in range(2):
    msgs[i].msg_hdr.msg_iov = ctypes.pointer(iovs[i])
    msgs[i].msg_hdr.msg_iovlen = 1
assert libc.sendmmsg(u3.fileno(), msgs, 2, 0) == 2, ctypes.get_errno()
rbufs = [ctypes.create_string_buffer(64) for _ in range(2)]
names = [ctypes.create_string_buffer(28) for _ in range(2)]
riovs = [iovec(ctypes.cast(b, ctypes.c_void_p), 64) for b in rbufs]
rmsgs = (mmsghdr * 2)()
for i in range(2):
    rmsgs[i].msg_hdr.msg_iov = ctypes.pointer(riovs[i])
    rmsgs[i].msg_hdr.msg_iovlen = 1
    rmsgs[i].msg_hdr.msg_name = ctypes.cast(names[i], ctypes.c_void_p)
    rmsgs[i].msg_hdr.msg_namelen = 28
assert libc.recvmmsg(u4.fileno(), rmsgs, 2, 0, None) == 2, ctypes.get_errno()
assert rbufs[1].raw[:15] == b"mmsg-query-AAAA"

child = os.fork()
if child == 0:
    os._exit(3)
os.waitpid(child, 0)
print(child, flush=True)
"#;

fn find<'a>(events: &'a [Event], pid: u32, hook: Hook, prefix: &[u8]) -> &'a SocketDataEvent {
    events
        .iter()
        .find_map(|e| match e {
            Event::Data(d) if d.pid == pid && d.hook == hook && d.payload.starts_with(prefix) => {
                Some(d)
            }
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "no {hook} event from pid {pid} starting with {:?}",
                String::from_utf8_lossy(prefix)
            )
        })
}

#[test]
fn vectored_mmsg_udp_fork_and_trace_ids() {
    // Arbitrary payloads, not an L7 protocol: inference would drop them.
    let mut capture = load_with(Config { infer_protocols: false, ..Config::default() });
    let dir = TempDir::new("hooks");
    let script = dir.0.join("hooks.py");
    std::fs::write(&script, SCRIPT).expect("write the script");

    let child = Command::new("python3")
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let events = collect_until(&mut capture, |events| {
        events.iter().any(|e| {
            matches!(e, Event::Data(d) if d.pid == pid
            && d.direction == Direction::Ingress && d.payload.starts_with(b"proxy-out-2"))
        }) && events.iter().any(|e| {
            matches!(e, Event::Data(d) if d.pid == pid
            && d.direction == Direction::Ingress && d.payload.starts_with(b"proxy-out-1"))
        })
    });
    let loopback6 = |a: SocketAddr| a.ip().to_string() == "::1";

    // sendmsg: the real length of both iovecs, payload from the first only.
    let sendmsg = find(&events, pid, Hook::Sendmsg, b"sendmsg-part1|");
    assert_eq!(sendmsg.payload, b"sendmsg-part1|");
    assert_eq!(sendmsg.syscall_len, 19);
    assert!(sendmsg.is_truncated());
    assert!(loopback6(sendmsg.src) && loopback6(sendmsg.dst));
    assert_eq!(sendmsg.l4, L4Proto::Tcp);
    let recvmsg = find(&events, pid, Hook::Recvmsg, b"sendmsg-part1|part2");
    assert_eq!(recvmsg.syscall_len, 19);
    assert_eq!(recvmsg.direction, Direction::Ingress);
    assert_eq!((recvmsg.src, recvmsg.dst), (sendmsg.src, sendmsg.dst));
    assert_eq!(recvmsg.tcp_seq, sendmsg.tcp_seq);
    assert_ne!(recvmsg.fd, sendmsg.fd);

    let writev = find(&events, pid, Hook::Writev, b"writev-a|");
    assert_eq!(writev.payload, b"writev-a|");
    assert_eq!(writev.syscall_len, 17);
    assert_eq!(writev.tcp_seq, sendmsg.tcp_seq.wrapping_add(19));
    let readv = find(&events, pid, Hook::Readv, b"writev-a|writev-b");
    assert_eq!(readv.syscall_len, 17);
    assert_eq!(readv.tcp_seq, writev.tcp_seq);

    // Unconnected UDP: the peer comes from the syscall's sockaddr.
    let sent = find(&events, pid, Hook::Sendto, b"udp-datagram");
    let received = find(&events, pid, Hook::Recvfrom, b"udp-datagram");
    assert_eq!(sent.l4, L4Proto::Udp);
    assert_eq!(sent.syscall_len, 12);
    assert_eq!(sent.tcp_seq, 0);
    assert!(loopback6(sent.src) && loopback6(sent.dst), "{sent:?}");
    assert_ne!(sent.dst.port(), 0);
    assert_eq!((received.src, received.dst), (sent.src, sent.dst));

    // Each proxy thread's inbound request and upstream call share one id;
    // the two threads have different ids.
    let mut ids = Vec::new();
    for n in 1..=2 {
        let inbound = find(&events, pid, Hook::Recvfrom, format!("proxy-in-{n}").as_bytes());
        let upstream = find(&events, pid, Hook::Sendto, format!("proxy-out-{n}").as_bytes());
        assert_eq!(inbound.tid, upstream.tid, "same thread");
        assert_ne!(inbound.tid, inbound.pid, "a worker thread, not the main one");
        assert_eq!(inbound.comm, "python3", "the process's name, not the thread's");
        assert_ne!(inbound.syscall_trace_id, 0);
        assert_eq!(inbound.syscall_trace_id, upstream.syscall_trace_id);
        assert_ne!(inbound.dst, upstream.src, "two different sockets");
        ids.push(inbound.syscall_trace_id);
    }
    assert_ne!(ids[0], ids[1]);

    // sendmmsg/recvmmsg: one event per message, each with its own length.
    let a = find(&events, pid, Hook::Sendmmsg, b"mmsg-query-A");
    let aaaa = find(&events, pid, Hook::Sendmmsg, b"mmsg-query-AAAA");
    assert_eq!((a.syscall_len, aaaa.syscall_len), (12, 15));
    assert_eq!(a.payload, b"mmsg-query-A");
    assert_eq!(a.l4, L4Proto::Udp);
    assert_eq!(a.src.ip().to_string(), "127.0.0.1");
    assert_ne!(a.dst.port(), 0, "connected UDP peer");
    assert_eq!((aaaa.src, aaaa.dst), (a.src, a.dst));
    let got_aaaa = find(&events, pid, Hook::Recvmmsg, b"mmsg-query-AAAA");
    assert_eq!(got_aaaa.syscall_len, 15);
    assert_eq!(got_aaaa.direction, Direction::Ingress);
    assert_eq!((got_aaaa.src, got_aaaa.dst), (a.src, a.dst), "peer from msg_name");
    let got_a = find(&events, pid, Hook::Recvmmsg, b"mmsg-query-A");
    assert_eq!(got_a.syscall_len, 12);

    // The forked child: a fork event and its exit status (exit(3)).
    let child: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the script prints the child's pid");
    let events = if events.iter().any(|e| {
        matches!(e, Event::Process(p) if p.pid == child
        && matches!(p.kind, ProcessEventKind::Exit { .. }))
    }) {
        events
    } else {
        let mut more = events;
        more.extend(collect_until(&mut capture, |evs| {
            evs.iter().any(|e| {
                matches!(e, Event::Process(p) if p.pid == child
                && matches!(p.kind, ProcessEventKind::Exit { .. }))
            })
        }));
        more
    };
    assert!(
        events.iter().any(|e| matches!(e, Event::Process(p) if p.pid == child
            && p.ppid == pid && p.kind == ProcessEventKind::Fork)),
        "no fork event for child {child} of {pid}"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Process(p) if p.pid == child
            && p.kind == ProcessEventKind::Exit { exit_code: 3 << 8 })),
        "no exit event with status 3 for child {child}"
    );
}

const NOT_SOCKETS: &str = r#"
import os, socket, sys, tempfile
marker = b"fathom-not-a-socket"
with tempfile.TemporaryFile() as f:
    f.write(marker + b"-file")
    f.flush()
    f.seek(0)
    f.read()
r, w = os.pipe()
os.write(w, marker + b"-pipe")
os.read(r, 100)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
a.send(marker + b"-unix")
b.recv(100)
# The control: the same kind of write on a TCP socket is reported.
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
c = socket.create_connection(srv.getsockname())
s, _ = srv.accept()
c.send(b"fathom-tcp-control")
s.recv(100)
"#;

#[test]
fn only_inet_sockets_are_reported() {
    // Arbitrary payloads, not an L7 protocol: inference would drop them.
    let mut capture = load_with(Config { infer_protocols: false, ..Config::default() });
    let dir = TempDir::new("not-sockets");
    let script = dir.0.join("not_sockets.py");
    std::fs::write(&script, NOT_SOCKETS).expect("write the script");
    let child = Command::new("python3")
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let events = collect_until(&mut capture, |events| {
        events.iter().any(|e| {
            matches!(e, Event::Data(d) if d.pid == pid
            && d.direction == Direction::Ingress && d.payload == b"fathom-tcp-control")
        })
    });
    assert!(
        events.iter().any(|e| matches!(e, Event::Data(d) if d.pid == pid
            && d.payload == b"fathom-tcp-control")),
        "the TCP control message was not seen"
    );
    let leaked: Vec<&SocketDataEvent> = events
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) if d.pid == pid && d.payload.starts_with(b"fathom-not-a-socket") => {
                Some(d)
            }
            _ => None,
        })
        .collect();
    assert!(leaked.is_empty(), "file, pipe or unix socket data reported: {leaked:?}");
}
