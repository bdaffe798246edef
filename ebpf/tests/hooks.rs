//! The less common hooks, driven by a Python script over IPv6: sendmsg and
//! recvmsg, writev and readv, unconnected UDP sendto/recvfrom, and syscall
//! trace ids on two proxy-like threads.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{collect_until, load, TempDir};
use fathom_ebpf::{Direction, Event, Hook, L4Proto, SocketDataEvent};

const SCRIPT: &str = r#"
import os, socket, threading, sys

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
def proxy(n, inbound, upstream):
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
print("done", flush=True)
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
fn vectored_udp_and_trace_ids_over_ipv6() {
    let mut capture = load();
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

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
        let inbound = find(
            &events,
            pid,
            Hook::Recvfrom,
            format!("proxy-in-{n}").as_bytes(),
        );
        let upstream = find(
            &events,
            pid,
            Hook::Sendto,
            format!("proxy-out-{n}").as_bytes(),
        );
        assert_eq!(inbound.tid, upstream.tid, "same thread");
        assert_ne!(
            inbound.tid, inbound.pid,
            "a worker thread, not the main one"
        );
        assert_ne!(inbound.syscall_trace_id, 0);
        assert_eq!(inbound.syscall_trace_id, upstream.syscall_trace_id);
        assert_ne!(inbound.dst, upstream.src, "two different sockets");
        ids.push(inbound.syscall_trace_id);
    }
    assert_ne!(ids[0], ids[1]);
}
