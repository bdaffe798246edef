//! One flow's L7 state: stream buffers per direction, a protocol parser,
//! and the pairing of responses with requests. Pure: the caller feeds bytes
//! and timestamps and receives records through a callback.

use std::collections::VecDeque;

use crate::parser::{Direction, L7Parser, Pairing, Progress};
use crate::record::{L7Record, MessageType, ResponseStatus};

/// Limits that bound a session's memory whatever the traffic.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Bytes kept per direction while a message is incomplete.
    pub max_buffer: usize,
    /// Requests awaiting their response; the oldest is reported as timed out
    /// when a new one would exceed this.
    pub max_pending: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits { max_buffer: 16 * 1024, max_pending: 256 }
    }
}

/// A record handed to the caller, with the times of its two halves.
#[derive(Debug)]
pub struct L7Event<'a> {
    pub record: &'a L7Record,
    /// When the request (or the lone response) was seen, in microseconds.
    pub start_us: u64,
    /// When the response was seen; equals `start_us` for lone messages and
    /// for timeouts.
    pub end_us: u64,
}

/// Counters of what a session could not use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub messages: u64,
    pub parse_errors: u64,
    pub bytes_dropped: u64,
    pub truncated: u64,
    pub timeouts: u64,
    pub orphan_responses: u64,
}

struct Pending {
    rec: L7Record,
    start_us: u64,
}

#[derive(Default)]
struct Stream {
    buf: Vec<u8>,
    /// Bytes still to drop before the next message starts.
    skip: u64,
}

pub struct Session<P: L7Parser> {
    parser: P,
    limits: SessionLimits,
    streams: [Stream; 2],
    pending: VecDeque<Pending>,
    /// Recycled records, so steady-state parsing does not allocate.
    free: Vec<L7Record>,
    scratch: L7Record,
    stats: SessionStats,
}

fn idx(dir: Direction) -> usize {
    match dir {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

impl<P: L7Parser> Session<P> {
    pub fn new(parser: P) -> Self {
        Self::with_limits(parser, SessionLimits::default())
    }

    pub fn with_limits(parser: P, limits: SessionLimits) -> Self {
        Session {
            parser,
            limits,
            streams: Default::default(),
            // Allocated on the first request, for one call: most flows have
            // one call in flight; pipelining grows it.
            pending: VecDeque::new(),
            free: Vec::new(),
            scratch: L7Record::default(),
            stats: SessionStats::default(),
        }
    }

    pub fn parser(&self) -> &P {
        &self.parser
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feed in-order bytes of one direction seen at `ts_us`. `missing` counts
    /// bytes of the stream that follow `data` but were not captured (an eBPF
    /// capture keeps the first N bytes of each message): they end the
    /// message at the head, which is parsed from what was kept.
    pub fn feed(
        &mut self,
        dir: Direction,
        mut data: &[u8],
        missing: u64,
        ts_us: u64,
        sink: &mut dyn FnMut(L7Event<'_>),
    ) {
        let s = idx(dir);
        // Drop what earlier messages asked to skip.
        let st = &mut self.streams[s];
        if st.skip > 0 {
            let n = (st.skip.min(data.len() as u64)) as usize;
            st.skip -= n as u64;
            data = &data[n..];
        }
        let mut missing = missing;
        if st.skip > 0 {
            // Everything fed lies inside a skipped body.
            let m = st.skip.min(missing);
            st.skip -= m;
            missing -= m;
            if missing == 0 {
                return;
            }
        }
        if st.buf.is_empty() {
            // Fast path: parse straight from the caller's bytes.
            let used = self.parse_loop(dir, data, missing > 0, ts_us, sink);
            let rest = &data[used..];
            self.keep(dir, rest);
        } else {
            let mut buf = std::mem::take(&mut self.streams[s].buf);
            buf.extend_from_slice(data);
            let used = self.parse_loop(dir, &buf, missing > 0, ts_us, sink);
            buf.drain(..used);
            self.streams[s].buf = buf;
            if self.streams[s].buf.len() > self.limits.max_buffer {
                self.stats.bytes_dropped += self.streams[s].buf.len() as u64;
                self.streams[s].buf.clear();
            }
        }
        if missing > 0 {
            // Whatever was left incomplete ended in bytes we never saw.
            let st = &mut self.streams[s];
            self.stats.bytes_dropped += st.buf.len() as u64;
            st.buf.clear();
            st.skip = st.skip.saturating_sub(missing);
        }
    }

    fn keep(&mut self, dir: Direction, rest: &[u8]) {
        let st = &mut self.streams[idx(dir)];
        if rest.len() > self.limits.max_buffer {
            self.stats.bytes_dropped += rest.len() as u64;
        } else {
            st.buf.extend_from_slice(rest);
        }
    }

    /// Parse messages from `buf`; returns the bytes used.
    fn parse_loop(
        &mut self,
        dir: Direction,
        buf: &[u8],
        at_end: bool,
        ts_us: u64,
        sink: &mut dyn FnMut(L7Event<'_>),
    ) -> usize {
        let mut off = 0;
        while off < buf.len() {
            let head = &buf[off..];
            let progress = self.parser.parse(dir, head, false, &mut self.scratch);
            let progress = match progress {
                Progress::NeedMore if at_end || head.len() > self.limits.max_buffer => {
                    self.parser.parse(dir, head, true, &mut self.scratch)
                }
                p => p,
            };
            match progress {
                Progress::Message { consumed, skip } => {
                    let consumed = consumed.clamp(1, head.len());
                    if at_end && consumed as u64 + skip > head.len() as u64 {
                        // The message runs into bytes the capture never had.
                        self.scratch.truncated = true;
                    }
                    self.stats.messages += 1;
                    if self.scratch.truncated {
                        self.stats.truncated += 1;
                    }
                    self.on_message(dir, ts_us, sink);
                    off += consumed;
                    if skip > 0 {
                        self.skip(dir, buf, &mut off, skip);
                    }
                }
                Progress::Skipped { consumed, skip } => {
                    off += consumed.clamp(1, head.len());
                    if skip > 0 {
                        self.skip(dir, buf, &mut off, skip);
                    }
                }
                Progress::NeedMore => {
                    if at_end {
                        // Parser could make nothing of the prefix.
                        self.stats.bytes_dropped += head.len() as u64;
                        return buf.len();
                    }
                    return off;
                }
                Progress::Invalid => {
                    self.stats.parse_errors += 1;
                    self.stats.bytes_dropped += head.len() as u64;
                    if dir == Direction::Response {
                        self.fail_oldest(sink);
                    }
                    return buf.len();
                }
            }
        }
        off
    }

    fn skip(&mut self, dir: Direction, buf: &[u8], off: &mut usize, skip: u64) {
        let avail = (buf.len() - *off) as u64;
        if skip <= avail {
            *off += skip as usize;
        } else {
            *off = buf.len();
            self.streams[idx(dir)].skip += skip - avail;
        }
    }

    fn take_free(&mut self) -> L7Record {
        self.free.pop().unwrap_or_default()
    }

    /// Keep a record for reuse: room for one, not the four a Vec's first
    /// growth would give (records are large and most flows need one).
    fn recycle(&mut self, rec: L7Record) {
        if self.free.capacity() == 0 {
            self.free.reserve_exact(1);
        }
        self.free.push(rec);
    }

    /// Whether no request waits and no partial message is buffered or
    /// being skipped in either direction.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.streams.iter().all(|s| s.buf.is_empty() && s.skip == 0)
    }

    /// Give back the memory an idle session keeps for reuse: recycled
    /// records, the scratch record's strings, buffers and queue room. The
    /// parser's own state stays. For sessions idle a while: busy ones would
    /// only allocate it all again. Returns false (and does nothing) unless
    /// [`is_idle`](Self::is_idle).
    pub fn release_idle(&mut self) -> bool {
        if !self.is_idle() {
            return false;
        }
        self.free = Vec::new();
        self.pending = VecDeque::new();
        // Parsers clear the record before filling it: nothing in it carries over.
        self.scratch = L7Record::default();
        for s in &mut self.streams {
            s.buf = Vec::new();
        }
        true
    }

    fn on_message(&mut self, dir: Direction, ts_us: u64, sink: &mut dyn FnMut(L7Event<'_>)) {
        match dir {
            Direction::Request => {
                self.scratch.msg_type = MessageType::Request;
                if self.scratch.no_response {
                    self.scratch.msg_type = MessageType::Session;
                    sink(L7Event { record: &self.scratch, start_us: ts_us, end_us: ts_us });
                    return;
                }
                if self.pending.len() >= self.limits.max_pending {
                    self.expire_oldest(sink);
                }
                let mut rec = self.take_free();
                rec.copy_from(&self.scratch);
                if self.pending.capacity() == 0 {
                    self.pending.reserve_exact(1);
                }
                self.pending.push_back(Pending { rec, start_us: ts_us });
            }
            Direction::Response => {
                self.scratch.msg_type = MessageType::Response;
                let pos = match self.parser.pairing() {
                    Pairing::Fifo => (!self.pending.is_empty()).then_some(0),
                    Pairing::ById => {
                        let id = self.scratch.request_id;
                        self.pending.iter().position(|p| p.rec.request_id == id)
                    }
                };
                match pos.and_then(|p| self.pending.remove(p)) {
                    Some(mut p) => {
                        p.rec.merge_response(&self.scratch);
                        sink(L7Event { record: &p.rec, start_us: p.start_us, end_us: ts_us });
                        self.recycle(p.rec);
                    }
                    None => {
                        self.stats.orphan_responses += 1;
                        sink(L7Event { record: &self.scratch, start_us: ts_us, end_us: ts_us });
                    }
                }
            }
        }
    }

    fn expire_oldest(&mut self, sink: &mut dyn FnMut(L7Event<'_>)) {
        if let Some(mut p) = self.pending.pop_front() {
            self.stats.timeouts += 1;
            p.rec.set_timeout();
            sink(L7Event { record: &p.rec, start_us: p.start_us, end_us: p.start_us });
            self.recycle(p.rec);
        }
    }

    fn fail_oldest(&mut self, sink: &mut dyn FnMut(L7Event<'_>)) {
        if let Some(mut p) = self.pending.pop_front() {
            p.rec.msg_type = MessageType::Session;
            p.rec.response_status = ResponseStatus::ParseFailed;
            sink(L7Event { record: &p.rec, start_us: p.start_us, end_us: p.start_us });
            self.recycle(p.rec);
        }
    }

    /// Report requests older than `now_us - timeout_us` as timed out.
    pub fn expire(&mut self, now_us: u64, timeout_us: u64, sink: &mut dyn FnMut(L7Event<'_>)) {
        while let Some(p) = self.pending.front() {
            if now_us.saturating_sub(p.start_us) < timeout_us {
                break;
            }
            self.expire_oldest(sink);
        }
    }

    /// The flow ended: report every request still waiting as timed out.
    pub fn close(&mut self, sink: &mut dyn FnMut(L7Event<'_>)) {
        while !self.pending.is_empty() {
            self.expire_oldest(sink);
        }
    }
}
