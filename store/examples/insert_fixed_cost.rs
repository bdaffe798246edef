//! TEMP: the fixed cost of one insert.
#[path = "../tests/common/mod.rs"]
mod common;
use fathom_store::{EmbeddedConfig, EmbeddedStore, L7Row, Store};
use std::time::{Duration, Instant};
fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    let base = common::base_time_us();
    let what = std::env::args().nth(1).unwrap_or_default();
    let n: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let rows: Vec<L7Row> = (0..n).map(|i| common::l7_row(i, base)).collect();
    store.query("CREATE DATABASE p").await.unwrap();
    store.query("CREATE TABLE p.null AS flow_log.l7_flow_log ENGINE = Null").await.unwrap();
    store.query("CREATE TABLE p.noidx AS flow_log.l7_flow_log").await.unwrap();
    store.query("ALTER TABLE p.noidx DROP INDEX idx_trace_id, DROP INDEX idx_x_request_id, DROP INDEX idx_syscall_trace_id_request, DROP INDEX idx_syscall_trace_id_response").await.unwrap();
    store.query("SYSTEM STOP MERGES").await.unwrap();
    let iters: usize = std::env::var("ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let (w, c) = (Instant::now(), cpu_time());
    for i in 0..iters {
        match what.as_str() {
            "select" => {
                store.query("SELECT 1").await.unwrap();
            }
            "l7" => store.insert_l7(&rows).await.unwrap(),
            "l7dedup" => store
                .insert_deduplicated(fathom_store::TableRows::L7(&rows), &format!("t{i}"))
                .await
                .unwrap(),
            "null" => store.insert_native_dedup("p.null", &rows, None).await.unwrap(),
            "noidx" => store.insert_native_dedup("p.noidx", &rows, None).await.unwrap(),
            _ => panic!("what"),
        }
    }
    let (w, c) = (w.elapsed(), cpu_time() - c);
    println!(
        "{what} {n} rows: {:.3} ms CPU, {:.3} ms wall per op",
        c.as_secs_f64() * 1e3 / iters as f64,
        w.as_secs_f64() * 1e3 / iters as f64
    );
}
