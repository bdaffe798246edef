//! The memory goal through the whole `fathom-agent` binary
//! (router, shards, emitter, output): 100K concurrent HTTP flows replayed
//! from a pcap stay within 256 MiB RSS. A test binary of its own: reading
//! its 200K records makes the test process large, and a child spawned
//! meanwhile by another test would inherit that as its ru_maxrss.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use fathom_agent::packet::build::FrameBuilder;
use support::e2e::*;

/// The budget, KiB.
const RSS_BOUND_KIB: u64 = 256 * 1024;
const FLOWS: u32 = 100_000;

/// 100K HTTP keep-alive connections, all open at once: handshake and one
/// answered call each, one new connection every 100 us, none closed.
fn write_open_http_flows(path: &std::path::Path) -> u64 {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = pcap_file::pcap::PcapWriter::new(file).unwrap();
    let server = SocketAddr::from(([10, 98, 0, 1], 80));
    let start = Duration::from_secs(1_700_000_000);
    let mut frame = Vec::new();
    let mut n = 0u64;
    let req = b"GET /api/v1/items/42 HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    for i in 0..FLOWS {
        let ip = Ipv4Addr::new(10, 101 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
        let c = SocketAddr::from((ip, 1024 + (i % 60_000) as u16));
        let (cs, ss) = (i.wrapping_mul(7919), i.wrapping_mul(104_729));
        let (rq, rs) = (req.len() as u32, resp.len() as u32);
        let packets: [(FrameBuilder, &[u8]); 7] = [
            (FrameBuilder::tcp(c, server, cs, 0, SYN), b""),
            (FrameBuilder::tcp(server, c, ss, cs + 1, SYN | ACK), b""),
            (FrameBuilder::tcp(c, server, cs + 1, ss + 1, ACK), b""),
            (FrameBuilder::tcp(c, server, cs + 1, ss + 1, ACK | PSH), req),
            (FrameBuilder::tcp(server, c, ss + 1, cs + 1 + rq, ACK), b""),
            (FrameBuilder::tcp(server, c, ss + 1, cs + 1 + rq, ACK | PSH), resp),
            (FrameBuilder::tcp(c, server, cs + 1 + rq, ss + 1 + rs, ACK), b""),
        ];
        for (k, (fb, payload)) in packets.into_iter().enumerate() {
            fb.build_into(payload, &mut frame);
            let ts = start + Duration::from_micros(u64::from(i) * 100 + k as u64 * 10);
            let p = pcap_file::pcap::PcapPacket::new(ts, frame.len() as u32, &frame);
            w.write_packet(&p).unwrap();
            n += 1;
        }
    }
    w.into_writer().into_inner().unwrap().sync_all().unwrap();
    n
}

/// The memory goal through the whole pipeline (router, shards,
/// emitter, output): 100K concurrent HTTP flows within 256 MiB RSS.
#[test]
fn hundred_thousand_concurrent_http_flows_replayed() {
    let dir = TempDir::new("100k-http");
    let pcap = dir.join("open-http-flows.pcap");
    let packets = write_open_http_flows(&pcap);
    // Room for the shards' uneven shares of the 100K.
    let agent = Agent::replay(&pcap, &dir.0, &[("FATHOM_AGENT_FLOW__MAX_FLOWS", "150000")]);
    let mut hwm = 0;
    let mut active = 0;
    while !agent.exited() {
        if let Some(m) = agent.scrape() {
            active = active.max(m["fathom_agent_flows_active"]);
        }
        if let Ok(Some(v)) = std::panic::catch_unwind(|| Some(agent.vm_hwm_kib())) {
            hwm = hwm.max(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = agent.wait_exit(Duration::from_secs(60));
    assert!(st.status.success(), "replay exit {}:\n{}", st.status, st.stderr);
    assert!(st.stderr.contains(&format!("packets={packets}")), "{}", st.stderr);
    let peak = st.peak_rss_kib.max(hwm);
    println!("100K concurrent HTTP flows: max flows_active {active}, peak RSS {peak} KiB");
    let l7 = of_type(&st.records, "l7_log");
    assert_eq!(l7.len(), FLOWS as usize);
    assert!(l7.iter().all(|r| r["response_code"] == 200));
    let l4 = of_type(&st.records, "l4_flow");
    assert_eq!(l4.len(), FLOWS as usize);
    // Nothing was evicted: all were open together until the replay ended.
    let mut closes = std::collections::BTreeMap::new();
    for f in &l4 {
        *closes.entry(s(&f["close_type"]).to_string()).or_insert(0) += 1;
    }
    assert_eq!(closes, [("shutdown".to_string(), FLOWS)].into());
    assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB");
}
