//! End to end with the real processes, as scripts/run.sh starts them: a
//! `fathom-server` with the embedded store, a `fathom-agent` capturing
//! loopback (AF_PACKET on `lo`, eBPF off for determinism) and sending to
//! it, real clients and servers (curl, python3 http.server, redis-cli,
//! redis-server), and `fathomctl query` reading the result back.
//!
//! Root is required (AF_PACKET); these tests fail, not skip, without it.
//! They need libchdb.so (scripts/fetch-chdb.sh) and the fathom-agent and
//! fathomctl binaries of the same build (`cargo build --workspace`).
//! Every process gets its own data directories and fresh ports; the
//! tests run one at a time (a 2-core CI box) and only poll, never assert
//! on wall-clock time.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// How long a record may take from the wire to a query answer on a loaded
/// CI box (the agent cuts batches after 1 s; the spool replays with
/// backoff after a server restart).
const ARRIVAL: Duration = Duration::from_secs(30);
/// Longer bound after a restart: the agent's backoff and the replay.
const AFTER_RESTART: Duration = Duration::from_secs(90);

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The README's run command, step by step: curl and redis-cli traffic is
/// queryable with fathomctl, with the right fields and exact counts.
#[test]
fn run_command_shows_curl_and_redis_cli_traffic() {
    require_root();
    let _serial = serial();
    let dir = TempDir::new("run");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<h1>fathom</h1>\n").unwrap();
    let (_http, http_port) = http_server(&www);
    let redis_dir = dir.join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let (_redis, redis_port) = redis_server(&redis_dir);

    let server = Server::start(&dir.join("server-data"), &[]);
    let agent = Agent::start(&dir.0, &server, "e2e-run", &[]);

    // HTTP: 3 x 200, 2 x 404.
    let base = format!("http://127.0.0.1:{http_port}");
    for _ in 0..3 {
        let code =
            run("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/")]);
        assert_eq!(code, "200");
    }
    for _ in 0..2 {
        let code = run(
            "curl",
            &["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/missing.txt")],
        );
        assert_eq!(code, "404");
    }
    // Redis: SET, 2 x GET, and an error (WRONGTYPE: LPUSH on a string).
    let p = redis_port.to_string();
    assert_eq!(run("redis-cli", &["-p", &p, "SET", "fathom:k", "v1"]), "OK");
    for _ in 0..2 {
        assert_eq!(run("redis-cli", &["-p", &p, "GET", "fathom:k"]), "v1");
    }
    let err = run("redis-cli", &["-p", &p, "LPUSH", "fathom:k", "x"]);
    assert!(err.contains("WRONGTYPE"), "redis-cli LPUSH answered {err:?}");
    let sent = Instant::now();

    let http_sql = format!(
        "SELECT l7_protocol, request_type, request_resource, response_code, response_status, \
         Count(*) AS calls FROM l7_flow_log WHERE server_port = {http_port} \
         GROUP BY l7_protocol, request_type, request_resource, response_code, response_status \
         ORDER BY request_resource"
    );
    let redis_sql = format!(
        "SELECT l7_protocol, request_type, request_resource, response_status, response_exception, \
         Count(*) AS calls FROM l7_flow_log WHERE server_port = {redis_port} \
         GROUP BY l7_protocol, request_type, request_resource, response_status, response_exception \
         ORDER BY request_type"
    );
    let total = |v: &serde_json::Value| rows(v).iter().map(|r| int(&r["calls"])).sum::<i64>();
    let (http, redis) = poll("the curl and redis-cli calls in fathomctl's answer", ARRIVAL, || {
        let h = fathomctl(&server, "flow_log", &http_sql)?;
        let r = fathomctl(&server, "flow_log", &redis_sql)?;
        if total(&h) >= 5 && total(&r) >= 4 {
            Ok((h, r))
        } else {
            Err(format!("http {h}\nredis {r}"))
        }
    });
    eprintln!("curl and redis-cli calls queryable {:?} after the last one", sent.elapsed());
    // Let any late (duplicate) batch land before checking exact counts.
    std::thread::sleep(Duration::from_secs(3));
    let http = fathomctl(&server, "flow_log", &http_sql).unwrap_or(http);
    let redis = fathomctl(&server, "flow_log", &redis_sql).unwrap_or(redis);
    eprintln!("http: {http}\nredis: {redis}");

    let got: Vec<(String, String, String, i64, String, i64)> = rows(&http)
        .iter()
        .map(|r| {
            (
                text(&r["l7_protocol"]),
                text(&r["request_type"]),
                text(&r["request_resource"]),
                int(&r["response_code"]),
                text(&r["response_status"]),
                int(&r["calls"]),
            )
        })
        .collect();
    let want: Vec<(String, String, String, i64, String, i64)> = vec![
        ("HTTP".into(), "GET".into(), "/".into(), 200, "ok".into(), 3),
        ("HTTP".into(), "GET".into(), "/missing.txt".into(), 404, "client_error".into(), 2),
    ];
    let norm = |v: &[(String, String, String, i64, String, i64)]| {
        v.iter()
            .map(|(p, t, r, c, s, n)| {
                (p.to_ascii_uppercase(), t.clone(), r.clone(), *c, s.clone(), *n)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(norm(&got), norm(&want), "HTTP calls to port {http_port}");

    let mut by_cmd: BTreeMap<String, (i64, Vec<String>)> = BTreeMap::new();
    for r in rows(&redis) {
        assert_eq!(text(&r["l7_protocol"]).to_ascii_uppercase(), "REDIS", "{r:?}");
        let e = by_cmd.entry(text(&r["request_type"])).or_default();
        e.0 += int(&r["calls"]);
        e.1.push(format!(
            "{} | {} | {}",
            text(&r["request_resource"]),
            text(&r["response_status"]),
            text(&r["response_exception"])
        ));
    }
    let counts: BTreeMap<&str, i64> = by_cmd.iter().map(|(k, v)| (k.as_str(), v.0)).collect();
    assert_eq!(counts, BTreeMap::from([("GET", 2), ("LPUSH", 1), ("SET", 1)]), "{by_cmd:?}");
    assert_eq!(by_cmd["SET"].1, vec!["SET fathom:k v1 | ok | ".to_string()]);
    assert_eq!(by_cmd["GET"].1, vec!["GET fathom:k | ok | ".to_string()]);
    let lpush = &by_cmd["LPUSH"].1[0];
    assert!(
        lpush.starts_with("LPUSH fathom:k x | client_error | WRONGTYPE"),
        "the Redis error: {lpush}"
    );

    // The resource tags come back by name (SmartEncoding ids joined back).
    let v = fathomctl(
        &server,
        "flow_log",
        &format!("SELECT host, Count(*) AS calls FROM l7_flow_log WHERE server_port = {http_port} GROUP BY host"),
    )
    .unwrap();
    let hosts = rows(&v);
    assert_eq!(hosts.len(), 1, "{v}");
    assert!(!text(&hosts[0]["host"]).is_empty(), "host tag named: {v}");
    drop(agent);
}

/// With eBPF on, a curl -> python3 http.server call on loopback is seen in
/// both processes. On the server each end counts the call once: RED rows
/// per observation point (c-p, s-p), one L7 record per end, and one L4
/// flow naming both processes.
#[test]
fn a_call_between_local_processes_counts_once_per_end() {
    require_root();
    let _serial = serial();
    let dir = TempDir::new("ends");
    const CALLS: usize = 5;
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for i in 0..CALLS {
        std::fs::write(www.join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
    }
    // Started before the agent: its readiness probes are not captured, so
    // curl's connections are the only flows to the port.
    let (_http, port) = http_server(&www);
    let server = Server::start(&dir.join("server-data"), &[]);
    let agent =
        Agent::start(&dir.0, &server, "e2e-ends", &[("FATHOM_AGENT_CAPTURE__EBPF", "required")]);
    // One curl, CALLS connections (http.server closes after each answer).
    let urls: Vec<String> =
        (0..CALLS).map(|i| format!("http://127.0.0.1:{port}/f{i}.txt")).collect();
    let mut args = vec!["-sS"];
    args.extend(urls.iter().map(String::as_str));
    let body = run("curl", &args);
    assert_eq!(body, (0..CALLS).map(|i| i.to_string()).collect::<Vec<_>>().join("\n"));

    let red_sql = format!(
        "SELECT observation_point, Sum(request) AS n FROM application_1s \
         WHERE server_port = {port} GROUP BY observation_point ORDER BY observation_point"
    );
    let l7_sql = format!(
        "SELECT observation_point, process_0, process_1, Count(*) AS n FROM l7_flow_log \
         WHERE server_port = {port} GROUP BY observation_point, process_0, process_1 \
         ORDER BY observation_point"
    );
    let l4_sql = format!(
        "SELECT process_0, process_1, Count(*) AS n FROM l4_flow_log \
         WHERE server_port = {port} GROUP BY process_0, process_1"
    );
    let want = CALLS as i64;
    let table = |db: &str, sql: &str, cols: &[&str]| -> Result<Vec<Vec<String>>, String> {
        let v = fathomctl(&server, db, sql)?;
        Ok(rows(&v).iter().map(|r| cols.iter().map(|c| text(&r[*c])).collect()).collect())
    };
    let red = || table("flow_metrics", &red_sql, &["observation_point", "n"]);
    let l7 = || table("flow_log", &l7_sql, &["observation_point", "process_0", "process_1", "n"]);
    let l4 = || table("flow_log", &l4_sql, &["process_0", "process_1", "n"]);
    let total = |t: &[Vec<String>]| {
        t.iter().map(|r| r.last().unwrap().parse::<i64>().unwrap_or(0)).sum::<i64>()
    };
    poll("both ends of the calls in RED, L7 and L4", ARRIVAL, || {
        let (r, l, f) = (red()?, l7()?, l4()?);
        if total(&r) >= 2 * want && total(&l) >= 2 * want && total(&f) >= want {
            Ok(())
        } else {
            Err(format!("red {r:?}\nl7 {l:?}\nl4 {f:?}\nagent: {}", agent.log_tail()))
        }
    });
    // Let any late (duplicate) batch land before checking exact counts.
    std::thread::sleep(Duration::from_secs(3));
    let n = want.to_string();
    let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(red().unwrap(), vec![row(&["c-p", &n]), row(&["s-p", &n])], "RED per end");
    assert_eq!(
        l7().unwrap(),
        vec![row(&["c-p", "curl", "", &n]), row(&["s-p", "", "python3", &n])],
        "one L7 record per end, none from packets"
    );
    assert_eq!(l4().unwrap(), vec![row(&["curl", "python3", &n])], "flows name both ends");
    drop(agent);
}

/// A paced HTTP client: `total` requests to `/seq/<i>` (one connection
/// each), holding before request `hold_at` until `go` is set. Returns how
/// many got an answer.
fn paced_client(
    port: u16,
    total: usize,
    hold_at: usize,
    go: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut ok = 0;
        for i in 0..total {
            if i == hold_at {
                while !go.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            match http_status(port, &format!("/seq/{i:05}")) {
                Ok(404) => ok += 1,
                other => panic!("request {i}: {other:?}"),
            }
            done.store(i + 1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
        }
        ok
    })
}

/// Stops the server mid-stream (SIGTERM or SIGKILL), keeps the traffic
/// going while it is down, starts it again on the same data and ports,
/// and returns (sent, stored, distinct stored).
/// The server is handed back (with its scratch directory) for more queries.
fn outage(
    name: &str,
    kill9: bool,
    agent_env: &[(&str, &str)],
) -> (usize, i64, i64, Server, u16, TempDir) {
    require_root();
    let dir = TempDir::new(name);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let (_http, http_port) = http_server(&www);
    let mut server = Server::start(&dir.join("server-data"), &[]);
    let agent = Agent::start(&dir.0, &server, &format!("e2e-{name}"), agent_env);

    const TOTAL: usize = 300;
    let go = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    // Requests 200.. wait until the server is down for sure.
    let client = paced_client(http_port, TOTAL, 200, go.clone(), done.clone());
    let wait_done = |n: usize| {
        poll(&format!("{n} client requests"), Duration::from_secs(120), || {
            let d = done.load(Ordering::SeqCst);
            if d >= n {
                Ok(())
            } else {
                Err(format!("{d} done"))
            }
        })
    };
    wait_done(100);
    let stopped_at = done.load(Ordering::SeqCst);
    let status = if kill9 { server.kill9() } else { server.stop() };
    if kill9 {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    } else {
        assert!(status.success(), "SIGTERM exits cleanly: {status}\n{}", server.log_tail());
    }
    eprintln!(
        "server stopped ({}) after request {stopped_at}",
        if kill9 { "SIGKILL" } else { "SIGTERM" }
    );
    go.store(true, Ordering::SeqCst);
    wait_done(250);
    // The records of requests made while the server is down wait in the spool.
    poll("a batch in the agent's spool while the server is down", ARRIVAL, || {
        let n = agent.spooled();
        if n > 0 {
            Ok(n)
        } else {
            Err("spool empty".into())
        }
    });
    server.spawn();
    eprintln!("server restarted after request {}", done.load(Ordering::SeqCst));
    let sent = client.join().expect("client");
    assert_eq!(sent, TOTAL);
    let t = Instant::now();
    // Other traffic on loopback (other test suites) keeps the agent's
    // spool busy: wait for this client's calls, not for an empty spool.
    let mut last = String::new();
    while t.elapsed() < AFTER_RESTART {
        match count_calls(&server, http_port) {
            Ok((_, u)) if u as usize >= sent => break,
            Ok((n, u)) => last = format!("{n} rows, {u} distinct, spool {}", agent.spooled()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if t.elapsed() >= AFTER_RESTART {
        let v = fathomctl(
            &server,
            "flow_log",
            &format!(
                "SELECT request_resource FROM l7_flow_log WHERE server_port = {http_port} LIMIT 1000"
            ),
        )
        .unwrap_or_default();
        let have: std::collections::BTreeSet<String> =
            rows(&v).iter().map(|r| text(&r["request_resource"])).collect();
        let missing: Vec<usize> =
            (0..sent).filter(|i| !have.contains(&format!("/seq/{i:05}"))).collect();
        let m = agent.metrics();
        let drops: Vec<&str> =
            m.lines().filter(|l| !l.starts_with('#') && l.contains("drop")).collect();
        panic!(
            "{name}: after {AFTER_RESTART:?}: {last}; missing calls {missing:?} \
             (the server stopped after {stopped_at}); agent: {drops:?}"
        );
    }
    eprintln!("all {sent} calls queryable {:?} after the last one", t.elapsed());
    // Anything still in flight lands before the final count.
    std::thread::sleep(Duration::from_secs(3));
    let (n, u) = count_calls(&server, http_port).unwrap();
    eprintln!("{name}: sent {sent}, stored {n} rows, {u} distinct");
    let m = agent.metrics();
    for line in
        m.lines().filter(|l| l.contains("sender") || l.contains("spool") || l.contains("drop"))
    {
        eprintln!("  agent {line}");
    }
    drop(agent);
    (sent, n, u, server, http_port, dir)
}

/// SIGTERM mid-stream and a restart on the same data: every call the
/// client made is stored exactly once.
#[test]
fn server_restart_mid_stream_loses_and_duplicates_nothing() {
    let _serial = serial();
    let (sent, stored, distinct, server, _, dir) = outage("restart", false, &[]);
    drop(server);
    drop(dir);
    assert_eq!(distinct as usize, sent, "every request stored");
    assert_eq!(stored as usize, sent, "no request stored twice");
}

/// SIGKILL while the agent spools: the spool replays, nothing is lost and
/// nothing is stored twice.
///
/// The server acknowledges a batch after inserting it and recording its id
/// (the high-water mark) durably. A SIGKILL between the insert and the
/// mark leaves a batch stored but unacknowledged; the agent replays it,
/// and the engine drops the second insert: a batch stored alone carries
/// the token `agent:batch_id:table` (insert deduplication). Batches of
/// several agents stored as one group are journaled first and stored again
/// under the group's tokens at start (`ingest/tests/groups.rs`).
#[test]
fn server_kill9_while_agent_spools_loses_nothing() {
    let _serial = serial();
    let (sent, stored, distinct, server, port, dir) = outage("kill9", true, &[]);
    assert_eq!(distinct as usize, sent, "every request stored");
    let stored = stored as usize;
    assert_eq!(stored, sent, "stored {stored} for {sent} requests: a replay stored twice");
    let v = fathomctl(
        &server,
        "flow_log",
        &format!(
            "SELECT request_resource, Count(*) AS n FROM l7_flow_log WHERE server_port = {port} \
             GROUP BY request_resource ORDER BY n DESC LIMIT 1"
        ),
    )
    .unwrap();
    let top = int(&rows(&v)[0]["n"]);
    assert_eq!(top, 1, "a request stored {top} times: {v}");
    drop(server);
    drop(dir);
}

/// A gRPC Push of raw bytes with python3's grpcio (generic call, no
/// stubs): "CODE details", or "OK" when the call succeeded.
fn grpc_raw_push(addr: &str, message: &[u8]) -> String {
    let script = r#"
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
push = ch.unary_unary('/fathom.agent.v1.AgentData/Push')
try:
    push(bytes.fromhex(sys.argv[2]), timeout=30)
    print('OK')
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#;
    let hex: String = message.iter().map(|b| format!("{b:02x}")).collect();
    run("python3", &["-c", script, addr, &hex])
}

fn batch(agent: &str, id: u64, recs: &fathom_proto::Records) -> fathom_proto::RecordBatch {
    use prost::Message;
    let raw = recs.encode_to_vec();
    fathom_proto::RecordBatch {
        agent_id: agent.into(),
        batch_id: id,
        compression: fathom_proto::Compression::Zstd as i32,
        payload: zstd::bulk::compress(&raw, 1).unwrap(),
        uncompressed_size: raw.len() as u64,
        counts: Some(recs.counts()),
        host: "e2e-host".into(),
        host_ips: Vec::new(),
    }
}

fn one_call(port: u16, resource: &str) -> fathom_proto::Records {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
            as u64;
    fathom_proto::Records {
        l7: vec![fathom_proto::L7Log {
            client_ip: vec![127, 0, 0, 1],
            client_port: 40000,
            server_ip: vec![127, 0, 0, 1],
            server_port: port as u32,
            ip_protocol: 6,
            start_time_us: now,
            end_time_us: now + 100,
            latency_us: 100,
            l7_protocol: "http".into(),
            msg_type: "session".into(),
            version: "1.1".into(),
            request_type: "GET".into(),
            request_resource: resource.into(),
            endpoint: resource.into(),
            response_code: Some(200),
            response_status: "ok".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Malformed protobuf, oversized and zstd-bomb batches, bad SQL, injection
/// attempts and an oversized query body: each gets a clear error, and the
/// server keeps answering health checks, queries and pushes.
#[test]
fn bad_input_gets_clear_errors_and_the_server_keeps_running() {
    require_root();
    let _serial = serial();
    let dir = TempDir::new("bad");
    // Small limits so the oversized cases stay cheap. Hand-made batches from any agent
    // id: the ingest port in its plain mode (controller.ingest_tls = false, tests only).
    let mut server = Server::start(
        &dir.join("server-data"),
        &[
            ("FATHOM_SERVER_CONTROLLER__INGEST_TLS", "false"),
            ("FATHOM_SERVER_INGEST__MAX_BATCH_BYTES", "1048576"),
            ("FATHOM_SERVER_INGEST__MAX_DECOMPRESSED_BYTES", "4194304"),
        ],
    );
    let addr = server.ingest_addr();
    let port = free_port();

    // Raw garbage over TCP (no HTTP/2 preface): the connection is closed.
    for garbage in [
        b"\x00\x01\x02\x03garbage that is not HTTP/2 at all\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&garbage).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        eprintln!("raw garbage -> {} bytes back, then closed", buf.len());
    }

    // gRPC calls with a body that is not a RecordBatch.
    for (what, msg) in [
        ("random bytes", b"\xff\xff\xff\xff\x0f garbage \x00\x01".to_vec()),
        ("truncated field", vec![0x0a, 0x7f, b'a']),
        ("wrong wire type", vec![0x0b, 0x0c, 0x0d]),
    ] {
        let out = grpc_raw_push(&addr, &msg);
        eprintln!("grpc push of {what} -> {out}");
        // Not INTERNAL: clients retry that, and these bytes never decode.
        assert!(
            out.starts_with("INVALID_ARGUMENT"),
            "malformed protobuf ({what}) is refused: {out}"
        );
        assert!(out.to_ascii_lowercase().contains("decode"), "says why: {out}");
    }

    // Well-formed RecordBatches with bad contents, through tonic.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // tonic's Status is what the call returns.
    #[allow(clippy::result_large_err)]
    let push = |b: fathom_proto::RecordBatch| -> Result<fathom_proto::Ack, tonic::Status> {
        rt.block_on(async {
            let mut c =
                fathom_proto::agent_data_client::AgentDataClient::connect(format!("http://{addr}"))
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?
                    .max_encoding_message_size(64 << 20);
            c.push(b).await.map(|r| r.into_inner())
        })
    };
    let mut garbage_payload = batch("e2e-bad", 1, &one_call(port, "/x"));
    garbage_payload.payload = b"this is not zstd".to_vec();
    let mut not_records = batch("e2e-bad", 1, &one_call(port, "/x"));
    let junk = vec![0xffu8; 64];
    not_records.payload = zstd::bulk::compress(&junk, 1).unwrap();
    not_records.uncompressed_size = junk.len() as u64;
    let mut wrong_counts = batch("e2e-bad", 1, &one_call(port, "/x"));
    wrong_counts.counts.as_mut().unwrap().l7 = 5;
    let mut oversized = batch("e2e-bad", 1, &one_call(port, "/x"));
    oversized.compression = fathom_proto::Compression::None as i32;
    // Past max_batch_bytes but within the gRPC message limit (+64 KiB).
    oversized.payload = vec![0u8; (1 << 20) + 1024];
    let mut bomb = batch("e2e-bad", 1, &one_call(port, "/x"));
    let zeros = vec![0u8; 64 << 20];
    bomb.payload = zstd::bulk::compress(&zeros, 3).unwrap();
    bomb.uncompressed_size = 1 << 20; // a lie: the frame holds 64 MiB
    let mut bomb_declared = bomb.clone();
    bomb_declared.uncompressed_size = zeros.len() as u64;
    let mut no_agent = batch("", 1, &one_call(port, "/x"));
    no_agent.agent_id.clear();
    let mut zero_id = batch("e2e-bad", 0, &one_call(port, "/x"));
    zero_id.batch_id = 0;
    for (what, b, code, says) in [
        ("payload that is not zstd", garbage_payload, tonic::Code::InvalidArgument, "zstd"),
        ("payload that is not Records", not_records, tonic::Code::InvalidArgument, "records"),
        ("counts that do not match", wrong_counts, tonic::Code::InvalidArgument, "counts"),
        (
            "oversized batch (1 MiB + 1 KiB > 1 MiB)",
            oversized,
            tonic::Code::ResourceExhausted,
            "limit",
        ),
        ("zstd bomb (lying size)", bomb, tonic::Code::InvalidArgument, "zstd"),
        ("zstd bomb (declared 64 MiB)", bomb_declared, tonic::Code::ResourceExhausted, "limit"),
        ("empty agent id", no_agent, tonic::Code::InvalidArgument, "agent_id"),
        ("batch id 0", zero_id, tonic::Code::InvalidArgument, "batch_id"),
    ] {
        let st = push(b).expect_err(what);
        eprintln!("push of {what} -> {:?}: {}", st.code(), st.message());
        assert_eq!(st.code(), code, "{what}: {}", st.message());
        assert!(st.message().to_ascii_lowercase().contains(says), "{what}: {}", st.message());
    }
    // A batch bigger than the gRPC message limit (max_batch_bytes + 64 KiB).
    let mut huge = batch("e2e-bad", 1, &one_call(port, "/x"));
    huge.payload = vec![1u8; 3 << 20];
    let st = push(huge).expect_err("a 3 MiB message");
    eprintln!("push of a 3 MiB message -> {:?}: {}", st.code(), st.message());
    assert!(
        matches!(st.code(), tonic::Code::ResourceExhausted | tonic::Code::OutOfRange),
        "{st:?}"
    );

    // The SQL API: refusals are 400 with a message that says why.
    let bad_sql: &[(&str, &str, &str)] = &[
        ("flow_log", "SELEC * FROM l7_flow_log", "syntax"),
        ("flow_log", "DROP TABLE l7_flow_log", "only select"),
        ("flow_log", "INSERT INTO l7_flow_log (server_port) VALUES (1)", "only select"),
        (
            "flow_log",
            "SELECT Count(*) FROM l7_flow_log; DROP TABLE l7_flow_log",
            "multiple statements",
        ),
        ("flow_log", "SELECT * FROM system.tables", "system"),
        ("flow_log", "SELECT name FROM system.users", "system"),
        ("flow_log", "SELECT * FROM file('/etc/passwd', 'CSV')", ""),
        ("flow_log", "SELECT * FROM url('http://127.0.0.1:1/', 'CSV')", ""),
        ("flow_log", "SELECT password FROM l7_flow_log", "password"),
        (
            "flow_log",
            "SELECT Count(*) FROM l7_flow_log WHERE endpoint = (SELECT name FROM system.tables)",
            "",
        ),
        ("nope", "SELECT Count(*) FROM l7_flow_log", "unknown database"),
        ("flow_log", "", "empty"),
    ];
    for (db, sql, says) in bad_sql {
        let (status, v) = server.sql(db, sql);
        eprintln!("{sql:?} -> {status} {v}");
        assert_eq!(status, 400, "{sql:?} -> {v}");
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{sql:?}: no error message: {v}"));
        assert!(!msg.is_empty(), "{sql:?}");
        assert!(msg.to_ascii_lowercase().contains(says), "{sql:?}: {msg}");
    }
    let long =
        format!("SELECT Count(*) FROM l7_flow_log WHERE endpoint = '{}'", "a".repeat(70_000));
    let (status, v) = server.sql("flow_log", &long);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("limit"), "{v}");
    let (status, v) = server.post_query(b"{\"db\": \"flow_log\", \"sql\": ", "application/json");
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("JSON"), "{v}");
    // An oversized request body (8 MiB): refused before it is read.
    let big = format!(
        "{{\"db\": \"flow_log\", \"sql\": \"SELECT 1\", \"pad\": \"{}\"}}",
        "x".repeat(8 << 20)
    );
    let (status, answer) = raw_post(server.query_port, big.as_bytes());
    eprintln!("8 MiB body -> {status} {answer}");
    assert_eq!(status, 413, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("the 413 is not JSON ({e}): {answer}"));
    assert!(v["error"].as_str().unwrap_or_default().contains("limit"), "the 413 says why: {v}");

    // The server still stores and answers: a valid push, then queries,
    // including injection attempts that must match nothing.
    let ack = push(batch("e2e-good", 1, &one_call(port, "/ok"))).expect("a valid push");
    assert_eq!(ack.status, fathom_proto::AckStatus::Stored as i32, "{ack:?}");
    let ack = push(batch("e2e-good", 1, &one_call(port, "/ok"))).expect("a replay");
    assert_eq!(ack.status, fathom_proto::AckStatus::Duplicate as i32, "{ack:?}");
    let (n, _) = poll("the valid push", ARRIVAL, || match count_calls(&server, port)? {
        (n, u) if n > 0 => Ok((n, u)),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(n, 1);
    for inj in [
        format!("SELECT Count(*) AS n FROM l7_flow_log WHERE server_port = {port} AND endpoint = 'x'' OR ''1''=''1'"),
        format!("SELECT Count(*) AS n FROM l7_flow_log WHERE server_port = {port} AND endpoint = 'x\\' OR 1=1 OR endpoint = '"),
        format!("SELECT Count(*) AS n FROM l7_flow_log WHERE server_port = {port} AND host = 'x'' OR 1=1 --'"),
    ] {
        let (status, v) = server.sql("flow_log", &inj);
        eprintln!("{inj:?} -> {status} {v}");
        if status == 200 {
            assert_eq!(int(&rows(&v)[0]["n"]), 0, "an injection matched rows: {inj}\n{v}");
        } else {
            assert_eq!(status, 400, "{inj}: {v}");
            assert!(v["error"].is_string(), "{v}");
        }
    }
    let (status, v) = server.health();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "ok");
    assert!(server.is_running(), "{}", server.log_tail());
    let log = server.log_text();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    server.stop();
}

/// POST /v1/query over a plain socket (the server may answer and close
/// before the whole body is sent): the status and the body of the answer.
fn raw_post(port: u16, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /v1/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(64 << 10) {
        if s.write_all(chunk).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Writes `b` as the agent's spool writes a segment
/// (`FSB1 | crc32(body) | body`); `damaged` flips a byte of the body.
fn write_segment(spool: &std::path::Path, b: &fathom_proto::RecordBatch, damaged: bool) {
    use prost::Message;
    let mut body = b.encode_to_vec();
    let mut data = b"FSB1".to_vec();
    data.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    if damaged {
        let last = body.len() - 1;
        body[last] ^= 0xff;
    }
    data.extend_from_slice(&body);
    std::fs::create_dir_all(spool).unwrap();
    std::fs::write(spool.join(format!("{:020}.batch", b.batch_id)), data).unwrap();
}

/// The value of an unlabelled metric in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// A poison batch in the agent's spool (a sound segment whose payload the
/// server cannot decode) is refused with INVALID_ARGUMENT, moved to the
/// spool's quarantine, and the batch behind it is delivered; a damaged
/// segment is quarantined as well. Both programs count all of it on their
/// /metrics.
#[test]
fn a_poison_batch_is_quarantined_and_the_spool_moves_on() {
    require_root();
    let _serial = serial();
    let dir = TempDir::new("poison");
    let server = Server::start(&dir.join("server-data"), &[]);
    let port = free_port();
    let agent_id = "e2e-poison";
    let spool = dir.join("agent-spool");
    let mut poison = batch(agent_id, 1, &one_call(port, "/poison"));
    poison.payload = b"this is not zstd".to_vec();
    write_segment(&spool, &poison, false);
    write_segment(&spool, &batch(agent_id, 2, &one_call(port, "/behind-the-poison")), false);
    write_segment(&spool, &batch(agent_id, 3, &one_call(port, "/damaged")), true);

    let agent = Agent::start(&dir.0, &server, agent_id, &[]);
    let (n, u) =
        poll("the batch behind the poison one", ARRIVAL, || match count_calls(&server, port)? {
            (0, _) => Err("nothing stored yet".to_string()),
            found => Ok(found),
        });
    assert_eq!((n, u), (1, 1), "only the good batch's call");
    let v = fathomctl(
        &server,
        "flow_log",
        &format!("SELECT request_resource FROM l7_flow_log WHERE server_port = {port}"),
    )
    .unwrap();
    assert_eq!(text(&rows(&v)[0]["request_resource"]), "/behind-the-poison");
    let quarantine = spool.join("quarantine");
    for id in [1u64, 3] {
        let name = format!("{id:020}.batch");
        assert!(quarantine.join(&name).exists(), "{name} quarantined:\n{}", agent.log_tail());
        assert!(!spool.join(&name).exists(), "{name} left the spool");
    }
    assert!(!spool.join(format!("{:020}.batch", 2)).exists(), "the good batch was acked");
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(log.contains("quarantined"), "the agent says so:\n{log}");

    let page = poll("the agent's sender metrics", ARRIVAL, || {
        let page = agent.metrics();
        match metric(&page, "fathom_agent_sender_batches_acked_total") {
            Some(n) if n >= 1.0 => Ok(page),
            _ => Err(page),
        }
    });
    let m = |name: &str| {
        metric(&page, name).unwrap_or_else(|| panic!("{name} missing from the agent:\n{page}"))
    };
    assert_eq!(m("fathom_agent_sender_batches_quarantined_total"), 2.0, "{page}");
    assert_eq!(m("fathom_agent_sender_batches_rejected_total"), 1.0);
    assert_eq!(m("fathom_agent_sender_spool_corrupt_total"), 1.0);
    // Batches 1 and 2 were left by an earlier run: both pushes are replays.
    assert!(m("fathom_agent_sender_batches_replayed_total") >= 2.0, "{page}");
    assert!(
        m("fathom_agent_sender_batches_sent_total")
            >= m("fathom_agent_sender_batches_acked_total") + 1.0
    );
    assert!(m("fathom_agent_sender_spool_bytes") >= 0.0);
    assert!(m("fathom_agent_sender_spool_batches") >= 0.0);

    let page = http_get(server.query_port, "/metrics").expect("the server's /metrics");
    let m = |name: &str| {
        metric(&page, name).unwrap_or_else(|| panic!("{name} missing from the server:\n{page}"))
    };
    assert!(m("fathom_ingest_batches_received_total") >= 2.0, "{page}");
    assert_eq!(m("fathom_ingest_batches_rejected_total"), 1.0, "{page}");
    assert!(m("fathom_ingest_batches_stored_total") >= 1.0, "{page}");
    assert!(m("fathom_ingest_rows_stored_total") >= 1.0, "{page}");
    assert_eq!(m("fathom_ingest_store_errors_total"), 0.0, "{page}");
    let inserts = m("fathom_ingest_store_insert_seconds_count");
    let seconds = m("fathom_ingest_store_insert_seconds_sum");
    assert!(inserts >= 1.0 && seconds > 0.0, "{page}");
    assert!(seconds / inserts < 60.0, "a sane mean insert time: {page}");
    drop(agent);
}
