//! The tables, tags and metrics the SQL dialect knows, and the physical
//! columns behind them. Every identifier a user writes is looked up here;
//! only the SQL fragments defined in this file reach ClickHouse as names.

/// The databases a request's `db` may name.
pub const DATABASES: &[&str] = &["flow_log", "flow_metrics"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    L7,
    L4,
    Application,
    Network,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// Short name used in the dialect (`l7_flow_log`, `application_1m`, ...).
    pub name: &'static str,
    pub db: &'static str,
    pub kind: TableKind,
    /// The `time` column is DateTime64(6) (logs) or DateTime (metric buckets).
    pub time64: bool,
    /// Width of the stored metric buckets, seconds (0 for logs).
    pub granularity: u32,
}

pub const TABLES: &[Table] = &[
    Table {
        name: "l7_flow_log",
        db: "flow_log",
        kind: TableKind::L7,
        time64: true,
        granularity: 0,
    },
    Table {
        name: "l4_flow_log",
        db: "flow_log",
        kind: TableKind::L4,
        time64: true,
        granularity: 0,
    },
    Table {
        name: "application_1s",
        db: "flow_metrics",
        kind: TableKind::Application,
        time64: false,
        granularity: 1,
    },
    Table {
        name: "application_1m",
        db: "flow_metrics",
        kind: TableKind::Application,
        time64: false,
        granularity: 60,
    },
    Table {
        name: "network_1s",
        db: "flow_metrics",
        kind: TableKind::Network,
        time64: false,
        granularity: 1,
    },
    Table {
        name: "network_1m",
        db: "flow_metrics",
        kind: TableKind::Network,
        time64: false,
        granularity: 60,
    },
];

/// Finds a table by its short name (or `db.name`), checking it belongs to
/// `db` when the request names one.
pub fn table(db: Option<&str>, name: &str) -> Result<&'static Table, String> {
    let (qual, short) = match name.split_once('.') {
        Some((d, n)) => (Some(d), n),
        None => (None, name),
    };
    let t = TABLES.iter().find(|t| t.name.eq_ignore_ascii_case(short)).ok_or_else(|| {
        format!(
            "unknown table '{name}'; tables: {}",
            TABLES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
        )
    })?;
    for d in [qual, db].into_iter().flatten() {
        if !d.eq_ignore_ascii_case(t.db) {
            return Err(format!("table '{}' is in database '{}', not '{d}'", t.name, t.db));
        }
    }
    Ok(t)
}

/// Resource tags: stored as SmartEncoding ids, named through
/// `flow_tag.tag_dict` (`tag_type` is the id column's stem).
const RESOURCES: &[(&str, &str)] = &[
    ("region", "region"),
    ("az", "az"),
    ("host", "host"),
    ("pod_cluster", "pod_cluster"),
    ("pod_ns", "pod_ns"),
    ("workload", "workload"),
    ("pod", "pod"),
    ("service", "service"),
    ("process", "process"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagKind {
    /// A dictionary-encoded resource: `column` holds ids of `tag_type`.
    Resource { column: String, tag_type: &'static str },
    /// A plain column; `ty` is "string", "int" or "bool".
    Column { column: String, ty: &'static str },
    /// An IPv6 column (IPv4 stored mapped); shown as text.
    Ip { column: String },
    /// A DateTime / DateTime64 column.
    Time { column: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub kind: TagKind,
    pub description: String,
}

impl Tag {
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            TagKind::Resource { .. } => "resource",
            TagKind::Column { ty, .. } => ty,
            TagKind::Ip { .. } => "ip",
            TagKind::Time { .. } => "time",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// A per-row value (a column or a sum of columns).
    Value(String),
    /// An average kept as sum and count per bucket; `max` is the bucket
    /// maximum column, `histogram` the latency histogram column if any.
    Ratio { sum: String, count: String, max: String, histogram: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    pub unit: &'static str,
    pub description: String,
}

fn tag(name: &str, kind: TagKind, description: &str) -> Tag {
    Tag { name: name.to_string(), kind, description: description.to_string() }
}

fn col(name: &str, ty: &'static str, description: &str) -> Tag {
    tag(name, TagKind::Column { column: name.to_string(), ty }, description)
}

fn value(name: &str, unit: &'static str, description: &str) -> Metric {
    Metric {
        name: name.to_string(),
        kind: MetricKind::Value(name.to_string()),
        unit,
        description: description.to_string(),
    }
}

impl Table {
    /// The physical `db.table`.
    pub fn physical(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }

    fn is_flow_log(&self) -> bool {
        matches!(self.kind, TableKind::L7 | TableKind::L4)
    }

    pub fn tags(&self) -> Vec<Tag> {
        let mut v = vec![tag(
            "time",
            TagKind::Time { column: "time".into() },
            if self.is_flow_log() { "start of the call or flow" } else { "start of the bucket" },
        )];
        if self.is_flow_log() {
            v.push(tag("end_time", TagKind::Time { column: "end_time".into() }, "end"));
            for (name, stem) in RESOURCES {
                for (suffix, side) in [("_0", "client"), ("_1", "server")] {
                    v.push(tag(
                        &format!("{name}{suffix}"),
                        TagKind::Resource { column: format!("{stem}_id{suffix}"), tag_type: stem },
                        &format!("{name} of the {side} side"),
                    ));
                    v.push(col(&format!("{stem}_id{suffix}"), "int", &format!("{name} id")));
                }
                v.push(tag(
                    name,
                    TagKind::Resource { column: format!("{stem}_id_1"), tag_type: stem },
                    &format!("{name} of the server side (same as {name}_1)"),
                ));
            }
            v.push(col("pid_0", "int", "client process id"));
            v.push(col("pid_1", "int", "server process id"));
            v.push(tag(
                "pid",
                TagKind::Column { column: "pid_1".into(), ty: "int" },
                "server process id",
            ));
            for (name, column, d) in [
                ("client_ip", "ip_0", "client IP"),
                ("ip_0", "ip_0", "client IP"),
                ("server_ip", "ip_1", "server IP"),
                ("ip_1", "ip_1", "server IP"),
            ] {
                v.push(tag(name, TagKind::Ip { column: column.into() }, d));
            }
            v.push(col("client_port", "int", "client port"));
            v.push(col("capture_source", "string", "packet, syscall, tls or pcap"));
        } else {
            for (name, stem) in RESOURCES {
                let d = match (*name, self.kind) {
                    // A RED row's process is the one that observed it.
                    ("process", TableKind::Application) => {
                        "observing process: the server's, the client's in c-p rows".to_string()
                    }
                    _ => format!("{name} of the server"),
                };
                v.push(tag(
                    name,
                    TagKind::Resource { column: format!("{stem}_id"), tag_type: stem },
                    &d,
                ));
                v.push(col(&format!("{stem}_id"), "int", &format!("{name} id")));
            }
            v.push(col("pid", "int", "server process id"));
            v.push(tag("ip", TagKind::Ip { column: "ip".into() }, "server IP"));
            v.push(tag("server_ip", TagKind::Ip { column: "ip".into() }, "server IP"));
        }
        v.push(col("server_port", "int", "server port"));
        v.push(col("protocol", "int", "IP protocol number (6 TCP, 17 UDP)"));
        v.push(col("agent_id", "int", "agent that observed it"));
        v.push(col(
            "observation_point",
            "string",
            match self.kind {
                TableKind::Application => {
                    "c-p/s-p: counted in the client/server process (a call between two local \
                     processes has one row at each end), s: on the server's NIC"
                }
                _ => "c-p/s-p (process), c/s (NIC), pcap",
            },
        ));
        match self.kind {
            TableKind::L7 => {
                for (n, d) in [
                    ("l7_protocol", "HTTP, HTTP2, gRPC, MySQL, Redis, Kafka, DNS, ..."),
                    ("version", "protocol version"),
                    ("msg_type", "request, response or session"),
                    ("request_type", "method, command or query type"),
                    ("request_domain", "host, database or topic"),
                    ("request_resource", "path, statement or key"),
                    ("endpoint", "normalised resource"),
                    ("response_status", "ok, client_error, server_error, timeout, ..."),
                    ("response_exception", "error text"),
                    ("response_result", "result text"),
                    ("trace_id", "trace id"),
                    ("span_id", "span id"),
                    ("parent_span_id", "parent span id"),
                    ("x_request_id", "X-Request-ID"),
                ] {
                    v.push(col(n, "string", d));
                }
                for (n, d) in [
                    ("request_id", "protocol request id (stream, correlation id)"),
                    ("response_code", "status code"),
                    ("syscall_trace_id_request", "syscall trace id of the request"),
                    ("syscall_trace_id_response", "syscall trace id of the response"),
                    ("req_tcp_seq", "TCP sequence number of the request"),
                    ("resp_tcp_seq", "TCP sequence number of the response"),
                ] {
                    v.push(col(n, "int", d));
                }
                v.push(col("truncated", "bool", "payload was cut"));
            }
            TableKind::L4 => {
                v.push(col("l7_protocol", "string", "application protocol of the flow"));
                v.push(col("interface", "string", "capture interface"));
                v.push(col("close_type", "string", "fin, client_reset, server_reset, ..."));
            }
            TableKind::Application => {
                v.push(col("l7_protocol", "string", "application protocol"));
                v.push(col("endpoint", "string", "normalised resource"));
            }
            TableKind::Network => {}
        }
        v
    }

    pub fn metrics(&self) -> Vec<Metric> {
        let ratio = |name: &str, stem: &str, hist: Option<&str>, d: &str| Metric {
            name: name.to_string(),
            kind: MetricKind::Ratio {
                sum: format!("{stem}_sum"),
                count: format!("{stem}_count"),
                max: format!("{stem}_max"),
                histogram: hist.map(str::to_string),
            },
            unit: "us",
            description: d.to_string(),
        };
        let sum2 = |name: &str, a: &str, b: &str, unit, d: &str| Metric {
            name: name.to_string(),
            kind: MetricKind::Value(format!("({a} + {b})")),
            unit,
            description: d.to_string(),
        };
        match self.kind {
            TableKind::L7 => vec![
                value("response_duration", "us", "response time"),
                value("request_length", "byte", "request size"),
                value("response_length", "byte", "response size"),
            ],
            TableKind::L4 => {
                let mut v = vec![value("duration", "us", "flow duration")];
                for dir in ["tx", "rx"] {
                    let side = if dir == "tx" { "client to server" } else { "server to client" };
                    for (m, unit) in [
                        ("byte", "byte"),
                        ("packet", "packet"),
                        ("payload_byte", "byte"),
                        ("syn", "packet"),
                        ("fin", "packet"),
                        ("rst", "packet"),
                        ("retrans", "packet"),
                        ("zero_win", "packet"),
                        ("out_of_order", "packet"),
                    ] {
                        v.push(value(&format!("{m}_{dir}"), unit, &format!("{m}, {side}")));
                    }
                }
                v.push(sum2("byte", "byte_tx", "byte_rx", "byte", "bytes both ways"));
                v.push(sum2("packet", "packet_tx", "packet_rx", "packet", "packets both ways"));
                v.push(value("syn_ack", "packet", "SYN-ACKs"));
                v.push(value("rtt_server", "us", "server-side RTT"));
                v.push(value("rtt_client", "us", "client-side RTT"));
                v
            }
            TableKind::Application => {
                let mut v: Vec<Metric> = [
                    ("request", "requests"),
                    ("response", "responses"),
                    ("client_error", "client errors"),
                    ("server_error", "server errors"),
                    ("timeout", "timeouts"),
                ]
                .iter()
                .map(|(n, d)| value(n, "count", d))
                .collect();
                v.push(sum2("error", "client_error", "server_error", "count", "errors"));
                v.push(ratio("rrt", "rrt", Some("rrt_histogram"), "response time"));
                v.push(value("rrt_sum", "us", "sum of response times"));
                v.push(value("rrt_count", "count", "responses timed"));
                v.push(value("rrt_max", "us", "largest response time"));
                v
            }
            TableKind::Network => {
                let mut v = Vec::new();
                for n in [
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
                ] {
                    let unit = if n.starts_with("byte") { "byte" } else { "count" };
                    v.push(value(n, unit, &n.replace('_', " ")));
                }
                v.push(sum2("byte", "byte_tx", "byte_rx", "byte", "bytes both ways"));
                v.push(sum2("packet", "packet_tx", "packet_rx", "count", "packets both ways"));
                v.push(ratio("rtt", "rtt", None, "server-side RTT"));
                v.push(ratio("rtt_client", "rtt_client", None, "client-side RTT"));
                for n in ["rtt_sum", "rtt_count", "rtt_max"] {
                    v.push(value(n, if n == "rtt_count" { "count" } else { "us" }, n));
                }
                for n in ["rtt_client_sum", "rtt_client_count", "rtt_client_max"] {
                    v.push(value(n, if n.ends_with("count") { "count" } else { "us" }, n));
                }
                v
            }
        }
    }

    pub fn tag(&self, name: &str) -> Option<Tag> {
        self.tags().into_iter().find(|t| t.name.eq_ignore_ascii_case(name))
    }

    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.metrics().into_iter().find(|m| m.name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_table() {
        for t in TABLES {
            let mut names: Vec<String> = t.tags().into_iter().map(|t| t.name).collect();
            names.extend(t.metrics().into_iter().map(|m| m.name));
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "duplicate name in {}", t.name);
        }
    }

    #[test]
    fn tables_resolve_with_and_without_db() {
        assert_eq!(table(Some("flow_log"), "l7_flow_log").unwrap().kind, TableKind::L7);
        assert_eq!(table(None, "flow_metrics.network_1m").unwrap().name, "network_1m");
        assert!(table(Some("flow_metrics"), "l7_flow_log").unwrap_err().contains("flow_log"));
        assert!(table(None, "nope").unwrap_err().contains("unknown table 'nope'"));
    }
}
