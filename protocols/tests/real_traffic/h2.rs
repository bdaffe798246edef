//! HTTP/2 and gRPC: nghttpd with nghttp (concurrent streams on one
//! connection, 404s, a POST with a body) and curl --http2-prior-knowledge;
//! a grpcio server and client (unary OK, NOT_FOUND, server streaming;
//! for gRPC the response code compared is the grpc-status). Reference: tshark's HTTP/2 dissector, walked in its JSON
//! output (several HTTP/2 frames share a TCP segment, so fields cannot be
//! zipped), keyed by stream id.

use std::collections::BTreeMap;
use std::process::Command;

use fathom_protocols::L7Protocol;
use serde_json::Value;

use crate::compare::{assert_all, compare, Msg};
use crate::flows::decode_pcap;
use crate::harness::*;
use crate::http1::http_status;

const H2_PORT: u16 = 22080;
const GRPC_PORT: u16 = 23050;

fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        v => vec![v],
    }
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Array(a)) => a.first().and_then(|x| x.as_str()).unwrap_or("").to_string(),
        _ => String::new(),
    }
}

#[derive(Default, Debug)]
struct Stream {
    method: String,
    path: String,
    status: String,
    grpc_status: String,
}

/// (client port, stream id) -> what tshark decoded of the stream's HEADERS.
fn tshark_streams(pcap: &std::path::Path, port: u16) -> BTreeMap<(u16, u64), Stream> {
    let frames = tshark_json(
        pcap,
        &[format!("tcp.port=={port},http2")],
        "http2.type == 1",
        &["tcp", "http2"],
    );
    let mut out: BTreeMap<(u16, u64), Stream> = BTreeMap::new();
    for f in &frames {
        let layers = &f["_source"]["layers"];
        let sp = num(&s(&layers["tcp"], "tcp.srcport")) as u16;
        let dp = num(&s(&layers["tcp"], "tcp.dstport")) as u16;
        let to_server = dp == port;
        let conn = if to_server { sp } else { dp };
        for h2 in items(&layers["http2"]) {
            for st in items(&h2["http2.stream"]) {
                if s(st, "http2.type") != "1" {
                    continue;
                }
                let id = num(&s(st, "http2.streamid"));
                let e = out.entry((conn, id)).or_default();
                for h in items(&st["http2.header"]) {
                    let name = s(h, "http2.header.name");
                    let value = s(h, "http2.header.value");
                    match name.as_str() {
                        ":method" if to_server => e.method = value,
                        ":path" if to_server => e.path = value,
                        ":status" if !to_server && e.status.is_empty() => e.status = value,
                        "grpc-status" if !to_server => e.grpc_status = value,
                        _ => {}
                    }
                }
            }
        }
    }
    out
}

#[test]
fn http2() {
    require(&["dumpcap", "tshark", "nghttpd", "nghttp", "curl"]);
    let dir = TempDir::new("http2");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<html>fathom h2</html>\n").unwrap();
    std::fs::write(www.join("big.bin"), vec![b'z'; 100_000]).unwrap();
    std::fs::write(www.join("a.txt"), "a\n").unwrap();
    let mut srv = Proc::spawn_on(
        "nghttpd",
        Command::new("nghttpd").args(["--no-tls", "-d"]).arg(&www).arg(H2_PORT.to_string()),
        &dir,
        &[H2_PORT],
    );
    wait_port(H2_PORT, &mut srv);
    let cap = Capture::start(&dir, &format!("tcp port {H2_PORT}"));
    let base = format!("http://127.0.0.1:{H2_PORT}");
    // nghttp: concurrent streams on one connection (with its priority tree).
    let paths = ["/index.html", "/big.bin", "/a.txt?x=1", "/missing.html", "/index.html?again=1"];
    let mut c = Command::new("nghttp");
    c.args(["-n"]);
    for p in paths {
        c.arg(format!("{base}{p}"));
    }
    run("nghttp", &mut c);
    // A POST with a body, multiplexed with a GET.
    std::fs::write(dir.join("post.txt"), "k=v&fathom=1\n".repeat(100)).unwrap();
    run(
        "nghttp post",
        Command::new("nghttp")
            .args(["-n", "-d"])
            .arg(dir.join("post.txt"))
            .arg(format!("{base}/index.html")),
    );
    // curl with prior knowledge, one request per connection (curl 7.88
    // fails reusing a prior-knowledge connection to nghttpd).
    for p in ["/a.txt", "/nothing/here"] {
        run(
            "curl h2",
            Command::new("curl").args([
                "-s",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                &format!("{base}{p}"),
            ]),
        );
    }
    let pcap = cap.stop();
    srv.check_alive();
    let expected = paths.len() + 1 + 2;

    let d = decode_pcap(&pcap, &[H2_PORT]);
    crate::dump_ours("http2", &d);
    crate::flows::check_tcp_bytes(&pcap, &d);
    let streams = tshark_streams(&pcap, H2_PORT);
    let reference: Vec<Msg> = streams
        .iter()
        .map(|((conn, id), st)| {
            Msg::new(*conn, *id)
                .f("method", &st.method)
                .f("path", &st.path)
                .f("code", &st.status)
                .f("status", http_status(&st.status))
        })
        .collect();
    crate::dump_ref("http2", &reference);
    assert_eq!(
        reference.len(),
        expected,
        "tshark saw {} HTTP/2 streams, curl made {expected}",
        reference.len()
    );
    let ours: Vec<Msg> = crate::ours_of(&d, &[L7Protocol::Http2, L7Protocol::Grpc])
        .iter()
        .map(|o| {
            let r = &o.rec;
            Msg::new(o.client_port, r.request_id.unwrap_or(u64::MAX))
                .f("method", &r.request_type)
                .f("path", &r.request_resource)
                .f("code", r.response_code.map(|c| c.to_string()).unwrap_or_default())
                .f("status", r.response_status.as_str())
        })
        .collect();
    let a = compare("http2", &reference, &ours);
    assert_all(&[a]);
}

#[test]
fn grpc() {
    require(&["dumpcap", "tshark", "python3"]);
    require_py(&["grpc"]);
    let dir = TempDir::new("grpc");
    let p = GRPC_PORT.to_string();
    let mut srv = Proc::spawn_on(
        "grpc-server",
        Command::new("python3").arg(peer("grpc_peer.py")).args(["server", &p]),
        &dir,
        &[GRPC_PORT],
    );
    wait_port(GRPC_PORT, &mut srv);
    let cap = Capture::start(&dir, &format!("tcp port {GRPC_PORT}"));
    let out =
        run("grpc client", Command::new("python3").arg(peer("grpc_peer.py")).args(["client", &p]));
    let pcap = cap.stop();
    srv.check_alive();
    let client_calls: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let d = decode_pcap(&pcap, &[GRPC_PORT]);
    crate::dump_ours("grpc", &d);
    crate::flows::check_tcp_bytes(&pcap, &d);
    let streams = tshark_streams(&pcap, GRPC_PORT);
    let reference: Vec<Msg> = streams
        .iter()
        .map(|((conn, id), st)| {
            Msg::new(*conn, *id)
                .f("protocol", "gRPC")
                .f("method", &st.method)
                .f("path", &st.path)
                .f("grpc_status", &st.grpc_status)
                .f("ok", st.grpc_status == "0")
        })
        .collect();
    crate::dump_ref("grpc", &reference);
    // tshark and the client library agree on what was called.
    let ref_paths: Vec<(&str, bool)> =
        reference.iter().map(|m| (m.get("path").unwrap(), m.get("ok") == Some("true"))).collect();
    let cli_paths: Vec<(&str, bool)> = client_calls
        .iter()
        .map(|c| (c["path"].as_str().unwrap(), c["code"].as_i64() == Some(0)))
        .collect();
    assert_eq!(ref_paths, cli_paths, "tshark's gRPC calls differ from the client's own list");
    let ours: Vec<Msg> = crate::ours_of(&d, &[L7Protocol::Http2, L7Protocol::Grpc])
        .iter()
        .map(|o| {
            let r = &o.rec;
            Msg::new(o.client_port, r.request_id.unwrap_or(u64::MAX))
                .f("protocol", r.protocol.as_str())
                .f("method", &r.request_type)
                .f("path", &r.request_resource)
                .f("grpc_status", r.response_code.map(|c| c.to_string()).unwrap_or_default())
                .f("ok", r.response_status == fathom_protocols::ResponseStatus::Ok)
        })
        .collect();
    let a = compare("grpc", &reference, &ours);
    assert_all(&[a]);
}
