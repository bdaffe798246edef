//! Storage trait with ClickHouse-server and embedded (chDB) backends.
//!
//! Both backends run the same DDL ([`schema`]) and take the same row types
//! ([`rows`]). Writers hand over batches and await them: a call returns once
//! the rows are written (or the bounded retries are spent), and a bounded
//! queue in front of each backend makes callers wait when it is busy, so
//! memory stays bounded under load (back-pressure).

use std::time::Duration;

use async_trait::async_trait;

pub mod chdb;
pub mod clickhouse_server;
pub mod native;
pub mod rowbinary;
pub mod rows;
pub mod schema;

pub use chdb::{EmbeddedConfig, EmbeddedStore};
pub use clickhouse_server::{ClickHouseConfig, ClickHouseStore};
pub use rows::{
    ip_column, ip_from_column, latency_bucket, latency_bucket_lower, AppMetricRow, Granularity,
    L4Row, L7Row, Label, NetworkMetricRow, TagRow,
};
pub use schema::{Retention, SCHEMA_VERSION};

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// libchdb.so could not be loaded; the message says how to get it.
    #[error("{0}")]
    LibraryMissing(String),
    /// The engine refused the statement (bad SQL, unknown table, ...).
    #[error("ClickHouse error{}: {message}", code.map(|c| format!(" {c}")).unwrap_or_default())]
    Query { code: Option<u32>, message: String },
    /// The server could not be reached or the connection broke.
    #[error("ClickHouse connection: {0}")]
    Connection(String),
    /// A row could not be encoded.
    #[error("{0}")]
    Encode(String),
    /// The engine answered something that is not the expected result format.
    #[error("unexpected result from ClickHouse: {0}")]
    BadResult(String),
    /// The embedded engine is already open in this process (chDB allows one
    /// connection per process).
    #[error(
        "the embedded store is already open in this process (at {0}); chDB allows one per process"
    )]
    AlreadyOpen(String),
    /// The store was closed or its engine thread stopped.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Parses ClickHouse's "Code: 62. DB::Exception: ..." into a Query error.
    pub(crate) fn from_clickhouse_message(msg: &str) -> StoreError {
        let msg = msg.trim();
        let code = msg.find("Code: ").and_then(|i| {
            let rest = &msg[i + 6..];
            let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            rest[..end].parse().ok()
        });
        StoreError::Query { code, message: msg.to_string() }
    }

    /// Whether retrying the same statement may succeed: lost connections and
    /// the engine's transient overload errors, not bad SQL or bad data.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Connection(_) => true,
            StoreError::Query { code: Some(code), .. } => matches!(
                code,
                159 // TIMEOUT_EXCEEDED
                    | 164 // READONLY (replica temporarily read-only)
                    | 202 // TOO_MANY_SIMULTANEOUS_QUERIES
                    | 209 // SOCKET_TIMEOUT
                    | 210 // NETWORK_ERROR
                    | 236 // ABORTED
                    | 241 // MEMORY_LIMIT_EXCEEDED
                    | 242 // TABLE_IS_READ_ONLY
                    | 252 // TOO_MANY_PARTS
                    | 319 // UNKNOWN_STATUS_OF_INSERT
                    | 425 // SYSTEM_ERROR
                    | 999 // KEEPER_EXCEPTION
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Rows of one table, for [`Store::insert_deduplicated`].
#[derive(Clone, Copy, Debug)]
pub enum TableRows<'a> {
    L7(&'a [L7Row]),
    L4(&'a [L4Row]),
    App(Granularity, &'a [AppMetricRow]),
    Network(Granularity, &'a [NetworkMetricRow]),
}

impl TableRows<'_> {
    pub fn table(&self) -> &'static str {
        match self {
            TableRows::L7(_) => "flow_log.l7_flow_log",
            TableRows::L4(_) => "flow_log.l4_flow_log",
            TableRows::App(g, _) => g.app_table(),
            TableRows::Network(g, _) => g.network_table(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TableRows::L7(r) => r.len(),
            TableRows::L4(r) => r.len(),
            TableRows::App(_, r) => r.len(),
            TableRows::Network(_, r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `insert_deduplication_token` of chunk `part` of an insert: the
/// caller's token (one per batch and table) and the chunk's index, so the
/// chunks of one insert never drop each other.
pub fn dedup_token(token: &str, part: usize) -> String {
    format!("{token}-{part}")
}

/// A query's answer: column names and types, rows as JSON values (64-bit
/// integers as JSON numbers), and how long the engine took.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct QueryResult {
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<serde_json::Value>>,
    pub elapsed: Duration,
    /// Rows and bytes the engine read to answer.
    pub rows_read: u64,
    pub bytes_read: u64,
}

impl QueryResult {
    /// Parses ClickHouse's `JSONCompact` output; empty output (DDL, INSERT)
    /// is an empty result.
    pub fn from_json_compact(body: &[u8], elapsed: Duration) -> Result<QueryResult> {
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(QueryResult { elapsed, ..Default::default() });
        }
        #[derive(serde::Deserialize)]
        struct Meta {
            name: String,
            #[serde(rename = "type")]
            ty: String,
        }
        #[derive(serde::Deserialize, Default)]
        struct Stats {
            #[serde(default)]
            rows_read: u64,
            #[serde(default)]
            bytes_read: u64,
        }
        #[derive(serde::Deserialize)]
        struct Body {
            meta: Vec<Meta>,
            data: Vec<Vec<serde_json::Value>>,
            #[serde(default)]
            statistics: Stats,
        }
        let b: Body = serde_json::from_slice(body).map_err(|e| {
            let head = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            StoreError::BadResult(format!("not JSONCompact ({e}): {head}"))
        })?;
        Ok(QueryResult {
            columns: b.meta.into_iter().map(|m| (m.name, m.ty)).collect(),
            rows: b.data,
            elapsed,
            rows_read: b.statistics.rows_read,
            bytes_read: b.statistics.bytes_read,
        })
    }
}

/// Bounded retries with exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails with a non-retryable error, or the
    /// attempts are spent (then the last error is returned).
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut backoff = self.initial_backoff;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_attempts.max(1) => {
                    tracing::warn!(%e, attempt, what, "store: retrying after {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The storage of fathom: typed batch inserts for the ingest side, SQL for
/// the query side. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync {
    /// Which backend, for logs and `/metrics`: "embedded" or "clickhouse".
    fn backend(&self) -> &'static str;
    /// Inserts of more rows than this are split into several statements
    /// (each under its own token, see [`dedup_token`]); a failure may then
    /// come after some of them are stored.
    fn max_rows_per_insert(&self) -> usize {
        usize::MAX
    }
    async fn insert_l7(&self, rows: &[L7Row]) -> Result<()>;
    async fn insert_l4(&self, rows: &[L4Row]) -> Result<()>;
    async fn insert_app_metrics(
        &self,
        granularity: Granularity,
        rows: &[AppMetricRow],
    ) -> Result<()>;
    async fn insert_network_metrics(
        &self,
        granularity: Granularity,
        rows: &[NetworkMetricRow],
    ) -> Result<()>;
    /// Inserts rows under a deduplication token that names them (an agent's
    /// batch id and the table, say): the engine drops an insert into the
    /// same table whose token it saw within the table's
    /// `non_replicated_deduplication_window` of recent inserts, so a batch
    /// retried after a crash between the insert and its acknowledgement is
    /// stored once. The default inserts without a token.
    async fn insert_deduplicated(&self, rows: TableRows<'_>, token: &str) -> Result<()> {
        let _ = token;
        match rows {
            TableRows::L7(r) => self.insert_l7(r).await,
            TableRows::L4(r) => self.insert_l4(r).await,
            TableRows::App(g, r) => self.insert_app_metrics(g, r).await,
            TableRows::Network(g, r) => self.insert_network_metrics(g, r).await,
        }
    }
    /// Adds or renames dictionary entries; the latest write of an id wins
    /// (ReplacingMergeTree: read with `FINAL` or `argMax`).
    async fn upsert_tags(&self, rows: &[TagRow]) -> Result<()>;
    /// Runs one SQL statement and returns its result (empty for DDL). The
    /// store does not restrict what runs: the query layer decides that.
    async fn query(&self, sql: &str) -> Result<QueryResult>;
}

/// Creates the databases and tables if missing, applies pending migrations
/// and brings each table's TTL to `retention`. Idempotent; both backends
/// call it when they open.
pub async fn migrate(store: &dyn Store, retention: &Retention) -> Result<u32> {
    for stmt in schema::create_statements(retention) {
        store.query(&stmt).await?;
    }
    let current = store
        .query("SELECT max(version) FROM flow_tag.schema_version")
        .await?
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(json_u64)
        .unwrap_or(0) as u32;
    for (version, statements) in schema::migrations() {
        if version <= current {
            continue;
        }
        for stmt in statements {
            store.query(&stmt).await?;
        }
        store
            .query(&format!("INSERT INTO flow_tag.schema_version (version) VALUES ({version})"))
            .await?;
        tracing::info!(version, "store: schema migrated");
    }
    for table in schema::TABLES {
        let Some(want) = schema::table_ttl(table, retention) else {
            continue;
        };
        let (db, name) = table.split_once('.').unwrap_or(("default", table));
        let have = store
            .query(&format!(
                "SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = '{name}'"
            ))
            .await?;
        let engine_full = have
            .rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        // engine_full renders the clause as written ("TTL toDateTime(time) + toIntervalDay(7)").
        if !engine_full.contains(&want) {
            tracing::info!(table, ttl = %want, "store: changing retention");
            store
                .query(&format!(
                    "ALTER TABLE {table} MODIFY {want} SETTINGS materialize_ttl_after_modify = 0"
                ))
                .await?;
        }
    }
    Ok(schema::SCHEMA_VERSION.max(current))
}

/// A JSON number or numeric string (ClickHouse may quote 64-bit integers).
pub fn json_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickhouse_error_codes_are_parsed_and_classified() {
        let e = StoreError::from_clickhouse_message(
            "Code: 62. DB::Exception: Syntax error: failed at position 1 (SELEC). (SYNTAX_ERROR)",
        );
        assert!(matches!(e, StoreError::Query { code: Some(62), .. }));
        assert!(!e.is_retryable());
        let e = StoreError::from_clickhouse_message("Code: 252. DB::Exception: Too many parts");
        assert!(e.is_retryable());
        let e = StoreError::from_clickhouse_message("something else");
        assert!(matches!(e, StoreError::Query { code: None, .. }));
    }

    #[test]
    fn json_compact_is_parsed() {
        let body = br#"{"meta":[{"name":"a","type":"UInt64"},{"name":"s","type":"String"}],
            "data":[[18446744073709551615,"x"]],"rows":1,
            "statistics":{"elapsed":0.001,"rows_read":7,"bytes_read":9}}"#;
        let r = QueryResult::from_json_compact(body, Duration::from_millis(2)).unwrap();
        assert_eq!(r.columns[0], ("a".to_string(), "UInt64".to_string()));
        assert_eq!(r.rows[0][0].as_u64(), Some(u64::MAX));
        assert_eq!(r.rows_read, 7);
        assert!(QueryResult::from_json_compact(b"\n", Duration::ZERO).unwrap().rows.is_empty());
        assert!(matches!(
            QueryResult::from_json_compact(b"1,2\n", Duration::ZERO),
            Err(StoreError::BadResult(_))
        ));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn retries_are_bounded_and_skip_permanent_errors() {
        let policy = RetryPolicy::default();
        let mut calls = 0;
        let r: Result<()> = policy
            .run("t", || {
                calls += 1;
                async { Err(StoreError::Connection("down".into())) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 5);
        let mut calls = 0;
        let r: Result<()> = policy
            .run("t", || {
                calls += 1;
                async { Err(StoreError::from_clickhouse_message("Code: 62. bad")) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r = policy
            .run("t", || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(StoreError::Connection("flaky".into()))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 3);
    }
}
