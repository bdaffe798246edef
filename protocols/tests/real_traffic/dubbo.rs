//! Dubbo: the dubbo-ssl-python client (module dubbo_ssl) against a small
//! Python responder (no Dubbo server is available as a package: see
//! peers/dubbo_peer.py), answering status 20 with a Hessian2 value, or 70
//! (SERVICE_ERROR). tshark has no Dubbo dissector, so the reference is what
//! the client was asked to call (service, method) and what it got back.

use std::process::Command;

use fathom_protocols::{L7Protocol, Transport};
use serde_json::Value;

use crate::compare::{assert_all, compare, number_by_conn, Msg};
use crate::flows::decode_pcap;
use crate::harness::*;

const PORT: u16 = 24880;

#[test]
fn dubbo() {
    require(&["dumpcap", "tshark", "python3"]);
    require_py(&["dubbo_ssl"]);
    let dir = TempDir::new("dubbo");
    let p = PORT.to_string();
    let mut srv = Proc::spawn_on(
        "dubbo-responder",
        Command::new("python3").arg(peer("dubbo_peer.py")).args(["server", &p]),
        &dir,
        &[PORT],
    );
    wait_port(PORT, &mut srv);
    let cap = Capture::start(&dir, &format!("tcp port {PORT}"));
    let out = run(
        "dubbo client",
        Command::new("python3").arg(peer("dubbo_peer.py")).args(["client", &p]),
    );
    let pcap = cap.stop();
    srv.check_alive();
    let calls: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 5, "dubbo client made {} calls", calls.len());

    let d = decode_pcap(&pcap, &[PORT]);
    crate::dump_ours("dubbo", &d);
    crate::flows::check_tcp_bytes(&pcap, &d);
    // The client keeps one pooled connection per host: all calls ride on it.
    let conns: Vec<u16> = d
        .flows
        .iter()
        .filter(|f| f.transport == Transport::Tcp && f.bytes[0] > 0)
        .map(|f| f.client_port)
        .collect();
    assert_eq!(conns.len(), 1, "expected one Dubbo connection, saw {conns:?}");
    let mut reference: Vec<Msg> = calls
        .iter()
        .map(|c| {
            let ok = c["ok"].as_bool().unwrap();
            Msg::new(conns[0], 0)
                .f("service", c["service"].as_str().unwrap())
                .f("method", c["method"].as_str().unwrap())
                .f("code", if ok { "20" } else { "70" })
                .f("status", if ok { "ok" } else { "server_error" })
        })
        .collect();
    number_by_conn(&mut reference);
    crate::dump_ref("dubbo", &reference);
    let mut ours: Vec<Msg> = crate::ours_of(&d, &[L7Protocol::Dubbo])
        .iter()
        .map(|o| {
            let r = &o.rec;
            Msg::new(o.client_port, 0)
                .f("service", &r.request_domain)
                .f("method", &r.request_type)
                .f("code", r.response_code.map(|c| c.to_string()).unwrap_or_default())
                .f("status", r.response_status.as_str())
        })
        .collect();
    number_by_conn(&mut ours);
    let a = compare("dubbo (vs client library)", &reference, &ours);
    assert_all(&[a]);
}
