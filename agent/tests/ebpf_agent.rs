//! The real agent binary with the eBPF source on this kernel (AF_PACKET
//! off, eBPF required): real clients and servers on 127.0.0.1 give L7
//! records that name the process at each end. With AF_PACKET on lo as
//! well, each connection is one flow: eBPF's L7 records, the packets' L4
//! record with both processes, no packet L7 duplicates. Needs root; fails
//! without it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on waiting for something that should happen within moments; never
/// asserted as a timing.
const PATIENCE: Duration = Duration::from_secs(30);

/// One agent at a time: each loads the programs and sees every test's traffic.
static SERIAL: Mutex<()> = Mutex::new(());

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test loads eBPF programs and must run as root (euid {euid})");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(child: &mut Child, what: &str, port: u16) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("fathom-ebpf-agent-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A spawned process, killed and reaped when dropped.
struct Proc(Child);

impl Proc {
    fn spawn(what: &str, cmd: &mut Command) -> Proc {
        Proc(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e} (installed?)")))
    }

    fn pid(&self) -> u64 {
        u64::from(self.0.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Agent {
    child: Option<Child>,
    out: PathBuf,
    log: PathBuf,
    metrics_port: u16,
    _dir: TempDir,
}

impl Agent {
    /// eBPF only.
    fn start(tag: &str) -> Agent {
        Agent::start_with(
            tag,
            &[],
            &[
                ("FATHOM_AGENT_CAPTURE__AFPACKET", "false"),
                ("FATHOM_AGENT_CAPTURE__EBPF", "required"),
            ],
        )
    }

    fn start_with(tag: &str, args: &[&str], envs: &[(&str, &str)]) -> Agent {
        require_root();
        let dir = TempDir::new(tag);
        let out = dir.0.join("out.jsonl");
        let log = dir.0.join("agent.log");
        let metrics_port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fathom-agent"))
            .arg("run")
            .args(args)
            .envs(envs.iter().copied())
            .env("FATHOM_AGENT_OUTPUT__PATH", &out)
            .env("FATHOM_AGENT_HTTP__LISTEN", format!("127.0.0.1:{metrics_port}"))
            .env("FATHOM_AGENT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start fathom-agent");
        // /metrics is served once the programs are attached.
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", metrics_port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("agent exited ({status}): {}", std::fs::read_to_string(&log).unwrap());
            }
            assert!(Instant::now() < deadline, "agent never served /metrics");
            std::thread::sleep(Duration::from_millis(50));
        }
        Agent { child: Some(child), out, log, metrics_port, _dir: dir }
    }

    fn records(&self) -> Vec<Value> {
        read_records(&self.out)
    }

    /// Waits until `done` holds for the records written so far (the output
    /// is written out every second), or PATIENCE runs out.
    fn wait_for(&self, mut done: impl FnMut(&[Value]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if done(&self.records()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn metrics(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }

    /// SIGTERM, wait for the clean exit, return every record.
    fn stop(mut self) -> Vec<Value> {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "agent failed ({status}): {log}");
        self.records()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn l7_of<'a>(records: &'a [Value], pid: u64, source: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["type"] == "l7_log" && r["source"] == source && r["process"]["pid"] == pid)
        .collect()
}

fn summary(records: &[Value]) -> String {
    records
        .iter()
        .filter(|r| r["type"] == "l7_log")
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

fn run_ok(what: &str, cmd: &mut Command) -> (u64, Vec<u8>) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = u64::from(child.id());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    (pid, out.stdout)
}

/// python3 -m http.server serving `files` from a fresh directory.
fn http_server(tag: &str, files: &[(&str, &[u8])]) -> (Proc, u16, TempDir) {
    let dir = TempDir::new(tag);
    for (name, body) in files {
        std::fs::write(dir.0.join(name), body).unwrap();
    }
    let port = free_port();
    let mut p = Proc::spawn(
        "python3 -m http.server",
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(&mut p.0, "http.server", port);
    (p, port, dir)
}

#[test]
fn curl_to_python_http_server_names_both_processes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let agent = Agent::start("http");
    let (server, port, _dir) = http_server("http-root", &[("hello.txt", b"hello\n")]);
    let url = format!("http://127.0.0.1:{port}/hello.txt");
    let (curl_pid, body) = run_ok("curl", Command::new("curl").args(["-sS", &url]));
    assert_eq!(body, b"hello\n");
    let server_pid = server.pid();

    agent.wait_for(|r| {
        !l7_of(r, curl_pid, "syscall").is_empty() && !l7_of(r, server_pid, "syscall").is_empty()
    });
    // The kernel's per-hook counters reach /metrics within a second or so.
    let deadline = Instant::now() + PATIENCE;
    let mut text = agent.metrics();
    while metric(&text, "fathom_agent_ebpf_hook_events_total{hook=\"connect\"}") == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        text = agent.metrics();
    }
    assert!(metric(&text, "fathom_agent_ebpf_hook_events_total{hook=\"connect\"}") >= 1, "{text}");
    assert!(metric(&text, "fathom_agent_ebpf_events_total") >= 4, "{text}");
    assert!(metric(&text, "fathom_agent_l7_records_total") >= 2, "{text}");
    let records = agent.stop();
    let all = summary(&records);
    let client = l7_of(&records, curl_pid, "syscall");
    let srv = l7_of(&records, server_pid, "syscall");
    assert_eq!(client.len(), 1, "curl's records:\n{all}");
    assert_eq!(srv.len(), 1, "http.server's records:\n{all}");
    for (r, name) in [(client[0], "curl"), (srv[0], "python3")] {
        assert_eq!(r["process"]["name"], name, "{r}");
        assert_eq!(r["l7_protocol"], "HTTP", "{r}");
        assert_eq!(r["request_type"], "GET", "{r}");
        assert_eq!(r["request_resource"], "/hello.txt", "{r}");
        assert_eq!(r["response_code"], 200, "{r}");
        assert_eq!(r["flow"]["server_port"], port, "{r}");
        assert_eq!(r["flow"]["client_ip"], "127.0.0.1", "{r}");
        assert!(r["latency_us"].as_u64().unwrap() > 0, "{r}");
        assert!(r["req_tcp_seq"].is_u64() && r["resp_tcp_seq"].is_u64(), "{r}");
        assert!(r["interface"].is_null(), "{r}");
    }
    // Both ends saw the same connection and the same bytes.
    assert_eq!(client[0]["flow"], srv[0]["flow"]);
    assert_eq!(client[0]["req_tcp_seq"], srv[0]["req_tcp_seq"]);
    assert_eq!(client[0]["resp_tcp_seq"], srv[0]["resp_tcp_seq"]);
    // curl started after the agent: its exec gave a process record.
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "process" && r["pid"] == curl_pid && r["name"] == "curl"),
        "no process record for curl ({curl_pid})"
    );
    // RED metrics include the eBPF records.
    assert!(
        records.iter().any(|r| r["type"] == "red_metric"
            && r["server_port"] == port
            && r["process_name"] == "python3"),
        "no RED metric of python3 on port {port}"
    );
}

#[test]
fn redis_cli_to_redis_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let agent = Agent::start("redis");
    let port = free_port();
    let mut server = Proc::spawn(
        "redis-server",
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(&mut server.0, "redis-server", port);
    let p = port.to_string();
    let (set_pid, out) = run_ok(
        "redis-cli",
        Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &p, "SET", "fathom:k", "v"]),
    );
    assert_eq!(String::from_utf8_lossy(&out).trim(), "OK");
    let (get_pid, out) = run_ok(
        "redis-cli",
        Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &p, "GET", "fathom:k"]),
    );
    assert_eq!(String::from_utf8_lossy(&out).trim(), "v");
    let server_pid = server.pid();
    let has = |r: &[Value], pid, cmd: &str| {
        l7_of(r, pid, "syscall").iter().any(|x| x["request_type"] == cmd)
    };
    agent.wait_for(|r| {
        has(r, set_pid, "SET")
            && has(r, get_pid, "GET")
            && has(r, server_pid, "SET")
            && has(r, server_pid, "GET")
    });
    let records = agent.stop();
    let all = summary(&records);
    for (pid, cmd, name) in [
        (set_pid, "SET", "redis-cli"),
        (get_pid, "GET", "redis-cli"),
        (server_pid, "SET", "redis-server"),
        (server_pid, "GET", "redis-server"),
    ] {
        let r = l7_of(&records, pid, "syscall")
            .into_iter()
            .find(|x| x["request_type"] == cmd)
            .unwrap_or_else(|| panic!("no {cmd} record of {name} ({pid}):\n{all}"));
        assert_eq!(r["process"]["name"], name, "{r}");
        assert_eq!(r["l7_protocol"], "Redis", "{r}");
        assert_eq!(r["flow"]["server_port"], port, "{r}");
        assert_eq!(r["response_status"], "ok", "{r}");
        assert!(r["latency_us"].as_u64().unwrap() > 0, "{r}");
    }
}

#[test]
fn curl_to_nginx_over_tls_gives_plaintext_records() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let agent = Agent::start("https");
    let dir = TempDir::new("nginx");
    let root = dir.0.display().to_string();
    let gen = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.0.join("key.pem"))
        .arg("-out")
        .arg(dir.0.join("cert.pem"))
        .output()
        .expect("run openssl");
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    std::fs::create_dir_all(dir.0.join("html")).unwrap();
    std::fs::write(dir.0.join("html/hello.txt"), b"secret over tls\n").unwrap();
    let port = free_port();
    let conf = format!(
        "daemon off;\nmaster_process off;\nerror_log {root}/error.log;\npid {root}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  sendfile off;\n\
           client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;\n\
           fastcgi_temp_path {root}/fastcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {root}/cert.pem;\n    ssl_certificate_key {root}/key.pem;\n\
             root {root}/html;\n  }}\n}}\n"
    );
    std::fs::write(dir.0.join("nginx.conf"), conf).unwrap();
    let mut nginx = Proc::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(dir.0.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(&mut nginx.0, "nginx", port);
    let url = format!("https://127.0.0.1:{port}/hello.txt");
    let (curl_pid, body) =
        run_ok("curl", Command::new("curl").args(["-sS", "-k", "--http1.1", &url]));
    assert_eq!(body, b"secret over tls\n");
    let nginx_pid = nginx.pid();

    agent.wait_for(|r| {
        !l7_of(r, curl_pid, "tls").is_empty() && !l7_of(r, nginx_pid, "tls").is_empty()
    });
    let records = agent.stop();
    let all = summary(&records);
    for (pid, name) in [(curl_pid, "curl"), (nginx_pid, "nginx")] {
        let recs = l7_of(&records, pid, "tls");
        assert_eq!(recs.len(), 1, "TLS records of {name}:\n{all}");
        let r = recs[0];
        assert_eq!(r["process"]["name"], name, "{r}");
        assert_eq!(r["l7_protocol"], "HTTP", "{r}");
        assert_eq!(r["request_resource"], "/hello.txt", "{r}");
        assert_eq!(r["response_code"], 200, "{r}");
        assert_eq!(r["flow"]["server_port"], port, "{r}");
        assert!(r["latency_us"].as_u64().unwrap() > 0, "{r}");
        // The ciphertext under it made no records of its own.
        assert!(l7_of(&records, pid, "syscall").is_empty(), "ciphertext records of {name}:\n{all}");
    }
    // The ciphertext itself never reaches the agent: the kernel's protocol
    // inference drops TLS records (ebpf/tests/inference.rs).
}

const PROXY: &str = r#"
import socket, sys, threading
port, upstream = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(16)

def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(4096)
        if not d:
            return
        data += d
    # The upstream call, on the thread serving the request.
    u = socket.create_connection(("127.0.0.1", upstream))
    u.sendall(b"GET /upstream.txt HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
    while u.recv(65536):
        pass
    u.close()
    body = b"proxied\n"
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    c.close()

while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[test]
fn a_proxy_threads_server_and_client_records_share_the_trace_id() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let agent = Agent::start("trace");
    let (_upstream, up_port, _dir) = http_server("trace-up", &[("upstream.txt", b"up\n")]);
    let port = free_port();
    let mut proxy = Proc::spawn(
        "python3 proxy",
        Command::new("python3")
            .args(["-c", PROXY, &port.to_string(), &up_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(&mut proxy.0, "proxy", port);
    let proxy_pid = proxy.pid();
    let mut pairs = Vec::new();
    for i in 0..3 {
        let url = format!("http://127.0.0.1:{port}/call{i}");
        let (_, body) = run_ok("curl", Command::new("curl").args(["-sS", &url]));
        assert_eq!(body, b"proxied\n");
        pairs.push(format!("/call{i}"));
    }
    let side = |r: &[Value], server_port: u16| -> Vec<Value> {
        l7_of(r, proxy_pid, "syscall")
            .into_iter()
            .filter(|x| x["flow"]["server_port"] == server_port)
            .cloned()
            .collect()
    };
    agent.wait_for(|r| side(r, port).len() >= 3 && side(r, up_port).len() >= 3);
    let records = agent.stop();
    let all = summary(&records);
    let inbound = side(&records, port);
    let outbound = side(&records, up_port);
    assert_eq!(inbound.len(), 3, "proxy's server-side records:\n{all}");
    assert_eq!(outbound.len(), 3, "proxy's client-side records:\n{all}");
    let mut ids = Vec::new();
    for path in &pairs {
        let inb = inbound
            .iter()
            .find(|r| r["request_resource"] == path.as_str())
            .unwrap_or_else(|| panic!("no inbound {path}:\n{all}"));
        let id = inb["syscall_trace_id_request"].as_u64().unwrap_or_else(|| panic!("{inb}"));
        let tid = &inb["process"]["tid"];
        // The upstream call made by the same thread while serving it.
        let out = outbound
            .iter()
            .find(|r| &r["process"]["tid"] == tid)
            .unwrap_or_else(|| panic!("no upstream call on thread {tid}:\n{all}"));
        assert_eq!(out["request_resource"], "/upstream.txt", "{out}");
        assert_eq!(out["syscall_trace_id_request"].as_u64(), Some(id), "{inb}\n{out}");
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each request has its own trace id");
}

/// Calls of one curl (one connection each: http.server closes after every
/// response) with AF_PACKET on lo and eBPF both on, or eBPF off.
fn curl_calls(port: u16, n: usize) -> u64 {
    let urls: Vec<String> = (0..n).map(|i| format!("http://127.0.0.1:{port}/f{i}.txt")).collect();
    let (pid, body) = run_ok("curl", Command::new("curl").arg("-sS").args(&urls));
    assert_eq!(body.len(), n * 3, "{}", String::from_utf8_lossy(&body));
    pid
}

fn on_port<'a>(records: &'a [Value], ty: &str, port: u16) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == ty && r["flow"]["server_port"] == port).collect()
}

/// Requests in the 1-minute RED rows of `port`, per observation point.
fn red_requests(records: &[Value], port: u16) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| {
        r["type"] == "red_metric" && r["granularity"] == "1m" && r["server_port"] == port
    }) {
        let point = r["observation_point"].as_str().unwrap().to_string();
        *out.entry(point).or_insert(0) += r["requests"].as_u64().unwrap();
    }
    out
}

const CALLS: usize = 5;

fn files() -> Vec<(String, Vec<u8>)> {
    (0..CALLS).map(|i| (format!("f{i}.txt"), format!("{i:>2}\n").into_bytes())).collect()
}

#[test]
fn packets_and_ebpf_on_lo_make_one_flow_per_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let agent = Agent::start_with(
        "merge",
        &["-i", "lo"],
        &[("FATHOM_AGENT_CAPTURE__EBPF", "required"), ("FATHOM_AGENT_FLOW__SHARDS", "2")],
    );
    let files = files();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let (server, port, _dir) = http_server("merge-root", &refs);
    let curl_pid = curl_calls(port, CALLS);
    let server_pid = server.pid();
    agent.wait_for(|r| {
        l7_of(r, curl_pid, "syscall").len() >= CALLS
            && l7_of(r, server_pid, "syscall").len() >= CALLS
    });
    // Held packet records are decided within the merge window (1 s); the
    // L4 records go out once the closed connections stop lingering (2 s).
    let deadline = Instant::now() + PATIENCE;
    let mut text = agent.metrics();
    while (metric(&text, "fathom_agent_merge_l7_suppressed_total") < CALLS as u64
        || metric(&text, "fathom_agent_merge_l4_with_process_total") < CALLS as u64)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        text = agent.metrics();
    }
    drop(server);
    let records = agent.stop();
    let all = summary(&records);
    // eBPF's records: one per call at each end, naming the process.
    let client = l7_of(&records, curl_pid, "syscall");
    let srv = l7_of(&records, server_pid, "syscall");
    assert_eq!(client.len(), CALLS, "curl's records:\n{all}");
    assert_eq!(srv.len(), CALLS, "http.server's records:\n{all}");
    for r in &client {
        assert_eq!(r["observation_point"], "client_process", "{r}");
        assert_eq!(r["process"]["name"], "curl", "{r}");
    }
    for r in &srv {
        assert_eq!(r["observation_point"], "server_process", "{r}");
        assert_eq!(r["process"]["name"], "python3", "{r}");
    }
    // No packet L7 record duplicates them.
    let l7 = on_port(&records, "l7_log", port);
    assert_eq!(l7.len(), 2 * CALLS, "L7 records of port {port}:\n{all}");
    assert!(l7.iter().all(|r| r["source"] == "syscall"), "{all}");
    // RED counts each call once per observation point.
    let red = red_requests(&records, port);
    let want: std::collections::BTreeMap<String, u64> = [
        ("client_process".to_string(), CALLS as u64),
        ("server_process".to_string(), CALLS as u64),
    ]
    .into();
    assert_eq!(red, want);
    // The packets' L4 record of each connection carries both processes.
    // (The test's own port probes are L4 flows without L7.)
    let l4: Vec<_> = on_port(&records, "l4_flow", port)
        .into_iter()
        .filter(|r| r["l7_protocol"] == "HTTP")
        .collect();
    assert_eq!(l4.len(), CALLS, "{l4:?}");
    let mut client_ports: Vec<u64> =
        l4.iter().map(|r| r["flow"]["client_port"].as_u64().unwrap()).collect();
    client_ports.sort_unstable();
    client_ports.dedup();
    assert_eq!(client_ports.len(), CALLS, "{l4:?}");
    for r in &l4 {
        assert_eq!(r["source"], "packet", "{r}");
        assert_eq!(r["interface"], "lo", "{r}");
        assert_eq!(r["l7_protocol"], "HTTP", "{r}");
        assert_eq!(r["client_process"]["pid"], curl_pid, "{r}");
        assert_eq!(r["client_process"]["name"], "curl", "{r}");
        assert_eq!(r["server_process"]["pid"], server_pid, "{r}");
        assert_eq!(r["server_process"]["name"], "python3", "{r}");
        assert_eq!(r["close_type"], "fin", "{r}");
    }
    // Every packet record of these calls was suppressed; others on lo
    // (the machine's own traffic) may add to the counter.
    assert!(metric(&text, "fathom_agent_merge_l7_suppressed_total") >= CALLS as u64, "{text}");
    assert!(metric(&text, "fathom_agent_merge_l4_with_process_total") >= CALLS as u64, "{text}");
}

#[test]
fn packets_on_lo_without_ebpf_keep_their_l7_records() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let agent =
        Agent::start_with("nomerge", &["-i", "lo"], &[("FATHOM_AGENT_CAPTURE__EBPF", "off")]);
    let files = files();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let (server, port, _dir) = http_server("nomerge-root", &refs);
    curl_calls(port, CALLS);
    agent.wait_for(|r| on_port(r, "l7_log", port).len() >= CALLS);
    drop(server);
    let text = agent.metrics();
    let records = agent.stop();
    let all = summary(&records);
    let l7 = on_port(&records, "l7_log", port);
    assert_eq!(l7.len(), CALLS, "L7 records of port {port}:\n{all}");
    for r in &l7 {
        assert_eq!(r["source"], "packet", "{r}");
        assert_eq!(r["observation_point"], "network", "{r}");
        assert!(r["process"].is_null(), "{r}");
        assert_eq!(r["response_code"], 200, "{r}");
    }
    let red = red_requests(&records, port);
    let want: std::collections::BTreeMap<String, u64> =
        [("network".to_string(), CALLS as u64)].into();
    assert_eq!(red, want);
    // (The test's own port probes are L4 flows without L7.)
    let l4: Vec<_> = on_port(&records, "l4_flow", port)
        .into_iter()
        .filter(|r| r["l7_protocol"] == "HTTP")
        .collect();
    assert_eq!(l4.len(), CALLS, "{l4:?}");
    assert!(l4.iter().all(|r| r["client_process"].is_null() && r["server_process"].is_null()));
    assert_eq!(metric(&text, "fathom_agent_merge_l7_suppressed_total"), 0, "{text}");
}
