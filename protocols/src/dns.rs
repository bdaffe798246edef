//! DNS parser (RFC 1035), over UDP (one datagram = one message) and TCP
//! (each message behind a 2-byte length prefix, RFC 1035 4.2.2).
//!
//! Record fields:
//! - `request_type`: the QTYPE name (`A`, `AAAA`, ..., `TYPE<n>` when unknown);
//! - `request_resource`, `request_domain`, `endpoint`: the QNAME, dotted,
//!   without trailing dot (`.` for the root);
//! - `request_id`: the DNS id (responses pair by id);
//! - responses: `response_code` = RCODE (extended by an EDNS OPT record),
//!   `response_status` ok for NOERROR, server_error for SERVFAIL and NOTIMP,
//!   client_error for every other non-zero code (NXDOMAIN, FORMERR, REFUSED,
//!   ...), `response_exception` = the RCODE name when non-zero and
//!   `response_result` = the answer section joined by `;` (addresses, names,
//!   `pref name` for MX, text for TXT, `prio weight port target` for SRV, the
//!   type name otherwise). Responses repeat the question, so they carry the
//!   request fields too.
//!
//! Names are decoded with compression pointers that must point strictly
//! backwards (each jump lands before the previous one), which bounds the
//! work per name and rules out loops.

use core::fmt::Write as _;

use crate::parser::{Direction, L7Parser, Pairing, Progress, Transport};
use crate::record::{L7Protocol, L7Record, ResponseStatus, MAX_FIELD_LEN};

const HEADER_LEN: usize = 12;
/// Longest name on the wire (RFC 1035 3.1).
const MAX_NAME_WIRE: usize = 255;
/// Compression jumps allowed while decoding one name.
const MAX_JUMPS: usize = 64;
/// Upper bound for any section count in a plausible message.
const MAX_COUNT: u16 = 6000;

/// Does `buf`, the first bytes of a flow in one direction, look like DNS?
/// Returns the direction the bytes travel in (from the QR bit).
pub fn detect(buf: &[u8], transport: Transport) -> Option<Direction> {
    let msg = match transport {
        Transport::Udp => buf,
        Transport::Tcp => {
            let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
            if len < HEADER_LEN + 5 {
                return None;
            }
            let end = buf.len().min(len + 2);
            buf.get(2..end)?
        }
    };
    detect_message(msg)
}

fn detect_message(msg: &[u8]) -> Option<Direction> {
    let h = Header::read(msg)?;
    let opcode = h.opcode();
    if !matches!(opcode, 0 | 1 | 2 | 4 | 5) || h.flags & 0x0040 != 0 || h.qdcount != 1 {
        return None;
    }
    let query = h.flags & 0x8000 == 0;
    if h.ancount > MAX_COUNT || h.nscount > MAX_COUNT || h.arcount > MAX_COUNT {
        return None;
    }
    if query {
        // A query asks, it does not answer: no rcode, no AA/TC/RA.
        if h.rcode() != 0 || h.flags & 0x0680 != 0 {
            return None;
        }
        match opcode {
            0..=2 => {
                if h.ancount != 0 || h.nscount != 0 || h.arcount > 2 {
                    return None;
                }
            }
            // NOTIFY may carry an answer, UPDATE carries prerequisites and updates.
            _ => {
                if h.arcount > 2 {
                    return None;
                }
            }
        }
    } else if h.rcode() > 10 {
        return None;
    }
    // The question must parse fully: plain labels (nothing to point back to yet),
    // host-like characters, a known type and class.
    let mut pos = HEADER_LEN;
    let mut labels = 0;
    loop {
        let len = usize::from(*msg.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        let label = msg.get(pos + 1..pos + 1 + len)?;
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*' | b'/'))
        {
            return None;
        }
        labels += 1;
        pos += 1 + len;
        if pos - HEADER_LEN > MAX_NAME_WIRE {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*msg.get(pos + 2)?, *msg.get(pos + 3)?]) & 0x7fff;
    type_name(qtype)?;
    if !matches!(qclass, 1 | 3 | 4 | 254 | 255) {
        return None;
    }
    if labels == 0 && !matches!(qtype, 2 | 6 | 48 | 255) {
        return None;
    }
    Some(if query { Direction::Request } else { Direction::Response })
}

#[derive(Debug)]
pub struct DnsParser {
    transport: Transport,
}

impl Default for DnsParser {
    fn default() -> Self {
        DnsParser { transport: Transport::Udp }
    }
}

impl DnsParser {
    pub fn new(transport: Transport) -> Self {
        DnsParser { transport }
    }
}

impl L7Parser for DnsParser {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::Dns
    }

    fn pairing(&self) -> Pairing {
        Pairing::ById
    }

    fn parse(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        match self.transport {
            Transport::Udp => {
                // One datagram, one message: never wait for more (the next
                // datagram is another message). A datagram that ends early
                // was cut by the capture (or is malformed): parse the prefix.
                match parse_message(dir, buf, buf.len(), rec) {
                    Some(cut) => {
                        rec.truncated = cut || at_end;
                        Progress::Message { consumed: buf.len(), skip: 0 }
                    }
                    None => Progress::Invalid,
                }
            }
            Transport::Tcp => {
                let (Some(&a), Some(&b)) = (buf.first(), buf.get(1)) else {
                    return Progress::NeedMore;
                };
                let len = usize::from(u16::from_be_bytes([a, b]));
                if len < HEADER_LEN {
                    return Progress::Invalid;
                }
                let total = len + 2;
                if let Some(msg) = buf.get(2..total) {
                    return match parse_message(dir, msg, total, rec) {
                        Some(cut) => {
                            rec.truncated = cut;
                            Progress::Message { consumed: total, skip: 0 }
                        }
                        None => Progress::Invalid,
                    };
                }
                if !at_end {
                    return Progress::NeedMore;
                }
                let skip = (total - buf.len()) as u64;
                let msg = buf.get(2..).unwrap_or_default();
                if msg.len() < HEADER_LEN {
                    return Progress::Skipped { consumed: buf.len(), skip };
                }
                match parse_message(dir, msg, total, rec) {
                    Some(_) => {
                        rec.truncated = true;
                        Progress::Message { consumed: buf.len(), skip }
                    }
                    None => Progress::Invalid,
                }
            }
        }
    }
}

struct Header {
    id: u16,
    flags: u16,
    qdcount: u16,
    ancount: u16,
    nscount: u16,
    arcount: u16,
}

impl Header {
    fn read(msg: &[u8]) -> Option<Header> {
        let h = msg.get(..HEADER_LEN)?;
        let w = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Some(Header {
            id: w(0),
            flags: w(2),
            qdcount: w(4),
            ancount: w(6),
            nscount: w(8),
            arcount: w(10),
        })
    }

    fn opcode(&self) -> u16 {
        (self.flags >> 11) & 0xf
    }

    fn rcode(&self) -> u16 {
        self.flags & 0xf
    }
}

fn read_u16(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos.checked_add(1)?)?]))
}

/// Parse one message (`msg`, `wire_len` bytes on the wire) into `rec`.
/// Returns None when the bytes are not DNS, Some(true) when the message
/// ended before its sections did.
fn parse_message(dir: Direction, msg: &[u8], wire_len: usize, rec: &mut L7Record) -> Option<bool> {
    let h = Header::read(msg)?;
    rec.clear();
    rec.protocol = L7Protocol::Dns;
    rec.request_id = Some(u64::from(h.id));
    let wire_len = u32::try_from(wire_len).unwrap_or(u32::MAX);
    let response = dir == Direction::Response;
    if response {
        rec.response_length = Some(wire_len);
    } else {
        rec.request_length = Some(wire_len);
    }
    let mut rcode = h.rcode();
    let cut = parse_sections(&h, msg, response, rec, &mut rcode)?;
    if response {
        rec.response_code = Some(i32::from(rcode));
        rec.response_status = match rcode {
            0 => ResponseStatus::Ok,
            2 | 4 => ResponseStatus::ServerError,
            _ => ResponseStatus::ClientError,
        };
        if rcode != 0 {
            match rcode_name(rcode) {
                Some(name) => rec.response_exception.push_str(name),
                None => {
                    let _ = write!(rec.response_exception, "RCODE{rcode}");
                }
            }
        }
    }
    Some(cut)
}

/// Walk the question and the resource records. Returns Some(true) when the
/// message ends early, None when a name is malformed in the question.
fn parse_sections(
    h: &Header,
    msg: &[u8],
    response: bool,
    rec: &mut L7Record,
    rcode: &mut u16,
) -> Option<bool> {
    let mut pos = HEADER_LEN;
    for i in 0..h.qdcount {
        let out = if i == 0 { Some(&mut rec.request_resource) } else { None };
        let mut overflow = false;
        match read_name(msg, pos, out, &mut overflow) {
            Ok(end) => pos = end,
            Err(NameError::Short) => {
                if i == 0 {
                    rec.request_resource.clear();
                }
                return Some(true);
            }
            Err(NameError::Bad) => return None,
        }
        if i == 0 {
            rec.request_domain.push_str(&rec.request_resource);
            rec.endpoint.push_str(&rec.request_resource);
            let Some(qtype) = read_u16(msg, pos) else {
                return Some(true);
            };
            push_type(&mut rec.request_type, qtype);
        }
        pos += 4;
        if pos > msg.len() {
            return Some(true);
        }
    }
    let answers = usize::from(h.ancount);
    let total = answers + usize::from(h.nscount) + usize::from(h.arcount);
    let mut full = false;
    for i in 0..total {
        // Owner name, then TYPE CLASS TTL RDLENGTH.
        pos = match read_name(msg, pos, None, &mut false) {
            Ok(end) => end,
            Err(NameError::Short) => return Some(true),
            // A broken record after a sound question: keep what we have.
            Err(NameError::Bad) => return Some(false),
        };
        let Some(fixed) = msg.get(pos..pos + 10) else {
            return Some(true);
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rd_start = pos + 10;
        let rd_end = rd_start + rdlen;
        if response && i < answers && !full {
            let rdata = msg.get(rd_start..rd_end.min(msg.len())).unwrap_or_default();
            full = !render_answer(&mut rec.response_result, msg, rtype, rd_start, rdata);
        }
        if rtype == 41 && i >= answers + usize::from(h.nscount) {
            // EDNS OPT: the TTL field's top byte extends the RCODE.
            *rcode |= ((ttl >> 24) as u16) << 4;
        }
        if rd_end > msg.len() {
            return Some(true);
        }
        pos = rd_end;
    }
    Some(false)
}

/// Append one answer to `out`; false once `out` is full.
fn render_answer(out: &mut String, msg: &[u8], rtype: u16, rd_start: usize, rdata: &[u8]) -> bool {
    let mark = out.len();
    if !out.is_empty() {
        out.push(';');
    }
    let ok = match rtype {
        1 => match <[u8; 4]>::try_from(rdata) {
            Ok(a) => write_bounded(out, core::net::Ipv4Addr::from(a)),
            Err(_) => push_room(out, "A"),
        },
        28 => match <[u8; 16]>::try_from(rdata) {
            Ok(a) => write_bounded(out, core::net::Ipv6Addr::from(a)),
            Err(_) => push_room(out, "AAAA"),
        },
        // CNAME, NS, PTR, DNAME: one name.
        2 | 5 | 12 | 39 => name_into(out, msg, rd_start),
        15 => match read_u16(msg, rd_start) {
            Some(pref) if rdata.len() >= 3 => {
                write_bounded(out, pref) && push_room(out, " ") && name_into(out, msg, rd_start + 2)
            }
            _ => push_room(out, "MX"),
        },
        16 => {
            let mut rest = rdata;
            let mut ok = true;
            while let Some((&n, tail)) = rest.split_first() {
                let n = usize::from(n).min(tail.len());
                let (text, next) = tail.split_at(n);
                if !push_text(out, text) {
                    ok = false;
                    break;
                }
                rest = next;
            }
            ok
        }
        33 if rdata.len() >= 7 => {
            let w = |i: usize| u16::from_be_bytes([rdata[i], rdata[i + 1]]);
            let (prio, weight, port) = (w(0), w(2), w(4));
            let mut ok = write_bounded(out, prio) && push_room(out, " ");
            ok = ok && write_bounded(out, weight) && push_room(out, " ");
            ok = ok && write_bounded(out, port) && push_room(out, " ");
            ok && name_into(out, msg, rd_start + 6)
        }
        _ => {
            let mut ok = true;
            match type_name(rtype) {
                Some(name) => ok = push_room(out, name),
                None => {
                    if out.len() + 10 <= MAX_FIELD_LEN {
                        let _ = write!(out, "TYPE{rtype}");
                    } else {
                        ok = false;
                    }
                }
            }
            ok
        }
    };
    if !ok {
        // Never leave half an answer behind.
        out.truncate(mark);
    }
    ok
}

fn name_into(out: &mut String, msg: &[u8], pos: usize) -> bool {
    let mut overflow = false;
    read_name(msg, pos, Some(out), &mut overflow).is_ok() && !overflow
}

/// Push `s` if it fits in the field; false otherwise.
fn push_room(out: &mut String, s: &str) -> bool {
    if out.len() + s.len() > MAX_FIELD_LEN {
        return false;
    }
    out.push_str(s);
    true
}

fn write_bounded(out: &mut String, v: impl core::fmt::Display) -> bool {
    // Addresses and u16 take at most 39 bytes.
    if out.len() + 40 > MAX_FIELD_LEN {
        return false;
    }
    let _ = write!(out, "{v}");
    true
}

/// Push TXT bytes: printable ASCII as is, others escaped as `\ddd`.
fn push_text(out: &mut String, text: &[u8]) -> bool {
    if text.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return match core::str::from_utf8(text) {
            Ok(s) => push_room(out, s),
            Err(_) => false,
        };
    }
    for &b in text {
        if !push_byte_escaped(out, b, false) {
            return false;
        }
    }
    true
}

fn push_byte_escaped(out: &mut String, b: u8, in_name: bool) -> bool {
    let plain = (0x21..0x7f).contains(&b) || (!in_name && b == b' ');
    if plain && !(in_name && (b == b'.' || b == b'\\')) {
        if out.len() >= MAX_FIELD_LEN {
            return false;
        }
        out.push(char::from(b));
        return true;
    }
    if out.len() + 4 > MAX_FIELD_LEN {
        return false;
    }
    if in_name && (b == b'.' || b == b'\\') {
        out.push('\\');
        out.push(char::from(b));
    } else {
        let _ = write!(out, "\\{b:03}");
    }
    true
}

#[derive(Debug, PartialEq, Eq)]
enum NameError {
    /// The message ends inside the name.
    Short,
    /// Reserved label type, forward or looping pointer, name too long.
    Bad,
}

/// Decode the name at `start`. Appends it dotted to `out` (as far as it
/// fits: `overflow` tells it did not) and returns the offset just past the
/// name where it was written.
fn read_name(
    msg: &[u8],
    start: usize,
    mut out: Option<&mut String>,
    overflow: &mut bool,
) -> Result<usize, NameError> {
    let mut pos = start;
    let mut end = None;
    // Every pointer must land before this offset, which then moves down to
    // the target: jumps strictly decrease, so decoding terminates.
    let mut limit = start;
    let mut jumps = 0;
    let mut wire = 0usize;
    let mut first = true;
    loop {
        let len = *msg.get(pos).ok_or(NameError::Short)?;
        match len & 0xc0 {
            0x00 => {
                let len = usize::from(len);
                if len == 0 {
                    if first {
                        if let Some(o) = out.as_deref_mut() {
                            *overflow |= !push_room(o, ".");
                        }
                    }
                    return Ok(end.unwrap_or(pos + 1));
                }
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(NameError::Short)?;
                wire += len + 1;
                if wire > MAX_NAME_WIRE {
                    return Err(NameError::Bad);
                }
                if let Some(o) = out.as_deref_mut() {
                    if !push_label(o, label, first) {
                        *overflow = true;
                        out = None;
                    }
                }
                first = false;
                pos += 1 + len;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or(NameError::Short)?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(lo);
                jumps += 1;
                if target >= limit || target < HEADER_LEN || jumps > MAX_JUMPS {
                    return Err(NameError::Bad);
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                limit = target;
                pos = target;
            }
            _ => return Err(NameError::Bad),
        }
    }
}

fn push_label(out: &mut String, label: &[u8], first: bool) -> bool {
    if !first && !push_room(out, ".") {
        return false;
    }
    if label.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return match core::str::from_utf8(label) {
            Ok(s) => push_room(out, s),
            Err(_) => false,
        };
    }
    label.iter().all(|&b| push_byte_escaped(out, b, true))
}

fn push_type(out: &mut String, t: u16) {
    match type_name(t) {
        Some(name) => out.push_str(name),
        None => {
            let _ = write!(out, "TYPE{t}");
        }
    }
}

/// Mnemonic of a resource record type (RFC 1035, IANA registry).
pub fn type_name(t: u16) -> Option<&'static str> {
    Some(match t {
        1 => "A",
        2 => "NS",
        3 => "MD",
        4 => "MF",
        5 => "CNAME",
        6 => "SOA",
        7 => "MB",
        8 => "MG",
        9 => "MR",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        14 => "MINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        24 => "SIG",
        25 => "KEY",
        28 => "AAAA",
        29 => "LOC",
        33 => "SRV",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        39 => "DNAME",
        41 => "OPT",
        42 => "APL",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        49 => "DHCID",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        53 => "SMIMEA",
        55 => "HIP",
        59 => "CDS",
        60 => "CDNSKEY",
        61 => "OPENPGPKEY",
        62 => "CSYNC",
        63 => "ZONEMD",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        108 => "EUI48",
        109 => "EUI64",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "ANY",
        256 => "URI",
        257 => "CAA",
        32768 => "TA",
        32769 => "DLV",
        _ => return None,
    })
}

/// Mnemonic of a response code (RFC 1035, 2136, 6891).
pub fn rcode_name(rcode: u16) -> Option<&'static str> {
    Some(match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        16 => "BADVERS",
        23 => "BADCOOKIE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
