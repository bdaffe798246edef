//! A full HTTP/1.1 exchange over TCP: handshake, request, response, FIN.

mod flow_support;

use fathom_agent::flow::FlowConfig;
use fathom_agent::records::{CloseType, L4Protocol};
use flow_support::*;

#[test]
fn http_exchange_with_handshake_and_fin() {
    let mut h = Harness::new(FlowConfig { interface: Some("eth0".into()), ..Default::default() });
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:80", 1000, 5000);
    c.handshake(&mut h, 1_000_000, 1_000_100, 1_000_300);
    c.send(&mut h, true, GET, 1_001_000);
    c.send(&mut h, false, OK, 1_002_000);
    c.close(&mut h, 1_003_000);
    // The closed connection lingers so late packets still count.
    h.tick(1_003_200 + 1_999_999);
    assert!(h.sink.l4.is_empty());
    h.tick(1_003_200 + 2_000_000);

    assert_eq!(h.sink.l7.len(), 1, "{:#?}", h.sink.l7);
    let l = &h.sink.l7[0];
    assert_eq!(l.call.l7_protocol, "HTTP");
    assert_eq!(l.call.request_type, "GET");
    assert_eq!(l.call.request_resource, "/index.html");
    assert_eq!(l.call.request_domain, "example.com");
    assert_eq!(l.call.response_code, Some(200));
    assert_eq!(l.start_time_us, 1_001_000);
    assert_eq!(l.end_time_us, 1_002_000);
    assert_eq!(l.latency_us, 1000);
    assert_eq!(l.req_tcp_seq, Some(1001));
    assert_eq!(l.resp_tcp_seq, Some(5001));
    assert_eq!(l.interface.as_deref(), Some("eth0"));
    assert_eq!(l.flow.client_port, 40000);
    assert_eq!(l.flow.server_port, 80);
    assert_eq!(l.flow.protocol, L4Protocol::Tcp);

    assert_eq!(h.sink.l4.len(), 1);
    let f = &h.sink.l4[0];
    assert_eq!(f.close_type, CloseType::Fin);
    assert_eq!(f.tx, c.tx);
    assert_eq!(f.rx, c.rx);
    // SYN, ACK, request, ACK of the response, FIN, last ACK.
    assert_eq!(f.tx.packets, 6);
    // SYN-ACK, ACK of the request, response, FIN.
    assert_eq!(f.rx.packets, 4);
    assert_eq!(f.tx.payload_bytes, GET.len() as u64);
    assert_eq!(f.rx.payload_bytes, OK.len() as u64);
    assert_eq!((f.tx.syn, f.tx.fin, f.rx.fin, f.syn_ack), (1, 1, 1, 1));
    assert_eq!(f.rtt_server_us, Some(100));
    assert_eq!(f.rtt_client_us, Some(200));
    assert_eq!(f.start_time_us, 1_000_000);
    assert_eq!(f.end_time_us, 1_003_200);
    assert_eq!(f.duration_us, 3_200);
    assert_eq!(f.l7_protocol.as_deref(), Some("HTTP"));
    assert_eq!(f.tx.retransmissions + f.rx.retransmissions, 0);

    let s = h.engine.stats();
    assert_eq!(s.packets, 10);
    assert_eq!(s.flows_created, 1);
    assert_eq!(s.flows_closed, 1);
    assert_eq!(s.flows_active, 0);
    assert_eq!((s.l7_records, s.l4_records, s.l7_detected), (1, 1, 1));
    assert_eq!(s.bytes, c.tx.bytes + c.rx.bytes);
}

#[test]
fn keep_alive_and_pipelined_requests_pair_in_order() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40001", "10.0.0.2:8080", 7, u32::MAX - 10);
    c.handshake(&mut h, 10, 20, 30);
    let seq1 = c.cseq;
    c.send(&mut h, true, &get("/a"), 100);
    let rseq1 = c.sseq;
    c.send(&mut h, false, OK, 200);
    // Two pipelined requests in one segment, the responses in one.
    let seq2 = c.cseq;
    let two = [get("/b"), get("/c")].concat();
    c.send(&mut h, true, &two, 300);
    let rseq2 = c.sseq;
    c.send(&mut h, false, &[OK, OK].concat(), 400);
    let paths: Vec<_> = h.sink.l7.iter().map(|l| l.call.request_resource.as_str()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
    assert_eq!(h.sink.l7[0].req_tcp_seq, Some(seq1));
    assert_eq!(h.sink.l7[0].resp_tcp_seq, Some(rseq1));
    // The server's sequence numbers wrapped past 2^32 and still line up.
    assert!(rseq2 < rseq1);
    assert_eq!(h.sink.l7[1].req_tcp_seq, Some(seq2));
    assert_eq!(h.sink.l7[1].resp_tcp_seq, Some(rseq2));
    // The second pipelined request and response start where the first ended.
    assert_eq!(h.sink.l7[2].req_tcp_seq, Some(seq2 + get("/b").len() as u32));
    assert_eq!(h.sink.l7[2].resp_tcp_seq, Some(rseq2.wrapping_add(OK.len() as u32)));
    assert!(h.sink.l7.iter().all(|l| l.call.response_code == Some(200)));
}

#[test]
fn a_body_spanning_segments_does_not_shift_the_next_sequence_numbers() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40002", "10.0.0.2:80", 1, 1);
    c.handshake(&mut h, 10, 20, 30);
    c.send(&mut h, true, &get("/big"), 100);
    let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n".to_vec();
    big.resize(big.len() + 3000, b'z');
    for (i, part) in big.chunks(1000).enumerate() {
        c.send(&mut h, false, part, 200 + i as u64 * 20);
    }
    let req2 = c.cseq;
    c.send(&mut h, true, &get("/small"), 300);
    let resp2 = c.sseq;
    c.send(&mut h, false, OK, 400);
    let l = &h.sink.l7[1];
    assert_eq!(l.call.request_resource, "/small");
    assert_eq!((l.req_tcp_seq, l.resp_tcp_seq), (Some(req2), Some(resp2)));
    assert_eq!(h.sink.l7[0].call.response_length, Some(big.len() as u32));
}

#[test]
fn mid_flow_join_orients_by_port_and_protocol() {
    let mut h = Harness::new(FlowConfig::default());
    // Both ports ephemeral-looking, no handshake seen: the response comes first
    // from the higher port, which the port rule would call the client.
    let mut c = Conn::new("10.0.0.1:30000", "10.0.0.2:45000", 1, 1);
    // Server (45000) answers an earlier request, then the client asks again.
    let f = c.next(false, PSH | ACK, OK);
    h.frame(&f, 100);
    c.send(&mut h, true, &get("/x"), 200);
    c.send(&mut h, false, OK, 300);
    h.engine.flush(&mut h.sink);
    let l = h.sink.l7.iter().find(|l| l.call.request_resource == "/x").expect("a call");
    assert_eq!(l.flow.server_port, 45000);
    assert_eq!(l.flow.client_port, 30000);
    let f = &h.sink.l4[0];
    assert_eq!(f.flow.server_port, 45000);
    assert_eq!(f.tx, c.tx);
    assert_eq!(f.rx, c.rx);
    assert_eq!(f.close_type, CloseType::Shutdown);
}

use fathom_agent::packet::tcp_flags::*;
