//! Sustained embedded writes, merges included: `inserts` inserts of `rows`
//! L7 rows each (under tokens, as ingest does) into one hourly partition,
//! then the background merges they cause until the engine is idle. Reports
//! rows per CPU-second of the whole process (every chDB thread) for the
//! inserts and for everything, and the parts left.
//!
//! `cargo run --release -p fathom-store --example insert_sustained -- [rows] [inserts]`
//! (needs libchdb.so: `bash scripts/fetch-chdb.sh`). The data directory is
//! under `$TMPDIR`.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use support::cpu_time;

use fathom_store::{json_u64, EmbeddedStore, L7Row, Store, TableRows};

async fn number(store: &EmbeddedStore, sql: &str) -> u64 {
    let r = store.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    r.rows.first().and_then(|r| r.first()).and_then(json_u64).unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let n = args.next().unwrap_or(65_536);
    let inserts = args.next().unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let store = support::open_store(dir.path()).await;
    let base = common::base_time_us();
    // Expert merge settings to compare, e.g. "merge_selector_base = 10".
    if let Ok(settings) = std::env::var("FATHOM_MERGE_SETTINGS") {
        let alter = format!("ALTER TABLE flow_log.l7_flow_log MODIFY SETTING {settings}");
        store.query(&alter).await.unwrap_or_else(|e| panic!("{alter}: {e}"));
        println!("with {settings}");
    }
    // Distinct rows for every insert, all inside one hour, made just
    // before their insert (memory stays small); making them is not counted.
    let (wall, cpu) = (Instant::now(), cpu_time(libc::RUSAGE_SELF));
    let mut making = Duration::ZERO;
    for b in 0..inserts {
        let t = cpu_time(libc::RUSAGE_THREAD);
        let rows: Vec<L7Row> = (0..n).map(|i| common::l7_row(b * n + i, base)).collect();
        making += cpu_time(libc::RUSAGE_THREAD) - t;
        store.insert_deduplicated(TableRows::L7(&rows), &format!("sustained-{b}")).await.unwrap();
    }
    let (insert_wall, insert_cpu) = (wall.elapsed(), cpu_time(libc::RUSAGE_SELF) - cpu - making);
    // Idle: no merge running and the part count steady for a second.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let merging = number(&store, "SELECT count() FROM system.merges").await;
        let parts = number(
            &store,
            "SELECT count() FROM system.parts WHERE database = 'flow_log' \
             AND table = 'l7_flow_log' AND active",
        )
        .await;
        if merging == 0 && parts == last {
            break;
        }
        last = parts;
    }
    let (all_wall, all_cpu) = (wall.elapsed(), cpu_time(libc::RUSAGE_SELF) - cpu - making);
    let total = (n * inserts) as f64;
    let stored = number(&store, "SELECT count() FROM flow_log.l7_flow_log").await;
    assert_eq!(stored, total as u64, "every row stored once");
    let merged = number(&store, "SELECT value FROM system.events WHERE event = 'MergedRows'").await;
    println!(
        "{inserts} inserts of {n} L7 rows ({total} rows), {last} active parts after merging; \
         merges read {merged} rows ({:.2} per row stored)",
        merged as f64 / total
    );
    println!(
        "  while inserting:    {:>9.0} rows/CPU-s {:>9.0} rows/s wall",
        total / insert_cpu.as_secs_f64(),
        total / insert_wall.as_secs_f64()
    );
    println!(
        "  inserts and merges: {:>9.0} rows/CPU-s {:>9.0} rows/s wall",
        total / all_cpu.as_secs_f64(),
        total / all_wall.as_secs_f64()
    );
}
