use super::*;
use crate::record::MessageType;
use crate::session::{Session, SessionStats};
use crate::trace::TraceFormat;

const REQ: Direction = Direction::Request;
const RESP: Direction = Direction::Response;

/// A session over one flow, collecting every record it emits.
struct Flow1 {
    s: Session<Http1Parser>,
    out: Vec<L7Record>,
    ts: u64,
}

impl Flow1 {
    fn new() -> Self {
        Flow1 { s: Session::new(Http1Parser::new(Transport::Tcp)), out: Vec::new(), ts: 0 }
    }

    fn feed(&mut self, dir: Direction, data: &[u8], missing: u64) -> &mut Self {
        self.ts += 1;
        let out = &mut self.out;
        self.s.feed(dir, data, missing, self.ts, &mut |ev| out.push(ev.record.clone()));
        self
    }

    fn feed_split(&mut self, dir: Direction, data: &[u8], at: usize) -> &mut Self {
        self.feed(dir, &data[..at], 0).feed(dir, &data[at..], 0)
    }

    fn feed_bytes(&mut self, dir: Direction, data: &[u8]) -> &mut Self {
        for b in data.chunks(1) {
            self.feed(dir, b, 0);
        }
        self
    }

    fn stats(&self) -> SessionStats {
        self.s.stats()
    }
}

fn parse1(dir: Direction, buf: &[u8], at_end: bool) -> (Progress, L7Record) {
    let mut p = Http1Parser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    let r = p.parse(dir, buf, at_end, &mut rec);
    (r, rec)
}

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/samples/http1/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn resp_cl(code: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nServer: nginx/1.25.3\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
}

fn chunked(code: u16, reason: &str, chunks: &[&str]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {code} {reason}\r\nServer: nginx/1.25.3\r\nContent-Type: text/html\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for c in chunks {
        v.extend_from_slice(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes());
    }
    v.extend_from_slice(b"0\r\n\r\n");
    v
}

// ---------------------------------------------------------------- detect

#[test]
fn detect_requests_and_responses() {
    let t = Transport::Tcp;
    for m in ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE"] {
        let r = format!("{m} /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(detect(r.as_bytes(), t), Some(REQ), "{m}");
    }
    assert_eq!(detect(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", t), Some(REQ));
    assert_eq!(detect(b"OPTIONS * HTTP/1.1\r\n", t), Some(REQ));
    assert_eq!(detect(b"GET http://example.com/a HTTP/1.0\r\n", t), Some(REQ));
    assert_eq!(detect(b"GET /", t), Some(REQ));
    // A 64-byte capture prefix of a long request line.
    let long = get(&format!("/very/long/path/{}", "seg/".repeat(40)));
    assert_eq!(detect(&long[..64], t), Some(REQ));
    assert_eq!(detect(b"GET /a HTTP/1.", t), Some(REQ));
    assert_eq!(detect(b"HTTP/1.1 200 OK\r\n", t), Some(RESP));
    assert_eq!(detect(b"HTTP/1.0 404 Not Found\r\n", t), Some(RESP));
    assert_eq!(detect(b"HTTP/1.1 204\r\n\r\n", t), Some(RESP));
    for f in ["req-get.bin", "req-post.bin"] {
        assert_eq!(detect(&sample(f), t), Some(REQ), "{f}");
    }
    for f in ["resp-200.bin", "resp-404-chunked.bin"] {
        assert_eq!(detect(&sample(f), t), Some(RESP), "{f}");
    }
}

#[test]
fn detect_rejects_others() {
    let t = Transport::Tcp;
    let no: &[&[u8]] = &[
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n",
        b"HTTP/1.1 20",
        b"HTTP/1.1 999 x\r\n",
        b"HTTP/1.1 200OK\r\n",
        b"GET key\r\n",
        b"GET foo bar\r\n",
        b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
        b"get / HTTP/1.1\r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET /\r\n",
        b"GET * HTTP/1.1\r\n",
        b"GET  / HTTP/1.1\r\n",
        b"GET /a\x00b HTTP/1.1\r\n",
        b"GET ",
        b"GET",
        b"",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\x00\x00\x00\x2a\x00\x03\x00\x00",
    ];
    for b in no {
        assert_eq!(detect(b, t), None, "{:?}", String::from_utf8_lossy(b));
    }
    assert_eq!(detect(b"GET / HTTP/1.1\r\n\r\n", Transport::Udp), None);
}

// ---------------------------------------------------------------- requests

#[test]
fn get_request_fields() {
    let buf = sample("req-get.bin");
    let (p, rec) = parse1(REQ, &buf, false);
    assert_eq!(p, Progress::Message { consumed: buf.len(), skip: 0 });
    assert_eq!(rec.protocol, L7Protocol::Http1);
    assert_eq!(rec.version, "1.1");
    assert_eq!(rec.request_type, "GET");
    assert_eq!(rec.request_domain, "api.example.com");
    assert_eq!(rec.request_resource, "/api/v1/users?limit=10&offset=20");
    assert_eq!(rec.endpoint, "/api/v1/users");
    assert_eq!(rec.request_length, Some(buf.len() as u32));
    assert!(!rec.truncated);
}

#[test]
fn post_request_with_body_and_trace() {
    let buf = sample("req-post.bin");
    let (p, rec) = parse1(REQ, &buf, false);
    assert_eq!(p, Progress::Message { consumed: buf.len(), skip: 0 });
    assert_eq!(rec.request_type, "POST");
    assert_eq!(rec.request_domain, "shop.example.com:8080");
    assert_eq!(rec.endpoint, "/api/v1/orders");
    assert_eq!(rec.request_length, Some(buf.len() as u32));
    assert_eq!(rec.trace.format, TraceFormat::W3c);
    assert_eq!(rec.trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(rec.trace.span_id, "00f067aa0ba902b7");
}

#[test]
fn absolute_form_connect_and_http10() {
    let (_, rec) =
        parse1(REQ, b"GET http://proxy.example/a/b?q=1#f HTTP/1.0\r\nAccept: */*\r\n\r\n", false);
    assert_eq!(rec.version, "1.0");
    assert_eq!(rec.request_domain, "proxy.example");
    assert_eq!(rec.request_resource, "http://proxy.example/a/b?q=1#f");
    assert_eq!(rec.endpoint, "/a/b");
    let (p, rec) =
        parse1(REQ, b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n", false);
    assert!(matches!(p, Progress::Message { .. }));
    assert_eq!(rec.request_type, "CONNECT");
    assert_eq!(rec.endpoint, "db.internal:5432");
    let (_, rec) = parse1(REQ, b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", false);
    assert_eq!(rec.endpoint, "*");
}

#[test]
fn keep_alive_sequence() {
    let mut f = Flow1::new();
    let paths = ["/a", "/b?x=1", "/c/d"];
    for (i, p) in paths.iter().enumerate() {
        f.feed(REQ, &get(p), 0);
        f.feed(RESP, &resp_cl(200 + i as u16, "OK", "hello"), 0);
    }
    assert_eq!(f.out.len(), 3);
    for (i, r) in f.out.iter().enumerate() {
        assert_eq!(r.msg_type, MessageType::Session);
        assert_eq!(r.request_resource, paths[i]);
        assert_eq!(r.response_code, Some(200 + i as i32));
        assert_eq!(r.response_status, ResponseStatus::Ok);
        assert_eq!(r.response_length, Some(resp_cl(200, "OK", "hello").len() as u32));
    }
    assert_eq!(f.stats().parse_errors, 0);
    assert_eq!(f.s.pending(), 0);
}

#[test]
fn pipelining_three_and_three() {
    let mut reqs = get("/one");
    reqs.extend_from_slice(b"HEAD /two HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
    let post = b"POST /three HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\n\r\nabcde";
    reqs.extend_from_slice(post);
    let mut resps = resp_cl(200, "OK", "first");
    // HEAD: Content-Length describes the entity, no body follows.
    resps.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 123456\r\n\r\n");
    resps.extend_from_slice(&chunked(201, "Created", &["ok", "done"]));
    let mut f = Flow1::new();
    f.feed(REQ, &reqs, 0).feed(RESP, &resps, 0);
    assert_eq!(f.out.len(), 3);
    let got: Vec<_> = f
        .out
        .iter()
        .map(|r| (r.request_type.as_str(), r.endpoint.as_str(), r.response_code))
        .collect();
    assert_eq!(
        got,
        [("GET", "/one", Some(200)), ("HEAD", "/two", Some(200)), ("POST", "/three", Some(201))]
    );
    assert_eq!(f.out[2].request_length, Some(post.len() as u32));
    assert_eq!(
        f.out[2].response_length,
        Some(chunked(201, "Created", &["ok", "done"]).len() as u32)
    );
    assert_eq!(f.stats().parse_errors, 0);
    assert_eq!(f.stats().orphan_responses, 0);
}

#[test]
fn head_response_has_no_body() {
    let mut f = Flow1::new();
    f.feed(REQ, b"HEAD /file.iso HTTP/1.1\r\nHost: cdn.example\r\n\r\n", 0);
    let head_resp: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 734003200\r\nContent-Type: application/octet-stream\r\n\r\n";
    f.feed(RESP, head_resp, 0);
    f.feed(REQ, &get("/next"), 0);
    f.feed(RESP, &resp_cl(404, "Not Found", "nope"), 0);
    assert_eq!(f.out.len(), 2);
    assert_eq!(f.out[0].response_code, Some(200));
    assert_eq!(f.out[0].response_length, Some(head_resp.len() as u32));
    assert_eq!(f.out[1].endpoint, "/next");
    assert_eq!(f.out[1].response_code, Some(404));
    assert_eq!(f.out[1].response_exception, "Not Found");
}

#[test]
fn head_response_unseen_request_heuristic() {
    // The HEAD request was not captured; the next response starts right after.
    let mut resps = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".to_vec();
    resps.extend_from_slice(&resp_cl(200, "OK", "x"));
    let mut f = Flow1::new();
    f.feed(RESP, &resps, 0);
    assert_eq!(f.out.len(), 2);
}

#[test]
fn no_body_statuses() {
    let mut f = Flow1::new();
    for _ in 0..2 {
        f.feed(REQ, &get("/x"), 0);
    }
    let mut resps = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n".to_vec();
    resps.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\n\r\n");
    f.feed(RESP, &resps, 0);
    let codes: Vec<_> = f.out.iter().map(|r| r.response_code).collect();
    assert_eq!(codes, [Some(204), Some(304)]);
}

#[test]
fn expect_100_continue() {
    let body = b"{\"big\":\"payload\"}";
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: s3.example\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut f = Flow1::new();
    f.feed(REQ, head.as_bytes(), 0);
    f.feed(RESP, b"HTTP/1.1 100 Continue\r\n\r\n", 0);
    assert!(f.out.is_empty());
    f.feed(REQ, body, 0);
    f.feed(RESP, &resp_cl(201, "Created", ""), 0);
    f.feed(REQ, &get("/after"), 0);
    f.feed(RESP, &resp_cl(200, "OK", "fine"), 0);
    assert_eq!(f.out.len(), 2);
    assert_eq!(f.out[0].request_type, "PUT");
    assert_eq!(f.out[0].response_code, Some(201));
    assert_eq!(f.out[0].request_length, Some((head.len() + body.len()) as u32));
    assert_eq!(f.out[1].endpoint, "/after");
    assert_eq!(f.stats().parse_errors, 0);
    // 100 Continue is Skipped on its own.
    let (p, _) = parse1(RESP, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", false);
    assert_eq!(p, Progress::Skipped { consumed: 25, skip: 0 });
}

#[test]
fn error_statuses() {
    let mut f = Flow1::new();
    f.feed(REQ, &get("/missing"), 0).feed(RESP, &sample("resp-404-chunked.bin"), 0);
    f.feed(REQ, &get("/boom"), 0);
    f.feed(RESP, &resp_cl(500, "Internal Server Error", "stack"), 0);
    f.feed(REQ, &get("/ok"), 0);
    f.feed(RESP, &resp_cl(302, "Found", ""), 0);
    f.feed(REQ, &get("/weird"), 0);
    f.feed(RESP, b"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n", 0);
    let got: Vec<_> = f
        .out
        .iter()
        .map(|r| (r.response_code, r.response_status, r.response_exception.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(404), ResponseStatus::ClientError, "Not Found"),
            (Some(500), ResponseStatus::ServerError, "Internal Server Error"),
            (Some(302), ResponseStatus::Ok, ""),
            (Some(503), ResponseStatus::ServerError, ""),
        ]
    );
    assert_eq!(f.out[0].response_length, Some(sample("resp-404-chunked.bin").len() as u32));
}

#[test]
fn trace_headers_request_and_response() {
    let req = b"GET /t HTTP/1.1\r\nHost: h\r\nX-B3-TraceId: 463ac35c9f6413ad48485a3953bb6124\r\n\
X-B3-SpanId: a2fb4a1d1a96d312\r\nX-B3-ParentSpanId: 0020000000000001\r\nX-B3-Sampled: 1\r\n\r\n";
    let mut f = Flow1::new();
    f.feed(REQ, req, 0).feed(RESP, &sample("resp-200.bin"), 0);
    let r = &f.out[0];
    assert_eq!(r.trace.format, TraceFormat::B3);
    assert_eq!(r.trace.trace_id, "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(r.trace.span_id, "a2fb4a1d1a96d312");
    assert_eq!(r.trace.parent_span_id, "0020000000000001");
    // X-Request-ID came with the response.
    assert_eq!(r.trace.x_request_id, "7f3c2a9e-5d41-4b8e-9a0c-1e2f3a4b5c6d");
    let (_, rec) = parse1(
        REQ,
        b"GET / HTTP/1.1\r\nuber-trace-id: 5e9a6b1c2d3e4f50:1a2b3c4d5e6f7081:0:1\r\nsw8: x\r\n\r\n",
        false,
    );
    assert_eq!(rec.trace.format, TraceFormat::Jaeger);
    assert_eq!(rec.trace.trace_id, "5e9a6b1c2d3e4f50");
}

// ---------------------------------------------------------------- bodies and splits

/// Records compared without the lengths that depend on segmenting.
fn strip_len(mut v: Vec<L7Record>) -> Vec<L7Record> {
    for r in &mut v {
        r.response_length = None;
        r.request_length = None;
    }
    v
}

#[test]
fn chunked_response_split_at_every_byte() {
    let resp = sample("resp-404-chunked.bin");
    let mut both = resp.clone();
    both.extend_from_slice(&resp_cl(200, "OK", "after"));
    let whole = {
        let mut f = Flow1::new();
        f.feed(REQ, &get("/a"), 0).feed(REQ, &get("/b"), 0).feed(RESP, &both, 0);
        assert_eq!(f.out.len(), 2);
        assert_eq!(f.out[0].response_length, Some(resp.len() as u32));
        f.out.clone()
    };
    let hdr_len = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    for at in 0..=both.len() {
        let mut f = Flow1::new();
        f.feed(REQ, &get("/a"), 0).feed(REQ, &get("/b"), 0).feed_split(RESP, &both, at);
        assert_eq!(strip_len(f.out.clone()), strip_len(whole.clone()), "split at {at}");
        let len = f.out[0].response_length.unwrap() as usize;
        assert!(len >= hdr_len && len <= resp.len(), "split at {at}: {len}");
        if at >= resp.len() {
            assert_eq!(len, resp.len());
        }
        assert_eq!(f.out[1].response_length, whole[1].response_length);
        assert_eq!(f.stats().parse_errors, 0, "split at {at}");
    }
    let mut f = Flow1::new();
    f.feed(REQ, &get("/a"), 0).feed(REQ, &get("/b"), 0).feed_bytes(RESP, &both);
    assert_eq!(strip_len(f.out.clone()), strip_len(whole));
    assert_eq!(f.stats().parse_errors, 0);
    assert_eq!(f.stats().bytes_dropped, 0);
}

#[test]
fn chunked_many_small_chunks_and_extensions() {
    let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
    for i in 0..200 {
        resp.extend_from_slice(format!("{:X};ext=v{i}\r\n{}\r\n", 3, "abc").as_bytes());
    }
    resp.extend_from_slice(b"0\r\nX-Checksum: 1234\r\n\r\n");
    resp.extend_from_slice(&resp_cl(200, "OK", ""));
    for seg in [1usize, 7, 64, 1500] {
        let mut f = Flow1::new();
        f.feed(REQ, &get("/1"), 0).feed(REQ, &get("/2"), 0);
        for c in resp.chunks(seg) {
            f.feed(RESP, c, 0);
        }
        assert_eq!(f.out.len(), 2, "seg {seg}");
        assert_eq!(f.stats().parse_errors, 0);
    }
}

#[test]
fn chunked_request_body() {
    let mut req =
        b"POST /stream HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n");
    let total = req.len();
    req.extend_from_slice(&get("/next"));
    let (p, rec) = parse1(REQ, &req, false);
    assert_eq!(p, Progress::Message { consumed: total, skip: 0 });
    assert_eq!(rec.request_length, Some(total as u32));
    let mut f = Flow1::new();
    f.feed_bytes(REQ, &req);
    f.feed(RESP, &resp_cl(200, "OK", ""), 0).feed(RESP, &resp_cl(200, "OK", ""), 0);
    assert_eq!(f.out.len(), 2);
    assert_eq!(f.out[1].endpoint, "/next");
}

#[test]
fn large_chunk_is_skipped_not_buffered() {
    let mut f = Flow1::new();
    f.feed(REQ, &get("/big"), 0);
    f.feed(RESP, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n", 0);
    assert_eq!(f.out.len(), 1);
    let filler = vec![b'z'; 4096];
    for _ in 0..256 {
        f.feed(RESP, &filler, 0);
    }
    f.feed(RESP, b"\r\n0\r\n\r\n", 0);
    f.feed(REQ, &get("/next"), 0).feed(RESP, &resp_cl(200, "OK", "k"), 0);
    assert_eq!(f.out.len(), 2);
    assert_eq!(f.out[1].endpoint, "/next");
    assert_eq!(f.stats().bytes_dropped, 0);
    assert_eq!(f.stats().parse_errors, 0);
}

#[test]
fn content_length_split_at_every_byte() {
    let req = sample("req-post.bin");
    let resp = sample("resp-200.bin");
    let whole = {
        let mut f = Flow1::new();
        f.feed(REQ, &req, 0).feed(RESP, &resp, 0);
        f.out.clone()
    };
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].request_length, Some(req.len() as u32));
    assert_eq!(whole[0].response_length, Some(resp.len() as u32));
    for at in 0..=req.len().max(resp.len()) {
        let mut f = Flow1::new();
        f.feed_split(REQ, &req, at.min(req.len()));
        f.feed_split(RESP, &resp, at.min(resp.len()));
        assert_eq!(f.out, whole, "split at {at}");
    }
    let mut f = Flow1::new();
    f.feed_bytes(REQ, &req).feed_bytes(RESP, &resp);
    assert_eq!(f.out, whole);
    // A large body in many segments, then the next exchange.
    let mut f = Flow1::new();
    f.feed(REQ, &get("/dl"), 0);
    let hdr: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    f.feed(RESP, hdr, 0);
    for _ in 0..100 {
        f.feed(RESP, &[b'q'; 1000], 0);
    }
    f.feed(REQ, &get("/n"), 0).feed(RESP, &resp, 0);
    assert_eq!(f.out.len(), 2);
    assert_eq!(f.out[0].response_length, Some(100000 + hdr.len() as u32));
    assert_eq!(f.stats().bytes_dropped, 0);
}

#[test]
fn body_until_close() {
    let mut f = Flow1::new();
    f.feed(REQ, b"GET /old HTTP/1.0\r\n\r\n", 0);
    f.feed(RESP, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome", 0);
    f.feed(RESP, b" more body bytes", 0);
    assert_eq!(f.out.len(), 1);
    assert_eq!(f.out[0].version, "1.0");
    assert_eq!(f.stats().parse_errors, 0);
}

#[test]
fn upgrade_then_frames_are_skipped() {
    let mut f = Flow1::new();
    f.feed(
        REQ,
        b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        0,
    );
    f.feed(
        RESP,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x05hello",
        0,
    );
    f.feed(REQ, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 0);
    f.feed(RESP, b"\x81\x02hi", 0);
    assert_eq!(f.out.len(), 1);
    assert_eq!(f.out[0].response_code, Some(101));
    assert_eq!(f.stats().parse_errors, 0);
}

// ---------------------------------------------------------------- truncation

#[test]
fn truncated_64_byte_request_line() {
    let buf = get(&format!("/very/long/path/{}", "segment/".repeat(20)));
    let (p, rec) = parse1(REQ, &buf[..64], true);
    assert_eq!(p, Progress::Message { consumed: 64, skip: 0 });
    assert!(rec.truncated);
    assert_eq!(rec.request_type, "GET");
    assert_eq!(rec.request_resource, std::str::from_utf8(&buf[4..64]).unwrap());
    assert!(rec.endpoint.starts_with("/very/long/path/segment/"));
    assert_eq!(rec.request_length, None);
    // Without at_end it waits.
    assert_eq!(parse1(REQ, &buf[..64], false).0, Progress::NeedMore);
}

/// A big request and response, each over 1024 bytes of headers.
fn big_exchange() -> (Vec<u8>, Vec<u8>) {
    let cookie = "c".repeat(1200);
    let req = format!(
        "POST /api/v2/search?q=observability&page=3 HTTP/1.1\r\nHost: search.example\r\n\
         traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
         Cookie: {cookie}\r\nContent-Length: 300\r\n\r\n{}",
        "b".repeat(300)
    );
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: envoy\r\nSet-Cookie: {cookie}\r\n\
         Content-Length: 2000\r\n\r\n{}",
        "e".repeat(2000)
    );
    (req.into_bytes(), resp.into_bytes())
}

#[test]
fn truncated_captures() {
    let (req, resp) = big_exchange();
    for n in [64usize, 256, 1024] {
        let mut f = Flow1::new();
        f.feed(REQ, &req[..n], (req.len() - n) as u64);
        f.feed(RESP, &resp[..n], (resp.len() - n) as u64);
        // The flow goes on and stays in sync.
        f.feed(REQ, &get("/next"), 0).feed(RESP, &resp_cl(200, "OK", "fine"), 0);
        assert_eq!(f.out.len(), 2, "n={n}");
        let r = &f.out[0];
        assert!(r.truncated, "n={n}");
        assert_eq!(r.request_type, "POST");
        assert!(r.endpoint.starts_with("/api/v2/search"), "n={n}: {}", r.endpoint);
        assert_eq!(r.response_code, Some(503));
        assert_eq!(r.response_status, ResponseStatus::ServerError);
        assert_eq!(r.response_exception, "Service Unavailable");
        if n >= 256 {
            assert_eq!(r.request_domain, "search.example");
            assert_eq!(r.trace.trace_id, "0af7651916cd43dd8448eb211c80319c");
            assert_eq!(r.endpoint, "/api/v2/search");
        }
        assert_eq!(f.out[1].endpoint, "/next");
        assert_eq!(f.out[1].response_code, Some(200));
        assert!(!f.out[1].truncated);
        assert_eq!(f.stats().parse_errors, 0, "n={n}");
    }
}

#[test]
fn truncated_capture_with_complete_headers_keeps_sync() {
    // Headers fit in the capture; the rest of the body is skipped by length.
    let body = "x".repeat(5000);
    let resp = resp_cl(200, "OK", &body);
    let chunked_resp = chunked(200, "OK", &[&body, &body]);
    for n in [256usize, 1024] {
        let mut f = Flow1::new();
        f.feed(REQ, &get("/a"), 0).feed(RESP, &resp[..n], (resp.len() - n) as u64);
        f.feed(REQ, &get("/b"), 0).feed(RESP, &chunked_resp[..n], (chunked_resp.len() - n) as u64);
        // A later write of the same chunked body (the capture was per write).
        f.feed(RESP, b"0\r\n\r\n", 0);
        f.feed(REQ, &get("/c"), 0).feed(RESP, &resp_cl(404, "Not Found", ""), 0);
        assert_eq!(f.out.len(), 3, "n={n}");
        assert_eq!(f.out[0].response_length, Some(resp.len() as u32));
        assert_eq!(f.out[1].response_code, Some(200));
        // The capture cut the bodies: the records say so.
        assert!(f.out[0].truncated);
        assert!(f.out[1].truncated);
        assert_eq!(f.out[2].endpoint, "/c");
        assert_eq!(f.out[2].response_code, Some(404));
        assert_eq!(f.stats().parse_errors, 0);
    }
}

#[test]
fn tiny_truncated_response_still_pairs() {
    let mut f = Flow1::new();
    f.feed(REQ, &get("/a"), 0).feed(RESP, b"HTTP/1.1 2", 100);
    assert_eq!(f.out.len(), 1);
    assert_eq!(f.out[0].response_code, None);
    assert!(f.out[0].truncated);
}

// ---------------------------------------------------------------- robustness

#[test]
fn invalid_inputs() {
    let bad: &[(Direction, &[u8])] = &[
        (REQ, b"\x00\x01\x02\x03garbage\r\n\r\n"),
        (REQ, b"GET / HTTP/2.0\r\n\r\n"),
        (REQ, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        (REQ, b"get / HTTP/1.1\r\n\r\n"),
        (REQ, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"),
        (REQ, b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n"),
        (REQ, b"POST / HTTP/1.1\r\nContent-Length: 2000000000000\r\n\r\n"),
        (REQ, b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        (REQ, b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        (RESP, b"HTTP/1.1 abc OK\r\n\r\n"),
        (RESP, b"HTTP/1.1 20 OK\r\n\r\n"),
        (RESP, b"HTTP/3.0 200 OK\r\n\r\n"),
        (RESP, b"\x00\x00\x12\x04\x00\x00\x00\x00\x00"),
        (RESP, b"SSH-2.0-OpenSSH_9.6\r\n"),
    ];
    for (dir, b) in bad {
        for at_end in [false, true] {
            assert_eq!(
                parse1(*dir, b, at_end).0,
                Progress::Invalid,
                "{:?} {at_end}",
                String::from_utf8_lossy(b)
            );
        }
    }
    // Garbage without any line end is rejected at once, not buffered.
    assert_eq!(parse1(REQ, b"\x16\x03\x01\x00", false).0, Progress::Invalid);
    assert_eq!(parse1(RESP, b"HTTX", false).0, Progress::Invalid);
    // Too long a header section.
    let mut huge = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.resize(MAX_HEADER_SECTION + 10, b'p');
    assert_eq!(parse1(REQ, &huge, false).0, Progress::Invalid);
    let (p, rec) = parse1(REQ, &huge, true);
    assert_eq!(p, Progress::Message { consumed: huge.len(), skip: 0 });
    assert!(rec.truncated);
    // Too many header lines.
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for _ in 0..=MAX_HEADERS {
        many.extend_from_slice(b"A: b\r\n");
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(parse1(REQ, &many, false).0, Progress::Invalid);
}

#[test]
fn broken_chunk_framing_resyncs() {
    let mut f = Flow1::new();
    f.feed(REQ, &get("/a"), 0).feed(REQ, &get("/b"), 0);
    f.feed(RESP, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0);
    f.feed(RESP, b"zz-not-hex\r\nstuff", 0);
    f.feed(RESP, &resp_cl(200, "OK", "x"), 0);
    assert_eq!(f.out.len(), 2);
    assert_eq!(f.out[1].endpoint, "/b");
    assert_eq!(f.stats().parse_errors, 0);
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet: &[u8] =
        b"GET /HTP1.0\r\n:;abcdef0123456789 chunkedContent-LengthTransfer-Encoding";
    let seeds = [sample("req-post.bin"), sample("resp-404-chunked.bin"), sample("resp-200.bin")];
    let mut rec = L7Record::default();
    for round in 0..3000 {
        let len = (next() % 300) as usize;
        let mut buf: Vec<u8> = if round % 3 == 0 {
            (0..len).map(|_| next() as u8).collect()
        } else {
            (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect()
        };
        if round % 2 == 0 {
            // Mutate a real message.
            let s = &seeds[round % seeds.len()];
            buf = s.clone();
            for _ in 0..(next() % 6) {
                let i = (next() % buf.len() as u64) as usize;
                buf[i] = next() as u8;
            }
            buf.truncate((next() % (buf.len() as u64 + 1)) as usize);
        }
        for dir in [REQ, RESP] {
            let mut p = Http1Parser::new(Transport::Tcp);
            for at_end in [false, true] {
                let mut off = 0;
                while off < buf.len() {
                    match p.parse(dir, &buf[off..], at_end, &mut rec) {
                        Progress::Message { consumed, .. } | Progress::Skipped { consumed, .. } => {
                            assert!(consumed >= 1 && consumed <= buf.len() - off);
                            off += consumed;
                        }
                        _ => break,
                    }
                }
            }
            let _ = detect(&buf, Transport::Tcp);
            let mut f = Flow1::new();
            for c in buf.chunks(1 + (next() % 40) as usize) {
                f.feed(dir, c, next() % 3);
            }
        }
    }
}

#[test]
fn kind_ring_wraps() {
    let mut r = KindRing::default();
    for i in 0..100 {
        r.push(if i % 3 == 0 { ReqKind::Head } else { ReqKind::Other });
    }
    assert_eq!(r.len, 64);
    // Oldest kept is i = 36 (a HEAD).
    assert_eq!(r.pop(), ReqKind::Head);
    assert_eq!(r.pop(), ReqKind::Other);
    for _ in 0..70 {
        r.pop();
    }
    assert_eq!(r.pop(), ReqKind::Other);
}

#[test]
fn find_lf_matches_naive() {
    let mut v = vec![b'a'; 40];
    assert_eq!(find_lf(&v), None);
    for i in 0..40 {
        v[i] = b'\n';
        assert_eq!(find_lf(&v), Some(i));
        assert_eq!(find_lf(&v[i..]), Some(0));
        v[i] = 0x8a; // high bit set, not LF
        assert_eq!(find_lf(&v), None);
        v[i] = b'a';
    }
}

/// `cargo test --release -p fathom-protocols --lib http1::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    let req = sample("req-get.bin");
    let resp = sample("resp-200.bin");
    let mut s = Session::new(Http1Parser::new(Transport::Tcp));
    let mut n = 0u64;
    let iters = 2_000_000u64;
    let t = std::time::Instant::now();
    for i in 0..iters {
        s.feed(REQ, &req, 0, i, &mut |_| {});
        s.feed(RESP, &resp, 0, i, &mut |ev| n += ev.record.response_code.is_some() as u64);
    }
    let dt = t.elapsed();
    assert_eq!(n, iters);
    let mut p = Http1Parser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    let t2 = std::time::Instant::now();
    for _ in 0..iters {
        assert!(matches!(p.parse(REQ, &req, false, &mut rec), Progress::Message { .. }));
        assert!(matches!(p.parse(RESP, &resp, false, &mut rec), Progress::Message { .. }));
    }
    println!("http1 parser only: {:.0} ns/pair", t2.elapsed().as_nanos() as f64 / iters as f64);
    println!(
        "http1: {:.2} M pairs/s ({:.0} ns/pair)",
        iters as f64 / dt.as_secs_f64() / 1e6,
        dt.as_nanos() as f64 / iters as f64
    );
}
