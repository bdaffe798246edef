use super::*;
use crate::record::MessageType;
use crate::session::Session;

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    s.chunks(2).map(|c| u8::from_str_radix(core::str::from_utf8(c).unwrap(), 16).unwrap()).collect()
}

// Captured from dig 9.18 against dnsmasq (see tests/samples/dns-*).
const Q_A: &str = "e8c30120000100000000000103777777076578616d706c6503636f6d000001000100002904d000000000000c000a000825add015ad2e058e";
const R_A: &str = "e8c38180000100010000000103777777076578616d706c6503636f6d0000010001c00c000100010000025800045db8d82200002904d0000000000000";
const Q_AAAA: &str = "ecc10120000100000000000103777777076578616d706c6503636f6d00001c000100002904d000000000000c000a0008f1e7e69f279f22a4";
const R_AAAA: &str = "ecc18180000100010000000103777777076578616d706c6503636f6d00001c0001c00c001c000100000258001026062800022000010248189325c8194600002904d0000000000000";
const R_MX: &str = "09ba81800001000100000001076578616d706c6503636f6d00000f0001c00c000f0001000002580014000a046d61696c076578616d706c6503636f6d0000002904d0000000000000";
const R_TXT: &str = "681881800001000100000001076578616d706c6503636f6d0000100001c00c0010000100000258000c0b763d73706631202d616c6c00002904d0000000000000";
const R_NX: &str =
    "851981830001000000000001046e6f7065076578616d706c6503636f6d000001000100002904d0000000000000";
const R_SRV: &str = "c64581800001000100000001045f736970045f746370076578616d706c6503636f6d0000210001c00c00210001000002580017000a001413c403736970076578616d706c6503636f6d0000002904d0000000000000";
const R_CNAME: &str = "86ca8180000100020000000105616c696173076578616d706c6503636f6d0000010001c00c0005000100000258001103777777076578616d706c6503636f6d00c02f000100010000025800045db8d82200002904d0000000000000";
const TCP_Q_A: &str = "003802610120000100000000000103777777076578616d706c6503636f6d000001000100002904d000000000000c000a0008485e84c6a74051b6";
const TCP_R_A: &str = "004202618180000100010000000103777777076578616d706c6503636f6d0000010001c00c000100010000025800045db8d82200002904d0000000000006000f00020011";

fn parse_one(t: Transport, dir: Direction, bytes: &[u8]) -> (Progress, L7Record) {
    let mut p = DnsParser::new(t);
    let mut rec = L7Record::default();
    let pr = p.parse(dir, bytes, false, &mut rec);
    (pr, rec)
}

fn encode_name(out: &mut Vec<u8>, name: &str) {
    if name != "." {
        for l in name.split('.') {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
    }
    out.push(0);
}

/// A message with one question; `rest` is appended raw after it.
fn build(id: u16, flags: u16, counts: [u16; 3], qname: &str, qtype: u16, rest: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    for c in counts {
        m.extend_from_slice(&c.to_be_bytes());
    }
    encode_name(&mut m, qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(rest);
    m
}

fn rr(name_ptr: u16, rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0xc000 | name_ptr).to_be_bytes());
    v.extend_from_slice(&rtype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v.extend_from_slice(&ttl.to_be_bytes());
    v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    v.extend_from_slice(rdata);
    v
}

fn collect<P: L7Parser>(
    s: &mut Session<P>,
    dir: Direction,
    bytes: &[u8],
    missing: u64,
    out: &mut Vec<L7Record>,
) {
    s.feed(dir, bytes, missing, 1, &mut |ev| out.push(ev.record.clone()));
}

#[test]
fn udp_query_a() {
    let q = hex(Q_A);
    let (pr, rec) = parse_one(Transport::Udp, Direction::Request, &q);
    assert_eq!(pr, Progress::Message { consumed: q.len(), skip: 0 });
    assert_eq!(rec.protocol, L7Protocol::Dns);
    assert_eq!(rec.request_type, "A");
    assert_eq!(rec.request_resource, "www.example.com");
    assert_eq!(rec.request_domain, "www.example.com");
    assert_eq!(rec.endpoint, "www.example.com");
    assert_eq!(rec.request_id, Some(0xe8c3));
    assert_eq!(rec.request_length, Some(56));
    assert_eq!(rec.version, "");
    assert!(!rec.truncated);
}

#[test]
fn udp_response_a() {
    let r = hex(R_A);
    let (pr, rec) = parse_one(Transport::Udp, Direction::Response, &r);
    assert_eq!(pr, Progress::Message { consumed: r.len(), skip: 0 });
    assert_eq!(rec.request_type, "A");
    assert_eq!(rec.request_resource, "www.example.com");
    assert_eq!(rec.request_id, Some(0xe8c3));
    assert_eq!(rec.response_code, Some(0));
    assert_eq!(rec.response_status, ResponseStatus::Ok);
    assert_eq!(rec.response_exception, "");
    assert_eq!(rec.response_result, "93.184.216.34");
    assert_eq!(rec.response_length, Some(60));
    assert!(!rec.truncated);
}

#[test]
fn answers_of_each_type() {
    let cases = [
        (R_AAAA, "AAAA", "www.example.com", "2606:2800:220:1:248:1893:25c8:1946"),
        (R_MX, "MX", "example.com", "10 mail.example.com"),
        (R_TXT, "TXT", "example.com", "v=spf1 -all"),
        (R_SRV, "SRV", "_sip._tcp.example.com", "10 20 5060 sip.example.com"),
        (R_CNAME, "A", "alias.example.com", "www.example.com;93.184.216.34"),
    ];
    for (h, qtype, qname, result) in cases {
        let (pr, rec) = parse_one(Transport::Udp, Direction::Response, &hex(h));
        assert!(matches!(pr, Progress::Message { .. }), "{qtype}");
        assert_eq!(rec.request_type, qtype);
        assert_eq!(rec.request_resource, qname);
        assert_eq!(rec.response_result, result);
        assert_eq!(rec.response_status, ResponseStatus::Ok);
        assert!(!rec.truncated, "{qtype}");
    }
}

#[test]
fn cname_chain_with_compressed_targets() {
    // a.example.com CNAME b.example.com, b CNAME c.example.com, c A 10.0.0.1;
    // every target compressed against earlier names.
    let mut rest = Vec::new();
    // Question name at 12: 01 'a' 07 example 03 com 00 -> example.com at 14.
    let b = [&[1u8, b'b'][..], &[0xc0, 14]].concat();
    rest.extend(rr(12, 5, 60, &b));
    // The first rdata starts at 12+15+4+12 = 43: "b.example.com" at 43.
    let c = [&[1u8, b'c'][..], &[0xc0, 14]].concat();
    rest.extend(rr(43, 5, 60, &c));
    // Second rdata at 43+4+12 = 59: "c.example.com".
    rest.extend(rr(59, 1, 60, &[10, 0, 0, 1]));
    let m = build(7, 0x8180, [3, 0, 0], "a.example.com", 1, &rest);
    let (_, rec) = parse_one(Transport::Udp, Direction::Response, &m);
    assert_eq!(rec.response_result, "b.example.com;c.example.com;10.0.0.1");
    assert!(!rec.truncated);
}

#[test]
fn nxdomain_with_soa_in_authority() {
    let r = hex(R_NX);
    let (_, rec) = parse_one(Transport::Udp, Direction::Response, &r);
    assert_eq!(rec.response_code, Some(3));
    assert_eq!(rec.response_status, ResponseStatus::ClientError);
    assert_eq!(rec.response_exception, "NXDOMAIN");
    assert_eq!(rec.response_result, "");
    assert_eq!(rec.request_resource, "nope.example.com");

    // Built by hand, with the zone's SOA in the authority section.
    let mut soa = Vec::new();
    encode_name(&mut soa, "ns1.example.com");
    encode_name(&mut soa, "hostmaster.example.com");
    for v in [2024010101u32, 7200, 3600, 1209600, 300] {
        soa.extend_from_slice(&v.to_be_bytes());
    }
    let m = build(0x1234, 0x8183, [0, 1, 0], "missing.example.com", 28, &rr(20, 6, 300, &soa));
    let (pr, rec) = parse_one(Transport::Udp, Direction::Response, &m);
    assert_eq!(pr, Progress::Message { consumed: m.len(), skip: 0 });
    assert_eq!(rec.request_type, "AAAA");
    assert_eq!(rec.response_exception, "NXDOMAIN");
    assert_eq!(rec.response_result, "");
    assert!(!rec.truncated);
}

#[test]
fn rcode_statuses() {
    for (rcode, status, name) in [
        (1, ResponseStatus::ClientError, "FORMERR"),
        (2, ResponseStatus::ServerError, "SERVFAIL"),
        (4, ResponseStatus::ServerError, "NOTIMP"),
        (5, ResponseStatus::ClientError, "REFUSED"),
        (9, ResponseStatus::ClientError, "NOTAUTH"),
        (15, ResponseStatus::ClientError, "RCODE15"),
    ] {
        let m = build(1, 0x8180 | rcode, [0, 0, 0], "example.org", 1, &[]);
        let (_, rec) = parse_one(Transport::Udp, Direction::Response, &m);
        assert_eq!(rec.response_code, Some(i32::from(rcode)));
        assert_eq!(rec.response_status, status);
        assert_eq!(rec.response_exception, name);
    }
}

#[test]
fn edns_opt_extends_rcode() {
    // OPT in additional with extended rcode 1 -> BADVERS (16).
    let mut opt = vec![0u8];
    opt.extend_from_slice(&41u16.to_be_bytes());
    opt.extend_from_slice(&1232u16.to_be_bytes());
    opt.extend_from_slice(&0x0100_0000u32.to_be_bytes());
    opt.extend_from_slice(&0u16.to_be_bytes());
    let m = build(1, 0x8180, [0, 0, 1], "example.org", 1, &opt);
    let (_, rec) = parse_one(Transport::Udp, Direction::Response, &m);
    assert_eq!(rec.response_code, Some(16));
    assert_eq!(rec.response_exception, "BADVERS");
    assert_eq!(rec.response_status, ResponseStatus::ClientError);
    assert!(!rec.truncated);
}

#[test]
fn other_types_render_their_name() {
    let mut rest = rr(12, 257, 60, &[0, 5, b'i', b's', b's', b'u', b'e', b'x']);
    rest.extend(rr(12, 4000, 60, &[1, 2, 3]));
    let m = build(1, 0x8180, [2, 0, 0], "example.org", 255, &rest);
    let (_, rec) = parse_one(Transport::Udp, Direction::Response, &m);
    assert_eq!(rec.request_type, "ANY");
    assert_eq!(rec.response_result, "CAA;TYPE4000");
    let m = build(1, 0x0100, [0, 0, 0], "example.org", 4000, &[]);
    let (_, rec) = parse_one(Transport::Udp, Direction::Request, &m);
    assert_eq!(rec.request_type, "TYPE4000");
}

#[test]
fn root_and_escaped_names() {
    let m = build(1, 0x0100, [0, 0, 0], ".", 2, &[]);
    let (_, rec) = parse_one(Transport::Udp, Direction::Request, &m);
    assert_eq!(rec.request_resource, ".");
    assert_eq!(rec.request_type, "NS");
    assert_eq!(detect(&m, Transport::Udp), Some(Direction::Request));

    let mut m = build(1, 0x0100, [0, 0, 0], "x.example.org", 1, &[]);
    m[13] = b'.';
    let (_, rec) = parse_one(Transport::Udp, Direction::Request, &m);
    assert_eq!(rec.request_resource, "\\..example.org");
    m[13] = 0x07;
    let (_, rec) = parse_one(Transport::Udp, Direction::Request, &m);
    assert_eq!(rec.request_resource, "\\007.example.org");
}

#[test]
fn compression_loops_and_garbage() {
    // Question name is a pointer to itself, forward, into the header, or
    // uses a reserved label type: not DNS.
    let mut bad = Vec::new();
    for name in [&[0xc0u8, 12][..], &[0xc0, 14, 0], &[0xc0, 2], &[0x40, 1, 0], &[0x80, 0]] {
        let mut m = hex("abcd01000001000000000000");
        m.extend_from_slice(name);
        m.extend_from_slice(&[0, 1, 0, 1]);
        bad.push(m);
    }
    for m in &bad {
        let (pr, _) = parse_one(Transport::Udp, Direction::Request, m);
        assert_eq!(pr, Progress::Invalid, "{m:02x?}");
        assert_eq!(detect(m, Transport::Udp), None);
    }
    // Two answers pointing at each other (a loop): the question stays, the
    // answers are dropped.
    let mut rest = Vec::new();
    let answer1 = 12 + 13 + 4; // after "example.org" question
    rest.extend_from_slice(&[0xc0, (answer1 + 2) as u8]);
    rest.extend_from_slice(&[0xc0, answer1 as u8]);
    rest.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
    let m = build(1, 0x8180, [1, 0, 0], "example.org", 1, &rest);
    let (pr, rec) = parse_one(Transport::Udp, Direction::Response, &m);
    assert!(matches!(pr, Progress::Message { .. }));
    assert_eq!(rec.request_resource, "example.org");
    assert_eq!(rec.response_result, "");
    // CNAME rdata that loops back into itself.
    let rd_start = (12 + 13 + 4 + 12) as u8;
    let m =
        build(1, 0x8180, [1, 0, 0], "example.org", 5, &rr(12, 5, 60, &[1, b'x', 0xc0, rd_start]));
    let (_, rec) = parse_one(Transport::Udp, Direction::Response, &m);
    assert_eq!(rec.response_result, "");
    // A label length running past the end of the message.
    let mut m = hex("abcd01000001000000000000");
    m.extend_from_slice(&[60, b'a', b'b']);
    let (pr, rec) = parse_one(Transport::Udp, Direction::Request, &m);
    assert!(matches!(pr, Progress::Message { .. }));
    assert!(rec.truncated);
    assert_eq!(rec.request_resource, "");
    // Too short for a header.
    assert_eq!(parse_one(Transport::Udp, Direction::Request, &[1, 2, 3]).0, Progress::Invalid);
}

#[test]
fn long_names_are_bounded() {
    // 127 labels of one byte: 254 wire bytes, the longest legal name.
    let name = vec!["\u{1}"; 127].join(".");
    let m = build(1, 0x0100, [0, 0, 0], &name, 1, &[]);
    let (pr, rec) = parse_one(Transport::Udp, Direction::Request, &m);
    assert!(matches!(pr, Progress::Message { .. }));
    assert!(rec.request_resource.len() <= MAX_FIELD_LEN);
    assert!(rec.request_resource.starts_with("\\001.\\001"));
    // One more label: too long.
    let name = vec!["a"; 128].join(".");
    let m = build(1, 0x0100, [0, 0, 0], &name, 1, &[]);
    assert_eq!(parse_one(Transport::Udp, Direction::Request, &m).0, Progress::Invalid);
    // Many answers: the result stays bounded and whole answers only.
    let mut rest = Vec::new();
    for i in 0..200u8 {
        rest.extend(rr(12, 1, 60, &[10, 0, 0, i]));
    }
    let m = build(1, 0x8180, [200, 0, 0], "example.org", 1, &rest);
    let (_, rec) = parse_one(Transport::Udp, Direction::Response, &m);
    assert!(rec.response_result.len() <= MAX_FIELD_LEN);
    assert!(rec.response_result.starts_with("10.0.0.0;10.0.0.1;"));
    let last = rec.response_result.rsplit(';').next().unwrap();
    assert!(last.parse::<core::net::Ipv4Addr>().is_ok(), "{last}");
    assert!(!rec.truncated);
}

#[test]
fn udp_truncated_capture() {
    let r = hex(R_CNAME);
    for n in [12, 20, 40, 50, 64, r.len() - 1] {
        let n = n.min(r.len());
        let mut s = Session::new(DnsParser::new(Transport::Udp));
        let mut out = Vec::new();
        collect(&mut s, Direction::Response, &r[..n], (r.len() - n) as u64, &mut out);
        assert_eq!(out.len(), 1, "{n}");
        let rec = &out[0];
        assert!(rec.truncated, "{n}");
        assert_eq!(rec.request_id, Some(0x86ca));
        if n >= 12 + 19 + 4 {
            assert_eq!(rec.request_resource, "alias.example.com");
        }
        if n >= 64 {
            assert!(rec.response_result.starts_with("www.example.com"));
        }
        if n >= 80 {
            assert_eq!(rec.response_result, "www.example.com;93.184.216.34");
        }
    }
}

#[test]
fn tcp_truncated_capture() {
    // A 1100-byte TCP response, seen at 64, 256 and 1024 bytes.
    let mut rest = Vec::new();
    for i in 0..70u8 {
        rest.extend(rr(12, 1, 60, &[10, 0, 0, i]));
    }
    let m = build(9, 0x8180, [70, 0, 0], "big.example.org", 1, &rest);
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    for n in [64usize, 256, 1024] {
        let mut s = Session::new(DnsParser::new(Transport::Tcp));
        let mut out = Vec::new();
        let q = build(9, 0x0100, [0, 0, 0], "big.example.org", 1, &[]);
        let mut fq = (q.len() as u16).to_be_bytes().to_vec();
        fq.extend_from_slice(&q);
        collect(&mut s, Direction::Request, &fq, 0, &mut out);
        collect(&mut s, Direction::Response, &framed[..n], (framed.len() - n) as u64, &mut out);
        assert_eq!(out.len(), 1);
        let rec = &out[0];
        assert_eq!(rec.msg_type, MessageType::Session);
        assert!(rec.truncated);
        assert_eq!(rec.response_length, Some(framed.len() as u32));
        assert_eq!(rec.request_resource, "big.example.org");
        let answers = rec.response_result.split(';').count();
        assert!(answers >= (n - 40) / 16 - 1, "{n}: {answers}");
        // The next message on the stream parses again.
        let mut again = Vec::new();
        collect(&mut s, Direction::Request, &fq, 0, &mut again);
        collect(&mut s, Direction::Response, &framed, 0, &mut again);
        assert_eq!(again.len(), 1);
        assert!(!again[0].truncated);
        assert_eq!(again[0].response_result.split(';').count(), 70);
    }
    // A header cut inside the length prefix or header parses to nothing.
    let mut p = DnsParser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    assert_eq!(p.parse(Direction::Response, &framed[..1], true, &mut rec), Progress::NeedMore);
    assert_eq!(
        p.parse(Direction::Response, &framed[..8], true, &mut rec),
        Progress::Skipped { consumed: 8, skip: (framed.len() - 8) as u64 }
    );
    assert_eq!(p.parse(Direction::Response, &[0, 3, 1, 2, 3], false, &mut rec), Progress::Invalid);
}

fn run_tcp(chunks_req: &[&[u8]], chunks_resp: &[&[u8]]) -> Vec<L7Record> {
    let mut s = Session::new(DnsParser::new(Transport::Tcp));
    let mut out = Vec::new();
    for c in chunks_req {
        collect(&mut s, Direction::Request, c, 0, &mut out);
    }
    for c in chunks_resp {
        collect(&mut s, Direction::Response, c, 0, &mut out);
    }
    out
}

#[test]
fn tcp_framing_split_at_every_byte() {
    let q = hex(TCP_Q_A);
    let r = hex(TCP_R_A);
    let whole = run_tcp(&[&q], &[&r]);
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].msg_type, MessageType::Session);
    assert_eq!(whole[0].request_resource, "www.example.com");
    assert_eq!(whole[0].response_result, "93.184.216.34");
    assert_eq!(whole[0].request_length, Some(58));
    assert_eq!(whole[0].response_length, Some(68));
    assert!(!whole[0].truncated);
    for i in 1..q.len() {
        assert_eq!(run_tcp(&[&q[..i], &q[i..]], &[&r]), whole, "req split {i}");
    }
    for i in 1..r.len() {
        assert_eq!(run_tcp(&[&q], &[&r[..i], &r[i..]]), whole, "resp split {i}");
    }
    let bytes_q: Vec<&[u8]> = q.chunks(1).collect();
    let bytes_r: Vec<&[u8]> = r.chunks(1).collect();
    assert_eq!(run_tcp(&bytes_q, &bytes_r), whole);
}

#[test]
fn tcp_several_messages_in_one_segment() {
    let q = hex(TCP_Q_A);
    let r = hex(TCP_R_A);
    // Same query three times, with different ids.
    let mut qs = Vec::new();
    let mut rs = Vec::new();
    for id in [1u16, 2, 3] {
        let mut a = q.clone();
        a[2..4].copy_from_slice(&id.to_be_bytes());
        qs.extend_from_slice(&a);
        let mut b = r.clone();
        b[2..4].copy_from_slice(&id.to_be_bytes());
        rs.extend_from_slice(&b);
    }
    let out = run_tcp(&[&qs], &[&rs]);
    assert_eq!(out.len(), 3);
    let ids: Vec<_> = out.iter().map(|r| r.request_id).collect();
    assert_eq!(ids, vec![Some(1), Some(2), Some(3)]);
    assert!(out
        .iter()
        .all(|r| r.msg_type == MessageType::Session && r.response_result == "93.184.216.34"));
    for i in 1..rs.len() {
        assert_eq!(run_tcp(&[&qs], &[&rs[..i], &rs[i..]]), out, "split {i}");
    }
}

#[test]
fn a_and_aaaa_answered_out_of_order() {
    // UDP: glibc sends A and AAAA from one socket; the AAAA answer comes first.
    let mut s = Session::new(DnsParser::new(Transport::Udp));
    let mut out = Vec::new();
    collect(&mut s, Direction::Request, &hex(Q_A), 0, &mut out);
    collect(&mut s, Direction::Request, &hex(Q_AAAA), 0, &mut out);
    collect(&mut s, Direction::Response, &hex(R_AAAA), 0, &mut out);
    collect(&mut s, Direction::Response, &hex(R_A), 0, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].request_type, "AAAA");
    assert_eq!(out[0].request_id, Some(0xecc1));
    assert_eq!(out[0].response_result, "2606:2800:220:1:248:1893:25c8:1946");
    assert_eq!(out[1].request_type, "A");
    assert_eq!(out[1].response_result, "93.184.216.34");
    assert!(out.iter().all(|r| r.msg_type == MessageType::Session));
    assert_eq!(s.stats().orphan_responses, 0);

    // TCP: both queries in one segment, answers reversed in one segment.
    let frame = |m: &[u8]| {
        let mut v = (m.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        v
    };
    let qs = [frame(&hex(Q_A)), frame(&hex(Q_AAAA))].concat();
    let rs = [frame(&hex(R_AAAA)), frame(&hex(R_A))].concat();
    let out = run_tcp(&[&qs], &[&rs]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].request_type, "AAAA");
    assert_eq!(out[1].request_type, "A");
    assert!(out.iter().all(|r| r.msg_type == MessageType::Session));
}

#[test]
fn detect_samples_and_directions() {
    assert_eq!(detect(&hex(Q_A), Transport::Udp), Some(Direction::Request));
    assert_eq!(detect(&hex(R_A), Transport::Udp), Some(Direction::Response));
    for h in [R_AAAA, R_MX, R_TXT, R_NX, R_SRV, R_CNAME] {
        assert_eq!(detect(&hex(h), Transport::Udp), Some(Direction::Response), "{h}");
    }
    assert_eq!(detect(&hex(TCP_Q_A), Transport::Tcp), Some(Direction::Request));
    assert_eq!(detect(&hex(TCP_R_A), Transport::Tcp), Some(Direction::Response));
    // Framing must match the transport.
    assert_eq!(detect(&hex(TCP_Q_A), Transport::Udp), None);
    assert_eq!(detect(&hex(Q_A), Transport::Tcp), None);
    // Truncated to 64 bytes still detects (the question is early).
    let r = hex(R_CNAME);
    assert_eq!(detect(&r[..40], Transport::Udp), Some(Direction::Response));
    // Question cut: no.
    assert_eq!(detect(&r[..20], Transport::Udp), None);
}

#[test]
fn detect_rejects_other_protocols() {
    let others: &[&[u8]] = &[
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"PING\r\n",
        b"+OK\r\n",
        b"$5\r\nhello\r\n",
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        // MySQL greeting, COM_QUERY, OK packet.
        b"\x4a\x00\x00\x00\x0a5.7.44\x00\x08\x00\x00\x00abcdefgh\x00\xff\xf7\x08\x02\x00\xff\x81\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00ijklmnopqrst\x00mysql_native_password\x00",
        b"\x21\x00\x00\x00\x03select @@version_comment limit 1",
        b"\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00",
        // Kafka ApiVersions and Fetch requests.
        b"\x00\x00\x00\x14\x00\x12\x00\x03\x00\x00\x00\x01\x00\x0aclient-one\x00",
        b"\x00\x00\x00\x40\x00\x01\x00\x00\x00\x00\x00\x01\x00\x07client1\xff\xff\xff\xff\x00\x00\x01\xf4\x00\x00\x00\x01\x00\x00\x00\x01\x00\x05topic\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00",
        // Dubbo request header.
        b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10\x05\x32\x2e\x30\x2e\x32",
        &[0u8; 64],
        &[0xffu8; 64],
    ];
    for b in others {
        assert_eq!(detect(b, Transport::Udp), None, "{:?}", String::from_utf8_lossy(b));
        assert_eq!(detect(b, Transport::Tcp), None, "{:?}", String::from_utf8_lossy(b));
    }
}

/// A tiny deterministic generator for the robustness tests.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn never_panics_on_mutations_and_prefixes() {
    let seeds: Vec<Vec<u8>> =
        [Q_A, R_A, R_AAAA, R_MX, R_TXT, R_NX, R_SRV, R_CNAME].iter().map(|h| hex(h)).collect();
    let mut rng = Lcg(42);
    let mut rec = L7Record::default();
    for seed in &seeds {
        for t in [Transport::Udp, Transport::Tcp] {
            let mut framed = (seed.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(seed);
            let base = if t == Transport::Tcp { framed } else { seed.clone() };
            for n in 0..=base.len() {
                for at_end in [false, true] {
                    for dir in [Direction::Request, Direction::Response] {
                        let _ = DnsParser::new(t).parse(dir, &base[..n], at_end, &mut rec);
                    }
                }
                let _ = detect(&base[..n], t);
            }
            for _ in 0..3000 {
                let mut m = base.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % m.len();
                    m[i] = rng.next() as u8;
                }
                for dir in [Direction::Request, Direction::Response] {
                    let _ = DnsParser::new(t).parse(dir, &m, false, &mut rec);
                    assert!(rec.response_result.len() <= MAX_FIELD_LEN);
                }
                let _ = detect(&m, t);
            }
        }
    }
    for _ in 0..3000 {
        let len = (rng.next() % 80) as usize;
        let m: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        for t in [Transport::Udp, Transport::Tcp] {
            let _ = DnsParser::new(t).parse(Direction::Response, &m, true, &mut rec);
            let _ = detect(&m, t);
        }
    }
}

#[test]
fn no_allocation_growth_in_steady_state() {
    // The record's buffers are reused: capacities stop changing.
    let r = hex(R_CNAME);
    let mut p = DnsParser::new(Transport::Udp);
    let mut rec = L7Record::default();
    p.parse(Direction::Response, &r, false, &mut rec);
    let caps = (
        rec.request_resource.capacity(),
        rec.response_result.capacity(),
        rec.request_type.capacity(),
    );
    for _ in 0..100 {
        p.parse(Direction::Response, &r, false, &mut rec);
    }
    assert_eq!(
        caps,
        (
            rec.request_resource.capacity(),
            rec.response_result.capacity(),
            rec.request_type.capacity()
        )
    );
}

#[test]
#[ignore = "throughput check: cargo test --release -p fathom-protocols --lib dns::tests::throughput -- --ignored --nocapture"]
fn throughput() {
    let q = hex(Q_A);
    let r = hex(R_CNAME);
    let mut s = Session::new(DnsParser::new(Transport::Udp));
    let n = 2_000_000u64;
    let t = std::time::Instant::now();
    let mut calls = 0u64;
    for i in 0..n / 2 {
        s.feed(Direction::Request, &q, 0, i, &mut |_| {});
        s.feed(Direction::Response, &r, 0, i, &mut |_| calls += 1);
    }
    let el = t.elapsed();
    assert!(calls > 0);
    println!("dns: {:.2} M messages/s (session, UDP)", n as f64 / el.as_secs_f64() / 1e6);
    let mut p = DnsParser::new(Transport::Udp);
    let mut rec = L7Record::default();
    let t = std::time::Instant::now();
    for _ in 0..n / 2 {
        p.parse(Direction::Request, &q, false, &mut rec);
        p.parse(Direction::Response, &r, false, &mut rec);
    }
    let el = t.elapsed();
    println!("dns: {:.2} M messages/s (parser only)", n as f64 / el.as_secs_f64() / 1e6);
}
