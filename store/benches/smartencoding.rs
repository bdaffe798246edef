//! SmartEncoding on disk: the same L7 records with their resource tags as
//! String, as LowCardinality(String) and as UInt32 dictionary ids (16-char
//! names, 5000 distinct values per tag, as in DeepFlow's benchmark), in the
//! embedded engine. Prints bytes on disk (system.columns, after merging to
//! one part) and insert wall and CPU time per variant, then the write rate
//! of fathom's full L7 row.
//!
//! `cargo bench -p fathom-store --bench smartencoding`; FATHOM_SE_ROWS sets
//! the record count (default 10M).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use fathom_store::{EmbeddedConfig, EmbeddedStore, Store, TagRow};
use serde::Serialize;

const CARDINALITY: u32 = 5000;
const CHUNK: usize = 1_000_000;
const TAGS: [&str; 8] = ["region", "az", "host", "pod_ns", "workload", "pod", "service", "process"];

/// 16 characters, distinct per (tag, value), like generated resource names.
fn tag_name(tag: usize, v: u32) -> String {
    let s =
        format!("{}-{:05}-{:08x}", &TAGS[tag][..2], v, (v as u64 * 2654435761 + tag as u64) as u32);
    s[..16].to_string()
}

/// splitmix64: a well-mixed hash, so record i's pod is uniformly random.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How records spread over the 5000 pods.
#[derive(Clone, Copy, Debug)]
enum Spread {
    /// Uniformly at random: no locality, the hardest case for every encoding.
    Uniform,
    /// Zipf (s = 1): a few pods carry most calls, as in real fleets.
    Zipf,
}

fn zipf_cdf() -> &'static [f64] {
    static CDF: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    CDF.get_or_init(|| {
        let w: Vec<f64> = (1..=CARDINALITY).map(|k| 1.0 / k as f64).collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        w.iter()
            .map(|x| {
                acc += x / total;
                acc
            })
            .collect()
    })
}

/// Tag `tag`'s value on record `i`: each record comes from one pod, and its
/// other tags follow from the pod as real resource tags do, each tag still
/// taking 5000 values.
fn tag_value(i: usize, tag: usize, spread: Spread) -> u32 {
    let h = mix(i as u64);
    let pod = match spread {
        Spread::Uniform => (h % CARDINALITY as u64) as u32,
        Spread::Zipf => {
            let u = (h >> 11) as f64 / (1u64 << 53) as f64;
            let rank = zipf_cdf().partition_point(|&c| c < u) as u32;
            // Popularity is unrelated to the id's value.
            (rank.min(CARDINALITY - 1) as u64 * 2_654_435_761 % CARDINALITY as u64) as u32
        }
    };
    (pod.wrapping_mul(2 * tag as u32 + 1) + tag as u32 * 977) % CARDINALITY
}

#[derive(Serialize, clickhouse::Row)]
struct StringTags {
    time: i64,
    response_duration: u64,
    server_port: u16,
    l7_protocol: String,
    endpoint: String,
    region: String,
    az: String,
    host: String,
    pod_ns: String,
    workload: String,
    pod: String,
    service: String,
    process: String,
}

#[derive(Serialize, clickhouse::Row)]
struct IdTags {
    time: i64,
    response_duration: u64,
    server_port: u16,
    l7_protocol: String,
    endpoint: String,
    region: u32,
    az: u32,
    host: u32,
    pod_ns: u32,
    workload: u32,
    pod: u32,
    service: u32,
    process: u32,
}

fn ddl(table: &str, tag_type: &str) -> String {
    let tags: Vec<String> = TAGS.iter().map(|t| format!("{t} {tag_type}")).collect();
    format!(
        "CREATE TABLE {table} (time DateTime64(6) CODEC(Delta, ZSTD(1)), response_duration UInt64, \
         server_port UInt16, l7_protocol LowCardinality(String), endpoint String, {}) \
         ENGINE = MergeTree PARTITION BY toStartOfHour(time) ORDER BY (l7_protocol, server_port, endpoint, time)",
        tags.join(", ")
    )
}

fn common_fields(i: usize, base: i64) -> (i64, u64, u16, String, String) {
    let r = common::l7_row(i, base);
    (r.time, r.response_duration, r.server_port, r.l7_protocol, r.endpoint)
}

fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

struct Measured {
    variant: String,
    insert_wall: Duration,
    insert_cpu: Duration,
    tag_bytes: u64,
    tag_bytes_uncompressed: u64,
    table_bytes: u64,
}

async fn column_bytes(store: &EmbeddedStore, table: &str) -> (u64, u64, u64) {
    let tags: Vec<String> = TAGS.iter().map(|t| format!("'{t}'")).collect();
    let (db, name) = table.split_once('.').unwrap();
    let r = store
        .query(&format!(
            "SELECT sumIf(data_compressed_bytes, name IN ({0})), \
             sumIf(data_uncompressed_bytes, name IN ({0})), sum(data_compressed_bytes) \
             FROM system.columns WHERE database = '{db}' AND table = '{name}'",
            tags.join(", ")
        ))
        .await
        .unwrap();
    let v = |k: usize| fathom_store::json_u64(&r.rows[0][k]).unwrap();
    (v(0), v(1), v(2))
}

async fn run_variant<T: Serialize + clickhouse::Row>(
    store: &EmbeddedStore,
    variant: &str,
    table: &str,
    tag_type: &str,
    rows: usize,
    make: impl Fn(usize, i64) -> T,
) -> Measured {
    store.query(&ddl(table, tag_type)).await.unwrap();
    // Merges would run during the timed inserts of one variant and not of
    // another; each table is merged once, after its inserts.
    store.query(&format!("SYSTEM STOP MERGES {table}")).await.unwrap();
    let base = common::base_time_us();
    let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
    let mut start = 0;
    while start < rows {
        let end = (start + CHUNK).min(rows);
        let chunk: Vec<T> = (start..end).map(|i| make(i, base)).collect();
        let (w0, c0) = (Instant::now(), cpu_time());
        store.insert_rows(table, &chunk).await.unwrap();
        wall += w0.elapsed();
        cpu += cpu_time() - c0;
        start = end;
    }
    store.query(&format!("SYSTEM START MERGES {table}")).await.unwrap();
    store.query(&format!("OPTIMIZE TABLE {table} FINAL")).await.unwrap();
    let (tag_bytes, tag_bytes_uncompressed, table_bytes) = column_bytes(store, table).await;
    Measured {
        variant: variant.to_string(),
        insert_wall: wall,
        insert_cpu: cpu,
        tag_bytes,
        tag_bytes_uncompressed,
        table_bytes,
    }
}

fn main() {
    // `cargo bench` passes --bench; there is nothing to select.
    let rows: usize =
        std::env::var("FATHOM_SE_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.query("CREATE DATABASE IF NOT EXISTS se").await.unwrap();
        // The id variant also needs its dictionary: 8 tags x 5000 names.
        let dict: Vec<TagRow> = (0..TAGS.len())
            .flat_map(|t| {
                (0..CARDINALITY).map(move |v| TagRow {
                    tag_type: TAGS[t].into(),
                    id: v + 1,
                    name: tag_name(t, v),
                })
            })
            .collect();
        store.upsert_tags(&dict).await.unwrap();
        store.query("OPTIMIZE TABLE flow_tag.tag_dict FINAL").await.unwrap();
        let dict_bytes = fathom_store::json_u64(
            &store
                .query(
                    "SELECT sum(data_compressed_bytes) FROM system.parts \
                     WHERE database = 'flow_tag' AND table = 'tag_dict' AND active",
                )
                .await
                .unwrap()
                .rows[0][0],
        )
        .unwrap();

        for spread in [Spread::Uniform, Spread::Zipf] {
            let names = |i: usize, base: i64| {
                let (time, response_duration, server_port, l7_protocol, endpoint) = common_fields(i, base);
                let n = |t: usize| tag_name(t, tag_value(i, t, spread));
                StringTags {
                    time, response_duration, server_port, l7_protocol, endpoint,
                    region: n(0), az: n(1), host: n(2), pod_ns: n(3),
                    workload: n(4), pod: n(5), service: n(6), process: n(7),
                }
            };
            let ids = |i: usize, base: i64| {
                let (time, response_duration, server_port, l7_protocol, endpoint) = common_fields(i, base);
                let n = |t: usize| tag_value(i, t, spread) + 1;
                IdTags {
                    time, response_duration, server_port, l7_protocol, endpoint,
                    region: n(0), az: n(1), host: n(2), pod_ns: n(3),
                    workload: n(4), pod: n(5), service: n(6), process: n(7),
                }
            };
            let mut results = Vec::new();
            for (k, ty) in [
                "String",
                "LowCardinality(String)",
                "LowCardinality(String) CODEC(ZSTD(1))",
            ]
            .into_iter()
            .enumerate()
            {
                results.push(run_variant(&store, ty, &format!("se.names_{spread:?}_{k}"), ty, rows, names).await);
            }
            for (k, ty) in ["UInt32", "UInt32 CODEC(ZSTD(1))", "UInt32 CODEC(T64, ZSTD(1))"]
                .into_iter()
                .enumerate()
            {
                results.push(run_variant(&store, ty, &format!("se.ids_{spread:?}_{k}"), ty, rows, ids).await);
            }

            println!(
                "\nSmartEncoding: {rows} L7 records, 8 tags of 16 characters, 5000 values each, \
                 pods {spread:?}"
            );
            println!(
                "{:<38} {:>12} {:>12} {:>10} {:>12} {:>9} {:>9} {:>11}",
                "tags as", "raw tag B", "tag bytes", "B/tag/row", "table bytes", "insert s", "CPU s", "rows/CPU-s"
            );
            for m in &results {
                println!(
                    "{:<38} {:>12} {:>12} {:>10.3} {:>12} {:>9.2} {:>9.2} {:>11.0}",
                    m.variant,
                    m.tag_bytes_uncompressed,
                    m.tag_bytes,
                    m.tag_bytes as f64 / (rows * TAGS.len()) as f64,
                    m.table_bytes,
                    m.insert_wall.as_secs_f64(),
                    m.insert_cpu.as_secs_f64(),
                    rows as f64 / m.insert_cpu.as_secs_f64(),
                );
            }
            println!("id dictionary (flow_tag.tag_dict, 40000 names): {dict_bytes} bytes");
            let (string, lc) = (&results[0], &results[1]);
            for id in &results[3..] {
                println!(
                    "{:<28} tag columns: String / id = {:>5.1}x, LowCardinality / id = {:>4.2}x \
                     (with the dictionary: {:.1}x, {:.2}x); whole table: {:.2}x, {:.2}x; \
                     insert CPU: {:.2}x, {:.2}x",
                    id.variant,
                    string.tag_bytes as f64 / id.tag_bytes as f64,
                    lc.tag_bytes as f64 / id.tag_bytes as f64,
                    string.tag_bytes as f64 / (id.tag_bytes + dict_bytes) as f64,
                    lc.tag_bytes as f64 / (id.tag_bytes + dict_bytes) as f64,
                    string.table_bytes as f64 / id.table_bytes as f64,
                    lc.table_bytes as f64 / id.table_bytes as f64,
                    string.insert_cpu.as_secs_f64() / id.insert_cpu.as_secs_f64(),
                    lc.insert_cpu.as_secs_f64() / id.insert_cpu.as_secs_f64(),
                );
            }
        }

        // fathom's full L7 row (64 columns) through the store's own path.
        let n = rows.min(2_000_000);
        let base = common::base_time_us();
        let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
        for start in (0..n).step_by(100_000) {
            let batch: Vec<_> = (start..(start + 100_000).min(n)).map(|i| common::l7_row(i, base)).collect();
            let (w0, c0) = (Instant::now(), cpu_time());
            store.insert_l7(&batch).await.unwrap();
            wall += w0.elapsed();
            cpu += cpu_time() - c0;
        }
        println!(
            "\nflow_log.l7_flow_log: {n} rows in 100K batches: {:.0} rows/s wall, {:.0} rows per CPU-second",
            n as f64 / wall.as_secs_f64(),
            n as f64 / cpu.as_secs_f64()
        );
    });
}
