//! "RED of one service over the last hour, per minute" on a large
//! `l7_flow_log` in the embedded engine: fills the table through fathom's
//! schema with generated calls (INSERT ... SELECT FROM numbers() inside
//! chDB), then times the dialect query the query layer gets, translated by
//! `fathom_query::translate` and run by the store: cold (fresh connection,
//! page cache dropped when running as root) and warm.
//!
//! Not part of the test run (minutes and gigabytes). Run it with
//! `cargo run --release -p fathom-query --example red_100m -- [rows] [hours] [dir]`
//! (defaults: 100000000 rows over the last 24 hours, in a temporary
//! directory removed at the end; a given `dir` is kept and reused when it
//! already holds the rows). Needs libchdb.so (`bash scripts/fetch-chdb.sh`).

use std::time::{Duration, Instant};

use fathom_query::{translate, Limits, Translation};
use fathom_store::{json_u64, EmbeddedConfig, EmbeddedStore, Store};

/// Services the calls are spread over; the query asks for one of them.
const SERVICES: u64 = 200;
const SERVICE: &str = "svc-7";
const CHUNK: u64 = 10_000_000;

/// The dialect statement (what Grafana or fathomctl sends).
const RED_SQL: &str = "SELECT time(60) AS t, Count(*) AS requests, \
     Sum(response_code >= 500) AS errors, Avg(response_duration) AS avg_us, \
     Percentile(response_duration, 99) AS p99_us \
     FROM l7_flow_log WHERE service = 'svc-7' AND time >= now() - 3600 \
     GROUP BY t ORDER BY t";

async fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(dir)).await.unwrap_or_else(|e| panic!("{e}"))
}

async fn scalar(store: &EmbeddedStore, sql: &str) -> u64 {
    let r = store.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    r.rows.first().and_then(|r| r.first()).and_then(json_u64).unwrap_or(0)
}

/// One chunk of generated calls: `rows` calls spread evenly over `hours`
/// hours up to now; 200 services (server side) with 50 endpoints each,
/// log-normal-ish latencies, 2% server errors, trace ids on a fifth of
/// the calls (those with tracing headers).
fn fill_sql(start: u64, count: u64, total: u64, hours: u64, now_us: i64) -> String {
    let span_us = hours * 3_600_000_000;
    format!(
        "INSERT INTO flow_log.l7_flow_log (time, end_time, response_duration, agent_id, \
         observation_point, capture_source, region_id_0, region_id_1, az_id_0, az_id_1, \
         host_id_0, host_id_1, pod_ns_id_1, workload_id_1, pod_id_1, service_id_0, service_id_1, \
         process_id_1, pid_1, ip_0, ip_1, client_port, server_port, protocol, l7_protocol, \
         version, msg_type, request_type, request_domain, request_resource, endpoint, \
         response_code, response_status, request_length, response_length, trace_id, span_id, \
         syscall_trace_id_request, syscall_trace_id_response, req_tcp_seq, resp_tcp_seq) \
         SELECT t, t + toIntervalMicrosecond(lat), lat, 1 + h % 20, 's-p', 'syscall', 1, 1, 1, 1, \
           1 + h % 50, 1 + svc % 50, 1 + svc % 10, svc, svc * 10 + h % 10, 1 + bitShiftRight(h, 8) % {SERVICES}, svc, \
           svc, 1000 + svc, toIPv6(IPv4NumToString(toUInt32(167772160 + h % 65536))), \
           toIPv6(IPv4NumToString(toUInt32(167837696 + svc))), 30000 + h % 30000, 8000 + svc, 6, \
           ['http', 'grpc', 'mysql', 'redis'][1 + svc % 4], '1.1', 'session', \
           ['GET', 'POST', 'PUT'][1 + bitShiftRight(h, 16) % 3], concat('svc-', toString(svc), '.prod.svc'), \
           concat('/api/v1/', toString(svc), '/items/', toString(h % 1000)), \
           concat('/api/v1/', toString(svc), '/items/{{id}}/', toString(bitShiftRight(h, 20) % 50)), \
           code, if(code >= 500, 'server_error', 'ok'), 200 + h % 800, 500 + bitShiftRight(h, 12) % 20000, \
           if(h % 5 = 0, lower(hex(h)) || lower(hex(cityHash64(number, 9))), ''), \
           if(h % 5 = 0, lower(hex(cityHash64(number, 8))), ''), \
           h, h + 1, toUInt32(h % 4294967296), toUInt32(bitShiftRight(h, 32) % 4294967296) \
         FROM (SELECT number, cityHash64(number) AS h, 1 + h % {SERVICES} AS svc, \
           fromUnixTimestamp64Micro(toInt64({now_us} - intDiv(number * {span_us}, {total}))) AS t, \
           toUInt64(300 + exp2(bitShiftRight(h, 24) % 1700 / 100.0)) AS lat, \
           if(bitShiftRight(h, 40) % 100 < 2, 500, 200) AS code \
           FROM numbers({start}, {count}))"
    )
}

fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

async fn run_red(store: &EmbeddedStore, sql: &str) -> (Duration, usize, u64) {
    let t = Instant::now();
    let r = store.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    (t.elapsed(), r.rows.len(), r.rows_read)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000_000);
    let hours: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(24);
    let (_tmp, dir) = match args.next() {
        Some(d) => (None, std::path::PathBuf::from(d)),
        None => {
            let t = tempfile::Builder::new().prefix("fathom-red-").tempdir_in("/var/tmp").unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let Translation::Sql(sql) = translate(Some("flow_log"), RED_SQL, &Limits::default())
        .unwrap_or_else(|e| panic!("the dialect refused the RED query: {}", e.0))
    else {
        panic!("not a store query")
    };
    println!("dialect:    {RED_SQL}\ntranslated: {sql}\n");

    let store = open(&dir).await;
    let have = scalar(&store, "SELECT count() FROM flow_log.l7_flow_log").await;
    if have < rows {
        let tags: Vec<String> =
            (1..=SERVICES).map(|i| format!("('service', {i}, 'svc-{i}')")).collect();
        store
            .query(&format!(
                "INSERT INTO flow_tag.tag_dict (tag_type, id, name) VALUES {}",
                tags.join(", ")
            ))
            .await
            .unwrap();
        let now_us =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
                as i64;
        let t = Instant::now();
        let mut start = have;
        while start < rows {
            let count = CHUNK.min(rows - start);
            store.query(&fill_sql(start, count, rows, hours, now_us)).await.unwrap();
            start += count;
            println!(
                "filled {start} rows in {:.0?} ({:.0} rows/s)",
                t.elapsed(),
                (start - have) as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    let n = scalar(&store, "SELECT count() FROM flow_log.l7_flow_log").await;
    let parts = scalar(&store, "SELECT count() FROM system.parts WHERE active AND database = 'flow_log' AND table = 'l7_flow_log'").await;
    let on_disk = scalar(&store, "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = 'flow_log' AND table = 'l7_flow_log'").await;
    let raw = scalar(&store, "SELECT sum(data_uncompressed_bytes) FROM system.parts WHERE active AND database = 'flow_log' AND table = 'l7_flow_log'").await;
    let last_hour =
        scalar(&store, "SELECT count() FROM flow_log.l7_flow_log WHERE time >= now() - 3600").await;
    let service_hour = scalar(&store, &format!("SELECT count() FROM flow_log.l7_flow_log WHERE time >= now() - 3600 AND service_id_1 = {}", SERVICE.trim_start_matches("svc-"))).await;
    println!(
        "\n{n} rows over {hours} h in {parts} active parts; {:.2} GiB on disk ({:.1} bytes/row; \
         {:.2} GiB uncompressed); data directory {:.2} GiB; last hour {last_hour} rows, \
         {service_hour} of them {SERVICE}",
        on_disk as f64 / (1u64 << 30) as f64,
        on_disk as f64 / n as f64,
        raw as f64 / (1u64 << 30) as f64,
        dir_size(&dir) as f64 / (1u64 << 30) as f64,
    );
    drop(store);

    // Cold: a fresh engine (no mark or uncompressed caches) and, as root,
    // no page cache either.
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    let store = open(&dir).await;
    let (cold, buckets, read) = run_red(&store, &sql).await;
    println!(
        "cold ({}): {:.1} ms, {buckets} minute buckets, {read} rows read",
        if dropped { "new connection, page cache dropped" } else { "new connection only" },
        cold.as_secs_f64() * 1e3
    );
    let mut warm: Vec<Duration> = Vec::new();
    for _ in 0..9 {
        warm.push(run_red(&store, &sql).await.0);
    }
    warm.sort();
    println!(
        "warm: median {:.1} ms, min {:.1} ms, max {:.1} ms (9 runs)",
        warm[4].as_secs_f64() * 1e3,
        warm[0].as_secs_f64() * 1e3,
        warm[8].as_secs_f64() * 1e3
    );
}
