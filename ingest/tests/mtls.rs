//! The agent data path over mTLS, end to end on loopback: a real one-node Raft group
//! and control plane, an ingest node requiring client certificates, and the agent's
//! sender enrolling with a one-time token, renewing its certificate mid-stream and
//! being cut off by a revoke (its data stays spooled); and following placement to another
//! ingest node when a heartbeat names it.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use fathom_cluster::state::AgentStatus;
use fathom_cluster::{MetaConfig, MetaNode};
use fathom_controller::{ControlConfig, ControlPlane};
use fathom_ingest::{IngestConfig, IngestTls, RunningIngest};
use fathom_proto::agent_data_client::AgentDataClient;
use fathom_proto::control::agent_control_client::AgentControlClient;
use fathom_proto::control::EnrollRequest;
use fathom_proto::RecordBatch;
use fathom_store::{
    AppMetricRow, Granularity, L4Row, L7Row, NetworkMetricRow, QueryResult, Store, TagRow,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Stands in for the store: the request ids of stored L7 rows.
#[derive(Default)]
struct MemStore {
    l7: Mutex<Vec<u64>>,
}

#[async_trait]
impl Store for MemStore {
    fn backend(&self) -> &'static str {
        "memory"
    }
    async fn insert_l7(&self, rows: &[L7Row]) -> fathom_store::Result<()> {
        self.l7.lock().unwrap().extend(rows.iter().map(|r| r.request_id.unwrap_or(0)));
        Ok(())
    }
    async fn insert_l4(&self, _: &[L4Row]) -> fathom_store::Result<()> {
        Ok(())
    }
    async fn insert_app_metrics(
        &self,
        _: Granularity,
        _: &[AppMetricRow],
    ) -> fathom_store::Result<()> {
        Ok(())
    }
    async fn insert_network_metrics(
        &self,
        _: Granularity,
        _: &[NetworkMetricRow],
    ) -> fathom_store::Result<()> {
        Ok(())
    }
    async fn upsert_tags(&self, _: &[TagRow]) -> fathom_store::Result<()> {
        Ok(())
    }
    async fn query(&self, _: &str) -> fathom_store::Result<QueryResult> {
        Ok(QueryResult::default())
    }
}

async fn tls_channel(url: &str, ca: &str, me: Option<(&str, &str)>) -> Option<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((c, k)) = me {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    Channel::from_shared(url.to_string()).unwrap().tls_config(tls).unwrap().connect().await.ok()
}

#[test]
fn an_enrolled_agent_sends_over_mtls_renews_and_is_cut_off_by_a_revoke() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let raft: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let (meta, plane, control) = rt.block_on(async {
        let meta =
            MetaNode::start(MetaConfig::new(1, raft, dir.path().join("meta"))).await.unwrap();
        meta.initialize(BTreeMap::from([(1, raft.to_string())])).await.unwrap();
        let cfg = ControlConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            // Renewal is due after two thirds of this: a few seconds into the test.
            agent_cert_ttl: Duration::from_secs(6),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_flush: Duration::from_millis(50),
            ..Default::default()
        };
        let plane = ControlPlane::bootstrap(meta.clone(), cfg).await.unwrap();
        let control = plane.serve(tonic::service::Routes::default()).await.unwrap();
        (meta, plane, control)
    });
    let store = Arc::new(MemStore::default());
    let icfg = IngestConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().join("ingest"),
        region: "r1".into(),
        az: "z1".into(),
        ..IngestConfig::default()
    };
    let tls = IngestTls {
        config: plane.data_server_config().unwrap(),
        authorize: plane.agent_authorizer(),
    };
    let ingest = RunningIngest::start_with(&icfg, store.clone(), Some(tls)).unwrap();
    let ingest_addr = ingest.local_addr().to_string();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, plane.ca_pem()).unwrap();
    let token =
        rt.block_on(plane.create_token("r1", "z1", "web", Duration::from_secs(600))).unwrap();

    let certs = dir.path().join("agent-certs");
    let spool = tempfile::tempdir().unwrap();
    let mut scfg = sender_config(&ingest_addr, spool.path());
    scfg.agent_id = "agent-1".into();
    scfg.control_addr = control.local_addr().to_string();
    scfg.enroll_token = token.clone();
    scfg.ca_file = ca_file.display().to_string();
    scfg.cert_dir = certs.display().to_string();
    scfg.max_backoff_ms = 100;
    let sender = fathom_agent::sender::Sender::start(scfg).unwrap();
    let h = sender.handle();
    for name in ["agent.pem", "agent.key", "ca.pem", "enrollment.json"] {
        let mode = std::fs::metadata(certs.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    let first_serial = meta.read(|s| s.agents["agent-1"].cert_serial.clone());

    for n in 1..=100 {
        h.submit(l7(n));
    }
    h.flush();
    assert!(
        wait_until(Duration::from_secs(20), || store.l7.lock().unwrap().len() == 100),
        "first 100 stored over mTLS"
    );
    assert!(
        wait_until(Duration::from_secs(20), || meta
            .read(|s| s.agents["agent-1"].status == AgentStatus::Active)),
        "heartbeats recorded"
    );

    // The certificate renews itself; the data keeps flowing on the new one.
    assert!(
        wait_until(Duration::from_secs(30), || meta
            .read(|s| s.agents["agent-1"].cert_serial != first_serial)),
        "certificate renewed"
    );
    for n in 101..=200 {
        h.submit(l7(n));
    }
    h.flush();
    assert!(
        wait_until(Duration::from_secs(20), || store.l7.lock().unwrap().len() == 200),
        "next 100 stored after renewal"
    );
    assert_eq!(h.stats().records_rejected.load(Ordering::Relaxed), 0);

    let url = format!("https://{ingest_addr}");
    rt.block_on(async {
        // No client certificate: refused at the handshake.
        if let Some(ch) = tls_channel(&url, plane.ca_pem(), None).await {
            let e = AgentDataClient::new(ch).push(RecordBatch::default()).await.unwrap_err();
            assert!(
                !matches!(e.code(), tonic::Code::InvalidArgument),
                "reached the handler: {e:?}"
            );
        }
        // Another enrolled agent cannot push as agent-1.
        let t2 = plane.create_token("r1", "z1", "web", Duration::from_secs(600)).await.unwrap();
        let (csr, key) = fathom_controller::ca::agent_csr("agent-2").unwrap();
        let ctl = tls_channel(&format!("https://{}", control.local_addr()), plane.ca_pem(), None)
            .await
            .unwrap();
        let r = AgentControlClient::new(ctl)
            .enroll(EnrollRequest {
                token: t2,
                csr_pem: csr,
                agent_id: "agent-2".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ch = tls_channel(&url, plane.ca_pem(), Some((&r.cert_pem, &key))).await.unwrap();
        let batch =
            RecordBatch { agent_id: "agent-1".into(), batch_id: 1_000_000, ..Default::default() };
        let e = AgentDataClient::new(ch).push(batch).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    });

    // Revoked: the next pushes are refused and the records stay in the spool.
    rt.block_on(plane.revoke_agent("agent-1")).unwrap();
    let errors = h.stats().send_errors.load(Ordering::Relaxed);
    for n in 201..=250 {
        h.submit(l7(n));
    }
    h.flush();
    assert!(
        wait_until(Duration::from_secs(20), || h.stats().send_errors.load(Ordering::Relaxed)
            > errors + 2),
        "pushes refused after the revoke"
    );
    assert_eq!(store.l7.lock().unwrap().len(), 200, "nothing stored after the revoke");
    assert!(!h.spool().is_empty(), "refused records are kept");

    sender.shutdown(Duration::from_millis(100));
    ingest.stop();
    rt.block_on(async {
        control.shutdown().await;
        meta.shutdown().await.unwrap();
    });
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn an_agent_placed_on_another_ingest_node_moves_its_data_channel_there() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raft: std::net::SocketAddr = free_addr().parse().unwrap();
    let (first_addr, second_addr) = (free_addr(), free_addr());
    let (meta, plane, control) = rt.block_on(async {
        let meta =
            MetaNode::start(MetaConfig::new(1, raft, dir.path().join("meta"))).await.unwrap();
        meta.initialize(BTreeMap::from([(1, raft.to_string())])).await.unwrap();
        let cfg = ControlConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ingest_addr: first_addr.clone(),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_flush: Duration::from_millis(50),
            ..Default::default()
        };
        let mut plane = ControlPlane::bootstrap(meta.clone(), cfg).await.unwrap();
        // Node 2's ingest address, as gossip tells it in the server.
        let second = second_addr.clone();
        plane.set_ingest_addrs(Arc::new(move |node| (node == 2).then(|| second.clone())));
        let control = plane.serve(tonic::service::Routes::default()).await.unwrap();
        (meta, plane, control)
    });
    let ingest_on = |addr: &str, sub: &str, store: Arc<MemStore>| {
        let icfg = IngestConfig {
            listen: addr.to_string(),
            data_dir: dir.path().join(sub),
            ..IngestConfig::default()
        };
        let tls = IngestTls {
            config: plane.data_server_config().unwrap(),
            authorize: plane.agent_authorizer(),
        };
        RunningIngest::start_with(&icfg, store, Some(tls)).unwrap()
    };
    let (first, second) = (Arc::new(MemStore::default()), Arc::new(MemStore::default()));
    let ingest1 = ingest_on(&first_addr, "ingest1", first.clone());
    let ingest2 = ingest_on(&second_addr, "ingest2", second.clone());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, plane.ca_pem()).unwrap();
    let token =
        rt.block_on(plane.create_token("r1", "z1", "web", Duration::from_secs(600))).unwrap();

    // No fixed server: the agent pushes where enrollment, then placement, sends it.
    let spool = tempfile::tempdir().unwrap();
    let mut scfg = sender_config("", spool.path());
    scfg.agent_id = "agent-1".into();
    scfg.control_addr = control.local_addr().to_string();
    scfg.enroll_token = token;
    scfg.ca_file = ca_file.display().to_string();
    scfg.cert_dir = dir.path().join("agent-certs").display().to_string();
    scfg.max_backoff_ms = 100;
    let sender = fathom_agent::sender::Sender::start(scfg).unwrap();
    let h = sender.handle();
    for n in 1..=100 {
        h.submit(l7(n));
    }
    h.flush();
    assert!(
        wait_until(Duration::from_secs(20), || first.l7.lock().unwrap().len() == 100),
        "the first 100 stored on the node enrollment named"
    );

    // Placement moves the agent to node 2; its next heartbeat says where that is.
    let mut rec = meta.read(|s| s.agents["agent-1"].clone());
    rec.ingest_node = Some(2);
    rt.block_on(meta.write(fathom_cluster::Command::UpsertAgent(rec))).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let certs = dir.path().join("agent-certs/enrollment.json");
            std::fs::read_to_string(certs).is_ok_and(|t| t.contains(&second_addr))
        }),
        "the agent learned its new ingest node"
    );
    for n in 101..=200 {
        h.submit(l7(n));
    }
    h.flush();
    assert!(
        wait_until(Duration::from_secs(20), || second.l7.lock().unwrap().len() == 100),
        "the next 100 stored on node 2"
    );
    let mut all: Vec<u64> = first.l7.lock().unwrap().clone();
    all.extend(second.l7.lock().unwrap().iter());
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>(), "every record once");

    sender.shutdown(Duration::from_millis(100));
    ingest1.stop();
    ingest2.stop();
    rt.block_on(async {
        control.shutdown().await;
        meta.shutdown().await.unwrap();
    });
}
