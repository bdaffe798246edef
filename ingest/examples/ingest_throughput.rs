//! Whole-system ingest into the embedded store: `agents` clients push
//! L7 batches over gRPC (each one batch at a time, as agents do) to a
//! running ingest node writing to chDB, for `seconds`. Reports rows stored
//! per second and per CPU-second of the server side (the process's CPU less
//! the client threads'), with insert groups as configured and with grouping
//! off (`group_max_rows = 1`: one insert per batch), one after the other.
//!
//! `cargo run --release -p fathom-ingest --example ingest_throughput -- [agents] [batch rows] [seconds] [writers] [queue depth] [group max rows]`
//! (needs libchdb.so: `bash scripts/fetch-chdb.sh`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fathom_ingest::{IngestConfig, RunningIngest};
use fathom_proto::agent_data_client::AgentDataClient;
use fathom_proto::{Compression, RecordBatch, Records};
use fathom_store::{EmbeddedConfig, EmbeddedStore, Store};
use prost::Message;

#[path = "../benches/l7_batch.rs"]
mod l7_batch;

/// CPU time (user + system) of this process's threads, all of them and
/// those whose name starts with `prefix`, in seconds.
fn cpu_seconds(prefix: &str) -> (f64, f64) {
    // /proc counts in USER_HZ, 100 on Linux whatever the kernel's HZ.
    let tick = 100.0;
    let (mut all, mut matching) = (0.0, 0.0);
    for t in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        // "pid (comm) state ...": fields after the closing parenthesis.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        all += ticks / tick;
        if comm.starts_with(prefix) {
            matching += ticks / tick;
        }
    }
    (all, matching)
}

/// The bench batch cut to `rows` L7 records, compressed as an agent does.
fn batch_of(rows: usize) -> RecordBatch {
    let mut b = l7_batch::batch();
    let raw = zstd::bulk::decompress(&b.payload, 64 << 20).unwrap();
    let mut recs = Records::decode(raw.as_slice()).unwrap();
    recs.l7.truncate(rows);
    let raw = recs.encode_to_vec();
    b.payload = zstd::bulk::compress(&raw, 3).unwrap();
    b.compression = Compression::Zstd as i32;
    b.uncompressed_size = raw.len() as u64;
    b.counts = Some(recs.counts());
    b
}

struct Run {
    rows_per_s: f64,
    rows_per_server_cpu_s: f64,
    batches: u64,
    groups: u64,
    insert_ms: f64,
}

fn run(
    store: Arc<dyn Store>,
    agents: usize,
    rows: usize,
    seconds: u64,
    base: &IngestConfig,
    group_max_rows: usize,
) -> Run {
    // Each run starts from an empty table: merges of earlier runs' parts
    // are not counted against it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store.query("TRUNCATE TABLE flow_log.l7_flow_log SYNC")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let cfg = IngestConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: data.path().to_path_buf(),
        group_max_rows,
        ..base.clone()
    };
    let server = RunningIngest::start(&cfg, store).unwrap();
    let addr = format!("http://{}", server.local_addr());
    let batch = batch_of(rows);
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-agent")
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // Warm-up: every agent's names are in the dictionaries before timing.
    let mut tasks = Vec::new();
    for a in 0..agents {
        let (addr, stop, sent) = (addr.clone(), stop.clone(), sent.clone());
        let mut b = batch.clone();
        b.agent_id = format!("agent-{a}");
        b.host = format!("node-{a}");
        tasks.push(clients.spawn(async move {
            let mut client = AgentDataClient::connect(addr)
                .await
                .unwrap()
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                b.batch_id = id;
                client.push(b.clone()).await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let warm = Instant::now();
    while sent.load(Ordering::Relaxed) < agents as u64 * 2
        && warm.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = server.shared_stats();
    let snapshot = |s: &fathom_ingest::IngestStats| {
        (
            s.records_stored.load(Ordering::Relaxed),
            s.batches_stored.load(Ordering::Relaxed),
            s.store_groups.load(Ordering::Relaxed),
            s.store_insert_micros.load(Ordering::Relaxed),
            s.store_inserts.load(Ordering::Relaxed),
        )
    };
    let before = snapshot(&stats);
    let (cpu0, client0) = cpu_seconds("bench-agent");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let after = snapshot(&stats);
    let (cpu1, client1) = cpu_seconds("bench-agent");
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    clients.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    server.stop();
    let stored = (after.0 - before.0) as f64;
    let server_cpu = (cpu1 - cpu0) - (client1 - client0);
    Run {
        rows_per_s: stored / wall,
        rows_per_server_cpu_s: stored / server_cpu,
        batches: after.1 - before.1,
        groups: after.2 - before.2,
        insert_ms: (after.3 - before.3) as f64 / 1e3 / (after.4 - before.4).max(1) as f64,
    }
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().expect("a number"));
    let agents = args.next().unwrap_or(16) as usize;
    let rows = args.next().unwrap_or(l7_batch::BATCH as u64) as usize;
    let seconds = args.next().unwrap_or(20);
    let defaults = IngestConfig::default();
    let base = IngestConfig {
        writers: args.next().map_or(defaults.writers, |v| v as usize),
        queue_depth: args.next().map_or(defaults.queue_depth, |v| v as usize),
        group_max_rows: args.next().map_or(defaults.group_max_rows, |v| v as usize),
        ..defaults
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        rt.block_on(EmbeddedStore::open(EmbeddedConfig::new(dir.path())))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    println!(
        "{agents} agents, {rows} L7 rows per batch, {seconds} s each; {} writers, queue depth {}:",
        base.writers, base.queue_depth
    );
    let grouped = base.group_max_rows;
    // Alternated: background merges of one run's parts fall in the next.
    for (what, max) in [
        ("grouped (default)", grouped),
        ("one insert per batch", 1),
        ("grouped (default)", grouped),
        ("one insert per batch", 1),
    ] {
        let r = run(store.clone(), agents, rows, seconds, &base, max);
        println!(
            "  {what:<22} {:>9.0} rows/s {:>9.0} rows/server-CPU-s  {} batches in {} groups ({:.1} per group), {:.1} ms per insert",
            r.rows_per_s,
            r.rows_per_server_cpu_s,
            r.batches,
            r.groups,
            r.batches as f64 / r.groups.max(1) as f64,
            r.insert_ms
        );
    }
}
