//! The bench's batch: 8192 HTTP calls as an eBPF agent sends them.

use fathom_proto::{Compression, L7Log, ProcessRef, RecordBatch, Records};
use prost::Message;

pub const BATCH: usize = 8192;

pub fn batch() -> RecordBatch {
    let recs = Records {
        l7: (0..BATCH as u64)
            .map(|n| L7Log {
                client_ip: vec![10, 1, (n >> 8) as u8, n as u8],
                client_port: 30000 + (n % 30000) as u32,
                server_ip: vec![10, 2, 0, (n % 50) as u8],
                server_port: 8080,
                ip_protocol: 6,
                source: 1,
                interface: "eth0".into(),
                process: Some(ProcessRef {
                    pid: 1000 + (n % 64) as u32,
                    tid: 1000,
                    name: format!("service-{:08}", n % 5000),
                    side: 2,
                }),
                start_time_us: 1_764_000_000_000_000 + n * 37,
                end_time_us: 1_764_000_000_000_000 + n * 37 + 1200,
                latency_us: 1200,
                l7_protocol: "http".into(),
                msg_type: "session".into(),
                version: "1.1".into(),
                request_type: "GET".into(),
                request_domain: "api.example.internal".into(),
                request_resource: format!("/v1/orders/{}", n % 997),
                endpoint: "/v1/orders/{id}".into(),
                request_id: None,
                response_code: Some(200),
                response_status: "ok".into(),
                request_length: Some(320),
                response_length: Some(2048),
                trace_id: format!("{:032x}", n * 7919),
                span_id: format!("{:016x}", n),
                req_tcp_seq: Some(n as u32),
                resp_tcp_seq: Some(!(n as u32)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let raw = recs.encode_to_vec();
    RecordBatch {
        agent_id: "agent-1".into(),
        batch_id: 1,
        compression: Compression::Zstd as i32,
        payload: zstd::bulk::compress(&raw, 3).unwrap(),
        uncompressed_size: raw.len() as u64,
        counts: Some(recs.counts()),
        host: "node-1".into(),
        host_ips: vec![vec![10, 2, 0, 1]],
    }
}
