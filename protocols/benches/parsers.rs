//! Throughput of each parser on a realistic request/response pair, through
//! a Session (framing, parsing, pairing), one core. Elements = calls.

#[path = "../tests/common/messages.rs"]
mod messages;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fathom_protocols::{AnyParser, Direction, Session};
use std::hint::black_box;

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_pair");
    for pair in messages::all() {
        g.throughput(Throughput::Elements(1));
        let parser = AnyParser::new(pair.protocol, pair.transport).unwrap();
        let mut session = Session::new(parser);
        let mut ts = 0u64;
        g.bench_function(pair.name, |b| {
            b.iter(|| {
                ts += 2;
                let mut n = 0u32;
                session.feed(Direction::Request, black_box(&pair.request), 0, ts, &mut |_| {});
                session.feed(
                    Direction::Response,
                    black_box(&pair.response),
                    0,
                    ts + 1,
                    &mut |ev| {
                        n += ev.record.response_code.unwrap_or(1) as u32;
                    },
                );
                black_box(n)
            })
        });
    }
    g.finish();
}

fn detection(c: &mut Criterion) {
    let all = messages::all();
    c.bench_function("detect_all_first_messages", |b| {
        b.iter(|| {
            let mut hits = 0;
            for p in &all {
                if fathom_protocols::detect(black_box(&p.request), p.transport, None).is_some() {
                    hits += 1;
                }
            }
            hits
        })
    });
}

criterion_group!(benches, pairs, detection);
criterion_main!(benches);
