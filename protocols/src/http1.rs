//! HTTP/1.0 and HTTP/1.1.
//!
//! One [`Http1Parser`] per flow keeps a little state per direction:
//!
//! * `Idle`: the next byte starts a message (request or status line).
//! * `ChunkSize` / `ChunkTrailer`: inside a chunked body whose message was
//!   already reported. Chunk framing is walked on later calls and reported as
//!   [`Progress::Skipped`]; chunk data is never buffered (it is handed to the
//!   session as `skip`).
//! * `Lost`: the framing of the rest of a message is unknown (headers cut by a
//!   truncated capture, broken chunk framing, a body that runs to connection
//!   close, a tunnel after `CONNECT` or `101 Switching Protocols`). Bytes are
//!   skipped until a segment starts with something that looks like an HTTP
//!   message again.
//!
//! A fixed ring of 64 entries remembers which pending requests were `HEAD`
//! or `CONNECT`, so the matching response knows it has no body.
//!
//! Lengths: `request_length` / `response_length` are the exact message size
//! when the body is framed by `Content-Length` (even when the body is skipped
//! or cut by the capture) or when a chunked body is entirely in the buffer.
//! A chunked body that continues past the buffer is reported as soon as its
//! headers are parsed (so streaming responses pair promptly); its length is
//! then a lower bound (headers plus the chunks framed so far). A body that
//! runs to connection close counts the bytes seen. Headers cut by the capture
//! leave the length unknown (`None`).

use crate::parser::{Direction, L7Parser, Pairing, Progress, Transport};
use crate::record::{set_bounded, L7Protocol, L7Record, ResponseStatus};

/// Longest header section (start line included) accepted.
const MAX_HEADER_SECTION: usize = 64 * 1024;
/// Most header lines accepted in one message.
const MAX_HEADERS: usize = 512;
/// Largest Content-Length or chunk size believed.
const MAX_BODY: u64 = 1 << 40;
/// Longest chunk-size line (with extensions) and trailer line.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILER_LINE: usize = 8 * 1024;
/// Longest method token accepted.
const MAX_METHOD: usize = 16;

/// Methods `detect` (and resynchronisation) trust.
const METHODS: [&[u8]; 9] =
    [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"];

/// Does `buf`, the first bytes of a flow in one direction, look like HTTP/1?
/// Returns the direction the bytes travel in.
pub fn detect(buf: &[u8], transport: Transport) -> Option<Direction> {
    if transport != Transport::Tcp {
        return None;
    }
    if is_response_start(buf) {
        Some(Direction::Response)
    } else if is_request_start(buf) {
        Some(Direction::Request)
    } else {
        None
    }
}

/// `HTTP/1.0 ` or `HTTP/1.1 ` + three digits, then SP, CR, LF or the end.
fn is_response_start(buf: &[u8]) -> bool {
    let Some(head) = buf.get(..12) else {
        return false;
    };
    (head.starts_with(b"HTTP/1.1 ") || head.starts_with(b"HTTP/1.0 "))
        && (b'1'..=b'5').contains(&head[9])
        && head[10].is_ascii_digit()
        && head[11].is_ascii_digit()
        && buf.get(12).is_none_or(|&b| b == b' ' || b == b'\r' || b == b'\n')
}

/// A known method, SP, a plausible request-target, and (when present) a
/// version that is a prefix of `HTTP/1.0` / `HTTP/1.1` ended by CR or LF.
fn is_request_start(buf: &[u8]) -> bool {
    let Some(method) =
        METHODS.iter().find(|m| buf.starts_with(m) && buf.get(m.len()) == Some(&b' '))
    else {
        return false;
    };
    let rest = &buf[method.len() + 1..];
    let Some(&first) = rest.first() else {
        return false;
    };
    let target_ok = match first {
        b'/' => true,
        b'*' => *method == b"OPTIONS" && rest.get(1).is_none_or(|&b| b == b' '),
        b'h' | b'H' => {
            prefix_ci(rest, b"http://") || prefix_ci(rest, b"https://") || *method == b"CONNECT"
        }
        b if *method == b"CONNECT" => b.is_ascii_alphanumeric() || b == b'[',
        _ => false,
    };
    if !target_ok {
        return false;
    }
    let tlen = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    if !rest[..tlen].iter().all(|&b| is_target_byte(b)) {
        return false;
    }
    let Some(version) = rest.get(tlen + 1..) else {
        return true; // target cut by the capture
    };
    let n = version.len().min(8);
    (version[..n] == b"HTTP/1.1"[..n] || version[..n] == b"HTTP/1.0"[..n])
        && version.get(8).is_none_or(|&b| b == b'\r' || b == b'\n')
}

/// `buf` starts with `pat` (ASCII case-insensitive), or is cut inside it.
fn prefix_ci(buf: &[u8], pat: &[u8]) -> bool {
    let n = buf.len().min(pat.len());
    buf[..n].eq_ignore_ascii_case(&pat[..n])
}

fn is_target_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Flow {
    #[default]
    Idle,
    ChunkSize,
    ChunkTrailer,
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqKind {
    Other,
    Head,
    Connect,
}

/// FIFO of the kinds of up to 64 requests awaiting their response.
#[derive(Clone, Copy, Debug, Default)]
struct KindRing {
    head: u64,
    connect: u64,
    len: u32,
}

impl KindRing {
    fn push(&mut self, kind: ReqKind) {
        if self.len >= 64 {
            // Forget the oldest; pairing is lost that far back anyway.
            self.pop();
        }
        let bit = 1u64 << self.len;
        match kind {
            ReqKind::Head => self.head |= bit,
            ReqKind::Connect => self.connect |= bit,
            ReqKind::Other => {}
        }
        self.len += 1;
    }

    fn pop(&mut self) -> ReqKind {
        if self.len == 0 {
            return ReqKind::Other;
        }
        let kind = if self.head & 1 != 0 {
            ReqKind::Head
        } else if self.connect & 1 != 0 {
            ReqKind::Connect
        } else {
            ReqKind::Other
        };
        self.head >>= 1;
        self.connect >>= 1;
        self.len -= 1;
        kind
    }
}

#[derive(Debug, Default)]
pub struct Http1Parser {
    flow: [Flow; 2],
    kinds: KindRing,
}

impl Http1Parser {
    pub fn new(_transport: Transport) -> Self {
        Self::default()
    }
}

fn idx(dir: Direction) -> usize {
    match dir {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

impl L7Parser for Http1Parser {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::Http1
    }

    fn pairing(&self) -> Pairing {
        Pairing::Fifo
    }

    fn parse(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        if buf.is_empty() {
            return Progress::NeedMore;
        }
        // State changes only on Message/Skipped: after NeedMore the session
        // presents the same bytes again.
        match self.flow[idx(dir)] {
            Flow::Idle => self.parse_message(dir, buf, at_end, rec),
            Flow::ChunkSize => self.continue_chunks(dir, buf, at_end, Phase::Size, rec),
            Flow::ChunkTrailer => self.continue_chunks(dir, buf, at_end, Phase::Trailer, rec),
            Flow::Lost => self.resync(dir, buf, at_end, rec),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Size,
    Trailer,
}

impl Phase {
    fn flow(self) -> Flow {
        match self {
            Phase::Size => Flow::ChunkSize,
            Phase::Trailer => Flow::ChunkTrailer,
        }
    }
}

/// Result of walking chunk framing.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// The body (last chunk and trailers) ends at this offset.
    Done(usize),
    /// The body goes on: bytes up to `pos` are framed, then `skip` more bytes
    /// (the rest of a chunk's data and its CRLF) lie beyond the buffer, then
    /// framing resumes in `phase`.
    Partial { pos: usize, skip: u64, phase: Phase },
    /// Not chunk framing.
    Bad,
}

fn walk_chunks(buf: &[u8], start: usize, mut phase: Phase) -> Walk {
    let mut pos = start;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let limit = match phase {
            Phase::Size => MAX_CHUNK_LINE,
            Phase::Trailer => MAX_TRAILER_LINE,
        };
        let Some(nl) = find_lf(&rest[..rest.len().min(limit)]) else {
            if rest.len() >= limit {
                return Walk::Bad;
            }
            return Walk::Partial { pos, skip: 0, phase };
        };
        let line = strip_cr(&rest[..nl]);
        let next = pos + nl + 1;
        match phase {
            Phase::Size => {
                let Some(size) = chunk_size(line) else {
                    return Walk::Bad;
                };
                if size == 0 {
                    phase = Phase::Trailer;
                    pos = next;
                    continue;
                }
                // Data and its CRLF; not checked, the next size line is.
                let end = next as u64 + size + 2;
                if end > buf.len() as u64 {
                    return Walk::Partial { pos: buf.len(), skip: end - buf.len() as u64, phase };
                }
                pos = end as usize;
            }
            Phase::Trailer => {
                if line.is_empty() {
                    return Walk::Done(next);
                }
                if !line.contains(&b':') {
                    return Walk::Bad;
                }
                pos = next;
            }
        }
    }
}

/// `1*HEXDIG [ BWS ";" ext ]`, bounded by [`MAX_BODY`].
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 11 {
        return None;
    }
    let tail = line[digits..].trim_ascii_start();
    if !(tail.is_empty() || tail[0] == b';') {
        return None;
    }
    let mut v: u64 = 0;
    for &b in &line[..digits] {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        v = (v << 4) | d as u64;
    }
    (v <= MAX_BODY).then_some(v)
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Len(u64),
    Chunked,
    UntilClose,
}

/// What the header lines said.
#[derive(Debug, Default)]
struct Headers {
    /// Offset just past the empty line; None when the section is cut.
    end: Option<usize>,
    content_length: Option<u64>,
    chunked: bool,
    upgrade: bool,
}

/// Parse header lines from `start`, feeding `rec`. Err: not HTTP.
fn parse_headers(
    buf: &[u8],
    start: usize,
    rec: &mut L7Record,
    request: bool,
    at_end: bool,
) -> Result<Headers, ()> {
    let mut h = Headers::default();
    let hay = &buf[..buf.len().min(MAX_HEADER_SECTION)];
    let mut pos = start;
    let mut count = 0usize;
    while let Some(rest) = hay.get(pos..) {
        let Some(nl) = find_lf(rest) else { break };
        let line = strip_cr(&rest[..nl]);
        pos += nl + 1;
        if line.is_empty() {
            h.end = Some(pos);
            return Ok(h);
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(());
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue; // obs-fold continuation: ignored
        }
        let mut colon = 0;
        while colon < line.len() && TOKEN[line[colon] as usize] {
            colon += 1;
        }
        if colon == 0 || line.get(colon) != Some(&b':') {
            return Err(());
        }
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        match name.len() {
            4 if request && rec.request_domain.is_empty() && name.eq_ignore_ascii_case(b"host") => {
                set_bounded(&mut rec.request_domain, value);
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => h.upgrade = true,
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_decimal(value).ok_or(())?;
                if h.content_length.is_some_and(|c| c != n) {
                    return Err(());
                }
                h.content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                // The last coding decides; a later header line overrides.
                h.chunked = ends_with_chunked(value);
            }
            _ => {}
        }
        rec.trace.observe_header(name, value);
    }
    if !at_end && buf.len() >= MAX_HEADER_SECTION {
        return Err(()); // section too long
    }
    Ok(h)
}

/// Bytes allowed in a header name (RFC 9110 `tchar`).
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = is_token_byte(i as u8);
        i += 1;
    }
    t
};

const fn is_token_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~')
}

fn ends_with_chunked(v: &[u8]) -> bool {
    let v = v.trim_ascii_end();
    let n = v.len();
    n >= 7
        && v[n - 7..].eq_ignore_ascii_case(b"chunked")
        && (n == 7 || matches!(v[n - 8], b',' | b' ' | b'\t'))
}

/// Digits only, at most [`MAX_BODY`].
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 13 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (b - b'0') as u64;
    }
    (n <= MAX_BODY).then_some(n)
}

/// First `\n` in `hay`, eight bytes at a time.
#[inline]
fn find_lf(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const PAT: u64 = LO * b'\n' as u64;
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        let Ok(a) = <[u8; 8]>::try_from(c) else { break };
        let x = u64::from_le_bytes(a) ^ PAT;
        let t = x.wrapping_sub(LO) & !x & HI;
        if t != 0 {
            return Some(base + (t.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    let tail = hay.get(base..).unwrap_or_default();
    tail.iter().position(|&b| b == b'\n').map(|p| base + p)
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn version_str(v: &[u8]) -> Option<&'static str> {
    match v {
        b"HTTP/1.1" => Some("1.1"),
        b"HTTP/1.0" => Some("1.0"),
        _ => None,
    }
}

/// Could `v` (cut by the buffer end) become `HTTP/1.0` or `HTTP/1.1`?
fn version_prefix(v: &[u8]) -> bool {
    let n = v.len().min(8);
    v.len() <= 8 && (v == &b"HTTP/1.1"[..n] || v == &b"HTTP/1.0"[..n])
}

#[derive(Debug, Default)]
struct RequestLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    version: Option<&'static str>,
}

/// Parse a request line; `complete` is false when the buffer ends inside
/// it, in which case the fields hold what could be read.
fn request_line(line: &[u8], complete: bool) -> Result<RequestLine<'_>, ()> {
    let mut out = RequestLine::default();
    let mlen = line
        .iter()
        .position(|&b| !(b.is_ascii_uppercase() || b == b'-' || b == b'_'))
        .unwrap_or(line.len());
    let method = &line[..mlen];
    if mlen > MAX_METHOD {
        return Err(());
    }
    out.method = method;
    match line.get(mlen) {
        None if !complete && mlen > 0 => return Ok(out),
        Some(b' ') if mlen > 0 => {}
        _ => return Err(()),
    }
    let rest = &line[mlen + 1..];
    let tlen = rest.iter().position(|&b| !is_target_byte(b)).unwrap_or(rest.len());
    let target = &rest[..tlen];
    out.target = target;
    match rest.get(tlen) {
        None if !complete => return Ok(out),
        Some(b' ') if tlen > 0 => {}
        _ => return Err(()),
    }
    let sp2 = tlen;
    let version = rest[sp2 + 1..].trim_ascii_end();
    if complete {
        out.version = Some(version_str(version).ok_or(())?);
    } else if !version_prefix(version) {
        return Err(());
    } else {
        out.version = version_str(version);
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct StatusLine<'a> {
    version: Option<&'static str>,
    code: Option<u16>,
    reason: &'a [u8],
}

fn status_line(line: &[u8], complete: bool) -> Result<StatusLine<'_>, ()> {
    let mut out = StatusLine::default();
    let vlen = line.len().min(8);
    if !version_prefix(&line[..vlen]) {
        return Err(());
    }
    out.version = version_str(&line[..vlen]);
    let rest = &line[vlen..];
    if rest.is_empty() {
        return if complete { Err(()) } else { Ok(out) };
    }
    if rest[0] != b' ' {
        return Err(());
    }
    let digits = &rest[1..rest.len().min(4)];
    if !digits.iter().all(|b| b.is_ascii_digit()) || digits.first() == Some(&b'0') {
        return Err(());
    }
    if digits.len() < 3 {
        return if complete { Err(()) } else { Ok(out) };
    }
    out.code = Some(digits.iter().fold(0u16, |a, &b| a * 10 + (b - b'0') as u16));
    let tail = &rest[4..];
    if let Some((&first, reason)) = tail.split_first() {
        if first != b' ' {
            return Err(());
        }
        out.reason = reason.trim_ascii();
    }
    Ok(out)
}

fn status_of(code: u16) -> ResponseStatus {
    match code {
        100..=399 => ResponseStatus::Ok,
        400..=499 => ResponseStatus::ClientError,
        500..=599 => ResponseStatus::ServerError,
        _ => ResponseStatus::Unknown,
    }
}

/// Does `buf` start like a message travelling in `dir`?
#[derive(Debug, PartialEq, Eq)]
enum Start {
    Yes,
    /// Too short to tell, but could be.
    Maybe,
    No,
}

fn starts_message(dir: Direction, buf: &[u8]) -> Start {
    match dir {
        Direction::Response => {
            let n = buf.len().min(9);
            let p = &buf[..n];
            if p == &b"HTTP/1.1 "[..n] || p == &b"HTTP/1.0 "[..n] {
                if n == 9 {
                    Start::Yes
                } else {
                    Start::Maybe
                }
            } else {
                Start::No
            }
        }
        Direction::Request => {
            let mut maybe = false;
            for m in METHODS {
                let want = m.len() + 1;
                let n = buf.len().min(want);
                let p = &buf[..n];
                if p.get(..n.min(m.len())) == m.get(..n.min(m.len()))
                    && (n <= m.len() || p[m.len()] == b' ')
                {
                    if n == want {
                        return Start::Yes;
                    }
                    maybe = true;
                }
            }
            if maybe {
                Start::Maybe
            } else {
                Start::No
            }
        }
    }
}

/// Path of a request-target without query or fragment.
fn endpoint_of(target: &[u8]) -> &[u8] {
    let path = match absolute_parts(target) {
        Some((_, path)) => path,
        None => target,
    };
    let end = path.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(path.len());
    &path[..end]
}

/// Authority and path of an absolute-form target (`http://host/path`).
fn absolute_parts(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let p = target.windows(3).take(8).position(|w| w == b"://")?;
    if p == 0 || !target[..p].iter().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let rest = &target[p + 3..];
    let a = rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let path: &[u8] = if rest.get(a) == Some(&b'/') { &rest[a..] } else { b"/" };
    Some((&rest[..a], path))
}

fn len32(n: u64) -> Option<u32> {
    Some(n.min(u32::MAX as u64) as u32)
}

impl Http1Parser {
    fn resync(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        match starts_message(dir, buf) {
            Start::Yes => match self.parse_message(dir, buf, at_end, rec) {
                Progress::Invalid => Progress::Skipped { consumed: buf.len(), skip: 0 },
                p => p,
            },
            Start::Maybe if !at_end => Progress::NeedMore,
            _ => Progress::Skipped { consumed: buf.len(), skip: 0 },
        }
    }

    fn continue_chunks(
        &mut self,
        dir: Direction,
        buf: &[u8],
        at_end: bool,
        phase: Phase,
        rec: &mut L7Record,
    ) -> Progress {
        let d = idx(dir);
        match walk_chunks(buf, 0, phase) {
            Walk::Done(end) => {
                self.flow[d] = Flow::Idle;
                Progress::Skipped { consumed: end, skip: 0 }
            }
            Walk::Partial { pos, skip, phase } => {
                if at_end {
                    // The rest of the body is gone with the capture.
                    self.flow[d] = Flow::Lost;
                    let skip = if pos == buf.len() { skip } else { 0 };
                    Progress::Skipped { consumed: buf.len(), skip }
                } else if pos == 0 {
                    Progress::NeedMore
                } else {
                    self.flow[d] = phase.flow();
                    Progress::Skipped { consumed: pos, skip }
                }
            }
            Walk::Bad => {
                self.flow[d] = Flow::Lost;
                self.resync(dir, buf, at_end, rec)
            }
        }
    }

    fn parse_message(
        &mut self,
        dir: Direction,
        buf: &[u8],
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let line_end = find_lf(&buf[..buf.len().min(MAX_HEADER_SECTION)]);
        let (line, complete) = match line_end {
            Some(n) => (strip_cr(&buf[..n]), true),
            None => (buf, false),
        };
        if !complete && !at_end && buf.len() >= MAX_HEADER_SECTION {
            return Progress::Invalid;
        }
        match dir {
            Direction::Request => {
                let Ok(rl) = request_line(line, complete) else {
                    return Progress::Invalid;
                };
                if !complete && !at_end {
                    return Progress::NeedMore;
                }
                rec.clear();
                rec.protocol = L7Protocol::Http1;
                self.request(buf, line_end.map_or(buf.len(), |n| n + 1), &rl, at_end, rec)
            }
            Direction::Response => {
                let Ok(sl) = status_line(line, complete) else {
                    return Progress::Invalid;
                };
                if !complete && !at_end {
                    return Progress::NeedMore;
                }
                rec.clear();
                rec.protocol = L7Protocol::Http1;
                self.response(buf, line_end.map_or(buf.len(), |n| n + 1), &sl, at_end, rec)
            }
        }
    }

    fn request(
        &mut self,
        buf: &[u8],
        hdr_start: usize,
        rl: &RequestLine<'_>,
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let Ok(h) = parse_headers(buf, hdr_start, rec, true, at_end) else {
            return Progress::Invalid;
        };
        if h.end.is_none() && !at_end {
            return Progress::NeedMore;
        }
        set_bounded(&mut rec.request_type, rl.method);
        if let Some(v) = rl.version {
            rec.version.push_str(v);
        }
        set_bounded(&mut rec.request_resource, rl.target);
        let connect = rl.method == b"CONNECT";
        if connect {
            set_bounded(&mut rec.endpoint, rl.target);
            if rec.request_domain.is_empty() {
                set_bounded(&mut rec.request_domain, rl.target);
            }
        } else {
            set_bounded(&mut rec.endpoint, endpoint_of(rl.target));
            if rec.request_domain.is_empty() {
                if let Some((authority, _)) = absolute_parts(rl.target) {
                    set_bounded(&mut rec.request_domain, authority);
                }
            }
        }
        let kind = match rl.method {
            b"HEAD" => ReqKind::Head,
            b"CONNECT" => ReqKind::Connect,
            _ => ReqKind::Other,
        };
        self.kinds.push(kind);
        let body = if h.chunked { Body::Chunked } else { Body::Len(h.content_length.unwrap_or(0)) };
        let (progress, length) = self.frame(0, buf, h.end, body, at_end, rec);
        rec.request_length = length;
        if (connect || h.upgrade) && self.flow[0] == Flow::Idle {
            // Tunnel or protocol switch may follow: resync on the next request.
            self.flow[0] = Flow::Lost;
        }
        progress
    }

    fn response(
        &mut self,
        buf: &[u8],
        hdr_start: usize,
        sl: &StatusLine<'_>,
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let Ok(h) = parse_headers(buf, hdr_start, rec, false, at_end) else {
            return Progress::Invalid;
        };
        if h.end.is_none() && !at_end {
            return Progress::NeedMore;
        }
        let code = sl.code.unwrap_or(0);
        if (100..200).contains(&code) && code != 101 {
            // Interim response (100 Continue, 103 Early Hints): not the answer.
            return match h.end {
                Some(end) => Progress::Skipped { consumed: end, skip: 0 },
                None => {
                    self.flow[1] = Flow::Lost;
                    Progress::Skipped { consumed: buf.len(), skip: 0 }
                }
            };
        }
        if let Some(v) = sl.version {
            rec.version.push_str(v);
        }
        if let Some(c) = sl.code {
            rec.response_code = Some(c as i32);
            rec.response_status = status_of(c);
            if c >= 400 {
                set_bounded(&mut rec.response_exception, sl.reason);
            }
        }
        let kind = self.kinds.pop();
        let tunnel = code == 101 || (kind == ReqKind::Connect && (200..300).contains(&code));
        let mut body = if kind == ReqKind::Head || code == 204 || code == 304 || tunnel {
            Body::Len(0)
        } else if h.chunked {
            Body::Chunked
        } else if let Some(n) = h.content_length {
            Body::Len(n)
        } else {
            Body::UntilClose
        };
        if let (Body::Len(n), Some(end)) = (body, h.end) {
            // A response to a HEAD we did not see: the next response follows
            // right after the headers.
            if n > 0 && buf.get(end..).is_some_and(|b| b.starts_with(b"HTTP/1.")) {
                body = Body::Len(0);
            }
        }
        let (progress, length) = self.frame(1, buf, h.end, body, at_end, rec);
        rec.response_length = length;
        if tunnel {
            self.flow = [Flow::Lost; 2];
        }
        progress
    }

    /// Delimit the body of the message whose header section ends at
    /// `hdr_end` (None: cut by the capture); set the direction's state.
    /// Returns the progress and the message length to report.
    fn frame(
        &mut self,
        d: usize,
        buf: &[u8],
        hdr_end: Option<usize>,
        body: Body,
        at_end: bool,
        rec: &mut L7Record,
    ) -> (Progress, Option<u32>) {
        let Some(hdr_end) = hdr_end else {
            // Headers cut: body framing unknown.
            rec.truncated = true;
            self.flow[d] = Flow::Lost;
            return (Progress::Message { consumed: buf.len(), skip: 0 }, None);
        };
        let len = buf.len();
        match body {
            Body::Len(n) => {
                let total = hdr_end as u64 + n;
                self.flow[d] = Flow::Idle;
                if total <= len as u64 {
                    (Progress::Message { consumed: total as usize, skip: 0 }, len32(total))
                } else {
                    rec.truncated = at_end;
                    let skip = total - len as u64;
                    (Progress::Message { consumed: len, skip }, len32(total))
                }
            }
            Body::Chunked => match walk_chunks(buf, hdr_end, Phase::Size) {
                Walk::Done(end) => {
                    self.flow[d] = Flow::Idle;
                    (Progress::Message { consumed: end, skip: 0 }, len32(end as u64))
                }
                Walk::Partial { pos, skip, phase } => {
                    let seen = len32(pos as u64 + skip);
                    if at_end {
                        rec.truncated = true;
                        self.flow[d] = Flow::Lost;
                        let skip = if pos == len { skip } else { 0 };
                        (Progress::Message { consumed: len, skip }, seen)
                    } else {
                        self.flow[d] = phase.flow();
                        (Progress::Message { consumed: pos, skip }, seen)
                    }
                }
                Walk::Bad => {
                    self.flow[d] = Flow::Lost;
                    (Progress::Message { consumed: hdr_end, skip: 0 }, len32(hdr_end as u64))
                }
            },
            Body::UntilClose => {
                rec.truncated = at_end;
                self.flow[d] = Flow::Lost;
                (Progress::Message { consumed: len, skip: 0 }, len32(len as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests;
