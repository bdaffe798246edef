//! Running the real `fathom-agent` binary in end-to-end tests: live in a
//! network namespace or replaying a file, its /metrics scraped, its NDJSON
//! output read back, and a clean SIGTERM stop with the exit status and the
//! peak RSS. Everything started is killed on drop, also when a test panics.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::netns::{in_netns, NetnsPair};

pub const AGENT: &str = env!("CARGO_BIN_EXE_fathom-agent");

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("fathom-e2e-{name}-{}", std::process::id()));
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
        }
    }
}

/// A free TCP port on the host's loopback (for /metrics of replays; a
/// namespace has its own loopback, but unique ports keep logs unambiguous).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` every 50 ms until it returns Some, panicking after `limit`.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something listens on `port` in `ns` (`udp`: a UDP socket).
pub fn wait_listening(net: &NetnsPair, ns: &str, port: u16, udp: bool) {
    let flags = if udp { "-Hlun" } else { "-Hltn" };
    let filter = format!("sport = :{port}");
    poll(&format!("a listener on port {port} in {ns}"), Duration::from_secs(60), || {
        let out = net.exec(ns, &["ss", flags, &filter]);
        (!out.stdout.is_empty()).then_some(())
    });
}

/// How the agent finished.
pub struct Stopped {
    pub status: ExitStatus,
    /// Peak RSS in KiB (the larger of VmHWM before the stop and ru_maxrss).
    pub peak_rss_kib: u64,
    pub records: Vec<Value>,
    pub stderr: String,
}

/// A running `fathom-agent`.
pub struct Agent {
    child: Option<Child>,
    pub pid: u32,
    pub output: PathBuf,
    stderr: PathBuf,
    ns: Option<String>,
    metrics: SocketAddr,
}

impl Agent {
    /// `fathom-agent run -i <iface>` inside `ns`; returns once its /metrics answers
    /// (the capture rings are open by then).
    pub fn run(ns: &str, iface: &str, dir: &Path, env: &[(&str, &str)]) -> Agent {
        let port = free_port();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, AGENT, "run", "-i", iface]);
        Self::start(cmd, Some(ns.to_string()), port, dir, env)
    }

    /// `fathom-agent replay <file>`, in the test's own namespace.
    pub fn replay(file: &Path, dir: &Path, env: &[(&str, &str)]) -> Agent {
        let port = free_port();
        let mut cmd = Command::new(AGENT);
        cmd.arg("replay").arg(file);
        Self::start(cmd, None, port, dir, env)
    }

    fn start(
        mut cmd: Command,
        ns: Option<String>,
        port: u16,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Agent {
        let output = dir.join(format!("agent-{port}.ndjson"));
        let stderr = dir.join(format!("agent-{port}.log"));
        let listen = format!("127.0.0.1:{port}");
        cmd.arg("--output-path")
            .arg(&output)
            .env("FATHOM_AGENT_HTTP__LISTEN", &listen)
            .env("FATHOM_AGENT_LOG", "info")
            // These tests check what packets show; the eBPF source (which
            // sees every namespace's sockets) has its own tests.
            .env("FATHOM_AGENT_CAPTURE__EBPF", "off")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        // `ip netns exec` execs in place: the pid is the agent's.
        let pid = child.id();
        Agent { child: Some(child), pid, output, stderr, ns, metrics: listen.parse().unwrap() }
    }

    /// Waits until /metrics answers (the agent is capturing), failing with
    /// the agent's log if it exits first.
    pub fn wait_ready(&mut self) {
        let t = Instant::now();
        loop {
            if self.scrape().is_some() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("fathom-agent exited early ({st}):\n{}", self.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "fathom-agent /metrics never answered:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's stderr, colour escapes removed.
    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut it = raw.chars();
        while let Some(c) = it.next() {
            if c == '\x1b' {
                // CSI: ESC [ parameters final-byte.
                it.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The agent's own metrics (`name -> value`), None if it does not answer.
    pub fn scrape(&self) -> Option<HashMap<String, u64>> {
        let addr = self.metrics;
        let get = move || -> Option<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            Some(text)
        };
        let text = match &self.ns {
            Some(ns) => in_netns(ns, get).join().unwrap()?,
            None => get()?,
        };
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        Some(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_string(), v.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    /// Scrapes one metric, panicking if the agent does not answer.
    pub fn metric(&self, name: &str) -> u64 {
        let m = self.scrape().unwrap_or_else(|| panic!("/metrics did not answer:\n{}", self.log()));
        *m.get(name).unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// Waits until the packet counter has not moved for a second: what
    /// crossed the interface has been read from the ring.
    pub fn wait_quiet(&self) {
        let mut last = (u64::MAX, Instant::now());
        poll("the agent's packet counter to settle", Duration::from_secs(60), || {
            let n = self.metric("fathom_agent_packets_total");
            if n != last.0 {
                last = (n, Instant::now());
                None
            } else {
                (last.1.elapsed() >= Duration::from_secs(1)).then_some(())
            }
        });
    }

    /// The records written so far (a line still being written is skipped).
    pub fn records(&self) -> Vec<Value> {
        read_records(&self.output, false)
    }

    /// Polls the output until `pred` holds for some record.
    pub fn wait_record(&self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        poll(what, limit, || self.records().into_iter().find(|r| pred(r)))
    }

    /// Whether the process has ended (a zombie not yet reaped, or gone).
    pub fn exited(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // The state follows the parenthesised command name.
            Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z')),
            Err(_) => true,
        }
    }

    /// Peak RSS so far, KiB, from /proc/<pid>/status.
    pub fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// Waits for a process that ends by itself (replay).
    pub fn wait_exit(mut self, limit: Duration) -> Stopped {
        self.reap(limit, 0)
    }

    /// SIGTERM, then wait for the final flush and exit.
    pub fn stop(mut self) -> Stopped {
        let hwm = self.vm_hwm_kib();
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        self.reap(Duration::from_secs(60), hwm)
    }

    fn reap(&mut self, limit: Duration, hwm: u64) -> Stopped {
        let t = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is valid; wait4 fills it.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: our child; WNOHANG returns at once.
            let r = unsafe { libc::wait4(self.pid as i32, &mut status, libc::WNOHANG, &mut ru) };
            assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
            if r == self.pid as i32 {
                // Reaped here: the Child must not signal the (reusable) pid again.
                drop(self.child.take());
                use std::os::unix::process::ExitStatusExt;
                return Stopped {
                    status: ExitStatus::from_raw(status),
                    peak_rss_kib: hwm.max(ru.ru_maxrss as u64),
                    records: read_records(&self.output, true),
                    stderr: self.log(),
                };
            }
            assert!(t.elapsed() < limit, "fathom-agent did not exit in {limit:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// NDJSON records of `path`; with `strict`, every line must parse.
pub fn read_records(path: &Path, strict: bool) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => out.push(v),
            Err(e) if strict => panic!("bad output line {line:?}: {e}"),
            Err(_) => {}
        }
    }
    out
}

/// Records of one type.
pub fn of_type<'a>(records: &'a [Value], ty: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == ty).collect()
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Frames and bytes one way of a conversation, as tshark prints them.
#[derive(Clone, Copy, Debug)]
pub enum Bytes {
    Exact(u64),
    /// "N kB": tshark rounds large values.
    Kilo(u64),
}

/// tshark's TCP conversation table: (A, B) -> [(frames, bytes) A->B, B->A].
pub fn tshark_conversations(file: &Path) -> HashMap<(SocketAddr, SocketAddr), [(u64, Bytes); 2]> {
    let out = run_ok(Command::new("tshark").arg("-r").arg(file).args(["-q", "-z", "conv,tcp"]));
    let mut convs = HashMap::new();
    for line in out.lines().filter(|l| l.contains("<->")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[1], "<->", "{line}");
        let n = |i: usize| f[i].replace(',', "").parse::<u64>().unwrap();
        let bytes = |i: usize| match f[i + 1] {
            "bytes" => Bytes::Exact(n(i)),
            "kB" => Bytes::Kilo(n(i)),
            u => panic!("unit {u} in {line}"),
        };
        let a: SocketAddr = f[0].parse().unwrap();
        let b: SocketAddr = f[2].parse().unwrap();
        // "<-" (columns 3, 4) is B to A, "->" (6, 7) is A to B.
        convs.insert((a, b), [(n(6), bytes(7)), (n(3), bytes(4))]);
    }
    convs
}

/// Exact frame bytes per (src, dst) from tshark's per-frame fields, for
/// conversations the table prints in kB.
pub fn tshark_frame_bytes(file: &Path) -> HashMap<(SocketAddr, SocketAddr), u64> {
    let out = run_ok(Command::new("tshark").arg("-r").arg(file).args([
        "-Y",
        "tcp",
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "tcp.srcport",
        "-e",
        "ip.dst",
        "-e",
        "tcp.dstport",
        "-e",
        "frame.len",
    ]));
    let mut m = HashMap::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        let src = SocketAddr::new(f[0].parse().unwrap(), f[1].parse().unwrap());
        let dst = SocketAddr::new(f[2].parse().unwrap(), f[3].parse().unwrap());
        *m.entry((src, dst)).or_default() += f[4].parse::<u64>().unwrap();
    }
    m
}

/// tcp.analysis.initial_rtt per (client, server) in microseconds.
pub fn tshark_initial_rtt(file: &Path) -> HashMap<(SocketAddr, SocketAddr), u64> {
    let out = run_ok(Command::new("tshark").arg("-r").arg(file).args([
        "-Y",
        "tcp.analysis.initial_rtt && tcp.flags.syn == 0",
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "tcp.srcport",
        "-e",
        "ip.dst",
        "-e",
        "tcp.dstport",
        "-e",
        "tcp.analysis.initial_rtt",
    ]));
    let mut m = HashMap::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() < 5 || f[4].is_empty() {
            continue;
        }
        let a = SocketAddr::new(f[0].parse().unwrap(), f[1].parse().unwrap());
        let b = SocketAddr::new(f[2].parse().unwrap(), f[3].parse().unwrap());
        let rtt_s: f64 = f[4].parse().unwrap();
        // Keyed both ways; the first packet that carries it wins.
        let us = (rtt_s * 1e6).round() as u64;
        m.entry((a, b)).or_insert(us);
        m.entry((b, a)).or_insert(us);
    }
    m
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
