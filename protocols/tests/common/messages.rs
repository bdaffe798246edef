//! Realistic request/response pairs, shaped like what curl, nginx,
//! redis-cli, dig and the mariadb client put on the wire. Shared by the
//! benchmarks and the allocation test.
#![allow(dead_code)]

use fathom_protocols::{L7Protocol, Transport};

pub struct Pair {
    pub name: &'static str,
    pub protocol: L7Protocol,
    pub transport: Transport,
    pub request: Vec<u8>,
    pub response: Vec<u8>,
}

pub fn http1() -> Pair {
    let body = br#"{"id":42,"name":"fathom","roles":["admin","dev"]}"#;
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 23:00:00 GMT\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    Pair {
        name: "http1",
        protocol: L7Protocol::Http1,
        transport: Transport::Tcp,
        request: b"GET /api/v1/users/42?verbose=1 HTTP/1.1\r\nHost: api.example.com:8080\r\n\
User-Agent: curl/7.88.1\r\nAccept: */*\r\n\
traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
            .to_vec(),
        response,
    }
}

fn resp_bulk(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        v.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        v.extend_from_slice(p);
        v.extend_from_slice(b"\r\n");
    }
    v
}

pub fn redis() -> Pair {
    Pair {
        name: "redis",
        protocol: L7Protocol::Redis,
        transport: Transport::Tcp,
        request: resp_bulk(&[b"SET", b"user:42:session", b"c0ffee-5e55-10n"]),
        response: b"+OK\r\n".to_vec(),
    }
}

fn dns_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

pub fn dns() -> Pair {
    let mut q = vec![0x1a, 0x2b, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1];
    dns_name(&mut q, "www.example.com");
    q.extend_from_slice(&[0, 1, 0, 1]);
    // EDNS OPT record as dig sends it.
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    let mut r = vec![0x1a, 0x2b, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    dns_name(&mut r, "www.example.com");
    r.extend_from_slice(&[0, 1, 0, 1]);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 93, 184, 216, 34]);
    Pair {
        name: "dns",
        protocol: L7Protocol::Dns,
        transport: Transport::Udp,
        request: q,
        response: r,
    }
}

fn mysql_packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

pub fn mysql() -> Pair {
    let mut q = vec![0x03];
    q.extend_from_slice(b"UPDATE users SET last_seen = NOW() WHERE id = 42");
    // OK: affected rows 1, last insert id 0, status autocommit, 0 warnings.
    let ok = [0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00];
    Pair {
        name: "mysql",
        protocol: L7Protocol::MySql,
        transport: Transport::Tcp,
        request: mysql_packet(0, &q),
        response: mysql_packet(1, &ok),
    }
}

fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut v = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub fn http2() -> Pair {
    // :method GET, :scheme http, :path /index.html, :authority literal
    // (without indexing, so repeating the pair leaves HPACK state unchanged).
    let mut hb = vec![0x82, 0x86, 0x85, 0x01, 9];
    hb.extend_from_slice(b"localhost");
    let request = h2_frame(1, 0x05, 1, &hb);
    // :status 200, then DATA with END_STREAM.
    let mut response = h2_frame(1, 0x04, 1, &[0x88]);
    response.extend(h2_frame(0, 0x01, 1, b"<html>hello</html>"));
    Pair {
        name: "http2",
        protocol: L7Protocol::Http2,
        transport: Transport::Tcp,
        request,
        response,
    }
}

pub fn kafka() -> Pair {
    // Metadata v1 request for topic "orders", client id "fathom".
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes()); // api key Metadata
    body.extend_from_slice(&1i16.to_be_bytes()); // version
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&6i16.to_be_bytes());
    body.extend_from_slice(b"fathom");
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&6i16.to_be_bytes());
    body.extend_from_slice(b"orders");
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend(body);
    // Metadata v1 response: one broker, controller id, no topics.
    let mut rb = Vec::new();
    rb.extend_from_slice(&7i32.to_be_bytes());
    rb.extend_from_slice(&1i32.to_be_bytes());
    rb.extend_from_slice(&1i32.to_be_bytes());
    rb.extend_from_slice(&9i16.to_be_bytes());
    rb.extend_from_slice(b"localhost");
    rb.extend_from_slice(&9092i32.to_be_bytes());
    rb.extend_from_slice(&(-1i16).to_be_bytes());
    rb.extend_from_slice(&1i32.to_be_bytes());
    rb.extend_from_slice(&0i32.to_be_bytes());
    let mut response = (rb.len() as i32).to_be_bytes().to_vec();
    response.extend(rb);
    Pair {
        name: "kafka",
        protocol: L7Protocol::Kafka,
        transport: Transport::Tcp,
        request,
        response,
    }
}

pub fn all() -> Vec<Pair> {
    vec![http1(), http2(), redis(), dns(), mysql(), kafka()]
}
