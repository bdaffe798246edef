//! Helpers for the integration tests: they load real programs into the
//! running kernel, so they need root and fail (not skip) without it.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fathom_ebpf::{Config, EbpfCapture, Event};

/// How long a test waits for something that should happen within moments.
/// Only a bound on waiting, never asserted as a timing.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads eBPF programs into the kernel and must run as root (euid is {euid})"
    );
}

pub fn load() -> EbpfCapture {
    load_with(Config::default())
}

pub fn load_with(config: Config) -> EbpfCapture {
    require_root();
    match EbpfCapture::load(config) {
        Ok(capture) => capture,
        Err(err) => panic!("loading the capture programs failed: {err}"),
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A spawned process, killed and reaped when dropped.
pub struct Proc {
    pub child: Child,
    name: String,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command) -> Proc {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} (is it installed?)"));
        Proc { child, name: name.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the process accepts TCP connections on 127.0.0.1:port.
    pub fn wait_for_port(&mut self, port: u16) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited before listening on {port}: {status}", self.name);
            }
            assert!(Instant::now() < deadline, "{} did not listen on port {port}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads events until `done` says the wanted ones are all in, or PATIENCE
/// runs out (then returns what it has, for the assertions to explain).
pub fn collect_until(
    capture: &mut EbpfCapture,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + PATIENCE;
    let mut events = Vec::new();
    while Instant::now() < deadline {
        let polled = capture.poll(Duration::from_millis(100)).expect("poll the ring buffer");
        events.extend(polled);
        if done(&events) {
            // Anything from the same moment is already in the ring buffer.
            events.extend(capture.poll(Duration::from_millis(0)).expect("poll the ring buffer"));
            return events;
        }
    }
    events
}

/// A scratch directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("fathom-ebpf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
