// Ingest hot path per core: zstd + protobuf decode of a batch, tags to
// SmartEncoding ids, conversion to store rows, Native encoding of the rows
// (what the embedded store sends to chDB). Reported as L7 records/s.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fathom_ingest::{decode_records, decompress, Limits, Tagger};
use fathom_proto::view::RecordsView;
use fathom_tagging::{DictConfig, Dictionaries};

mod l7_batch;

use l7_batch::{batch, BATCH};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let dicts = Arc::new(Dictionaries::open(dir.path(), DictConfig::default()).unwrap());
    let tagger = Tagger::new(dicts.clone(), "region-1", "az-1").unwrap();
    let b = batch();
    let limits = Limits { max_batch_bytes: 16 << 20, max_decompressed_bytes: 64 << 20 };
    // Warm the dictionaries: steady state is known names.
    let mut created = Vec::new();
    let payload = decompress(&b, limits).unwrap();
    tagger.convert(&b, decode_records(&b, &payload).unwrap(), &mut created).unwrap();
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
            let payload = decompress(&b, limits).unwrap();
            let recs = decode_records(&b, &payload).unwrap();
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
            let payload = decompress(&b, limits).unwrap();
            let recs = decode_records(&b, &payload).unwrap();
            let mut created = Vec::new();
            let rows = tagger.convert(&b, recs, &mut created).unwrap();
            buf.clear();
            fathom_store::rowbinary::encode_rows(&rows.l7, &mut buf).unwrap();
            buf.len()
        })
    });
    // The decode stage alone (every L7 record decoded, no rows built), to
    // see where the time goes.
    g.bench_function("decode_only_l7", |bench| {
        bench.iter(|| {
            let payload = decompress(&b, limits).unwrap();
            let recs = decode_records(&b, &payload).unwrap();
            recs.l7.iter().map(|r| RecordsView::l7_log(r).unwrap().endpoint.len()).sum::<usize>()
        })
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
