//! Helpers shared by the parsers' unit tests.

use crate::parser::{Direction, L7Parser};
use crate::record::L7Record;
use crate::session::Session;

/// Every record a fresh session makes of `msgs`, fed whole or one byte at a time.
pub fn run_session<P: L7Parser>(
    parser: P,
    msgs: &[(Direction, Vec<u8>)],
    bytewise: bool,
) -> Vec<L7Record> {
    let mut s = Session::new(parser);
    let mut out = Vec::new();
    for (i, (dir, m)) in msgs.iter().enumerate() {
        if bytewise {
            for b in m.chunks(1) {
                s.feed(*dir, b, 0, i as u64, &mut |e| out.push(e.record.clone()));
            }
        } else {
            s.feed(*dir, m, 0, i as u64, &mut |e| out.push(e.record.clone()));
        }
    }
    s.close(&mut |e| out.push(e.record.clone()));
    out
}

/// The records of `msgs`, checked to be the same whole and byte by byte.
pub fn whole_and_bytewise<P: L7Parser>(
    new: impl Fn() -> P,
    msgs: &[(Direction, Vec<u8>)],
) -> Vec<L7Record> {
    let a = run_session(new(), msgs, false);
    assert_eq!(a, run_session(new(), msgs, true), "whole and bytewise feeding differ");
    a
}
