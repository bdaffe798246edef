//! The store against the real ClickHouse engine (chDB 26.x, in-process).
//! Needs libchdb.so: `bash scripts/fetch-chdb.sh` (CI runs it).
//! chDB allows one open connection per process, so these tests take turns.

mod common;

use common::*;
use fathom_store::{
    migrate, rowbinary::encode_rows, EmbeddedConfig, EmbeddedStore, Granularity, Retention, Store,
    StoreError, TableRows, SCHEMA_VERSION,
};
use serde_json::json;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn open(dir: &std::path::Path) -> EmbeddedStore {
    match EmbeddedStore::open(EmbeddedConfig::new(dir)).await {
        Ok(s) => s,
        Err(e) => panic!("embedded store did not open: {e}"),
    }
}

async fn scalar(store: &dyn Store, sql: &str) -> serde_json::Value {
    let r = store.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(r.rows.len(), 1, "{sql}: {:?}", r.rows);
    r.rows[0][0].clone()
}

#[tokio::test]
async fn schema_applies_twice_and_data_survives_a_restart() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // open() migrated once; twice more must change nothing.
    for _ in 0..2 {
        let v = migrate(&store, &Retention::default()).await.unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }
    let tables = store
        .query(
            "SELECT database || '.' || name FROM system.tables \
             WHERE database IN ('flow_log', 'flow_metrics', 'flow_tag') ORDER BY 1",
        )
        .await
        .unwrap();
    let names: Vec<&str> = tables.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    let mut want = fathom_store::schema::TABLES.to_vec();
    want.sort();
    assert_eq!(names, want);
    // The column list read from the DDL is the engine's.
    for table in fathom_store::schema::DATA_TABLES {
        let (db, name) = table.split_once('.').unwrap();
        let r = store
            .query(&format!(
                "SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{name}' \
                 ORDER BY position"
            ))
            .await
            .unwrap();
        let engine: Vec<(String, String)> = r
            .rows
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(fathom_store::schema::columns(table), engine, "{table}");
    }
    let versions = json!(SCHEMA_VERSION);
    assert_eq!(scalar(&store, "SELECT count() FROM flow_tag.schema_version FINAL").await, versions);
    // Hourly partitions, TTL that drops whole parts.
    let engine = scalar(
        &store,
        "SELECT engine_full FROM system.tables WHERE database = 'flow_log' AND name = 'l7_flow_log'",
    )
    .await;
    let engine = engine.as_str().unwrap();
    assert!(engine.contains("PARTITION BY toStartOfHour(time)"), "{engine}");
    // Rendered as written, so reopening with the same retention alters nothing.
    let ttl =
        fathom_store::schema::table_ttl("flow_log.l7_flow_log", &Retention::default()).unwrap();
    assert!(engine.contains(&ttl), "{engine}");
    assert!(engine.contains("ttl_only_drop_parts = 1"), "{engine}");

    let base = base_time_us();
    let rows: Vec<_> = (0..1000).map(|i| l7_row(i, base)).collect();
    store.insert_l7(&rows).await.unwrap();
    store.upsert_tags(&[tag_row(1)]).await.unwrap();
    // A store of schema version 1: no insert deduplication window yet,
    // wide parts from the engine's default size on.
    store
        .query("ALTER TABLE flow_log.l4_flow_log MODIFY SETTING non_replicated_deduplication_window = 0")
        .await
        .unwrap();
    store
        .query("ALTER TABLE flow_log.l7_flow_log RESET SETTING min_bytes_for_wide_part")
        .await
        .unwrap();
    store.query("DELETE FROM flow_tag.schema_version WHERE version >= 2").await.unwrap();
    drop(store);

    // Reopen with a shorter retention: data is there, the TTL follows config.
    let mut config = EmbeddedConfig::new(dir.path());
    config.retention.flow_log_days = 3;
    let store = EmbeddedStore::open(config).await.unwrap();
    assert_eq!(scalar(&store, "SELECT count() FROM flow_log.l7_flow_log").await, json!(1000));
    assert_eq!(scalar(&store, "SELECT count() FROM flow_tag.tag_dict").await, json!(1));
    let engine = scalar(
        &store,
        "SELECT engine_full FROM system.tables WHERE database = 'flow_log' AND name = 'l4_flow_log'",
    )
    .await;
    assert!(engine.as_str().unwrap().contains("toIntervalDay(3)"), "{engine}");
    // Migration 2 gave the old table its window back.
    assert!(
        engine.as_str().unwrap().contains("non_replicated_deduplication_window = 10000"),
        "{engine}"
    );
    // Migration 3: compact parts up to the same size as a new store's.
    let engine = scalar(
        &store,
        "SELECT engine_full FROM system.tables WHERE database = 'flow_log' AND name = 'l7_flow_log'",
    )
    .await;
    let wide = format!("min_bytes_for_wide_part = {}", fathom_store::schema::WIDE_PART_BYTES);
    assert!(engine.as_str().unwrap().contains(&wide), "{engine}");
    assert_eq!(scalar(&store, "SELECT count() FROM flow_tag.schema_version FINAL").await, versions);
}

/// Inserts rows, reads them back as RowBinary in insertion order, and
/// compares bytes with our own encoding: every field of every row survives.
async fn round_trip<T: serde::Serialize>(
    store: &EmbeddedStore,
    table: &str,
    cols: &[&str],
    order: &str,
    rows: &[T],
) {
    let sql = format!("SELECT {} FROM {table} ORDER BY {order} FORMAT RowBinary", cols.join(", "));
    let got = store.query_raw(&sql).await.unwrap();
    let mut want = Vec::new();
    encode_rows(rows, &mut want).unwrap();
    assert_eq!(got.len(), want.len(), "{table}: lengths differ");
    assert!(got == want, "{table}: bytes differ");
}

#[tokio::test]
async fn every_row_type_round_trips() {
    use clickhouse::Row;
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let base = base_time_us();
    let base_s = (base / 1_000_000) as u32;
    let n = 2000;

    let l7: Vec<_> = (0..n).map(|i| l7_row(i, base)).collect();
    store.insert_l7(&l7).await.unwrap();
    round_trip(&store, "flow_log.l7_flow_log", fathom_store::L7Row::COLUMN_NAMES, "time", &l7)
        .await;

    let l4: Vec<_> = (0..n).map(|i| l4_row(i, base)).collect();
    store.insert_l4(&l4).await.unwrap();
    round_trip(&store, "flow_log.l4_flow_log", fathom_store::L4Row::COLUMN_NAMES, "time", &l4)
        .await;

    for g in [Granularity::Second, Granularity::Minute] {
        let app: Vec<_> = (0..n).map(|i| app_row(i, base_s)).collect();
        store.insert_app_metrics(g, &app).await.unwrap();
        round_trip(&store, g.app_table(), fathom_store::AppMetricRow::COLUMN_NAMES, "time", &app)
            .await;
        let net: Vec<_> = (0..n).map(|i| network_row(i, base_s)).collect();
        store.insert_network_metrics(g, &net).await.unwrap();
        round_trip(
            &store,
            g.network_table(),
            fathom_store::NetworkMetricRow::COLUMN_NAMES,
            "time",
            &net,
        )
        .await;
    }

    let tags: Vec<_> = (0..n).map(tag_row).collect();
    store.upsert_tags(&tags).await.unwrap();
    let mut sorted = tags.clone();
    sorted.sort_by(|a, b| (&a.tag_type, a.id).cmp(&(&b.tag_type, b.id)));
    round_trip(
        &store,
        "flow_tag.tag_dict",
        fathom_store::TagRow::COLUMN_NAMES,
        "tag_type, id",
        &sorted,
    )
    .await;

    // The values mean what the row types say: µs times, IPv4-mapped
    // addresses, 64-bit counters as exact JSON numbers, Nullable as null.
    let r = store
        .query(&format!(
            "SELECT toUnixTimestamp64Micro(time), toString(ip_0), request_id, response_code, \
             truncated, l7_protocol, request_resource \
             FROM flow_log.l7_flow_log WHERE time = fromUnixTimestamp64Micro({})",
            base + 11
        ))
        .await
        .unwrap();
    let want = &l7[11];
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0][0], json!(want.time));
    assert_eq!(r.rows[0][1], json!("::ffff:10.0.0.11"));
    assert_eq!(r.rows[0][2], json!(want.request_id.unwrap()));
    assert_eq!(r.rows[0][3], json!(null));
    assert_eq!(r.rows[0][4], json!(false));
    assert_eq!(r.rows[0][5], json!("mysql"));
    assert_eq!(r.rows[0][6], json!(want.request_resource));
    assert_eq!(r.columns[2], ("request_id".into(), "Nullable(UInt64)".into()));
    let max_rx = scalar(&store, "SELECT max(byte_rx) FROM flow_log.l4_flow_log").await;
    assert_eq!(max_rx.as_u64(), Some(u64::MAX));

    // RED of one service over the last hour, as the query layer asks it.
    let r = store
        .query(&format!(
            "SELECT sum(request), sum(server_error), sum(rrt_sum) / sum(rrt_count), max(rrt_max) \
             FROM flow_metrics.application_1m \
             WHERE l7_protocol = 'http' AND service_id = 3 \
             AND time >= toDateTime({base_s}) AND time < toDateTime({base_s}) + INTERVAL 1 HOUR"
        ))
        .await
        .unwrap();
    let one: Vec<_> = (0..n).map(|i| app_row(i, base_s)).filter(|r| r.service_id == 3).collect();
    let req: u64 = one.iter().map(|r| r.request).sum();
    let err: u64 = one.iter().map(|r| r.server_error).sum();
    let avg = one.iter().map(|r| r.rrt_sum).sum::<u64>() as f64
        / one.iter().map(|r| r.rrt_count).sum::<u64>() as f64;
    let max = one.iter().map(|r| r.rrt_max).max().unwrap();
    assert_eq!(r.rows[0][0], json!(req));
    assert_eq!(r.rows[0][1], json!(err));
    assert!((r.rows[0][2].as_f64().unwrap() - avg).abs() < 1e-6);
    assert_eq!(r.rows[0][3], json!(max));

    // The histogram answers percentiles: merge the buckets and read one back.
    let r =
        store.query("SELECT sumMap(rrt_histogram) FROM flow_metrics.application_1m").await.unwrap();
    let merged = r.rows[0][0].as_object().unwrap();
    let total: u64 = merged.values().map(|v| v.as_u64().unwrap()).sum();
    let want_total: u64 = (0..n).map(|i| app_row(i, 0).rrt_histogram.values().sum::<u64>()).sum();
    assert_eq!(total, want_total);
}

#[tokio::test]
async fn a_bad_query_is_a_clear_error_and_the_store_keeps_working() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    match store.query("SELEC count() FROM flow_log.l7_flow_log").await {
        Err(StoreError::Query { code: Some(62), message }) => {
            assert!(message.contains("Syntax error"), "{message}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    match store.query("SELECT count() FROM flow_log.no_such_table").await {
        Err(e @ StoreError::Query { code: Some(60), .. }) => {
            assert!(e.to_string().contains("no_such_table"), "{e}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected UNKNOWN_TABLE, got {other:?}"),
    }
    // A truncated RowBinary payload is refused, not half-inserted.
    let err = store
        .query(
            "INSERT INTO flow_tag.tag_dict (tag_type, id, name) FORMAT RowBinary\n\x04host\x01\x00",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Query { .. }), "{err}");
    assert_eq!(scalar(&store, "SELECT count() FROM flow_tag.tag_dict").await, json!(0));
    assert_eq!(scalar(&store, "SELECT 1 + 1").await, json!(2));
    store.insert_l7(&[l7_row(1, base_time_us())]).await.unwrap();
    assert_eq!(scalar(&store, "SELECT count() FROM flow_log.l7_flow_log").await, json!(1));
}

#[tokio::test]
async fn one_embedded_store_per_process() {
    let _turn = TURN.lock().await;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let store = open(a.path()).await;
    match EmbeddedStore::open(EmbeddedConfig::new(b.path())).await {
        Err(StoreError::AlreadyOpen(path)) => {
            assert!(path.contains(a.path().file_name().unwrap().to_str().unwrap()))
        }
        Err(e) => panic!("expected AlreadyOpen, got {e}"),
        Ok(_) => panic!("a second store opened"),
    }
    drop(store);
    let other = open(b.path()).await;
    assert_eq!(scalar(&other, "SELECT 1").await, json!(1));
}

#[tokio::test]
async fn inserts_100k_l7_rows_in_one_batch() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let base = base_time_us();
    let rows: Vec<_> = (0..100_000).map(|i| l7_row(i, base)).collect();
    let started = std::time::Instant::now();
    store.insert_l7(&rows).await.unwrap();
    let took = started.elapsed();
    eprintln!("100K L7 rows inserted in {took:?}");
    let r = store
        .query(
            "SELECT count(), sum(response_duration), uniqExact(endpoint), \
             countIf(request_id IS NULL), sum(server_port) FROM flow_log.l7_flow_log",
        )
        .await
        .unwrap();
    let want_latency: u64 = rows.iter().map(|r| r.response_duration).sum();
    let want_nulls = rows.iter().filter(|r| r.request_id.is_none()).count();
    let want_ports: u64 = rows.iter().map(|r| r.server_port as u64).sum();
    assert_eq!(
        r.rows[0],
        vec![json!(100_000), json!(want_latency), json!(13), json!(want_nulls), json!(want_ports)]
    );
}

#[tokio::test]
async fn concurrent_writers_are_queued_not_lost() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.queue_depth = 1;
    let store = std::sync::Arc::new(EmbeddedStore::open(config).await.unwrap());
    let base = base_time_us();
    let mut tasks = Vec::new();
    for w in 0..8usize {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let rows: Vec<_> = (0..500).map(|i| l7_row(w * 500 + i, base)).collect();
            store.insert_l7(&rows).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        scalar(&*store, "SELECT count(), uniqExact(time) FROM flow_log.l7_flow_log").await,
        json!(4000)
    );
}

/// A batch inserted twice under the same token (a replay after kill -9
/// between the insert and the ingest's acknowledgement) is stored once;
/// chunks of one insert and other tokens are not dropped.
#[tokio::test]
async fn a_replayed_batch_is_stored_once() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    // Three chunks per insert: each gets its own token.
    config.max_rows_per_insert = 400;
    let store = EmbeddedStore::open(config).await.unwrap_or_else(|e| panic!("{e}"));
    let base = base_time_us();
    let rows: Vec<_> = (0..1000).map(|i| l7_row(i, base)).collect();
    let count = || scalar(&store, "SELECT count() FROM flow_log.l7_flow_log");
    store.insert_deduplicated(TableRows::L7(&rows), "agent-a:7:l7").await.unwrap();
    assert_eq!(count().await, json!(1000));
    store.insert_deduplicated(TableRows::L7(&rows), "agent-a:7:l7").await.unwrap();
    assert_eq!(count().await, json!(1000), "the replay was dropped");
    store.insert_deduplicated(TableRows::L7(&rows), "agent-a:8:l7").await.unwrap();
    assert_eq!(count().await, json!(2000), "another batch with the same rows is stored");
    // Metrics tables deduplicate too.
    let app: Vec<_> = (0..10).map(|i| app_row(i, (base / 1_000_000) as u32)).collect();
    for _ in 0..2 {
        store
            .insert_deduplicated(TableRows::App(Granularity::Second, &app), "agent-a:7:app_1s")
            .await
            .unwrap();
    }
    assert_eq!(scalar(&store, "SELECT count() FROM flow_metrics.application_1s").await, json!(10));
    // Tables created by an older schema get the window by migration.
    let engine = scalar(
        &store,
        "SELECT engine_full FROM system.tables WHERE database = 'flow_log' AND name = 'l4_flow_log'",
    )
    .await;
    assert!(engine.as_str().unwrap().contains("non_replicated_deduplication_window = 10000"));
}

/// A call between two local processes is one RED row per end, equal but
/// for the observation point and the process: merges keep both rows, and
/// each end is counted once; a flow keeps the process of each end.
#[tokio::test]
async fn both_ends_of_a_call_stay_two_rows() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let base_s = (base_time_us() / 1_000_000) as u32;
    let end = |point: &'static str, process_id| fathom_store::AppMetricRow {
        observation_point: point.into(),
        process_id,
        ..app_row(1, base_s)
    };
    // Two inserts (one per agent batch), then a merge of the parts.
    store.insert_app_metrics(Granularity::Second, &[end("c-p", 5)]).await.unwrap();
    store.insert_app_metrics(Granularity::Second, &[end("s-p", 6)]).await.unwrap();
    store.query("OPTIMIZE TABLE flow_metrics.application_1s FINAL").await.unwrap();
    let r = store
        .query(
            "SELECT observation_point, process_id, sum(request) FROM flow_metrics.application_1s \
             GROUP BY observation_point, process_id ORDER BY observation_point",
        )
        .await
        .unwrap();
    let request = app_row(1, base_s).request;
    assert_eq!(
        r.rows,
        vec![
            vec![json!("c-p"), json!(5), json!(request)],
            vec![json!("s-p"), json!(6), json!(request)]
        ]
    );
    let flow = fathom_store::L4Row { process_id_0: 5, pid_0: 7, ..l4_row(1, base_time_us()) };
    store.insert_l4(&[flow]).await.unwrap();
    let r = store
        .query("SELECT process_id_0, pid_0, process_id_1, pid_1 FROM flow_log.l4_flow_log")
        .await
        .unwrap();
    assert_eq!(r.rows, vec![vec![json!(5), json!(7), json!(1), json!(4242)]]);
}

/// LowCardinality(String) columns go in dictionary-encoded (one
/// dictionary per block, keys as narrow as it allows) and come back as
/// written: empty strings, one distinct value, dictionaries that need
/// UInt16 and UInt32 keys, and an empty block.
#[tokio::test]
async fn low_cardinality_blocks_round_trip() {
    #[derive(serde::Serialize, clickhouse::Row)]
    struct LcRow {
        i: u32,
        s: String,
        t: String,
        n: Option<u32>,
    }
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for q in [
        "CREATE DATABASE IF NOT EXISTS test",
        "CREATE TABLE test.lc (i UInt32, s LowCardinality(String), t LowCardinality(String), \
         n Nullable(UInt32)) ENGINE = MergeTree ORDER BY i",
    ] {
        store.query(q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
    }
    let mut all = Vec::new();
    // (rows, distinct values of s) per block; t is "" or a constant.
    for (block, (rows, distinct)) in
        [(10, 1), (1, 1), (1000, 300), (200_000, 70_000), (5000, 256), (5000, 257)]
            .into_iter()
            .enumerate()
    {
        let batch: Vec<LcRow> = (0..rows)
            .map(|r| {
                let v = r % distinct;
                LcRow {
                    i: all.len() as u32 + r as u32,
                    // Value 0 is the empty string, the others all differ.
                    s: if v == 0 { String::new() } else { format!("{block}-{v}") },
                    t: if block == 0 { String::new() } else { "same".into() },
                    n: (r % 3 == 0).then_some(r as u32),
                }
            })
            .collect();
        store.insert_rows("test.lc", &batch).await.unwrap();
        all.extend(batch);
    }
    round_trip(&store, "test.lc", &["i", "s", "t", "n"], "i", &all).await;

    // An empty block: column headers and no data.
    let cols: Vec<_> = [
        ("i", "UInt32"),
        ("s", "LowCardinality(String)"),
        ("t", "LowCardinality(String)"),
        ("n", "Nullable(UInt32)"),
    ]
    .iter()
    .map(|(n, t)| fathom_store::native::ColumnType::new(n, t).unwrap())
    .collect();
    let mut block = Vec::new();
    fathom_store::native::encode_block::<LcRow>(&[], &cols, &mut block).unwrap();
    let file = dir.path().join("empty.native");
    std::fs::write(&file, &block).unwrap();
    let q = format!("INSERT INTO test.lc FROM INFILE '{}' FORMAT Native", file.display());
    store.query(&q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
    assert_eq!(scalar(&store, "SELECT count() FROM test.lc").await, json!(all.len()));
}

/// Inserted parts carry no skip indexes (building them per insert is work
/// the merge does again); a merged part has them, and a trace-id lookup
/// then skips granules with them. Before the merge the lookup is still
/// right, only unskipped.
#[tokio::test]
async fn skip_indexes_are_built_by_merges_not_by_inserts() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let base = base_time_us();
    // Two inserts of 50K rows: 7 granules each, one trace id per row.
    let rows: Vec<_> = (0..100_000).map(|i| l7_row(i, base)).collect();
    for (n, half) in rows.chunks(50_000).enumerate() {
        store.insert_deduplicated(TableRows::L7(half), &format!("skip-{n}")).await.unwrap();
    }
    let index_bytes = "SELECT count(), sum(secondary_indices_compressed_bytes) FROM system.parts \
                       WHERE database = 'flow_log' AND table = 'l7_flow_log' AND active";
    let parts = store.query(index_bytes).await.unwrap();
    assert_eq!(parts.rows[0], vec![json!(2), json!(0)], "two parts, no skip index yet");
    let wanted = rows[77_776].trace_id.clone();
    assert!(!wanted.is_empty());
    let lookup = format!(
        "SELECT count() FROM flow_log.l7_flow_log WHERE trace_id = '{wanted}' SETTINGS use_query_condition_cache = 0"
    );
    assert_eq!(scalar(&store, &lookup).await, json!(1));
    store.query("OPTIMIZE TABLE flow_log.l7_flow_log FINAL").await.unwrap();
    let parts = store.query(index_bytes).await.unwrap();
    assert_eq!(parts.rows[0][0], json!(1), "merged into one part");
    let bytes = fathom_store::json_u64(&parts.rows[0][1]).unwrap();
    assert!(bytes > 0, "the merged part has its skip indexes");
    assert_eq!(scalar(&store, &lookup).await, json!(1));
    // The index drops all granules but the one holding the trace id.
    let plan = store
        .query(&format!("EXPLAIN indexes = 1 {lookup}"))
        .await
        .unwrap()
        .rows
        .iter()
        .filter_map(|r| r[0].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n");
    let at = plan.find("idx_trace_id").unwrap_or_else(|| panic!("no trace index used:\n{plan}"));
    let granules = plan[at..].lines().find(|l| l.contains("Granules:")).unwrap_or_default();
    let (kept, all) = granules
        .trim()
        .strip_prefix("Granules: ")
        .and_then(|g| g.split_once('/'))
        .and_then(|(k, a)| Some((k.parse::<u32>().ok()?, a.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("{granules:?} in\n{plan}"));
    // One granule holds it; a bloom filter may let one more through.
    assert!(all >= 13 && (1..=2).contains(&kept), "{granules:?} in\n{plan}");
}
