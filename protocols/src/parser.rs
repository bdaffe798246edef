//! The contract between a protocol's parser and the per-flow [`crate::Session`].

use crate::record::{L7Protocol, L7Record};

/// Which way bytes travel on a connection (re-exported at the crate root).
pub use crate::record::Direction;

/// The transport a flow runs on; DNS frames differ between the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

/// What one call to [`L7Parser::parse`] did with the head of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The first `consumed` bytes were one message, now described by the
    /// record. `skip` further bytes of the same message lie beyond the buffer
    /// (a body too large to keep, or bytes the capture cut off) and must be
    /// dropped from the stream before the next message starts.
    Message { consumed: usize, skip: u64 },
    /// The first `consumed` bytes (and `skip` beyond) carry no call of their
    /// own: HTTP/2 SETTINGS, a MySQL greeting, a DATA frame. Nothing to emit.
    Skipped { consumed: usize, skip: u64 },
    /// The buffer holds only the start of the next message.
    NeedMore,
    /// The bytes at the head are not this protocol.
    Invalid,
}

/// How a protocol matches responses to requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// Responses come back in request order (HTTP/1 and Redis pipelining, MySQL).
    Fifo,
    /// Responses carry the id of their request (HTTP/2 stream id, Kafka
    /// correlation id, Dubbo request id, DNS id) and may arrive in any order.
    ById,
}

/// A parser of one protocol for one flow. It may keep state across calls
/// (HPACK tables, the API key of each Kafka correlation id, MySQL prepared
/// statements), so each flow owns its own instance.
pub trait L7Parser {
    fn protocol(&self) -> L7Protocol;

    fn pairing(&self) -> Pairing;

    /// Parse the message at the head of `buf`, the in-order bytes of one
    /// direction. On [`Progress::Message`] the parser has cleared `rec` and
    /// filled it. When `at_end` is set no more bytes of the message at the
    /// head will come (the capture kept only a prefix, or the stream ended):
    /// the parser returns what it can read from the prefix, marked truncated,
    /// rather than [`Progress::NeedMore`].
    ///
    /// Must never panic, allocate without bound or loop more than linearly,
    /// whatever the bytes.
    fn parse(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress;
}
