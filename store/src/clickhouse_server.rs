//! ClickHouse server (or cluster) backend through the official `clickhouse`
//! crate: HTTP, typed RowBinary inserts of the same row types the embedded
//! backend writes, JSONCompact for queries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::rows::{AppMetricRow, Granularity, L4Row, L7Row, NetworkMetricRow, TagRow};
use crate::{
    dedup_token, QueryResult, Result, Retention, RetryPolicy, Store, StoreError, TableRows,
};

/// Configuration of the server backend.
#[derive(Clone, Debug)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub retention: Retention,
    pub retry: RetryPolicy,
    /// Inserts in flight at once; further callers wait (back-pressure).
    pub max_concurrent_inserts: usize,
    pub max_rows_per_insert: usize,
    /// The crate's schema validation of row types (RowBinaryWithNamesAndTypes).
    /// Off by default: the store owns and migrates the schema, and the row
    /// layout is checked against ClickHouse by the embedded tests.
    pub validation: bool,
    /// Create and migrate the schema on connect.
    pub migrate: bool,
    /// LZ4-compress inserts and results (ClickHouse's `compress=1`).
    pub lz4: bool,
}

impl ClickHouseConfig {
    pub fn new(url: impl Into<String>) -> Self {
        ClickHouseConfig {
            url: url.into(),
            user: None,
            password: None,
            retention: Retention::default(),
            retry: RetryPolicy::default(),
            max_concurrent_inserts: 4,
            max_rows_per_insert: 1_000_000,
            validation: false,
            migrate: true,
            lz4: true,
        }
    }
}

/// The server backend.
pub struct ClickHouseStore {
    client: clickhouse::Client,
    config: ClickHouseConfig,
    inserts: Arc<Semaphore>,
}

fn map_err(e: clickhouse::error::Error) -> StoreError {
    use clickhouse::error::Error as E;
    match e {
        E::BadResponse(msg) => StoreError::from_clickhouse_message(&msg),
        E::Network(e) => StoreError::Connection(e.to_string()),
        E::TimedOut => StoreError::Connection("timed out".into()),
        E::InvalidParams(e) => StoreError::Connection(format!("invalid parameters: {e}")),
        other => StoreError::BadResult(other.to_string()),
    }
}

impl ClickHouseStore {
    /// Connects (lazily: the first request opens the HTTP connection) and,
    /// unless `config.migrate` is off, creates or migrates the schema.
    pub async fn connect(config: ClickHouseConfig) -> Result<ClickHouseStore> {
        let mut client = clickhouse::Client::default()
            .with_url(config.url.clone())
            .with_validation(config.validation)
            .with_compression(if config.lz4 {
                clickhouse::Compression::Lz4
            } else {
                clickhouse::Compression::None
            });
        if let Some(u) = &config.user {
            client = client.with_user(u.clone());
        }
        if let Some(p) = &config.password {
            client = client.with_password(p.clone());
        }
        let store = ClickHouseStore {
            client,
            inserts: Arc::new(Semaphore::new(config.max_concurrent_inserts.max(1))),
            config,
        };
        if store.config.migrate {
            let retention = store.config.retention;
            crate::migrate(&store, &retention).await?;
        }
        Ok(store)
    }

    /// The crate's client, for callers that need more than the trait.
    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    async fn insert_once<T>(&self, table: &str, rows: &[T], token: Option<String>) -> Result<()>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + Sync,
    {
        let mut insert = self.client.insert_unescaped::<T>(table).await.map_err(map_err)?;
        if let Some(t) = token {
            insert = insert
                .with_option("insert_deduplicate", "1")
                .with_option("insert_deduplication_token", t);
        }
        for row in rows {
            insert.write(row).await.map_err(map_err)?;
        }
        insert.end().await.map_err(map_err)
    }

    /// Inserts rows of any `Row` type into `table` (`db.name`, unescaped),
    /// in chunks, with retries, waiting for a free insert slot.
    pub async fn insert_rows<T>(&self, table: &str, rows: &[T]) -> Result<()>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + Sync,
    {
        self.insert_rows_dedup(table, rows, None).await
    }

    /// [`insert_rows`](Self::insert_rows), with each chunk under the
    /// deduplication token [`dedup_token`]`(token, chunk index)`.
    pub async fn insert_rows_dedup<T>(
        &self,
        table: &str,
        rows: &[T],
        token: Option<&str>,
    ) -> Result<()>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite + Sync,
    {
        let _permit = self.inserts.acquire().await.map_err(|_| StoreError::Closed)?;
        for (part, chunk) in rows.chunks(self.config.max_rows_per_insert.max(1)).enumerate() {
            let t = token.map(|t| dedup_token(t, part));
            self.config.retry.run(table, || self.insert_once(table, chunk, t.clone())).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for ClickHouseStore {
    fn backend(&self) -> &'static str {
        "clickhouse"
    }

    fn max_rows_per_insert(&self) -> usize {
        self.config.max_rows_per_insert.max(1)
    }

    async fn insert_l7(&self, rows: &[L7Row]) -> Result<()> {
        self.insert_rows("flow_log.l7_flow_log", rows).await
    }

    async fn insert_l4(&self, rows: &[L4Row]) -> Result<()> {
        self.insert_rows("flow_log.l4_flow_log", rows).await
    }

    async fn insert_app_metrics(&self, g: Granularity, rows: &[AppMetricRow]) -> Result<()> {
        self.insert_rows(g.app_table(), rows).await
    }

    async fn insert_network_metrics(
        &self,
        g: Granularity,
        rows: &[NetworkMetricRow],
    ) -> Result<()> {
        self.insert_rows(g.network_table(), rows).await
    }

    async fn insert_deduplicated(&self, rows: TableRows<'_>, token: &str) -> Result<()> {
        let (table, t) = (rows.table(), Some(token));
        match rows {
            TableRows::L7(r) => self.insert_rows_dedup(table, r, t).await,
            TableRows::L4(r) => self.insert_rows_dedup(table, r, t).await,
            TableRows::App(_, r) => self.insert_rows_dedup(table, r, t).await,
            TableRows::Network(_, r) => self.insert_rows_dedup(table, r, t).await,
        }
    }

    async fn upsert_tags(&self, rows: &[TagRow]) -> Result<()> {
        self.insert_rows("flow_tag.tag_dict", rows).await
    }

    async fn query(&self, sql: &str) -> Result<QueryResult> {
        let started = Instant::now();
        // The crate binds `?` placeholders; `??` is a literal question mark.
        let body = self
            .client
            .query(&sql.replace('?', "??"))
            .with_option("output_format_json_quote_64bit_integers", "0")
            .fetch_bytes("JSONCompact")
            .map_err(map_err)?
            .collect()
            .await
            .map_err(map_err)?;
        let elapsed = started.elapsed().max(Duration::from_nanos(1));
        QueryResult::from_json_compact(&body, elapsed)
    }
}
