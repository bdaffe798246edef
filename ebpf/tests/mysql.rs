//! mariadb client -> mariadbd over TCP: the MySQL protocol as both ends
//! moved it (server greeting, COM_QUERY, result set).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{collect_until, free_port, load, Proc, TempDir};
use fathom_ebpf::{Direction, Event, SocketDataEvent};

fn on_conn(
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn mariadb_client_to_server() {
    let mut capture = load();

    let dir = TempDir::new("mariadb");
    let data = dir.0.join("data");
    let install = Command::new("mariadb-install-db")
        .args(["--no-defaults", "--skip-test-db", "--user=root"])
        .arg(format!("--datadir={}", data.display()))
        .output()
        .expect("run mariadb-install-db (apt-get install mariadb-server)");
    assert!(
        install.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let port = free_port();
    let mut server = Proc::spawn(
        "mariadbd",
        Command::new("mariadbd")
            .args(["--no-defaults", "--user=root", "--skip-grant-tables"])
            .args(["--skip-name-resolve", "--bind-address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.0.join("sock").display()))
            .arg(format!("--pid-file={}", dir.0.join("pid").display()))
            .arg(format!("--log-error={}", dir.0.join("err.log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    server.wait_for_port(port);
    let server_pid = server.pid();

    let query = "SELECT 'fathom-probe' AS probe";
    let client = Command::new("mariadb")
        .args(["--no-defaults", "--skip-ssl", "-h", "127.0.0.1", "-u", "root"])
        .arg(format!("-P{port}"))
        .args(["-e", query])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the mariadb client");
    let client_pid = client.id();
    let out = client.wait_with_output().expect("wait for the client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fathom-probe"));

    // COM_QUERY: 3-byte length, sequence 0, command 0x03, the SQL text.
    let len = query.len() + 1;
    let mut packet = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, 0, 0x03];
    packet.extend_from_slice(query.as_bytes());

    let events = collect_until(&mut capture, |events| {
        let sent = events.iter().find_map(|e| match e {
            Event::Data(d) if d.pid == client_pid && d.payload == packet => Some(d),
            _ => None,
        });
        let Some(sent) = sent else { return false };
        let conn = (sent.src, sent.dst);
        contains(&concat(&on_conn(events, server_pid, Direction::Ingress, conn)), &packet)
            && contains(
                &concat(&on_conn(events, client_pid, Direction::Ingress, conn)),
                b"fathom-probe",
            )
    });

    let sent = events
        .iter()
        .find_map(|e| match e {
            Event::Data(d) if d.pid == client_pid && d.payload == packet => Some(d),
            _ => None,
        })
        .expect("the client's COM_QUERY was not seen");
    assert_eq!(sent.direction, Direction::Egress);
    assert_eq!(sent.syscall_len, packet.len() as u64);
    assert_eq!(sent.dst.port(), port);
    assert!(sent.fd > 2);
    let conn = (sent.src, sent.dst);

    // The server greeting opened the connection: protocol version 10.
    let server_out = on_conn(&events, server_pid, Direction::Egress, conn);
    assert!(!server_out.is_empty(), "no server egress on {conn:?}");
    let greeting = server_out[0];
    assert_eq!(greeting.payload.get(3..5), Some(&[0u8, 10][..]), "{greeting:?}");
    assert_eq!(greeting.comm, "mariadbd");

    // The server read the same bytes at the same sequence number.
    let server_in = on_conn(&events, server_pid, Direction::Ingress, conn);
    assert!(contains(&concat(&server_in), &packet));
    assert!(
        server_in.iter().any(|d| d.tcp_seq == sent.tcp_seq),
        "no server ingress at the query's sequence number {}",
        sent.tcp_seq
    );
    // The result set reached the client.
    assert!(contains(&concat(&server_out), b"fathom-probe"));
    assert!(contains(
        &concat(&on_conn(&events, client_pid, Direction::Ingress, conn)),
        b"fathom-probe"
    ));
}
