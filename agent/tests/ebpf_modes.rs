//! `capture.ebpf`: "auto" warns and runs on without the programs, "required"
//! refuses to start, "off" never loads them. Runs the real binary; needs
//! root (for the AF_PACKET fallback and to drop privileges with setpriv).

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (euid {euid})");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent as user nobody, from a copy nobody may execute.
fn run_unprivileged(tag: &str, envs: &[(&str, &str)]) -> Output {
    require_root();
    let dir = TempDir(
        std::env::temp_dir().join(format!("fathom-ebpf-modes-{tag}-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.0.join("fathom-agent");
    std::fs::copy(env!("CARGO_BIN_EXE_fathom-agent"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&bin)
        .arg("run")
        .env("FATHOM_AGENT_HTTP__LISTEN", format!("127.0.0.1:{}", free_port()))
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)")
}

#[test]
fn required_refuses_to_start_without_the_programs() {
    let out = run_unprivileged(
        "required",
        &[("FATHOM_AGENT_CAPTURE__AFPACKET", "false"), ("FATHOM_AGENT_CAPTURE__EBPF", "required")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("eBPF capture (required)"), "{err}");
    assert!(err.contains("not permitted to load eBPF programs"), "{err}");
}

#[test]
fn auto_warns_with_the_reason() {
    // Without AF_PACKET either, nothing is left to capture: that is the error.
    let out = run_unprivileged(
        "auto",
        &[("FATHOM_AGENT_CAPTURE__AFPACKET", "false"), ("FATHOM_AGENT_CAPTURE__EBPF", "auto")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("eBPF capture not loaded"), "{err}");
    assert!(err.contains("not permitted to load eBPF programs"), "{err}");
    assert!(err.contains("nothing to capture"), "{err}");
}

#[test]
fn off_never_loads_them() {
    let out = run_unprivileged(
        "off",
        &[("FATHOM_AGENT_CAPTURE__AFPACKET", "false"), ("FATHOM_AGENT_CAPTURE__EBPF", "false")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("eBPF capture not loaded"), "{err}");
    assert!(err.contains("nothing to capture"), "{err}");
}

/// A failed load in "auto" leaves the agent running on packets.
#[test]
fn auto_runs_on_packets_when_the_load_fails() {
    require_root();
    let port = free_port();
    let log = std::env::temp_dir().join(format!("fathom-ebpf-modes-{}.log", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_fathom-agent"))
        .args(["run", "-i", "lo"])
        .env("FATHOM_AGENT_CAPTURE__EBPF", "auto")
        // Beyond what the programs can copy: the load fails, deterministically.
        .env("FATHOM_AGENT_CAPTURE__EBPF_CAPTURE_BYTES", "5000")
        .env("FATHOM_AGENT_OUTPUT__PATH", "/dev/null")
        .env("FATHOM_AGENT_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("agent exited ({status}): {}", std::fs::read_to_string(&log).unwrap());
        }
        assert!(Instant::now() < deadline, "agent never served /metrics");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(status.success(), "{text}");
    assert!(text.contains("eBPF capture not loaded") && text.contains("5000"), "{text}");
}
