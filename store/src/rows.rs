//! Row types of the tables, field for column. Tags are SmartEncoding ids
//! (`u32`, 0 = unknown); names live in `flow_tag.tag_dict`. Suffix `_0` is
//! the client side of a call or flow, `_1` the server side.
//!
//! Times are microseconds since the Unix epoch (DateTime64(6) is an Int64 of
//! microseconds in RowBinary); metric buckets are seconds (DateTime).
//! IP addresses are 16 bytes in network order (IPv6 column); IPv4 addresses
//! are stored IPv4-mapped (`::ffff:a.b.c.d`) so one column serves both.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A short text from a fixed set (observation point, capture source):
/// ingest sets static strings, with no allocation per row.
pub type Label = std::borrow::Cow<'static, str>;

/// An IP address as the IPv6 column holds it.
pub fn ip_column(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address back from an IPv6 column value (IPv4-mapped become IPv4).
pub fn ip_from_column(octets: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(octets);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The tag ids every record carries, for one side of a call or flow.
/// Kept flat in the row types (serde `flatten` is not RowBinary-friendly).
pub const SIDE_TAGS: &[&str] = &[
    "region_id",
    "az_id",
    "host_id",
    "pod_cluster_id",
    "pod_ns_id",
    "workload_id",
    "pod_id",
    "service_id",
    "process_id",
    "pid",
];

/// One L7 call: `flow_log.l7_flow_log`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct L7Row {
    /// Request start, µs.
    pub time: i64,
    pub end_time: i64,
    /// end_time - time, µs; 0 for lone messages and timeouts.
    pub response_duration: u64,
    pub agent_id: u32,
    /// Where the call was seen: "c-p"/"s-p" client/server process (eBPF),
    /// "c"/"s" client/server NIC, "pcap".
    pub observation_point: Label,
    /// "packet", "syscall", "tls", "pcap".
    pub capture_source: Label,
    pub region_id_0: u32,
    pub region_id_1: u32,
    pub az_id_0: u32,
    pub az_id_1: u32,
    pub host_id_0: u32,
    pub host_id_1: u32,
    pub pod_cluster_id_0: u32,
    pub pod_cluster_id_1: u32,
    pub pod_ns_id_0: u32,
    pub pod_ns_id_1: u32,
    pub workload_id_0: u32,
    pub workload_id_1: u32,
    pub pod_id_0: u32,
    pub pod_id_1: u32,
    pub service_id_0: u32,
    pub service_id_1: u32,
    /// Process-name ids (not pids).
    pub process_id_0: u32,
    pub process_id_1: u32,
    pub pid_0: u32,
    pub pid_1: u32,
    pub ip_0: [u8; 16],
    pub ip_1: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    pub l7_protocol: String,
    pub version: String,
    pub msg_type: String,
    pub request_type: String,
    pub request_domain: String,
    pub request_resource: String,
    pub endpoint: String,
    pub request_id: Option<u64>,
    pub response_code: Option<i32>,
    pub response_status: String,
    pub response_exception: String,
    pub response_result: String,
    pub request_length: Option<u32>,
    pub response_length: Option<u32>,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub x_request_id: String,
    /// 0 = none.
    pub syscall_trace_id_request: u64,
    pub syscall_trace_id_response: u64,
    /// 0 = none.
    pub req_tcp_seq: u32,
    pub resp_tcp_seq: u32,
    pub truncated: bool,
}

/// One L4 flow record: `flow_log.l4_flow_log`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct L4Row {
    pub time: i64,
    pub end_time: i64,
    pub duration: u64,
    pub agent_id: u32,
    pub observation_point: Label,
    pub capture_source: Label,
    pub interface: String,
    pub region_id_0: u32,
    pub region_id_1: u32,
    pub az_id_0: u32,
    pub az_id_1: u32,
    pub host_id_0: u32,
    pub host_id_1: u32,
    pub pod_cluster_id_0: u32,
    pub pod_cluster_id_1: u32,
    pub pod_ns_id_0: u32,
    pub pod_ns_id_1: u32,
    pub workload_id_0: u32,
    pub workload_id_1: u32,
    pub pod_id_0: u32,
    pub pod_id_1: u32,
    pub service_id_0: u32,
    pub service_id_1: u32,
    pub process_id_0: u32,
    pub process_id_1: u32,
    pub pid_0: u32,
    pub pid_1: u32,
    pub ip_0: [u8; 16],
    pub ip_1: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub protocol: u8,
    pub l7_protocol: String,
    /// "open", "fin", "client_reset", "server_reset", "handshake_timeout", ...
    pub close_type: String,
    /// Client -> server (see the agent's DirectionCounters).
    pub byte_tx: u64,
    pub packet_tx: u64,
    pub payload_byte_tx: u64,
    pub syn_tx: u32,
    pub fin_tx: u32,
    pub rst_tx: u32,
    pub retrans_tx: u32,
    pub zero_win_tx: u32,
    pub out_of_order_tx: u32,
    /// Server -> client.
    pub byte_rx: u64,
    pub packet_rx: u64,
    pub payload_byte_rx: u64,
    pub syn_rx: u32,
    pub fin_rx: u32,
    pub rst_rx: u32,
    pub retrans_rx: u32,
    pub zero_win_rx: u32,
    pub out_of_order_rx: u32,
    pub syn_ack: u32,
    /// µs; None when the handshake was not seen.
    pub rtt_server: Option<u64>,
    pub rtt_client: Option<u64>,
}

/// RED of one service (server side) in one 1 s or 1 min bucket:
/// `flow_metrics.application_1s` / `application_1m`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct AppMetricRow {
    /// Bucket start, seconds.
    pub time: u32,
    pub agent_id: u32,
    pub observation_point: Label,
    pub region_id: u32,
    pub az_id: u32,
    pub host_id: u32,
    pub pod_cluster_id: u32,
    pub pod_ns_id: u32,
    pub workload_id: u32,
    pub pod_id: u32,
    pub service_id: u32,
    pub process_id: u32,
    pub pid: u32,
    pub ip: [u8; 16],
    pub server_port: u16,
    pub protocol: u8,
    pub l7_protocol: String,
    pub endpoint: String,
    pub request: u64,
    pub response: u64,
    pub client_error: u64,
    pub server_error: u64,
    pub timeout: u64,
    /// Response latency, µs.
    pub rrt_sum: u64,
    pub rrt_count: u64,
    pub rrt_max: u64,
    /// Sparse latency histogram: [`latency_bucket`] index -> count.
    pub rrt_histogram: BTreeMap<u16, u64>,
}

/// L4 metrics of one service (server side) in one bucket:
/// `flow_metrics.network_1s` / `network_1m`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct NetworkMetricRow {
    pub time: u32,
    pub agent_id: u32,
    pub observation_point: Label,
    pub region_id: u32,
    pub az_id: u32,
    pub host_id: u32,
    pub pod_cluster_id: u32,
    pub pod_ns_id: u32,
    pub workload_id: u32,
    pub pod_id: u32,
    pub service_id: u32,
    pub process_id: u32,
    pub pid: u32,
    pub ip: [u8; 16],
    pub server_port: u16,
    pub protocol: u8,
    pub byte_tx: u64,
    pub byte_rx: u64,
    pub packet_tx: u64,
    pub packet_rx: u64,
    pub new_flow: u64,
    pub closed_flow: u64,
    pub syn: u64,
    pub syn_ack: u64,
    pub retrans_tx: u64,
    pub retrans_rx: u64,
    pub zero_win_tx: u64,
    pub zero_win_rx: u64,
    pub client_rst_flow: u64,
    pub server_rst_flow: u64,
    /// Server-side RTT (SYN -> SYN-ACK), µs.
    pub rtt_sum: u64,
    pub rtt_count: u64,
    pub rtt_max: u64,
    /// Client-side RTT (SYN-ACK -> ACK), µs.
    pub rtt_client_sum: u64,
    pub rtt_client_count: u64,
    pub rtt_client_max: u64,
}

/// One SmartEncoding dictionary entry: `flow_tag.tag_dict`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct TagRow {
    /// "host", "region", "az", "process", "pod", ... (the id column's stem).
    pub tag_type: String,
    pub id: u32,
    pub name: String,
}

/// Which metrics table a batch goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    Second,
    Minute,
}

impl Granularity {
    pub fn app_table(self) -> &'static str {
        match self {
            Granularity::Second => "flow_metrics.application_1s",
            Granularity::Minute => "flow_metrics.application_1m",
        }
    }

    pub fn network_table(self) -> &'static str {
        match self {
            Granularity::Second => "flow_metrics.network_1s",
            Granularity::Minute => "flow_metrics.network_1m",
        }
    }
}

/// Sub-buckets per power of two: bucket widths are 1/8 of an octave, so a
/// percentile read from the histogram is within 12.5% of the true value.
const SUB_BUCKET_BITS: u32 = 3;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// Histogram bucket of a latency in µs: exact below 8 µs, then 8 log-linear
/// buckets per power of two (HDR-style). The largest index is 495, so the
/// column's UInt16 key never overflows.
pub fn latency_bucket(us: u64) -> u16 {
    if us < SUB_BUCKETS {
        return us as u16;
    }
    let exp = 63 - us.leading_zeros(); // >= SUB_BUCKET_BITS
    let sub = (us >> (exp - SUB_BUCKET_BITS)) & (SUB_BUCKETS - 1);
    ((exp - SUB_BUCKET_BITS + 1) as u64 * SUB_BUCKETS + sub) as u16
}

/// Smallest latency (µs) that falls in `bucket`; with [`latency_bucket`],
/// bucket `b` holds `[latency_bucket_lower(b), latency_bucket_lower(b + 1))`.
pub fn latency_bucket_lower(bucket: u16) -> u64 {
    let b = bucket as u64;
    if b < SUB_BUCKETS {
        return b;
    }
    let octave = b / SUB_BUCKETS - 1; // 0 for [8, 16)
    let sub = b % SUB_BUCKETS;
    (SUB_BUCKETS + sub) << octave
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = latency_bucket(us);
            assert!(b >= last, "bucket decreased at {us}");
            last = b;
            let lo = latency_bucket_lower(b);
            assert!(lo <= us, "{us} below its bucket's lower bound {lo}");
            if b < latency_bucket(u64::MAX) {
                let hi = latency_bucket_lower(b + 1);
                assert!(us < hi, "{us} not below next bound {hi}");
                // relative width at most 1/8
                assert!((hi - lo) * 8 <= hi.max(8), "bucket {b} too wide: {lo}..{hi}");
            }
        }
        assert!(latency_bucket(u64::MAX) <= 495);
    }

    #[test]
    fn ip_columns_round_trip() {
        for ip in ["10.1.2.3", "::1", "fe80::1", "0.0.0.0"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_from_column(ip_column(ip)), ip);
        }
    }
}
