//! What one embedded insert costs besides its rows: CPU per statement of
//! `SELECT 1`, and of inserting `rows` L7 rows into a Null table (query
//! setup only), a MergeTree copy of the L7 table without its skip indexes,
//! the L7 table, and the L7 table under a deduplication token (the ingest
//! path). Merges are stopped, so each figure is the insert alone; CPU is the
//! whole process's (every chDB thread).
//!
//! `cargo run --release -p fathom-store --example insert_fixed_cost -- [rows] [inserts]`
//! (needs libchdb.so: `bash scripts/fetch-chdb.sh`). The data directory is
//! under `$TMPDIR`: point it at a tmpfs to leave the file system out.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use support::{cpu_time, sql};

use fathom_store::{L7Row, Store, TableRows};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let n = args.next().unwrap_or(1);
    let inserts = args.next().unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let store = support::open_store(dir.path()).await;
    let base = common::base_time_us();
    let rows: Vec<L7Row> = (0..n).map(|i| common::l7_row(i, base)).collect();
    sql(&store, "CREATE DATABASE profile").await;
    sql(&store, "CREATE TABLE profile.null AS flow_log.l7_flow_log ENGINE = Null").await;
    sql(&store, "CREATE TABLE profile.no_index AS flow_log.l7_flow_log").await;
    sql(
        &store,
        "ALTER TABLE profile.no_index DROP INDEX idx_trace_id, DROP INDEX idx_x_request_id, \
         DROP INDEX idx_syscall_trace_id_request, DROP INDEX idx_syscall_trace_id_response",
    )
    .await;
    sql(&store, "SYSTEM STOP MERGES").await;
    println!("{n} rows per insert, {inserts} inserts each, CPU per statement:");
    for what in
        ["SELECT 1", "Null table", "MergeTree, no skip index", "l7_flow_log", "l7_flow_log, token"]
    {
        let (wall, cpu) = (Instant::now(), cpu_time(libc::RUSAGE_SELF));
        for i in 0..inserts {
            match what {
                "SELECT 1" => sql(&store, "SELECT 1").await,
                "Null table" => {
                    store.insert_native_dedup("profile.null", &rows, None).await.unwrap()
                }
                "MergeTree, no skip index" => {
                    store.insert_native_dedup("profile.no_index", &rows, None).await.unwrap()
                }
                "l7_flow_log" => store.insert_l7(&rows).await.unwrap(),
                _ => store
                    .insert_deduplicated(TableRows::L7(&rows), &format!("profile-{i}"))
                    .await
                    .unwrap(),
            }
        }
        let (wall, cpu) = (wall.elapsed(), cpu_time(libc::RUSAGE_SELF) - cpu);
        println!(
            "  {what:<28} {:>8.2} ms CPU {:>8.2} ms wall",
            cpu.as_secs_f64() * 1e3 / inserts as f64,
            wall.as_secs_f64() * 1e3 / inserts as f64
        );
    }
}
