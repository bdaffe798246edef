//! The cluster port over mTLS: two Raft nodes with certificates from the same CA
//! replicate and forward writes over https; clients without a node certificate of that
//! CA are refused at the handshake.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{free_addr, status_with};
use fathom_cluster::network::Transport;
use fathom_cluster::state::Command;
use fathom_cluster::{MetaConfig, MetaNode};
use fathom_controller::ca::{agent_csr, ClusterCa};
use fathom_controller::tls::TlsIdentity;
use fathom_controller::{ControlConfig, ControlPlane, NodeTls};
use fathom_proto::control::agent_control_client::AgentControlClient;
use fathom_proto::control::{EnrollRequest, HeartbeatRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn start(
    id: u64,
    addr: SocketAddr,
    ca_dir: &std::path::Path,
    data: &std::path::Path,
) -> (MetaNode, NodeTls) {
    let day = Duration::from_secs(86_400);
    let tls =
        NodeTls::load_or_create(ca_dir, id, &[addr.ip().to_string()], day * 365, day).unwrap();
    let transport = Transport::with_tls(tls.raft_client().unwrap()).unwrap();
    let cfg = MetaConfig::new(id, addr, data.join(format!("n{id}")));
    let meta =
        MetaNode::start_with_tls(cfg, transport, Some(tls.raft_server().unwrap())).await.unwrap();
    (meta, tls)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_replicates_over_mtls_and_refuses_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let (a1, a2) = (free_addr(), free_addr());
    let (n1, tls1) = start(1, a1, &ca_dir, dir.path()).await;
    // The second node is provisioned with the same CA directory.
    let (n2, tls2) = start(2, a2, &ca_dir, dir.path()).await;
    assert_eq!(tls1.ca.cert_pem(), tls2.ca.cert_pem());
    n1.initialize(BTreeMap::from([(1, a1.to_string())])).await.unwrap();
    // Membership changes wait for the initial membership to commit.
    until("node 1 leading", || n1.is_leader()).await;
    n1.add_learner(2, a2.to_string()).await.unwrap();
    n1.promote(2).await.unwrap();
    n1.write(Command::Put { key: "k1".into(), value: "v".into() }).await.unwrap();
    until("replicated to node 2", || n2.read(|s| s.kv.contains_key("k1"))).await;
    // A write on the follower is forwarded to the leader over https.
    let leader = if n1.is_leader() { &n2 } else { &n1 };
    leader.write(Command::Put { key: "k2".into(), value: "v".into() }).await.unwrap();
    until("forwarded write everywhere", || {
        n1.read(|s| s.kv.contains_key("k2")) && n2.read(|s| s.kv.contains_key("k2"))
    })
    .await;

    // The local CA becomes the replicated one.
    let plane = ControlPlane::bootstrap_with_node(n1.clone(), ControlConfig::default(), &tls1)
        .await
        .unwrap();
    until("CA replicated", || {
        n2.read(|s| s.ca.as_ref().map(|c| c.cert_pem.clone())) == Some(plane.ca_pem().to_string())
    })
    .await;

    // A node certificate of this CA is let in ...
    assert!(status_with(a1, plane.ca_pem(), Some(&tls2.node.identity())).await);
    // ... no certificate, an agent's certificate of this CA, and a node certificate of
    // another CA are not.
    assert!(!status_with(a1, plane.ca_pem(), None).await);
    let (csr, key) = agent_csr("agent-1").unwrap();
    let agent = plane.ca().sign_agent_csr(&csr, "agent-1", Duration::from_secs(600)).unwrap();
    let agent = TlsIdentity::from_pem(&agent.cert_pem, &key).unwrap();
    assert!(!status_with(a1, plane.ca_pem(), Some(&agent)).await);
    let rogue = ClusterCa::generate(Duration::from_secs(600)).unwrap();
    let rogue_node = TlsIdentity::from_issued(
        &rogue.issue_node(9, &["127.0.0.1".into()], Duration::from_secs(600)).unwrap(),
    )
    .unwrap();
    assert!(!status_with(a1, plane.ca_pem(), Some(&rogue_node)).await);
    // Plain HTTP gets nothing either.
    let plain = Transport::plain();
    assert!(plain.client.get(plain.url(&a1.to_string(), "/cluster/status")).send().await.is_err());

    // A revoke made through one node bites on the other as soon as it applied it: an
    // agent enrolled and beating through node 2 is refused there.
    let plane2 = ControlPlane::bootstrap(
        n2.clone(),
        ControlConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() },
    )
    .await
    .unwrap();
    assert_eq!(plane2.ca_pem(), plane.ca_pem());
    let control2 = plane2.serve(tonic::service::Routes::default()).await.unwrap();
    let url2 = format!("https://127.0.0.1:{}", control2.local_addr().port());
    let token = plane.create_token("r1", "z1", "web", Duration::from_secs(600)).await.unwrap();
    let (csr, key) = agent_csr("agent-9").unwrap();
    let mut anon = control_client(&url2, plane.ca_pem(), None).await;
    let r = anon
        .enroll(EnrollRequest {
            token,
            csr_pem: csr,
            agent_id: "agent-9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut c = control_client(&url2, plane.ca_pem(), Some((&r.cert_pem, &key))).await;
    c.heartbeat(HeartbeatRequest::default()).await.unwrap();
    plane.revoke_agent("agent-9").await.unwrap();
    until("revoke applied on node 2", || {
        n2.read(|s| s.agents["agent-9"].status == fathom_cluster::state::AgentStatus::Revoked)
    })
    .await;
    let e = c.heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    control2.shutdown().await;
    n2.shutdown().await.unwrap();
    n1.shutdown().await.unwrap();
}

async fn control_client(
    url: &str,
    ca: &str,
    me: Option<(&str, &str)>,
) -> AgentControlClient<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((c, k)) = me {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    let ch = Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    AgentControlClient::new(ch)
}
