//! The server backend's path through the official `clickhouse` crate (HTTP,
//! typed RowBinary inserts, RowBinary and JSONCompact reads) against a real
//! ClickHouse server.
//!
//! The only server Debian ships is clickhouse-server 18.16 (2018): too old
//! for fathom's schema (no DateTime64, Map, IPv6, TTL ... ttl_only_drop_parts),
//! which is tested in full against ClickHouse 26.x through the embedded engine
//! (tests/embedded.rs). So this test skips the schema (`migrate: false`),
//! uses a table of types 18.16 has, and turns the crate's schema validation
//! off (`with_validation(false)`: RowBinaryWithNamesAndTypes is newer than
//! 18.16), which is the store's default anyway.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fathom_store::{ClickHouseConfig, ClickHouseStore, RetryPolicy, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A clickhouse-server of our own in a temporary directory, killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_server() -> Server {
    let bin = ["/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("clickhouse-server is not installed: `apt-get install clickhouse-server` (.ci/run does)")
        });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (http, tcp) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("users.xml"),
        "<yandex><profiles><default></default></profiles>\
         <users><default><password></password><networks><ip>127.0.0.1</ip></networks>\
         <profile>default</profile><quota>default</quota></default></users>\
         <quotas><default></default></quotas></yandex>",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.xml"),
        format!(
            "<yandex><logger><level>warning</level><console>1</console></logger>\
             <http_port>{http}</http_port><tcp_port>{tcp}</tcp_port>\
             <listen_host>127.0.0.1</listen_host>\
             <path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path>\
             <user_files_path>{d}/user_files/</user_files_path>\
             <format_schema_path>{d}/format_schemas/</format_schema_path>\
             <users_config>{d}/users.xml</users_config>\
             <default_profile>default</default_profile><default_database>default</default_database>\
             <mark_cache_size>104857600</mark_cache_size></yandex>"
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg(format!("--config-file={d}/config.xml"))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("clickhouse-server did not start");
    let url = format!("http://127.0.0.1:{http}");
    let mut server = Server { child, url, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", http)).is_ok() {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("clickhouse-server exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "clickhouse-server not listening after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Types 18.16 has, covering the RowBinary shapes of fathom's rows:
/// integers, strings, Nullable, Array, and 16 raw bytes (our IPv6 columns).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clickhouse::Row)]
struct CompatRow {
    time: u32,
    host_id: u32,
    server_port: u16,
    endpoint: String,
    request_id: Option<u64>,
    latencies: Vec<u64>,
    ip: [u8; 16],
    ok: u8,
}

fn row(i: u32) -> CompatRow {
    CompatRow {
        time: 1_700_000_000 + i,
        host_id: i % 7,
        server_port: 8080,
        endpoint: format!("/api/{i}?a=1\n\n;'\\"),
        request_id: if i.is_multiple_of(3) { None } else { Some(u64::MAX - i as u64) },
        latencies: (0..i % 4).map(|k| k as u64 * 1000).collect(),
        ip: fathom_store::ip_column(format!("10.0.{}.{}", i / 256, i % 256).parse().unwrap()),
        ok: (i % 2) as u8,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_crate_inserts_and_selects_rowbinary_over_http() {
    let server = start_server();
    let mut config = ClickHouseConfig::new(&server.url);
    config.migrate = false;
    config.validation = false;
    // 18.16 answers `compress=1` requests with an empty body; newer servers
    // take the crate's LZ4 (the default).
    config.lz4 = false;
    config.max_rows_per_insert = 3000; // several INSERT statements for one call
    let store = ClickHouseStore::connect(config).await.unwrap();

    let version = store.query("SELECT version()").await.unwrap();
    eprintln!("ClickHouse server {}", version.rows[0][0]);
    store.query("CREATE DATABASE IF NOT EXISTS compat").await.unwrap();
    store
        .query(
            "CREATE TABLE compat.rows (time DateTime, host_id UInt32, server_port UInt16, \
             endpoint String, request_id Nullable(UInt64), latencies Array(UInt64), \
             ip FixedString(16), ok UInt8) ENGINE = MergeTree ORDER BY time",
        )
        .await
        .unwrap();

    let rows: Vec<_> = (0..10_000).map(row).collect();
    store.insert_rows("compat.rows", &rows).await.unwrap();

    // RowBinary back through the crate: every field of every row.
    let back: Vec<CompatRow> = store
        .client()
        .query("SELECT ?fields FROM compat.rows ORDER BY time")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(back.len(), rows.len());
    assert!(back == rows, "rows differ after the round trip");

    // JSONCompact through the Store trait, '?' in SQL taken literally.
    let r = store
        .query("SELECT count(), max(request_id), countIf(endpoint LIKE '%?a=1%') FROM compat.rows")
        .await
        .unwrap();
    assert_eq!(r.columns[0].0, "count()");
    assert_eq!(r.rows[0][0], json!(10_000));
    assert_eq!(fathom_store::json_u64(&r.rows[0][1]), Some(u64::MAX - 1));
    assert_eq!(r.rows[0][2], json!(10_000));

    // Bad SQL: a clear error, and the store keeps working.
    match store.query("SELEC 1").await {
        Err(StoreError::Query { code: Some(62), message }) => {
            assert!(message.contains("Syntax error"), "{message}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert_eq!(store.query("SELECT 1").await.unwrap().rows[0][0], json!(1));

    // A server that went away: a connection error after bounded retries.
    drop(server);
    let mut config = ClickHouseConfig::new(format!("http://127.0.0.1:{}", free_port()));
    config.migrate = false;
    config.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    let gone = ClickHouseStore::connect(config).await.unwrap();
    let started = Instant::now();
    let err = gone.insert_rows("compat.rows", &rows[..10]).await.unwrap_err();
    assert!(matches!(err, StoreError::Connection(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
