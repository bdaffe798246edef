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

fn err<T>(field: u32, problem: &'static str) -> Result<T, WireError> {
    Err(WireError { field, problem: Cow::Borrowed(problem) })
}

/// A field's value as the wire holds it.
#[derive(Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
    /// A group, already skipped (no message here has group fields).
    Group,
}

/// Reads the fields of one message from a byte slice.
struct Fields<'a> {
    buf: &'a [u8],
    /// prost's recursion budget at this message's fields.
    limit: u32,
}

impl<'a> Fields<'a> {
    #[inline]
    fn varint(&mut self, field: u32) -> Result<u64, WireError> {
        let b = self.buf;
        if let Some(&first) = b.first() {
            if first < 0x80 {
                self.buf = &b[1..];
                return Ok(u64::from(first));
            }
        }
        let mut v = 0u64;
        for (i, &byte) in b.iter().take(10).enumerate() {
            // The tenth byte holds the last bit of 64.
            if i == 9 && byte > 1 {
                return err(field, "invalid varint");
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &b[i + 1..];
                return Ok(v);
            }
        }
        // Fewer than ten bytes, each saying another follows.
        err(field, "truncated")
    }

    fn take(&mut self, n: u64, field: u32) -> Result<&'a [u8], WireError> {
        match usize::try_from(n) {
            Ok(n) if n <= self.buf.len() => {
                let (head, tail) = self.buf.split_at(n);
                self.buf = tail;
                Ok(head)
            }
            _ => err(field, "truncated"),
        }
    }

    /// The next field's key (tag, wire type), None at the end.
    #[inline]
    fn key(&mut self) -> Result<Option<(u32, u8)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint(0)?;
        if key > u64::from(u32::MAX) {
            return err(0, "invalid key value");
        }
        let wire = (key & 7) as u8;
        if wire > 5 {
            return err(0, "invalid wire type value");
        }
        let tag = (key >> 3) as u32;
        if tag == 0 {
            return err(0, "invalid tag value: 0");
        }
        Ok(Some((tag, wire)))
    }

    /// The value of a field whose key was just read (not a group).
    #[inline]
    fn value(&mut self, tag: u32, wire: u8) -> Result<Value<'a>, WireError> {
        Ok(match wire {
            0 => Value::Varint(self.varint(tag)?),
            1 => {
                self.take(8, tag)?;
                Value::Fixed64
            }
            2 => {
                let n = self.varint(tag)?;
                Value::Bytes(self.take(n, tag)?)
            }
            5 => {
                self.take(4, tag)?;
                Value::Fixed32
            }
            _ => return err(tag, "unexpected group tag"),
        })
    }

    /// Skips a field the way prost does, with `limit` its recursion budget:
    /// a group up to its end tag, each field inside one level deeper.
    fn skip(&mut self, tag: u32, wire: u8, limit: u32) -> Result<(), WireError> {
        if limit == 0 {
            return err(tag, "recursion limit reached");
        }
        match wire {
            3 => loop {
                let Some((inner, wire)) = self.key()? else {
                    return err(tag, "truncated group");
                };
                if wire == 4 {
                    return match inner == tag {
                        true => Ok(()),
                        false => err(inner, "unexpected end group tag"),
                    };
                }
                self.skip(inner, wire, limit - 1)?;
            },
            4 => err(tag, "unexpected end group tag"),
            _ => self.value(tag, wire).map(|_| ()),
        }
    }

    /// Reads every field, handing each to `field`, which returns false for
    /// tags it does not know (skipped, as prost skips unknown fields). The
    /// closure also gets this message's recursion budget, for nested
    /// messages.
    #[inline]
    fn each(
        mut self,
        mut field: impl FnMut(u32, Value<'a>, u32) -> Result<bool, WireError>,
    ) -> Result<(), WireError> {
        while let Some((tag, wire)) = self.key()? {
            let v = match wire {
                3 | 4 => {
                    self.skip(tag, wire, self.limit)?;
                    Value::Group
                }
                _ => self.value(tag, wire)?,
            };
            // prost checks the budget before it skips an unknown field.
            if !field(tag, v, self.limit)? && self.limit == 0 {
                return err(tag, "recursion limit reached");
            }
        }
        Ok(())
    }
}

fn wrong_type<T>(tag: u32) -> Result<T, WireError> {
    err(tag, "invalid wire type")
}

#[inline]
fn varint(tag: u32, v: Value<'_>) -> Result<u64, WireError> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => wrong_type(tag),
    }
}

#[inline]
fn uint32(tag: u32, v: Value<'_>) -> Result<u32, WireError> {
    varint(tag, v).map(|x| x as u32)
}

#[inline]
fn int32(tag: u32, v: Value<'_>) -> Result<i32, WireError> {
    varint(tag, v).map(|x| x as i32)
}

#[inline]
fn sint32(tag: u32, v: Value<'_>) -> Result<i32, WireError> {
    varint(tag, v).map(|x| {
        let x = x as u32;
        ((x >> 1) as i32) ^ (-((x & 1) as i32))
    })
}

#[inline]
fn bytes<'a>(tag: u32, v: Value<'a>) -> Result<&'a [u8], WireError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => wrong_type(tag),
    }
}

#[inline]
fn text<'a>(tag: u32, v: Value<'a>) -> Result<&'a str, WireError> {
    std::str::from_utf8(bytes(tag, v)?).or_else(|_| err(tag, "text is not UTF-8"))
}

/// A nested message's bytes and the budget its fields decode with.
fn nested<'a>(tag: u32, v: Value<'a>, limit: u32) -> Result<Fields<'a>, WireError> {
    let buf = bytes(tag, v)?;
    if limit == 0 {
        return err(tag, "recursion limit reached");
    }
    Ok(Fields { buf, limit: limit - 1 })
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
    fn merge(&mut self, fields: Fields<'a>) -> Result<(), WireError> {
        fields.each(|tag, v, _| {
            match tag {
                1 => self.pid = uint32(tag, v)?,
                2 => self.tid = uint32(tag, v)?,
                3 => self.name = text(tag, v)?,
                4 => self.side = int32(tag, v)?,
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
        Self::decode_fields(Fields { buf, limit: RECURSION_LIMIT })
    }

    fn decode_fields(fields: Fields<'a>) -> Result<Self, WireError> {
        let mut r = L7LogView::default();
        fields.each(|tag, v, limit| {
            match tag {
                1 => r.client_ip = bytes(tag, v)?,
                2 => r.client_port = uint32(tag, v)?,
                3 => r.server_ip = bytes(tag, v)?,
                4 => r.server_port = uint32(tag, v)?,
                5 => r.ip_protocol = uint32(tag, v)?,
                6 => r.source = int32(tag, v)?,
                7 => r.interface = text(tag, v)?,
                8 => r.process.get_or_insert_default().merge(nested(tag, v, limit)?)?,
                9 => r.start_time_us = varint(tag, v)?,
                10 => r.end_time_us = varint(tag, v)?,
                11 => r.latency_us = varint(tag, v)?,
                12 => r.l7_protocol = text(tag, v)?,
                13 => r.msg_type = text(tag, v)?,
                14 => r.version = text(tag, v)?,
                15 => r.request_type = text(tag, v)?,
                16 => r.request_domain = text(tag, v)?,
                17 => r.request_resource = text(tag, v)?,
                18 => r.endpoint = text(tag, v)?,
                19 => r.request_id = Some(varint(tag, v)?),
                20 => r.response_code = Some(sint32(tag, v)?),
                21 => r.response_status = text(tag, v)?,
                22 => r.response_exception = text(tag, v)?,
                23 => r.response_result = text(tag, v)?,
                24 => r.request_length = Some(uint32(tag, v)?),
                25 => r.response_length = Some(uint32(tag, v)?),
                26 => r.trace_id = text(tag, v)?,
                27 => r.span_id = text(tag, v)?,
                28 => r.parent_span_id = text(tag, v)?,
                29 => r.x_request_id = text(tag, v)?,
                30 => r.truncated = varint(tag, v)? != 0,
                31 => r.syscall_trace_id_request = Some(varint(tag, v)?),
                32 => r.syscall_trace_id_response = Some(varint(tag, v)?),
                33 => r.req_tcp_seq = Some(uint32(tag, v)?),
                34 => r.resp_tcp_seq = Some(uint32(tag, v)?),
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
        let mut view = RecordsView { l7: Vec::with_capacity(capacity.l7 as usize), ..Default::default() };
        let rest = &mut view.rest;
        rest.l4.reserve_exact(capacity.l4 as usize);
        rest.red.reserve_exact(capacity.red as usize);
        rest.network.reserve_exact(capacity.network as usize);
        rest.process.reserve_exact(capacity.process as usize);
        let mut fields = Fields { buf, limit: RECURSION_LIMIT };
        while let Some((tag, wire)) = fields.key()? {
            if tag == 1 {
                if wire != 2 {
                    return wrong_type(tag);
                }
                let n = fields.varint(tag)?;
                view.l7.push(fields.take(n, tag)?);
                continue;
            }
            // What `Records::decode` does with the field, done by prost
            // (prost's decoding entry points, public but undocumented).
            let wire_type = WireType::try_from(u64::from(wire))
                .or_else(|_| err(0, "invalid wire type value"))?;
            rest.merge_field(tag, wire_type, &mut fields.buf, DecodeContext::default())
                .map_err(|e| WireError { field: tag, problem: Cow::Owned(e.to_string()) })?;
        }
        Ok(view)
    }

    /// Decodes one of [`RecordsView::l7`] (with the recursion budget it
    /// has inside a `Records`).
    pub fn l7_log(buf: &'a [u8]) -> Result<L7LogView<'a>, WireError> {
        L7LogView::decode_fields(nested(1, Value::Bytes(buf), RECURSION_LIMIT)?)
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
            red: vec![RedMetric { requests: 3, process_name: Some("x".into()), ..Default::default() }],
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
        for bad in [vec![10 << 3 | 2, 0], vec![0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], vec![0x0c]] {
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
