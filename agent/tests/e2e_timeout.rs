//! End to end: a server that accepts and reads but never answers. With a
//! 1 s L7 timeout the live agent reports the request as a timeout while the
//! connection is still open, and the RED rows count it. Needs root.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::e2e::*;
use support::netns::NetnsPair;

const SILENT_SERVER: &str = "\
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
conns = []
while True:
    c, _ = s.accept()
    c.recv(65536)
    conns.append(c)  # kept open, never answered
";

const CLIENT: &str = "\
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.sendall(b'GET /never HTTP/1.1\\r\\nHost: silent\\r\\n\\r\\n')
time.sleep(600)
";

#[test]
fn unanswered_request_is_a_timeout() {
    let mut net = NetnsPair::new();
    let dir = TempDir::new(&format!("timeout-{}", net.client));
    std::fs::write(dir.join("server.py"), SILENT_SERVER).unwrap();
    std::fs::write(dir.join("client.py"), CLIENT).unwrap();
    let ip = net.server_ip.to_string();
    let (server, client) = (net.server.clone(), net.client.clone());
    let server_py = dir.join("server.py");
    net.spawn(&server, &["python3", server_py.to_str().unwrap(), &ip, "8090"], Stdio::null());
    wait_listening(&net, &server, 8090, false);
    let mut agent = Agent::run(
        &client,
        &net.client_if,
        &dir.0,
        &[("FATHOM_AGENT_FLOW__L7_TIMEOUT_MS", "1000")],
    );
    agent.wait_ready();
    let client_py = dir.join("client.py");
    net.spawn(&client, &["python3", client_py.to_str().unwrap(), &ip, "8090"], Stdio::null());

    // Reported while the connection is still open: by the timeout, not by a close.
    let rec = agent.wait_record("a timeout record", Duration::from_secs(120), |r| {
        r["type"] == "l7_log" && r["flow"]["server_port"] == 8090
    });
    assert_eq!(rec["response_status"], "timeout", "{rec}");
    assert_eq!(rec["l7_protocol"], "HTTP", "{rec}");
    assert_eq!(rec["request_type"], "GET", "{rec}");
    assert_eq!(rec["request_resource"], "/never", "{rec}");
    assert!(rec["response_code"].is_null(), "{rec}");
    assert!(u(&rec["start_time_us"]) <= u(&rec["end_time_us"]), "{rec}");
    assert!(rec["resp_tcp_seq"].is_null(), "{rec}");

    agent.wait_quiet();
    let st = agent.stop();
    assert!(st.status.success(), "agent exit {}:\n{}", st.status, st.stderr);
    let l7: Vec<_> = of_type(&st.records, "l7_log")
        .into_iter()
        .filter(|r| r["flow"]["server_port"] == 8090)
        .collect();
    assert_eq!(l7.len(), 1, "one call, reported once: {l7:?}");
    for gran in ["1s", "1m"] {
        let rows: Vec<_> = of_type(&st.records, "red_metric")
            .into_iter()
            .filter(|m| m["server_port"] == 8090 && m["granularity"] == gran)
            .collect();
        let sum = |k: &str| rows.iter().map(|m| u(&m[k])).sum::<u64>();
        assert_eq!(
            (sum("requests"), sum("responses"), sum("timeouts"), sum("latency_count")),
            (1, 0, 1, 0),
            "{gran}: {rows:?}"
        );
    }
    // The connection was still open at shutdown.
    let l4: Vec<_> = of_type(&st.records, "l4_flow")
        .into_iter()
        .filter(|r| r["flow"]["server_port"] == 8090)
        .collect();
    assert_eq!(l4.len(), 1, "{l4:?}");
    assert_eq!(l4[0]["close_type"], "shutdown", "{}", l4[0]);
}
