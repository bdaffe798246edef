//! The socket flow engine on hand-made eBPF events: roles, process
//! identity, trace ids, TLS plaintext next to its ciphertext, lifecycle and
//! bounds. The kernel-side tests are in ebpf_agent.rs.

use std::net::SocketAddr;

use fathom_agent::ebpf_source::{SocketFlowConfig, SocketFlowEngine};
use fathom_agent::flow::VecSink;
use fathom_agent::records::{CaptureSource, L7Log};
use fathom_ebpf::{
    Direction, Event, Hook, L4Proto, ProcessEvent, ProcessEventKind, SocketDataEvent, SocketEvent,
    SocketEventKind,
};
use proptest::prelude::*;

const CLIENT: &str = "127.0.0.1:40000";
const SERVER: &str = "127.0.0.1:8080";
const REQ: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Ep {
    pid: u32,
    tid: u32,
    fd: i32,
    comm: &'static str,
    local: &'static str,
    remote: &'static str,
}

const CURL: Ep = Ep { pid: 100, tid: 100, fd: 5, comm: "curl", local: CLIENT, remote: SERVER };
const SRV: Ep = Ep { pid: 200, tid: 201, fd: 7, comm: "python3", local: SERVER, remote: CLIENT };

#[allow(clippy::too_many_arguments)]
fn data(
    ep: &Ep,
    hook: Hook,
    dir: Direction,
    ts_us: u64,
    seq: u32,
    trace: u64,
    payload: &[u8],
    len: u64,
) -> Event {
    let (src, dst) = match dir {
        Direction::Egress => (addr(ep.local), addr(ep.remote)),
        Direction::Ingress => (addr(ep.remote), addr(ep.local)),
    };
    Event::Data(SocketDataEvent {
        ts_ns: ts_us * 1000,
        pid: ep.pid,
        tid: ep.tid,
        fd: ep.fd,
        comm: ep.comm.into(),
        hook,
        src,
        dst,
        l4: L4Proto::Tcp,
        direction: dir,
        tcp_seq: seq,
        syscall_len: len,
        syscall_trace_id: trace,
        payload: payload.to_vec(),
    })
}

fn send(ep: &Ep, ts_us: u64, seq: u32, trace: u64, payload: &[u8]) -> Event {
    data(ep, Hook::Write, Direction::Egress, ts_us, seq, trace, payload, payload.len() as u64)
}

fn recv(ep: &Ep, ts_us: u64, seq: u32, trace: u64, payload: &[u8]) -> Event {
    data(ep, Hook::Read, Direction::Ingress, ts_us, seq, trace, payload, payload.len() as u64)
}

fn sock(ep: &Ep, kind: SocketEventKind, ts_us: u64) -> Event {
    let (src, dst) = match kind {
        SocketEventKind::Accept => (addr(ep.remote), addr(ep.local)),
        _ => (addr(ep.local), addr(ep.remote)),
    };
    Event::Socket(SocketEvent {
        kind,
        ts_ns: ts_us * 1000,
        pid: ep.pid,
        tid: ep.tid,
        fd: ep.fd,
        comm: ep.comm.into(),
        src,
        dst,
        l4: L4Proto::Tcp,
        tcp_seq: 0,
    })
}

fn run(engine: &mut SocketFlowEngine, events: Vec<Event>) -> Vec<L7Log> {
    let mut sink = VecSink::default();
    for e in events {
        engine.process(e, &mut sink);
    }
    sink.l7
}

fn engine() -> SocketFlowEngine {
    SocketFlowEngine::new(SocketFlowConfig::default())
}

#[test]
fn payload_buffers_are_handed_back_and_announcements_name_the_ends() {
    let mut e = engine();
    e.set_announcing(true);
    let logs = run(
        &mut e,
        vec![
            sock(&CURL, SocketEventKind::Connect, 1),
            sock(&SRV, SocketEventKind::Accept, 2),
            send(&CURL, 10, 1000, 0, REQ),
            recv(&SRV, 11, 1000, 77, REQ),
            send(&SRV, 20, 5000, 77, RESP),
            recv(&CURL, 21, 5000, 9, RESP),
        ],
    );
    assert_eq!(logs.len(), 2);
    // Every data event's payload buffer, for the reader to decode into.
    assert_eq!(e.take_spent().len(), 4);
    assert!(e.take_spent().is_empty());
    // Role from connect / accept, then again once L7 is detected.
    let mut a = Vec::new();
    e.take_announcements(&mut a);
    let ends: Vec<(u32, bool, bool)> = a.iter().map(|s| (s.process.pid, s.client, s.l7)).collect();
    assert_eq!(
        ends,
        [(100, true, false), (200, false, false), (100, true, true), (200, false, true)]
    );
    assert!(a.iter().all(|s| s.key == a[0].key), "one connection: one flow key");
    assert_eq!(a[0].process.name, "curl");
}

#[test]
fn both_ends_of_a_call_name_their_process() {
    let mut e = engine();
    let logs = run(
        &mut e,
        vec![
            sock(&CURL, SocketEventKind::Connect, 1),
            sock(&SRV, SocketEventKind::Accept, 2),
            send(&CURL, 10, 1000, 0, REQ),
            recv(&SRV, 11, 1000, 77, REQ),
            send(&SRV, 20, 5000, 77, RESP),
            recv(&CURL, 21, 5000, 9, RESP),
        ],
    );
    assert_eq!(logs.len(), 2, "{logs:#?}");
    let server = logs.iter().find(|l| l.process.as_ref().unwrap().pid == 200).unwrap();
    let client = logs.iter().find(|l| l.process.as_ref().unwrap().pid == 100).unwrap();
    for l in [server, client] {
        assert_eq!(l.source, CaptureSource::Syscall);
        assert_eq!(l.call.l7_protocol, "HTTP");
        assert_eq!(l.call.request_resource, "/a");
        assert_eq!(l.call.response_code, Some(200));
        assert_eq!(l.flow.client_port, 40000);
        assert_eq!(l.flow.server_port, 8080);
        assert_eq!(l.req_tcp_seq, Some(1000));
        assert_eq!(l.resp_tcp_seq, Some(5000));
        assert!(l.interface.is_none());
    }
    let sp = server.process.as_ref().unwrap();
    assert_eq!((sp.tid, sp.name.as_str()), (201, "python3"));
    assert_eq!(client.process.as_ref().unwrap().name, "curl");
    assert_eq!((server.start_time_us, server.end_time_us, server.latency_us), (11, 20, 9));
    assert_eq!((client.start_time_us, client.end_time_us, client.latency_us), (10, 21, 11));
    assert_eq!(server.syscall_trace_id_request, Some(77));
    assert_eq!(server.syscall_trace_id_response, Some(77));
    assert_eq!(client.syscall_trace_id_request, None, "0 means no id");
    assert_eq!(client.syscall_trace_id_response, Some(9));
    let s = e.stats();
    assert_eq!((s.connects, s.accepts, s.l7_detected, s.l7_records), (1, 1, 2, 2));
    assert_eq!(s.sockets_active, 2);
}

#[test]
fn sockets_older_than_the_agent_take_their_role_from_detection() {
    let mut e = engine();
    // No accept seen: the server reads a request first.
    let logs = run(&mut e, vec![recv(&SRV, 11, 1, 0, REQ), send(&SRV, 15, 2, 0, RESP)]);
    assert_eq!(logs.len(), 1);
    assert_eq!((logs[0].flow.client_port, logs[0].flow.server_port), (40000, 8080));
    assert_eq!(logs[0].latency_us, 4);
    // No connect seen: the client writes first.
    let logs = run(&mut e, vec![send(&CURL, 30, 1, 0, REQ), recv(&CURL, 36, 2, 0, RESP)]);
    assert_eq!(logs.len(), 1);
    assert_eq!((logs[0].flow.client_port, logs[0].flow.server_port), (40000, 8080));
    assert_eq!(logs[0].latency_us, 6);
}

#[test]
fn tls_plaintext_makes_the_records_and_ciphertext_is_counted() {
    let mut e = engine();
    let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    let app = [0x17, 0x03, 0x03, 0x00, 0x40, 0xde, 0xad, 0xbe, 0xef];
    let tls = |dir, ts, p: &[u8]| {
        let hook = if dir == Direction::Egress { Hook::SslWrite } else { Hook::SslRead };
        data(&CURL, hook, dir, ts, 0, 0, p, p.len() as u64)
    };
    let logs = run(
        &mut e,
        vec![
            sock(&CURL, SocketEventKind::Connect, 1),
            send(&CURL, 2, 1, 0, &hello),
            tls(Direction::Egress, 10, REQ),
            send(&CURL, 10, 600, 0, &app),
            recv(&CURL, 20, 900, 0, &app),
            recv(&CURL, 20, 940, 0, &app),
            tls(Direction::Ingress, 21, RESP),
        ],
    );
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0].source, CaptureSource::Tls);
    assert_eq!(logs[0].call.request_resource, "/a");
    assert_eq!((logs[0].flow.client_port, logs[0].latency_us), (40000, 11));
    assert_eq!(logs[0].req_tcp_seq, None, "plaintext has no sequence number");
    let s = e.stats();
    assert_eq!(s.tls_ciphertext, 1);
    assert_eq!(s.tls_events, 2);
    assert_eq!(s.l7_parse_errors, 0);
    assert_eq!(s.sockets_active, 2, "the raw socket and its plaintext");
    // close ends both.
    let logs = run(&mut e, vec![sock(&CURL, SocketEventKind::Close, 30)]);
    assert!(logs.is_empty());
    assert_eq!(e.stats().sockets_active, 0);
}

#[test]
fn a_prefix_capture_still_pairs_and_skips_the_rest() {
    let mut e = engine();
    let body = vec![b'x'; 100_000];
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
    let head = resp.len() as u64;
    resp.extend_from_slice(&body[..1000]);
    let full = (100_000 + head) as u32;
    let logs = run(
        &mut e,
        vec![
            sock(&CURL, SocketEventKind::Connect, 1),
            send(&CURL, 10, 1, 5, REQ),
            // One read moved the headers and 60000 bytes; 1024 were captured.
            data(&CURL, Hook::Read, Direction::Ingress, 20, 100, 6, &resp[..1024], 60_000 + head),
            data(
                &CURL,
                Hook::Read,
                Direction::Ingress,
                22,
                60_100 + head as u32,
                6,
                &body[..1024],
                40_000,
            ),
            // Keep-alive: the next call on the same socket.
            send(&CURL, 30, 1 + REQ.len() as u32, 5, REQ),
            recv(&CURL, 40, 100 + full, 7, RESP),
        ],
    );
    assert_eq!(logs.len(), 2, "{logs:#?}");
    assert_eq!(logs[0].call.response_code, Some(200), "{logs:#?}");
    assert_eq!(logs[0].resp_tcp_seq, Some(100));
    assert_eq!(logs[1].call.response_code, Some(200), "{logs:#?}");
    assert_eq!(logs[1].req_tcp_seq, Some(1 + REQ.len() as u32));
    assert_eq!(logs[1].resp_tcp_seq, Some(100 + full));
    assert_eq!(logs[1].syscall_trace_id_response, Some(7));
    assert_eq!(e.stats().l7_parse_errors, 0);
}

#[test]
fn unanswered_requests_end_as_timeouts_on_close_exit_and_tick() {
    let mut e = engine();
    let mut sink = VecSink::default();
    for ev in [sock(&CURL, SocketEventKind::Connect, 1), send(&CURL, 10, 1, 0, REQ)] {
        e.process(ev, &mut sink);
    }
    e.process(sock(&CURL, SocketEventKind::Close, 20), &mut sink);
    assert_eq!(sink.l7.len(), 1);
    assert_eq!(sink.l7[0].call.response_status, "timeout");
    assert_eq!(sink.l7[0].req_tcp_seq, Some(1));

    // A process that exits without closing (the kernel closes its fds).
    e.process(send(&CURL, 30, 100, 0, REQ), &mut sink);
    e.process(
        Event::Process(ProcessEvent {
            kind: ProcessEventKind::Exit { exit_code: 0 },
            ts_ns: 40_000,
            pid: CURL.pid,
            tid: CURL.tid,
            ppid: 1,
            comm: "curl".into(),
        }),
        &mut sink,
    );
    assert_eq!(e.len(), 1, "ended at the next tick");
    e.tick(41, &mut sink);
    assert_eq!(e.len(), 0);
    assert_eq!(sink.l7.len(), 2);
    assert_eq!(e.stats().sockets_exited, 1);

    // The request timeout, with the socket still open.
    e.process(recv(&SRV, 1_000_010, 1, 0, REQ), &mut sink);
    let before = sink.l7.len();
    e.tick(1_000_020, &mut sink);
    assert_eq!(sink.l7.len(), before, "not yet");
    e.tick(1_000_010 + 10_000_000, &mut sink);
    assert_eq!(sink.l7.len(), before + 1);
    assert_eq!(sink.l7.last().unwrap().call.response_status, "timeout");
    assert!(e.stats().l7_timeouts >= 3);
}

#[test]
fn capacity_is_bounded_with_lru_eviction() {
    let mut e = SocketFlowEngine::new(SocketFlowConfig { capacity: 8, ..Default::default() });
    let mut sink = VecSink::default();
    for fd in 0..100 {
        let ep = Ep { fd, ..CURL };
        e.process(sock(&ep, SocketEventKind::Connect, 1), &mut sink);
        e.process(send(&ep, 2, 1, 0, REQ), &mut sink);
    }
    assert_eq!(e.len(), 8);
    let s = e.stats();
    assert_eq!((s.sockets_created, s.sockets_evicted), (100, 92));
    // Each evicted socket's pending request is reported.
    assert_eq!(sink.l7.len(), 92);
    e.flush(&mut sink);
    assert_eq!(sink.l7.len(), 100);
    assert!(e.is_empty());
}

#[test]
fn unrecognised_sockets_are_given_up_after_a_few_messages() {
    let mut e = engine();
    let mut sink = VecSink::default();
    for i in 0..10 {
        e.process(send(&CURL, i, 0, 0, b"\x00\x01binary protocol"), &mut sink);
    }
    let s = e.stats();
    assert_eq!((s.l7_undetected, s.l7_detected, s.l7_parse_errors), (1, 0, 0));
    assert!(sink.l7.is_empty());
}

proptest! {
    #[test]
    fn any_bytes_any_order_never_panic(
        msgs in proptest::collection::vec(
            (any::<bool>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64), 0u64..200),
            1..40,
        )
    ) {
        let mut e = SocketFlowEngine::new(SocketFlowConfig { capacity: 4, ..Default::default() });
        let mut sink = VecSink::default();
        for (i, (egress, tls, mut payload, extra)) in msgs.into_iter().enumerate() {
            if i % 3 == 0 {
                payload.splice(0..0, REQ.iter().copied());
            }
            let dir = if egress { Direction::Egress } else { Direction::Ingress };
            let hook = match (tls, egress) {
                (true, true) => Hook::SslWrite,
                (true, false) => Hook::SslRead,
                (false, true) => Hook::Write,
                (false, false) => Hook::Read,
            };
            let len = payload.len() as u64 + extra;
            e.process(data(&CURL, hook, dir, i as u64, i as u32, 0, &payload, len), &mut sink);
        }
        e.tick(u64::MAX / 2, &mut sink);
        e.flush(&mut sink);
        prop_assert!(e.is_empty());
    }
}

#[test]
fn idle_sockets_end_after_their_protocol_timeout() {
    let mut e = engine();
    let mut sink = VecSink::default();
    let dns_peer = Ep { fd: 9, local: "127.0.0.1:5353", remote: "127.0.0.1:40001", ..SRV };
    let mut udp = recv(&dns_peer, 1, 0, 0, b"\x00\x01binary");
    if let Event::Data(d) = &mut udp {
        d.l4 = L4Proto::Udp;
    }
    e.process(udp, &mut sink);
    e.process(send(&CURL, 1, 0, 0, b"\x00\x01binary"), &mut sink);
    assert_eq!(e.len(), 2);
    e.tick(29_000_000, &mut sink);
    assert_eq!(e.len(), 2);
    e.tick(31_000_001, &mut sink);
    assert_eq!(e.len(), 1, "the UDP peer went first");
    e.tick(299_000_000, &mut sink);
    assert_eq!(e.len(), 1);
    e.tick(301_000_001, &mut sink);
    assert!(e.is_empty());
    assert_eq!(e.stats().sockets_idle, 2);
}
