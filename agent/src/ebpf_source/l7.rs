//! One socket's L7 side: a [`Session`] fed one syscall (or one SSL call) at
//! a time, with the per-message facts only the events know (thread, TCP
//! sequence number, syscall trace id) carried to the records.
//!
//! A message's facts are those of the first event fed after the previous
//! message of the same direction completed. Exact when each message starts
//! a syscall (request/response protocols, keep-alive included); a message
//! that follows a body longer than one syscall takes the facts of the
//! body's last chunk, and the second of two requests pipelined in one
//! syscall gets no sequence number.

use std::collections::VecDeque;

use fathom_protocols::{
    AnyParser, Direction, L7Protocol, MessageType, ResponseStatus, Session, SessionLimits,
    Transport,
};

use crate::flow::RecordSink;
use crate::records::{CaptureSource, FlowTuple, L7Log, ObservationPoint, ProcessRef};

/// What a record keeps of the event that started one of its messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MsgMeta {
    pub tid: u32,
    /// None for UDP and TLS plaintext (no sequence number of its own).
    pub seq: Option<u32>,
    /// None when the kernel gave 0 (no id yet on that thread).
    pub trace_id: Option<u64>,
}

/// Identity stamped on each record of a socket.
pub(crate) struct Stamp<'a> {
    pub tuple: FlowTuple,
    pub source: CaptureSource,
    pub point: ObservationPoint,
    pub pid: u32,
    pub comm: &'a str,
}

/// The same per-feed results as the packet flows report.
pub(crate) use crate::flow::FeedCounts;

pub(crate) struct SocketL7 {
    session: Session<AnyParser>,
    /// Facts of the message being assembled, per direction (request, response).
    current: [Option<MsgMeta>; 2],
    /// (start_us, facts) of requests the session holds, oldest first;
    /// start_us is how the session's records name them.
    requests: VecDeque<(u64, Option<MsgMeta>)>,
}

fn idx(dir: Direction) -> usize {
    match dir {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

impl SocketL7 {
    pub fn new(protocol: L7Protocol, transport: Transport, limits: SessionLimits) -> Option<Self> {
        let parser = AnyParser::new(protocol, transport)?;
        Some(SocketL7 {
            session: Session::with_limits(parser, limits),

            current: [None; 2],
            requests: VecDeque::new(),
        })
    }

    /// Feed one event's bytes: `missing` bytes of the same syscall were not
    /// captured.
    #[allow(clippy::too_many_arguments)]
    pub fn feed(
        &mut self,
        dir: Direction,
        meta: MsgMeta,
        data: &[u8],
        missing: u64,
        ts_us: u64,
        stamp: &Stamp<'_>,
        sink: &mut dyn RecordSink,
        counts: &mut FeedCounts,
    ) {
        let d = idx(dir);
        let this = *self.current[d].get_or_insert(meta);
        let before = self.session.stats();
        let pending_before = self.session.pending();
        let mut removed = 0usize;
        let requests = &mut self.requests;
        let response_meta = self.current[1];
        self.session.feed(dir, data, missing, ts_us, &mut |ev| {
            let rec = ev.record;
            let ended = rec.msg_type == MessageType::Session
                && matches!(
                    rec.response_status,
                    ResponseStatus::Timeout | ResponseStatus::ParseFailed
                );
            let (req, resp) = if ended {
                // Timeouts and parse failures always take the oldest request.
                removed += 1;
                counts.timeouts += u64::from(rec.response_status == ResponseStatus::Timeout);
                (requests.pop_front().and_then(|e| e.1), None)
            } else if dir == Direction::Request {
                // A request that wants no response.
                (Some(this), None)
            } else if rec.msg_type == MessageType::Response {
                // A response to nothing we saw asked.
                (None, response_meta)
            } else {
                removed += 1;
                let i = requests.iter().position(|e| e.0 == ev.start_us);
                (i.and_then(|i| requests.remove(i)).and_then(|e| e.1), response_meta)
            };
            counts.records += 1;
            sink.l7(log(stamp, rec, ev.start_us, ev.end_us, req, resp));
        });
        let after = self.session.stats();
        counts.parse_errors += after.parse_errors - before.parse_errors;
        let added = (self.session.pending() + removed).saturating_sub(pending_before);
        for i in 0..added {
            // Later requests in the same bytes share the event's thread and
            // trace id, not its sequence number.
            let m = if i == 0 { this } else { MsgMeta { seq: None, ..this } };
            self.requests.push_back((ts_us, Some(m)));
        }
        while self.requests.len() > self.session.pending() {
            self.requests.pop_front();
        }
        if after.messages > before.messages || missing > 0 {
            self.current[d] = None;
        }
    }

    /// Give back what an idle session keeps for reuse (see
    /// [`Session::release_idle`]).
    pub fn release_idle(&mut self) {
        if self.session.release_idle() {
            self.requests = VecDeque::new();
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
        let requests = &mut self.requests;
        let mut emit = |ev: fathom_protocols::L7Event<'_>| {
            let req = requests.pop_front().and_then(|e| e.1);
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

fn log(
    stamp: &Stamp<'_>,
    rec: &fathom_protocols::L7Record,
    start_us: u64,
    end_us: u64,
    req: Option<MsgMeta>,
    resp: Option<MsgMeta>,
) -> L7Log {
    // The thread that handled the call: the one that took the request (a
    // server) or sent it (a client).
    let tid = req.or(resp).map(|m| m.tid).unwrap_or(0);
    L7Log {
        observation_point: stamp.point,
        process: Some(ProcessRef { pid: stamp.pid, tid, name: stamp.comm.to_string() }),
        syscall_trace_id_request: req.and_then(|m| m.trace_id),
        syscall_trace_id_response: resp.and_then(|m| m.trace_id),
        req_tcp_seq: req.and_then(|m| m.seq),
        resp_tcp_seq: resp.and_then(|m| m.seq),
        ..L7Log::from_call(stamp.tuple, stamp.source, rec, start_us, end_us)
    }
}
