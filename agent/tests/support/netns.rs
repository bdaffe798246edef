//! Two network namespaces joined by a veth pair, removed on drop (also when
//! a test panics), and threads that run inside a namespace.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

/// Fails the test loudly when not root: these tests exercise the kernel.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (CAP_NET_RAW for AF_PACKET, CAP_SYS_ADMIN for network \
         namespaces); run the capture tests as root"
    );
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `client` and `server` namespaces; `client_if` (10.213.1.1/30) in client is
/// the peer of `server_if` (10.213.1.2/30) in server.
pub struct NetnsPair {
    pub client: String,
    pub server: String,
    pub client_if: String,
    pub server_if: String,
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    children: Vec<Child>,
}

impl NetnsPair {
    pub fn new() -> NetnsPair {
        require_root();
        let pid = std::process::id();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pair = NetnsPair {
            client: format!("fathom-cap-{pid}-{seq}-a"),
            server: format!("fathom-cap-{pid}-{seq}-b"),
            // IFNAMSIZ: at most 15 characters.
            client_if: format!("fc{pid}x{seq}a"),
            server_if: format!("fc{pid}x{seq}b"),
            client_ip: Ipv4Addr::new(10, 213, 1, 1),
            server_ip: Ipv4Addr::new(10, 213, 1, 2),
            children: Vec::new(),
        };
        run("ip", &["netns", "add", &pair.client]);
        run("ip", &["netns", "add", &pair.server]);
        run(
            "ip",
            &[
                "link",
                "add",
                &pair.client_if,
                "netns",
                &pair.client,
                "type",
                "veth",
                "peer",
                "name",
                &pair.server_if,
                "netns",
                &pair.server,
            ],
        );
        for (ns, dev, ip) in [
            (&pair.client, &pair.client_if, pair.client_ip),
            (&pair.server, &pair.server_if, pair.server_ip),
        ] {
            run("ip", &["-n", ns, "addr", "add", &format!("{ip}/30"), "dev", dev]);
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Runs a command in `ns` and returns its output (not checked).
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {ns} {args:?}: {e}"))
    }

    /// Runs a command in `ns`, panicking with its stderr on failure.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> Output {
        let out = self.exec(ns, args);
        assert!(
            out.status.success(),
            "ip netns exec {ns} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts a long-running command in `ns`; it is killed when the pair is
    /// dropped. `ip netns exec` execs in place, so the pid is the command's.
    pub fn spawn(&mut self, ns: &str, args: &[&str], stderr: Stdio) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {ns}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    pub fn child_mut(&mut self, pid: u32) -> &mut Child {
        self.children.iter_mut().find(|c| c.id() == pid).expect("spawned child")
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a new thread that has joined network namespace `ns`; sockets
/// it opens stay in that namespace.
pub fn in_netns<T, F>(ns: &str, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a namespace fd only changes this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}
