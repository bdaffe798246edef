//! Row generators shared by the tests and benches: deterministic, varied
//! values in every field (None and Some, IPv4 and IPv6, empty and long strings).
#![allow(dead_code, clippy::manual_is_multiple_of)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use fathom_store::{
    ip_column, latency_bucket, AppMetricRow, L4Row, L7Row, NetworkMetricRow, TagRow,
};

/// 2026-11-30T00:00:00Z in µs: recent enough for the TTLs not to drop it.
pub fn base_time_us() -> i64 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
            as i64;
    // Start of the current hour minus one hour, so rows span two partitions.
    now - now % 3_600_000_000 - 3_600_000_000
}

fn ip(i: usize) -> [u8; 16] {
    let ip: IpAddr = if i % 5 == 0 {
        format!("fd00::{:x}", i % 65536).parse().unwrap()
    } else {
        format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255).parse().unwrap()
    };
    ip_column(ip)
}

const PROTOCOLS: &[&str] = &["http", "http2", "grpc", "redis", "mysql", "dns", "kafka"];
const METHODS: &[&str] = &["GET", "POST", "PUT", "SET", "COM_QUERY", "A"];

/// Row `i` of a sequence; `time` is unique per `i` (one µs apart).
pub fn l7_row(i: usize, base: i64) -> L7Row {
    let proto = PROTOCOLS[i % PROTOCOLS.len()];
    let latency = (i as u64 * 37) % 250_000;
    L7Row {
        time: base + i as i64,
        end_time: base + i as i64 + latency as i64,
        response_duration: latency,
        agent_id: 1 + (i % 3) as u32,
        observation_point: ["c-p", "s-p", "c", "s"][i % 4].into(),
        capture_source: ["packet", "syscall", "tls"][i % 3].into(),
        region_id_0: 1,
        region_id_1: 1 + (i % 2) as u32,
        az_id_0: 3,
        az_id_1: 4,
        host_id_0: (i % 50) as u32,
        host_id_1: (i % 20) as u32,
        pod_cluster_id_0: 0,
        pod_cluster_id_1: 7,
        pod_ns_id_0: (i % 4) as u32,
        pod_ns_id_1: (i % 5) as u32,
        workload_id_0: (i % 30) as u32,
        workload_id_1: (i % 40) as u32,
        pod_id_0: (i % 300) as u32,
        pod_id_1: (i % 400) as u32,
        service_id_0: (i % 25) as u32,
        service_id_1: (i % 35) as u32,
        process_id_0: (i % 60) as u32,
        process_id_1: (i % 70) as u32,
        pid_0: 1000 + (i % 5000) as u32,
        pid_1: 2000 + (i % 3000) as u32,
        ip_0: ip(i),
        ip_1: ip(i / 7 + 1),
        client_port: (30000 + i % 30000) as u16,
        server_port: [80, 443, 6379, 3306, 53, 9092, 8080][i % 7],
        protocol: if proto == "dns" { 17 } else { 6 },
        l7_protocol: proto.into(),
        version: if i % 2 == 0 { "1.1".into() } else { String::new() },
        msg_type: ["request", "response", "session"][i % 3].into(),
        request_type: METHODS[i % METHODS.len()].into(),
        request_domain: format!("svc-{}.default.svc", i % 17),
        request_resource: format!("/api/v1/items/{i}?q=\u{e9}\t\"x\""),
        endpoint: format!("/api/v1/items/{}", i % 13),
        request_id: if i % 3 == 0 { None } else { Some(i as u64 * 1_000_003) },
        response_code: if i % 11 == 0 { None } else { Some([200, 404, 500, -1][i % 4]) },
        response_status: ["ok", "client_error", "server_error", "timeout", "unknown"][i % 5].into(),
        response_exception: if i % 4 == 2 { "Internal Server Error".into() } else { String::new() },
        response_result: String::new(),
        request_length: if i % 6 == 0 { None } else { Some((i * 13) as u32) },
        response_length: Some((i * 17) as u32),
        trace_id: if i % 2 == 0 {
            format!("{:032x}", i as u128 * 0x9e3779b97f4a7c15)
        } else {
            String::new()
        },
        span_id: format!("{:016x}", i),
        parent_span_id: String::new(),
        x_request_id: if i % 9 == 0 { format!("req-{i}") } else { String::new() },
        syscall_trace_id_request: i as u64 * 3,
        syscall_trace_id_response: i as u64 * 5,
        req_tcp_seq: (i as u32).wrapping_mul(2654435761),
        resp_tcp_seq: (i as u32).wrapping_mul(40503),
        truncated: i % 10 == 0,
    }
}

pub fn l4_row(i: usize, base: i64) -> L4Row {
    L4Row {
        time: base + i as i64,
        end_time: base + i as i64 + 5_000,
        duration: 5_000,
        agent_id: 1,
        observation_point: "c".into(),
        capture_source: "packet".into(),
        interface: format!("eth{}", i % 3),
        host_id_0: (i % 9) as u32,
        host_id_1: (i % 8) as u32,
        process_id_1: (i % 12) as u32,
        pid_1: 4242,
        ip_0: ip(i),
        ip_1: ip(i + 1),
        client_port: (40000 + i % 20000) as u16,
        server_port: 443,
        protocol: 6,
        l7_protocol: if i % 2 == 0 { "http".into() } else { String::new() },
        close_type: ["fin", "client_reset", "server_reset", "open"][i % 4].into(),
        byte_tx: i as u64 * 100,
        packet_tx: i as u64,
        payload_byte_tx: i as u64 * 60,
        syn_tx: 1,
        fin_tx: 1,
        rst_tx: (i % 2) as u32,
        retrans_tx: (i % 5) as u32,
        zero_win_tx: 0,
        out_of_order_tx: (i % 7) as u32,
        byte_rx: u64::MAX - i as u64,
        packet_rx: i as u64 * 2,
        payload_byte_rx: i as u64 * 90,
        syn_rx: 0,
        fin_rx: 1,
        rst_rx: 0,
        retrans_rx: 3,
        zero_win_rx: 1,
        out_of_order_rx: 0,
        syn_ack: 1,
        rtt_server: if i % 3 == 0 { None } else { Some(i as u64 * 11) },
        rtt_client: Some(17),
        ..Default::default()
    }
}

pub fn app_row(i: usize, base_s: u32) -> AppMetricRow {
    let mut hist = BTreeMap::new();
    for k in 0..(i % 4) {
        *hist.entry(latency_bucket((k as u64 + 1) * 997 * i as u64)).or_insert(0) += k as u64 + 1;
    }
    AppMetricRow {
        time: base_s + i as u32,
        agent_id: 2,
        observation_point: "s-p".into(),
        region_id: 1,
        az_id: 2,
        host_id: 3,
        service_id: (i % 10) as u32,
        process_id: (i % 6) as u32,
        pid: 77,
        ip: ip(i),
        server_port: 8080,
        protocol: 6,
        l7_protocol: "http".into(),
        endpoint: format!("/e/{}", i % 8),
        request: i as u64 + 10,
        response: i as u64 + 9,
        client_error: (i % 3) as u64,
        server_error: (i % 2) as u64,
        timeout: (i % 5 == 0) as u64,
        rrt_sum: i as u64 * 1000,
        rrt_count: i as u64 + 9,
        rrt_max: i as u64 * 50,
        rrt_histogram: hist,
        ..Default::default()
    }
}

pub fn network_row(i: usize, base_s: u32) -> NetworkMetricRow {
    NetworkMetricRow {
        time: base_s + i as u32,
        agent_id: 2,
        observation_point: "s".into(),
        host_id: 3,
        process_id: (i % 6) as u32,
        ip: ip(i),
        server_port: 443,
        protocol: 6,
        byte_tx: i as u64 * 1500,
        byte_rx: i as u64 * 700,
        packet_tx: i as u64,
        packet_rx: i as u64 * 2,
        new_flow: (i % 4) as u64,
        closed_flow: (i % 3) as u64,
        syn: 4,
        syn_ack: 4,
        retrans_tx: 1,
        retrans_rx: 0,
        zero_win_tx: 0,
        zero_win_rx: 2,
        client_rst_flow: (i % 2) as u64,
        server_rst_flow: 0,
        rtt_sum: i as u64 * 33,
        rtt_count: 4,
        rtt_max: i as u64 * 12,
        rtt_client_sum: 99,
        rtt_client_count: 3,
        rtt_client_max: 50,
        ..Default::default()
    }
}

pub fn tag_row(i: usize) -> TagRow {
    TagRow {
        tag_type: ["host", "process", "pod", "region"][i % 4].into(),
        id: i as u32 + 1,
        // Blank lines and semicolons end inline INSERT data in chDB's client.
        name: if i % 7 == 0 { format!("name-{i}\n\n;\n") } else { format!("name-{i}-\u{4e2d}") },
    }
}
