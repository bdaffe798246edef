//! HTTP/1.x: python http.server (HTTP/1.0, one request per connection) and
//! nginx (keep-alive, gzip => chunked responses, 404, 405, `return 500`,
//! pipelining); clients curl and a raw-socket pipelining peer. Reference: tshark.

use std::collections::BTreeMap;
use std::process::Command;

use fathom_protocols::L7Protocol;

use crate::compare::{assert_all, compare, number_by_conn, Msg};
use crate::flows::decode_pcap;
use crate::harness::*;

const PY_PORT: u16 = 21080;
const NGINX_PORT: u16 = 21081;

pub fn http_status(code: &str) -> &'static str {
    match code.as_bytes().first() {
        Some(b'1' | b'2' | b'3') => "ok",
        Some(b'4') => "client_error",
        Some(b'5') => "server_error",
        _ => "unknown",
    }
}

fn nginx_conf(dir: &TempDir) -> String {
    let d = dir.path.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log {d}/nginx-access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{NGINX_PORT};
        server_name fathom.test;
        root {d}/www;
        chunked_transfer_encoding on;
        location /gz/ {{
            gzip on;
            gzip_min_length 1;
            gzip_types text/plain;
        }}
        location = /boom {{ return 500; }}
        location = /teapot {{ return 418 "short and stout\n"; }}
    }}
}}
"#
    )
}

#[test]
fn http1() {
    require(&["dumpcap", "tshark", "nginx", "curl", "python3"]);
    let dir = TempDir::new("http1");
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("gz")).unwrap();
    std::fs::write(www.join("index.html"), "<html>fathom</html>\n").unwrap();
    std::fs::write(www.join("a.txt"), "a".repeat(3000)).unwrap();
    std::fs::write(www.join("gz/big.txt"), "fathom chunked gzip body\n".repeat(2000)).unwrap();
    std::fs::write(dir.join("nginx.conf"), nginx_conf(&dir)).unwrap();

    let mut py = Proc::spawn_on(
        "http.server",
        Command::new("python3")
            .args(["-m", "http.server", &PY_PORT.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(&www),
        &dir,
        &[PY_PORT],
    );
    let mut ngx = Proc::spawn_on(
        "nginx",
        Command::new("nginx").arg("-c").arg(dir.join("nginx.conf")).arg("-p").arg(&dir.path),
        &dir,
        &[NGINX_PORT],
    );
    wait_port(PY_PORT, &mut py);
    wait_port(NGINX_PORT, &mut ngx);
    let cap = Capture::start(&dir, &format!("tcp port {PY_PORT} or tcp port {NGINX_PORT}"));

    let py_base = format!("http://127.0.0.1:{PY_PORT}");
    let ngx_base = format!("http://127.0.0.1:{NGINX_PORT}");
    // python http.server: HTTP/1.0, a connection per request.
    run(
        "curl python",
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null"])
            .args([
                format!("{py_base}/"),
                format!("{py_base}/a.txt?x=1&y=two"),
                format!("{py_base}/nope.html"),
            ]),
    );
    // nginx: keep-alive, one connection for all URLs; gzip => chunked.
    let urls =
        ["/", "/a.txt", "/gz/big.txt", "/missing/page?q=1", "/boom", "/teapot", "/gz/big.txt"];
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "--compressed",
        "-H",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ]);
    for u in urls {
        c.args(["-o", "/dev/null", &format!("{ngx_base}{u}")]);
    }
    run("curl nginx", &mut c);
    // A POST with a body on its own connection (405 from the static handler).
    run(
        "curl post",
        Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-d",
            "name=fathom&v=1",
            &format!("{ngx_base}/index.html"),
        ]),
    );
    // A large request body (body skipping across segments), 405 as well.
    std::fs::write(dir.join("upload.bin"), vec![b'u'; 200_000]).unwrap();
    run(
        "curl put",
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-X", "PUT", "-H", "Expect:", "--data-binary"])
            .arg(format!("@{}", dir.join("upload.bin").display()))
            .arg(format!("{ngx_base}/upload")),
    );
    // Pipelining: three requests in one write.
    run(
        "pipeline",
        Command::new("python3").arg(peer("pipeline.py")).args([
            &NGINX_PORT.to_string(),
            "/a.txt",
            "/nope",
            "/index.html",
        ]),
    );
    let pcap = cap.stop();
    ngx.check_alive();
    let expected = 3 + urls.len() + 1 + 1 + 3;

    let d = decode_pcap(&pcap, &[PY_PORT, NGINX_PORT]);
    crate::dump_ours("http1", &d);
    crate::flows::check_tcp_bytes(&pcap, &d);
    // Bodies are not reassembled: nginx may answer the PUT (405) before its
    // body is complete and close; tshark would then never show the request.
    let decode_as = vec![
        format!("tcp.port=={PY_PORT},http"),
        format!("tcp.port=={NGINX_PORT},http"),
        "-o http.desegment_body:FALSE".to_string(),
    ];
    let reqs = tshark_fields(
        &pcap,
        &decode_as,
        "http.request",
        &["tcp.srcport", "http.request.method", "http.request.uri", "http.host"],
    );
    let resps =
        tshark_fields(&pcap, &decode_as, "http.response", &["tcp.dstport", "http.response.code"]);
    let mut reference: Vec<Msg> = Vec::new();
    for r in &reqs {
        let conn = num(&r[0]) as u16;
        let (m, u, h) = (occ(&r[1]), occ(&r[2]), occ(&r[3]));
        for (i, method) in m.iter().enumerate() {
            reference.push(
                Msg::new(conn, 0)
                    .f("method", method)
                    .f("path", u.get(i).copied().unwrap_or(""))
                    .f("host", h.get(i).copied().unwrap_or("")),
            );
        }
    }
    number_by_conn(&mut reference);
    let mut codes: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for r in &resps {
        for c in occ(&r[1]) {
            codes.entry(num(&r[0]) as u16).or_default().push(c.to_string());
        }
    }
    for m in reference.iter_mut() {
        if let Some(c) = codes.get(&m.conn).and_then(|v| v.get(m.key as usize)) {
            m.fields.push(("code", c.clone()));
            m.fields.push(("status", http_status(c).to_string()));
        }
    }
    crate::dump_ref("http1", &reference);
    let chunked = tshark_fields(
        &pcap,
        &decode_as,
        "http.transfer_encoding == \"chunked\"",
        &["frame.number"],
    );
    assert!(!chunked.is_empty(), "the scenario should include chunked responses (nginx gzip)");
    assert_eq!(
        reference.len(),
        expected,
        "tshark saw {} HTTP requests, clients sent {expected}",
        reference.len()
    );

    let mut ours: Vec<Msg> = crate::ours_of(&d, &[L7Protocol::Http1])
        .iter()
        .map(|o| {
            let r = &o.rec;
            Msg::new(o.client_port, 0)
                .f("method", &r.request_type)
                .f("path", &r.request_resource)
                .f("host", &r.request_domain)
                .f("code", r.response_code.map(|c| c.to_string()).unwrap_or_default())
                .f("status", r.response_status.as_str())
        })
        .collect();
    number_by_conn(&mut ours);
    let a = compare("http1", &reference, &ours);
    assert_all(&[a]);
}
