//! SQL dialect, PromQL, trace assembly and the query HTTP API.
//!
//! - [`sql`]: the fathom SQL dialect, translated to ClickHouse SQL once for
//!   both store backends;
//! - [`catalog`]: the tables, tags and metrics the dialect names;
//! - [`api`]: the HTTP API: `POST /v1/query`, `GET /v1/health`. The server
//!   mounts [`router`] on port 20416.
//!
//! # The dialect
//!
//! A request names a database (`flow_log` or `flow_metrics`; optional, as
//! table names are unique) and one statement:
//!
//! ```sql
//! SELECT host, endpoint, Count(*) AS n, Avg(response_duration), Percentile(response_duration, 99)
//! FROM l7_flow_log
//! WHERE time >= now() - 3600 AND l7_protocol = 'http' AND host != 'db-1'
//! GROUP BY host, endpoint HAVING n > 10 ORDER BY n DESC LIMIT 20
//!
//! SELECT time(1m) AS t, PerSecond(request), Avg(rrt), Percentile(rrt, 95)
//! FROM application_1s WHERE service = 'cart' AND time >= '2026-11-30T00:00:00Z' GROUP BY t
//! ```
//!
//! - Tables: `l7_flow_log`, `l4_flow_log` (db `flow_log`), `application_1s`,
//!   `application_1m`, `network_1s`, `network_1m` (db `flow_metrics`), by
//!   short name or as `db.table`.
//! - Tags: resources `region az host pod_cluster pod_ns workload pod service
//!   process` (names; their ids as `host_id`...), `server_port`, `protocol`,
//!   `l7_protocol`, `endpoint`, `request_type`, `response_status`,
//!   `response_code`, `server_ip`/`client_ip` (text, compared as addresses),
//!   `time`, ... (`SHOW TAGS FROM t`). In flow logs `_0` is the client side and
//!   `_1` the server side (`host_0`, `pid_1`, `host_id_0`); a bare resource
//!   name (`host`) is the server side.
//! - Metrics (`SHOW METRICS FROM t`): columns such as `response_duration`
//!   (µs), `byte_tx`, `request`, sums such as `byte`, `error`, and averages
//!   kept as sum and count (`rrt`, `rtt`): `Avg(rrt)` is
//!   `sum(rrt_sum) / sum(rrt_count)`, `Max(rrt)` reads `rrt_max`.
//! - Functions: `Count(*)`, `Count(x)`, `Sum`, `Avg`, `Max`, `Min`, `Uniq`,
//!   `Percentile(x, p)` with p in (0, 100] (exact-ish `quantile` on log
//!   rows; from the latency histogram for `rrt` on application tables, within
//!   half a histogram bucket), `PerSecond(x | * | aggregate)` (per time
//!   bucket, divided by its width; needs `time(...)`), `time(60s | 1m | 1h |
//!   1d | 60)` buckets (`toStartOfInterval`; a multiple of the table's own
//!   bucket), `now()`, arithmetic, `INTERVAL n UNIT`.
//! - Time literals: `time >= '2026-11-30T00:00:00Z'` (any ISO form, UTC when
//!   no zone is given), `time > 1764460800` (Unix seconds), `now() - 3600`.
//! - `WHERE` with `= != < <= > >= AND OR NOT IN BETWEEN LIKE ILIKE IS NULL`;
//!   `GROUP BY`, `HAVING`, `ORDER BY` take expressions, output aliases or
//!   1-based positions; `LIMIT n [OFFSET m]` or `LIMIT m, n`, at most
//!   [`Limits::max_rows`] (also the default).
//! - `SHOW DATABASES`, `SHOW TABLES [FROM db]`, `SHOW TAGS FROM t`,
//!   `SHOW METRICS FROM t`, `SHOW TAG x VALUES FROM t [LIMIT n]` (dictionary
//!   names and ids for resources; values seen in the last day, with counts,
//!   for other tags).
//!
//! Refused with a message (HTTP 400): anything but SELECT and SHOW (DDL,
//! INSERT, UPDATE, DELETE, SET, ...), more than one statement, `system.*` and
//! any table outside the catalog, table functions, subqueries, JOIN, UNION,
//! WITH, SETTINGS, FORMAT, INTO, `SELECT *`, unknown tags, metrics and
//! functions (named in the message).

pub mod api;
pub mod catalog;
pub mod sql;

pub use api::{router, router_with_config, QueryConfig};
pub use sql::{translate, DialectError, Limits, Translation};
