//! How flows end: resets, timeouts, periodic records, shutdown, DNS, and
//! requests that never get an answer.

mod flow_support;

use fathom_agent::flow::FlowConfig;
use fathom_agent::packet::build::FrameBuilder;
use fathom_agent::packet::tcp_flags::*;
use fathom_agent::records::{CloseType, L4Protocol};
use flow_support::*;

const S: u64 = 1_000_000;

#[test]
fn refused_connection_is_a_server_reset() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:81", 1, 1);
    let f = c.next(true, SYN, b"");
    h.frame(&f, 100);
    let f = c.raw(false, 0, RST | ACK, b"");
    h.frame(&f, 150);
    // A second RST within the linger still belongs to the connection.
    let f = c.raw(false, 0, RST, b"");
    h.frame(&f, 160);
    assert!(h.sink.l4.is_empty());
    h.tick(3 * S);
    assert_eq!(h.sink.l4.len(), 1);
    let r = &h.sink.l4[0];
    assert_eq!(r.close_type, CloseType::ServerReset);
    assert_eq!((r.tx.syn, r.rx.rst, r.syn_ack), (1, 2, 0));
    assert_eq!(r.rx, c.rx);
    assert_eq!(r.rtt_server_us, None);
    // Later, a stray RST for the gone flow creates nothing.
    let f = c.raw(false, 0, RST, b"");
    h.frame(&f, 4 * S);
    assert_eq!(h.engine.stats().untracked_packets, 1);
    assert!(h.engine.is_empty());
}

#[test]
fn client_reset_mid_connection() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:80", 1, 1);
    c.handshake(&mut h, 0, 10, 20);
    c.send(&mut h, true, GET, 100);
    let f = c.next(true, RST | ACK, b"");
    h.frame(&f, 200);
    // A new connection on the same 5-tuple ends the lingering one at once.
    let mut c2 = Conn::new("10.0.0.1:40000", "10.0.0.2:80", 77, 1);
    let f = c2.next(true, SYN, b"");
    h.frame(&f, 300);
    assert_eq!(h.engine.len(), 1);
    let r = &h.sink.l4[0];
    assert_eq!(r.close_type, CloseType::ClientReset);
    assert_eq!(r.tx, c.tx);
    // The request never answered is reported when the flow ends.
    assert_eq!(h.sink.l7.len(), 1);
    assert_eq!(h.sink.l7[0].call.response_status, "timeout");
}

#[test]
fn unanswered_syn_is_a_handshake_timeout() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:80", 1, 1);
    let f = c.next(true, SYN, b"");
    h.frame(&f, S);
    // Retransmitted SYN one second later.
    let f = c.raw(true, 1, SYN, b"");
    h.frame(&f, 2 * S);
    h.tick(6 * S);
    assert!(h.sink.l4.is_empty());
    h.tick(7 * S);
    let r = &h.sink.l4[0];
    assert_eq!(r.close_type, CloseType::HandshakeTimeout);
    assert_eq!((r.tx.syn, r.tx.retransmissions, r.tx.packets), (2, 1, 2));
}

#[test]
fn idle_flow_times_out_and_long_flow_reports_every_minute() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:6379", 1, 1);
    c.handshake(&mut h, S, S + 10, S + 20);
    c.send(&mut h, true, b"*1\r\n$4\r\nPING\r\n", 30 * S);
    c.send(&mut h, false, b"+PONG\r\n", 30 * S + 50);
    h.tick(60 * S);
    assert!(h.sink.l4.is_empty());
    h.tick(61 * S);
    assert_eq!(h.sink.l4.len(), 1);
    let first = h.sink.l4[0].clone();
    assert_eq!(first.close_type, CloseType::Open);
    c.send(&mut h, true, b"*1\r\n$4\r\nPING\r\n", 90 * S);
    c.send(&mut h, false, b"+PONG\r\n", 90 * S + 50);
    h.tick(389 * S);
    assert_eq!(h.sink.l4.len(), 2, "one more periodic record");
    h.tick(391 * S);
    assert_eq!(h.sink.l4.len(), 3);
    let last = &h.sink.l4[2];
    assert_eq!(last.close_type, CloseType::Idle);
    // Records carry what happened since the previous one; together, everything.
    let sum = |f: fn(&fathom_agent::records::L4Flow) -> u64| h.sink.l4.iter().map(f).sum::<u64>();
    assert_eq!(sum(|r| r.tx.packets), c.tx.packets);
    assert_eq!(sum(|r| r.rx.bytes), c.rx.bytes);
    assert_eq!(first.rtt_client_us, Some(10));
    assert_eq!(h.sink.l7.len(), 2);
    assert!(h.sink.l7.iter().all(|l| l.call.l7_protocol == "Redis"));
}

#[test]
fn unanswered_request_times_out_after_tick() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:80", 1, 1);
    c.handshake(&mut h, 0, 10, 20);
    let seq = c.cseq;
    c.send(&mut h, true, GET, S);
    h.tick(10 * S);
    assert!(h.sink.l7.is_empty());
    h.tick(11 * S + 1);
    assert_eq!(h.sink.l7.len(), 1);
    let l = &h.sink.l7[0];
    assert_eq!(l.call.response_status, "timeout");
    assert_eq!(l.call.request_resource, "/index.html");
    assert_eq!(l.start_time_us, S);
    assert_eq!(l.latency_us, 0);
    assert_eq!(l.req_tcp_seq, Some(seq));
    assert_eq!(h.engine.stats().l7_timeouts, 1);
    c.close(&mut h, 12 * S);
    h.tick(15 * S);
    assert_eq!(h.sink.l7.len(), 1, "reported once");
    assert_eq!(h.sink.l4[0].close_type, CloseType::Fin);
}

#[test]
fn shutdown_flushes_everything() {
    let mut h = Harness::new(FlowConfig::default());
    for port in 0..5u16 {
        let mut c = Conn::new(&format!("10.0.0.1:{}", 40000 + port), "10.0.0.2:80", 1, 1);
        c.handshake(&mut h, 0, 10, 20);
        c.send(&mut h, true, GET, 100);
    }
    h.engine.flush(&mut h.sink);
    assert_eq!(h.sink.l4.len(), 5);
    assert!(h.sink.l4.iter().all(|r| r.close_type == CloseType::Shutdown));
    assert_eq!(h.sink.l7.len(), 5);
    assert!(h.engine.is_empty());
}

fn dns_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    q
}

fn dns_answer(id: u16, rcode: u8) -> Vec<u8> {
    let mut a = id.to_be_bytes().to_vec();
    a.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, u8::from(rcode == 0), 0, 0, 0, 0]);
    a.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    if rcode == 0 {
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 93, 184, 216, 34]);
    }
    a
}

#[test]
fn dns_query_and_answer_over_udp() {
    let mut h = Harness::new(FlowConfig::default());
    let (cl, sv) = (sa("10.0.0.1:53001"), sa("10.0.0.53:53"));
    let q = FrameBuilder::udp(cl, sv).build(&dns_query(0x1234));
    let a = FrameBuilder::udp(sv, cl).build(&dns_answer(0x1234, 0));
    h.frame(&q, 1000);
    h.frame(&a, 1800);
    assert_eq!(h.sink.l7.len(), 1);
    let l = &h.sink.l7[0];
    assert_eq!(l.call.l7_protocol, "DNS");
    assert_eq!(l.call.request_domain, "example.com");
    assert_eq!(l.call.request_type, "A");
    assert_eq!(l.call.request_id, Some(0x1234));
    assert_eq!(l.latency_us, 800);
    assert_eq!(l.flow.server_port, 53);
    assert_eq!(l.flow.protocol, L4Protocol::Udp);
    assert!(l.call.response_result.contains("93.184.216.34"), "{}", l.call.response_result);
    assert_eq!(l.req_tcp_seq, None);
    // Answered: the flow is over.
    assert_eq!(h.sink.l4.len(), 1);
    let r = &h.sink.l4[0];
    assert_eq!(r.close_type, CloseType::Fin);
    assert_eq!((r.tx.packets, r.rx.packets), (1, 1));
    assert_eq!((r.tx.bytes, r.rx.bytes), (q.len() as u64, a.len() as u64));
    assert!(h.engine.is_empty());
}

#[test]
fn dns_nxdomain_and_unanswered_query() {
    let mut h = Harness::new(FlowConfig::default());
    let (cl, sv) = (sa("10.0.0.1:53002"), sa("10.0.0.53:53"));
    h.frame(&FrameBuilder::udp(cl, sv).build(&dns_query(7)), 0);
    h.frame(&FrameBuilder::udp(sv, cl).build(&dns_answer(7, 3)), 500);
    assert_eq!(h.sink.l7[0].call.response_code, Some(3));
    let cl2 = sa("10.0.0.1:53003");
    h.frame(&FrameBuilder::udp(cl2, sv).build(&dns_query(8)), S);
    h.tick(12 * S);
    assert_eq!(h.sink.l7.len(), 2);
    assert_eq!(h.sink.l7[1].call.response_status, "timeout");
    h.tick(40 * S);
    assert_eq!(h.sink.l4.len(), 2);
    assert_eq!(h.sink.l4[1].close_type, CloseType::Idle);
}
