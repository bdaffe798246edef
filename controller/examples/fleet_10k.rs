//! How many agents one controller node handles: 10,000 simulated agents against the
//! real control plane, measured from the outside.
//!
//! ```sh
//! cargo run --release -p fathom-controller --example fleet_10k -- \
//!     [--agents 10000] [--steady-secs 60] [--phase-secs 10] [--rates 1000,2000,5000,...]
//! ```
//!
//! The server side runs in a child process (this program started again with `--serve`):
//! a one-node Raft group (`MetaNode`, its port mTLS on loopback, log and snapshots
//! fsynced to a directory under `$TMPDIR`) and the `AgentControl` service over mTLS,
//! wired as `fathom-server` wires them, with the controller's default settings (agents
//! beat every 10 s, beats flushed to Raft once a second, lost after 60 s). Its CPU time
//! and RSS are read from `/proc/<pid>`, so the numbers below are the server's alone;
//! the agents run in this process, on the same cores.
//!
//! Every agent really enrolls: its own one-time token (made beforehand through the
//! control plane, like `fathomctl token create`), a P-256 key and CSR, a certificate
//! signed by the cluster CA; then it keeps one mTLS connection open and beats as the
//! agent's control loop does (at the interval the server answers, reporting the config
//! version it holds and taking the one pushed back). Half-way through the steady phase
//! the pool's config changes (`SetAgentConfig`); the run waits until every agent holds
//! the new version and until every agent's report of it is committed.
//!
//! Then the beat rate is stepped up (`--rates`, beats per second across the fleet; the
//! agents ignore the server's interval there) to find the rate one node sustains before
//! latency climbs: a step counts as sustained when at least 95% of the asked rate is
//! achieved and the p99 stays under 4x the p99 at the default interval (at least 20 ms).
//!
//! 10,000 TLS connections need 10,000 descriptors on each side: both processes raise
//! their soft `RLIMIT_NOFILE` to the hard limit and say so.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fathom_cluster::network::Transport;
use fathom_cluster::state::{AgentStatus, Command as MetaCommand};
use fathom_cluster::{MetaConfig, MetaNode, Response as MetaResponse};
use fathom_controller::ca::agent_csr;
use fathom_controller::{ControlConfig, ControlPlane, NodeTls};
use fathom_proto::control::agent_control_client::AgentControlClient;
use fathom_proto::control::{EnrollRequest, HeartbeatRequest};
use futures::StreamExt;
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity as TlsId};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const POOL: &str = "fleet";
/// Enrollments and connection set-ups in flight at once.
const CONCURRENCY: usize = 64;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.first().map(String::as_str) == Some("--serve") {
        let dir = PathBuf::from(args.get(1).ok_or("--serve <dir>")?);
        return rt.block_on(serve(dir));
    }
    let opts = Opts::parse(&args)?;
    rt.block_on(drive(opts))
}

struct Opts {
    agents: usize,
    steady: Duration,
    phase: Duration,
    rates: Vec<u64>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, BoxError> {
        let mut o = Opts {
            agents: 10_000,
            steady: Duration::from_secs(60),
            phase: Duration::from_secs(10),
            rates: vec![1_000, 2_000, 5_000, 10_000, 20_000, 40_000],
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut v = || it.next().ok_or_else(|| format!("{a} needs a value"));
            match a.as_str() {
                "--agents" => o.agents = v()?.parse()?,
                "--steady-secs" => o.steady = Duration::from_secs(v()?.parse()?),
                "--phase-secs" => o.phase = Duration::from_secs(v()?.parse()?),
                "--rates" => {
                    o.rates = v()?.split(',').map(str::parse).collect::<Result<_, _>>()?;
                }
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        Ok(o)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Soft `RLIMIT_NOFILE` -> the hard limit; returns (soft, hard) after.
fn raise_nofile() -> (libc::rlim_t, libc::rlim_t) {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
    }
    (l.rlim_cur, l.rlim_max)
}

// ---------------------------------------------------------------------------------------
// The server side (child process): Raft + control plane, driven by lines on stdin.
// ---------------------------------------------------------------------------------------

async fn serve(dir: PathBuf) -> Result<(), BoxError> {
    let (soft, _) = raise_nofile();
    let raft_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let day = Duration::from_secs(86_400);
    let tls = NodeTls::load_or_create(&dir.join("ca"), 1, &[], day * 3650, day * 90)?;
    let transport = Transport::with_tls(tls.raft_client()?).map_err(|e| e.to_string())?;
    let meta = MetaNode::start_with_tls(
        MetaConfig::new(1, raft_addr, dir.join("meta")),
        transport,
        Some(tls.raft_server()?),
    )
    .await?;
    meta.initialize(BTreeMap::from([(1, raft_addr.to_string())])).await?;
    let cfg = ControlConfig {
        listen: "127.0.0.1:0".parse()?,
        ingest_addr: "127.0.0.1:20033".into(),
        ..Default::default()
    };
    let plane = ControlPlane::bootstrap_with_node(meta.clone(), cfg, &tls).await?;
    let control = plane.serve(tonic::service::Routes::default()).await?;
    std::fs::write(dir.join("ca.pem"), plane.ca_pem())?;
    println!("ready {} {soft}", control.local_addr().port());

    let mut lines = BufReader::new(std::io::stdin()).lines();
    while let Some(line) = tokio::task::block_in_place(|| lines.next()).transpose()? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["tokens", n, file] => {
                let t0 = Instant::now();
                let secrets: Vec<String> = futures::stream::iter(0..n.parse::<usize>()?)
                    .map(|_| plane.create_token("r1", "z1", POOL, Duration::from_secs(86_400)))
                    .buffer_unordered(CONCURRENCY)
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<Result<_, _>>()?;
                std::fs::write(file, secrets.join("\n"))?;
                format!("ok {:.3}", t0.elapsed().as_secs_f64())
            }
            ["config", ..] => {
                let body = line["config ".len()..].replace("\\n", "\n");
                let cmd = MetaCommand::SetAgentConfig { pool: POOL.into(), body };
                match meta.write(cmd).await? {
                    MetaResponse::ConfigVersion { version } => format!("version {version}"),
                    r => format!("error {r:?}"),
                }
            }
            ["stats", version, since_ms] => {
                let (version, since_ms): (u64, u64) = (version.parse()?, since_ms.parse()?);
                let log = meta.status().last_log_index.unwrap_or(0);
                let (agents, active, lost, at_version, beat_since) = meta.read(|s| {
                    let count = |f: &dyn Fn(&fathom_cluster::state::AgentRecord) -> bool| {
                        s.agents.values().filter(|a| f(a)).count()
                    };
                    (
                        s.agents.len(),
                        count(&|a| a.status == AgentStatus::Active),
                        count(&|a| a.status == AgentStatus::Lost),
                        count(&|a| a.config_version == version),
                        count(&|a| a.last_heartbeat_ms >= since_ms),
                    )
                });
                format!("stats {log} {agents} {active} {lost} {at_version} {beat_since}")
            }
            ["quit"] => break,
            _ => format!("error unknown command {line:?}"),
        };
        println!("{answer}");
    }
    control.shutdown().await;
    meta.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The driver: starts the server, enrolls and runs the agents, reports.
// ---------------------------------------------------------------------------------------

/// The server child and its command channel.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    ticks_per_sec: f64,
}

/// CPU seconds (user + system) and RSS of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    cpu_s: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
}

impl Server {
    fn start(dir: &Path) -> Result<Server, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let mut w = line.split_whitespace();
        if w.next() != Some("ready") {
            return Err(format!("server did not start: {line:?}").into());
        }
        let port = w.next().ok_or("no port")?.parse()?;
        println!("server: pid {}, RLIMIT_NOFILE soft {}", child.id(), w.next().unwrap_or("?"));
        // SAFETY: sysconf has no preconditions.
        let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(Server { child, stdin, stdout, port, ticks_per_sec })
    }

    /// One command, one answer line (blocking: the server answers at once, except
    /// `tokens`, which runs before any agent does).
    fn ask(&mut self, cmd: &str) -> Result<String, BoxError> {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{cmd}")?;
            self.stdin.flush()?;
            let mut line = String::new();
            self.stdout.read_line(&mut line)?;
            if line.is_empty() || line.starts_with("error") {
                return Err(format!("server: {cmd:?} -> {line:?}").into());
            }
            Ok(line.trim_end().to_string())
        })
    }

    fn stats(&mut self, version: u64, since_ms: u64) -> Result<Stats, BoxError> {
        let line = self.ask(&format!("stats {version} {since_ms}"))?;
        let n: Vec<u64> =
            line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
        Ok(Stats {
            log_index: n[0],
            agents: n[1] as usize,
            active: n[2] as usize,
            lost: n[3] as usize,
            at_version: n[4] as usize,
            beat_since: n[5] as usize,
        })
    }

    fn usage(&self) -> Usage {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): state is field 3, utime 14.
        let rest: Vec<&str> =
            stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
        let tick = |i: usize| rest.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Usage {
            cpu_s: (tick(11) + tick(12)) / self.ticks_per_sec,
            rss_mib: kib("VmRSS:") / 1024.0,
            peak_rss_mib: kib("VmHWM:") / 1024.0,
        }
    }

    fn stop(mut self) -> Result<(), BoxError> {
        let _ = self.ask("quit");
        self.child.wait()?;
        Ok(())
    }
}

#[derive(Debug)]
struct Stats {
    log_index: u64,
    agents: usize,
    active: usize,
    lost: usize,
    at_version: usize,
    beat_since: usize,
}

/// This process's CPU seconds (the simulated agents).
fn own_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn channel(
    url: &str,
    ca_pem: &str,
    me: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = me {
        tls = tls.identity(TlsId::from_pem(cert, key));
    }
    Channel::from_shared(url.to_string())
        .expect("valid url")
        .tls_config(tls)?
        .timeout(Duration::from_secs(30))
        .connect()
        .await
}

/// How the agents pace their beats.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pace {
    /// At the interval the server answers, as the agent does.
    Server,
    /// Every agent once per this period (the rate steps).
    Every(Duration),
    Stop,
}

/// What the agent tasks report to the driver.
#[derive(Default)]
struct Shared {
    /// Latencies (µs) of the beats of the current phase.
    latencies: Mutex<Vec<u32>>,
    errors: AtomicU64,
    /// How many agents took a pushed config (the run pushes one).
    holding: AtomicUsize,
}

impl Shared {
    fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *self.latencies.lock().unwrap())
    }
}

/// One simulated agent: beats like the agent's control loop until told to stop.
async fn agent(
    index: usize,
    fleet: usize,
    mut client: AgentControlClient<Channel>,
    shared: Arc<Shared>,
    mut pace: watch::Receiver<Pace>,
) {
    let mut version = 0u64;
    let mut server_every = Duration::from_secs(10);
    loop {
        let p = *pace.borrow_and_update();
        let every = match p {
            Pace::Stop => return,
            Pace::Server => server_every,
            Pace::Every(d) => d,
        };
        // Spread the fleet evenly over the period (agents start at different times).
        let mut next = tokio::time::Instant::now() + every.mul_f64(index as f64 / fleet as f64);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                changed = pace.changed() => match changed {
                    Ok(()) => break,
                    Err(_) => return,
                },
            }
            let t0 = Instant::now();
            let req = HeartbeatRequest { config_version: version, ..Default::default() };
            match client.heartbeat(req).await {
                Ok(r) => {
                    let micros = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    shared.latencies.lock().unwrap().push(micros);
                    let r = r.into_inner();
                    if r.config_version != version && !r.config_body.is_empty() {
                        version = r.config_version;
                        shared.holding.fetch_add(1, Ordering::AcqRel);
                    }
                    let asked = Duration::from_secs(u64::from(r.interval_secs.max(1)));
                    if p == Pace::Server && asked != server_every {
                        server_every = asked;
                    }
                }
                Err(e) => {
                    if shared.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("agent-{index}: heartbeat failed: {e}");
                    }
                }
            }
            next += if p == Pace::Server { server_every } else { every };
            // Behind (the beat took longer than the period): beat again at once.
            next = next.max(tokio::time::Instant::now());
        }
    }
}

/// What one measured window saw.
struct Window {
    secs: f64,
    beats: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu_s: f64,
    agents_cpu_s: f64,
    raft_entries: u64,
    rss_mib: f64,
}

impl Window {
    fn rate(&self) -> f64 {
        self.beats as f64 / self.secs
    }

    fn cpu_per_1k(&self) -> f64 {
        self.server_cpu_s / self.beats.max(1) as f64 * 1000.0
    }
}

struct Meter {
    t0: Instant,
    usage: Usage,
    own: f64,
    log: u64,
}

impl Meter {
    fn start(server: &mut Server, shared: &Shared) -> Result<Meter, BoxError> {
        shared.take_latencies();
        Ok(Meter {
            t0: Instant::now(),
            usage: server.usage(),
            own: own_cpu_s(),
            log: server.stats(0, 0)?.log_index,
        })
    }

    fn finish(self, server: &mut Server, shared: &Shared) -> Result<Window, BoxError> {
        let mut lat = shared.take_latencies();
        let secs = self.t0.elapsed().as_secs_f64();
        let usage = server.usage();
        let log = server.stats(0, 0)?.log_index;
        lat.sort_unstable();
        Ok(Window {
            secs,
            beats: lat.len(),
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
            max_ms: percentile(&lat, 1.0),
            server_cpu_s: usage.cpu_s - self.usage.cpu_s,
            agents_cpu_s: own_cpu_s() - self.own,
            raft_entries: log - self.log,
            rss_mib: usage.rss_mib,
        })
    }
}

async fn drive(opts: Opts) -> Result<(), BoxError> {
    let (soft, hard) = raise_nofile();
    println!("agents: RLIMIT_NOFILE soft {soft} (hard {hard}); {} agents", opts.agents);
    if soft < (opts.agents + 100) as libc::rlim_t {
        return Err(format!("{} agents need more file descriptors than {soft}", opts.agents).into());
    }
    let dir = tempfile::Builder::new().prefix("fleet-10k-").tempdir()?;
    let mut server = Server::start(dir.path())?;
    let url = format!("https://127.0.0.1:{}", server.port);
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem"))?;
    let n = opts.agents;

    // One-time tokens, one per agent (an operator's `fathomctl token create`).
    let tokens_file = dir.path().join("tokens");
    let line = server.ask(&format!("tokens {n} {}", tokens_file.display()))?;
    let tokens: Vec<String> =
        std::fs::read_to_string(&tokens_file)?.lines().map(str::to_string).collect();
    let secs: f64 = line.trim_start_matches("ok ").parse()?;
    println!("tokens: {n} made in {secs:.2} s ({:.0}/s)", n as f64 / secs);

    // Keys and CSRs are made on each agent's host: not part of the server's work.
    let csrs: Vec<(String, String)> = tokio::task::block_in_place(|| {
        (0..n).map(|i| agent_csr(&format!("agent-{i:05}"))).collect::<Result<_, _>>()
    })?;

    // Enrollment: each agent dials without a certificate and presents its token and CSR.
    let before = server.usage();
    let t0 = Instant::now();
    let enrolled: Vec<(usize, String, u128)> = futures::stream::iter(csrs.iter().enumerate())
        .map(|(i, (csr, _))| {
            let (url, ca_pem, token) = (&url, &ca_pem, &tokens[i]);
            async move {
                let t = Instant::now();
                let mut c = AgentControlClient::new(channel(url, ca_pem, None).await?);
                let r = c
                    .enroll(EnrollRequest {
                        token: token.clone(),
                        csr_pem: csr.clone(),
                        agent_id: format!("agent-{i:05}"),
                        hostname: format!("host-{i:05}"),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok::<_, BoxError>((i, r.cert_pem, t.elapsed().as_micros()))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let enroll_secs = t0.elapsed().as_secs_f64();
    let enroll_cpu = server.usage().cpu_s - before.cpu_s;
    let mut lat: Vec<u32> = enrolled.iter().map(|e| e.2 as u32).collect();
    lat.sort_unstable();
    println!(
        "enrollment: {n} agents in {enroll_secs:.2} s = {:.0}/s ({CONCURRENCY} at once); \
         latency p50 {:.1} ms p99 {:.1} ms; server CPU {enroll_cpu:.2} s = {:.2} ms/enrollment",
        n as f64 / enroll_secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        enroll_cpu * 1000.0 / n as f64,
    );

    // Every agent opens its mTLS control connection and keeps it.
    let mut certs: Vec<(usize, String)> = enrolled.into_iter().map(|(i, c, _)| (i, c)).collect();
    certs.sort_by_key(|c| c.0);
    let t0 = Instant::now();
    let clients: Vec<AgentControlClient<Channel>> = futures::stream::iter(certs.iter())
        .map(|(i, cert)| {
            let (url, ca_pem, key) = (&url, &ca_pem, &csrs[*i].1);
            async move {
                Ok::<_, BoxError>(AgentControlClient::new(
                    channel(url, ca_pem, Some((cert, key))).await?,
                ))
            }
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    println!(
        "connections: {n} mTLS connections in {:.2} s; server RSS {:.0} MiB",
        t0.elapsed().as_secs_f64(),
        server.usage().rss_mib
    );

    // Steady state at the agent's default interval, a config change half-way.
    let shared = Arc::new(Shared::default());
    let (pace_tx, pace_rx) = watch::channel(Pace::Server);
    let start_ms = now_ms();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(agent(i, n, c, shared.clone(), pace_rx.clone())))
        .collect();
    let meter = Meter::start(&mut server, &shared)?;
    tokio::time::sleep(opts.steady / 2).await;
    let body = format!("[flow]\nrollout = {}", now_ms());
    let t_push = Instant::now();
    let version: u64 = server
        .ask(&format!("config {}", body.replace('\n', "\\n")))?
        .trim_start_matches("version ")
        .parse()?;
    let mut seen_all = None;
    let mut committed_all = None;
    while committed_all.is_none() || seen_all.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if seen_all.is_none() && shared.holding.load(Ordering::Acquire) >= n {
            seen_all = Some(t_push.elapsed());
        }
        if committed_all.is_none() && server.stats(version, 0)?.at_version >= n {
            committed_all = Some(t_push.elapsed());
        }
        if t_push.elapsed() > Duration::from_secs(120) {
            return Err("the config change did not reach every agent in 2 minutes".into());
        }
    }
    let left = (opts.steady / 2).saturating_sub(t_push.elapsed());
    tokio::time::sleep(left).await;
    let steady = meter.finish(&mut server, &shared)?;
    let st = server.stats(version, start_ms)?;
    let (seen_all, committed_all) = (seen_all.unwrap(), committed_all.unwrap());
    println!(
        "steady ({:.0} s at the agent's default 10 s interval): {:.0} beats/s, p50 {:.2} ms \
         p99 {:.2} ms max {:.1} ms; server CPU {:.3} s per 1,000 beats ({:.1}% of a core); \
         agents' CPU {:.1} s; {:.2} Raft entries/s; server RSS {:.0} MiB (peak {:.0} MiB)",
        steady.secs,
        steady.rate(),
        steady.p50_ms,
        steady.p99_ms,
        steady.max_ms,
        steady.cpu_per_1k(),
        steady.server_cpu_s / steady.secs * 100.0,
        steady.agents_cpu_s,
        steady.raft_entries as f64 / steady.secs,
        steady.rss_mib,
        server.usage().peak_rss_mib,
    );
    println!(
        "config change: version {version} held by all {n} agents after {:.1} s, their \
         reports committed after {:.1} s",
        seen_all.as_secs_f64(),
        committed_all.as_secs_f64()
    );
    println!(
        "metadata: {} agents, {} active, {} lost, {} beat since the start; {} beat errors",
        st.agents,
        st.active,
        st.lost,
        st.beat_since,
        shared.errors.load(Ordering::Relaxed)
    );

    // Rate steps: how far one node goes before latency climbs.
    let limit_ms = (steady.p99_ms * 4.0).max(20.0);
    println!(
        "rate steps ({:.0} s each; sustained = >=95% of the rate and p99 < {limit_ms:.1} ms):",
        opts.phase.as_secs_f64()
    );
    println!(
        "  {:>8} {:>10} {:>9} {:>9} {:>13} {:>10} {:>9}",
        "asked/s", "achieved/s", "p50 ms", "p99 ms", "CPU s/1k", "server %", "Raft e/s"
    );
    let mut sustained = None;
    for rate in &opts.rates {
        let every = Duration::from_secs_f64(n as f64 / *rate as f64);
        pace_tx.send_replace(Pace::Every(every));
        // Let the fleet settle into the new pace before measuring.
        tokio::time::sleep(every.min(Duration::from_secs(2))).await;
        let meter = Meter::start(&mut server, &shared)?;
        tokio::time::sleep(opts.phase).await;
        let w = meter.finish(&mut server, &shared)?;
        let ok = w.rate() >= 0.95 * *rate as f64 && w.p99_ms < limit_ms;
        println!(
            "  {rate:>8} {:>10.0} {:>9.2} {:>9.2} {:>13.3} {:>9.0}% {:>9.2}{}",
            w.rate(),
            w.p50_ms,
            w.p99_ms,
            w.cpu_per_1k(),
            w.server_cpu_s / w.secs * 100.0,
            w.raft_entries as f64 / w.secs,
            if ok { "" } else { "  <- latency climbs / rate not reached" }
        );
        if ok {
            sustained = Some(w.rate());
        } else {
            break;
        }
    }
    match sustained {
        Some(r) => println!("max sustained: {r:.0} beats/s on one node"),
        None => println!("max sustained: below the first step"),
    }
    pace_tx.send_replace(Pace::Stop);
    for t in tasks {
        let _ = t.await;
    }
    println!("server RSS at the end: {:.0} MiB", server.usage().rss_mib);
    server.stop()
}
