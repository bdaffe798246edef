//! Real traffic on loopback (curl -> python3 http.server, redis-cli ->
//! redis-server) captured with dumpcap, replayed through the engine, and
//! compared with what the clients did and with `tshark -z conv,tcp`.
//! Needs root (capturing on lo) and fails loudly without it.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use fathom_agent::flow::{FlowConfig, FlowEngine, VecSink};
use fathom_agent::packet::LinkType;
use fathom_agent::records::{CaptureSource, CloseType, L4Protocol};
use support::e2e::{tshark_conversations, tshark_frame_bytes, Bytes};

/// Kills the child it owns when dropped, so a failed assertion leaves no servers.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(cmd: &mut Command) -> Proc {
    Proc(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Start dumpcap on lo and wait until it captures.
fn capture(filter: &str, file: &Path) -> Proc {
    let log = file.with_extension("log");
    let child = Command::new("dumpcap")
        .args(["-q", "-i", "lo", "-P", "-f", filter, "-w"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("dumpcap");
    let p = Proc(child);
    let t = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("Capturing on") {
        assert!(t.elapsed() < Duration::from_secs(10), "dumpcap did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    p
}

fn stop(mut p: Proc) {
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
    let _ = p.0.wait();
}

/// Replay a pcap file through a fresh engine.
fn replay(file: &Path) -> (VecSink, FlowEngine) {
    let data = std::fs::read(file).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(&data[..]).unwrap();
    let link = LinkType::from_pcap(r.header().datalink.into()).expect("link type");
    let mut e = FlowEngine::new(FlowConfig {
        interface: Some("lo".into()),
        source: CaptureSource::Pcap,
        ..Default::default()
    });
    let mut sink = VecSink::default();
    let mut last = 0;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let ts = p.timestamp.as_micros() as u64;
        e.process_frame(link, &p.data, p.orig_len, ts, &mut sink).expect("decodes");
        if ts >= last + 1_000_000 {
            e.tick(ts, &mut sink);
            last = ts;
        }
    }
    e.flush(&mut sink);
    (sink, e)
}

/// Bytes as tshark's conversation table prints them: exact below 10 kB.
fn check_against_tshark(file: &Path, sink: &VecSink) {
    let convs = tshark_conversations(file);
    let frame_bytes = tshark_frame_bytes(file);
    let tcp: Vec<_> = sink.l4.iter().filter(|f| f.flow.protocol == L4Protocol::Tcp).collect();
    assert_eq!(tcp.len(), convs.len(), "one record per conversation: {convs:?}");
    for f in tcp {
        let c = SocketAddr::new(f.flow.client_ip, f.flow.client_port);
        let s = SocketAddr::new(f.flow.server_ip, f.flow.server_port);
        let (c2s, s2c) = match (convs.get(&(c, s)), convs.get(&(s, c))) {
            (Some(x), _) => (x[0], x[1]),
            (None, Some(x)) => (x[1], x[0]),
            _ => panic!("no tshark conversation for {c} -> {s}"),
        };
        for (ours, (frames, bytes), dir) in [(f.tx, c2s, (c, s)), (f.rx, s2c, (s, c))] {
            assert_eq!(ours.packets, frames, "frames {dir:?}");
            match bytes {
                Bytes::Exact(b) => assert_eq!(ours.bytes, b, "bytes {dir:?}"),
                Bytes::Kilo(k) => {
                    assert!(
                        ours.bytes.abs_diff(k * 1000) < 1000,
                        "kB {dir:?}: {} vs {k}",
                        ours.bytes
                    );
                    assert_eq!(ours.bytes, frame_bytes[&dir], "bytes {dir:?}");
                }
            }
        }
    }
}

fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test captures on lo and must run as root");
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fathom-flow-pcap-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn curl_to_python_http_server() {
    require_root();
    let dir = workdir("http");
    let port = free_port();
    let _srv = spawn(
        Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
            .current_dir(&dir),
    );
    std::fs::write(dir.join("hello.txt"), "hello from fathom\n").unwrap();
    wait_listening(port);
    let file = dir.join("http.pcap");
    let cap = capture(&format!("tcp port {port}"), &file);
    let base = format!("http://127.0.0.1:{port}");
    let mut want = Vec::new();
    for path in ["/hello.txt", "/missing", "/hello.txt?x=1", "/"] {
        let code = run(Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{base}{path}")));
        want.push((path.to_string(), code.parse::<i32>().unwrap()));
    }
    stop(cap);

    let (sink, e) = replay(&file);
    let got: Vec<_> = sink
        .l7
        .iter()
        .map(|l| (l.call.request_resource.clone(), l.call.response_code.unwrap_or(0)))
        .collect();
    assert_eq!(got, want, "{:#?}", sink.l7);
    for l in &sink.l7 {
        assert_eq!(l.call.l7_protocol, "HTTP");
        assert_eq!(l.call.request_type, "GET");
        assert_eq!(l.call.request_domain, format!("127.0.0.1:{port}"));
        assert_eq!(l.flow.server_port, port);
        assert!(l.latency_us > 0 && l.end_time_us > l.start_time_us);
        assert!(l.req_tcp_seq.is_some() && l.resp_tcp_seq.is_some());
        assert_eq!(l.interface.as_deref(), Some("lo"));
        assert_eq!(l.source, CaptureSource::Pcap);
    }
    assert_eq!(sink.l4.len(), 4);
    for f in &sink.l4 {
        assert_eq!(f.close_type, CloseType::Fin, "{f:?}");
        assert_eq!(f.flow.server_port, port);
        assert!(f.rtt_server_us.is_some() && f.rtt_client_us.is_some());
        assert_eq!(f.l7_protocol.as_deref(), Some("HTTP"));
    }
    check_against_tshark(&file, &sink);
    let s = e.stats();
    assert_eq!((s.decode_errors, s.reassembly_gaps, s.l7_parse_errors), (0, 0, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn redis_cli_to_redis_server() {
    require_root();
    let dir = workdir("redis");
    let port = free_port();
    let _srv = spawn(Command::new("redis-server").args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]));
    wait_listening(port);
    let file = dir.join("redis.pcap");
    let cap = capture(&format!("tcp port {port}"), &file);
    let script = "SET fathom:k v1\nGET fathom:k\nINCR fathom:n\nGET fathom:missing\nLPUSH fathom:k x\nDEL fathom:k fathom:n\n";
    let mut cli = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cli.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = cli.wait_with_output().unwrap();
    let replies = String::from_utf8_lossy(&out.stdout);
    assert!(replies.contains("WRONGTYPE"), "{replies}");
    stop(cap);

    let (sink, e) = replay(&file);
    let got: Vec<_> = sink
        .l7
        .iter()
        .map(|l| (l.call.request_type.as_str(), l.call.response_status.as_str()))
        .collect();
    // redis-cli first asks the server for its command docs.
    assert_eq!(
        got,
        [
            ("COMMAND", "ok"),
            ("SET", "ok"),
            ("GET", "ok"),
            ("INCR", "ok"),
            ("GET", "ok"),
            ("LPUSH", "client_error"),
            ("DEL", "ok")
        ],
        "{:#?}",
        sink.l7
    );
    assert!(sink.l7[5].call.response_exception.contains("WRONGTYPE"));
    assert_eq!(sink.l7[1].call.request_resource, "SET fathom:k v1");
    for l in &sink.l7 {
        assert_eq!(l.call.l7_protocol, "Redis");
        assert!(l.latency_us > 0);
        assert!(l.req_tcp_seq.is_some() && l.resp_tcp_seq.is_some());
    }
    // Sequence numbers increase call after call on one connection.
    let seqs: Vec<u32> = sink.l7.iter().map(|l| l.req_tcp_seq.unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1].wrapping_sub(w[0]) as i32 > 0), "{seqs:?}");
    assert_eq!(sink.l4.len(), 1);
    assert_eq!(sink.l4[0].l7_protocol.as_deref(), Some("Redis"));
    check_against_tshark(&file, &sink);
    assert_eq!(e.stats().decode_errors, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
