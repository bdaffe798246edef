//! Real processes for the server's end-to-end tests: `fathom-server`,
//! `fathom-agent` capturing loopback, `fathomctl`, and the applications
//! whose traffic is observed (python3 http.server, redis-server).
//! Everything started is killed on drop, also when a test panics; scratch
//! directories are removed on drop (kept with FATHOM_E2E_KEEP=1).

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SERVER: &str = env!("CARGO_BIN_EXE_fathom-server");

/// The tests each run a server with the embedded ClickHouse engine plus an
/// agent; on a 2-core CI box they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// These tests capture packets and fail (not skip) without root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "the server end-to-end tests need root (the agent opens AF_PACKET rings)");
}

/// A binary of another workspace package, next to this test's executable
/// (`target/<profile>/deps/e2e-*` -> `target/<profile>/<name>`).
pub fn sibling_bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p {package}` (CI's `cargo build \
         --workspace --all-targets` does), with the same CARGO_TARGET_DIR and profile",
        bin.display()
    );
    bin
}

pub fn agent_bin() -> PathBuf {
    sibling_bin("fathom-agent", "fathom-agent")
}

/// Runs a fathomctl command line with its config under `dir` and the admin
/// bundle in `admin_dir`, nothing from the caller's environment choosing
/// the server.
pub fn ctl_output(cmd: &mut Command, dir: &Path, admin_dir: &Path) -> std::process::Output {
    cmd.env("FATHOMCTL_CONFIG", dir.join("fathomctl.toml"))
        .env("FATHOMCTL_ADMIN_DIR", admin_dir)
        .env_remove("FATHOMCTL_CONTEXT")
        .env_remove("FATHOMCTL_SERVER")
        .stdin(Stdio::null())
        .output()
        .expect("run fathomctl")
}

pub fn fathomctl_bin() -> PathBuf {
    sibling_bin("fathomctl", "fathomctl")
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d =
            std::env::temp_dir().join(format!("fathom-server-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("FATHOM_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("kept {}", self.0.display());
        }
    }
}

/// A free TCP port on loopback (never one of fathom's defaults).
pub fn free_port() -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if ![20033, 20416, 20040, 20041, 20042, 38086].contains(&p) {
            return p;
        }
    }
}

/// Polls `f` every 100 ms until it returns Some, panicking after `limit`
/// with `what` and the last note `f` left.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let t = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}; last: {last}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_tcp(port: u16, what: &str) {
    poll(what, Duration::from_secs(60), || {
        TcpStream::connect(("127.0.0.1", port)).map(drop).map_err(|e| e.to_string())
    });
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    // A panic's message, which a backtrace would push out of the tail.
    match lines.iter().position(|l| l.contains("panicked at")) {
        Some(i) => format!("{}\n...\n{tail}", lines[i..lines.len().min(i + 2)].join("\n")),
        None => tail,
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling our own, not yet reaped, child.
    unsafe { libc::kill(pid as i32, sig) };
}

fn wait_exit(child: &mut Child, limit: Duration, log: &Path, name: &str) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not exit in {limit:?}:\n{}", log_tail(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `fathom-server run` with the embedded store under `dir`.
pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    pub ingest_port: u16,
    pub query_port: u16,
    /// Raft (TCP), gossip (UDP) and control (gRPC, fathomctl) of the one-node cluster.
    pub raft_port: u16,
    /// The region group's Raft port.
    pub region_raft_port: u16,
    pub gossip_port: u16,
    pub control_port: u16,
    pub log: PathBuf,
    env: Vec<(String, String)>,
}

impl Server {
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut s = Server {
            child: None,
            dir: dir.to_path_buf(),
            ingest_port: free_port(),
            query_port: free_port(),
            raft_port: free_port(),
            region_raft_port: free_port(),
            gossip_port: free_port(),
            control_port: free_port(),
            log: dir.join("server.log"),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        s.spawn();
        s
    }

    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.query_port)
    }

    /// The admin endpoint for `fathomctl --server` (TLS).
    pub fn control_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.control_port)
    }

    /// The admin bundle the server writes at start (ca.pem, admin.pem, admin.key):
    /// `FATHOMCTL_ADMIN_DIR` for fathomctl.
    pub fn admin_dir(&self) -> PathBuf {
        self.dir.join("server/admin")
    }

    /// The cluster CA directory (ca.pem, ca.key) of this node.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("server/ca")
    }

    /// Copies this node's CA directory to the node that will run in `dir`: what an
    /// operator does before another controller node first starts.
    pub fn copy_ca_to(&self, dir: &Path) {
        let to = dir.join("server/ca");
        std::fs::create_dir_all(&to).unwrap();
        for f in ["ca.pem", "ca.key"] {
            std::fs::copy(self.ca_dir().join(f), to.join(f)).unwrap();
        }
    }

    fn env_is(&self, key: &str, value: &str) -> bool {
        self.env.iter().any(|(k, v)| k == key && v == value)
    }

    /// Whether the ingest port requires agent certificates (the default).
    pub fn ingest_tls(&self) -> bool {
        !self.env_is("FATHOM_SERVER_CONTROLLER__INGEST_TLS", "false")
    }

    /// fathomctl with this server's admin bundle, `--server` this node.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(fathomctl_bin());
        cmd.arg("--server").arg(self.control_url()).args(args);
        ctl_output(&mut cmd, &self.dir, &self.admin_dir())
    }

    /// A one-time enrollment token for pool `pool` (region e2e, AZ e2e-1; made here
    /// when missing).
    pub fn enroll_token(&self, pool: &str) -> String {
        let ok = |args: &[&str]| {
            let out = self.ctl(args);
            assert!(
                out.status.success(),
                "fathomctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ok(&["region", "create", "e2e"]);
        ok(&["az", "create", "e2e-1", "--region", "e2e"]);
        ok(&["pool", "create", pool, "--region", "e2e", "--az", "e2e-1", "--kind", "vm"]);
        let v: Value =
            serde_json::from_str(&ok(&["token", "create", "--pool", pool, "-o", "json"]))
                .expect("token JSON");
        v["secret"].as_str().expect("a secret").to_string()
    }

    pub fn ingest_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ingest_port)
    }

    /// Starts (again) on the same data directories and ports; returns once
    /// /v1/health answers 200.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(SERVER);
        cmd.arg("run")
            .env("RUST_BACKTRACE", "0")
            .env("FATHOM_SERVER_STORE__DATA_DIR", self.dir.join("store"))
            .env("FATHOM_SERVER_INGEST__DATA_DIR", self.dir.join("server"))
            .env("FATHOM_SERVER_INGEST__LISTEN", self.ingest_addr())
            .env("FATHOM_SERVER_QUERY__LISTEN", format!("127.0.0.1:{}", self.query_port))
            .env("FATHOM_SERVER_CLUSTER__RAFT_LISTEN", format!("127.0.0.1:{}", self.raft_port))
            .env(
                "FATHOM_SERVER_CLUSTER__REGION_RAFT_LISTEN",
                format!("127.0.0.1:{}", self.region_raft_port),
            )
            .env("FATHOM_SERVER_CLUSTER__GOSSIP_LISTEN", format!("127.0.0.1:{}", self.gossip_port))
            .env("FATHOM_SERVER_CONTROLLER__LISTEN", format!("127.0.0.1:{}", self.control_port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn fathom-server");
        let url = format!("{}/v1/health", self.query_url());
        let res = (|| {
            let t = Instant::now();
            loop {
                if let Some(st) = child.try_wait().unwrap() {
                    return Err(format!("fathom-server exited with {st}"));
                }
                if let Ok(r) = ureq::get(&url).call() {
                    if r.status() == 200 {
                        return Ok(());
                    }
                }
                if t.elapsed() > Duration::from_secs(120) {
                    return Err("no healthy answer in 120 s".to_string());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })();
        // The control port opens once Raft has a leader and the admin bundle is written:
        // waited for here for a one-node cluster; a node of a bigger one opens it once
        // its peers are up too (or, joining later, after `node add`).
        let joins = self
            .env
            .iter()
            .any(|(k, v)| k == "FATHOM_SERVER_CLUSTER__BOOTSTRAP_EXPECT" && v != "1");
        let res = res.and_then(|()| {
            if joins {
                return Ok(());
            }
            let t = Instant::now();
            loop {
                if let Some(st) = child.try_wait().unwrap() {
                    return Err(format!("fathom-server exited with {st}"));
                }
                // Ingest starts last, with the controller's TLS settings.
                if TcpStream::connect(("127.0.0.1", self.control_port)).is_ok()
                    && TcpStream::connect(("127.0.0.1", self.ingest_port)).is_ok()
                    && self.admin_dir().join("admin.key").exists()
                {
                    return Ok(());
                }
                if t.elapsed() > Duration::from_secs(120) {
                    return Err("the control and ingest ports did not open in 120 s".to_string());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        if let Err(e) = res {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e}:\n{}", log_tail(&self.log));
        }
        eprintln!("fathom-server healthy after {:?}", started.elapsed());
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGTERM);
        wait_exit(&mut child, Duration::from_secs(90), &self.log, "fathom-server")
    }

    /// SIGKILL: the process dies where it stands.
    pub fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGKILL);
        wait_exit(&mut child, Duration::from_secs(30), &self.log, "fathom-server")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// POST /v1/query; (status, JSON body or {"raw": text}).
    pub fn post_query(&self, body: &[u8], content_type: &str) -> (u16, Value) {
        let url = format!("{}/v1/query", self.query_url());
        let mut r = ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .header("content-type", content_type)
            .send(body)
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "raw": text }));
        (status, v)
    }

    pub fn sql(&self, db: &str, sql: &str) -> (u16, Value) {
        let body = serde_json::json!({ "db": db, "sql": sql }).to_string();
        self.post_query(body.as_bytes(), "application/json")
    }

    pub fn health(&self) -> (u16, Value) {
        let url = format!("{}/v1/health", self.query_url());
        let mut r = ureq::get(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap_or(Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- fathom-server log ---\n{}", log_tail(&self.log));
        }
    }
}

/// `fathomctl --query-url <url> -o json query --db <db> <sql>`: the answer, or
/// fathomctl's error text.
pub fn fathomctl(server: &Server, db: &str, sql: &str) -> Result<Value, String> {
    let out = Command::new(fathomctl_bin())
        .args(["--query-url", &server.query_url(), "-o", "json", "query", "--db", db, sql])
        // No contexts file of the machine's user.
        .env("FATHOMCTL_CONFIG", server.dir.join("fathomctl.toml"))
        .stdin(Stdio::null())
        .output()
        .expect("run fathomctl");
    if !out.status.success() {
        return Err(format!(
            "fathomctl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!("fathomctl printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// Rows of a query answer as objects keyed by column name.
pub fn rows(v: &Value) -> Vec<serde_json::Map<String, Value>> {
    let cols: Vec<String> = v["columns"]
        .as_array()
        .map(|c| c.iter().map(|c| c.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    v["rows"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    cols.iter().cloned().zip(r.as_array().cloned().unwrap_or_default()).collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON cell as an integer (ClickHouse sends 64-bit integers as strings).
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or_else(|| n.as_f64().unwrap_or(-1.0) as i64),
        Value::String(s) => s.parse().unwrap_or(-1),
        _ => -1,
    }
}

pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `SELECT Count(*), Uniq(request_resource)` of the HTTP calls to `port`.
pub fn count_calls(server: &Server, port: u16) -> Result<(i64, i64), String> {
    let v = fathomctl(
        server,
        "flow_log",
        &format!(
            "SELECT Count(*) AS n, Uniq(request_resource) AS u FROM l7_flow_log \
             WHERE server_port = {port}"
        ),
    )?;
    let r = rows(&v);
    let r = r.first().ok_or("no row")?;
    Ok((int(&r["n"]), int(&r["u"])))
}

/// A running `fathom-agent run -i lo` (eBPF off unless `env` turns it on:
/// packets only, for determinism) sending to `server`; the ingest and control
/// ports are excluded. When the server requires agent certificates (the
/// default) the agent enrolls first with a fresh token, like a real one, and
/// pushes over mTLS.
pub struct Agent {
    child: Option<Child>,
    pub spool: PathBuf,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl Agent {
    pub fn start(dir: &Path, server: &Server, agent_id: &str, env: &[(&str, &str)]) -> Agent {
        let spool = dir.join("agent-spool");
        let log = dir.join("agent.log");
        let metrics_port = free_port();
        let file = File::create(&log).unwrap();
        let mut cmd = Command::new(agent_bin());
        if server.ingest_tls() {
            let certs = dir.join("agent-certs");
            let given = env.iter().any(|(k, _)| *k == "FATHOM_AGENT_SENDER__ENROLL_TOKEN");
            if !given && !certs.join("enrollment.json").exists() {
                cmd.env("FATHOM_AGENT_SENDER__ENROLL_TOKEN", server.enroll_token("e2e"));
            }
            cmd.env(
                "FATHOM_AGENT_SENDER__CONTROL_ADDR",
                format!("127.0.0.1:{}", server.control_port),
            )
            .env("FATHOM_AGENT_SENDER__CA_FILE", server.admin_dir().join("ca.pem"))
            .env("FATHOM_AGENT_SENDER__CERT_DIR", certs);
        }
        cmd.args(["run", "-i", "lo"])
            .env("RUST_BACKTRACE", "0")
            .env("FATHOM_AGENT_OUTPUT__FORMAT", "server")
            .env("FATHOM_AGENT_SENDER__SERVER", server.ingest_addr())
            .env("FATHOM_AGENT_SENDER__SPOOL_DIR", &spool)
            .env("FATHOM_AGENT_SENDER__AGENT_ID", agent_id)
            .env("FATHOM_AGENT_SENDER__MAX_BACKOFF_MS", "500")
            .env(
                "FATHOM_AGENT_CAPTURE__EXCLUDE_PORTS",
                format!("[{}, {}]", server.ingest_port, server.control_port),
            )
            .env("FATHOM_AGENT_CAPTURE__EBPF", "off")
            .env("FATHOM_AGENT_CAPTURE__AFPACKET", "true")
            .env("FATHOM_AGENT_HTTP__LISTEN", format!("127.0.0.1:{metrics_port}"));
        // The caller's settings win over the defaults above (e.g. eBPF on).
        let child = cmd
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn fathom-agent");
        let mut a = Agent { child: Some(child), spool, log, metrics_port };
        // /metrics answers once the capture rings are open.
        let t = Instant::now();
        loop {
            if let Some(st) = a.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("fathom-agent exited with {st}:\n{}", log_tail(&a.log));
            }
            if http_get(metrics_port, "/metrics").is_some() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "fathom-agent /metrics did not answer in 60 s:\n{}",
                log_tail(&a.log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The rings are open; give the capture threads a moment to poll them.
        std::thread::sleep(Duration::from_millis(500));
        a
    }

    /// Batches waiting in the spool.
    pub fn spooled(&self) -> usize {
        std::fs::read_dir(&self.spool)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".batch"))
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- fathom-agent log ---\n{}", log_tail(&self.log));
        }
    }
}

/// A plain HTTP/1.0 GET on loopback; the body when the answer is 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// One HTTP/1.1 request with `Connection: close` (a new TCP connection
/// each); the status code.
pub fn http_status(port: u16, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&out[..out.len().min(64)]).to_string();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))
}

/// A child process killed on drop (the observed applications).
pub struct App(pub Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` serving `root` on a fresh port.
pub fn http_server(root: &Path) -> (App, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let app = App(child);
    wait_tcp(port, "python3 http.server");
    (app, port)
}

/// `redis-server` on a fresh port, no persistence.
pub fn redis_server(dir: &Path) -> (App, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let app = App(child);
    wait_tcp(port, "redis-server");
    (app, port)
}
