//! Replays synthetic HTTP/1.1 keep-alive traffic (handshake, many
//! request/response transactions with their ACKs, FIN close) through
//! decode + flow engine, on one core. Reports packets/s and transactions/s.

use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fathom_agent::flow::{FlowConfig, FlowEngine, RecordSink};
use fathom_agent::packet::build::FrameBuilder;
use fathom_agent::packet::tcp_flags::*;
use fathom_agent::packet::LinkType;
use fathom_agent::records::{L4Flow, L7Log};

/// Frames back to back, with (offset, len, ts_us).
struct Capture {
    data: Vec<u8>,
    frames: Vec<(usize, usize, u64)>,
    transactions: u64,
}

struct Side {
    addr: SocketAddr,
    seq: u32,
}

impl Capture {
    fn push(
        &mut self,
        from: &mut Side,
        to: &Side,
        flags: u8,
        payload: &[u8],
        ts: u64,
        buf: &mut Vec<u8>,
    ) {
        FrameBuilder::tcp(from.addr, to.addr, from.seq, to.seq, flags).build_into(payload, buf);
        from.seq =
            from.seq.wrapping_add(payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0));
        self.frames.push((self.data.len(), buf.len(), ts));
        self.data.extend_from_slice(buf);
    }
}

/// `conns` connections interleaved, `per_conn` transactions each.
fn synth(conns: u32, per_conn: u32) -> Capture {
    let mut cap = Capture { data: Vec::new(), frames: Vec::new(), transactions: 0 };
    let mut buf = Vec::new();
    let server_addr: SocketAddr = "10.1.0.1:8080".parse().unwrap();
    let mut pairs: Vec<(Side, Side)> = (0..conns)
        .map(|i| {
            let c =
                SocketAddr::from(([10, 2, (i >> 8) as u8, i as u8], 40000 + (i % 20000) as u16));
            (
                Side { addr: c, seq: i.wrapping_mul(7919) },
                Side { addr: server_addr, seq: i.wrapping_mul(104729) },
            )
        })
        .collect();
    let mut ts = 1_000_000u64;
    for (c, s) in pairs.iter_mut() {
        cap.push(c, s, SYN, b"", ts, &mut buf);
        cap.push(s, c, SYN | ACK, b"", ts + 20, &mut buf);
        cap.push(c, s, ACK, b"", ts + 40, &mut buf);
        ts += 1;
    }
    let body = [b'x'; 64];
    for t in 0..per_conn {
        for (i, (c, s)) in pairs.iter_mut().enumerate() {
            let req = format!(
                "GET /api/v1/items/{} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n",
                (t as usize * 31 + i) % 1000
            );
            let mut resp =
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"
                    .to_vec();
            resp.extend_from_slice(&body);
            cap.push(c, s, PSH | ACK, req.as_bytes(), ts, &mut buf);
            cap.push(s, c, ACK, b"", ts + 10, &mut buf);
            cap.push(s, c, PSH | ACK, &resp, ts + 200, &mut buf);
            cap.push(c, s, ACK, b"", ts + 210, &mut buf);
            cap.transactions += 1;
            ts += 3;
        }
    }
    for (c, s) in pairs.iter_mut() {
        cap.push(c, s, FIN | ACK, b"", ts, &mut buf);
        cap.push(s, c, FIN | ACK, b"", ts + 10, &mut buf);
        cap.push(c, s, ACK, b"", ts + 20, &mut buf);
        ts += 1;
    }
    cap
}

/// Counts records; building them is part of the measured work.
#[derive(Default)]
struct Count {
    l7: u64,
    l4: u64,
}

impl RecordSink for Count {
    fn l7(&mut self, log: L7Log) {
        self.l7 += u64::from(log.call.response_code == Some(200));
    }
    fn l4(&mut self, _: L4Flow) {
        self.l4 += 1;
    }
}

fn replay(cap: &Capture) -> Count {
    let mut e = FlowEngine::new(FlowConfig::default());
    let mut sink = Count::default();
    let mut last_tick = 0;
    for &(off, len, ts) in &cap.frames {
        let f = &cap.data[off..off + len];
        let _ = e.process_frame(LinkType::Ethernet, f, len as u32, ts, &mut sink);
        if ts >= last_tick + 1_000_000 {
            e.tick(ts, &mut sink);
            last_tick = ts;
        }
    }
    e.flush(&mut sink);
    sink
}

fn bench(c: &mut Criterion) {
    let cap = synth(1000, 100);
    let check = replay(&cap);
    assert_eq!(check.l7, cap.transactions, "every transaction makes one record");
    assert_eq!(check.l4, 1000);
    eprintln!(
        "capture: {} packets, {} HTTP transactions, {} connections; flow state ~{} B/flow \
         (without an L7 session)",
        cap.frames.len(),
        cap.transactions,
        1000,
        FlowEngine::bytes_per_flow()
    );

    let mut g = c.benchmark_group("flow_engine");
    g.sample_size(20);
    g.throughput(Throughput::Elements(cap.frames.len() as u64));
    g.bench_function("http1_keepalive/packets", |b| b.iter(|| replay(&cap)));
    g.throughput(Throughput::Elements(cap.transactions));
    g.bench_function("http1_keepalive/transactions", |b| b.iter(|| replay(&cap)));
    g.finish();

    // Short connections: one transaction each, so flow setup and teardown dominate.
    let short = synth(20_000, 1);
    let mut g = c.benchmark_group("flow_engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(short.frames.len() as u64));
    g.bench_function("http1_short_conns/packets", |b| b.iter(|| replay(&short)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
