// Ingest hot path per core: zstd + protobuf decode of a batch, tags to
// SmartEncoding ids, conversion to store rows, Native encoding of the rows
// (what the embedded store sends to chDB). Reported as L7 records/s.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fathom_ingest::{decode_batch, Limits, Tagger};
use fathom_proto::{Compression, L7Log, ProcessRef, RecordBatch, Records};
use fathom_tagging::{DictConfig, Dictionaries};
use prost::Message;

const BATCH: usize = 8192;

fn batch() -> RecordBatch {
    let recs = Records {
        l7: (0..BATCH as u64)
            .map(|n| L7Log {
                client_ip: vec![10, 1, (n >> 8) as u8, n as u8],
                client_port: 30000 + (n % 30000) as u32,
                server_ip: vec![10, 2, 0, (n % 50) as u8],
                server_port: 8080,
                ip_protocol: 6,
                source: 1,
                interface: "eth0".into(),
                process: Some(ProcessRef {
                    pid: 1000 + (n % 64) as u32,
                    tid: 1000,
                    name: format!("service-{:08}", n % 5000),
                    side: 2,
                }),
                start_time_us: 1_764_000_000_000_000 + n * 37,
                end_time_us: 1_764_000_000_000_000 + n * 37 + 1200,
                latency_us: 1200,
                l7_protocol: "http".into(),
                msg_type: "session".into(),
                version: "1.1".into(),
                request_type: "GET".into(),
                request_domain: "api.example.internal".into(),
                request_resource: format!("/v1/orders/{}", n % 997),
                endpoint: "/v1/orders/{id}".into(),
                request_id: None,
                response_code: Some(200),
                response_status: "ok".into(),
                request_length: Some(320),
                response_length: Some(2048),
                trace_id: format!("{:032x}", n * 7919),
                span_id: format!("{:016x}", n),
                req_tcp_seq: Some(n as u32),
                resp_tcp_seq: Some(!(n as u32)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let raw = recs.encode_to_vec();
    RecordBatch {
        agent_id: "agent-1".into(),
        batch_id: 1,
        compression: Compression::Zstd as i32,
        payload: zstd::bulk::compress(&raw, 3).unwrap(),
        uncompressed_size: raw.len() as u64,
        counts: Some(recs.counts()),
        host: "node-1".into(),
        host_ips: vec![vec![10, 2, 0, 1]],
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let dicts = Arc::new(Dictionaries::open(dir.path(), DictConfig::default()).unwrap());
    let tagger = Tagger::new(dicts.clone(), "region-1", "az-1").unwrap();
    let b = batch();
    let limits = Limits { max_batch_bytes: 16 << 20, max_decompressed_bytes: 64 << 20 };
    // Warm the dictionaries: steady state is known names.
    let mut created = Vec::new();
    let recs = decode_batch(&b, limits).unwrap();
    tagger.convert(&b, recs, &mut created).unwrap();
    for d in dicts.all() {
        d.publish();
    }
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut buf = Vec::with_capacity(16 << 20);
    // The columns L7Row writes, in its field order (as the store asks for them).
    let types = fathom_store::schema::columns("flow_log.l7_flow_log");
    let columns: Vec<_> = <fathom_store::L7Row as fathom_store::native::NativeRow>::FIELDS
        .iter()
        .map(|(name, _)| {
            let (_, ty) = types.iter().find(|(c, _)| c == name).unwrap();
            fathom_store::native::ColumnType::new(name, ty).unwrap()
        })
        .collect();
    // The store's encoding: fields written directly, buffers reused.
    let mut encoder = fathom_store::native::BlockEncoder::new();
    g.bench_function("decode_tag_encode_l7", |bench| {
        bench.iter(|| {
            let recs = decode_batch(&b, limits).unwrap();
            let mut created = Vec::new();
            let rows = tagger.convert(&b, recs, &mut created).unwrap();
            buf.clear();
            encoder.encode_native(&rows.l7, &columns, &mut buf).unwrap();
            buf.len()
        })
    });
    // The same with RowBinary (what the ClickHouse server backend sends).
    g.bench_function("decode_tag_rowbinary_l7", |bench| {
        bench.iter(|| {
            let recs = decode_batch(&b, limits).unwrap();
            let mut created = Vec::new();
            let rows = tagger.convert(&b, recs, &mut created).unwrap();
            buf.clear();
            fathom_store::rowbinary::encode_rows(&rows.l7, &mut buf).unwrap();
            buf.len()
        })
    });
    // The decode stage alone, to see where the time goes.
    g.bench_function("decode_only_l7", |bench| {
        bench.iter(|| decode_batch(&b, limits).unwrap().l7.len())
    });
    g.bench_function("zstd_only_l7", |bench| {
        bench.iter(|| {
            zstd::bulk::decompress(&b.payload, b.uncompressed_size as usize).unwrap().len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
