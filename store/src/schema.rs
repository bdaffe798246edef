//! The one schema both backends run (ClickHouse >= 23.8), and its migrations.
//!
//! Layout choices:
//! - hourly partitions (`toStartOfHour`) with `ttl_only_drop_parts = 1`:
//!   retention drops whole parts instead of rewriting them;
//! - tags are UInt32 SmartEncoding ids (names in `flow_tag.tag_dict`),
//!   compressed with T64 + ZSTD; low-cardinality strings are
//!   `LowCardinality(String)`;
//! - sort keys follow the common queries: logs of one service/endpoint
//!   (`l7_protocol, process_id_1, server_port, endpoint, time`), RED of one
//!   service (`l7_protocol, service_id, process_id, server_port, endpoint,
//!   time`), flows to one server (`protocol, server_port, ip_1, time`);
//!   time comes last because the hourly partition already bounds it;
//! - insert deduplication on the data tables (`non_replicated_deduplication_window`):
//!   ingest tags each insert with its batch (`insert_deduplication_token`),
//!   so a batch replayed after a crash is dropped by the engine;
//! - bloom-filter skip indexes on the trace columns, which are looked up by
//!   value (trace assembly) and are not in the sort key;
//! - parts written by inserts are compact (all columns in one file) up to
//!   [`WIDE_PART_BYTES`]; bigger ones, which only merges and very large
//!   inserts make, are wide (a file per column).

use std::fmt::Write;

/// Version of the newest migration; recorded in `flow_tag.schema_version`.
pub const SCHEMA_VERSION: u32 = 3;

/// How long each kind of data is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub flow_log_days: u32,
    pub metrics_1s_days: u32,
    pub metrics_1m_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { flow_log_days: 7, metrics_1s_days: 7, metrics_1m_days: 30 }
    }
}

/// Every table the store writes, with the column holding its time.
pub const TABLES: &[&str] = &[
    "flow_log.l7_flow_log",
    "flow_log.l4_flow_log",
    "flow_metrics.application_1s",
    "flow_metrics.application_1m",
    "flow_metrics.network_1s",
    "flow_metrics.network_1m",
    "flow_tag.tag_dict",
    "flow_tag.schema_version",
];

/// Tag ids: T64 drops the unused high bits of each block of ids, ZSTD
/// entropy-codes the rest. On 5000-value tags it stores 1.5-1.6 bytes per
/// id against 2.8-3.0 with the default LZ4 and 2.1-2.2 for
/// LowCardinality(String) (benches/smartencoding.rs).
const TAG_CODEC: &str = "CODEC(T64, ZSTD(1))";

fn side_tags(out: &mut String) {
    for side in ["0", "1"] {
        for tag in crate::rows::SIDE_TAGS {
            let _ = writeln!(out, "    {tag}_{side} UInt32 {TAG_CODEC},");
        }
    }
}

fn server_tags(out: &mut String) {
    for tag in crate::rows::SIDE_TAGS {
        let _ = writeln!(out, "    {tag} UInt32 {TAG_CODEC},");
    }
}

fn ttl(time_col: &str, days: u32) -> String {
    format!("TTL toDateTime({time_col}) + toIntervalDay({days})")
}

/// The TTL clause `CREATE` gives `table` under `retention`, as `MODIFY TTL`
/// takes it; None for tables kept forever.
pub fn table_ttl(table: &str, r: &Retention) -> Option<String> {
    let days = match table {
        "flow_log.l7_flow_log" | "flow_log.l4_flow_log" => r.flow_log_days,
        "flow_metrics.application_1s" | "flow_metrics.network_1s" => r.metrics_1s_days,
        "flow_metrics.application_1m" | "flow_metrics.network_1m" => r.metrics_1m_days,
        _ => return None,
    };
    Some(ttl("time", days))
}

/// Recent inserts whose tokens a data table remembers: replays come
/// shortly after a restart, within far fewer inserts than this.
pub const DEDUP_WINDOW: u32 = 10_000;

/// Uncompressed bytes from which a part is wide (one file per column and
/// stream) rather than compact (one file): about 350K L7 rows. A wide part
/// of the full L7 row is some 170 files; writing a 200K-row insert as one
/// compact part instead takes the embedded engine about 13% less CPU
/// (examples/insert_profile.rs) for 0.8% more bytes per row. Merged parts
/// past this size become wide, which reads one column without skipping
/// over the others.
pub const WIDE_PART_BYTES: u64 = 128 << 20;

const TABLE_SETTINGS: &str = "SETTINGS ttl_only_drop_parts = 1, index_granularity = 8192, \
                              non_replicated_deduplication_window = 10000, \
                              min_bytes_for_wide_part = 134217728";

fn l7_flow_log(r: &Retention) -> String {
    let mut s = String::from(
        "CREATE TABLE IF NOT EXISTS flow_log.l7_flow_log (
    time DateTime64(6) CODEC(Delta, ZSTD(1)),
    end_time DateTime64(6) CODEC(Delta, ZSTD(1)),
    response_duration UInt64,
    agent_id UInt32,
    observation_point LowCardinality(String),
    capture_source LowCardinality(String),
",
    );
    side_tags(&mut s);
    s.push_str(
        "    ip_0 IPv6,
    ip_1 IPv6,
    client_port UInt16,
    server_port UInt16,
    protocol UInt8,
    l7_protocol LowCardinality(String),
    version LowCardinality(String),
    msg_type LowCardinality(String),
    request_type LowCardinality(String),
    request_domain String,
    request_resource String,
    endpoint String,
    request_id Nullable(UInt64),
    response_code Nullable(Int32),
    response_status LowCardinality(String),
    response_exception String,
    response_result String,
    request_length Nullable(UInt32),
    response_length Nullable(UInt32),
    trace_id String,
    span_id String,
    parent_span_id String,
    x_request_id String,
    syscall_trace_id_request UInt64,
    syscall_trace_id_response UInt64,
    req_tcp_seq UInt32,
    resp_tcp_seq UInt32,
    truncated Bool,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_x_request_id x_request_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_syscall_trace_id_request syscall_trace_id_request TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_syscall_trace_id_response syscall_trace_id_response TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toStartOfHour(time)
ORDER BY (l7_protocol, process_id_1, server_port, endpoint, time)
",
    );
    let _ = writeln!(s, "{}", ttl("time", r.flow_log_days));
    s.push_str(TABLE_SETTINGS);
    s
}

fn l4_flow_log(r: &Retention) -> String {
    let mut s = String::from(
        "CREATE TABLE IF NOT EXISTS flow_log.l4_flow_log (
    time DateTime64(6) CODEC(Delta, ZSTD(1)),
    end_time DateTime64(6) CODEC(Delta, ZSTD(1)),
    duration UInt64,
    agent_id UInt32,
    observation_point LowCardinality(String),
    capture_source LowCardinality(String),
    interface LowCardinality(String),
",
    );
    side_tags(&mut s);
    s.push_str(
        "    ip_0 IPv6,
    ip_1 IPv6,
    client_port UInt16,
    server_port UInt16,
    protocol UInt8,
    l7_protocol LowCardinality(String),
    close_type LowCardinality(String),
",
    );
    for dir in ["tx", "rx"] {
        for (col, ty) in [
            ("byte", "UInt64"),
            ("packet", "UInt64"),
            ("payload_byte", "UInt64"),
            ("syn", "UInt32"),
            ("fin", "UInt32"),
            ("rst", "UInt32"),
            ("retrans", "UInt32"),
            ("zero_win", "UInt32"),
            ("out_of_order", "UInt32"),
        ] {
            let _ = writeln!(s, "    {col}_{dir} {ty},");
        }
    }
    s.push_str(
        "    syn_ack UInt32,
    rtt_server Nullable(UInt64),
    rtt_client Nullable(UInt64)
) ENGINE = MergeTree
PARTITION BY toStartOfHour(time)
ORDER BY (protocol, server_port, ip_1, time)
",
    );
    let _ = writeln!(s, "{}", ttl("time", r.flow_log_days));
    s.push_str(TABLE_SETTINGS);
    s
}

fn application(name: &str, days: u32) -> String {
    let mut s = format!(
        "CREATE TABLE IF NOT EXISTS flow_metrics.{name} (
    time DateTime CODEC(DoubleDelta, ZSTD(1)),
    agent_id UInt32,
    observation_point LowCardinality(String),
"
    );
    server_tags(&mut s);
    s.push_str(
        "    ip IPv6,
    server_port UInt16,
    protocol UInt8,
    l7_protocol LowCardinality(String),
    endpoint String,
    request UInt64,
    response UInt64,
    client_error UInt64,
    server_error UInt64,
    timeout UInt64,
    rrt_sum UInt64,
    rrt_count UInt64,
    rrt_max UInt64,
    rrt_histogram Map(UInt16, UInt64)
) ENGINE = MergeTree
PARTITION BY toStartOfHour(time)
ORDER BY (l7_protocol, service_id, process_id, server_port, endpoint, time)
",
    );
    let _ = writeln!(s, "{}", ttl("time", days));
    s.push_str(TABLE_SETTINGS);
    s
}

fn network(name: &str, days: u32) -> String {
    let mut s = format!(
        "CREATE TABLE IF NOT EXISTS flow_metrics.{name} (
    time DateTime CODEC(DoubleDelta, ZSTD(1)),
    agent_id UInt32,
    observation_point LowCardinality(String),
"
    );
    server_tags(&mut s);
    s.push_str("    ip IPv6,\n    server_port UInt16,\n    protocol UInt8,\n");
    for col in [
        "byte_tx",
        "byte_rx",
        "packet_tx",
        "packet_rx",
        "new_flow",
        "closed_flow",
        "syn",
        "syn_ack",
        "retrans_tx",
        "retrans_rx",
        "zero_win_tx",
        "zero_win_rx",
        "client_rst_flow",
        "server_rst_flow",
        "rtt_sum",
        "rtt_count",
        "rtt_max",
        "rtt_client_sum",
        "rtt_client_count",
    ] {
        let _ = writeln!(s, "    {col} UInt64,");
    }
    s.push_str(
        "    rtt_client_max UInt64
) ENGINE = MergeTree
PARTITION BY toStartOfHour(time)
ORDER BY (protocol, service_id, process_id, server_port, ip, time)
",
    );
    let _ = writeln!(s, "{}", ttl("time", days));
    s.push_str(TABLE_SETTINGS);
    s
}

/// Statements that create every database and table if missing, in order.
/// Safe to run at every start.
pub fn create_statements(r: &Retention) -> Vec<String> {
    vec![
        "CREATE DATABASE IF NOT EXISTS flow_log".into(),
        "CREATE DATABASE IF NOT EXISTS flow_metrics".into(),
        "CREATE DATABASE IF NOT EXISTS flow_tag".into(),
        "CREATE TABLE IF NOT EXISTS flow_tag.schema_version (
    version UInt32,
    applied_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree ORDER BY version"
            .into(),
        "CREATE TABLE IF NOT EXISTS flow_tag.tag_dict (
    tag_type LowCardinality(String),
    id UInt32,
    name String
) ENGINE = ReplacingMergeTree ORDER BY (tag_type, id)"
            .into(),
        l7_flow_log(r),
        l4_flow_log(r),
        application("application_1s", r.metrics_1s_days),
        application("application_1m", r.metrics_1m_days),
        network("network_1s", r.metrics_1s_days),
        network("network_1m", r.metrics_1m_days),
    ]
}

/// Additive migrations from one version to the next: `(version, statements)`.
/// Version 1 is the `create_statements` schema itself. A later version adds
/// columns with `ALTER TABLE ... ADD COLUMN IF NOT EXISTS ...` (and the same
/// column in the CREATE above, so new stores get it directly); every statement
/// must be idempotent because a crash may stop a migration half-way.
pub fn migrations() -> Vec<(u32, Vec<String>)> {
    let dedup = DATA_TABLES
        .iter()
        .map(|t| {
            format!(
                "ALTER TABLE {t} MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}"
            )
        })
        .collect();
    let compact = DATA_TABLES
        .iter()
        .map(|t| {
            format!("ALTER TABLE {t} MODIFY SETTING min_bytes_for_wide_part = {WIDE_PART_BYTES}")
        })
        .collect();
    vec![(1, Vec::new()), (2, dedup), (3, compact)]
}

/// The columns of `table` (`db.name`) and their types as the CREATE
/// statement declares them (codecs and defaults left out), in order.
/// The engine's `system.columns` is the truth for a running store (it
/// includes migrations); this serves encoders that have no engine at hand,
/// such as benchmarks.
pub fn columns(table: &str) -> Vec<(String, String)> {
    let head = format!("CREATE TABLE IF NOT EXISTS {table} (");
    let Some(stmt) =
        create_statements(&Retention::default()).into_iter().find(|s| s.starts_with(&head))
    else {
        return Vec::new();
    };
    let body = &stmt[head.len()..];
    let body = &body[..body.find("\n) ENGINE").unwrap_or(body.len())];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("INDEX "))
        .filter_map(|l| {
            let l = l.strip_suffix(',').unwrap_or(l);
            let (name, rest) = l.split_once(' ')?;
            let ty = [" CODEC(", " DEFAULT "]
                .iter()
                .fold(rest, |t, cut| t.split(cut).next().unwrap_or(t));
            Some((name.to_string(), ty.trim().to_string()))
        })
        .collect()
}

/// The tables of records and metrics (not the dictionaries).
pub const DATA_TABLES: &[&str] = &[
    "flow_log.l7_flow_log",
    "flow_log.l4_flow_log",
    "flow_metrics.application_1s",
    "flow_metrics.application_1m",
    "flow_metrics.network_1s",
    "flow_metrics.network_1m",
];

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_read_from_the_create_statements() {
        let cols = super::columns("flow_log.l7_flow_log");
        assert_eq!(cols.len(), <crate::L7Row as clickhouse::Row>::COLUMN_NAMES.len());
        assert_eq!(cols[0], ("time".to_string(), "DateTime64(6)".to_string()));
        assert!(cols.contains(&("host_id_0".to_string(), "UInt32".to_string())));
        let app = super::columns("flow_metrics.application_1m");
        assert_eq!(app.last().unwrap().1, "Map(UInt16, UInt64)");
        assert!(super::columns("nope.nope").is_empty());
    }

    #[test]
    fn the_window_in_create_matches_the_migration() {
        assert!(super::TABLE_SETTINGS
            .contains(&format!("non_replicated_deduplication_window = {}", super::DEDUP_WINDOW)));
        assert!(super::TABLE_SETTINGS
            .contains(&format!("min_bytes_for_wide_part = {}", super::WIDE_PART_BYTES)));
    }
}
