//! Dubbo 2 protocol (the `dubbo://` default): a 16-byte header — magic
//! 0xdabb, flag byte (0x80 request, 0x40 two-way, 0x20 event, low 5 bits the
//! serialization id), status byte, 8-byte request id, 4-byte body length —
//! then the body, Hessian2 by default (serialization 2; FastJSON, 6, is read
//! too).
//!
//! Request body: dubbo version, service path, service version, method name,
//! parameter types, arguments, attachments. Records: `request_type` = method,
//! `request_domain` = service, `request_resource` and `endpoint` =
//! `service/method`, `version` = the dubbo version, `request_id` = the
//! request id (pairing by id). Trace context is read from attachments
//! (traceparent, sw8, uber-trace-id, b3, X-B3-*, x-request-id) by scanning
//! the body for those keys as Hessian strings. One-way requests get no
//! response; heartbeats (event flag) are skipped.
//!
//! Response: status 20 is OK unless the body holds an exception (response
//! flag 0 or 3), which is a `server_error` with the exception's class
//! (and message when it is the first field) as `response_exception`. Other
//! statuses: 30 client timeout, 40 bad request, 90 client error are
//! `client_error`; 31 server timeout, 50 bad response, 60 service not found,
//! 70 service error, 80 server error, 100 thread pool exhausted are
//! `server_error`; the body's error message is the exception.
//!
//! Bodies longer than 8 KiB are not buffered: the fields in their first
//! 8 KiB are read and the rest is skipped.

use crate::parser::{Direction, L7Parser, Pairing, Progress, Transport};
use crate::record::{push_bounded, L7Protocol, L7Record, ResponseStatus};

const MAGIC: [u8; 2] = [0xda, 0xbb];
const HEADER: usize = 16;
const MAX_BODY: u32 = 8 * 1024 * 1024;
/// Body bytes looked at (and waited for, at most).
const BODY_NEED: usize = 8192;

const FLAG_REQUEST: u8 = 0x80;
const FLAG_TWO_WAY: u8 = 0x40;
const FLAG_EVENT: u8 = 0x20;
const SER_MASK: u8 = 0x1f;
const HESSIAN2: u8 = 2;
const FASTJSON: u8 = 6;

const STATUS_OK: u8 = 20;

fn known_serialization(id: u8) -> bool {
    matches!(id, 2..=4 | 6..=12 | 16 | 21 | 22 | 23 | 25)
}

fn known_status(s: u8) -> bool {
    matches!(s, 20 | 30 | 31 | 40 | 50 | 60 | 70 | 80 | 90 | 100)
}

/// Status classification, see the module doc.
fn status_class(s: u8) -> ResponseStatus {
    match s {
        20 => ResponseStatus::Ok,
        30 | 40 | 90 => ResponseStatus::ClientError,
        31 | 50 | 60 | 70 | 80 | 100 => ResponseStatus::ServerError,
        _ => ResponseStatus::Unknown,
    }
}

/// Does `buf`, the first bytes of a flow in one direction, look like Dubbo?
pub fn detect(buf: &[u8], transport: Transport) -> Option<Direction> {
    if transport != Transport::Tcp || buf.len() < HEADER || buf[..2] != MAGIC {
        return None;
    }
    let flag = buf[2];
    let status = buf[3];
    let ser = flag & SER_MASK;
    let body_len = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
    if !known_serialization(ser) || body_len >= MAX_BODY {
        return None;
    }
    let body = &buf[HEADER..];
    if flag & FLAG_REQUEST != 0 {
        if status != 0 && status != STATUS_OK {
            return None;
        }
        if ser == HESSIAN2 && flag & FLAG_EVENT == 0 {
            // The dubbo version string comes first.
            if let Some(&b) = body.first() {
                if !(b <= 0x1f || (0x30..=0x33).contains(&b) || b == b'S') {
                    return None;
                }
            }
        }
        Some(Direction::Request)
    } else {
        if flag & FLAG_TWO_WAY != 0 || !known_status(status) {
            return None;
        }
        if ser == HESSIAN2 && status == STATUS_OK && flag & FLAG_EVENT == 0 {
            if let Some(&b) = body.first() {
                if !(0x90..=0x95).contains(&b) {
                    return None;
                }
            }
        }
        Some(Direction::Response)
    }
}

/// A Hessian2 string at the head of `b`: the UTF-8 bytes of its first chunk
/// and the bytes the whole string takes. `Some((None, 1))` for null.
fn hessian_string(b: &[u8]) -> Option<(Option<&[u8]>, usize)> {
    let first = *b.first()?;
    let (chars, hdr, last) = match first {
        0x00..=0x1f => (first as usize, 1, true),
        0x30..=0x33 => (((first as usize - 0x30) << 8) | *b.get(1)? as usize, 2, true),
        b'S' | b'R' => ((*b.get(1)? as usize) << 8 | *b.get(2)? as usize, 3, first == b'S'),
        b'N' => return Some((None, 1)),
        _ => return None,
    };
    let data = &b[hdr..];
    let n = utf8_len(data, chars)?;
    let s = &data[..n];
    let mut used = hdr + n;
    if !last {
        // Further chunks: walk them (bounded by the buffer), keep the first.
        let mut rest = &b[used..];
        loop {
            let c = *rest.first()?;
            let (chars, h, last) = match c {
                0x00..=0x1f => (c as usize, 1, true),
                0x30..=0x33 => ((((c - 0x30) as usize) << 8) | *rest.get(1)? as usize, 2, true),
                b'S' | b'R' => {
                    (((*rest.get(1)? as usize) << 8) | *rest.get(2)? as usize, 3, c == b'S')
                }
                _ => return None,
            };
            let n = utf8_len(rest.get(h..)?, chars)?;
            used += h + n;
            rest = &rest[h + n..];
            if last {
                break;
            }
        }
    }
    Some((Some(s), used))
}

/// Bytes taken by `chars` UTF-16 units of (modified) UTF-8 at the head of `b`.
fn utf8_len(b: &[u8], chars: usize) -> Option<usize> {
    let mut i = 0;
    let mut c = 0;
    while c < chars {
        let lead = *b.get(i)?;
        let (n, units) = match lead {
            0x00..=0x7f => (1, 1),
            0xc0..=0xdf => (2, 1),
            0xe0..=0xef => (3, 1),
            0xf0..=0xf7 => (4, 2),
            _ => (1, 1),
        };
        i += n;
        c += units;
    }
    (i <= b.len()).then_some(i)
}

/// A Hessian2 int at the head of `b`.
fn hessian_int(b: &[u8]) -> Option<(i32, usize)> {
    let f = *b.first()?;
    Some(match f {
        0x80..=0xbf => (f as i32 - 0x90, 1),
        0xc0..=0xcf => (((f as i32 - 0xc8) << 8) | *b.get(1)? as i32, 2),
        0xd0..=0xd7 => {
            (((f as i32 - 0xd4) << 16) | (*b.get(1)? as i32) << 8 | *b.get(2)? as i32, 3)
        }
        b'I' => {
            let s = b.get(1..5)?;
            (i32::from_be_bytes([s[0], s[1], s[2], s[3]]), 5)
        }
        _ => return None,
    })
}

/// Attachment keys that carry trace context, by length.
const TRACE_KEYS: [&[u8]; 8] = [
    b"b3",
    b"sw8",
    b"traceparent",
    b"uber-trace-id",
    b"x-b3-traceid",
    b"x-b3-spanid",
    b"x-b3-parentspanid",
    b"x-request-id",
];

/// Scan a Hessian2 body for trace keys stored as short strings, each
/// followed by a string value. Linear: at each byte only keys of that
/// length are compared.
fn scan_trace(body: &[u8], rec: &mut L7Record) {
    let mut i = 0;
    while i + 1 < body.len() {
        let n = body[i] as usize;
        if (2..=17).contains(&n) {
            if let Some(key) = body.get(i + 1..i + 1 + n) {
                let hit = TRACE_KEYS.iter().any(|k| k.len() == n && k.eq_ignore_ascii_case(key));
                if hit {
                    if let Some((Some(v), used)) = body.get(i + 1 + n..).and_then(hessian_string) {
                        rec.trace.observe_header(key, v);
                        i += 1 + n + used;
                        continue;
                    }
                }
            }
        }
        i += 1;
    }
}

/// The next JSON string line of a FastJSON body: its content, unescaped
/// only as far as dropping the quotes.
fn json_line<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
    let line = b[..end].trim_ascii();
    *b = b.get(end + 1..).unwrap_or_default();
    let s = line.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    Some(s)
}

#[derive(Debug, Default)]
pub struct DubboParser {}

impl DubboParser {
    pub fn new(_transport: Transport) -> Self {
        Self::default()
    }

    fn request(ser: u8, body: &[u8], rec: &mut L7Record) {
        let mut fields: [&[u8]; 4] = [&[]; 4];
        let mut got = 0;
        if ser == HESSIAN2 {
            let mut rest = body;
            while got < 4 {
                let Some((s, used)) = hessian_string(rest) else {
                    break;
                };
                fields[got] = s.unwrap_or_default();
                got += 1;
                rest = &rest[used..];
            }
            scan_trace(rest, rec);
        } else if ser == FASTJSON {
            let mut rest = body;
            while got < 4 {
                let Some(s) = json_line(&mut rest) else { break };
                fields[got] = s;
                got += 1;
            }
        }
        let [dubbo_version, service, _service_version, method] = fields;
        push_bounded(&mut rec.version, dubbo_version);
        push_bounded(&mut rec.request_domain, service);
        push_bounded(&mut rec.request_type, method);
        if !service.is_empty() || !method.is_empty() {
            for dst in [&mut rec.request_resource, &mut rec.endpoint] {
                push_bounded(dst, service);
                dst.push('/');
                push_bounded(dst, method);
            }
        }
    }

    fn response(ser: u8, status: u8, body: &[u8], rec: &mut L7Record) {
        rec.response_code = Some(status as i32);
        rec.response_status = status_class(status);
        if ser != HESSIAN2 {
            return;
        }
        if status != STATUS_OK {
            if let Some((Some(msg), _)) = hessian_string(body) {
                push_bounded(&mut rec.response_exception, msg);
            }
            return;
        }
        let Some((flag, used)) = hessian_int(body) else {
            return;
        };
        if flag == 0 || flag == 3 {
            rec.response_status = ResponseStatus::ServerError;
            exception_name(&body[used..], rec);
            if rec.response_exception.is_empty() {
                rec.response_exception.push_str("exception");
            }
        }
    }
}

/// The class (and the message, when it is the first field) of a Hessian2
/// exception object: `C` class-name field-count field-names... `O`/0x60+ fields.
fn exception_name(b: &[u8], rec: &mut L7Record) {
    let Some(rest) = b.strip_prefix(b"C") else {
        return;
    };
    let Some((Some(class), used)) = hessian_string(rest) else {
        return;
    };
    push_bounded(&mut rec.response_exception, class);
    let rest = &rest[used..];
    let Some((count, used)) = hessian_int(rest) else {
        return;
    };
    let mut rest = &rest[used..];
    let mut first_field: &[u8] = &[];
    for i in 0..count.clamp(0, 64) {
        let Some((Some(name), used)) = hessian_string(rest) else {
            return;
        };
        if i == 0 {
            first_field = name;
        }
        rest = &rest[used..];
    }
    if first_field != b"detailMessage" {
        return;
    }
    // Object instance: 0x60..0x6f (class ref inline) or 'O' + int.
    let rest = match rest.first() {
        Some(0x60..=0x6f) => &rest[1..],
        Some(b'O') => match hessian_int(&rest[1..]) {
            Some((_, used)) => &rest[1 + used..],
            None => return,
        },
        _ => return,
    };
    if let Some((Some(msg), _)) = hessian_string(rest) {
        rec.response_exception.push_str(": ");
        push_bounded(&mut rec.response_exception, msg);
    }
}

impl L7Parser for DubboParser {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::Dubbo
    }

    fn pairing(&self) -> Pairing {
        Pairing::ById
    }

    fn parse(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        if buf.len() < 2 {
            return Progress::NeedMore;
        }
        if buf[..2] != MAGIC {
            return Progress::Invalid;
        }
        if buf.len() < HEADER {
            return Progress::NeedMore;
        }
        let flag = buf[2];
        let status = buf[3];
        let id =
            u64::from_be_bytes([buf[4], buf[5], buf[6], buf[7], buf[8], buf[9], buf[10], buf[11]]);
        let body_len = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
        if body_len >= MAX_BODY {
            return Progress::Invalid;
        }
        let is_request = flag & FLAG_REQUEST != 0;
        if is_request != (dir == Direction::Request) {
            return Progress::Invalid;
        }
        let total = HEADER + body_len as usize;
        let end = total.min(buf.len());
        let consumed = end;
        let skip = (total - end) as u64;
        if flag & FLAG_EVENT != 0 {
            // Heartbeat (or other event): nothing to report.
            return Progress::Skipped { consumed, skip };
        }
        let body = &buf[HEADER..end];
        let need = (body_len as usize).min(BODY_NEED);
        let mut truncated = false;
        if body.len() < need {
            if !at_end {
                return Progress::NeedMore;
            }
            truncated = true;
        }
        let body = &body[..body.len().min(need)];
        let ser = flag & SER_MASK;
        rec.clear();
        rec.protocol = L7Protocol::Dubbo;
        rec.truncated = truncated;
        rec.request_id = Some(id);
        if is_request {
            rec.request_length = Some(total as u32);
            rec.no_response = flag & FLAG_TWO_WAY == 0;
            Self::request(ser, body, rec);
        } else {
            rec.response_length = Some(total as u32);
            Self::response(ser, status, body, rec);
        }
        Progress::Message { consumed, skip }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MessageType;
    use crate::session::Session;
    use Direction::{Request as Req, Response as Resp};

    const SERVICE: &str = "org.apache.dubbo.demo.DemoService";

    fn hs(v: &mut Vec<u8>, s: &str) {
        let n = s.encode_utf16().count();
        if n <= 31 {
            v.push(n as u8);
        } else if n <= 1023 {
            v.push(0x30 + (n >> 8) as u8);
            v.push(n as u8);
        } else {
            v.push(b'S');
            v.push((n >> 8) as u8);
            v.push(n as u8);
        }
        v.extend_from_slice(s.as_bytes());
    }

    fn msg(flag: u8, status: u8, id: u64, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0xda, 0xbb, flag, status];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    pub(crate) fn request(id: u64, flag: u8, arg: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for s in ["2.0.2", SERVICE, "0.0.0", "sayHello", "Ljava/lang/String;", arg] {
            hs(&mut b, s);
        }
        b.push(b'H');
        for (k, v) in [
            ("path", SERVICE),
            ("remote.application", "demo-consumer"),
            ("interface", SERVICE),
            ("version", "0.0.0"),
        ] {
            hs(&mut b, k);
            hs(&mut b, v);
        }
        hs(&mut b, "timeout");
        b.extend_from_slice(&[0xd4, 0x0b, 0xb8]);
        hs(&mut b, "traceparent");
        hs(&mut b, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        b.push(b'Z');
        msg(flag, 0, id, &b)
    }

    pub(crate) fn ok_response(id: u64) -> Vec<u8> {
        let mut b = vec![0x94];
        hs(&mut b, "Hello world, response from provider: 172.17.0.2:20880");
        b.push(b'H');
        hs(&mut b, "dubbo");
        hs(&mut b, "2.0.2");
        b.push(b'Z');
        msg(0x02, 20, id, &b)
    }

    fn exception_response(id: u64) -> Vec<u8> {
        let mut b = vec![0x90, b'C'];
        hs(&mut b, "java.lang.IllegalStateException");
        b.push(0x94);
        for f in ["detailMessage", "cause", "stackTrace", "suppressedExceptions"] {
            hs(&mut b, f);
        }
        b.push(0x60);
        hs(&mut b, "boom");
        b.extend_from_slice(&[0x51, 0x90, b'N', b'N']);
        msg(0x02, 20, id, &b)
    }

    pub(crate) fn error_response(id: u64, status: u8) -> Vec<u8> {
        let mut b = Vec::new();
        hs(&mut b, "Fail to invoke remote method: sayHello, provider: dubbo://172.17.0.2:20880/org.apache.dubbo.demo.DemoService, cause: java.util.concurrent.RejectedExecutionException");
        msg(0x02, status, id, &b)
    }

    fn both(msgs: &[(Direction, Vec<u8>)]) -> Vec<L7Record> {
        crate::test_support::whole_and_bytewise(|| DubboParser::new(Transport::Tcp), msgs)
    }

    #[test]
    fn request_response_pairs_by_id() {
        let msgs = vec![
            (Req, request(1, 0xc2, "world")),
            (Req, request(2, 0xc2, "again")),
            (Req, msg(0xe2, 0, 3, b"N")), // heartbeat
            (Resp, msg(0x22, 20, 3, b"N")),
            (Resp, error_response(2, 70)),
            (Resp, ok_response(1)),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 2, "{r:#?}");
        let e = &r[0];
        assert_eq!(e.request_id, Some(2));
        assert_eq!(e.response_code, Some(70));
        assert_eq!(e.response_status, ResponseStatus::ServerError);
        assert!(e.response_exception.starts_with("Fail to invoke remote method"));
        let o = &r[1];
        assert_eq!(o.msg_type, MessageType::Session);
        assert_eq!(o.protocol, L7Protocol::Dubbo);
        assert_eq!(o.version, "2.0.2");
        assert_eq!(o.request_type, "sayHello");
        assert_eq!(o.request_domain, SERVICE);
        assert_eq!(o.request_resource, "org.apache.dubbo.demo.DemoService/sayHello");
        assert_eq!(o.endpoint, o.request_resource);
        assert_eq!(o.request_id, Some(1));
        assert_eq!(o.response_code, Some(20));
        assert_eq!(o.response_status, ResponseStatus::Ok);
        assert_eq!(o.trace.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(o.request_length, Some(msgs[0].1.len() as u32));
        assert_eq!(o.response_length, Some(msgs[5].1.len() as u32));
    }

    #[test]
    fn exceptions_statuses_one_way() {
        let msgs = vec![
            (Req, request(10, 0xc2, "x")),
            (Resp, exception_response(10)),
            (Req, request(11, 0xc2, "x")),
            (Resp, error_response(11, 40)),
            (Req, request(12, 0x82, "fire-and-forget")),
            (Req, request(13, 0xc2, "x")),
            (Resp, error_response(13, 31)),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 4, "{r:#?}");
        assert_eq!(r[0].response_status, ResponseStatus::ServerError);
        assert_eq!(r[0].response_code, Some(20));
        assert_eq!(r[0].response_exception, "java.lang.IllegalStateException: boom");
        assert_eq!(r[1].response_status, ResponseStatus::ClientError);
        assert!(r[2].no_response);
        assert_eq!(r[2].request_id, Some(12));
        assert_eq!(r[3].response_status, ResponseStatus::ServerError);
        assert_eq!(r[3].response_code, Some(31));
    }

    #[test]
    fn truncated_and_large() {
        let big_arg = "y".repeat(3000);
        let req = request(21, 0xc2, &big_arg);
        for n in [64usize, 256, 1024] {
            let mut s = Session::new(DubboParser::new(Transport::Tcp));
            let mut out = Vec::new();
            s.feed(Req, &req[..n], (req.len() - n) as u64, 1, &mut |e| out.push(e.record.clone()));
            s.feed(Resp, &ok_response(21), 0, 2, &mut |e| out.push(e.record.clone()));
            assert_eq!(out.len(), 1);
            let r = &out[0];
            assert!(r.truncated);
            assert_eq!(r.request_id, Some(21));
            assert_eq!(r.version, "2.0.2");
            assert_eq!(r.request_length, Some(req.len() as u32));
            assert_eq!(r.response_status, ResponseStatus::Ok);
            if n >= 256 {
                assert_eq!(r.request_resource, "org.apache.dubbo.demo.DemoService/sayHello");
            }
        }
        // Bodies beyond 8 KiB are not buffered; the stream continues after them.
        let huge = request(22, 0xc2, &"z".repeat(20_000));
        let msgs = vec![
            (Req, huge),
            (Req, request(23, 0xc2, "small")),
            (Resp, ok_response(23)),
            (Resp, ok_response(22)),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].request_id, Some(23));
        assert_eq!(r[1].request_id, Some(22));
        assert_eq!(r[1].request_type, "sayHello");
        assert!(!r[1].truncated);
    }

    #[test]
    fn hessian_strings() {
        let mut v = Vec::new();
        hs(&mut v, "héllo");
        assert_eq!(hessian_string(&v), Some((Some("héllo".as_bytes()), v.len())));
        let long = "a".repeat(500);
        let mut v = Vec::new();
        hs(&mut v, &long);
        assert_eq!(v[0], 0x31);
        assert_eq!(hessian_string(&v).unwrap().1, v.len());
        // Chunked: R(2 chars) + S(3 chars).
        let v = b"R\x00\x02abS\x00\x03cde".to_vec();
        assert_eq!(hessian_string(&v), Some((Some(&b"ab"[..]), v.len())));
        assert_eq!(hessian_string(b"N"), Some((None, 1)));
        assert_eq!(hessian_string(b"\x05ab"), None);
        assert_eq!(hessian_int(&[0x90]), Some((0, 1)));
        assert_eq!(hessian_int(&[0x95]), Some((5, 1)));
        assert_eq!(hessian_int(&[0xd4, 0x0b, 0xb8]), Some((3000, 3)));
        assert_eq!(hessian_int(&[0xc7, 0x00]), Some((-256, 2)));
    }

    #[test]
    fn detection() {
        assert_eq!(detect(&request(1, 0xc2, "w"), Transport::Tcp), Some(Req));
        assert_eq!(detect(&request(1, 0xc2, "w")[..20], Transport::Tcp), Some(Req));
        assert_eq!(detect(&ok_response(1), Transport::Tcp), Some(Resp));
        assert_eq!(detect(&error_response(1, 70), Transport::Tcp), Some(Resp));
        assert_eq!(detect(&msg(0xe2, 0, 3, b"N"), Transport::Tcp), Some(Req));
        assert_eq!(detect(&request(1, 0xc2, "w"), Transport::Udp), None);
        let mut bad = ok_response(1);
        bad[3] = 21;
        assert_eq!(detect(&bad, Transport::Tcp), None);
        let mut bad = request(1, 0xc2, "w");
        bad[2] = 0xc0 | 30;
        assert_eq!(detect(&bad, Transport::Tcp), None);
        for other in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"*1\r\n$4\r\nPING\r\n",
            b"\x09\x00\x00\x00\x03select 1",
            b"\x00\x00\x00\x0e\x00\x12\x00\x03\x00\x00\x00\x01\x00\x04test",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(detect(other, Transport::Tcp), None, "{other:?}");
        }
    }

    #[test]
    fn fastjson_request() {
        let body = b"\"2.0.2\"\n\"org.apache.dubbo.demo.DemoService\"\n\"0.0.0\"\n\"sayHello\"\n\"Ljava/lang/String;\"\n\"world\"\n{}\n";
        let r = both(&[(Req, msg(0xc6, 0, 5, body)), (Resp, msg(0x06, 20, 5, b"1\n\"hi\"\n"))]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].request_resource, "org.apache.dubbo.demo.DemoService/sayHello");
        assert_eq!(r[0].response_status, ResponseStatus::Ok);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x0bad_cafe_dead_beef;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut rec = L7Record::default();
        let samples =
            [request(1, 0xc2, "w"), ok_response(1), exception_response(2), error_response(3, 70)];
        for round in 0..4000 {
            let mut p = DubboParser::new(Transport::Tcp);
            let mut buf = samples[round % samples.len()].clone();
            for _ in 0..1 + rnd() % 6 {
                let i = 2 + (rnd() as usize) % (buf.len() - 2);
                buf[i] = rnd() as u8;
            }
            if round % 5 == 0 {
                buf.truncate((rnd() as usize) % buf.len());
            }
            for dir in [Req, Resp] {
                for at_end in [false, true] {
                    let _ = p.parse(dir, &buf, at_end, &mut rec);
                }
            }
            let _ = detect(&buf, Transport::Tcp);
            let mut s = Session::new(DubboParser::new(Transport::Tcp));
            for c in buf.chunks(9) {
                s.feed(Req, c, 0, 0, &mut |_| {});
                s.feed(Resp, c, rnd() % 2, 0, &mut |_| {});
            }
        }
        for n in 0..64 {
            let _ = hessian_string(&samples[0][16..16 + n]);
            scan_trace(&samples[0][16..16 + n], &mut rec);
        }
    }

    /// Writes tests/samples/dubbo/ (run with --ignored to refresh).
    #[test]
    #[ignore]
    fn write_samples() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples/dubbo");
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in [
            ("req-sayhello.bin", request(1, 0xc2, "world")),
            ("resp-ok.bin", ok_response(1)),
            ("resp-exception.bin", exception_response(2)),
            ("resp-status70.bin", error_response(3, 70)),
        ] {
            assert!(detect(&bytes, Transport::Tcp).is_some(), "{name}");
            std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
        }
    }
}
