//! L7 protocol parsers: pure functions over bytes, no I/O.
//!
//! Each protocol module offers `detect` (does a flow's first bytes look like
//! this protocol, and which way do they travel?) and a parser implementing
//! [`L7Parser`]. A [`Session`] drives one parser over one flow: it buffers
//! partial messages across segments, skips bodies it need not keep, parses
//! truncated captures, and pairs responses with requests into one
//! [`L7Record`] per call.
//!
//! Every parser accepts any bytes without panicking, allocating without
//! bound or looping more than linearly; each has a fuzz target under `fuzz/`.

pub mod dns;
pub mod dubbo;
#[doc(hidden)]
pub mod fuzzing;
pub mod http1;
pub mod http2;
pub mod kafka;
pub mod mysql;
pub mod parser;
pub mod record;
pub mod redis;
pub mod session;
#[cfg(test)]
mod test_support;
pub mod trace;

pub use parser::{Direction, L7Parser, Pairing, Progress, Transport};
pub use record::{L7Protocol, L7Record, MessageType, ResponseStatus};
pub use session::{L7Event, Session, SessionLimits, SessionStats};
pub use trace::{TraceContext, TraceFormat};

/// A parser for any supported protocol, chosen at run time. The two with
/// large fixed tables are boxed so every flow's session stays small.
#[derive(Debug)]
pub enum AnyParser {
    Http1(http1::Http1Parser),
    Http2(http2::Http2Parser),
    Dns(dns::DnsParser),
    Redis(redis::RedisParser),
    MySql(Box<mysql::MySqlParser>),
    Kafka(Box<kafka::KafkaParser>),
    Dubbo(dubbo::DubboParser),
}

impl AnyParser {
    /// A fresh parser for `protocol`; None for protocols without a parser.
    pub fn new(protocol: L7Protocol, transport: Transport) -> Option<AnyParser> {
        Some(match protocol {
            L7Protocol::Http1 => AnyParser::Http1(http1::Http1Parser::new(transport)),
            L7Protocol::Http2 | L7Protocol::Grpc => {
                AnyParser::Http2(http2::Http2Parser::new(transport))
            }
            L7Protocol::Dns => AnyParser::Dns(dns::DnsParser::new(transport)),
            L7Protocol::Redis => AnyParser::Redis(redis::RedisParser::new(transport)),
            L7Protocol::MySql => AnyParser::MySql(Box::new(mysql::MySqlParser::new(transport))),
            L7Protocol::Kafka => AnyParser::Kafka(Box::new(kafka::KafkaParser::new(transport))),
            L7Protocol::Dubbo => AnyParser::Dubbo(dubbo::DubboParser::new(transport)),
            L7Protocol::Unknown => return None,
        })
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            AnyParser::Http1($p) => $e,
            AnyParser::Http2($p) => $e,
            AnyParser::Dns($p) => $e,
            AnyParser::Redis($p) => $e,
            AnyParser::MySql($p) => $e,
            AnyParser::Kafka($p) => $e,
            AnyParser::Dubbo($p) => $e,
        }
    };
}

impl L7Parser for AnyParser {
    fn protocol(&self) -> L7Protocol {
        dispatch!(self, p => p.protocol())
    }

    fn pairing(&self) -> Pairing {
        dispatch!(self, p => p.pairing())
    }

    fn parse(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        dispatch!(self, p => p.parse(dir, buf, at_end, rec))
    }
}

/// Detect the protocol of a flow from its first bytes in one direction.
/// Returns the protocol and the direction those bytes travel in. With a
/// `hint` (the direction is known, e.g. from connect/accept), only
/// detections agreeing with it count.
pub fn detect(
    buf: &[u8],
    transport: Transport,
    hint: Option<Direction>,
) -> Option<(L7Protocol, Direction)> {
    for proto in L7Protocol::ALL {
        let dir = match proto {
            L7Protocol::Http1 => http1::detect(buf, transport),
            L7Protocol::Http2 => http2::detect(buf, transport),
            L7Protocol::Dubbo => dubbo::detect(buf, transport),
            L7Protocol::MySql => mysql::detect(buf, transport),
            L7Protocol::Redis => redis::detect(buf, transport),
            L7Protocol::Kafka => kafka::detect(buf, transport),
            L7Protocol::Dns => dns::detect(buf, transport),
            _ => None,
        };
        if let Some(d) = dir {
            if hint.is_none_or(|h| h == d) {
                return Some((proto, d));
            }
        }
    }
    None
}
