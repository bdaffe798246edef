//! Out-of-order, retransmitted and lost segments.

mod flow_support;

use fathom_agent::flow::FlowConfig;
use fathom_agent::packet::tcp_flags::*;
use flow_support::*;

#[test]
fn out_of_order_and_retransmitted_segments_reassemble() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:80", 100, 900);
    c.handshake(&mut h, 0, 10, 20);
    let base = c.cseq;
    let (p1, rest) = GET.split_at(12);
    let (p2, p3) = rest.split_at(20);
    let s2 = base + p1.len() as u32;
    let s3 = s2 + p2.len() as u32;
    let f1 = c.raw(true, base, PSH | ACK, p1);
    let f3 = c.raw(true, s3, PSH | ACK, p3);
    let f2 = c.raw(true, s2, PSH | ACK, p2);
    let f1again = c.raw(true, base, PSH | ACK, p1);
    h.frame(&f1, 100);
    h.frame(&f3, 110);
    h.frame(&f2, 120);
    h.frame(&f1again, 130);
    c.cseq = s3 + p3.len() as u32;
    c.send(&mut h, false, OK, 500);
    c.close(&mut h, 600);
    h.tick(10_000_000);

    assert_eq!(h.sink.l7.len(), 1, "{:#?}", h.sink.l7);
    let l = &h.sink.l7[0];
    assert_eq!(l.call.request_resource, "/index.html");
    assert_eq!(l.call.request_domain, "example.com");
    assert_eq!(l.call.response_code, Some(200));
    assert!(!l.call.truncated);
    assert_eq!(l.req_tcp_seq, Some(base));
    let f = &h.sink.l4[0];
    assert_eq!(f.tx.out_of_order, 1);
    assert_eq!(f.tx.retransmissions, 1);
    assert_eq!(f.rx.out_of_order + f.rx.retransmissions, 0);
    assert_eq!(f.tx.packets, c.tx.packets);
    assert_eq!(f.tx.bytes, c.tx.bytes);
    // Payload bytes count what crossed the wire, the retransmission too.
    assert_eq!(f.tx.payload_bytes, (GET.len() + p1.len()) as u64);
    assert_eq!(h.engine.stats().reassembly_gaps, 0);
}

#[test]
fn a_hole_that_never_fills_is_skipped_after_the_timeout() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:80", 100, 900);
    c.handshake(&mut h, 0, 10, 20);
    let r1 = get("/a");
    let (p1, lost) = r1.split_at(10);
    let f = c.next(true, PSH | ACK, p1);
    h.frame(&f, 100);
    c.cseq += lost.len() as u32; // never sent
    let seq_b = c.cseq;
    let f = c.next(true, PSH | ACK, &get("/b"));
    h.frame(&f, 200);
    assert_eq!(h.engine.stats().reassembly_buffered_bytes, get("/b").len() as u64);
    assert!(h.sink.l7.is_empty());

    // Nothing fills the hole for longer than the reassembly timeout.
    h.tick(1_000_000);
    assert_eq!(h.engine.stats().reassembly_gaps, 0);
    h.tick(2_500_000);
    let s = h.engine.stats();
    assert_eq!((s.reassembly_gaps, s.reassembly_gap_bytes), (1, lost.len() as u64));
    assert_eq!(s.reassembly_buffered_bytes, 0);

    c.send(&mut h, false, OK, 2_600_000);
    c.send(&mut h, false, OK, 2_700_000);
    c.close(&mut h, 3_000_000);
    h.tick(10_000_000);
    let calls: Vec<_> = h
        .sink
        .l7
        .iter()
        .map(|l| (l.call.request_resource.as_str(), l.call.truncated, l.call.response_code))
        .collect();
    assert_eq!(calls, [("/a", true, Some(200)), ("/b", false, Some(200))], "{:#?}", h.sink.l7);
    let b = &h.sink.l7[1];
    assert_eq!(b.req_tcp_seq, Some(seq_b));
    assert_eq!(h.sink.l4[0].tx.out_of_order, 1);
}

#[test]
fn a_full_buffer_gives_up_the_hole() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:80", 100, 900);
    c.handshake(&mut h, 0, 10, 20);
    let lost = get("/1");
    c.cseq += lost.len() as u32;
    for i in 2..=20 {
        let f = c.next(true, PSH | ACK, &get(&format!("/{i}")));
        h.frame(&f, 100 + i);
    }
    let s = h.engine.stats();
    assert_eq!((s.reassembly_overflows, s.reassembly_gaps), (1, 1));
    assert_eq!(s.reassembly_gap_bytes, lost.len() as u64);
    for i in 2..=20 {
        c.send(&mut h, false, OK, 1000 + i);
    }
    let paths: Vec<_> = h.sink.l7.iter().map(|l| l.call.request_resource.clone()).collect();
    let want: Vec<_> = (2..=20).map(|i| format!("/{i}")).collect();
    assert_eq!(paths, want);
    h.engine.flush(&mut h.sink);
    // /2 .. /17 waited in the buffer, /18 forced the hole open.
    assert_eq!(h.sink.l4[0].tx.out_of_order, 17);
}

#[test]
fn snaplen_cut_segments_mark_the_message_truncated() {
    let mut h = Harness::new(FlowConfig::default());
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:80", 100, 900);
    c.handshake(&mut h, 0, 10, 20);
    c.send(&mut h, true, GET, 100);
    // A response whose body the capture cut: 100 of 1100 bytes kept.
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
    resp.resize(resp.len() + 1000, b'x');
    let f = c.next(false, PSH | ACK, &resp);
    let _ = h.engine.process_frame(
        fathom_agent::packet::LinkType::Ethernet,
        &f[..100],
        f.len() as u32,
        200,
        &mut h.sink,
    );
    c.send(&mut h, true, &get("/next"), 300);
    c.send(&mut h, false, OK, 400);
    let calls: Vec<_> = h
        .sink
        .l7
        .iter()
        .map(|l| (l.call.request_resource.as_str(), l.call.response_code))
        .collect();
    assert_eq!(calls, [("/index.html", Some(200)), ("/next", Some(200))]);
    h.engine.flush(&mut h.sink);
    assert_eq!(h.sink.l4[0].rx.payload_bytes, (resp.len() + OK.len()) as u64);
    assert_eq!(h.sink.l4[0].rx.bytes, c.rx.bytes);
}
