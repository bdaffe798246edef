//! Trace context carried in headers (HTTP/1, HTTP/2, Dubbo attachments) or
//! SQL comments: W3C traceparent, B3 (single and multi header), Jaeger
//! uber-trace-id, SkyWalking sw8, and X-Request-ID.

use crate::record::push_bounded;

/// Which propagation format the trace id came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceFormat {
    #[default]
    None,
    W3c,
    B3,
    Jaeger,
    SkyWalking,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceContext {
    pub format: TraceFormat,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub x_request_id: String,
}

impl TraceContext {
    pub fn clear(&mut self) {
        self.format = TraceFormat::None;
        self.trace_id.clear();
        self.span_id.clear();
        self.parent_span_id.clear();
        self.x_request_id.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.trace_id.is_empty() && self.x_request_id.is_empty()
    }

    pub fn copy_from(&mut self, o: &TraceContext) {
        self.format = o.format;
        for (d, s) in [
            (&mut self.trace_id, &o.trace_id),
            (&mut self.span_id, &o.span_id),
            (&mut self.parent_span_id, &o.parent_span_id),
            (&mut self.x_request_id, &o.x_request_id),
        ] {
            d.clear();
            d.push_str(s);
        }
    }

    /// Take ids from `o` where this context has none.
    pub fn fill_from(&mut self, o: &TraceContext) {
        if self.trace_id.is_empty() && !o.trace_id.is_empty() {
            self.format = o.format;
            self.trace_id.push_str(&o.trace_id);
            self.span_id.clear();
            self.span_id.push_str(&o.span_id);
            self.parent_span_id.clear();
            self.parent_span_id.push_str(&o.parent_span_id);
        }
        if self.x_request_id.is_empty() {
            self.x_request_id.push_str(&o.x_request_id);
        }
    }

    /// Look at one header; returns true when it was a trace header.
    /// Names compare case-insensitively. The first trace id seen wins, except
    /// that W3C traceparent takes precedence over the others.
    pub fn observe_header(&mut self, name: &[u8], value: &[u8]) -> bool {
        let value = trim(value);
        if name.eq_ignore_ascii_case(b"traceparent") {
            self.parse_traceparent(value)
        } else if name.eq_ignore_ascii_case(b"b3") {
            self.parse_b3_single(value)
        } else if name.eq_ignore_ascii_case(b"x-b3-traceid") {
            self.take_id(TraceFormat::B3, value, None, None)
        } else if name.eq_ignore_ascii_case(b"x-b3-spanid") {
            if self.format == TraceFormat::B3 || self.format == TraceFormat::None {
                self.span_id.clear();
                push_bounded(&mut self.span_id, hex_only(value));
            }
            true
        } else if name.eq_ignore_ascii_case(b"x-b3-parentspanid") {
            if self.format == TraceFormat::B3 || self.format == TraceFormat::None {
                self.parent_span_id.clear();
                push_bounded(&mut self.parent_span_id, hex_only(value));
            }
            true
        } else if name.eq_ignore_ascii_case(b"uber-trace-id") {
            self.parse_jaeger(value)
        } else if name.eq_ignore_ascii_case(b"sw8") {
            self.parse_sw8(value)
        } else if name.eq_ignore_ascii_case(b"x-request-id") {
            if self.x_request_id.is_empty() {
                push_bounded(&mut self.x_request_id, value);
            }
            true
        } else {
            false
        }
    }

    fn take_id(
        &mut self,
        format: TraceFormat,
        trace: &[u8],
        span: Option<&[u8]>,
        parent: Option<&[u8]>,
    ) -> bool {
        if trace.is_empty() {
            return false;
        }
        let wins = self.trace_id.is_empty()
            || (format == TraceFormat::W3c && self.format != TraceFormat::W3c);
        if !wins {
            return true;
        }
        self.format = format;
        self.trace_id.clear();
        push_bounded(&mut self.trace_id, trace);
        if let Some(s) = span {
            self.span_id.clear();
            push_bounded(&mut self.span_id, s);
        }
        if let Some(p) = parent {
            self.parent_span_id.clear();
            push_bounded(&mut self.parent_span_id, p);
        }
        true
    }

    /// `version-traceid(32 hex)-parentid(16 hex)-flags`
    fn parse_traceparent(&mut self, v: &[u8]) -> bool {
        let mut it = v.split(|&b| b == b'-');
        let (Some(_ver), Some(tid), Some(sid)) = (it.next(), it.next(), it.next()) else {
            return false;
        };
        if tid.len() != 32 || sid.len() != 16 || !is_hex(tid) || !is_hex(sid) {
            return false;
        }
        self.take_id(TraceFormat::W3c, tid, Some(sid), None)
    }

    /// `traceid-spanid[-sampled[-parentspanid]]`, or just a sampling flag.
    fn parse_b3_single(&mut self, v: &[u8]) -> bool {
        let mut it = v.split(|&b| b == b'-');
        let tid = it.next().unwrap_or_default();
        let Some(sid) = it.next() else { return false };
        let _sampled = it.next();
        let parent = it.next();
        if !(tid.len() == 16 || tid.len() == 32) || !is_hex(tid) || !is_hex(sid) {
            return false;
        }
        self.take_id(TraceFormat::B3, tid, Some(sid), parent)
    }

    /// `traceid:spanid:parentid:flags`, colons possibly URL-encoded.
    fn parse_jaeger(&mut self, v: &[u8]) -> bool {
        let mut parts: [&[u8]; 4] = [&[]; 4];
        let mut n = 0;
        let mut start = 0;
        let mut i = 0;
        while i <= v.len() && n < 4 {
            let (sep, skip) = if i == v.len() {
                (true, 0)
            } else if v[i] == b':' {
                (true, 1)
            } else if v[i..].len() >= 3 && v[i..i + 3].eq_ignore_ascii_case(b"%3a") {
                (true, 3)
            } else {
                (false, 1)
            };
            if sep {
                parts[n] = &v[start..i];
                n += 1;
                start = i + skip;
                if skip == 0 {
                    break;
                }
                i += skip;
            } else {
                i += 1;
            }
        }
        if n < 2 || !is_hex(parts[0]) || parts[0].is_empty() {
            return false;
        }
        let parent = if n >= 3 && parts[2] != b"0" { Some(parts[2]) } else { None };
        self.take_id(TraceFormat::Jaeger, parts[0], Some(parts[1]), parent)
    }

    /// `sample-traceId-segmentId-spanId-service-instance-endpoint-target`,
    /// the ids base64-encoded; the trace id is kept decoded when it is text.
    fn parse_sw8(&mut self, v: &[u8]) -> bool {
        let mut it = v.split(|&b| b == b'-');
        let (Some(_sample), Some(tid), Some(seg), Some(span)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return false;
        };
        let mut buf = [0u8; 96];
        let tid = match base64_decode(tid, &mut buf) {
            Some(n) if n > 0 => &buf[..n],
            _ => tid,
        };
        if !self.take_id(TraceFormat::SkyWalking, tid, None, None) {
            return false;
        }
        if self.format == TraceFormat::SkyWalking {
            let mut sbuf = [0u8; 96];
            let seg = match base64_decode(seg, &mut sbuf) {
                Some(n) => &sbuf[..n],
                None => seg,
            };
            // SkyWalking's span identity is segment id + span index.
            self.span_id.clear();
            push_bounded(&mut self.span_id, seg);
            self.span_id.push('-');
            push_bounded(&mut self.span_id, span);
        }
        true
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn is_hex(v: &[u8]) -> bool {
    v.iter().all(|b| b.is_ascii_hexdigit())
}

fn hex_only(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    &v[..n]
}

/// Standard base64 (with or without padding) into `out`; None when invalid
/// or too long. No allocation.
fn base64_decode(src: &[u8], out: &mut [u8]) -> Option<usize> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let src = match src.iter().position(|&c| c == b'=') {
        Some(p) => &src[..p],
        None => src,
    };
    if src.len() % 4 == 1 || src.len() / 4 * 3 + 3 > out.len() {
        return None;
    }
    let mut n = 0;
    for chunk in src.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        let take = chunk.len() - 1;
        out[n..n + take].copy_from_slice(&bytes[..take]);
        n += take;
    }
    // Keep only printable decodings; binary ids stay in their encoded form.
    if out[..n].iter().all(|b| b.is_ascii_graphic()) {
        Some(n)
    } else {
        None
    }
}

/// Scan SQL text for trace context in comments, e.g.
/// `/* traceparent='00-...-...-01' */` (sqlcommenter) or `/* x-request-id: abc */`.
pub fn observe_sql_comments(ctx: &mut TraceContext, sql: &[u8]) {
    let mut rest = sql;
    while let Some(start) = find(rest, b"/*") {
        let body_start = start + 2;
        let Some(len) = find(&rest[body_start..], b"*/") else {
            break;
        };
        let body = &rest[body_start..body_start + len];
        for item in body.split(|&b| b == b',') {
            let sep = item.iter().position(|&b| b == b'=' || b == b':');
            if let Some(p) = sep {
                let name = item[..p].trim_ascii();
                let mut value = item[p + 1..].trim_ascii();
                if value.len() >= 2 && (value[0] == b'\'' || value[0] == b'"') {
                    value = &value[1..value.len() - 1];
                }
                ctx.observe_header(name, value);
            }
        }
        rest = &rest[body_start + len + 2..];
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w3c() {
        let mut t = TraceContext::default();
        assert!(t.observe_header(
            b"TraceParent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert_eq!(t.format, TraceFormat::W3c);
        assert_eq!(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(t.span_id, "b7ad6b7169203331");
    }

    #[test]
    fn w3c_wins_over_b3() {
        let mut t = TraceContext::default();
        t.observe_header(b"X-B3-TraceId", b"463ac35c9f6413ad48485a3953bb6124");
        t.observe_header(b"X-B3-SpanId", b"a2fb4a1d1a96d312");
        assert_eq!(t.format, TraceFormat::B3);
        assert_eq!(t.span_id, "a2fb4a1d1a96d312");
        t.observe_header(
            b"traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        assert_eq!(t.format, TraceFormat::W3c);
        assert_eq!(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
    }

    #[test]
    fn b3_single() {
        let mut t = TraceContext::default();
        assert!(t.observe_header(
            b"b3",
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
        ));
        assert_eq!(t.trace_id, "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(t.span_id, "e457b5a2e4d86bd1");
        assert_eq!(t.parent_span_id, "05e3ac9a4f6e3b90");
        let mut t = TraceContext::default();
        assert!(!t.observe_header(b"b3", b"0"));
        assert!(t.trace_id.is_empty());
    }

    #[test]
    fn jaeger_plain_and_encoded() {
        let mut t = TraceContext::default();
        assert!(t.observe_header(b"uber-trace-id", b"5e9a6b1c2d3e4f50:1a2b3c4d5e6f7081:0:1"));
        assert_eq!(t.trace_id, "5e9a6b1c2d3e4f50");
        assert_eq!(t.span_id, "1a2b3c4d5e6f7081");
        assert_eq!(t.parent_span_id, "");
        let mut t = TraceContext::default();
        assert!(t.observe_header(b"Uber-Trace-Id", b"abc%3Adef%3A123%3A1"));
        assert_eq!(t.trace_id, "abc");
        assert_eq!(t.span_id, "def");
        assert_eq!(t.parent_span_id, "123");
    }

    #[test]
    fn skywalking() {
        // trace id "a.b.c" = YS5iLmM=, segment "s1" = czE=
        let mut t = TraceContext::default();
        assert!(t.observe_header(b"sw8", b"1-YS5iLmM=-czE=-3-c2Vydg==-aW5zdA==-L2E=-aG9zdA=="));
        assert_eq!(t.format, TraceFormat::SkyWalking);
        assert_eq!(t.trace_id, "a.b.c");
        assert_eq!(t.span_id, "s1-3");
    }

    #[test]
    fn request_id_and_unrelated() {
        let mut t = TraceContext::default();
        assert!(t.observe_header(b"X-Request-ID", b" req-42 "));
        assert!(!t.observe_header(b"Host", b"x"));
        assert_eq!(t.x_request_id, "req-42");
    }

    #[test]
    fn sql_comment() {
        let mut t = TraceContext::default();
        observe_sql_comments(
            &mut t,
            b"SELECT 1 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',x-request-id='r1'*/",
        );
        assert_eq!(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(t.x_request_id, "r1");
    }

    #[test]
    fn garbage_never_panics() {
        let mut t = TraceContext::default();
        for v in [&b""[..], b"-", b"--", b":::", b"%3", b"%3a%3a", b"1-=-=-", b"1-\xff\xff-a-b"] {
            for n in [&b"traceparent"[..], b"b3", b"uber-trace-id", b"sw8"] {
                t.observe_header(n, v);
            }
        }
        observe_sql_comments(&mut t, b"/* /* */ */ /*");
    }
}
