//! Throughput of the metrics hot paths: RedAggregator::observe (keys
//! existing, and with windows rolling and flushed), NetworkAggregator::observe,
//! Histogram::record.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fathom_agent::metrics::{Histogram, NetworkAggregator, RedAggregator};
use fathom_agent::records::*;

const N: usize = 65_536;
const KEYS: usize = 1000;

fn logs(span_us: u64) -> Vec<L7Log> {
    let statuses =
        ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "client_error", "server_error", "timeout"];
    (0..N)
        .map(|i| {
            let k = (i * 7919) % KEYS;
            L7Log {
                flow: FlowTuple {
                    client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)),
                    client_port: 30_000 + (i % 20_000) as u16,
                    server_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, (k % 10) as u8)),
                    server_port: 8080,
                    protocol: L4Protocol::Tcp,
                },
                source: CaptureSource::Packet,
                observation_point: ObservationPoint::ServerProcess,
                interface: None,
                process: Some(ProcessRef { pid: 100, tid: 101, name: "java".into() }),
                start_time_us: 1_700_000_000_000_000 + i as u64 * span_us / N as u64,
                end_time_us: 0,
                latency_us: 50 + (i as u64 * 2654435761) % 200_000,
                call: L7Fields {
                    l7_protocol: "HTTP".into(),
                    msg_type: "session".into(),
                    endpoint: format!("/api/v1/items/{k}"),
                    response_status: statuses[i % statuses.len()].into(),
                    response_code: Some(200),
                    ..Default::default()
                },
                syscall_trace_id_request: None,
                syscall_trace_id_response: None,
                req_tcp_seq: None,
                resp_tcp_seq: None,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(N as u64));

    // Steady state: every key already exists in the (one) open window.
    let recs = logs(500_000);
    let mut agg = RedAggregator::new();
    for r in &recs {
        agg.observe(r);
    }
    g.bench_function("red_observe_existing_keys", |b| {
        b.iter(|| {
            for r in &recs {
                agg.observe(black_box(r));
            }
        })
    });

    // Windows rolling: 64K records over 4 s, flushed every 1/8 s of record time.
    let recs = logs(4_000_000);
    g.bench_function("red_observe_and_flush", |b| {
        b.iter(|| {
            let mut agg = RedAggregator::new();
            let mut rows = 0;
            for (i, r) in recs.iter().enumerate() {
                agg.observe(r);
                if i % (N / 32) == 0 {
                    rows += agg.flush(r.start_time_us).len();
                }
            }
            rows + agg.flush_all().len()
        })
    });

    let flows: Vec<L4Flow> = logs(500_000)
        .into_iter()
        .map(|l| L4Flow {
            flow: l.flow,
            source: l.source,
            interface: None,
            start_time_us: l.start_time_us,
            end_time_us: l.start_time_us + 1000,
            duration_us: 1000,
            tx: DirectionCounters { bytes: 700, packets: 5, ..Default::default() },
            rx: DirectionCounters { bytes: 9000, packets: 8, ..Default::default() },
            syn_ack: 1,
            rtt_server_us: Some(40),
            rtt_client_us: Some(60),
            close_type: CloseType::Fin,
            l7_protocol: Some("HTTP".into()),
            client_process: None,
            server_process: None,
        })
        .collect();
    let mut net = NetworkAggregator::new();
    g.bench_function("network_observe_existing_keys", |b| {
        b.iter(|| {
            for f in &flows {
                net.observe(black_box(f));
            }
        })
    });

    let values: Vec<u64> = (0..N as u64).map(|i| (i * 2654435761) % 5_000_000).collect();
    let mut h = Histogram::new();
    g.bench_function("histogram_record", |b| {
        b.iter(|| {
            for &v in &values {
                h.record(black_box(v));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
