//! The bench's L7 path (decode, tag, Native encoding) run a given number of
//! times, without a harness: for counting instructions per record under
//! callgrind, which stays exact on a loaded machine. Run it with 1 and with
//! N passes; the difference over (N - 1) * 8192 is the steady-state cost.
//!
//!     valgrind --tool=callgrind target/release/examples/l7_path 3

use std::sync::Arc;

use fathom_ingest::{decode_records, decompress, Limits, Tagger};
use fathom_tagging::{DictConfig, Dictionaries};

#[path = "../benches/l7_batch.rs"]
mod l7_batch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let passes: usize = std::env::args().nth(1).map_or(1, |a| a.parse().expect("a pass count"));
    let dir = tempfile::tempdir().unwrap();
    let dicts = Arc::new(Dictionaries::open(dir.path(), DictConfig::default()).unwrap());
    let tagger = Tagger::new(dicts.clone(), "region-1", "az-1").unwrap();
    let b = l7_batch::batch();
    let limits = Limits { max_batch_bytes: 16 << 20, max_decompressed_bytes: 64 << 20 };
    let mut created = Vec::new();
    let payload = decompress(&b, limits).unwrap();
    tagger.convert(&b, decode_records(&b, &payload).unwrap(), &mut created).unwrap();
    for d in dicts.all() {
        d.publish();
    }
    let types = fathom_store::schema::columns("flow_log.l7_flow_log");
    let columns: Vec<_> = <fathom_store::L7Row as fathom_store::native::NativeRow>::FIELDS
        .iter()
        .map(|(name, _)| {
            let (_, ty) = types.iter().find(|(c, _)| c == name).unwrap();
            fathom_store::native::ColumnType::new(name, ty).unwrap()
        })
        .collect();
    let mut encoder = fathom_store::native::BlockEncoder::new();
    let mut buf = Vec::with_capacity(16 << 20);
    let mut bytes = 0;
    for _ in 0..passes {
        let payload = decompress(&b, limits).unwrap();
        let recs = decode_records(&b, &payload).unwrap();
        let rows = tagger.convert(&b, recs, &mut created).unwrap();
        buf.clear();
        encoder.encode_native(&rows.l7, &columns, &mut buf).unwrap();
        bytes += buf.len();
    }
    println!("{passes} passes of {} L7 records, {bytes} bytes encoded", l7_batch::BATCH);
}
