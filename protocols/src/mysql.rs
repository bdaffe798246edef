//! MySql parser (placeholder until implemented: detects nothing).

use crate::parser::{Direction, L7Parser, Pairing, Progress, Transport};
use crate::record::{L7Protocol, L7Record};

/// Does `buf`, the first bytes of a flow in one direction, look like MySql?
/// Returns the direction the bytes travel in.
pub fn detect(_buf: &[u8], _transport: Transport) -> Option<Direction> {
    None
}

#[derive(Debug, Default)]
pub struct MySqlParser {}

impl MySqlParser {
    pub fn new(_transport: Transport) -> Self {
        Self::default()
    }
}

impl L7Parser for MySqlParser {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::MySql
    }

    fn pairing(&self) -> Pairing {
        Pairing::Fifo
    }

    fn parse(&mut self, _dir: Direction, _buf: &[u8], _at_end: bool, _rec: &mut L7Record) -> Progress {
        Progress::Invalid
    }
}
