//! Tests: HPACK against RFC 7541 Appendix C, framing, gRPC, pairing
//! through a Session, byte-at-a-time feeding, truncated captures, garbage.

use super::hpack::{self, Decoder, HpackError};
use super::huffman;
use super::*;
use crate::record::MessageType;
use crate::session::Session;

// ---------------------------------------------------------------------------
// A tiny HPACK encoder and frame builder, for tests only.

#[derive(Default)]
struct Enc {
    out: Vec<u8>,
}

fn put_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &[u8], huff: bool) {
    if huff {
        let mut h = Vec::new();
        huffman::encode(s, &mut h);
        put_int(out, 0x80, 7, h.len());
        out.extend_from_slice(&h);
    } else {
        put_int(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}

impl Enc {
    fn new() -> Self {
        Self::default()
    }
    /// Indexed field.
    fn idx(mut self, i: usize) -> Self {
        put_int(&mut self.out, 0x80, 7, i);
        self
    }
    /// Literal with incremental indexing, indexed name.
    fn inc(mut self, name_idx: usize, v: &str, huff: bool) -> Self {
        put_int(&mut self.out, 0x40, 6, name_idx);
        put_str(&mut self.out, v.as_bytes(), huff);
        self
    }
    /// Literal with incremental indexing, new name.
    fn inc_new(mut self, n: &str, v: &str, huff: bool) -> Self {
        self.out.push(0x40);
        put_str(&mut self.out, n.as_bytes(), huff);
        put_str(&mut self.out, v.as_bytes(), huff);
        self
    }
    /// Literal without indexing, indexed name.
    fn lit(mut self, name_idx: usize, v: &str, huff: bool) -> Self {
        put_int(&mut self.out, 0x00, 4, name_idx);
        put_str(&mut self.out, v.as_bytes(), huff);
        self
    }
    /// Literal never indexed, new name.
    fn never_new(mut self, n: &str, v: &str, huff: bool) -> Self {
        self.out.push(0x10);
        put_str(&mut self.out, n.as_bytes(), huff);
        put_str(&mut self.out, v.as_bytes(), huff);
        self
    }
    fn size_update(mut self, n: usize) -> Self {
        put_int(&mut self.out, 0x20, 5, n);
        self
    }
    fn done(self) -> Vec<u8> {
        self.out
    }
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for &(id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, FLAG_ACK, 0, &[])
}

fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
}

fn headers(stream: u32, end_stream: bool, block: &[u8]) -> Vec<u8> {
    let flags = FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, block)
}

fn data(stream: u32, end_stream: bool, body: &[u8]) -> Vec<u8> {
    frame(DATA, if end_stream { FLAG_END_STREAM } else { 0 }, stream, body)
}

fn grpc_msg(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------
// Realistic exchanges: a list of writes, each (direction, bytes).

type Writes = Vec<(Direction, Vec<u8>)>;
use Direction::{Request as Req, Response as Resp};

fn curl_preface() -> Vec<u8> {
    cat(&[
        PREFACE,
        &settings(&[(3, 100), (4, 10 * 1024 * 1024), (2, 0)]),
        &window_update(0, 1_048_510_465),
    ])
}

fn curl_request_headers() -> Vec<u8> {
    let block = Enc::new()
        .idx(2)
        .idx(4)
        .idx(6)
        .inc(1, "localhost:8080", true)
        .inc(58, "curl/8.5.0", true)
        .inc(19, "*/*", true)
        .done();
    headers(1, true, &block)
}

fn server_settings() -> Vec<u8> {
    cat(&[
        &settings(&[(5, 1 << 20), (3, 250), (6, 1_048_896), (4, 1 << 20)]),
        &window_update(0, 983_041),
    ])
}

fn server_response_headers() -> Vec<u8> {
    let block = Enc::new()
        .idx(8)
        .inc(31, "text/plain; charset=utf-8", true)
        .inc(28, "13", true)
        .inc(33, "Sun, 29 Nov 2026 23:40:00 GMT", true)
        .done();
    headers(1, false, &block)
}

fn curl_exchange() -> Writes {
    vec![
        (Req, curl_preface()),
        (Req, curl_request_headers()),
        (Resp, server_settings()),
        (Resp, settings_ack()),
        (Req, settings_ack()),
        (Resp, cat(&[&server_response_headers(), &data(1, true, b"Hello, world\n")])),
    ]
}

fn grpc_request(stream: u32, first: bool, method: &str) -> Vec<u8> {
    let path = format!("/helloworld.Greeter/{method}");
    let block = if first {
        Enc::new()
            .idx(3)
            .idx(6)
            .lit(4, &path, true)
            .inc(1, "127.0.0.1:50051", true)
            .inc(31, "application/grpc", true)
            .inc_new("te", "trailers", false)
            .inc(58, "grpc-go/1.60.0", true)
            .inc_new(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                false,
            )
            .done()
    } else {
        // Reuses the dynamic table: authority, content-type, te,
        // user-agent, traceparent.
        Enc::new().idx(3).idx(6).lit(4, &path, true).idx(66).idx(65).idx(64).idx(63).idx(62).done()
    };
    cat(&[&headers(stream, false, &block), &data(stream, true, &grpc_msg(b"\x0a\x05world"))])
}

/// Server: headers, one message, trailers with `status` (all in one write).
fn grpc_response(stream: u32, first: bool, status: u32, message: &str) -> Vec<u8> {
    let head = if first {
        Enc::new().idx(8).inc(31, "application/grpc", true).done()
    } else {
        Enc::new().idx(8).idx(62).done()
    };
    let mut trailers = Vec::new();
    put_int(&mut trailers, 0x00, 4, 0);
    put_str(&mut trailers, b"grpc-status", true);
    put_str(&mut trailers, status.to_string().as_bytes(), false);
    if !message.is_empty() {
        trailers.push(0x00);
        put_str(&mut trailers, b"grpc-message", false);
        put_str(&mut trailers, message.as_bytes(), true);
    }
    let body = if status == 0 { grpc_msg(b"\x0a\x0bHello world") } else { Vec::new() };
    let mut w = headers(stream, false, &head);
    if !body.is_empty() {
        w.extend(data(stream, false, &body));
    }
    w.extend(headers(stream, true, &trailers));
    w
}

fn grpc_exchange() -> Writes {
    vec![
        (Req, curl_preface()),
        (Resp, server_settings()),
        (Req, grpc_request(1, true, "SayHello")),
        (Resp, grpc_response(1, true, 0, "")),
        (Req, grpc_request(3, false, "Lookup")),
        (Resp, grpc_response(3, false, 5, "no such name")),
    ]
}

// ---------------------------------------------------------------------------
// Running writes through a Session.

fn run(writes: &Writes, chunk: usize, cut: Option<usize>) -> Vec<L7Record> {
    let mut s = Session::new(Http2Parser::new(Transport::Tcp));
    let mut out = Vec::new();
    for (i, (dir, w)) in writes.iter().enumerate() {
        let keep = cut.map_or(w.len(), |n| n.min(w.len()));
        let missing = (w.len() - keep) as u64;
        let kept = &w[..keep];
        let pieces: Vec<&[u8]> = if chunk == 0 { vec![kept] } else { kept.chunks(chunk).collect() };
        let last = pieces.len().saturating_sub(1);
        for (j, p) in pieces.iter().enumerate() {
            let m = if j == last { missing } else { 0 };
            s.feed(*dir, p, m, i as u64 * 10 + 1, &mut |ev| out.push(ev.record.clone()));
        }
    }
    s.close(&mut |ev| out.push(ev.record.clone()));
    out
}

fn parse_one(dir: Direction, bytes: &[u8]) -> (Progress, L7Record) {
    let mut p = Http2Parser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    let pr = p.parse(dir, bytes, false, &mut rec);
    (pr, rec)
}

// ---------------------------------------------------------------------------
// HPACK.

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
}

fn decode_all(d: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
    let mut v = Vec::new();
    d.decode(block, |n, val| {
        v.push((String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(val).into_owned()))
    })
    .unwrap();
    v
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn table(d: &Decoder) -> (Vec<(String, String)>, usize) {
    let (e, size) = d.dump();
    let e = e
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    (e, size)
}

#[test]
fn hpack_integers_rfc_c1() {
    let mut p = 0;
    assert_eq!(hpack::read_int(&[0b1110_1010], &mut p, 5), Ok(10));
    let mut p = 0;
    assert_eq!(hpack::read_int(&[0b0001_1111, 0b1001_1010, 0b0000_1010], &mut p, 5), Ok(1337));
    assert_eq!(p, 3);
    let mut p = 0;
    assert_eq!(hpack::read_int(&[42], &mut p, 8), Ok(42));
    let mut p = 0;
    assert_eq!(hpack::read_int(&[0x1f, 0x80], &mut p, 5), Err(HpackError::Incomplete));
    let mut p = 0;
    assert_eq!(
        hpack::read_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut p, 5),
        Err(HpackError::Invalid)
    );
}

fn check_requests(blocks: [&str; 3]) {
    let mut d = Decoder::new();
    assert_eq!(
        decode_all(&mut d, &hex(blocks[0])),
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com")
        ])
    );
    assert_eq!(table(&d), (pairs(&[(":authority", "www.example.com")]), 57));
    assert_eq!(
        decode_all(&mut d, &hex(blocks[1])),
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ])
    );
    assert_eq!(
        table(&d),
        (pairs(&[("cache-control", "no-cache"), (":authority", "www.example.com")]), 110)
    );
    assert_eq!(
        decode_all(&mut d, &hex(blocks[2])),
        pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ])
    );
    assert_eq!(
        table(&d),
        (
            pairs(&[
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache"),
                (":authority", "www.example.com"),
            ]),
            164
        )
    );
}

#[test]
fn hpack_rfc_c3_requests_plain() {
    check_requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn hpack_rfc_c4_requests_huffman() {
    check_requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

fn check_responses(blocks: [&str; 3]) {
    let mut d = Decoder::new();
    // SETTINGS_HEADER_TABLE_SIZE = 256 for these examples.
    d.settings_limit(256);
    assert_eq!(d.max_size(), 256);
    let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    let loc = "https://www.example.com";
    assert_eq!(
        decode_all(&mut d, &hex(blocks[0])),
        pairs(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", date1),
            ("location", loc)
        ])
    );
    assert_eq!(
        table(&d),
        (
            pairs(&[
                ("location", loc),
                ("date", date1),
                ("cache-control", "private"),
                (":status", "302"),
            ]),
            222
        )
    );
    assert_eq!(
        decode_all(&mut d, &hex(blocks[1])),
        pairs(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", date1),
            ("location", loc)
        ])
    );
    assert_eq!(
        table(&d),
        (
            pairs(&[
                (":status", "307"),
                ("location", loc),
                ("date", date1),
                ("cache-control", "private"),
            ]),
            222
        )
    );
    let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
    let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
    assert_eq!(
        decode_all(&mut d, &hex(blocks[2])),
        pairs(&[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", date2),
            ("location", loc),
            ("content-encoding", "gzip"),
            ("set-cookie", cookie),
        ])
    );
    assert_eq!(
        table(&d),
        (pairs(&[("set-cookie", cookie), ("content-encoding", "gzip"), ("date", date2)]), 215)
    );
}

#[test]
fn hpack_rfc_c5_responses_plain() {
    check_responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ]);
}

#[test]
fn hpack_rfc_c6_responses_huffman() {
    check_responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn hpack_size_update_and_oversized_entry() {
    let mut d = Decoder::new();
    decode_all(&mut d, &Enc::new().inc_new("a", "1", false).inc_new("b", "2", false).done());
    assert_eq!(table(&d).1, 68);
    // Shrink to 40: only the newest entry fits.
    decode_all(&mut d, &Enc::new().size_update(40).done());
    assert_eq!(table(&d), (pairs(&[("b", "2")]), 34));
    // Grow beyond the cap: clamped.
    decode_all(&mut d, &Enc::new().size_update(1 << 20).done());
    assert_eq!(d.max_size(), hpack::HARD_CAP);
    // An entry larger than the table empties it.
    decode_all(&mut d, &Enc::new().size_update(64).done());
    let v = "x".repeat(100);
    let got = decode_all(&mut d, &Enc::new().inc_new("big", &v, true).done());
    assert_eq!(got, pairs(&[("big", &v)]));
    assert_eq!(table(&d), (vec![], 0));
    // Literal never indexed stays out of the table.
    decode_all(&mut d, &Enc::new().never_new("password", "secret", false).done());
    assert_eq!(table(&d).1, 0);
}

#[test]
fn hpack_name_from_entry_evicted_by_its_own_insert() {
    let mut d = Decoder::new();
    decode_all(&mut d, &Enc::new().size_update(80).inc_new("custom-name", "v1", false).done());
    // Index 62 names the entry that must be evicted to make room.
    let long = "y".repeat(30);
    let got = decode_all(&mut d, &Enc::new().inc(62, &long, false).done());
    assert_eq!(got, pairs(&[("custom-name", &long)]));
    assert_eq!(table(&d).0, pairs(&[("custom-name", &long)]));
}

/// The dynamic table against a naive model, through many inserts that
/// wrap its byte buffer.
#[test]
fn hpack_table_matches_model() {
    let mut d = Decoder::new();
    let mut model: Vec<(String, String)> = Vec::new();
    let mut max = 4096usize;
    let mut seed = 0x1234_5678u32;
    let mut rnd = |n: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed % n
    };
    for round in 0..3000 {
        let mut e = Enc::new();
        let op = rnd(10);
        let (name, value);
        if op == 0 {
            max = [0usize, 100, 300, 4096, 8000][rnd(5) as usize];
            e = e.size_update(max);
            let mut sz: usize = 0;
            let mut keep = 0;
            for (n, v) in &model {
                if sz + n.len() + v.len() + 32 > max {
                    break;
                }
                sz += n.len() + v.len() + 32;
                keep += 1;
            }
            model.truncate(keep);
            decode_all(&mut d, &e.done());
        } else {
            if op < 4 && !model.is_empty() {
                let i = rnd(model.len() as u32) as usize;
                name = model[i].0.clone();
                value = "v".repeat(rnd(300) as usize) + &round.to_string();
                e = e.inc(62 + i, &value, round % 2 == 0);
            } else {
                name = format!("n{}", "k".repeat(rnd(60) as usize));
                value = "w".repeat(rnd(700) as usize);
                e = e.inc_new(&name, &value, round % 3 == 0);
            }
            let got = decode_all(&mut d, &e.done());
            assert_eq!(got, vec![(name.clone(), value.clone())]);
            let size = name.len() + value.len() + 32;
            if size > max {
                model.clear();
            } else {
                model.insert(0, (name, value));
                let mut sz = 0;
                let mut keep = 0;
                for (n, v) in &model {
                    if sz + n.len() + v.len() + 32 > max {
                        break;
                    }
                    sz += n.len() + v.len() + 32;
                    keep += 1;
                }
                model.truncate(keep);
            }
        }
        let size: usize = model.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert_eq!(table(&d), (model.clone(), size), "round {round}");
        if round % 7 == 0 && !model.is_empty() {
            // Indexed lookups of random entries.
            let i = rnd(model.len() as u32) as usize;
            let got = decode_all(&mut d, &Enc::new().idx(62 + i).done());
            assert_eq!(got, vec![model[i].clone()]);
        }
    }
}

#[test]
fn hpack_unknown_dynamic_index_is_skipped() {
    let mut d = Decoder::new();
    let block = Enc::new().idx(2).idx(70).lit(65, "x", false).inc(66, "y", false).idx(4).done();
    let got = decode_all(&mut d, &block);
    assert_eq!(got, pairs(&[(":method", "GET"), (":path", "/")]));
    // The unknown-named literal was still indexed to keep numbering.
    assert_eq!(table(&d).0, pairs(&[("", "y")]));
}

#[test]
fn hpack_errors() {
    let mut d = Decoder::new();
    assert_eq!(d.decode(&[0x80], |_, _| {}), Err(HpackError::Invalid));
    assert_eq!(d.decode(&[0x40, 0x05, b'a'], |_, _| {}), Err(HpackError::Incomplete));
    assert_eq!(d.decode(&[0x04, 0x81, 0x00], |_, _| {}), Err(HpackError::Invalid));
    // Garbage never panics.
    let mut seed = 7u32;
    for _ in 0..2000 {
        let len = (seed % 64) as usize;
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.push((seed >> 16) as u8);
        }
        let _ = d.decode(&v, |_, _| {});
    }
}

// ---------------------------------------------------------------------------
// Parser and session.

#[test]
fn curl_h2c_exchange() {
    let recs = run(&curl_exchange(), 0, None);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let r = &recs[0];
    assert_eq!(r.msg_type, MessageType::Session);
    assert_eq!(r.protocol, L7Protocol::Http2);
    assert_eq!(r.version, "2");
    assert_eq!(r.request_type, "GET");
    assert_eq!(r.request_domain, "localhost:8080");
    assert_eq!(r.request_resource, "/");
    assert_eq!(r.endpoint, "/");
    assert_eq!(r.request_id, Some(1));
    assert_eq!(r.response_code, Some(200));
    assert_eq!(r.response_status, ResponseStatus::Ok);
    assert_eq!(r.request_length, Some(curl_request_headers().len() as u32));
    let resp_len = server_response_headers().len() + data(1, true, b"Hello, world\n").len();
    assert_eq!(r.response_length, Some(resp_len as u32));
    assert!(!r.truncated);
}

#[test]
fn request_record_fields() {
    let block = Enc::new()
        .idx(3)
        .idx(7)
        .lit(4, "/api/v1/items?id=7&x=1", true)
        .lit(1, "api.example.com", false)
        .inc_new("x-request-id", "req-99", true)
        .lit(31, "application/json", true)
        .done();
    let (p, r) = parse_one(Req, &headers(1, false, &block));
    assert!(matches!(p, Progress::Message { .. }));
    assert_eq!(r.protocol, L7Protocol::Http2);
    assert_eq!(r.request_type, "POST");
    assert_eq!(r.request_domain, "api.example.com");
    assert_eq!(r.request_resource, "/api/v1/items?id=7&x=1");
    assert_eq!(r.endpoint, "/api/v1/items");
    assert_eq!(r.trace.x_request_id, "req-99");
}

#[test]
fn grpc_unary_with_trailers() {
    let recs = run(&grpc_exchange(), 0, None);
    assert_eq!(recs.len(), 2, "{recs:#?}");
    let ok = &recs[0];
    assert_eq!(ok.protocol, L7Protocol::Grpc);
    assert_eq!(ok.request_type, "POST");
    assert_eq!(ok.request_domain, "helloworld.Greeter");
    assert_eq!(ok.endpoint, "/helloworld.Greeter/SayHello");
    assert_eq!(ok.request_resource, "/helloworld.Greeter/SayHello");
    assert_eq!(ok.request_id, Some(1));
    assert_eq!(ok.response_code, Some(0));
    assert_eq!(ok.response_status, ResponseStatus::Ok);
    assert_eq!(ok.trace.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(ok.response_length, Some(grpc_response(1, true, 0, "").len() as u32));
    let nf = &recs[1];
    assert_eq!(nf.protocol, L7Protocol::Grpc);
    assert_eq!(nf.request_domain, "helloworld.Greeter");
    assert_eq!(nf.endpoint, "/helloworld.Greeter/Lookup");
    assert_eq!(nf.request_id, Some(3));
    assert_eq!(nf.response_code, Some(5));
    assert_eq!(nf.response_status, ResponseStatus::ClientError);
    assert_eq!(nf.response_exception, "no such name");
    // The second request took its trace context from the dynamic table.
    assert_eq!(nf.trace.trace_id, "0af7651916cd43dd8448eb211c80319c");
}

#[test]
fn grpc_trailers_only_error() {
    let block = Enc::new()
        .idx(8)
        .inc(31, "application/grpc", true)
        .inc_new("grpc-status", "14", false)
        .inc_new("grpc-message", "upstream connect error", true)
        .done();
    let writes = vec![
        (Req, curl_preface()),
        (Req, grpc_request(1, true, "SayHello")),
        (Resp, headers(1, true, &block)),
    ];
    let recs = run(&writes, 0, None);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.protocol, L7Protocol::Grpc);
    assert_eq!(r.response_code, Some(14));
    assert_eq!(r.response_status, ResponseStatus::ServerError);
    assert_eq!(r.response_exception, "upstream connect error");
}

#[test]
fn grpc_status_mapping() {
    for (code, want) in [
        (0, ResponseStatus::Ok),
        (1, ResponseStatus::ClientError),
        (2, ResponseStatus::ServerError),
        (3, ResponseStatus::ClientError),
        (4, ResponseStatus::ServerError),
        (5, ResponseStatus::ClientError),
        (6, ResponseStatus::ClientError),
        (7, ResponseStatus::ClientError),
        (8, ResponseStatus::ServerError),
        (9, ResponseStatus::ClientError),
        (10, ResponseStatus::ServerError),
        (11, ResponseStatus::ClientError),
        (12, ResponseStatus::ServerError),
        (13, ResponseStatus::ServerError),
        (14, ResponseStatus::ServerError),
        (15, ResponseStatus::ServerError),
        (16, ResponseStatus::ClientError),
        (17, ResponseStatus::Unknown),
    ] {
        assert_eq!(grpc_status(code), want, "{code}");
    }
}

fn simple_get(stream: u32, path: &str) -> Vec<u8> {
    let block = Enc::new().idx(2).idx(7).lit(4, path, true).lit(1, "example.com", true).done();
    headers(stream, true, &block)
}

fn simple_resp(stream: u32, status: &str, body: &[u8]) -> Vec<u8> {
    let block = Enc::new().lit(8, status, true).done();
    cat(&[&headers(stream, false, &block), &data(stream, true, body)])
}

#[test]
fn concurrent_streams_out_of_order() {
    let writes = vec![
        (Req, curl_preface()),
        (Req, cat(&[&simple_get(1, "/one"), &simple_get(3, "/three"), &simple_get(5, "/five")])),
        (Resp, server_settings()),
        (Resp, simple_resp(5, "500", b"boom")),
        (Resp, simple_resp(1, "200", b"ok")),
        (Resp, simple_resp(3, "404", b"nope")),
    ];
    for chunk in [0, 1, 7] {
        let recs = run(&writes, chunk, None);
        let got: Vec<_> = recs
            .iter()
            .map(|r| (r.request_id, r.request_resource.clone(), r.response_code, r.response_status))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(5), "/five".into(), Some(500), ResponseStatus::ServerError),
                (Some(1), "/one".into(), Some(200), ResponseStatus::Ok),
                (Some(3), "/three".into(), Some(404), ResponseStatus::ClientError),
            ],
            "chunk {chunk}"
        );
        assert!(recs.iter().all(|r| r.msg_type == MessageType::Session));
    }
}

#[test]
fn interleaved_data_frames() {
    let writes = vec![
        (Req, cat(&[&simple_get(1, "/a"), &simple_get(3, "/b")])),
        (
            Resp,
            cat(&[
                &headers(1, false, &Enc::new().idx(8).done()),
                &headers(3, false, &Enc::new().idx(13).done()),
                &data(1, false, &[1; 100]),
                &data(3, true, &[2; 50]),
                &data(1, true, &[3; 10]),
            ]),
        ),
    ];
    let recs = run(&writes, 0, None);
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].request_id, recs[0].response_code), (Some(3), Some(404)));
    assert_eq!(recs[0].response_length, Some(10 + 59));
    assert_eq!((recs[1].request_id, recs[1].response_code), (Some(1), Some(200)));
    assert_eq!(recs[1].response_length, Some(10 + 109 + 19));
}

#[test]
fn rst_stream_from_server() {
    let writes = vec![
        (Req, cat(&[&simple_get(1, "/a"), &simple_get(3, "/b")])),
        (Resp, rst(3, 7)),
        (Resp, cat(&[&headers(1, false, &Enc::new().idx(8).done()), &rst(1, 2)])),
        // A client reset gives no record.
        (Req, simple_get(5, "/c")),
        (Req, rst(5, 8)),
    ];
    let recs = run(&writes, 0, None);
    assert_eq!(recs.len(), 3, "{recs:#?}");
    assert_eq!(recs[0].request_id, Some(3));
    assert_eq!(recs[0].response_status, ResponseStatus::ServerError);
    assert_eq!(recs[0].response_exception, "REFUSED_STREAM");
    assert_eq!(recs[1].request_id, Some(1));
    assert_eq!(recs[1].response_code, Some(200));
    assert_eq!(recs[1].response_status, ResponseStatus::ServerError);
    assert_eq!(recs[1].response_exception, "INTERNAL_ERROR");
    // Stream 5 timed out when the session closed.
    assert_eq!(recs[2].request_id, Some(5));
    assert_eq!(recs[2].response_status, ResponseStatus::Timeout);
}

#[test]
fn continuation_padding_priority() {
    let block = Enc::new()
        .idx(2)
        .idx(7)
        .lit(4, "/split/over/frames", false)
        .lit(1, "cont.example", false)
        .inc_new("user-agent-long", &"z".repeat(40), false)
        .done();
    let (a, rest) = block.split_at(5);
    let (b, c) = rest.split_at(20);
    // HEADERS: PADDED (3 bytes) + PRIORITY, no END_HEADERS.
    let mut p = vec![3];
    p.extend_from_slice(&[0x80, 0, 0, 0, 15]);
    p.extend_from_slice(a);
    p.extend_from_slice(&[0, 0, 0]);
    let w = cat(&[
        &frame(HEADERS, FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM, 1, &p),
        &frame(CONTINUATION, 0, 1, b),
        &frame(CONTINUATION, FLAG_END_HEADERS, 1, c),
    ]);
    for chunk in [0, 1, 3] {
        let recs = run(&vec![(Req, w.clone()), (Resp, simple_resp(1, "200", b"x"))], chunk, None);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].request_resource, "/split/over/frames");
        assert_eq!(recs[0].request_domain, "cont.example");
        assert_eq!(recs[0].request_length, Some(w.len() as u32));
        assert_eq!(recs[0].response_code, Some(200));
    }
    // A CONTINUATION of another stream is a protocol error.
    let bad = cat(&[&frame(HEADERS, 0, 1, a), &frame(CONTINUATION, FLAG_END_HEADERS, 3, b)]);
    assert_eq!(parse_one(Req, &bad).0, Progress::Invalid);
    // Padding longer than the frame.
    assert_eq!(
        parse_one(Req, &frame(HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, &[9, 0x82])).0,
        Progress::Invalid
    );
}

#[test]
fn informational_status_then_final() {
    let writes = vec![
        (Req, simple_get(1, "/upload")),
        (Resp, headers(1, false, &Enc::new().lit(8, "100", false).done())),
        (Resp, simple_resp(1, "201", b"")),
    ];
    let recs = run(&writes, 0, None);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].response_code, Some(201));
}

#[test]
fn large_data_frames_are_skipped() {
    let body = vec![b'a'; 200_000];
    let writes = vec![
        (
            Req,
            cat(&[
                &headers(1, false, &Enc::new().idx(3).idx(6).lit(4, "/up", false).done()),
                &data(1, true, &body),
            ]),
        ),
        (
            Resp,
            cat(&[
                &headers(1, false, &Enc::new().idx(8).done()),
                &data(1, false, &body),
                &data(1, true, &body),
            ]),
        ),
        (Req, simple_get(3, "/next")),
        (Resp, simple_resp(3, "204", b"")),
    ];
    for chunk in [0, 1000] {
        let recs = run(&writes, chunk, None);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].request_resource, "/up");
        assert_eq!(recs[0].response_length, Some(10 + 2 * (body.len() as u32 + 9)));
        assert_eq!(recs[1].response_code, Some(204));
    }
}

#[test]
fn byte_at_a_time_equals_whole() {
    for writes in [curl_exchange(), grpc_exchange()] {
        let whole = run(&writes, 0, None);
        assert!(!whole.is_empty());
        for chunk in [1, 2, 5, 13] {
            assert_eq!(run(&writes, chunk, None), whole, "chunk {chunk}");
        }
    }
}

#[test]
fn truncated_captures() {
    for writes in [curl_exchange(), grpc_exchange()] {
        let whole = run(&writes, 0, None);
        for n in [64, 256, 1024] {
            let recs = run(&writes, 0, Some(n));
            assert_eq!(recs.len(), whole.len(), "n {n}: {recs:#?}");
            for (r, w) in recs.iter().zip(&whole) {
                assert_eq!(r.msg_type, MessageType::Session, "n {n}");
                assert_eq!(r.request_id, w.request_id);
                assert_eq!(r.protocol, w.protocol, "n {n}");
                assert_eq!(r.request_type, w.request_type, "n {n}");
                // Lengths are those on the wire, even when cut.
                assert_eq!(r.request_length, w.request_length, "n {n}");
            }
        }
    }
    // At 64 bytes the gRPC response (headers + message + trailers in one
    // write) loses its trailers: the response ends where the capture does.
    let recs = run(&grpc_exchange(), 0, Some(64));
    assert!(recs[0].truncated);
    assert_eq!(recs[0].response_status, ResponseStatus::Unknown);
    // And at 1024 nothing is cut.
    let recs = run(&grpc_exchange(), 0, Some(1024));
    assert!(recs.iter().all(|r| !r.truncated));
    assert_eq!(recs[1].response_code, Some(5));
}

#[test]
fn truncated_request_headers() {
    let block = Enc::new()
        .idx(3)
        .idx(6)
        .lit(4, "/helloworld.Greeter/SayHello", false)
        .lit(1, "127.0.0.1:50051", false)
        .lit(31, "application/grpc", false)
        .lit(58, &"u".repeat(100), false)
        .done();
    let w = headers(1, false, &block);
    let mut p = Http2Parser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    let cut = &w[..80];
    assert_eq!(p.parse(Req, cut, false, &mut rec), Progress::NeedMore);
    let pr = p.parse(Req, cut, true, &mut rec);
    assert_eq!(pr, Progress::Message { consumed: 80, skip: (w.len() - 80) as u64 });
    assert!(rec.truncated);
    assert_eq!(rec.protocol, L7Protocol::Grpc);
    assert_eq!(rec.request_domain, "helloworld.Greeter");
    assert_eq!(rec.request_length, Some(w.len() as u32));
}

#[test]
fn mid_connection_join() {
    // The client's dynamic table holds entries we never saw (62..).
    let block = Enc::new().idx(3).idx(6).idx(64).idx(62).lit(4, "/svc.A/B", false).idx(63).done();
    let writes = vec![
        (Req, headers(9, false, &block)),
        (Req, data(9, true, &grpc_msg(b"x"))),
        (Resp, headers(9, false, &Enc::new().idx(8).idx(70).done())),
        (Resp, data(9, false, &grpc_msg(b"y"))),
        (Resp, headers(9, true, &[])),
    ];
    let recs = run(&writes, 0, None);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0].request_type, "POST");
    assert_eq!(recs[0].request_resource, "/svc.A/B");
    assert_eq!(recs[0].request_id, Some(9));
    assert_eq!(recs[0].response_code, Some(200));
    // Parsing starts anywhere: DATA and WINDOW_UPDATE first are fine.
    let writes = vec![(Resp, cat(&[&window_update(0, 100), &data(7, true, b"zz")]))];
    assert!(run(&writes, 0, None).is_empty());
}

#[test]
fn settings_ack_shrinks_table() {
    let mut p = Http2Parser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    // Server announces a 0-byte table for the client's blocks.
    p.parse(Resp, &settings(&[(1, 0)]), false, &mut rec);
    p.parse(
        Req,
        &headers(1, true, &Enc::new().idx(2).inc(1, "a.example", false).idx(4).done()),
        false,
        &mut rec,
    );
    assert_eq!(p.dec[0].max_size(), 4096);
    p.parse(Req, &settings_ack(), false, &mut rec);
    assert_eq!(p.dec[0].max_size(), 0);
    assert_eq!(p.dec[0].dump().0.len(), 0);
}

#[test]
fn garbage_and_other_protocols() {
    let mut p = Http2Parser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    for dir in [Req, Resp] {
        assert_eq!(
            p.parse(dir, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, &mut rec),
            Progress::Invalid
        );
        assert_eq!(p.parse(dir, b"HTTP/1.1 200 OK\r\n\r\n", false, &mut rec), Progress::Invalid);
        // SETTINGS on a stream, PING of the wrong size.
        assert_eq!(p.parse(dir, &frame(SETTINGS, 0, 1, &[]), false, &mut rec), Progress::Invalid);
        assert_eq!(p.parse(dir, &frame(PING, 0, 0, &[0; 4]), false, &mut rec), Progress::Invalid);
        assert_eq!(
            p.parse(dir, &frame(HEADERS, 4, 0, &[0x82]), false, &mut rec),
            Progress::Invalid
        );
    }
    // A header block beyond 64 KiB is not followed.
    let huge = frame(HEADERS, FLAG_END_HEADERS, 1, &vec![0x82; 70_000]);
    assert_eq!(p.parse(Req, &huge, false, &mut rec), Progress::Invalid);
    assert_eq!(p.parse(Req, &huge[..100], false, &mut rec), Progress::Invalid);
    // Random bytes, in many shapes, through sessions: no panic.
    let mut seed = 0xdead_beefu32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for round in 0..400 {
        let mut s = Session::new(Http2Parser::new(Transport::Tcp));
        let len = (next() % 300) as usize;
        let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && v.len() > 9 {
            // Plausible frame headers with random payloads.
            v[0] = 0;
            v[1] = 0;
            v[2] = (v.len() - 9) as u8;
            v[3] %= 10;
        }
        let dir = if round % 3 == 0 { Req } else { Resp };
        let missing = (next() % 3) as u64;
        s.feed(dir, &v, missing, 1, &mut |_| {});
        s.feed(dir.reverse(), &v, 0, 2, &mut |_| {});
        for &n in &[1usize, 9, 10] {
            let mut p = Http2Parser::new(Transport::Tcp);
            for c in v.chunks(n) {
                let _ = p.parse(dir, c, true, &mut rec);
                let _ = p.parse(dir, c, false, &mut rec);
            }
        }
        let _ = detect(&v, Transport::Tcp);
    }
}

// ---------------------------------------------------------------------------
// Detection.

#[test]
fn detect_positive() {
    assert_eq!(detect(&curl_preface(), Transport::Tcp), Some(Req));
    assert_eq!(detect(&PREFACE[..16], Transport::Tcp), Some(Req));
    assert_eq!(detect(&PREFACE[..15], Transport::Tcp), None);
    assert_eq!(detect(&curl_preface(), Transport::Udp), None);
    assert_eq!(detect(&server_settings(), Transport::Tcp), Some(Resp));
    assert_eq!(detect(&settings(&[(3, 100)]), Transport::Tcp), Some(Resp));
    assert_eq!(detect(&cat(&[&settings_ack(), &server_settings()]), Transport::Tcp), Some(Resp));
    // Joining midway: a request HEADERS frame.
    assert_eq!(detect(&simple_get(7, "/x"), Transport::Tcp), Some(Req));
    assert_eq!(detect(&grpc_request(3, false, "M"), Transport::Tcp), Some(Req));
    let go_style = Enc::new().lit(1, "example.com", true).idx(2).idx(4).done();
    assert_eq!(detect(&headers(1, true, &go_style), Transport::Tcp), Some(Req));
}

#[test]
fn detect_negative() {
    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
        b"PRI * HTTP/1.1\r\n".to_vec(),
        b"*1\r\n$4\r\nPING\r\n".to_vec(),
        b"+OK\r\n".to_vec(),
        // MySQL greeting.
        hex("4a0000000a382e302e3333000800000020"),
        // Dubbo request header.
        hex("dabbc2000000000000000001000000ff"),
        // Kafka ApiVersions request: size, api key 18, version 3, corr id 1.
        hex("0000002300120003000000010007726466616b61"),
        // Kafka response with a tiny size.
        hex("000000040000000100"),
        // DNS over TCP.
        hex("001d1234010000010000000000000377777706676f6f676c6503636f6d0000010001"),
        // Empty SETTINGS alone, ACK alone.
        frame(SETTINGS, 0, 0, &[]),
        settings_ack(),
        // SETTINGS with an unknown id or absurd value.
        settings(&[(0x77, 1)]),
        settings(&[(5, 100)]),
        // HEADERS on an even stream, or starting with a non-:method field.
        simple_get(2, "/"),
        headers(1, false, &Enc::new().idx(8).done()),
        // A server HEADERS frame is not detected as a request.
        headers(1, false, &Enc::new().idx(8).inc(31, "application/grpc", true).done()),
        vec![],
        vec![0; 9],
        vec![0; 64],
    ];
    for c in cases {
        assert_eq!(detect(&c, Transport::Tcp), None, "{c:02x?}");
    }
}

// ---------------------------------------------------------------------------
// Sample files for the cross-protocol detection matrix.

fn sample_req() -> Vec<u8> {
    cat(&[&curl_preface(), &curl_request_headers()])
}

fn sample_resp() -> Vec<u8> {
    cat(&[
        &server_settings(),
        &settings_ack(),
        &server_response_headers(),
        &data(1, true, b"Hello, world\n"),
    ])
}

const SAMPLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples/http2");

#[test]
fn sample_files_are_current() {
    for (name, bytes, dir) in
        [("req-preface.bin", sample_req(), Req), ("resp-settings.bin", sample_resp(), Resp)]
    {
        let path = format!("{SAMPLE_DIR}/{name}");
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            got, bytes,
            "{name}: regenerate with `cargo test -p fathom-protocols write_http2_samples -- --ignored`"
        );
        assert_eq!(detect(&got, Transport::Tcp), Some(dir), "{name}");
    }
}

#[test]
#[ignore]
fn write_http2_samples() {
    std::fs::create_dir_all(SAMPLE_DIR).unwrap();
    std::fs::write(format!("{SAMPLE_DIR}/req-preface.bin"), sample_req()).unwrap();
    std::fs::write(format!("{SAMPLE_DIR}/resp-settings.bin"), sample_resp()).unwrap();
}

#[test]
fn push_promise_keeps_table_in_step() {
    let promise =
        Enc::new().idx(2).idx(7).inc(4, "/style.css", false).inc(1, "push.example", false).done();
    let mut pp = 6u32.to_be_bytes().to_vec(); // promised stream 6
    pp.extend_from_slice(&promise);
    let writes = vec![
        (Req, simple_get(1, "/")),
        (
            Resp,
            cat(&[
                &frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, &pp),
                // The pushed response, on stream 6: no record.
                &headers(6, false, &Enc::new().idx(8).done()),
                &data(6, true, b"body{}"),
                // Stream 1's response indexes the entry the promise added:
                // 62 = :authority push.example, 63 = :path /style.css; a
                // new literal makes 62 the status.
                &headers(1, false, &Enc::new().inc(8, "203", false).idx(63).done()),
                &data(1, true, b"x"),
            ]),
        ),
    ];
    let recs = run(&writes, 0, None);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0].request_id, Some(1));
    assert_eq!(recs[0].response_code, Some(203));
    let mut p = Http2Parser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    let w = &writes[1].1;
    let pr = p.parse(Resp, w, false, &mut rec);
    assert_eq!(pr, Progress::Skipped { consumed: 9 + pp.len(), skip: 0 });
    let (t, _) = p.dec[1].dump();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0], (b":authority".to_vec(), b"push.example".to_vec()));
}

#[test]
fn lost_block_resets_table() {
    let mut p = Http2Parser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    let first = headers(
        1,
        true,
        &Enc::new()
            .idx(2)
            .idx(4)
            .inc(1, "a.example", false)
            .inc_new("x-long", &"q".repeat(80), false)
            .done(),
    );
    // Cut inside the second insertion: the client's table now holds two
    // entries but ours only the first, so indices would be shifted.
    let cut = &first[..first.len() - 10];
    assert!(matches!(p.parse(Req, cut, true, &mut rec), Progress::Message { .. }));
    assert!(rec.truncated);
    assert_eq!(rec.request_domain, "a.example");
    // Stream 3 refers to :authority by index 63: unknown, not wrong.
    let second = headers(3, true, &Enc::new().idx(2).idx(4).idx(63).done());
    assert!(matches!(p.parse(Req, &second, false, &mut rec), Progress::Message { .. }));
    assert_eq!(rec.request_domain, "");
    // New entries after the loss are found again.
    let third = headers(5, true, &Enc::new().idx(2).idx(4).inc(1, "b.example", false).done());
    p.parse(Req, &third, false, &mut rec);
    let fourth = headers(7, true, &Enc::new().idx(2).idx(4).idx(62).done());
    p.parse(Req, &fourth, false, &mut rec);
    assert_eq!(rec.request_domain, "b.example");
}

#[test]
fn stream_cut_early_reports_once() {
    let head = Enc::new().idx(8).inc(31, "application/grpc", true).done();
    let trailers = Enc::new().inc_new("grpc-status", "0", false).done();
    let writes = vec![
        (Req, grpc_request(1, true, "Watch")),
        (Resp, cat(&[&headers(1, false, &head), &data(1, false, &grpc_msg(&[7; 2000]))])),
        (Resp, data(1, false, &grpc_msg(&[8; 2000]))),
        (Resp, headers(1, true, &trailers)),
        (Req, grpc_request(3, false, "Watch")),
        (Resp, grpc_response(3, false, 0, "")),
    ];
    let recs = run(&writes, 0, Some(256));
    assert_eq!(recs.len(), 2, "{recs:#?}");
    assert_eq!(recs[0].request_id, Some(1));
    assert!(recs[0].truncated);
    assert_eq!(recs[0].response_status, ResponseStatus::Unknown);
    assert_eq!(recs[1].request_id, Some(3));
    assert_eq!(recs[1].msg_type, MessageType::Session);
    // Uncut, the same writes give the real outcome.
    let recs = run(&writes, 0, None);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].response_code, Some(0));
    assert_eq!(recs[0].response_status, ResponseStatus::Ok);
    assert!(!recs[0].truncated);
}

/// Valid exchanges with random bytes flipped, fed in random pieces with
/// random losses: never a panic, and the session stays bounded.
#[test]
fn mutated_exchanges_never_panic() {
    let mut seed = 0x0bad_f00du32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let bases = [curl_exchange(), grpc_exchange()];
    for round in 0..600 {
        let mut writes = bases[round % 2].clone();
        for (_, w) in writes.iter_mut() {
            for _ in 0..(next() % 4) {
                let i = next() as usize % w.len();
                w[i] = next() as u8;
            }
        }
        let mut s = Session::new(Http2Parser::new(Transport::Tcp));
        let mut n = 0usize;
        for (dir, w) in &writes {
            let mut off = 0;
            while off < w.len() {
                let len = (1 + next() as usize % 40).min(w.len() - off);
                let missing = if next() % 5 == 0 { u64::from(next() % 50) } else { 0 };
                s.feed(*dir, &w[off..off + len], missing, 1, &mut |_| n += 1);
                off += len;
            }
        }
        s.close(&mut |_| n += 1);
        assert!(n < 100);
    }
}
