//! Bad conditions: no permission, bad config, a full ring buffer.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::{load_with, require_root, TempDir};
use fathom_ebpf::{CaptureError, Config, Direction, EbpfCapture, Event};

#[test]
fn unprivileged_load_fails_with_a_clear_error() {
    require_root();
    // A copy nobody can execute, wherever the build directory is.
    let dir = TempDir::new("setpriv");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = dir.0.join("fathom-ebpf-probe");
    std::fs::copy(env!("CARGO_BIN_EXE_fathom-ebpf-probe"), &probe).expect("copy the probe");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&probe)
        .arg("1")
        .output()
        .expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("not permitted to load eBPF programs"), "{stderr}");
    assert!(stderr.contains("euid 65534"), "{stderr}");
    assert!(stderr.contains("CAP_BPF"), "{stderr}");
}

#[test]
fn invalid_config_is_rejected_before_loading() {
    let too_big = EbpfCapture::load(Config { capture_bytes: 4097, ..Config::default() });
    assert!(
        matches!(&too_big, Err(CaptureError::InvalidConfig(m)) if m.contains("4097")),
        "{:?}",
        too_big.err()
    );
    let odd_ring = EbpfCapture::load(Config { ring_buffer_bytes: 3 * 4096, ..Config::default() });
    assert!(
        matches!(&odd_ring, Err(CaptureError::InvalidConfig(m)) if m.contains("power of two")),
        "{:?}",
        odd_ring.err()
    );
}

#[test]
fn full_ring_buffer_counts_drops_and_keeps_working() {
    // One page of ring buffer, nobody reading: most events cannot fit.
    let mut capture = load_with(Config {
        ring_buffer_bytes: 4096,
        capture_bytes: 1024,
        trace_self: true,
        infer_protocols: false,
        ..Config::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let message = [b'x'; 1000];
    let mut sink = [0u8; 1000];
    for _ in 0..200 {
        client.write_all(&message).unwrap();
        server.read_exact(&mut sink).unwrap();
    }

    let counters = capture.counters().expect("read counters");
    assert!(counters.ring_buffer_drops > 0, "{counters:?}");
    let drained: Vec<Event> = capture.poll(Duration::from_millis(0)).unwrap().collect();
    assert!(!drained.is_empty(), "what fit in the ring buffer is still delivered");

    // With the ring drained, new events flow again. Other processes' events
    // share the one-page ring, so a marker may be crowded out: try a few.
    let me = std::process::id();
    let mut seen = false;
    for attempt in 0..50u32 {
        capture.poll(Duration::from_millis(0)).unwrap().for_each(drop);
        let marker = format!("after the drops {attempt:02}");
        client.write_all(marker.as_bytes()).unwrap();
        server.read_exact(&mut sink[..marker.len()]).unwrap();
        seen = capture.poll(Duration::from_millis(100)).unwrap().any(|e| {
            matches!(e, Event::Data(d) if d.pid == me
                && d.direction == Direction::Egress && d.payload == marker.as_bytes())
        });
        if seen {
            break;
        }
    }
    assert!(seen, "no event got through after draining the ring buffer");
    assert_eq!(capture.counters().unwrap().malformed, 0);
}

#[test]
fn bad_ssl_libraries_are_reported_not_fatal() {
    let missing = std::path::PathBuf::from("/nonexistent/fathom/libssl.so.3");
    // An ELF without SSL_write: this test binary.
    let not_openssl = std::env::current_exe().expect("the test binary's path");
    let mut capture = load_with(Config {
        ssl_libraries: vec![missing.clone(), not_openssl.clone()],
        ..Config::default()
    });
    let libraries = capture.ssl_libraries().to_vec();
    let find = |path: &std::path::Path| {
        libraries
            .iter()
            .find(|l| l.path == path)
            .unwrap_or_else(|| panic!("{} not reported: {libraries:?}", path.display()))
    };
    let gone = find(&missing);
    assert!(gone.functions.is_empty());
    assert!(gone.error.as_deref().is_some_and(|e| e.contains("cannot open")), "{gone:?}");
    let wrong = find(&not_openssl);
    assert!(wrong.functions.is_empty());
    assert!(wrong.error.as_deref().is_some_and(|e| e.contains("SSL_")), "{wrong:?}");
    // The system's OpenSSL is still probed, and nothing is reported twice.
    assert!(libraries.iter().any(|l| l.error.is_none()), "{libraries:?}");
    assert!(capture.attach_new_ssl_libraries().is_empty());
}
