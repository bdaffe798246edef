//! One driver for fuzz targets and property tests: arbitrary bytes become a
//! flow (segments in both directions, some cut short as an eBPF capture
//! would) fed through detection and a [`Session`] of the chosen protocol.
//! Checks the invariants every parser promises; panics when one breaks.

use crate::parser::{Direction, Transport};
use crate::record::{L7Protocol, L7Record, MAX_FIELD_LEN};
use crate::session::{Session, SessionLimits};
use crate::{detect, AnyParser};

/// Feed `data` as a flow of `protocol`. The first byte picks the transport;
/// then each segment is `[ctl, len, bytes...]`: ctl bit 0 = direction,
/// bit 1 = the segment is a cut capture (some bytes missing after it).
/// Returns the number of records emitted.
pub fn drive(protocol: L7Protocol, data: &[u8]) -> usize {
    let Some((&first, mut rest)) = data.split_first() else {
        return 0;
    };
    let transport =
        if first & 1 == 1 && protocol == L7Protocol::Dns { Transport::Udp } else { Transport::Tcp };
    let _ = detect(rest, transport, None);
    let _ = detect(rest, transport, Some(Direction::Response));
    let Some(parser) = AnyParser::new(protocol, transport) else {
        return 0;
    };
    let limits = SessionLimits { max_buffer: 4096, max_pending: 16 };
    let mut session = Session::with_limits(parser, limits);
    let mut records = 0usize;
    let mut check = |rec: &L7Record| {
        records += 1;
        for f in [
            &rec.version,
            &rec.request_type,
            &rec.request_domain,
            &rec.request_resource,
            &rec.endpoint,
            &rec.response_exception,
            &rec.response_result,
        ] {
            assert!(f.len() <= MAX_FIELD_LEN * 2, "field of {} bytes", f.len());
        }
    };
    let mut ts = 1u64;
    while rest.len() >= 2 {
        let ctl = rest[0];
        let len = (rest[1] as usize).min(rest.len() - 2);
        let seg = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let dir = if ctl & 1 == 0 { Direction::Request } else { Direction::Response };
        let missing = if ctl & 2 != 0 { u64::from(ctl >> 2) * 97 } else { 0 };
        ts += 10;
        session.feed(dir, seg, missing, ts, &mut |ev| check(ev.record));
    }
    session.expire(ts + 1_000_000, 500_000, &mut |ev| check(ev.record));
    session.close(&mut |ev| check(ev.record));
    records
}

/// Feed `msgs` (direction, bytes) through a fresh session whole, then with
/// every message cut at the given split points, and return both record
/// lists so callers can compare them.
pub fn records_whole_and_split(
    protocol: L7Protocol,
    transport: Transport,
    msgs: &[(Direction, &[u8])],
    splits: &[usize],
) -> (Vec<L7Record>, Vec<L7Record>) {
    let run = |split: bool| {
        let mut out = Vec::new();
        let parser = AnyParser::new(protocol, transport).expect("parser");
        let mut s = Session::new(parser);
        let mut ts = 0;
        for (i, (dir, bytes)) in msgs.iter().enumerate() {
            ts += 1;
            let mut sink = |ev: crate::L7Event<'_>| out.push(ev.record.clone());
            if split && transport == Transport::Tcp && !bytes.is_empty() {
                let at = splits.get(i).copied().unwrap_or(1) % bytes.len();
                let (a, b) = bytes.split_at(at);
                s.feed(*dir, a, 0, ts, &mut sink);
                s.feed(*dir, b, 0, ts, &mut sink);
            } else {
                s.feed(*dir, bytes, 0, ts, &mut sink);
            }
        }
        s.close(&mut |ev| out.push(ev.record.clone()));
        out
    };
    (run(false), run(true))
}
