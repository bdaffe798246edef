//! The one record type every parser fills, whatever the protocol.

use crate::trace::TraceContext;
use core::fmt;

/// Application protocols fathom understands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L7Protocol {
    #[default]
    Unknown,
    Http1,
    Http2,
    Grpc,
    Dns,
    Redis,
    MySql,
    Kafka,
    Dubbo,
}

impl L7Protocol {
    /// Every protocol with a parser, in detection order.
    pub const ALL: [L7Protocol; 7] = [
        L7Protocol::Http1,
        L7Protocol::Http2,
        L7Protocol::Dubbo,
        L7Protocol::MySql,
        L7Protocol::Redis,
        L7Protocol::Kafka,
        L7Protocol::Dns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            L7Protocol::Unknown => "unknown",
            L7Protocol::Http1 => "HTTP",
            L7Protocol::Http2 => "HTTP2",
            L7Protocol::Grpc => "gRPC",
            L7Protocol::Dns => "DNS",
            L7Protocol::Redis => "Redis",
            L7Protocol::MySql => "MySQL",
            L7Protocol::Kafka => "Kafka",
            L7Protocol::Dubbo => "Dubbo",
        }
    }
}

impl fmt::Display for L7Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way bytes travel on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: requests.
    Request,
    /// Server to client: responses.
    Response,
}

impl Direction {
    pub fn reverse(self) -> Direction {
        match self {
            Direction::Request => Direction::Response,
            Direction::Response => Direction::Request,
        }
    }
}

/// What a record holds: a lone request, a lone response, or a paired call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageType {
    #[default]
    Request,
    Response,
    /// A request merged with its response (or with its timeout).
    Session,
}

/// Outcome of a call, in the terms every protocol shares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseStatus {
    Ok,
    ClientError,
    ServerError,
    Timeout,
    ParseFailed,
    #[default]
    Unknown,
}

impl ResponseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseStatus::Ok => "ok",
            ResponseStatus::ClientError => "client_error",
            ResponseStatus::ServerError => "server_error",
            ResponseStatus::Timeout => "timeout",
            ResponseStatus::ParseFailed => "parse_failed",
            ResponseStatus::Unknown => "unknown",
        }
    }
}

/// Longest text kept in any string field; longer values are cut on a char
/// boundary so one message never costs more than a few KiB.
pub const MAX_FIELD_LEN: usize = 1024;

/// One L7 message or call. Parsers fill the half that belongs to the message
/// they saw; [`L7Record::merge_response`] joins the halves of one call.
///
/// String fields are cleared and refilled, never dropped, so a record reused
/// across messages stops allocating once its buffers have grown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct L7Record {
    pub protocol: L7Protocol,
    pub msg_type: MessageType,
    /// Protocol version, e.g. "1.1", "2", "RESP3", "10" (MySQL protocol).
    pub version: String,
    /// Method, command or operation: GET, SET, COM_QUERY, Produce, A.
    pub request_type: String,
    /// Host, DNS name, database, or Dubbo service.
    pub request_domain: String,
    /// Path, SQL text, Redis arguments, Kafka topic, gRPC /service/method.
    pub request_resource: String,
    /// Low-cardinality name of the operation, fit for grouping metrics.
    pub endpoint: String,
    /// Stream id, correlation id, DNS id: what pairs a response to its request.
    pub request_id: Option<u64>,
    pub response_code: Option<i32>,
    pub response_status: ResponseStatus,
    /// Error text: HTTP reason, Redis -ERR text, MySQL error message, Kafka error name.
    pub response_exception: String,
    /// Result summary: DNS answers, affected rows, Redis reply.
    pub response_result: String,
    /// Bytes of the request message on the wire (headers and body).
    pub request_length: Option<u32>,
    pub response_length: Option<u32>,
    pub trace: TraceContext,
    /// The parser saw only a prefix of the message.
    pub truncated: bool,
    /// Set on requests that get no response by protocol rule (COM_QUIT,
    /// COM_STMT_CLOSE, Kafka Produce with acks=0, Dubbo one-way).
    pub no_response: bool,
}

impl L7Record {
    /// Reset every field, keeping string capacity.
    pub fn clear(&mut self) {
        self.protocol = L7Protocol::Unknown;
        self.msg_type = MessageType::Request;
        self.version.clear();
        self.request_type.clear();
        self.request_domain.clear();
        self.request_resource.clear();
        self.endpoint.clear();
        self.request_id = None;
        self.response_code = None;
        self.response_status = ResponseStatus::Unknown;
        self.response_exception.clear();
        self.response_result.clear();
        self.request_length = None;
        self.response_length = None;
        self.trace.clear();
        self.truncated = false;
        self.no_response = false;
    }

    /// Copy `src` into `self`, reusing `self`'s buffers.
    pub fn copy_from(&mut self, src: &L7Record) {
        self.protocol = src.protocol;
        self.msg_type = src.msg_type;
        set(&mut self.version, &src.version);
        set(&mut self.request_type, &src.request_type);
        set(&mut self.request_domain, &src.request_domain);
        set(&mut self.request_resource, &src.request_resource);
        set(&mut self.endpoint, &src.endpoint);
        self.request_id = src.request_id;
        self.response_code = src.response_code;
        self.response_status = src.response_status;
        set(&mut self.response_exception, &src.response_exception);
        set(&mut self.response_result, &src.response_result);
        self.request_length = src.request_length;
        self.response_length = src.response_length;
        self.trace.copy_from(&src.trace);
        self.truncated = src.truncated;
        self.no_response = src.no_response;
    }

    /// Fold a response into this request, making it a session record.
    /// Fields the response knows better (status, result, exception, length)
    /// come from it; request-side fields stay unless the request lacked them
    /// (a response may name the resource, e.g. a DNS answer repeats the question).
    pub fn merge_response(&mut self, resp: &L7Record) {
        self.msg_type = MessageType::Session;
        if self.protocol == L7Protocol::Http2 && resp.protocol == L7Protocol::Grpc {
            self.protocol = L7Protocol::Grpc;
        }
        if self.version.is_empty() {
            set(&mut self.version, &resp.version);
        }
        fill(&mut self.request_type, &resp.request_type);
        fill(&mut self.request_domain, &resp.request_domain);
        fill(&mut self.request_resource, &resp.request_resource);
        fill(&mut self.endpoint, &resp.endpoint);
        if self.request_id.is_none() {
            self.request_id = resp.request_id;
        }
        self.response_code = resp.response_code;
        self.response_status = resp.response_status;
        set(&mut self.response_exception, &resp.response_exception);
        set(&mut self.response_result, &resp.response_result);
        self.response_length = resp.response_length;
        self.trace.fill_from(&resp.trace);
        self.truncated |= resp.truncated;
    }

    /// Mark a request that never got its response.
    pub fn set_timeout(&mut self) {
        self.msg_type = MessageType::Session;
        self.response_status = ResponseStatus::Timeout;
    }
}

fn set(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

fn fill(dst: &mut String, src: &str) {
    if dst.is_empty() {
        dst.push_str(src);
    }
}

/// Append `src` to `dst`, bounded by [`MAX_FIELD_LEN`], replacing invalid
/// UTF-8 with U+FFFD. Returns false when something was cut.
pub fn push_bounded(dst: &mut String, src: &[u8]) -> bool {
    if let Ok(s) = core::str::from_utf8(src) {
        return push_str_bounded(dst, s);
    }
    for chunk in src.utf8_chunks() {
        if !push_str_bounded(dst, chunk.valid()) {
            return false;
        }
        if !chunk.invalid().is_empty() && !push_str_bounded(dst, "\u{FFFD}") {
            return false;
        }
    }
    true
}

/// Append `src` to `dst`, cut on a char boundary at [`MAX_FIELD_LEN`].
pub fn push_str_bounded(dst: &mut String, src: &str) -> bool {
    let room = MAX_FIELD_LEN.saturating_sub(dst.len());
    if src.len() <= room {
        dst.push_str(src);
        return true;
    }
    let mut cut = room;
    while !src.is_char_boundary(cut) {
        cut -= 1;
    }
    dst.push_str(&src[..cut]);
    false
}

/// Replace `dst` with `src` (bounded, lossy UTF-8).
pub fn set_bounded(dst: &mut String, src: &[u8]) -> bool {
    dst.clear();
    push_bounded(dst, src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_bounded_cuts_and_replaces() {
        let mut s = String::new();
        assert!(push_bounded(&mut s, b"abc"));
        assert_eq!(s, "abc");
        s.clear();
        assert!(push_bounded(&mut s, b"a\xffb"));
        assert_eq!(s, "a\u{FFFD}b");
        s.clear();
        let long = vec![b'x'; MAX_FIELD_LEN + 10];
        assert!(!push_bounded(&mut s, &long));
        assert_eq!(s.len(), MAX_FIELD_LEN);
    }

    #[test]
    fn merge_keeps_request_fields_and_takes_response_status() {
        let mut req = L7Record {
            protocol: L7Protocol::Http1,
            request_type: "GET".into(),
            request_resource: "/a".into(),
            request_length: Some(10),
            ..Default::default()
        };
        let resp = L7Record {
            protocol: L7Protocol::Http1,
            msg_type: MessageType::Response,
            response_code: Some(404),
            response_status: ResponseStatus::ClientError,
            response_length: Some(20),
            ..Default::default()
        };
        req.merge_response(&resp);
        assert_eq!(req.msg_type, MessageType::Session);
        assert_eq!(req.request_type, "GET");
        assert_eq!(req.response_code, Some(404));
        assert_eq!(req.response_status, ResponseStatus::ClientError);
        assert_eq!(req.request_length, Some(10));
        assert_eq!(req.response_length, Some(20));
    }
}
