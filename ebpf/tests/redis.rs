//! redis-cli -> redis-server: the RESP command and reply as both ends moved them.

mod common;

use std::process::{Command, Stdio};

use common::{collect_until, free_port, load, Proc};
use fathom_ebpf::{Direction, Event, SocketDataEvent};

fn find<'a>(
    events: &'a [Event],
    pid: u32,
    direction: Direction,
    bytes: &[u8],
) -> Option<&'a SocketDataEvent> {
    events.iter().find_map(|e| match e {
        Event::Data(d) if d.pid == pid && d.direction == direction && d.payload == bytes => Some(d),
        _ => None,
    })
}

#[test]
fn redis_cli_to_redis_server() {
    let mut capture = load();

    let port = free_port();
    let mut server = Proc::spawn(
        "redis-server",
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    server.wait_for_port(port);
    let server_pid = server.pid();

    let cli = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["SET", "fathom:key", "value"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start redis-cli");
    let cli_pid = cli.id();
    let out = cli.wait_with_output().expect("wait for redis-cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");

    let command: &[u8] = b"*3\r\n$3\r\nSET\r\n$10\r\nfathom:key\r\n$5\r\nvalue\r\n";
    let reply: &[u8] = b"+OK\r\n";
    let events = collect_until(&mut capture, |events| {
        find(events, cli_pid, Direction::Egress, command).is_some()
            && find(events, server_pid, Direction::Ingress, command).is_some()
            && find(events, server_pid, Direction::Egress, reply).is_some()
            && find(events, cli_pid, Direction::Ingress, reply).is_some()
    });

    let sent = find(&events, cli_pid, Direction::Egress, command)
        .expect("redis-cli's command egress not seen");
    let received = find(&events, server_pid, Direction::Ingress, command)
        .expect("redis-server's command ingress not seen");
    let answered = find(&events, server_pid, Direction::Egress, reply)
        .expect("redis-server's reply egress not seen");
    let got = find(&events, cli_pid, Direction::Ingress, reply)
        .expect("redis-cli's reply ingress not seen");

    assert_eq!(sent.syscall_len, command.len() as u64);
    assert_eq!(received.syscall_len, command.len() as u64);
    assert_eq!(answered.syscall_len, reply.len() as u64);
    assert_eq!(got.syscall_len, reply.len() as u64);
    assert_eq!(sent.dst.port(), port);
    assert_eq!((sent.src, sent.dst), (received.src, received.dst));
    assert_eq!((answered.src, answered.dst), (got.src, got.dst));
    assert_eq!((answered.dst, answered.src), (sent.src, sent.dst));
    assert_eq!(sent.tcp_seq, received.tcp_seq);
    assert_eq!(answered.tcp_seq, got.tcp_seq);
    assert!(sent.fd > 2 && received.fd > 2);
    assert_eq!(received.comm, "redis-server");
    assert_eq!(answered.syscall_trace_id, received.syscall_trace_id);
}
