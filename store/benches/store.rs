//! Embedded store write throughput: L7 rows in 100K-row batches, through
//! the whole path (RowBinary encoding, INSERT into chDB's MergeTree), plus
//! the encoding alone. Needs libchdb.so (`bash scripts/fetch-chdb.sh`).

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
