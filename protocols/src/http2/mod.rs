//! HTTP/2 (RFC 9113) with HPACK (RFC 7541), and gRPC on top.
//!
//! The parser is per connection and stateful: one HPACK decoder per
//! direction (requests decode the client's header blocks, responses the
//! server's) and a small table of open streams. Each `parse` call handles
//! one frame (a HEADERS frame together with its CONTINUATION frames):
//!
//! - the client preface, SETTINGS, PING, WINDOW_UPDATE, PRIORITY, GOAWAY and
//!   unknown frame types are skipped;
//! - a request HEADERS block gives a request record at once (no wait for
//!   END_STREAM): method, authority, path, trace headers; gRPC when the
//!   content-type is `application/grpc*`;
//! - the server's HEADERS and DATA frames update the stream's state
//!   (`:status`, gRPC flag, `grpc-status`, `grpc-message`, bytes), and the
//!   frame that ends the stream (END_STREAM) gives the response record;
//! - RST_STREAM from the server ends a stream still waiting for its response
//!   with an error record named after the error code. A client's
//!   RST_STREAM gives nothing: a record from the client's side would be a new
//!   request to the session, so the call is left to time out.
//!
//! Truncated captures (`at_end`): a header block cut short is decoded as far
//! as it goes (HPACK is sequential) and its record marked truncated. A
//! capture cut inside a server frame of a stream ends that stream's response
//! there (marked truncated; the stream's later frames are ignored), since
//! its end was most likely in the lost bytes. Whenever header bytes may have
//! been lost, the direction's dynamic table is emptied: entries inserted
//! afterwards are found at their right indices, and references to older
//! ones are reported as unknown headers rather than resolved to wrong ones.
//! Server DATA frames up to 16 KiB are buffered whole so that such a cut is
//! noticed; larger ones are skipped as soon as their header is read.
//!
//! The HPACK table size follows the encoder's dynamic table size updates
//! (capped at 64 KiB whatever the peer says); a lower
//! SETTINGS_HEADER_TABLE_SIZE shrinks it when the encoder's side
//! acknowledges the SETTINGS.
//!
//! Response status: gRPC uses `grpc-status` (0 ok; CANCELLED,
//! INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
//! FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED client errors; the
//! other codes server errors); plain HTTP/2 uses `:status` (4xx client,
//! 5xx server).

mod hpack;
mod huffman;
#[cfg(test)]
mod tests;

use crate::parser::{Direction, L7Parser, Pairing, Progress, Transport};
use crate::record::{push_str_bounded, set_bounded, L7Protocol, L7Record, ResponseStatus};

use hpack::Decoder;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER: usize = 9;
/// A header block (HEADERS + CONTINUATION payloads) larger than this is
/// rejected as not HTTP/2 worth following.
const MAX_BLOCK: usize = 64 * 1024;
/// Server DATA frames up to this size (header included) are buffered whole,
/// so that a capture cut inside one is noticed; larger ones are skipped as
/// soon as their header is read. Equal to the session's default buffer.
const DATA_BUFFER_LIMIT: usize = 16 * 1024;
/// SETTINGS frames up to this size are read; larger ones are skipped.
const MAX_SETTINGS: usize = 1024;
/// The default SETTINGS_MAX_FRAME_SIZE: the bound for unknown frame types
/// and for detection.
const DEFAULT_MAX_FRAME: usize = 16 * 1024;
/// Open streams remembered per connection.
const STREAM_SLOTS: usize = 128;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHeader {
    len: usize,
    ty: u8,
    flags: u8,
    stream: u32,
    /// The reserved bit of the stream id was set.
    reserved: bool,
}

impl FrameHeader {
    fn read(buf: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; FRAME_HEADER] = buf.get(..FRAME_HEADER)?.try_into().ok()?;
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let sid = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
        Some(FrameHeader {
            len,
            ty: h[3],
            flags: h[4],
            stream: sid & 0x7fff_ffff,
            reserved: sid & 0x8000_0000 != 0,
        })
    }

    fn total(&self) -> usize {
        FRAME_HEADER + self.len
    }

    /// RFC 9113 §6 rules on stream ids and fixed payload sizes.
    fn valid(&self) -> bool {
        match self.ty {
            DATA | HEADERS | CONTINUATION => self.stream != 0,
            PRIORITY => self.stream != 0 && self.len == 5,
            RST_STREAM => self.stream != 0 && self.len == 4,
            SETTINGS => {
                self.stream == 0
                    && self.len.is_multiple_of(6)
                    && (self.flags & FLAG_ACK == 0 || self.len == 0)
            }
            PUSH_PROMISE => self.stream != 0 && self.len >= 4,
            PING => self.stream == 0 && self.len == 8,
            GOAWAY => self.stream == 0 && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            // Unknown types are ignored by HTTP/2, but only small ones are
            // believable.
            _ => self.len <= DEFAULT_MAX_FRAME,
        }
    }
}

/// Does `buf`, the first bytes of a flow in one direction, look like HTTP/2?
///
/// Request: the client preface (at least its first 16 bytes), or, joining
/// a connection midway, a HEADERS frame on an odd stream whose header block
/// opens with a `:method` field among its first representations.
/// Response: a SETTINGS frame with sane settings (or an ACK), followed by
/// nothing or by another valid frame header. Anything else: no.
pub fn detect(buf: &[u8], transport: Transport) -> Option<Direction> {
    if transport != Transport::Tcp {
        return None;
    }
    let n = buf.len().min(PREFACE.len());
    if n >= 16 && buf[..n] == PREFACE[..n] {
        return Some(Direction::Request);
    }
    let h = FrameHeader::read(buf)?;
    if h.reserved || !h.valid() || h.len > DEFAULT_MAX_FRAME {
        return None;
    }
    match h.ty {
        HEADERS if detect_request_headers(&h, buf) => Some(Direction::Request),
        SETTINGS if detect_settings(&h, buf) => Some(Direction::Response),
        _ => None,
    }
}

fn detect_request_headers(h: &FrameHeader, buf: &[u8]) -> bool {
    if h.stream.is_multiple_of(2)
        || h.flags & !(FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY) != 0
        || h.len == 0
    {
        return false;
    }
    let payload = &buf[FRAME_HEADER..buf.len().min(h.total())];
    let Some((fs, fe)) = fragment(h, payload, true) else {
        return false;
    };
    let frag = &payload[fs..fe];
    // Walk the first few representations without resolving them.
    let mut p = 0;
    for _ in 0..4 {
        let Some(&b) = frag.get(p) else { return false };
        let (prefix, literal) = match b {
            _ if b & 0x80 != 0 => (7, false),
            _ if b & 0x40 != 0 => (6, true),
            _ if b & 0x20 != 0 => (5, false),
            _ => (4, true),
        };
        let Ok(idx) = hpack::read_int(frag, &mut p, prefix) else {
            return false;
        };
        if prefix == 5 {
            continue; // table size update
        }
        if !literal {
            if idx == 0 || idx > 61 + 128 {
                return false;
            }
            if idx == 2 || idx == 3 {
                return true; // :method GET / POST
            }
            continue;
        }
        if idx == 2 {
            return true; // :method with a literal value
        }
        if idx == 0 && hpack::skip_string(frag, &mut p).is_none() {
            return false;
        }
        if hpack::skip_string(frag, &mut p).is_none() {
            return false;
        }
    }
    false
}

fn detect_settings(h: &FrameHeader, buf: &[u8]) -> bool {
    if !(h.flags == 0 || (h.flags == FLAG_ACK && h.len == 0)) {
        return false;
    }
    let Some(payload) = buf.get(FRAME_HEADER..h.total()) else {
        return false;
    };
    for s in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([s[0], s[1]]);
        let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
        let ok = match id {
            1 | 3 | 6 => true,
            2 | 8 | 9 => v <= 1,
            4 => v <= 0x7fff_ffff,
            5 => (16_384..=16_777_215).contains(&v),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    match FrameHeader::read(&buf[h.total()..]) {
        Some(next) => next.ty <= CONTINUATION && next.valid() && !next.reserved,
        // An empty SETTINGS or an ACK alone is too little to go on.
        None => h.len > 0,
    }
}

/// The header block fragment inside a HEADERS or PUSH_PROMISE payload (or a
/// CONTINUATION's whole payload), as a range of `payload`. `payload` may be
/// cut short of `h.len` (then `complete` is false). None when the padding
/// exceeds the frame.
fn fragment(h: &FrameHeader, payload: &[u8], complete: bool) -> Option<(usize, usize)> {
    let mut start = 0usize;
    let mut pad = 0usize;
    if h.ty != CONTINUATION && h.flags & FLAG_PADDED != 0 {
        match payload.first() {
            Some(&p) => pad = usize::from(p),
            None if complete => return None,
            None => return Some((0, 0)),
        }
        start = 1;
    }
    if h.ty == HEADERS && h.flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    if h.ty == PUSH_PROMISE {
        start += 4;
    }
    let end = h.len.checked_sub(pad)?;
    if end < start {
        return None;
    }
    let end = end.min(payload.len());
    Some((start.min(end), end))
}

/// What a header block said, besides what went straight into the record.
#[derive(Clone, Copy, Debug, Default)]
struct BlockInfo {
    method: bool,
    path: bool,
    authority: bool,
    status: Option<u16>,
    grpc: bool,
    grpc_status: Option<i32>,
}

/// State of one stream awaiting the end of its response.
#[derive(Debug, Default)]
struct Slot {
    /// 0: free.
    id: u32,
    request_seen: bool,
    grpc: bool,
    status: Option<u16>,
    grpc_status: Option<i32>,
    /// grpc-message from a non-final block (it normally comes in trailers).
    exception: String,
    /// Response bytes so far (frame headers included).
    bytes: u64,
    truncated: bool,
    /// The response was reported early (the capture cut it): ignore the
    /// stream's later frames rather than report a second, orphan response.
    done: bool,
}

impl Slot {
    fn reset(&mut self, id: u32) {
        self.id = id;
        self.request_seen = false;
        self.grpc = false;
        self.status = None;
        self.grpc_status = None;
        self.exception.clear();
        self.bytes = 0;
        self.truncated = false;
        self.done = false;
    }
}

pub struct Http2Parser {
    /// HPACK decoders: [requests (client blocks), responses (server blocks)].
    dec: Box<[Decoder; 2]>,
    /// SETTINGS_HEADER_TABLE_SIZE announced for each decoder, applied when
    /// the encoder's side acknowledges it.
    pending_limit: [Option<usize>; 2],
    /// Open streams, direct-mapped by stream id: a newer stream evicts the
    /// one 128 client streams older.
    slots: Vec<Slot>,
    /// A header block split over CONTINUATION frames, reassembled.
    block: Vec<u8>,
}

impl core::fmt::Debug for Http2Parser {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Http2Parser")
            .field("open_streams", &self.slots.iter().filter(|s| s.id != 0).count())
            .finish_non_exhaustive()
    }
}

impl Default for Http2Parser {
    fn default() -> Self {
        Self::new(Transport::Tcp)
    }
}

fn di(dir: Direction) -> usize {
    match dir {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

fn slot_index(id: u32) -> usize {
    (id as usize >> 1) % STREAM_SLOTS
}

fn sat32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Result of locating a header block at the head of the buffer.
struct Block {
    /// Bytes of the frames on the wire (declared lengths, even if cut).
    wire: usize,
    /// Bytes of the buffer the block uses.
    consumed: usize,
    /// Bytes of the last frame beyond the buffer (truncated captures).
    skip: u64,
    truncated: bool,
    flags: u8,
}

impl Http2Parser {
    pub fn new(_transport: Transport) -> Self {
        Http2Parser {
            dec: Box::new([Decoder::new(), Decoder::new()]),
            pending_limit: [None; 2],
            slots: Vec::new(),
            block: Vec::new(),
        }
    }

    fn slot(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.get_mut(slot_index(id)).filter(|s| s.id == id)
    }

    fn slot_or_new(&mut self, id: u32) -> &mut Slot {
        if self.slots.is_empty() {
            // Allocated on the first stream, once per connection.
            self.slots.resize_with(STREAM_SLOTS, Slot::default);
        }
        let s = &mut self.slots[slot_index(id)];
        if s.id != id {
            s.reset(id);
        }
        s
    }

    fn settings(&mut self, dir: Direction, h: &FrameHeader, buf: &[u8], at_end: bool) -> Progress {
        if h.flags & FLAG_ACK != 0 {
            // The sender of the ACK now encodes with the announced limit.
            if let Some(limit) = self.pending_limit[di(dir)].take() {
                self.dec[di(dir)].settings_limit(limit);
            }
            return skip_frame(h, buf);
        }
        if h.len > MAX_SETTINGS {
            return skip_frame(h, buf);
        }
        if buf.len() < h.total() && !at_end {
            return Progress::NeedMore;
        }
        let payload = &buf[FRAME_HEADER..buf.len().min(h.total())];
        for s in payload.chunks_exact(6) {
            if u16::from_be_bytes([s[0], s[1]]) == SETTINGS_HEADER_TABLE_SIZE {
                let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]) as usize;
                // Limits what the other side's encoder may use.
                self.pending_limit[di(dir.reverse())] = Some(v);
            }
        }
        skip_frame(h, buf)
    }

    /// Find the HEADERS (or PUSH_PROMISE) frame at the head of `buf` and its
    /// CONTINUATION frames; leaves the block in `self.block` when it spans
    /// several frames. Err: the progress to return.
    fn gather(&mut self, h: &FrameHeader, buf: &[u8], at_end: bool) -> Result<Block, Progress> {
        // Pass 1: where does the block end?
        let mut off = 0usize;
        let mut frames = 0usize;
        let mut block_len = 0usize;
        let (end, complete) = loop {
            let Some(f) = FrameHeader::read(&buf[off..]) else {
                break (off, false);
            };
            if frames > 0 && (f.ty != CONTINUATION || f.stream != h.stream) {
                return Err(Progress::Invalid);
            }
            block_len += f.len;
            if block_len > MAX_BLOCK {
                return Err(Progress::Invalid);
            }
            frames += 1;
            off += f.total();
            if off > buf.len() {
                break (off, false);
            }
            if f.flags & FLAG_END_HEADERS != 0 {
                break (off, true);
            }
        };
        if !complete && !at_end {
            return Err(Progress::NeedMore);
        }
        // Pass 2: the fragments, one after the other.
        let mut pos = 0usize;
        self.block.clear();
        for _ in 0..frames {
            let Some(f) = FrameHeader::read(&buf[pos..]) else {
                break;
            };
            let pend = (pos + f.total()).min(buf.len());
            let payload = &buf[pos + FRAME_HEADER..pend];
            let Some((fs, fe)) = fragment(&f, payload, pend == pos + f.total()) else {
                return Err(Progress::Invalid);
            };
            self.block.extend_from_slice(&payload[fs..fe]);
            pos += f.total();
        }
        let consumed = end.min(buf.len());
        Ok(Block {
            wire: end,
            consumed,
            skip: (end - consumed) as u64,
            truncated: !complete,
            flags: h.flags,
        })
    }

    /// Decode the gathered block with `dir`'s decoder, filling `rec`.
    /// Invalid HPACK (a COMPRESSION_ERROR to a real peer) ends the block
    /// early; what was decoded before it is kept.
    fn decode_block(&mut self, dir: Direction, rec: &mut L7Record) -> BlockInfo {
        let mut info = BlockInfo::default();
        let Http2Parser { dec, block, .. } = self;
        let _ = dec[di(dir)].decode(block, |name, value| on_field(name, value, rec, &mut info));
        info
    }

    fn headers(
        &mut self,
        dir: Direction,
        h: &FrameHeader,
        buf: &[u8],
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let b = match self.gather(h, buf, at_end) {
            Ok(b) => b,
            Err(p) => return p,
        };
        rec.clear();
        let info = self.decode_block(dir, rec);
        if b.truncated {
            self.dec[di(dir)].reset_table();
        }
        let done = Progress::Message { consumed: b.consumed, skip: b.skip };
        let skipped = Progress::Skipped { consumed: b.consumed, skip: b.skip };
        if h.ty == PUSH_PROMISE {
            // Decoded only to keep the table in step.
            return skipped;
        }
        let id = h.stream;
        match dir {
            Direction::Request => {
                let known = self.slot(id).is_some_and(|s| s.request_seen);
                if !(info.method || info.path || (b.truncated && !known)) {
                    // Trailers, or a block that names no request.
                    return skipped;
                }
                fill_request(rec, &info, id, &b);
                let s = self.slot_or_new(id);
                s.reset(id);
                s.request_seen = true;
                s.grpc = info.grpc;
                done
            }
            Direction::Response => {
                if id.is_multiple_of(2) {
                    return skipped; // a pushed stream: no request of ours
                }
                let end_stream = b.flags & FLAG_END_STREAM != 0;
                if self.slot(id).is_some_and(|s| s.done) {
                    return skipped;
                }
                if self.slot(id).is_none() && info.status.is_none() && info.grpc_status.is_none() {
                    // A stream we know nothing of, and a block that says
                    // nothing useful (joined midway, or cut very early).
                    return skipped;
                }
                if let Some(st) = info.status {
                    if (100..200).contains(&st) && !end_stream && !b.truncated {
                        // Informational (100-continue): the final status follows.
                        if let Some(s) = self.slot(id) {
                            s.bytes += b.wire as u64;
                        }
                        return skipped;
                    }
                }
                let s = self.slot_or_new(id);
                s.bytes += b.wire as u64;
                s.truncated |= b.truncated;
                if info.status.is_some() {
                    s.status = info.status;
                }
                // grpc-status exists only in gRPC (helps when the
                // content-type was lost with a desynchronised table).
                s.grpc |= info.grpc || info.grpc_status.is_some();
                if info.grpc_status.is_some() {
                    s.grpc_status = info.grpc_status;
                }
                if !rec.response_exception.is_empty() {
                    s.exception.clear();
                    s.exception.push_str(&rec.response_exception);
                }
                if end_stream || b.truncated {
                    self.finish_response(id, rec);
                    done
                } else {
                    skipped
                }
            }
        }
    }

    /// Fill `rec` (already cleared, maybe holding grpc-message and trace ids)
    /// with the response of stream `id` and forget the stream.
    fn finish_response(&mut self, id: u32, rec: &mut L7Record) {
        let s = self.slot_or_new(id);
        rec.protocol = if s.grpc { L7Protocol::Grpc } else { L7Protocol::Http2 };
        rec.version.clear();
        rec.version.push('2');
        rec.request_id = Some(u64::from(id));
        rec.response_length = Some(sat32(s.bytes));
        rec.truncated |= s.truncated;
        if rec.response_exception.is_empty() {
            push_str_bounded(&mut rec.response_exception, &s.exception);
        }
        if let (true, Some(gs)) = (s.grpc, s.grpc_status) {
            rec.response_code = Some(gs);
            rec.response_status = grpc_status(gs);
        } else if let Some(st) = s.status {
            rec.response_code = Some(i32::from(st));
            rec.response_status = http_status(st);
            if s.grpc && st == 200 {
                // gRPC without its grpc-status (cut off): outcome unknown.
                rec.response_code = None;
                rec.response_status = ResponseStatus::Unknown;
            }
        }
        if s.truncated {
            s.done = true;
        } else {
            s.reset(0);
        }
    }

    fn data(
        &mut self,
        dir: Direction,
        h: &FrameHeader,
        buf: &[u8],
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let total = h.total();
        if dir == Direction::Request || h.stream.is_multiple_of(2) {
            return skip_frame(h, buf);
        }
        let id = h.stream;
        let cut = buf.len() < total;
        let Some(s) = self.slot(id).filter(|s| !s.done) else {
            return skip_frame(h, buf);
        };
        if cut && total <= DATA_BUFFER_LIMIT && !at_end {
            return Progress::NeedMore;
        }
        s.bytes += total as u64;
        let truncated = cut && at_end;
        if h.flags & FLAG_END_STREAM == 0 && !truncated {
            return skip_frame(h, buf);
        }
        s.truncated |= truncated;
        if truncated && s.grpc {
            // The trailers were most likely in the lost bytes: the table
            // cannot be trusted (see Decoder::reset_table).
            self.dec[di(dir)].reset_table();
        }
        rec.clear();
        self.finish_response(id, rec);
        let consumed = total.min(buf.len());
        Progress::Message { consumed, skip: (total - consumed) as u64 }
    }

    fn rst_stream(
        &mut self,
        dir: Direction,
        h: &FrameHeader,
        buf: &[u8],
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let Some(p) = buf.get(FRAME_HEADER..FRAME_HEADER + 4) else {
            return if at_end { skip_frame(h, buf) } else { Progress::NeedMore };
        };
        let code = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        let id = h.stream;
        if dir == Direction::Request {
            return skip_frame(h, buf);
        }
        let Some(s) = self.slot(id).filter(|s| !s.done) else {
            return skip_frame(h, buf);
        };
        s.bytes += h.total() as u64;
        rec.clear();
        self.finish_response(id, rec);
        if code != 0 {
            rec.response_status = ResponseStatus::ServerError;
        }
        rec.response_exception.clear();
        rec.response_exception.push_str(error_name(code));
        Progress::Message { consumed: h.total(), skip: 0 }
    }
}

fn skip_frame(h: &FrameHeader, buf: &[u8]) -> Progress {
    let total = h.total();
    let consumed = total.min(buf.len());
    Progress::Skipped { consumed, skip: (total - consumed) as u64 }
}

fn on_field(name: &[u8], value: &[u8], rec: &mut L7Record, info: &mut BlockInfo) {
    match name {
        b":method" => {
            info.method = true;
            set_bounded(&mut rec.request_type, value);
        }
        b":path" => {
            info.path = true;
            set_bounded(&mut rec.request_resource, value);
        }
        b":authority" => {
            info.authority = true;
            set_bounded(&mut rec.request_domain, value);
        }
        b"host" => {
            if !info.authority {
                set_bounded(&mut rec.request_domain, value);
            }
        }
        b":status" => info.status = parse_num(value).and_then(|v| u16::try_from(v).ok()),
        b"content-type" => {
            info.grpc = value.len() >= 16 && value[..16].eq_ignore_ascii_case(b"application/grpc");
        }
        b"grpc-status" => info.grpc_status = parse_num(value).and_then(|v| i32::try_from(v).ok()),
        b"grpc-message" => {
            set_bounded(&mut rec.response_exception, value);
        }
        _ => {
            if name.first() != Some(&b':') {
                rec.trace.observe_header(name, value);
            }
        }
    }
}

fn parse_num(v: &[u8]) -> Option<u32> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0')))
}

fn fill_request(rec: &mut L7Record, info: &BlockInfo, id: u32, b: &Block) {
    rec.version.clear();
    rec.version.push('2');
    rec.request_id = Some(u64::from(id));
    rec.request_length = Some(sat32(b.wire as u64));
    rec.truncated = b.truncated;
    if info.grpc {
        rec.protocol = L7Protocol::Grpc;
        if rec.request_type.is_empty() {
            rec.request_type.push_str("POST");
        }
        // /package.Service/Method: the service is the domain, the whole
        // path the endpoint.
        let path = rec.request_resource.as_str();
        let svc = path.strip_prefix('/').unwrap_or(path);
        let svc = svc.split('/').next().unwrap_or_default();
        set_bounded(&mut rec.request_domain, svc.as_bytes());
        push_str_bounded(&mut rec.endpoint, &rec.request_resource);
    } else {
        rec.protocol = L7Protocol::Http2;
        let path = rec.request_resource.as_str();
        let end = path.find(['?', '#']).unwrap_or(path.len());
        push_str_bounded(&mut rec.endpoint, &path[..end]);
    }
}

fn http_status(st: u16) -> ResponseStatus {
    match st {
        100..=399 => ResponseStatus::Ok,
        400..=499 => ResponseStatus::ClientError,
        500..=599 => ResponseStatus::ServerError,
        _ => ResponseStatus::Unknown,
    }
}

fn grpc_status(code: i32) -> ResponseStatus {
    match code {
        0 => ResponseStatus::Ok,
        1 | 3 | 5 | 6 | 7 | 9 | 11 | 16 => ResponseStatus::ClientError,
        2 | 4 | 8 | 10 | 12 | 13 | 14 | 15 => ResponseStatus::ServerError,
        _ => ResponseStatus::Unknown,
    }
}

/// RFC 9113 §7 error code names.
fn error_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "UNKNOWN_ERROR",
    }
}

impl L7Parser for Http2Parser {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::Http2
    }

    fn pairing(&self) -> Pairing {
        Pairing::ById
    }

    fn parse(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        if dir == Direction::Request && buf.first() == Some(&b'P') {
            let n = buf.len().min(PREFACE.len());
            if buf[..n] == PREFACE[..n] {
                if n == PREFACE.len() {
                    return Progress::Skipped { consumed: n, skip: 0 };
                }
                if at_end {
                    return Progress::Skipped { consumed: n, skip: (PREFACE.len() - n) as u64 };
                }
                return Progress::NeedMore;
            }
        }
        let Some(h) = FrameHeader::read(buf) else {
            if at_end {
                // Bytes are lost at a frame boundary; they may have held
                // header blocks.
                self.dec[di(dir)].reset_table();
            }
            return Progress::NeedMore;
        };
        if !h.valid() {
            return Progress::Invalid;
        }
        match h.ty {
            HEADERS | PUSH_PROMISE => self.headers(dir, &h, buf, at_end, rec),
            DATA => self.data(dir, &h, buf, at_end, rec),
            SETTINGS => self.settings(dir, &h, buf, at_end),
            RST_STREAM => self.rst_stream(dir, &h, buf, at_end, rec),
            // PRIORITY, PING, GOAWAY, WINDOW_UPDATE, a CONTINUATION whose
            // HEADERS we never saw, extension frames.
            _ => skip_frame(&h, buf),
        }
    }
}
