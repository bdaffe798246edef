//! A fleet of a few hundred agents against the real control plane (one-node Raft,
//! mTLS on loopback): every agent enrolls with its own token and beats over its own
//! connection, every beat is recorded, a pool config change reaches all of them and
//! their reports of it are committed, and the ones that stop are marked lost while the
//! others stay active. `examples/fleet_10k.rs` is the timed version with 10,000.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fathom_cluster::state::{AgentStatus, Command, MetaState};
use fathom_cluster::{MetaConfig, MetaNode, Response};
use fathom_controller::ca::agent_csr;
use fathom_controller::{ControlConfig, ControlPlane};
use fathom_proto::control::agent_control_client::AgentControlClient;
use fathom_proto::control::{EnrollRequest, HeartbeatRequest};
use futures::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity as TlsId};

const AGENTS: usize = 300;
const STOPPED: usize = 50;
const BEAT_EVERY: Duration = Duration::from_millis(300);

async fn channel(url: &str, ca_pem: &str, me: Option<(&str, &str)>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = me {
        tls = tls.identity(TlsId::from_pem(cert, key));
    }
    Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap()
}

/// Polls `f` until it holds; the deadline only bounds a broken run.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(90), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Beats like the agent's control loop (at a fixed short period here), keeping the
/// config version pushed to it in `version`.
async fn beat_forever(mut c: AgentControlClient<Channel>, version: Arc<AtomicU64>) {
    loop {
        let running = version.load(Ordering::Acquire);
        let req = HeartbeatRequest { config_version: running, ..Default::default() };
        let r = c.heartbeat(req).await.expect("heartbeat").into_inner();
        if r.config_version != running && !r.config_body.is_empty() {
            version.store(r.config_version, Ordering::Release);
        }
        tokio::time::sleep(BEAT_EVERY).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_agents_beat_take_a_config_change_and_the_silent_ones_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let meta = MetaNode::start(MetaConfig::new(1, addr, dir.path().join("meta"))).await.unwrap();
    meta.initialize(BTreeMap::from([(1, addr.to_string())])).await.unwrap();
    let cfg = ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ingest_addr: "127.0.0.1:20033".into(),
        heartbeat_flush: Duration::from_millis(100),
        lost_after: Duration::from_secs(5),
        lost_check_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let plane = ControlPlane::bootstrap(meta.clone(), cfg).await.unwrap();
    let control = plane.serve(tonic::service::Routes::default()).await.unwrap();
    let url = format!("https://127.0.0.1:{}", control.local_addr().port());
    let ca_pem = plane.ca_pem().to_string();
    let state = |f: &dyn Fn(&MetaState) -> bool| meta.read(f);

    // Each agent: its own one-time token, key and CSR, certificate.
    let tokens: Vec<String> = futures::stream::iter(0..AGENTS)
        .map(|_| plane.create_token("r1", "z1", "fleet", Duration::from_secs(3600)))
        .buffered(32)
        .map(Result::unwrap)
        .collect()
        .await;
    let enrolled_at = fathom_controller::ca::now_ms();
    let agents: Vec<(String, String, String)> = futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| {
            let (url, ca_pem) = (&url, &ca_pem);
            async move {
                let id = format!("agent-{i:03}");
                let (csr_pem, key) = agent_csr(&id).unwrap();
                let mut c = AgentControlClient::new(channel(url, ca_pem, None).await);
                let r = c
                    .enroll(EnrollRequest {
                        token: token.clone(),
                        csr_pem,
                        agent_id: id.clone(),
                        hostname: format!("host-{i:03}"),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.pool, "fleet");
                (id, r.cert_pem, key)
            }
        })
        .buffered(32)
        .collect()
        .await;
    assert_eq!(meta.read(|s| s.agents.len()), AGENTS);
    assert!(state(&|s| s.tokens.values().all(|t| t.used_by.is_some())));

    // Every agent keeps its own mTLS connection and beats over it.
    let mut beating = Vec::new();
    for (_, cert, key) in &agents {
        let c = AgentControlClient::new(channel(&url, &ca_pem, Some((cert, key))).await);
        let version = Arc::new(AtomicU64::new(0));
        beating.push((tokio::spawn(beat_forever(c, version.clone())), version));
    }
    until("every agent's beat recorded", || {
        state(&|s| {
            s.agents
                .values()
                .all(|a| a.status == AgentStatus::Active && a.last_heartbeat_ms >= enrolled_at)
        })
    })
    .await;

    // A config change of the pool reaches every agent, and their reports are committed.
    let cmd = Command::SetAgentConfig { pool: "fleet".into(), body: "[flow]\nx = 2".into() };
    let v = match meta.write(cmd).await.unwrap() {
        Response::ConfigVersion { version } => version,
        r => panic!("{r:?}"),
    };
    until("every agent holds the new config", || {
        beating.iter().all(|(_, version)| version.load(Ordering::Acquire) == v)
    })
    .await;
    until("every agent's report of the new version committed", || {
        meta.read(|s| s.agents.values().filter(|a| a.config_version == v).count()) == AGENTS
    })
    .await;

    // Some agents stop: they, and only they, are marked lost.
    let (stopped, running) = beating.split_at(STOPPED);
    for (task, _) in stopped {
        task.abort();
    }
    let stopped_ids: Vec<&str> = agents[..STOPPED].iter().map(|a| a.0.as_str()).collect();
    until("the stopped agents marked lost", || {
        meta.read(|s| stopped_ids.iter().all(|id| s.agents[*id].status == AgentStatus::Lost))
    })
    .await;
    meta.read(|s| {
        for (id, _, _) in &agents[STOPPED..] {
            assert_eq!(s.agents[id].status, AgentStatus::Active, "{id} kept beating");
        }
        assert_eq!(s.agents.values().filter(|a| a.status == AgentStatus::Lost).count(), STOPPED);
    });
    for (task, _) in running {
        assert!(!task.is_finished(), "an agent's beats failed");
        task.abort();
    }
    control.shutdown().await;
    meta.shutdown().await.unwrap();
}
