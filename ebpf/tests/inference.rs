//! In-kernel protocol inference, driven by a Python script over loopback TCP:
//! an HTTP exchange arrives in full while a bulk transfer of random bytes and
//! a TLS-looking stream produce no data events (counted as filtered); a
//! socket recognised within its first messages is reported from then on, one
//! that stayed unrecognised for too long is not. With inference off, all of
//! it is reported.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use common::{collect_until, load_with, TempDir};
use fathom_ebpf::{Config, Direction, Event, Hook, SocketDataEvent, SocketEventKind};

const SCRIPT: &str = r#"
import random, socket, threading

REQ = b"GET /inference HTTP/1.1\r\nHost: fathom\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
JUNK = b"\x00\x01junk!"
TOTAL = 2 << 20

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)

def connect():
    c = socket.create_connection(listener.getsockname())
    s, _ = listener.accept()
    return c, s

def recv_exactly(sock, n):
    got = b""
    while len(got) < n:
        part = sock.recv(65536)
        assert part, "early EOF"
        got += part
    return got

def report(name, c):
    print(name, c.getsockname()[1], flush=True)

# An HTTP/1.1 exchange.
c, s = connect()
c.sendall(REQ)
assert recv_exactly(s, len(REQ)) == REQ
s.sendall(RESP)
assert recv_exactly(c, len(RESP)) == RESP
report("http", c)
c.close(); s.close()

# A bulk transfer of (seeded, so repeatable) random bytes to a sink.
c, s = connect()
data = random.Random(7).randbytes(TOTAL)
received = []
def sink():
    n = 0
    while True:
        part = s.recv(65536)
        if not part:
            break
        n += len(part)
    received.append(n)
t = threading.Thread(target=sink)
t.start()
for i in range(0, TOTAL, 65536):
    c.sendall(data[i:i + 65536])
report("bulk", c)
c.close(); t.join(); s.close()
assert received == [TOTAL], received

# A TLS handshake record first: decided at once, later bytes stay dropped.
c, s = connect()
c.sendall(b"\x16\x03\x01\x00\x05hello")
recv_exactly(s, 10)
c.sendall(REQ)
recv_exactly(s, len(REQ))
report("tls", c)
c.close(); s.close()

# Three unrecognised messages, then HTTP: still within the tries.
c, s = connect()
for _ in range(3):
    c.sendall(JUNK)
    recv_exactly(s, len(JUNK))
c.sendall(REQ)
recv_exactly(s, len(REQ))
report("late", c)
c.close(); s.close()

# Eight unrecognised messages: given up before the HTTP request.
c, s = connect()
for _ in range(8):
    c.sendall(JUNK)
    recv_exactly(s, len(JUNK))
c.sendall(REQ)
recv_exactly(s, len(REQ))
report("given_up", c)
c.close(); s.close()
"#;

const REQ: &[u8] = b"GET /inference HTTP/1.1\r\nHost: fathom\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
const JUNK: &[u8] = b"\x00\x01junk!";
const TOTAL: u64 = 2 << 20;

struct Run {
    pid: u32,
    /// Client port of each connection, by scenario name.
    ports: HashMap<String, u16>,
    events: Vec<Event>,
}

impl Run {
    fn port(&self, name: &str) -> u16 {
        self.ports[name]
    }

    /// Data events of the script on the connection whose client port is `port`.
    fn data(&self, port: u16, direction: Direction) -> Vec<&SocketDataEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Data(d)
                    if d.pid == self.pid
                        && d.direction == direction
                        && (d.src.port() == port || d.dst.port() == port) =>
                {
                    Some(d)
                }
                _ => None,
            })
            .collect()
    }

    /// The client's data on `port`, as its egress messages, one per send.
    fn client_sends(&self, port: u16) -> Vec<&[u8]> {
        self.data(port, Direction::Egress)
            .into_iter()
            .filter(|d| d.src.port() == port)
            .map(|d| d.payload.as_slice())
            .collect()
    }

    fn lifecycle(&self, port: u16, kind: SocketEventKind) -> bool {
        self.events.iter().any(|e| match e {
            Event::Socket(s) => {
                s.pid == self.pid
                    && s.kind == kind
                    && (s.src.port() == port || s.dst.port() == port)
            }
            _ => false,
        })
    }
}

fn concat(events: &[&SocketDataEvent]) -> Vec<u8> {
    events.iter().flat_map(|d| d.payload.iter().copied()).collect()
}

fn run_script(infer_protocols: bool) -> (Run, fathom_ebpf::Counters) {
    let mut capture = load_with(Config { infer_protocols, ..Config::default() });
    let dir = TempDir::new(if infer_protocols { "infer-on" } else { "infer-off" });
    let script = dir.0.join("inference.py");
    std::fs::write(&script, SCRIPT).expect("write the script");
    let child = Command::new("python3")
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for the script");
    assert!(out.status.success(), "script failed: {}", String::from_utf8_lossy(&out.stderr));
    let ports: HashMap<String, u16> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (name, port) = line.split_once(' ')?;
            Some((name.to_string(), port.parse().ok()?))
        })
        .collect();
    assert_eq!(ports.len(), 5, "script output: {}", String::from_utf8_lossy(&out.stdout));

    // Lifecycle events are never filtered: the last connection's close on
    // both ends marks the end of the script's traffic.
    let last = ports["given_up"];
    let events = collect_until(&mut capture, |events| {
        events
            .iter()
            .filter(|e| {
                matches!(e, Event::Socket(s) if s.pid == pid && s.kind == SocketEventKind::Close
                    && (s.src.port() == last || s.dst.port() == last))
            })
            .count()
            >= 2
    });
    let counters = capture.counters().expect("read the counters");
    (Run { pid, ports, events }, counters)
}

#[test]
fn inference_keeps_l7_and_drops_bulk_and_tls() {
    let (run, counters) = run_script(true);

    // HTTP: request and response, on both ends, in full.
    let http = run.port("http");
    let egress = run.data(http, Direction::Egress);
    let ingress = run.data(http, Direction::Ingress);
    let sent = |from_client: bool, events: &[&SocketDataEvent]| -> Vec<u8> {
        let side: Vec<&SocketDataEvent> =
            events.iter().copied().filter(|d| (d.src.port() == http) == from_client).collect();
        concat(&side)
    };
    assert_eq!(sent(true, &egress), REQ, "client request: {egress:?}");
    assert_eq!(sent(true, &ingress), REQ, "server received request: {ingress:?}");
    assert_eq!(sent(false, &egress), RESP, "server response: {egress:?}");
    assert_eq!(sent(false, &ingress), RESP, "client received response: {ingress:?}");

    // Bulk random bytes: connection reported, data not.
    let bulk = run.port("bulk");
    let bulk_data = [run.data(bulk, Direction::Egress), run.data(bulk, Direction::Ingress)];
    assert!(bulk_data.iter().all(Vec::is_empty), "bulk transfer reported: {bulk_data:?}");
    for kind in [SocketEventKind::Connect, SocketEventKind::Accept, SocketEventKind::Close] {
        assert!(run.lifecycle(bulk, kind), "no {kind:?} event for the bulk connection");
    }
    // 32 sends of 64 KiB and at least as many reads, counted (machine-wide).
    assert!(counters.hook(Hook::Sendto).filtered >= 32, "{counters:?}");
    assert!(counters.hook(Hook::Recvfrom).filtered >= 1, "{counters:?}");

    // TLS first: nothing from that connection, even the later HTTP request.
    let tls = run.port("tls");
    let tls_data = [run.data(tls, Direction::Egress), run.data(tls, Direction::Ingress)];
    assert!(tls_data.iter().all(Vec::is_empty), "TLS-looking stream reported: {tls_data:?}");

    // Unrecognised messages are dropped while the socket is tried; HTTP
    // within the tries is reported, after them it is not.
    assert_eq!(run.client_sends(run.port("late")), vec![REQ], "late HTTP");
    assert!(run.client_sends(run.port("given_up")).is_empty(), "given-up socket reported");
}

#[test]
fn without_inference_everything_is_reported() {
    let (run, _) = run_script(false);

    let bulk = run.port("bulk");
    let total = |events: Vec<&SocketDataEvent>| events.iter().map(|d| d.syscall_len).sum::<u64>();
    assert_eq!(total(run.data(bulk, Direction::Egress)), TOTAL, "bulk bytes sent");
    assert_eq!(total(run.data(bulk, Direction::Ingress)), TOTAL, "bulk bytes received");

    let tls = run.client_sends(run.port("tls"));
    assert_eq!(tls, vec![&b"\x16\x03\x01\x00\x05hello"[..], REQ], "TLS-looking stream");
    let mut expected = vec![JUNK; 8];
    expected.push(REQ);
    assert_eq!(run.client_sends(run.port("given_up")), expected, "given-up socket");
    assert_eq!(run.client_sends(run.port("http")), vec![REQ], "HTTP request");
}
