//! Where the time of an embedded L7 insert goes, per core: the whole path
//! (Native encoding, payload file in memory, chDB parsing, MergeTree part
//! writing) against its stages and against variants of the table and
//! the batch size. Each line reports rows per second of wall time and
//! rows per CPU-second of the whole process (every chDB thread counted:
//! getrusage), which is the per-core figure. Background merges of the
//! parts earlier rounds wrote fall in the window too (a CPU/wall above 1
//! shows them); `insert_fixed_cost` measures inserts with merges paused,
//! `insert_sustained` inserts with every merge they cause.
//!
//! `cargo run --release -p fathom-store --example insert_profile [rows]`
//! (needs libchdb.so: `bash scripts/fetch-chdb.sh`).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use support::{cpu_time, sql};

use fathom_store::{EmbeddedStore, L7Row, Store};

/// Runs `f` `rounds` times over `rows` rows each and prints the rates.
async fn measure<F, Fut>(what: &str, rows: usize, rounds: usize, mut f: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f(usize::MAX).await; // warm-up round, not counted
    let (wall, cpu) = (Instant::now(), cpu_time(libc::RUSAGE_SELF));
    for round in 0..rounds {
        f(round).await;
    }
    let (wall, cpu) = (wall.elapsed(), cpu_time(libc::RUSAGE_SELF) - cpu);
    let n = (rows * rounds) as f64;
    println!(
        "{what:<58} {:>9.0} rows/s wall {:>9.0} rows/CPU-s  (CPU/wall {:.2})",
        n / wall.as_secs_f64(),
        n / cpu.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64()
    );
}

/// Prints the compressed bytes per row of `profile.variant`'s columns and
/// of its skip indexes (its parts as written, before any merge).
async fn variant_size(store: &EmbeddedStore) {
    let r = store
        .query(
            "SELECT sum(data_compressed_bytes), sum(rows), sum(secondary_indices_compressed_bytes) \
             FROM system.parts \
             WHERE database = 'profile' AND table = 'variant' AND active",
        )
        .await
        .unwrap();
    let num = |v: &serde_json::Value| {
        v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0.0)
    };
    let (bytes, rows, index) = (num(&r.rows[0][0]), num(&r.rows[0][1]), num(&r.rows[0][2]));
    let rows = rows.max(1.0);
    println!(
        "{:<58} {:>9.1} bytes/row of columns, {:.2} of skip indexes",
        "",
        bytes / rows,
        index / rows
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds = 5;
    let dir = tempfile::tempdir().unwrap();
    let store = support::open_store(dir.path()).await;
    let base = common::base_time_us();
    let rows: Vec<L7Row> = (0..n).map(|i| common::l7_row(i, base)).collect();
    let cols = <L7Row as clickhouse::Row>::COLUMN_NAMES.join(", ");
    let mut payload = Vec::new();
    fathom_store::rowbinary::encode_rows(&rows, &mut payload).unwrap();
    let file = dir.path().join("payload.rowbinary");
    std::fs::write(&file, &payload).unwrap();
    let file = file.display().to_string();
    println!(
        "{n} L7 rows per insert, {} bytes of RowBinary ({} per row)",
        payload.len(),
        payload.len() / n
    );

    measure("whole path: Store::insert_l7 (Native encode, file, INSERT)", n, rounds, |_| async {
        store.insert_l7(&rows).await.unwrap()
    })
    .await;
    measure("  our side only: RowBinary encoding", n, rounds, |_| {
        let mut buf = Vec::with_capacity(payload.len());
        fathom_store::rowbinary::encode_rows(&rows, &mut buf).unwrap();
        async {}
    })
    .await;
    let table_types = store
        .query("SELECT name, type FROM system.columns WHERE database = 'flow_log' AND table = 'l7_flow_log'")
        .await
        .unwrap();
    let types: Vec<fathom_store::native::ColumnType> = <L7Row as clickhouse::Row>::COLUMN_NAMES
        .iter()
        .map(|c| {
            let ty = table_types.rows.iter().find(|r| r[0] == *c).unwrap()[1].as_str().unwrap();
            fathom_store::native::ColumnType::new(c, ty).unwrap()
        })
        .collect();
    // Encoder and payload buffer reused, as the store does.
    let mut encoder = fathom_store::native::BlockEncoder::new();
    let mut buf = Vec::with_capacity(payload.len());
    measure("  our side only: Native encoding, direct (the store's)", n, rounds, |_| {
        buf.clear();
        encoder.encode_native(&rows, &types, &mut buf).unwrap();
        async {}
    })
    .await;
    measure("  our side only: Native encoding through serde", n, rounds, |_| {
        buf.clear();
        encoder.encode(&rows, &types, &mut buf).unwrap();
        async {}
    })
    .await;
    sql(&store, "CREATE DATABASE IF NOT EXISTS profile").await;
    sql(&store, "CREATE TABLE profile.null AS flow_log.l7_flow_log ENGINE = Null").await;
    measure("  chDB parsing only: RowBinary file -> Null table", n, rounds, |_| {
        let q = format!("INSERT INTO profile.null ({cols}) FROM INFILE '{file}' FORMAT RowBinary");
        let store = &store;
        async move { sql(store, &q).await }
    })
    .await;
    sql(&store, "CREATE TABLE profile.mem AS flow_log.l7_flow_log ENGINE = Memory").await;
    sql(&store, &format!("INSERT INTO profile.mem ({cols}) FROM INFILE '{file}' FORMAT RowBinary"))
        .await;
    measure("  MergeTree only: INSERT SELECT from a Memory table", n, rounds, |_| {
        sql(&store, "INSERT INTO flow_log.l7_flow_log SELECT * FROM profile.mem")
    })
    .await;

    // The same rows in the Native format (columnar), as chDB writes it,
    // with LowCardinality columns sent as plain String.
    let native = dir.path().join("payload.native").display().to_string();
    sql(
        &store,
        &format!(
            "SELECT * REPLACE (toString(observation_point) AS observation_point, \
             toString(capture_source) AS capture_source, toString(l7_protocol) AS l7_protocol, \
             toString(version) AS version, toString(msg_type) AS msg_type, \
             toString(request_type) AS request_type, toString(response_status) AS response_status) \
             FROM profile.mem INTO OUTFILE '{native}' FORMAT Native"
        ),
    )
    .await;
    println!(
        "  (Native payload: {} bytes)",
        std::fs::metadata(&native).map(|m| m.len()).unwrap_or(0)
    );
    measure("  chDB parsing only: Native file -> Null table", n, rounds, |_| {
        let q = format!("INSERT INTO profile.null FROM INFILE '{native}' FORMAT Native");
        let store = &store;
        async move { sql(store, &q).await }
    })
    .await;
    sql(&store, "CREATE TABLE profile.native_target AS flow_log.l7_flow_log").await;
    measure("  Native file -> MergeTree (fresh table)", n, rounds, |_| {
        let q = format!("INSERT INTO profile.native_target FROM INFILE '{native}' FORMAT Native");
        let store = &store;
        async move { sql(store, &q).await }
    })
    .await;
    // The same Native block with the LowCardinality columns kept as such
    // (dictionary-encoded): what the engine saves when it need not build
    // the dictionaries from plain strings.
    let native_lc = dir.path().join("payload_lc.native").display().to_string();
    sql(&store, &format!("SELECT * FROM profile.mem INTO OUTFILE '{native_lc}' FORMAT Native"))
        .await;
    sql(&store, "CREATE TABLE profile.native_lc_target AS flow_log.l7_flow_log").await;
    measure("  Native file, LowCardinality kept -> MergeTree (fresh table)", n, rounds, |_| {
        let q =
            format!("INSERT INTO profile.native_lc_target FROM INFILE '{native_lc}' FORMAT Native");
        let store = &store;
        async move { sql(store, &q).await }
    })
    .await;
    // Our own block (what Store::insert_l7 sends), from a file written once.
    let ours = dir.path().join("payload_ours.native");
    std::fs::write(&ours, &buf).unwrap();
    let ours = ours.display().to_string();
    sql(&store, "CREATE TABLE profile.ours_target AS flow_log.l7_flow_log").await;
    measure("  our Native block, file written once -> MergeTree (fresh table)", n, rounds, |_| {
        let q =
            format!("INSERT INTO profile.ours_target ({cols}) FROM INFILE '{ours}' FORMAT Native");
        let store = &store;
        async move { sql(store, &q).await }
    })
    .await;
    // The same block sorted by the table's ORDER BY key: what the engine
    // saves when it need not sort and permute. Sorting on our side costs
    // more than that (a key per row, then filling the columns in sorted
    // order, away from the rows' memory order), so the store does not.
    let mut sorted_rows = rows.clone();
    sorted_rows.sort_by(|a, b| {
        (&a.l7_protocol, a.process_id_1, a.server_port, &a.endpoint, a.time).cmp(&(
            &b.l7_protocol,
            b.process_id_1,
            b.server_port,
            &b.endpoint,
            b.time,
        ))
    });
    let mut sorted = Vec::new();
    encoder.encode_native(&sorted_rows, &types, &mut sorted).unwrap();
    let sorted_file = dir.path().join("payload_sorted.native");
    std::fs::write(&sorted_file, &sorted).unwrap();
    let sorted_file = sorted_file.display().to_string();
    sql(&store, "CREATE TABLE profile.sorted_target AS flow_log.l7_flow_log").await;
    measure("  our Native block sorted by the key, file -> MergeTree", n, rounds, |_| {
        let q = format!(
            "INSERT INTO profile.sorted_target ({cols}) FROM INFILE '{sorted_file}' FORMAT Native"
        );
        let store = &store;
        async move { sql(store, &q).await }
    })
    .await;
    sql(&store, "CREATE TABLE profile.rowbinary_target AS flow_log.l7_flow_log").await;
    measure("  RowBinary file -> MergeTree (fresh table)", n, rounds, |_| {
        let q = format!(
            "INSERT INTO profile.rowbinary_target ({cols}) FROM INFILE '{file}' FORMAT RowBinary"
        );
        let store = &store;
        async move { sql(store, &q).await }
    })
    .await;

    // Variants of the table, written from the Memory table (MergeTree cost).
    let variants: &[(&str, &[&str])] = &[
        ("  - the schema as created (compact parts, skip indexes at GRANULARITY 1)", &[]),
        (
            "  - wide parts (the engine's default min_bytes_for_wide_part)",
            &["ALTER TABLE {t} MODIFY SETTING min_bytes_for_wide_part = 10485760"],
        ),
        (
            "  - no sparse serialization of mostly-default columns",
            &["ALTER TABLE {t} MODIFY SETTING ratio_of_defaults_for_sparse_serialization = 1"],
        ),
        (
            "  - without the 4 bloom-filter skip indexes",
            &["ALTER TABLE {t} DROP INDEX idx_trace_id, DROP INDEX idx_x_request_id, \
               DROP INDEX idx_syscall_trace_id_request, DROP INDEX idx_syscall_trace_id_response"],
        ),
        (
            "  - skip indexes at GRANULARITY 4",
            &["ALTER TABLE {t} DROP INDEX idx_trace_id, DROP INDEX idx_x_request_id, \
               DROP INDEX idx_syscall_trace_id_request, DROP INDEX idx_syscall_trace_id_response",
              "ALTER TABLE {t} ADD INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4, \
               ADD INDEX idx_x_request_id x_request_id TYPE bloom_filter(0.01) GRANULARITY 4, \
               ADD INDEX idx_syscall_trace_id_request syscall_trace_id_request TYPE bloom_filter(0.01) GRANULARITY 4, \
               ADD INDEX idx_syscall_trace_id_response syscall_trace_id_response TYPE bloom_filter(0.01) GRANULARITY 4"],
        ),
    ];
    for (what, alters) in variants {
        sql(&store, "DROP TABLE IF EXISTS profile.variant").await;
        sql(&store, "CREATE TABLE profile.variant AS flow_log.l7_flow_log").await;
        for a in *alters {
            sql(&store, &a.replace("{t}", "profile.variant")).await;
        }
        measure(what, n, rounds, |_| {
            sql(&store, "INSERT INTO profile.variant SELECT * FROM profile.mem")
        })
        .await;
        variant_size(&store).await;
    }
    // Plain codecs and no sort key: what the schema's choices cost.
    let mut lz4 = String::from("ALTER TABLE profile.variant");
    for side in ["0", "1"] {
        for tag in fathom_store::rows::SIDE_TAGS {
            lz4.push_str(&format!(" MODIFY COLUMN {tag}_{side} UInt32 CODEC(LZ4),"));
        }
    }
    lz4.push_str(" MODIFY COLUMN time DateTime64(6) CODEC(LZ4), MODIFY COLUMN end_time DateTime64(6) CODEC(LZ4)");
    sql(&store, "DROP TABLE IF EXISTS profile.variant").await;
    sql(&store, "CREATE TABLE profile.variant AS flow_log.l7_flow_log").await;
    sql(&store, &lz4).await;
    measure("  - LZ4 instead of T64/Delta + ZSTD on tags and times", n, rounds, |_| {
        sql(&store, "INSERT INTO profile.variant SELECT * FROM profile.mem")
    })
    .await;
    variant_size(&store).await;
    let t64_lz4 = lz4.replace("UInt32 CODEC(LZ4)", "UInt32 CODEC(T64, LZ4)");
    sql(&store, "DROP TABLE IF EXISTS profile.variant").await;
    sql(&store, "CREATE TABLE profile.variant AS flow_log.l7_flow_log").await;
    sql(&store, &t64_lz4).await;
    measure("  - T64 + LZ4 on tags, LZ4 on times", n, rounds, |_| {
        sql(&store, "INSERT INTO profile.variant SELECT * FROM profile.mem")
    })
    .await;
    variant_size(&store).await;
    sql(&store, "DROP TABLE IF EXISTS profile.variant").await;
    sql(
        &store,
        "CREATE TABLE profile.variant AS flow_log.l7_flow_log ENGINE = MergeTree \
         PARTITION BY toStartOfHour(time) ORDER BY tuple()",
    )
    .await;
    measure("  - no sort key and no skip indexes (ORDER BY tuple())", n, rounds, |_| {
        sql(&store, "INSERT INTO profile.variant SELECT * FROM profile.mem")
    })
    .await;
    sql(&store, "DROP TABLE IF EXISTS profile.variant").await;
    sql(&store, "CREATE TABLE profile.variant AS flow_log.l7_flow_log").await;
    measure("  - max_insert_threads = 2", n, rounds, |_| {
        sql(
            &store,
            "INSERT INTO profile.variant SELECT * FROM profile.mem SETTINGS max_insert_threads = 2",
        )
    })
    .await;

    // Batch size through the whole path.
    for mult in [1usize, 5] {
        let big: Vec<L7Row> = (0..n * mult).map(|i| common::l7_row(i, base)).collect();
        measure(&format!("whole path, {} rows per insert", n * mult), n * mult, 2, |_| async {
            store.insert_l7(&big).await.unwrap()
        })
        .await;
    }
}
