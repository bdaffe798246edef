//! Large messages: the configured capture size bounds each payload, the real
//! byte counts and TCP sequence numbers still add up, and every captured
//! prefix is the data at its sequence offset.

mod common;

use std::process::{Command, Stdio};

use common::{collect_until, load_with, TempDir};
use fathom_ebpf::{Config, Direction, Event, L4Proto, SocketDataEvent};

const TOTAL: usize = 200_000;

/// One process: a server thread sends TOTAL patterned bytes in one sendall,
/// the main thread reads them in 64 KiB recv calls.
const SCRIPT: &str = r#"
import socket, threading
TOTAL = 200_000
data = bytes(i % 251 for i in range(TOTAL))
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
def serve():
    conn, _ = srv.accept()
    conn.sendall(data)
    conn.close()
t = threading.Thread(target=serve)
t.start()
c = socket.create_connection(srv.getsockname())
got = b""
while len(got) < TOTAL:
    chunk = c.recv(65536)
    assert chunk
    got += chunk
assert got == data
t.join()
print(c.getsockname()[1], flush=True)
"#;

fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i % 251) as u8).collect()
}

/// Runs the script under a capture of `capture_bytes`; returns the egress
/// and ingress events of its connection, in order.
/// Also returns the ring buffer drops, to explain missing events.
fn transfer(capture_bytes: u32, tag: &str) -> (Vec<SocketDataEvent>, Vec<SocketDataEvent>, u64) {
    let mut capture =
        load_with(Config { capture_bytes, infer_protocols: false, ..Config::default() });
    let dir = TempDir::new(tag);
    let script = dir.0.join("transfer.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let child = Command::new("python3")
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let client_port: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();

    let of_conn = |events: &[Event], direction: Direction| -> Vec<SocketDataEvent> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Data(d)
                    if d.pid == pid
                        && d.direction == direction
                        && d.l4 == L4Proto::Tcp
                        && (d.src.port() == client_port || d.dst.port() == client_port) =>
                {
                    Some(d.clone())
                }
                _ => None,
            })
            .collect()
    };
    let total = |events: &[SocketDataEvent]| events.iter().map(|d| d.syscall_len).sum::<u64>();
    let events = collect_until(&mut capture, |events| {
        total(&of_conn(events, Direction::Egress)) >= TOTAL as u64
            && total(&of_conn(events, Direction::Ingress)) >= TOTAL as u64
    });
    let drops = capture.counters().unwrap().ring_buffer_drops;
    (of_conn(&events, Direction::Egress), of_conn(&events, Direction::Ingress), drops)
}

fn check_side(events: &[SocketDataEvent], capture_bytes: usize, what: &str, drops: u64) {
    assert!(!events.is_empty(), "{what}: no events ({drops} ring buffer drops)");
    assert_eq!(
        events.iter().map(|d| d.syscall_len).sum::<u64>(),
        TOTAL as u64,
        "{what}: byte counts ({drops} ring buffer drops)"
    );
    let start = events[0].tcp_seq;
    let mut offset = 0usize;
    for d in events {
        assert_eq!(
            d.tcp_seq.wrapping_sub(start) as usize,
            offset,
            "{what}: sequence number of the message at offset {offset}"
        );
        let len = d.syscall_len as usize;
        assert_eq!(d.payload.len(), len.min(capture_bytes), "{what}: capture size");
        assert_eq!(d.payload, pattern(offset, d.payload.len()), "{what}: bytes at {offset}");
        offset += len;
    }
}

#[test]
fn large_transfer_capture_is_bounded_and_sequenced() {
    let (egress, ingress, drops) = transfer(100, "capture-100");
    check_side(&egress, 100, "sender", drops);
    check_side(&ingress, 100, "receiver", drops);
    assert_eq!(egress[0].tcp_seq, ingress[0].tcp_seq, "same first byte at both ends");
    assert!(ingress.len() >= 2, "64 KiB reads of 200000 bytes: {}", ingress.len());
    assert!(ingress.iter().all(|d| d.is_truncated()));
}

#[test]
fn zero_capture_still_reports_lengths() {
    let (egress, ingress, drops) = transfer(0, "capture-0");
    check_side(&egress, 0, "sender", drops);
    check_side(&ingress, 0, "receiver", drops);
}
