//! HTTPS: curl -k -> nginx with a self-signed certificate. The OpenSSL
//! uprobes see the plaintext at both ends, attributed to the connection.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{collect_until, free_port, load, Proc, TempDir};
use fathom_ebpf::{Direction, Event, Hook, SocketDataEvent};

fn tls<'a>(
    events: &'a [Event],
    pid: u32,
    hook: Hook,
    prefix: &[u8],
) -> Option<&'a SocketDataEvent> {
    events.iter().find_map(|e| match e {
        Event::Data(d) if d.pid == pid && d.hook == hook && d.payload.starts_with(prefix) => {
            Some(d)
        }
        _ => None,
    })
}

/// nginx serving `hello.txt` over TLS with a fresh self-signed certificate.
struct Nginx {
    proc: Proc,
    port: u16,
    body: Vec<u8>,
    _dir: TempDir,
}

impl Nginx {
    fn start(tag: &str) -> Nginx {
        let dir = TempDir::new(tag);
        let root = &dir.0;
        let gen = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(root.join("key.pem"))
            .arg("-out")
            .arg(root.join("cert.pem"))
            .output()
            .expect("run openssl");
        assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
        let body = b"secret over tls\n".repeat(8);
        std::fs::create_dir_all(root.join("html")).unwrap();
        std::fs::write(root.join("html/hello.txt"), &body).unwrap();

        let port = free_port();
        let conf = format!(
            "daemon off;\nmaster_process off;\nerror_log {root}/error.log;\npid {root}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  sendfile off;\n\
               client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;\n\
               fastcgi_temp_path {root}/fastcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port} ssl;\n\
                 ssl_certificate {root}/cert.pem;\n    ssl_certificate_key {root}/key.pem;\n\
                 root {root}/html;\n  }}\n}}\n",
            root = root.display()
        );
        std::fs::write(root.join("nginx.conf"), conf).unwrap();
        let mut proc = Proc::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-p")
                .arg(root)
                .arg("-c")
                .arg(root.join("nginx.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        proc.wait_for_port(port);
        Nginx { proc, port, body, _dir: dir }
    }
}

#[test]
fn curl_to_nginx_over_tls() {
    let mut capture = load();
    assert!(
        capture.ssl_libraries().iter().any(|l| l.error.is_none()),
        "no libssl probed: {:?}",
        capture.ssl_libraries()
    );
    let nginx = Nginx::start("https");
    let (port, nginx_pid, body) = (nginx.port, nginx.proc.pid(), nginx.body.clone());

    let url = format!("https://127.0.0.1:{port}/hello.txt");
    let curl = Command::new("curl")
        .args(["-sS", "-k", "--http1.1", "-A", "fathom-test", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start curl");
    let curl_pid = curl.id();
    let out = curl.wait_with_output().expect("wait for curl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, body);

    let request = format!(
        "GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: fathom-test\r\nAccept: */*\r\n\r\n"
    );
    let events = collect_until(&mut capture, |events| {
        tls(events, curl_pid, Hook::SslWrite, b"GET /hello.txt").is_some()
            && tls(events, nginx_pid, Hook::SslRead, b"GET /hello.txt").is_some()
            && tls(events, nginx_pid, Hook::SslWrite, b"HTTP/1.1 200 OK").is_some()
            && tls(events, curl_pid, Hook::SslRead, b"HTTP/1.1 200 OK").is_some()
    });

    let sent = tls(&events, curl_pid, Hook::SslWrite, b"GET /hello.txt").unwrap_or_else(|| {
        panic!("no SSL_write plaintext from curl; counters {:?}", capture.counters())
    });
    assert_eq!(String::from_utf8_lossy(&sent.payload), request);
    assert_eq!(sent.syscall_len, request.len() as u64);
    assert_eq!(sent.direction, Direction::Egress);
    assert!(sent.is_tls());
    assert!(sent.fd > 2, "curl's TLS socket fd {}", sent.fd);
    assert_eq!(sent.dst.port(), port);
    assert_eq!(sent.src.ip().to_string(), "127.0.0.1");

    let received = tls(&events, nginx_pid, Hook::SslRead, b"GET /hello.txt")
        .expect("no SSL_read plaintext in nginx");
    assert_eq!(received.payload, sent.payload);
    assert_eq!(received.direction, Direction::Ingress);
    assert_eq!((received.src, received.dst), (sent.src, sent.dst), "same connection");
    assert!(received.fd > 2);

    let answered = tls(&events, nginx_pid, Hook::SslWrite, b"HTTP/1.1 200 OK")
        .expect("no SSL_write plaintext in nginx");
    let got = tls(&events, curl_pid, Hook::SslRead, b"HTTP/1.1 200 OK")
        .expect("no SSL_read plaintext in curl");
    assert_eq!((answered.dst, answered.src), (sent.src, sent.dst));
    assert_eq!((got.src, got.dst), (answered.src, answered.dst));
    let whole: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) if d.pid == curl_pid && d.hook == Hook::SslRead => Some(d),
            _ => None,
        })
        .flat_map(|d| d.payload.iter().copied())
        .collect();
    assert!(
        whole.windows(body.len()).any(|w| w == body.as_slice()),
        "curl's plaintext reads do not contain the body"
    );
    // The plaintext request never appears as a syscall payload: it was encrypted.
    assert!(!events.iter().any(|e| matches!(e, Event::Data(d) if !d.is_tls()
        && d.pid == curl_pid && d.payload.starts_with(b"GET /hello.txt"))));
    let counters = capture.counters().unwrap();
    assert!(counters.hook(Hook::SslWrite).events >= 2, "{counters:?}");
    assert!(counters.hook(Hook::SslRead).events >= 2, "{counters:?}");
}

/// A libssl that appears after loading (a container's, a bundled copy) is
/// probed by `attach_new_ssl_libraries`, and its plaintext is then seen.
#[test]
fn libssl_loaded_later_is_probed_on_rescan() {
    let mut capture = load();
    let nginx = Nginx::start("https-rescan");
    let system = capture
        .ssl_libraries()
        .iter()
        .find(|l| l.error.is_none())
        .unwrap_or_else(|| panic!("no libssl probed: {:?}", capture.ssl_libraries()))
        .path
        .clone();
    // Named as the loader looks for it (libssl.so.3), not as a dev symlink.
    let system = std::fs::canonicalize(&system).expect("resolve the probed libssl");
    let libdir = TempDir::new("libssl-copy");
    let copy = libdir.0.join(system.file_name().expect("a file name"));
    std::fs::copy(&system, &copy).expect("copy libssl");

    let mut client = Proc::spawn(
        "openssl s_client",
        Command::new("openssl")
            .args(["s_client", "-quiet", "-connect"])
            .arg(format!("127.0.0.1:{}", nginx.port))
            .env("LD_LIBRARY_PATH", &libdir.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let client_pid = client.pid();
    let maps = format!("/proc/{client_pid}/maps");
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(copy.to_str().unwrap())) {
        assert!(std::time::Instant::now() < deadline, "s_client never mapped {}", copy.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let found = capture.attach_new_ssl_libraries();
    assert!(
        found.iter().any(|l| l.path == copy && l.error.is_none()),
        "the copy was not probed: {found:?}"
    );
    assert!(capture.attach_new_ssl_libraries().is_empty(), "a rescan probes nothing twice");

    let request = b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    client
        .child
        .stdin
        .as_mut()
        .expect("piped stdin")
        .write_all(request)
        .expect("write to s_client");
    let events = collect_until(&mut capture, |events| {
        tls(events, client_pid, Hook::SslWrite, b"GET /hello.txt").is_some()
            && tls(events, client_pid, Hook::SslRead, b"HTTP/1.1 200 OK").is_some()
    });
    let sent = tls(&events, client_pid, Hook::SslWrite, b"GET /hello.txt")
        .expect("no SSL_write plaintext from s_client through the copied libssl");
    assert_eq!(sent.payload, request);
    assert_eq!(sent.dst.port(), nginx.port);
    assert!(sent.fd > 2);
    let got = tls(&events, client_pid, Hook::SslRead, b"HTTP/1.1 200 OK")
        .expect("no SSL_read plaintext in s_client");
    assert_eq!((got.dst, got.src), (sent.src, sent.dst));
}
