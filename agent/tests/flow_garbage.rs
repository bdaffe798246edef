//! Garbage, truncated and mutated frames: no panic, errors counted.

mod flow_support;

use fathom_agent::flow::{FlowConfig, FlowEngine, VecSink};
use fathom_agent::packet::build::FrameBuilder;
use fathom_agent::packet::tcp_flags::*;
use fathom_agent::packet::LinkType;
use flow_support::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_and_truncated_frames() {
    let mut e = FlowEngine::new(FlowConfig { capacity: 1000, ..Default::default() });
    let mut sink = VecSink::default();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    // Pure noise.
    for _ in 0..20_000 {
        let n = (rng.next() % 200) as usize;
        let f: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let _ = e.process_frame(LinkType::Ethernet, &f, n as u32, 0, &mut sink);
        let _ = e.process_frame(LinkType::RawIp, &f, n as u32, 0, &mut sink);
    }
    let noise_errors = e.stats().decode_errors;
    assert!(noise_errors > 30_000, "{noise_errors}");

    // Every prefix of real frames.
    let c = sa("10.0.0.1:40000");
    let s = sa("10.0.0.2:80");
    let frames = [
        FrameBuilder::tcp(c, s, 1, 0, SYN).build(b""),
        FrameBuilder::tcp(c, s, 2, 1, ACK | PSH).build(GET),
        FrameBuilder::tcp(s, c, 1, 2, ACK | PSH).build(OK),
        FrameBuilder::udp(sa("[fd00::1]:5000"), sa("[fd00::2]:53")).build(b"\x00\x01\x01\x00"),
    ];
    let before = e.stats().decode_errors;
    let mut truncated_headers = 0;
    for f in &frames {
        for cut in 0..f.len() {
            if e.process_frame(LinkType::Ethernet, &f[..cut], f.len() as u32, 1, &mut sink).is_err()
            {
                truncated_headers += 1;
            }
        }
    }
    assert_eq!(e.stats().decode_errors - before, truncated_headers);
    assert!(truncated_headers > 100);

    // Mutated conversations: flags, sequence numbers, payload bytes.
    for round in 0..2000u64 {
        for f in &frames {
            let mut m = f.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % m.len();
                m[i] = rng.next() as u8;
            }
            let _ =
                e.process_frame(LinkType::Ethernet, &m, m.len() as u32, round * 1000, &mut sink);
        }
        if round % 100 == 0 {
            e.tick(round * 1000, &mut sink);
        }
    }
    e.flush(&mut sink);
    let st = e.stats();
    assert_eq!(st.flows_active, 0);
    assert!(st.flows_created <= st.flows_closed + st.flows_evicted);
    assert_eq!(st.l4_records, sink.l4.len() as u64);
    assert_eq!(st.l7_records, sink.l7.len() as u64);
    assert_eq!(st.reassembly_buffered_bytes, 0);
}

#[test]
fn port_scan_of_syns() {
    let mut e = FlowEngine::new(FlowConfig { capacity: 5000, ..Default::default() });
    let mut sink = VecSink::default();
    let c = sa("10.0.0.1:55555");
    for port in 1..=65535u16 {
        let f =
            FrameBuilder::tcp(c, std::net::SocketAddr::new(sa("10.0.0.2:1").ip(), port), 7, 0, SYN)
                .build(b"");
        let _ = e.process_frame(LinkType::Ethernet, &f, f.len() as u32, u64::from(port), &mut sink);
    }
    assert_eq!(e.len(), 5000);
    e.tick(10_000_000, &mut sink);
    assert_eq!(e.len(), 0);
    let st = e.stats();
    assert_eq!(st.flows_evicted, 65535 - 5000);
    assert_eq!(sink.l4.len(), 65535);
    assert!(sink.l4[65535 - 5000..]
        .iter()
        .all(|r| r.close_type == fathom_agent::records::CloseType::HandshakeTimeout));
}
