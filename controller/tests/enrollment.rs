//! Enrollment and mTLS over real TLS on loopback, against a real one-node Raft group:
//! only an agent with a valid token gets in, and it stays in only while it is not
//! revoked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fathom_cluster::state::{AgentStatus, Command, MetaState};
use fathom_cluster::{MetaConfig, MetaNode};
use fathom_controller::ca::{agent_csr, cert_info, ClusterCa, Identity};
use fathom_controller::{ControlConfig, ControlHandle, ControlPlane};
use fathom_proto::control::agent_control_client::AgentControlClient;
use fathom_proto::control::{EnrollRequest, EnrollResponse, HeartbeatRequest, RenewRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity as TlsId};
use tonic::Code;

struct Fixture {
    meta: MetaNode,
    plane: ControlPlane,
    control: ControlHandle,
    _dir: tempfile::TempDir,
}

async fn start(tune: impl FnOnce(&mut ControlConfig)) -> Fixture {
    start_with(tune, |_| tonic::service::Routes::default()).await
}

async fn start_with(
    tune: impl FnOnce(&mut ControlConfig),
    routes: impl FnOnce(&ControlPlane) -> tonic::service::Routes,
) -> Fixture {
    start_prepared(tune, |_| {}, routes).await
}

async fn start_prepared(
    tune: impl FnOnce(&mut ControlConfig),
    prepare: impl FnOnce(&mut ControlPlane),
    routes: impl FnOnce(&ControlPlane) -> tonic::service::Routes,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let meta = MetaNode::start(MetaConfig::new(1, addr, dir.path().join("meta"))).await.unwrap();
    meta.initialize(BTreeMap::from([(1, addr.to_string())])).await.unwrap();
    let mut cfg = ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ingest_addr: "127.0.0.1:20033".into(),
        ..Default::default()
    };
    tune(&mut cfg);
    let mut plane = ControlPlane::bootstrap(meta.clone(), cfg).await.unwrap();
    prepare(&mut plane);
    let control = plane.serve(routes(&plane)).await.unwrap();
    Fixture { meta, plane, control, _dir: dir }
}

impl Fixture {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.control.local_addr().port())
    }

    /// A client trusting the cluster CA; with `me`, presenting that certificate.
    async fn client(
        &self,
        me: Option<(&str, &str)>,
    ) -> Result<AgentControlClient<Channel>, tonic::transport::Error> {
        client(&self.url(), self.plane.ca_pem(), me).await
    }

    async fn token(&self, pool: &str, ttl: Duration) -> String {
        self.plane.create_token("r1", "z1", pool, ttl).await.unwrap()
    }

    async fn enroll(
        &self,
        token: &str,
        agent: &str,
    ) -> Result<(EnrollResponse, String), tonic::Status> {
        let (csr, key) = agent_csr(agent).unwrap();
        let mut c = self.client(None).await.unwrap();
        let r = c
            .enroll(EnrollRequest {
                token: token.into(),
                csr_pem: csr,
                agent_id: agent.into(),
                hostname: format!("{agent}.example"),
                ..Default::default()
            })
            .await?;
        Ok((r.into_inner(), key))
    }

    fn state<T>(&self, f: impl FnOnce(&MetaState) -> T) -> T {
        self.meta.read(f)
    }

    async fn stop(self) {
        self.control.shutdown().await;
        self.meta.shutdown().await.unwrap();
    }
}

async fn client(
    url: &str,
    ca_pem: &str,
    me: Option<(&str, &str)>,
) -> Result<AgentControlClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = me {
        tls = tls.identity(TlsId::from_pem(cert, key));
    }
    let ch = Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)?
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(AgentControlClient::new(ch))
}

fn beat(version: u64) -> HeartbeatRequest {
    HeartbeatRequest { config_version: version, ..Default::default() }
}

/// TLS 1.3 reports a refused client certificate after the client's side of the
/// handshake: the connect or the first call fails at the transport, never reaching a
/// handler (which would answer UNAUTHENTICATED or PERMISSION_DENIED).
async fn assert_refused_at_handshake(
    c: Result<AgentControlClient<Channel>, tonic::transport::Error>,
) {
    let Ok(mut c) = c else { return };
    let e = c.heartbeat(beat(0)).await.expect_err("the certificate was accepted");
    assert!(
        !matches!(e.code(), Code::PermissionDenied | Code::Unauthenticated | Code::Ok),
        "reached a handler: {e:?}"
    );
    eprintln!("refused at the handshake: {e}");
}

/// Polls `f` until it holds; the deadline only bounds a broken run.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_enrolls_then_heartbeats_over_mtls_and_gets_its_config() {
    let fx = start(|c| c.heartbeat_flush = Duration::from_millis(50)).await;
    let token = fx.token("web", Duration::from_secs(3600)).await;
    let (resp, key) = fx.enroll(&token, "agent-1").await.unwrap();
    assert_eq!(resp.agent_id, "agent-1");
    assert_eq!((resp.region.as_str(), resp.az.as_str(), resp.pool.as_str()), ("r1", "z1", "web"));
    assert_eq!(resp.ca_pem, fx.plane.ca_pem());
    assert_eq!(resp.ingest_addr, "127.0.0.1:20033");
    let der = &fathom_controller::ca::pem_certs(&resp.cert_pem).unwrap()[0];
    let info = cert_info(der).unwrap();
    assert_eq!(info.identity, Identity::Agent("agent-1".into()));
    let rec = fx.state(|s| s.agents["agent-1"].clone());
    assert_eq!(
        (rec.pool.as_str(), rec.status, rec.cert_serial.as_str()),
        ("web", AgentStatus::Enrolled, info.serial.as_str())
    );
    assert_eq!(
        fx.state(|s| s.tokens.values().next().unwrap().used_by.clone()),
        Some("agent-1".into())
    );

    // Without a certificate only Enroll is possible.
    let mut anon = fx.client(None).await.unwrap();
    assert_eq!(anon.heartbeat(beat(0)).await.unwrap_err().code(), Code::Unauthenticated);

    let v = match fx
        .meta
        .write(Command::SetAgentConfig { pool: "web".into(), body: "[flow]\nx = 1".into() })
        .await
        .unwrap()
    {
        fathom_cluster::Response::ConfigVersion { version } => version,
        r => panic!("{r:?}"),
    };
    let mut c = fx.client(Some((&resp.cert_pem, &key))).await.unwrap();
    let r = c.heartbeat(beat(0)).await.unwrap().into_inner();
    assert_eq!((r.config_version, r.config_body.as_str()), (v, "[flow]\nx = 1"));
    // Running the pushed version: nothing to send again.
    let r = c.heartbeat(beat(v)).await.unwrap().into_inner();
    assert_eq!((r.config_version, r.config_body.as_str()), (v, ""));
    until("beat and version recorded", || {
        fx.state(|s| {
            let a = &s.agents["agent-1"];
            a.status == AgentStatus::Active && a.config_version == v
        })
    })
    .await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_send_the_agent_to_the_ingest_node_placement_chose() {
    // Node 2's ingest address as gossip would tell it; node 3 is not known (yet).
    let addrs: fathom_controller::IngestAddrs =
        std::sync::Arc::new(|node| (node == 2).then(|| "10.0.0.2:20033".to_string()));
    let fx = start_prepared(|_| {}, |p| p.set_ingest_addrs(addrs), |_| Default::default()).await;
    let token = fx.token("web", Duration::from_secs(3600)).await;
    let (resp, key) = fx.enroll(&token, "agent-1").await.unwrap();
    let mut c = fx.client(Some((&resp.cert_pem, &key))).await.unwrap();
    // Not placed yet: no address, the agent keeps the one enrollment gave.
    assert_eq!(c.heartbeat(beat(0)).await.unwrap().into_inner().ingest_addr, "");
    for (node, want) in [(2, "10.0.0.2:20033"), (3, "")] {
        let mut rec = fx.state(|s| s.agents["agent-1"].clone());
        rec.ingest_node = Some(node);
        fx.meta.write(Command::UpsertAgent(rec)).await.unwrap();
        let r = c.heartbeat(beat(0)).await.unwrap().into_inner();
        assert_eq!(r.ingest_addr, want, "placed on node {node}");
    }
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_reused_and_forged_tokens_are_refused() {
    let fx = start(|_| {}).await;
    // Expired: a zero TTL expires as it is made.
    let expired = fx.token("web", Duration::ZERO).await;
    let e = fx.enroll(&expired, "agent-x").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("expired"), "{e:?}");

    // Reused: the second agent with the same token is refused, the first got in.
    let token = fx.token("web", Duration::from_secs(3600)).await;
    fx.enroll(&token, "agent-1").await.unwrap();
    let e = fx.enroll(&token, "agent-2").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("already used"), "{e:?}");

    // Forged: a well-formed secret nobody issued, and something that is not a token.
    let forged = fathom_controller::token::generate_secret().unwrap();
    let e = fx.enroll(&forged, "agent-3").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("unknown token"), "{e:?}");
    let e = fx.enroll("let-me-in", "agent-3").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let agents: Vec<String> = fx.state(|s| s.agents.keys().cloned().collect());
    assert_eq!(agents, vec!["agent-1".to_string()], "only the valid one got in");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_for_another_identity_is_refused_without_burning_the_token() {
    let fx = start(|_| {}).await;
    let token = fx.token("web", Duration::from_secs(3600)).await;
    let (csr, _) = agent_csr("someone-else").unwrap();
    let mut c = fx.client(None).await.unwrap();
    let e = c
        .enroll(EnrollRequest {
            token: token.clone(),
            csr_pem: csr,
            agent_id: "agent-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(fx.state(|s| s.agents.is_empty()));
    fx.enroll(&token, "agent-1").await.unwrap();
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let fx = start(|_| {}).await;
    let token = fx.token("web", Duration::from_secs(3600)).await;
    fx.enroll(&token, "agent-1").await.unwrap();
    // Same agent id, same shape of certificate, but signed by a CA the cluster never made.
    let rogue = ClusterCa::generate(Duration::from_secs(3600)).unwrap();
    let (csr, key) = agent_csr("agent-1").unwrap();
    let forged = rogue.sign_agent_csr(&csr, "agent-1", Duration::from_secs(3600)).unwrap();
    assert_refused_at_handshake(fx.client(Some((&forged.cert_pem, &key))).await).await;
    assert!(!fx.state(|s| s.certs.contains_key(&forged.serial)));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_refused_on_open_and_new_connections() {
    let fx = start(|_| {}).await;
    let t1 = fx.token("web", Duration::from_secs(3600)).await;
    let t2 = fx.token("web", Duration::from_secs(3600)).await;
    let (bad, bad_key) = fx.enroll(&t1, "agent-bad").await.unwrap();
    let (good, good_key) = fx.enroll(&t2, "agent-good").await.unwrap();
    let mut open = fx.client(Some((&bad.cert_pem, &bad_key))).await.unwrap();
    open.heartbeat(beat(0)).await.unwrap();

    fx.plane.revoke_agent("agent-bad").await.unwrap();
    assert_eq!(fx.state(|s| s.agents["agent-bad"].status), AgentStatus::Revoked);
    // The connection made before the revoke: its next call is refused.
    let e = open.heartbeat(beat(0)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("revoked"), "{e:?}");
    // A new connection is refused at the handshake.
    assert_refused_at_handshake(fx.client(Some((&bad.cert_pem, &bad_key))).await).await;
    // Re-enrolling under the revoked id is refused too, even with a fresh token.
    let t3 = fx.token("web", Duration::from_secs(3600)).await;
    assert_eq!(fx.enroll(&t3, "agent-bad").await.unwrap_err().code(), Code::PermissionDenied);
    // The other agent is untouched.
    let mut c = fx.client(Some((&good.cert_pem, &good_key))).await.unwrap();
    c.heartbeat(beat(0)).await.unwrap();
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_gives_a_new_certificate_and_both_work_until_the_old_expires() {
    let fx = start(|_| {}).await;
    let token = fx.token("web", Duration::from_secs(3600)).await;
    let (first, key1) = fx.enroll(&token, "agent-1").await.unwrap();
    let mut c1 = fx.client(Some((&first.cert_pem, &key1))).await.unwrap();
    let (csr, key2) = agent_csr("agent-1").unwrap();
    let renewed = c1.renew(RenewRequest { csr_pem: csr }).await.unwrap().into_inner();
    assert_ne!(renewed.cert_pem, first.cert_pem);
    let serial =
        |pem: &str| cert_info(&fathom_controller::ca::pem_certs(pem).unwrap()[0]).unwrap().serial;
    assert_eq!(fx.state(|s| s.agents["agent-1"].cert_serial.clone()), serial(&renewed.cert_pem));
    let mut c2 = fx.client(Some((&renewed.cert_pem, &key2))).await.unwrap();
    c2.heartbeat(beat(0)).await.unwrap();
    c1.heartbeat(beat(0)).await.unwrap();
    // A renewal cannot change identity.
    let (other, _) = agent_csr("agent-2").unwrap();
    assert_eq!(
        c2.renew(RenewRequest { csr_pem: other }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // Revoking the agent revokes both of its certificates.
    fx.plane.revoke_agent("agent-1").await.unwrap();
    assert_eq!(c1.heartbeat(beat(0)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(c2.heartbeat(beat(0)).await.unwrap_err().code(), Code::PermissionDenied);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_marked_lost_and_active_again_on_its_next_beat() {
    let fx = start(|c| {
        c.heartbeat_flush = Duration::from_millis(20);
        c.lost_after = Duration::from_millis(300);
        c.lost_check_interval = Duration::from_millis(20);
    })
    .await;
    let token = fx.token("web", Duration::from_secs(3600)).await;
    let (resp, key) = fx.enroll(&token, "agent-1").await.unwrap();
    let mut c = fx.client(Some((&resp.cert_pem, &key))).await.unwrap();
    c.heartbeat(beat(0)).await.unwrap();
    until("agent lost", || fx.state(|s| s.agents["agent-1"].status == AgentStatus::Lost)).await;
    c.heartbeat(beat(0)).await.unwrap();
    until("agent active", || fx.state(|s| s.agents["agent-1"].status == AgentStatus::Active)).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bundle_is_written_private_and_names_an_admin() {
    use std::os::unix::fs::PermissionsExt;
    let fx = start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let b = fx.plane.write_admin_bundle(&dir.path().join("admin"), "root").await.unwrap();
    let mode = std::fs::metadata(&b.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&b.cert).unwrap();
    let info = cert_info(&fathom_controller::ca::pem_certs(&pem).unwrap()[0]).unwrap();
    assert_eq!(info.identity, Identity::Admin("root".into()));
    assert_eq!(std::fs::read_to_string(&b.ca).unwrap(), fx.plane.ca_pem());
    // The CA is the replicated one: a second bootstrap on the same metadata reuses it.
    let again = ControlPlane::bootstrap(fx.meta.clone(), ControlConfig::default()).await.unwrap();
    assert_eq!(again.ca_pem(), fx.plane.ca_pem());
    fx.stop().await;
}

/// Stands in for the admin service another crate serves on the control port.
struct Echo;

#[tonic::async_trait]
impl fathom_proto::agent_data_server::AgentData for Echo {
    async fn push(
        &self,
        req: tonic::Request<fathom_proto::RecordBatch>,
    ) -> Result<tonic::Response<fathom_proto::Ack>, tonic::Status> {
        // The interceptor left the checked identity for the handler.
        let info = req.extensions().get::<fathom_controller::ca::CertInfo>().unwrap();
        assert!(matches!(info.identity, Identity::Admin(_)));
        Ok(tonic::Response::new(fathom_proto::Ack { batch_id: req.get_ref().batch_id, status: 0 }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_routes_behind_the_admin_interceptor_admit_only_admins() {
    use fathom_proto::agent_data_client::AgentDataClient;
    use fathom_proto::agent_data_server::AgentDataServer;
    let fx = start_with(
        |_| {},
        |plane| {
            let only_admins = plane.authority().interceptor(|i| matches!(i, Identity::Admin(_)));
            tonic::service::Routes::new(AgentDataServer::with_interceptor(Echo, only_admins))
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let b = fx.plane.write_admin_bundle(dir.path(), "ops").await.unwrap();
    let (cert, key) =
        (std::fs::read_to_string(&b.cert).unwrap(), std::fs::read_to_string(&b.key).unwrap());
    let token = fx.token("web", Duration::from_secs(3600)).await;
    let (agent, agent_key) = fx.enroll(&token, "agent-1").await.unwrap();
    let connect = |me: Option<(String, String)>| {
        let (url, ca) = (fx.url(), fx.plane.ca_pem().to_string());
        async move {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((c, k)) = me {
                tls = tls.identity(TlsId::from_pem(c, k));
            }
            let ch = Channel::from_shared(url)
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .unwrap();
            AgentDataClient::new(ch)
        }
    };
    let batch = fathom_proto::RecordBatch { batch_id: 7, ..Default::default() };
    let mut admin = connect(Some((cert, key))).await;
    assert_eq!(admin.push(batch.clone()).await.unwrap().into_inner().batch_id, 7);
    let mut as_agent = connect(Some((agent.cert_pem, agent_key))).await;
    assert_eq!(as_agent.push(batch.clone()).await.unwrap_err().code(), Code::PermissionDenied);
    let mut anon = connect(None).await;
    assert_eq!(anon.push(batch.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    // Revoking the admin certificate by serial cuts its open connection.
    let serial = cert_info(
        &fathom_controller::ca::pem_certs(&std::fs::read_to_string(&b.cert).unwrap()).unwrap()[0],
    )
    .unwrap()
    .serial;
    fx.meta.write(Command::RevokeCert { serial }).await.unwrap();
    assert_eq!(admin.push(batch).await.unwrap_err().code(), Code::PermissionDenied);
    fx.stop().await;
}
