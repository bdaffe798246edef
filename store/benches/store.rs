//! Embedded store write throughput: L7 rows in 100K-row batches, through
//! the whole path (Native encoding, INSERT into chDB's MergeTree), plus
//! the encodings alone. Needs libchdb.so (`bash scripts/fetch-chdb.sh`).

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fathom_store::{EmbeddedConfig, EmbeddedStore, Store};

const BATCH: usize = 100_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(EmbeddedStore::open(EmbeddedConfig::new(dir.path())))
        .unwrap_or_else(|e| panic!("{e}"));
    let base = common::base_time_us();
    let rows: Vec<_> = (0..BATCH).map(|i| common::l7_row(i, base)).collect();

    let mut g = c.benchmark_group("l7");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.bench_function("rowbinary_encode_100k", |b| {
        let mut buf = Vec::with_capacity(64 << 20);
        b.iter(|| {
            buf.clear();
            fathom_store::rowbinary::encode_rows(&rows, &mut buf).unwrap();
            buf.len()
        })
    });
    let types = rt
        .block_on(store.query(
            "SELECT name, type FROM system.columns \
             WHERE database = 'flow_log' AND table = 'l7_flow_log'",
        ))
        .unwrap();
    let columns: Vec<_> = <fathom_store::L7Row as clickhouse::Row>::COLUMN_NAMES
        .iter()
        .map(|c| {
            let ty = types.rows.iter().find(|r| r[0] == *c).unwrap()[1].as_str().unwrap();
            fathom_store::native::ColumnType::new(c, ty).unwrap()
        })
        .collect();
    // Encoder and payload buffer reused, as the store does: through serde
    // (any row type) and written directly (the store's row types).
    g.bench_function("native_encode_serde_100k", |b| {
        let mut encoder = fathom_store::native::BlockEncoder::new();
        let mut buf = Vec::with_capacity(64 << 20);
        b.iter(|| {
            buf.clear();
            encoder.encode(&rows, &columns, &mut buf).unwrap();
            buf.len()
        })
    });
    g.bench_function("native_encode_100k", |b| {
        let mut encoder = fathom_store::native::BlockEncoder::new();
        let mut buf = Vec::with_capacity(64 << 20);
        b.iter(|| {
            buf.clear();
            encoder.encode_native(&rows, &columns, &mut buf).unwrap();
            buf.len()
        })
    });
    g.bench_function("embedded_insert_100k", |b| {
        b.iter_batched(
            || (),
            |()| rt.block_on(store.insert_l7(&rows)).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
