//! curl -> python3 http.server on loopback, both started after the programs
//! are loaded: request and response bytes, attribution, 5-tuple, TCP
//! sequence numbers, lifecycle and process events.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{collect_until, free_port, load, Proc, TempDir};
use fathom_ebpf::{
    Direction, Event, Hook, L4Proto, ProcessEventKind, SocketDataEvent, SocketEventKind,
};

fn data(
    events: &[Event],
    pid: u32,
    direction: Direction,
    conn: (SocketAddr, SocketAddr),
) -> Vec<&SocketDataEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) if d.pid == pid && d.direction == direction => Some(d),
            _ => None,
        })
        .filter(|d| (d.src, d.dst) == conn || (d.dst, d.src) == conn)
        .collect()
}

fn concat(events: &[&SocketDataEvent]) -> Vec<u8> {
    events.iter().flat_map(|d| d.payload.iter().copied()).collect()
}

/// Each message starts where the previous one on the connection ended.
fn assert_contiguous(events: &[&SocketDataEvent], what: &str) {
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].tcp_seq,
            pair[0].tcp_seq.wrapping_add(pair[0].syscall_len as u32),
            "{what}: TCP sequence numbers are not contiguous: {pair:?}"
        );
    }
}

#[test]
fn curl_to_python_http_server() {
    let mut capture = load();

    let dir = TempDir::new("http");
    let body: Vec<u8> = b"hello from fathom\n".repeat(20);
    std::fs::write(dir.0.join("hello.txt"), &body).expect("write the served file");
    let port = free_port();
    let mut server = Proc::spawn(
        "python3 -m http.server",
        Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--directory")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    server.wait_for_port(port);
    let server_pid = server.pid();

    let url = format!("http://127.0.0.1:{port}/hello.txt");
    let curl = Command::new("curl")
        .args(["-sS", "--http1.1", "-A", "fathom-test", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start curl");
    let curl_pid = curl.id();
    let out = curl.wait_with_output().expect("wait for curl");
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, body, "curl got the file");
    let request =
        format!("GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: fathom-test\r\nAccept: */*\r\n\r\n");

    // curl has exited and the server closed its end of curl's connection: everything is
    // in the ring. (Not any close at the server: wait_for_port's probe connection closes
    // too, possibly before curl's.)
    let events = collect_until(&mut capture, |events| {
        let curl_exited = events.iter().any(|e| {
            matches!(e, Event::Process(p) if p.pid == curl_pid
                && matches!(p.kind, ProcessEventKind::Exit { .. }))
        });
        let curl_addr = events.iter().find_map(|e| match e {
            Event::Socket(s)
                if s.pid == curl_pid
                    && s.kind == SocketEventKind::Connect
                    && s.dst.port() == port =>
            {
                Some(s.src)
            }
            _ => None,
        });
        let server_closed = curl_addr.is_some_and(|curl_addr| {
            events.iter().any(|e| {
                matches!(e, Event::Socket(s) if s.pid == server_pid
                    && s.kind == SocketEventKind::Close && s.src.port() == port
                    && s.dst == curl_addr)
            })
        });
        curl_exited && server_closed
    });

    // The request as curl sent it.
    let curl_req = events
        .iter()
        .find_map(|e| match e {
            Event::Data(d)
                if d.pid == curl_pid
                    && d.direction == Direction::Egress
                    && d.dst.port() == port =>
            {
                Some(d)
            }
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "no egress from curl (pid {curl_pid}) to port {port}; counters {:?}",
                capture.counters()
            )
        });
    assert_eq!(String::from_utf8_lossy(&curl_req.payload), request);
    assert_eq!(curl_req.syscall_len, request.len() as u64);
    assert_eq!(curl_req.comm, "curl");
    assert!(curl_req.fd > 2, "curl's socket fd {}", curl_req.fd);
    assert_ne!(curl_req.tid, 0);
    assert_eq!(curl_req.l4, L4Proto::Tcp);
    assert_eq!(curl_req.src.ip().to_string(), "127.0.0.1");
    assert_eq!(curl_req.dst, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_ne!(curl_req.src.port(), 0);
    assert_ne!(curl_req.tcp_seq, 0);
    assert!(matches!(curl_req.hook, Hook::Sendto | Hook::Write | Hook::Sendmsg | Hook::Writev));
    let conn = (curl_req.src, curl_req.dst);

    // The same bytes arriving at the server, same tuple, same sequence.
    let server_in = data(&events, server_pid, Direction::Ingress, conn);
    assert!(!server_in.is_empty(), "no ingress at the server (pid {server_pid})");
    for d in &server_in {
        assert_eq!((d.src, d.dst), conn, "ingress tuple at the server: {d:?}");
        assert!(d.fd > 2);
    }
    assert_eq!(String::from_utf8_lossy(&concat(&server_in)), request);
    assert_eq!(server_in.iter().map(|d| d.syscall_len).sum::<u64>(), request.len() as u64);
    assert_eq!(server_in[0].tcp_seq, curl_req.tcp_seq, "request seq at both ends");
    assert_contiguous(&server_in, "server ingress");

    // The response, server egress versus curl ingress.
    let server_out = data(&events, server_pid, Direction::Egress, conn);
    let curl_in = data(&events, curl_pid, Direction::Ingress, conn);
    assert!(!server_out.is_empty(), "no response egress at the server");
    assert!(!curl_in.is_empty(), "no response ingress at curl");
    for d in &server_out {
        assert_eq!((d.dst, d.src), conn, "egress tuple at the server: {d:?}");
        assert_eq!(d.payload.len() as u64, d.syscall_len, "response part fully captured");
    }
    let response = concat(&server_out);
    assert!(response.starts_with(b"HTTP/1.0 200 OK\r\n"), "{}", String::from_utf8_lossy(&response));
    assert!(response.ends_with(&body));
    assert_eq!(concat(&curl_in), response, "curl read what the server wrote");
    assert_eq!(
        curl_in.iter().map(|d| d.syscall_len).sum::<u64>(),
        server_out.iter().map(|d| d.syscall_len).sum::<u64>()
    );
    assert_eq!(server_out[0].tcp_seq, curl_in[0].tcp_seq, "response seq at both ends");
    assert_contiguous(&server_out, "server egress");
    assert_contiguous(&curl_in, "curl ingress");

    // The server thread answered the request it received: one trace id.
    assert_ne!(server_in[0].syscall_trace_id, 0);
    for d in server_in.iter().chain(&server_out) {
        assert_eq!(d.syscall_trace_id, server_in[0].syscall_trace_id, "{d:?}");
    }
    assert_ne!(curl_in[0].syscall_trace_id, 0);

    // Lifecycle, attributed to the processes (not to softirq context).
    assert!(
        events.iter().any(|e| matches!(e, Event::Socket(s) if s.kind == SocketEventKind::Connect
            && s.pid == curl_pid && s.fd == curl_req.fd && (s.src, s.dst) == conn)),
        "no connect event from curl for {conn:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Socket(s) if s.kind == SocketEventKind::Accept
            && s.pid == server_pid && s.fd == server_in[0].fd && (s.src, s.dst) == conn)),
        "no accept event at the server for {conn:?}"
    );

    assert!(
        events.iter().any(|e| matches!(e, Event::Socket(s) if s.kind == SocketEventKind::Close
            && s.pid == server_pid && (s.dst, s.src) == conn)),
        "no close event at the server for {conn:?}"
    );

    // curl was exec'd after the programs were loaded.
    assert!(
        events.iter().any(|e| matches!(e, Event::Process(p) if p.pid == curl_pid
            && matches!(&p.kind, ProcessEventKind::Exec { filename } if filename.ends_with("curl")))),
        "no exec event for curl"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Process(p) if p.pid == curl_pid
            && p.kind == ProcessEventKind::Exit { exit_code: 0 })),
        "no exit event for curl"
    );

    let counters = capture.counters().expect("read counters");
    assert!(counters.hook(curl_req.hook).events >= 1, "{counters:?}");
    assert!(counters.hook(Hook::Exec).events >= 1, "{counters:?}");
    assert_eq!(counters.malformed, 0);
}
