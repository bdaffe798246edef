//! HTTP/1.1 keep-alive calls seen by eBPF at both ends (four data events
//! per call: client write, server read, server write, client read) through
//! the socket flow engine, on one core. Reports events/s and calls/s.
//! The events are built beforehand and cloned per iteration, as the reader
//! hands the shard owned events.

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fathom_agent::ebpf_source::{SocketFlowConfig, SocketFlowEngine};
use fathom_agent::flow::RecordSink;
use fathom_agent::records::{L4Flow, L7Log};
use fathom_ebpf::{Direction, Event, Hook, L4Proto, SocketDataEvent, SocketEvent, SocketEventKind};

struct Count(u64);

impl RecordSink for Count {
    fn l7(&mut self, _: L7Log) {
        self.0 += 1;
    }
    fn l4(&mut self, _: L4Flow) {}
}

const CONNS: u32 = 64;
const CALLS: u32 = 64;

fn events() -> Vec<Event> {
    let req =
        b"GET /api/items?id=42 HTTP/1.1\r\nHost: svc\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"ok\":true}\r\n";
    let server: SocketAddr = "10.0.0.2:8080".parse().unwrap();
    let mut out = Vec::new();
    for c in 0..CONNS {
        let client: SocketAddr = format!("10.0.0.1:{}", 30000 + c).parse().unwrap();
        let ev = |pid: u32, fd: i32, kind, src, dst| {
            Event::Socket(SocketEvent {
                kind,
                ts_ns: 1,
                pid,
                tid: pid,
                fd,
                comm: "bench".into(),
                src,
                dst,
                l4: L4Proto::Tcp,
                tcp_seq: 0,
            })
        };
        out.push(ev(100, 3 + c as i32, SocketEventKind::Connect, client, server));
        out.push(ev(200, 3 + c as i32, SocketEventKind::Accept, client, server));
    }
    for call in 0..CALLS {
        for c in 0..CONNS {
            let client: SocketAddr = format!("10.0.0.1:{}", 30000 + c).parse().unwrap();
            let ts = u64::from(call * CONNS + c) * 1_000_000;
            let d = |pid: u32, dir, src, dst, t: u64, p: &[u8]| {
                Event::Data(SocketDataEvent {
                    ts_ns: ts + t,
                    pid,
                    tid: pid,
                    fd: 3 + c as i32,
                    comm: "bench".into(),
                    hook: if dir == Direction::Egress { Hook::Write } else { Hook::Read },
                    src,
                    dst,
                    l4: L4Proto::Tcp,
                    direction: dir,
                    tcp_seq: call * 1000,
                    syscall_len: p.len() as u64,
                    syscall_trace_id: u64::from(call) + 1,
                    payload: p.to_vec(),
                })
            };
            out.push(d(100, Direction::Egress, client, server, 0, req));
            out.push(d(200, Direction::Ingress, client, server, 10_000, req));
            out.push(d(200, Direction::Egress, server, client, 50_000, resp));
            out.push(d(100, Direction::Ingress, server, client, 60_000, resp));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let evs = events();
    let calls = u64::from(CONNS * CALLS);
    let mut g = c.benchmark_group("ebpf_engine");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("http_keepalive_events", |b| {
        b.iter_batched(
            || evs.clone(),
            |evs| {
                let mut e = SocketFlowEngine::new(SocketFlowConfig::default());
                let mut sink = Count(0);
                for ev in evs {
                    e.process(ev, &mut sink);
                }
                assert_eq!(sink.0, 2 * calls);
                sink.0
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
