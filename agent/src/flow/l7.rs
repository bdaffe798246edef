//! A flow's L7 side: protocol detection on the first payloads, then a
//! [`Session`] fed in order, its records turned into [`L7Log`]s.

use std::collections::VecDeque;

use fathom_protocols::{
    AnyParser, Direction, L7Parser, L7Protocol, MessageType, Pairing, ResponseStatus, Session,
    SessionLimits, Transport,
};

use super::reasm::seq_diff;
use super::RecordSink;
use crate::records::{CaptureSource, FlowTuple, L7Log};

/// Detection state; a detected flow's session is boxed so the many flows
/// without one stay small.
pub(crate) enum L7 {
    /// Payload packets tried so far, per sender (A, B).
    Detecting([u8; 2]),
    Active(Box<L7State>),
    /// Nothing recognised: an L4-only flow.
    Off,
}

pub(crate) struct L7State {
    pub session: Session<AnyParser>,
    pub protocol: L7Protocol,
    /// Sequence number of the first byte of the message being assembled,
    /// per direction (request, response).
    msg_start: [Option<u32>; 2],
    /// `msg_start` was computed from the previous message's length and the
    /// message has not been seen to begin yet.
    predicted: [bool; 2],
    /// (start_us, seq) of requests awaiting their response, in the order the
    /// session holds them; start_us is how the session's records name them.
    req_seqs: VecDeque<(u64, Option<u32>)>,
}

/// What the records of one flow are stamped with.
pub(crate) struct Stamp<'a> {
    pub tuple: FlowTuple,
    pub source: CaptureSource,
    pub interface: &'a Option<String>,
}

/// Per-feed results the engine adds to its counters.
#[derive(Default)]
pub(crate) struct FeedCounts {
    pub records: u64,
    pub parse_errors: u64,
    /// Records of requests that never got their response.
    pub timeouts: u64,
}

fn idx(dir: Direction) -> usize {
    match dir {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

impl L7State {
    pub fn new(protocol: L7Protocol, transport: Transport, limits: SessionLimits) -> Option<Self> {
        let parser = AnyParser::new(protocol, transport)?;
        Some(L7State {
            session: Session::with_limits(parser, limits),
            protocol,
            msg_start: [None; 2],
            predicted: [false; 2],
            req_seqs: VecDeque::new(),
        })
    }

    /// Feed in-order bytes of one direction (see [`Session::feed`]). `seq` is
    /// the TCP sequence number of `data[0]` (None for UDP).
    ///
    /// Where each message starts is tracked so records carry the sequence
    /// number of their first byte: a message starts where the previous one
    /// ended when its length is known (responses, and requests once paired
    /// in order), else at the first segment after the previous message
    /// completed. Exact for messages that start a segment or follow one of
    /// known length; a request after one whose body outran its segment
    /// (an upload) gets the sequence number of a later segment.
    #[allow(clippy::too_many_arguments)]
    pub fn feed(
        &mut self,
        dir: Direction,
        seq: Option<u32>,
        data: &[u8],
        missing: u64,
        ts_us: u64,
        stamp: &Stamp<'_>,
        sink: &mut dyn RecordSink,
        counts: &mut FeedCounts,
    ) {
        let d = idx(dir);
        if let (Some(q), false) = (seq, data.is_empty()) {
            match (self.msg_start[d], self.predicted[d]) {
                (None, _) => self.msg_start[d] = Some(q),
                (Some(p), true) => {
                    let off = seq_diff(p, q);
                    if off < 0 {
                        // The predicted start is behind us: the length was a guess.
                        self.msg_start[d] = Some(q);
                        self.predicted[d] = false;
                    } else if (off as usize) < data.len() {
                        self.predicted[d] = false;
                    }
                }
                (Some(_), false) => {}
            }
        }
        // Start of the next message to complete in this feed.
        let mut next = self.msg_start[d];
        let before = self.session.stats();
        let pending_before = self.session.pending();
        let mut removed = 0usize;
        let fifo = self.session.parser().pairing() == Pairing::Fifo;
        let req_seqs = &mut self.req_seqs;
        self.session.feed(dir, data, missing, ts_us, &mut |ev| {
            let rec = ev.record;
            let ended = rec.msg_type == MessageType::Session
                && matches!(
                    rec.response_status,
                    ResponseStatus::Timeout | ResponseStatus::ParseFailed
                );
            let (req, resp) = if ended {
                // Timeouts and failures always take the oldest request.
                removed += 1;
                counts.timeouts += u64::from(rec.response_status == ResponseStatus::Timeout);
                (req_seqs.pop_front().and_then(|e| e.1), None)
            } else if dir == Direction::Request {
                // A request that wants no response.
                let at = next;
                next = after(at, rec.request_length);
                (at, None)
            } else {
                let at = next;
                next = after(at, rec.response_length);
                if rec.msg_type == MessageType::Response {
                    (None, at)
                } else {
                    removed += 1;
                    let i = req_seqs.iter().position(|e| e.0 == ev.start_us);
                    let req = i.and_then(|i| req_seqs.remove(i)).and_then(|e| e.1);
                    // In-order protocols: the next request follows this one.
                    if let (true, Some(i), Some(n)) = (fifo, i, after(req, rec.request_length)) {
                        if let Some(e) = req_seqs.get_mut(i).filter(|e| e.1.is_none()) {
                            e.1 = Some(n);
                        }
                    }
                    (req, at)
                }
            };
            counts.records += 1;
            sink.l7(log(stamp, rec, ev.start_us, ev.end_us, req, resp));
        });
        let after_stats = self.session.stats();
        counts.parse_errors += after_stats.parse_errors - before.parse_errors;
        // Requests that entered the session's queue in this feed: the first
        // started at the tracked start; later ones in the same bytes are
        // filled in when the one before them is answered.
        let added = (self.session.pending() + removed).saturating_sub(pending_before);
        for i in 0..added {
            self.req_seqs.push_back((ts_us, if i == 0 { next } else { None }));
        }
        while self.req_seqs.len() > self.session.pending() {
            self.req_seqs.pop_front();
        }
        if missing > 0 {
            self.msg_start[d] = None;
            self.predicted[d] = false;
        } else if after_stats.messages > before.messages {
            // Known lengths say where the next message starts; otherwise
            // assume the next segment starts it.
            let known = next.filter(|_| added == 0);
            self.msg_start[d] = known;
            self.predicted[d] = known.is_some();
        }
    }

    /// Give back what an idle session keeps for reuse (see
    /// [`Session::release_idle`]).
    pub fn release_idle(&mut self) {
        if self.session.release_idle() {
            self.req_seqs = VecDeque::new();
        }
    }

    /// Report requests older than the timeout; with `close`, all of them.
    pub fn expire(
        &mut self,
        now_us: u64,
        timeout_us: u64,
        close: bool,
        stamp: &Stamp<'_>,
        sink: &mut dyn RecordSink,
        counts: &mut FeedCounts,
    ) {
        let req_seqs = &mut self.req_seqs;
        let mut emit = |ev: fathom_protocols::L7Event<'_>| {
            let req = req_seqs.pop_front().and_then(|e| e.1);
            counts.records += 1;
            counts.timeouts += 1;
            sink.l7(log(stamp, ev.record, ev.start_us, ev.end_us, req, None));
        };
        if close {
            self.session.close(&mut emit);
        } else {
            self.session.expire(now_us, timeout_us, &mut emit);
        }
    }
}

/// Sequence number after a message of `len` bytes starting at `start`.
fn after(start: Option<u32>, len: Option<u32>) -> Option<u32> {
    Some(start?.wrapping_add(len?))
}

fn log(
    stamp: &Stamp<'_>,
    rec: &fathom_protocols::L7Record,
    start_us: u64,
    end_us: u64,
    req_tcp_seq: Option<u32>,
    resp_tcp_seq: Option<u32>,
) -> L7Log {
    L7Log {
        interface: stamp.interface.clone(),
        req_tcp_seq,
        resp_tcp_seq,
        ..L7Log::from_call(stamp.tuple, stamp.source, rec, start_us, end_us)
    }
}
