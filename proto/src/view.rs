//! Borrowing decoding of [`Records`] for the ingest hot path.
//!
//! L7 records are most of a batch, and most of their fields are text.
//! prost decodes each text field into its own `String`, including the ones
//! ingest throws away or only maps to a dictionary id (the interface, the
//! process name). Here an L7 record decodes into an [`L7LogView`] whose
//! text fields borrow the payload, so ingest copies only what it keeps.
//!
//! The result is what prost's decoding of the same bytes gives: the same
//! values (last occurrence of a field wins, an optional message seen twice
//! is merged), the same refusals (truncated input, bad varints, wrong wire
//! types, text that is not UTF-8, nesting deeper than prost's recursion
//! limit), unknown fields (groups too) skipped. The tests and the
//! `records_view` fuzz target compare the two.

use std::borrow::Cow;

use prost::encoding::{DecodeContext, WireType};
use prost::Message;

use crate::agent::{L7Log, ProcessRef, RecordCounts, Records};

/// prost's recursion limit: messages and groups nest at most this deep.
const RECURSION_LIMIT: u32 = 100;

/// Why bytes are not the message they were taken for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// The field being read (0: a field key).
    pub field: u32,
    pub problem: Cow<'static, str>,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field {
            0 => f.write_str(&self.problem),
            n => write!(f, "field {n}: {}", self.problem),
        }
    }
}

impl std::error::Error for WireError {}

/// What went wrong, kept small: the decoders pass it back in registers.
#[derive(Clone, Copy, Debug)]
enum Problem {
    Truncated,
    InvalidVarint,
    InvalidKey,
    InvalidWireType,
    ZeroTag,
    WrongWireType,
    UnexpectedEndGroup,
    RecursionLimit,
    NotUtf8,
}

#[derive(Clone, Copy, Debug)]
struct Bad {
    field: u32,
    problem: Problem,
}

impl From<Bad> for WireError {
    fn from(b: Bad) -> WireError {
        let problem = match b.problem {
            Problem::Truncated => "truncated",
            Problem::InvalidVarint => "invalid varint",
            Problem::InvalidKey => "invalid key value",
            Problem::InvalidWireType => "invalid wire type value",
            Problem::ZeroTag => "invalid tag value: 0",
            Problem::WrongWireType => "invalid wire type",
            Problem::UnexpectedEndGroup => "unexpected end group tag",
            Problem::RecursionLimit => "recursion limit reached",
            Problem::NotUtf8 => "text is not UTF-8",
        };
        WireError { field: b.field, problem: Cow::Borrowed(problem) }
    }
}

fn bad<T>(field: u32, problem: Problem) -> Result<T, Bad> {
    Err(Bad { field, problem })
}

const VARINT: u8 = 0;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;

/// Whether every byte is below 0x80, a word at a time (the last word
/// overlapping the one before rather than a byte loop over the tail).
#[inline(always)]
fn ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or([0xff; 8]));
    let half = |w: &[u8]| u32::from_le_bytes(w.try_into().unwrap_or([0xff; 4]));
    let n = b.len();
    if n >= 8 {
        let mut high = word(&b[n - 8..]);
        for w in b.chunks_exact(8) {
            high |= word(w);
        }
        high & HIGH == 0
    } else if n >= 4 {
        (half(&b[..4]) | half(&b[n - 4..])) & HIGH as u32 == 0
    } else {
        b.iter().all(|&c| c < 0x80)
    }
}

/// Reads the fields of one message from a byte slice.
struct Fields<'a> {
    buf: &'a [u8],
    /// prost's recursion budget at this message's fields.
    limit: u32,
}

impl<'a> Fields<'a> {
    /// Keys of fields 16 and up, and most lengths and ports, take two
    /// bytes: those are read inline too.
    #[inline(always)]
    fn varint(&mut self, field: u32) -> Result<u64, Bad> {
        match *self.buf {
            [b, ref rest @ ..] if b < 0x80 => {
                self.buf = rest;
                Ok(u64::from(b))
            }
            [b0, b1, ref rest @ ..] if b1 < 0x80 => {
                self.buf = rest;
                Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
            }
            _ => self.long_varint(field),
        }
    }

    #[inline(never)]
    fn long_varint(&mut self, field: u32) -> Result<u64, Bad> {
        let b = self.buf;
        let mut v = 0u64;
        for (i, &byte) in b.iter().take(10).enumerate() {
            // The tenth byte holds the last bit of 64.
            if i == 9 && byte > 1 {
                return bad(field, Problem::InvalidVarint);
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &b[i + 1..];
                return Ok(v);
            }
        }
        // Fewer than ten bytes, each saying another follows.
        bad(field, Problem::Truncated)
    }

    #[inline(always)]
    fn take(&mut self, n: u64, field: u32) -> Result<&'a [u8], Bad> {
        match usize::try_from(n) {
            Ok(n) if n <= self.buf.len() => {
                let (head, tail) = self.buf.split_at(n);
                self.buf = tail;
                Ok(head)
            }
            _ => bad(field, Problem::Truncated),
        }
    }

    /// The next field's key (tag, wire type), None at the end.
    #[inline(always)]
    fn key(&mut self) -> Result<Option<(u32, u8)>, Bad> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint(0)?;
        if key > u64::from(u32::MAX) {
            return bad(0, Problem::InvalidKey);
        }
        let wire = (key & 7) as u8;
        if wire > 5 {
            return bad(0, Problem::InvalidWireType);
        }
        let tag = (key >> 3) as u32;
        if tag == 0 {
            return bad(0, Problem::ZeroTag);
        }
        Ok(Some((tag, wire)))
    }

    #[inline(always)]
    fn uint64(&mut self, tag: u32, wire: u8) -> Result<u64, Bad> {
        if wire != VARINT {
            return bad(tag, Problem::WrongWireType);
        }
        self.varint(tag)
    }

    #[inline(always)]
    fn uint32(&mut self, tag: u32, wire: u8) -> Result<u32, Bad> {
        self.uint64(tag, wire).map(|x| x as u32)
    }

    #[inline(always)]
    fn int32(&mut self, tag: u32, wire: u8) -> Result<i32, Bad> {
        self.uint64(tag, wire).map(|x| x as i32)
    }

    #[inline(always)]
    fn sint32(&mut self, tag: u32, wire: u8) -> Result<i32, Bad> {
        self.uint64(tag, wire).map(|x| {
            let x = x as u32;
            ((x >> 1) as i32) ^ (-((x & 1) as i32))
        })
    }

    #[inline(always)]
    fn bytes(&mut self, tag: u32, wire: u8) -> Result<&'a [u8], Bad> {
        if wire != LEN {
            return bad(tag, Problem::WrongWireType);
        }
        let n = self.varint(tag)?;
        self.take(n, tag)
    }

    #[inline(always)]
    fn text(&mut self, tag: u32, wire: u8) -> Result<&'a str, Bad> {
        let b = self.bytes(tag, wire)?;
        // Most text is short and ASCII, which a word-wide check settles in
        // a few instructions where full validation walks byte by byte.
        if ascii(b) {
            // SAFETY: ASCII bytes are valid UTF-8.
            return Ok(unsafe { std::str::from_utf8_unchecked(b) });
        }
        std::str::from_utf8(b).or_else(|_| bad(tag, Problem::NotUtf8))
    }

    /// A nested message: its fields, one level deeper.
    #[inline(always)]
    fn message(&mut self, tag: u32, wire: u8) -> Result<Fields<'a>, Bad> {
        let buf = self.bytes(tag, wire)?;
        if self.limit == 0 {
            return bad(tag, Problem::RecursionLimit);
        }
        Ok(Fields { buf, limit: self.limit - 1 })
    }

    /// Skips a field the way prost does, with `limit` its recursion budget:
    /// a group up to its end tag, each field inside one level deeper.
    #[inline(never)]
    fn skip(&mut self, tag: u32, wire: u8, limit: u32) -> Result<(), Bad> {
        if limit == 0 {
            return bad(tag, Problem::RecursionLimit);
        }
        match wire {
            START_GROUP => loop {
                let Some((inner, wire)) = self.key()? else {
                    return bad(tag, Problem::Truncated);
                };
                if wire == END_GROUP {
                    return match inner == tag {
                        true => Ok(()),
                        false => bad(inner, Problem::UnexpectedEndGroup),
                    };
                }
                self.skip(inner, wire, limit - 1)?;
            },
            END_GROUP => bad(tag, Problem::UnexpectedEndGroup),
            VARINT => self.varint(tag).map(drop),
            1 => self.take(8, tag).map(drop),
            LEN => self.bytes(tag, wire).map(drop),
            _ => self.take(4, tag).map(drop),
        }
    }

    /// Reads every field: `field` reads those it knows and returns false
    /// for the others, which are skipped (as prost skips unknown fields).
    #[inline(always)]
    fn each(
        mut self,
        mut field: impl FnMut(&mut Self, u32, u8) -> Result<bool, Bad>,
    ) -> Result<(), Bad> {
        while let Some((tag, wire)) = self.key()? {
            if !field(&mut self, tag, wire)? {
                self.skip(tag, wire, self.limit)?;
            }
        }
        Ok(())
    }
}

/// [`ProcessRef`] with its name borrowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessRefView<'a> {
    pub pid: u32,
    pub tid: u32,
    pub name: &'a str,
    pub side: i32,
}

impl<'a> ProcessRefView<'a> {
    fn merge(&mut self, fields: Fields<'a>) -> Result<(), Bad> {
        fields.each(|f, tag, wire| {
            match tag {
                1 => self.pid = f.uint32(tag, wire)?,
                2 => self.tid = f.uint32(tag, wire)?,
                3 => self.name = f.text(tag, wire)?,
                4 => self.side = f.int32(tag, wire)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    pub fn to_message(&self) -> ProcessRef {
        ProcessRef { pid: self.pid, tid: self.tid, name: self.name.into(), side: self.side }
    }
}

/// [`L7Log`] with its addresses and text borrowed from the encoded bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L7LogView<'a> {
    pub client_ip: &'a [u8],
    pub client_port: u32,
    pub server_ip: &'a [u8],
    pub server_port: u32,
    pub ip_protocol: u32,
    pub source: i32,
    pub interface: &'a str,
    pub process: Option<ProcessRefView<'a>>,
    pub start_time_us: u64,
    pub end_time_us: u64,
    pub latency_us: u64,
    pub l7_protocol: &'a str,
    pub msg_type: &'a str,
    pub version: &'a str,
    pub request_type: &'a str,
    pub request_domain: &'a str,
    pub request_resource: &'a str,
    pub endpoint: &'a str,
    pub request_id: Option<u64>,
    pub response_code: Option<i32>,
    pub response_status: &'a str,
    pub response_exception: &'a str,
    pub response_result: &'a str,
    pub request_length: Option<u32>,
    pub response_length: Option<u32>,
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub parent_span_id: &'a str,
    pub x_request_id: &'a str,
    pub truncated: bool,
    pub syscall_trace_id_request: Option<u64>,
    pub syscall_trace_id_response: Option<u64>,
    pub req_tcp_seq: Option<u32>,
    pub resp_tcp_seq: Option<u32>,
}

impl<'a> L7LogView<'a> {
    /// Decodes one encoded [`L7Log`] (as `L7Log::decode` would).
    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        Ok(Self::decode_fields(Fields { buf, limit: RECURSION_LIMIT })?)
    }

    fn decode_fields(fields: Fields<'a>) -> Result<Self, Bad> {
        let mut r = L7LogView::default();
        fields.each(|f, tag, wire| {
            match tag {
                1 => r.client_ip = f.bytes(tag, wire)?,
                2 => r.client_port = f.uint32(tag, wire)?,
                3 => r.server_ip = f.bytes(tag, wire)?,
                4 => r.server_port = f.uint32(tag, wire)?,
                5 => r.ip_protocol = f.uint32(tag, wire)?,
                6 => r.source = f.int32(tag, wire)?,
                7 => r.interface = f.text(tag, wire)?,
                8 => r.process.get_or_insert_default().merge(f.message(tag, wire)?)?,
                9 => r.start_time_us = f.uint64(tag, wire)?,
                10 => r.end_time_us = f.uint64(tag, wire)?,
                11 => r.latency_us = f.uint64(tag, wire)?,
                12 => r.l7_protocol = f.text(tag, wire)?,
                13 => r.msg_type = f.text(tag, wire)?,
                14 => r.version = f.text(tag, wire)?,
                15 => r.request_type = f.text(tag, wire)?,
                16 => r.request_domain = f.text(tag, wire)?,
                17 => r.request_resource = f.text(tag, wire)?,
                18 => r.endpoint = f.text(tag, wire)?,
                19 => r.request_id = Some(f.uint64(tag, wire)?),
                20 => r.response_code = Some(f.sint32(tag, wire)?),
                21 => r.response_status = f.text(tag, wire)?,
                22 => r.response_exception = f.text(tag, wire)?,
                23 => r.response_result = f.text(tag, wire)?,
                24 => r.request_length = Some(f.uint32(tag, wire)?),
                25 => r.response_length = Some(f.uint32(tag, wire)?),
                26 => r.trace_id = f.text(tag, wire)?,
                27 => r.span_id = f.text(tag, wire)?,
                28 => r.parent_span_id = f.text(tag, wire)?,
                29 => r.x_request_id = f.text(tag, wire)?,
                30 => r.truncated = f.uint64(tag, wire)? != 0,
                31 => r.syscall_trace_id_request = Some(f.uint64(tag, wire)?),
                32 => r.syscall_trace_id_response = Some(f.uint64(tag, wire)?),
                33 => r.req_tcp_seq = Some(f.uint32(tag, wire)?),
                34 => r.resp_tcp_seq = Some(f.uint32(tag, wire)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(r)
    }

    /// The owned message (what prost decodes from the same bytes).
    pub fn to_message(&self) -> L7Log {
        L7Log {
            client_ip: self.client_ip.to_vec(),
            client_port: self.client_port,
            server_ip: self.server_ip.to_vec(),
            server_port: self.server_port,
            ip_protocol: self.ip_protocol,
            source: self.source,
            interface: self.interface.into(),
            process: self.process.map(|p| p.to_message()),
            start_time_us: self.start_time_us,
            end_time_us: self.end_time_us,
            latency_us: self.latency_us,
            l7_protocol: self.l7_protocol.into(),
            msg_type: self.msg_type.into(),
            version: self.version.into(),
            request_type: self.request_type.into(),
            request_domain: self.request_domain.into(),
            request_resource: self.request_resource.into(),
            endpoint: self.endpoint.into(),
            request_id: self.request_id,
            response_code: self.response_code,
            response_status: self.response_status.into(),
            response_exception: self.response_exception.into(),
            response_result: self.response_result.into(),
            request_length: self.request_length,
            response_length: self.response_length,
            trace_id: self.trace_id.into(),
            span_id: self.span_id.into(),
            parent_span_id: self.parent_span_id.into(),
            x_request_id: self.x_request_id.into(),
            truncated: self.truncated,
            syscall_trace_id_request: self.syscall_trace_id_request,
            syscall_trace_id_response: self.syscall_trace_id_response,
            req_tcp_seq: self.req_tcp_seq,
            resp_tcp_seq: self.resp_tcp_seq,
        }
    }
}

/// A [`Records`] message with its L7 records left encoded, to be decoded
/// one at a time ([`RecordsView::l7_log`]) where they are converted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordsView<'a> {
    /// The encoded [`L7Log`]s, in order.
    pub l7: Vec<&'a [u8]>,
    /// Every other kind of record, decoded by prost (`l7` stays empty).
    pub rest: Records,
}

impl<'a> RecordsView<'a> {
    /// Splits an encoded [`Records`]; `capacity` sizes the record vectors.
    /// Any error `Records::decode` would meet outside the L7 records is met
    /// here; those inside an L7 record, by [`RecordsView::l7_log`].
    pub fn decode(buf: &'a [u8], capacity: RecordCounts) -> Result<Self, WireError> {
        let mut view =
            RecordsView { l7: Vec::with_capacity(capacity.l7 as usize), ..Default::default() };
        let rest = &mut view.rest;
        rest.l4.reserve_exact(capacity.l4 as usize);
        rest.red.reserve_exact(capacity.red as usize);
        rest.network.reserve_exact(capacity.network as usize);
        rest.process.reserve_exact(capacity.process as usize);
        let mut fields = Fields { buf, limit: RECURSION_LIMIT };
        while let Some((tag, wire)) = fields.key()? {
            if tag == 1 {
                view.l7.push(fields.bytes(tag, wire)?);
                continue;
            }
            // What `Records::decode` does with the field, done by prost
            // (prost's decoding entry points, public but undocumented).
            let wire_type = WireType::try_from(u64::from(wire))
                .map_err(|_| Bad { field: 0, problem: Problem::InvalidWireType })?;
            rest.merge_field(tag, wire_type, &mut fields.buf, DecodeContext::default())
                .map_err(|e| WireError { field: tag, problem: Cow::Owned(e.to_string()) })?;
        }
        Ok(view)
    }

    /// Decodes one of [`RecordsView::l7`] (with the recursion budget it
    /// has inside a `Records`).
    pub fn l7_log(buf: &'a [u8]) -> Result<L7LogView<'a>, WireError> {
        // Records' fields decode with the full budget; an L7Log's, one less.
        Ok(L7LogView::decode_fields(Fields { buf, limit: RECURSION_LIMIT - 1 })?)
    }

    pub fn counts(&self) -> RecordCounts {
        RecordCounts { l7: u32::try_from(self.l7.len()).unwrap_or(u32::MAX), ..self.rest.counts() }
    }

    /// The owned message (what prost decodes from the same bytes).
    pub fn to_message(&self) -> Result<Records, WireError> {
        let mut recs = self.rest.clone();
        for b in &self.l7 {
            recs.l7.push(Self::l7_log(b)?.to_message());
        }
        Ok(recs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{L4Flow, ProcessInfo, RedMetric};
    use proptest::prelude::*;

    fn full_l7(n: u64) -> L7Log {
        L7Log {
            client_ip: vec![10, 1, 0, n as u8],
            client_port: 40000 + n as u32,
            server_ip: vec![0xfd; 16],
            server_port: 443,
            ip_protocol: 6,
            source: 2,
            interface: "eth0".into(),
            process: Some(ProcessRef { pid: 7, tid: 8, name: "nginx: worker".into(), side: 2 }),
            start_time_us: 1_764_000_000_000_000 + n,
            end_time_us: u64::MAX,
            latency_us: 1200,
            l7_protocol: "http".into(),
            msg_type: "session".into(),
            version: "1.1".into(),
            request_type: "GET".into(),
            request_domain: "api.example".into(),
            request_resource: "/v1/ünïcode/🦀".into(),
            endpoint: "/v1/{id}".into(),
            request_id: Some(0),
            response_code: Some(-3),
            response_status: "server_error".into(),
            response_exception: "boom".into(),
            response_result: "{}".into(),
            request_length: Some(u32::MAX),
            response_length: Some(0),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: "00f067aa0ba902b7".into(),
            x_request_id: "req-1".into(),
            truncated: true,
            syscall_trace_id_request: Some(1 << 63),
            syscall_trace_id_response: Some(5),
            req_tcp_seq: Some(1),
            resp_tcp_seq: Some(u32::MAX),
        }
    }

    fn records() -> Records {
        Records {
            l7: vec![full_l7(1), L7Log::default(), full_l7(2)],
            l4: vec![L4Flow { server_port: 80, close_type: "fin".into(), ..Default::default() }],
            red: vec![RedMetric {
                requests: 3,
                process_name: Some("x".into()),
                ..Default::default()
            }],
            process: vec![ProcessInfo { pid: 1, name: "init".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    /// What this module decodes from `bytes`, as prost's message.
    fn ours(bytes: &[u8]) -> Result<Records, WireError> {
        RecordsView::decode(bytes, RecordCounts::default())?.to_message()
    }

    /// The view and prost agree: the same records, or both refuse.
    fn agree(bytes: &[u8]) {
        match (ours(bytes), Records::decode(bytes)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{bytes:02x?}"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("view {a:?}, prost {b:?} on {bytes:02x?}"),
        }
    }

    fn key(tag: u32, wire: u8, out: &mut Vec<u8>) {
        prost::encoding::encode_varint(u64::from(tag) << 3 | u64::from(wire), out);
    }

    #[test]
    fn ascii_check_sees_every_byte() {
        for n in 0..40 {
            let text = vec![b'a'; n];
            assert!(ascii(&text));
            for i in 0..n {
                let mut t = text.clone();
                t[i] = 0xc3;
                assert!(!ascii(&t), "{n} bytes, high at {i}");
            }
        }
    }

    #[test]
    fn round_trips_what_prost_encodes() {
        let recs = records();
        let bytes = recs.encode_to_vec();
        let view = RecordsView::decode(&bytes, recs.counts()).unwrap();
        assert_eq!(view.counts(), recs.counts());
        assert_eq!(view.to_message().unwrap(), recs);
        let one = full_l7(9).encode_to_vec();
        let v = L7LogView::decode(&one).unwrap();
        assert_eq!(v.process.unwrap().name, "nginx: worker");
        assert_eq!(v.request_resource, "/v1/ünïcode/🦀");
        assert_eq!(v.to_message(), full_l7(9));
        assert_eq!(L7LogView::decode(&[]).unwrap(), L7LogView::default());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let l7 = full_l7(3);
        let mut bytes = l7.encode_to_vec();
        key(50, 0, &mut bytes);
        bytes.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        key(51, 1, &mut bytes);
        bytes.extend([1; 8]);
        key(52, 2, &mut bytes);
        bytes.extend([3, b'a', b'b', b'c']);
        key(53, 5, &mut bytes);
        bytes.extend([2; 4]);
        // A group holding a varint and a nested group.
        key(54, 3, &mut bytes);
        key(1, 0, &mut bytes);
        bytes.push(5);
        key(2, 3, &mut bytes);
        key(2, 4, &mut bytes);
        key(54, 4, &mut bytes);
        assert_eq!(L7LogView::decode(&bytes).unwrap().to_message(), l7);
        assert_eq!(L7Log::decode(bytes.as_slice()).unwrap(), l7);
        let mut recs = Records { l7: vec![l7], ..Default::default() }.encode_to_vec();
        key(9, 2, &mut recs);
        recs.extend([1, 0]);
        agree(&recs);
        assert_eq!(ours(&recs).unwrap().l7.len(), 1);
    }

    #[test]
    fn later_fields_win_and_messages_merge() {
        let mut bytes = full_l7(1).encode_to_vec();
        bytes.extend(
            L7Log {
                endpoint: "/later".into(),
                process: Some(ProcessRef { pid: 99, ..Default::default() }),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let v = L7LogView::decode(&bytes).unwrap();
        assert_eq!(v.endpoint, "/later");
        // pid replaced, name kept: the two process fields merged.
        assert_eq!((v.process.unwrap().pid, v.process.unwrap().name), (99, "nginx: worker"));
        assert_eq!(v.to_message(), L7Log::decode(bytes.as_slice()).unwrap());
    }

    #[test]
    fn truncated_and_broken_input_is_refused() {
        let bytes = records().encode_to_vec();
        // Every cut agrees with prost; cuts inside a field are refused.
        for n in 0..bytes.len() {
            agree(&bytes[..n]);
        }
        let one = full_l7(1).encode_to_vec();
        for n in [1, 2, 5, one.len() - 1] {
            assert!(L7LogView::decode(&one[..n]).is_err(), "cut at {n}");
        }
        // Text that is not UTF-8, in a field ingest keeps and in one it drops.
        for tag in [18, 7] {
            let mut bad = Vec::new();
            key(tag, 2, &mut bad);
            bad.extend([2, 0xc3, 0x28]);
            let e = L7LogView::decode(&bad).unwrap_err();
            assert_eq!(e.to_string(), format!("field {tag}: text is not UTF-8"));
            assert!(L7Log::decode(bad.as_slice()).is_err());
        }
        // A known field with the wrong wire type; an overlong varint; a stray end group.
        for bad in [
            vec![10 << 3 | 2, 0],
            vec![0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            vec![0x0c],
        ] {
            assert!(L7LogView::decode(&bad).is_err(), "{bad:02x?}");
            assert!(L7Log::decode(bad.as_slice()).is_err(), "{bad:02x?}");
            let mut recs = vec![0x0a];
            prost::encoding::encode_varint(bad.len() as u64, &mut recs);
            recs.extend(&bad);
            agree(&recs);
        }
    }

    #[test]
    fn deep_groups_hit_the_same_limit_as_prost() {
        for depth in [97, 98, 99, 100, 101] {
            let mut l7 = Vec::new();
            for _ in 0..depth {
                key(60, 3, &mut l7);
            }
            for _ in 0..depth {
                key(60, 4, &mut l7);
            }
            let mut recs = vec![0x0a];
            prost::encoding::encode_varint(l7.len() as u64, &mut recs);
            recs.extend(&l7);
            agree(&recs);
            assert_eq!(L7LogView::decode(&l7).is_ok(), L7Log::decode(l7.as_slice()).is_ok());
        }
    }

    proptest! {
        #[test]
        fn mutated_batches_decode_as_prost_decodes(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = records().encode_to_vec();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let n = cut.index(bytes.len() + 1);
            agree(&bytes[..n]);
        }

        #[test]
        fn random_bytes_decode_as_prost_decodes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            agree(&bytes);
            let mut recs = vec![0x0a];
            prost::encoding::encode_varint(bytes.len() as u64, &mut recs);
            recs.extend(&bytes);
            agree(&recs);
        }
    }
}
