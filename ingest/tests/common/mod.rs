//! Shared test helpers: agent records, a sender pointed at a server, and
//! waiting with a deadline.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use fathom_agent::output::OutputRecord;
use fathom_agent::records::{CaptureSource, FlowTuple, L4Protocol, L7Fields, L7Log, ProcessRef};
use fathom_agent::sender::{Sender, SenderConfig};

/// Now, to the hour: records stay inside the store's retention.
pub fn now_us() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (s - s % 3600) * 1_000_000
}

/// An HTTP call whose `request_id` is `n`, so stored rows can be counted
/// one by one.
pub fn l7(n: u64) -> OutputRecord {
    OutputRecord::L7Log(L7Log {
        flow: FlowTuple {
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)),
            client_port: 40000 + (n % 20000) as u16,
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_port: 8080,
            protocol: L4Protocol::Tcp,
        },
        source: CaptureSource::Packet,
        observation_point: Default::default(),
        interface: Some("lo".into()),
        process: n.is_multiple_of(3).then(|| ProcessRef {
            pid: 42,
            tid: 42,
            name: format!("svc-{}", n % 7),
        }),
        start_time_us: now_us() + n * 1000,
        end_time_us: now_us() + n * 1000 + 250,
        latency_us: 250,
        call: L7Fields {
            l7_protocol: "http".into(),
            msg_type: "session".into(),
            version: "1.1".into(),
            request_type: "GET".into(),
            request_domain: "example.test".into(),
            request_resource: format!("/items/{n}"),
            endpoint: "/items/{id}".into(),
            request_id: Some(n),
            response_code: Some(200),
            response_status: "ok".into(),
            ..Default::default()
        },
        syscall_trace_id_request: None,
        syscall_trace_id_response: None,
        req_tcp_seq: Some(n as u32),
        resp_tcp_seq: None,
    })
}

pub fn sender_config(server: &str, spool: &Path) -> SenderConfig {
    SenderConfig {
        server: server.to_string(),
        agent_id: "test-agent".into(),
        spool_dir: spool.display().to_string(),
        batch_max_records: 500,
        batch_linger_ms: 20,
        request_timeout_ms: 5_000,
        max_backoff_ms: 200,
        ..SenderConfig::default()
    }
}

pub fn start_sender(server: &str, spool: &Path) -> Sender {
    Sender::start(sender_config(server, spool)).expect("sender starts")
}

/// Polls `f` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
