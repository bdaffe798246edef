//! End to end, real traffic: the `fathom-agent` binary captures with
//! AF_PACKET on the client end of a veth pair (client namespace -> server
//! namespace) while real clients call real servers: HTTP/1.1, HTTP/2, Redis,
//! MySQL, DNS. Its NDJSON output must hold exactly the calls made, with the
//! right statuses and ordered times, RED rows counting them, and an L4 flow
//! record for every connection. Needs root (namespaces, AF_PACKET) and fails
//! loudly without it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::e2e::*;
use support::netns::NetnsPair;

/// One expected call: request type, resource, response code, status.
type Call = (&'static str, String, Option<i64>, &'static str);

struct Env {
    net: NetnsPair,
    dir: TempDir,
}

impl Env {
    fn new(name: &str) -> Env {
        let net = NetnsPair::new();
        let dir = TempDir::new(&format!("{name}-{}", net.client));
        Env { net, dir }
    }

    fn ip(&self) -> String {
        self.net.server_ip.to_string()
    }

    /// Starts a server in the server namespace and waits for its port.
    fn server(&mut self, args: &[&str], port: u16, udp: bool) {
        let ns = self.net.server.clone();
        let log = std::fs::File::create(self.dir.join(&format!("server-{port}.log"))).unwrap();
        self.net.spawn(&ns, args, Stdio::from(log));
        wait_listening(&self.net, &ns, port, udp);
    }

    fn agent(&self) -> Agent {
        let mut a = Agent::run(&self.net.client, &self.net.client_if, &self.dir.0, &[]);
        a.wait_ready();
        a
    }

    /// Runs a client in the client namespace; returns its stdout.
    fn client(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.net.exec_ok(&self.net.client, args).stdout).into_owned()
    }
}

/// Stops the agent after the traffic has been read and checks it exited cleanly.
fn finish(agent: Agent) -> Vec<Value> {
    agent.wait_quiet();
    let st = agent.stop();
    assert!(st.status.success(), "agent exit {}:\n{}", st.status, st.stderr);
    st.records
}

fn dump(records: &[&Value]) -> String {
    records.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n")
}

/// The common checks: exactly `want` as L7 records on `port` (in time
/// order), sane times, RED rows counting them, one L4 flow per connection.
fn check(records: &[Value], env: &Env, proto: &str, port: u16, want: &[Call], conns: usize) {
    let mut l7: Vec<&Value> = of_type(records, "l7_log")
        .into_iter()
        .filter(|r| r["flow"]["server_port"] == port)
        .collect();
    l7.sort_by_key(|r| u(&r["start_time_us"]));
    let got: Vec<Call> = l7
        .iter()
        .map(|r| {
            (
                // Leak: a few short strings per test, to compare with `want`.
                &*String::from(s(&r["request_type"])).leak(),
                s(&r["request_resource"]).to_string(),
                r["response_code"].as_i64(),
                &*String::from(s(&r["response_status"])).leak(),
            )
        })
        .collect();
    assert_eq!(got, want, "L7 records on port {port}:\n{}", dump(&l7));
    let server_ip = env.ip();
    for r in &l7 {
        assert_eq!(r["l7_protocol"], proto, "{r}");
        assert_eq!(r["msg_type"], "session", "{r}");
        assert_eq!(r["source"], "packet", "{r}");
        assert_eq!(r["interface"], env.net.client_if.as_str(), "{r}");
        assert_eq!(r["flow"]["server_ip"], server_ip.as_str(), "{r}");
        assert_eq!(r["flow"]["client_ip"], env.net.client_ip.to_string().as_str(), "{r}");
        let (start, end, lat) = (u(&r["start_time_us"]), u(&r["end_time_us"]), u(&r["latency_us"]));
        assert!(start > 0 && start <= end, "{r}");
        assert_eq!(lat, end - start, "{r}");
        if answered(r) {
            assert!(
                lat > 0 && r["resp_tcp_seq"].is_u64() == (r["flow"]["protocol"] == "tcp"),
                "{r}"
            );
        }
    }

    // RED: per endpoint, over all 1 s rows and again over all 1 min rows.
    let mut want_red: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    for r in &l7 {
        let e = want_red.entry(s(&r["endpoint"]).to_string()).or_default();
        e[0] += 1; // requests
        e[1] += u64::from(answered(r)); // responses
        e[2] += u64::from(r["response_status"] == "client_error");
        e[3] += u64::from(r["response_status"] == "server_error");
        e[4] += u64::from(answered(r)); // latency samples
    }
    for gran in ["1s", "1m"] {
        let mut got_red: BTreeMap<String, [u64; 5]> = BTreeMap::new();
        let mut max_latency = 0;
        for m in of_type(records, "red_metric") {
            if m["server_port"] != port || m["granularity"] != gran {
                continue;
            }
            assert_eq!(m["l7_protocol"], proto, "{m}");
            assert_eq!(m["server_ip"], server_ip.as_str(), "{m}");
            let e = got_red.entry(s(&m["endpoint"]).to_string()).or_default();
            for (i, k) in
                ["requests", "responses", "client_errors", "server_errors", "latency_count"]
                    .iter()
                    .enumerate()
            {
                e[i] += u(&m[k]);
            }
            assert_eq!(u(&m["timeouts"]), 0, "{m}");
            max_latency = max_latency.max(u(&m["latency_max_us"]));
        }
        assert_eq!(got_red, want_red, "{gran} RED rows on port {port}");
        let max_l7 = l7.iter().map(|r| u(&r["latency_us"])).max().unwrap();
        assert_eq!(max_latency, max_l7, "{gran} latency max");
    }

    // L4: one record per connection, covering the clients the calls came from.
    let l4: Vec<&Value> = of_type(records, "l4_flow")
        .into_iter()
        .filter(|r| r["flow"]["server_port"] == port)
        .collect();
    assert_eq!(l4.len(), conns, "L4 flows on port {port}:\n{}", dump(&l4));
    let l4_ports: BTreeSet<u64> = l4.iter().map(|r| u(&r["flow"]["client_port"])).collect();
    assert_eq!(l4_ports.len(), conns, "one record per connection");
    let l7_ports: BTreeSet<u64> = l7.iter().map(|r| u(&r["flow"]["client_port"])).collect();
    assert!(l7_ports.is_subset(&l4_ports), "{l7_ports:?} vs {l4_ports:?}");
    for f in &l4 {
        assert_eq!(f["l7_protocol"], proto, "{f}");
        assert_eq!(f["interface"], env.net.client_if.as_str(), "{f}");
        assert!(u(&f["tx"]["packets"]) > 0 && u(&f["rx"]["packets"]) > 0, "{f}");
        assert!(u(&f["start_time_us"]) <= u(&f["end_time_us"]), "{f}");
        if f["flow"]["protocol"] == "tcp" {
            assert_eq!(f["close_type"], "fin", "{f}");
            assert_eq!(u(&f["tx"]["syn"]), 1, "{f}");
            assert_eq!(u(&f["syn_ack"]), 1, "{f}");
            assert!(f["rtt_client_us"].is_u64() && f["rtt_server_us"].is_u64(), "{f}");
        }
    }
}

/// A call with a response (the others are requests the protocol leaves unanswered).
fn answered(r: &Value) -> bool {
    matches!(s(&r["response_status"]), "ok" | "client_error" | "server_error")
}

fn call(t: &'static str, res: &str, code: Option<i64>, status: &'static str) -> Call {
    (t, res.to_string(), code, status)
}

#[test]
fn http1_ok_not_found_and_server_error() {
    let mut env = Env::new("http1");
    let www = env.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello from fathom\n").unwrap();
    std::fs::write(
        env.dir.join("err500.py"),
        "import http.server, sys\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       self.send_response(500)\n\
         \x20       self.send_header('Content-Length', '4')\n\
         \x20       self.end_headers()\n\
         \x20       self.wfile.write(b'boom')\n\
         \x20   def log_message(self, *a):\n\
         \x20       pass\n\
         http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()\n",
    )
    .unwrap();
    let ip = env.ip();
    let www = www.to_str().unwrap().to_string();
    env.server(
        &["python3", "-m", "http.server", "8080", "--bind", &ip, "--directory", &www],
        8080,
        false,
    );
    let script = env.dir.join("err500.py");
    env.server(&["python3", script.to_str().unwrap(), &ip, "8081"], 8081, false);
    let agent = env.agent();
    let curl =
        |url: String| env.client(&["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(curl(format!("http://{ip}:8080/hello.txt")), "200");
    assert_eq!(curl(format!("http://{ip}:8080/missing")), "404");
    assert_eq!(curl(format!("http://{ip}:8081/boom")), "500");
    let records = finish(agent);
    check(
        &records,
        &env,
        "HTTP",
        8080,
        &[
            call("GET", "/hello.txt", Some(200), "ok"),
            call("GET", "/missing", Some(404), "client_error"),
        ],
        2,
    );
    check(&records, &env, "HTTP", 8081, &[call("GET", "/boom", Some(500), "server_error")], 1);
}

#[test]
fn http2_prior_knowledge() {
    let mut env = Env::new("h2");
    let www = env.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello over h2\n").unwrap();
    let ip = env.ip();
    let www = www.to_str().unwrap().to_string();
    env.server(&["nghttpd", "--no-tls", "-a", &ip, "-d", &www, "8443"], 8443, false);
    let agent = env.agent();
    let curl = |path: &str| {
        let url = format!("http://{ip}:8443{path}");
        let w = ["-w", "%{http_version} %{http_code}"];
        env.client(&["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", w[0], w[1], &url])
    };
    assert_eq!(curl("/hello.txt"), "2 200");
    assert_eq!(curl("/nope"), "2 404");
    let records = finish(agent);
    check(
        &records,
        &env,
        "HTTP2",
        8443,
        &[
            call("GET", "/hello.txt", Some(200), "ok"),
            call("GET", "/nope", Some(404), "client_error"),
        ],
        2,
    );
}

#[test]
fn redis_commands_and_error() {
    let mut env = Env::new("redis");
    let ip = env.ip();
    env.server(
        &[
            "redis-server",
            "--port",
            "6379",
            "--bind",
            &ip,
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        6379,
        false,
    );
    let agent = env.agent();
    let cli = |args: &[&str]| {
        let mut a = vec!["redis-cli", "-h", &ip, "-p", "6379"];
        a.extend_from_slice(args);
        env.client(&a)
    };
    assert_eq!(cli(&["SET", "fathom:k", "v1"]).trim(), "OK");
    assert_eq!(cli(&["GET", "fathom:k"]).trim(), "v1");
    assert!(cli(&["INCR", "fathom:k"]).contains("not an integer"));
    let records = finish(agent);
    check(
        &records,
        &env,
        "Redis",
        6379,
        &[
            call("SET", "SET fathom:k v1", None, "ok"),
            call("GET", "GET fathom:k", None, "ok"),
            call("INCR", "INCR fathom:k", None, "client_error"),
        ],
        3,
    );
    let err =
        of_type(&records, "l7_log").into_iter().find(|r| r["request_type"] == "INCR").unwrap();
    assert!(s(&err["response_exception"]).starts_with("ERR"), "{err}");
}

#[test]
fn mysql_select_and_error() {
    let mut env = Env::new("mysql");
    let data = env.dir.join("data");
    run_ok(
        Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--user=root",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display())),
    );
    let ip = env.ip();
    let args: Vec<String> = vec![
        "mariadbd".into(),
        "--no-defaults".into(),
        "--user=root".into(),
        "--skip-grant-tables".into(),
        "--skip-log-bin".into(),
        format!("--bind-address={ip}"),
        "--innodb-buffer-pool-size=16M".into(),
        "--skip-name-resolve".into(),
        "--port=3306".into(),
        format!("--datadir={}", data.display()),
        format!("--socket={}", env.dir.join("mysqld.sock").display()),
        format!("--pid-file={}", env.dir.join("mysqld.pid").display()),
    ];
    env.server(&args.iter().map(String::as_str).collect::<Vec<_>>(), 3306, false);
    let agent = env.agent();
    let sql = |q: &str| {
        let ns = env.net.client.clone();
        env.net.exec(
            &ns,
            &["mariadb", "-h", &ip, "-P", "3306", "-u", "root", "--skip-ssl", "-N", "-e", q],
        )
    };
    let ok = sql("SELECT 6*7");
    assert!(ok.status.success() && String::from_utf8_lossy(&ok.stdout).trim() == "42");
    let err = sql("SELECT * FROM mysql.no_such_table");
    assert!(String::from_utf8_lossy(&err.stderr).contains("1146"), "{err:?}");
    let records = finish(agent);
    check(
        &records,
        &env,
        "MySQL",
        3306,
        &[
            call("COM_QUERY", "SELECT 6*7", None, "ok"),
            // COM_QUIT has no response by protocol rule: a call, unanswered.
            call("COM_QUIT", "", None, "unknown"),
            call("COM_QUERY", "SELECT * FROM mysql.no_such_table", Some(1146), "client_error"),
            call("COM_QUIT", "", None, "unknown"),
        ],
        2,
    );
}

#[test]
fn dns_answer_and_nxdomain() {
    let mut env = Env::new("dns");
    let ip = env.ip();
    let pid = env.dir.join("dnsmasq.pid");
    env.server(
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=53",
            &format!("--listen-address={ip}"),
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/test/",
            "--address=/a.fathom.test/10.1.2.3",
            "--user=root",
            &format!("--pid-file={}", pid.display()),
        ],
        53,
        true,
    );
    let agent = env.agent();
    let dig = |name: &str| {
        env.client(&["dig", &format!("@{ip}"), "-p", "53", "+tries=1", "+time=10", name, "A"])
    };
    let a = dig("a.fathom.test");
    assert!(a.contains("10.1.2.3") && a.contains("NOERROR"), "{a}");
    let nx = dig("nothere.fathom.test");
    assert!(nx.contains("NXDOMAIN"), "{nx}");
    let records = finish(agent);
    check(
        &records,
        &env,
        "DNS",
        53,
        &[
            call("A", "a.fathom.test", Some(0), "ok"),
            call("A", "nothere.fathom.test", Some(3), "client_error"),
        ],
        2,
    );
    let l7 = of_type(&records, "l7_log");
    let ok = l7.iter().find(|r| r["request_resource"] == "a.fathom.test").unwrap();
    assert!(s(&ok["response_result"]).contains("10.1.2.3"), "{ok}");
    let nx = l7.iter().find(|r| r["request_resource"] == "nothere.fathom.test").unwrap();
    assert_eq!(nx["response_exception"], "NXDOMAIN", "{nx}");
}
