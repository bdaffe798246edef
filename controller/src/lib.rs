//! Agent enrollment (mTLS CA), agent registry, config push and ingest assignment.
//!
//! [`ControlPlane::bootstrap`] loads the cluster CA from the replicated metadata (making
//! it on the very first start), issues this node's certificate, and hands out the rustls
//! configurations of every port; [`ControlPlane::serve`] serves the agent control port
//! (20035): `Enroll` without a client certificate, everything else over mTLS.
//!
//! ## Why the CA key lives in the Raft metadata
//!
//! Every controller must be able to sign (enrollment and renewal keep working when any
//! node is down), so the key has to be on every controller node; Raft is the one channel
//! that already reaches exactly those nodes, in order, durably. What protects it:
//! the metadata travels only over the cluster port, which is mTLS with node
//! certificates (so only holders of a certificate from this CA can read the log or a
//! snapshot), and it rests in the node's data directory, which holds the Raft log and
//! must be as private as the node's own key (0700, owned by the server's user). Anyone
//! who can read a controller's data directory can already act as that node. The CA is
//! never sent to agents or admins: they get only its certificate. A deployment that
//! needs an offline root signs this CA with it instead (an intermediate); the code only
//! needs a key and certificate here.
//!
//! ## Certificate lifetimes
//!
//! Agent certificates live `agent_cert_ttl` (30 days by default) and agents renew over
//! their current mTLS identity once two thirds of it have passed; both certificates stay
//! valid until the old one expires, so a renewal never drops a connection or a batch.
//! Node certificates (`node_cert_ttl`, 90 days) are issued at each start and renewed
//! while the node runs, also at two thirds of their life: a new key and certificate for
//! the same identity and names is recorded in the metadata and swapped in under every
//! port's TLS config ([`tls::NodeCert`]), open connections keep theirs. Revocation is by certificate serial or by agent (all its
//! certificates) and is checked on every handshake and every RPC against the local
//! replica.
//!
//! ## How many agents one node handles
//!
//! `cargo run --release -p fathom-controller --example fleet_10k` runs the control
//! plane (one-node Raft + this service over mTLS) in a child process and 10,000
//! simulated agents against it: each enrolls with its own token and CSR, keeps one mTLS
//! connection and beats at the default interval; a pool config change is pushed half-way
//! and followed until every agent holds it and its report is committed; then the beat
//! rate is stepped up until latency climbs. It prints enrollments/s, beats/s, server
//! CPU-seconds per 1,000 beats, p50/p99 beat latency, Raft entries/s and server RSS
//! (`--agents`, `--steady-secs`, `--phase-secs`, `--rates` change the run; both
//! processes raise `RLIMIT_NOFILE` to the hard limit). `tests/fleet.rs` checks the same
//! flow with 300 agents, untimed.

pub mod ca;
pub mod service;
pub mod tls;
pub mod token;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fathom_cluster::state::IssuedCert;
use fathom_cluster::state::{Command, Response as MetaResponse};
use fathom_cluster::{MetaError, MetaNode, MetaRouter};
use fathom_proto::control::agent_control_server::AgentControlServer;
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca::{cert_info, now_ms, CaError, CertInfo, ClusterCa, Identity, Issued};
use crate::service::{ControlService, Pending};
use crate::tls::{Authority, NodeCert, Revocations, TlsIdentity};

pub const DEFAULT_CONTROL_PORT: u16 = 20035;

/// How often the leader drops records of expired certificates.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A peer certificate (DER) -> the agent id it may push as, or why it is refused (the
/// same type as `fathom_ingest::AgentAuthorizer`).
pub type AgentAuthorizer = Arc<dyn Fn(&[u8]) -> Result<String, String> + Send + Sync>;

/// A node id -> that node's ingest address (host:port), if known (e.g. from gossip).
pub type IngestAddrs = Arc<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// Settings of the control plane (the server's `[controller]` section maps onto this).
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// The agent control port.
    pub listen: SocketAddr,
    /// Names and addresses peers and agents use to reach this node (host or host:port);
    /// they become the node certificate's DNS/IP SANs. Loopback is always added.
    pub advertise: Vec<String>,
    /// The ingest address handed to enrolled agents (host:port).
    pub ingest_addr: String,
    pub ca_ttl: Duration,
    pub agent_cert_ttl: Duration,
    pub node_cert_ttl: Duration,
    pub admin_cert_ttl: Duration,
    /// How often agents are asked to beat.
    pub heartbeat_interval: Duration,
    /// Beats are written to Raft once per this interval, all agents in one entry.
    pub heartbeat_flush: Duration,
    /// An agent silent for longer than this is marked Lost.
    pub lost_after: Duration,
    pub lost_check_interval: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_CONTROL_PORT)),
            advertise: Vec::new(),
            ingest_addr: String::new(),
            ca_ttl: Duration::from_secs(10 * 365 * 86_400),
            agent_cert_ttl: Duration::from_secs(30 * 86_400),
            node_cert_ttl: Duration::from_secs(90 * 86_400),
            admin_cert_ttl: Duration::from_secs(365 * 86_400),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_flush: Duration::from_secs(1),
            lost_after: Duration::from_secs(60),
            lost_check_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    #[error("metadata rejected {what}: {reason}")]
    Rejected { what: &'static str, reason: String },
    #[error("certificates: {0}")]
    Ca(#[from] CaError),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn rejected(what: &'static str, r: MetaResponse) -> Result<MetaResponse, ControlError> {
    match r {
        MetaResponse::Rejected { reason } => Err(ControlError::Rejected { what, reason }),
        r => Ok(r),
    }
}

/// The cluster CA and this node's identity, ready to serve and to configure TLS.
pub struct ControlPlane {
    meta: MetaRouter,
    ca: Arc<ClusterCa>,
    authority: Authority,
    tls: NodeTls,
    config: ControlConfig,
    ingest_addrs: Option<IngestAddrs>,
    /// Renews `tls` when this plane issued it (not with [`Self::bootstrap_with_node`]).
    _renewal: Option<Renewal>,
}

impl ControlPlane {
    /// Loads the CA from the metadata, or makes it when the cluster has none (first
    /// start; concurrent bootstraps agree on the first one committed), and issues this
    /// node's certificate (renewed while the plane lives). Needs a Raft leader (waits for one up to the metadata's
    /// request timeout).
    pub async fn bootstrap(
        meta: impl Into<MetaRouter>,
        config: ControlConfig,
    ) -> Result<ControlPlane, ControlError> {
        Self::bootstrap_with_ca(meta, config, None).await
    }

    /// [`bootstrap`](Self::bootstrap), proposing `local` (the CA this node's Raft
    /// certificates come from, see [`NodeTls`]) instead of a new one. A cluster that
    /// already replicates a different CA is a misconfiguration and an error.
    ///
    /// The CA, admin and node certificates live in the global group; agents, tokens and
    /// agent config in this node's region group when `meta` has one.
    pub async fn bootstrap_with_ca(
        meta: impl Into<MetaRouter>,
        config: ControlConfig,
        local: Option<ClusterCa>,
    ) -> Result<ControlPlane, ControlError> {
        let meta: MetaRouter = meta.into();
        let local_pem = local.as_ref().map(|c| c.cert_pem().to_string());
        let ca = Arc::new(ensure_ca(meta.global(), config.ca_ttl, local).await?);
        if local_pem.is_some_and(|p| p != ca.cert_pem()) {
            return Err(ControlError::Rejected {
                what: "CA",
                reason: "the cluster replicates another CA than this node's".into(),
            });
        }
        let tls = NodeTls::new(ca.clone(), meta.id(), &config.advertise, config.node_cert_ttl)?;
        let renewal = Some(tls.spawn_renewal());
        Self::with_node(meta, config, ca, tls, renewal).await
    }

    /// [`bootstrap_with_ca`](Self::bootstrap_with_ca) with this node's [`NodeTls`]: its
    /// CA is proposed and its certificate (renewed by [`NodeTls::spawn_renewal`]) is the
    /// one every port presents. Attaches `tls` to the metadata.
    pub async fn bootstrap_with_node(
        meta: impl Into<MetaRouter>,
        config: ControlConfig,
        tls: &NodeTls,
    ) -> Result<ControlPlane, ControlError> {
        let meta: MetaRouter = meta.into();
        let local = ClusterCa::from_record(&tls.ca.to_record())?;
        let ca = ensure_ca(meta.global(), config.ca_ttl, Some(local)).await?;
        if ca.cert_pem() != tls.ca.cert_pem() {
            return Err(ControlError::Rejected {
                what: "CA",
                reason: "the cluster replicates another CA than this node's".into(),
            });
        }
        Self::with_node(meta, config, tls.ca.clone(), tls.clone(), None).await
    }

    async fn with_node(
        meta: MetaRouter,
        config: ControlConfig,
        ca: Arc<ClusterCa>,
        tls: NodeTls,
        renewal: Option<Renewal>,
    ) -> Result<ControlPlane, ControlError> {
        tls.attach(meta.global());
        tls.record_current().await?;
        Ok(ControlPlane {
            authority: Authority::new(meta.clone()),
            meta,
            ca,
            tls,
            config,
            ingest_addrs: None,
            _renewal: renewal,
        })
    }

    /// How heartbeats find the ingest address of the node placement assigned an agent
    /// to (agents move their data channel there). Without it heartbeats carry none.
    pub fn set_ingest_addrs(&mut self, addrs: IngestAddrs) {
        self.ingest_addrs = Some(addrs);
    }

    pub fn ca(&self) -> &Arc<ClusterCa> {
        &self.ca
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The revocation-aware check of peer certificates (also per request, see
    /// [`Authority::peer`]).
    pub fn authority(&self) -> Authority {
        self.authority.clone()
    }

    /// This node's certificate and key as presented now.
    pub fn node_identity(&self) -> TlsIdentity {
        self.tls.node.identity()
    }

    /// What every port of this node presents (renewed in place).
    pub fn node_cert(&self) -> &Arc<NodeCert> {
        &self.tls.node
    }

    /// The agent data port (20033): agent client certificates required.
    pub fn data_server_config(&self) -> Result<Arc<ServerConfig>, ControlError> {
        Ok(tls::mtls_server_config(&self.ca, &self.tls.node, self.authority(), &[b"h2"])?)
    }

    /// For the ingest data service (`fathom_ingest::IngestTls::authorize`): a peer
    /// certificate (DER) -> the agent id it may push as, refusing revoked, unknown and
    /// non-agent certificates. Checked on every push.
    pub fn agent_authorizer(&self) -> AgentAuthorizer {
        let authority = self.authority();
        Arc::new(move |der| match authority.check_der(der) {
            Ok(CertInfo { identity: Identity::Agent(id), .. }) => Ok(id),
            Ok(info) => Err(format!("{:?} is not an agent", info.identity)),
            Err(e) => Err(e.to_string()),
        })
    }

    /// An admin gRPC port: client certificates required (check `Identity::Admin` per
    /// request with [`Authority::peer`]).
    pub fn admin_server_config(&self) -> Result<Arc<ServerConfig>, ControlError> {
        self.data_server_config()
    }

    /// The cluster port (20040, HTTP/1.1): node certificates only. The `MetaNode`
    /// normally starts before a `ControlPlane` exists: use [`NodeTls::raft_server`]
    /// there.
    pub fn raft_server_config(&self) -> Result<Arc<ServerConfig>, ControlError> {
        self.tls.raft_server()
    }

    /// The client side of node-to-node calls (Raft RPC, forwarding).
    pub fn raft_client_config(&self) -> Result<ClientConfig, ControlError> {
        self.tls.raft_client()
    }

    /// A one-time enrollment token for agents of `pool` in `region`/`az`, valid for
    /// `ttl`. Returns the secret; only its hash is replicated.
    pub async fn create_token(
        &self,
        region: &str,
        az: &str,
        pool: &str,
        ttl: Duration,
    ) -> Result<String, ControlError> {
        let (secret, token) = token::new_token(region, az, pool, ttl, now_ms())
            .map_err(|e| CaError::Random(e.to_string()))?;
        rejected("token", self.meta.write(Command::CreateToken(token)).await?)?;
        Ok(secret)
    }

    /// Revokes an agent and all its certificates; every node refuses it once it applied
    /// the entry.
    pub async fn revoke_agent(&self, agent_id: &str) -> Result<(), ControlError> {
        let cmd = Command::RevokeAgent { id: agent_id.to_string() };
        rejected("revocation", self.meta.write(cmd).await?)?;
        Ok(())
    }

    /// Revokes one certificate by serial (hex), e.g. a leaked admin certificate.
    pub async fn revoke_cert(&self, serial: &str) -> Result<(), ControlError> {
        let cmd = Command::RevokeCert { serial: serial.to_string() };
        rejected("revocation", self.meta.write(cmd).await?)?;
        Ok(())
    }

    /// Issues an admin certificate and writes `ca.pem`, `<name>.pem` and `<name>.key`
    /// (0600) into `dir` (made 0700 if missing) for fathomctl. Returns the paths.
    pub async fn write_admin_bundle(
        &self,
        dir: &Path,
        name: &str,
    ) -> Result<AdminBundle, ControlError> {
        let issued = self.ca.issue_admin(name, self.config.admin_cert_ttl)?;
        record(&self.meta, &issued).await?;
        write_bundle(dir, name, self.ca.cert_pem(), &issued)
    }

    /// Serves the agent control service on `config.listen` with TLS, plus `extra_routes`
    /// (e.g. the admin service: its handlers must check the peer with
    /// [`Authority::peer`], since clients without a certificate reach this port).
    pub async fn serve(
        &self,
        extra_routes: tonic::service::Routes,
    ) -> Result<ControlHandle, ControlError> {
        let listen = self.config.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ControlError::Listen { addr: listen, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ControlError::Listen { addr: listen, source })?;
        let tls = tls::control_server_config(&self.ca, &self.tls.node, self.authority())?;
        let pending = Pending::default();
        let svc = ControlService {
            meta: self.meta.clone(),
            ca: self.ca.clone(),
            authority: self.authority(),
            config: self.config.clone(),
            pending: pending.clone(),
            ingest_addrs: self.ingest_addrs.clone(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut stop = stop_rx.clone();
        let routes = extra_routes.add_service(AgentControlServer::new(svc));
        tasks.push(tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    fathom_proto::tls::incoming(listener, tls),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                )
                .await;
            if let Err(e) = res {
                tracing::error!("controller: control service stopped: {e}");
            }
        }));
        let (meta, every, mut stop) =
            (self.meta.clone(), self.config.heartbeat_flush, stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let stopped = tokio::time::timeout(every, stop.wait_for(|s| *s)).await.is_ok();
                service::flush_beats(&meta, &pending).await;
                if stopped {
                    return;
                }
            }
        }));
        let (meta, every, mut stop) = (self.meta.clone(), self.config.lost_check_interval, stop_rx);
        let lost_after = self.config.lost_after;
        tasks.push(tokio::spawn(async move {
            let mut last_prune = tokio::time::Instant::now();
            while tokio::time::timeout(every, stop.wait_for(|s| *s)).await.is_err() {
                // Agents live in the region group: its leader marks them.
                service::mark_lost(meta.regional(), lost_after).await;
                if last_prune.elapsed() >= PRUNE_EVERY {
                    service::prune_certs(meta.global()).await;
                    if let Some(region) = meta.region_group() {
                        service::prune_certs(region).await;
                    }
                    last_prune = tokio::time::Instant::now();
                }
            }
        }));
        tracing::info!(%local_addr, "controller: serving agent control");
        Ok(ControlHandle { local_addr, stop: stop_tx, tasks })
    }
}

/// The running control service.
pub struct ControlHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving (in-flight calls finish) and flushes pending heartbeats.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A node's TLS material before the metadata is up: the CA (key included) from a
/// directory every controller node is provisioned with (`ca.pem`, `ca.key`), made on
/// the first node when missing, and a node certificate issued from it at each start and
/// renewed while the node runs. Cheap to clone (clones share the certificate).
///
/// Bootstrap order for the server:
/// 1. `let tls = NodeTls::load_or_create(&data_dir.join("ca"), node_id, &[advertise], ..)?;`
///    (copy that directory to the other controller nodes before they first start);
/// 2. `MetaNode::start_with_tls(meta_cfg, Transport::with_tls(tls.raft_client()?)?,
///    Some(tls.raft_server()?))`, then `tls.attach(&meta)` (the Raft port checks
///    revocations from then on) and `let _renewal = tls.spawn_renewal();`;
/// 3. once Raft has a leader: `ControlPlane::bootstrap_with_node(meta, cfg, &tls)`
///    replicates that CA (first one wins) so every controller signs with it, and
///    records the node certificate (renewals are recorded from then on).
#[derive(Clone)]
pub struct NodeTls {
    pub ca: Arc<ClusterCa>,
    /// What the node presents on every port.
    pub node: Arc<NodeCert>,
    /// The replica the Raft port checks node certificates against, once attached.
    pub revocations: Revocations,
    node_id: u64,
    names: Vec<String>,
    ttl: Duration,
}

/// The task renewing a node certificate ([`NodeTls::spawn_renewal`]); stops when
/// dropped.
pub struct Renewal(JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a certificate of `ttl` is presented before it is renewed: two thirds of
/// its life, which leaves a third to retry in.
pub fn renew_after(ttl: Duration) -> Duration {
    (ttl * 2 / 3).max(Duration::from_millis(100))
}

/// Pause between attempts to record a renewed certificate while there is no leader.
const RECORD_RETRY: Duration = Duration::from_secs(1);

impl NodeTls {
    pub fn load_or_create(
        dir: &Path,
        node_id: u64,
        advertise: &[String],
        ca_ttl: Duration,
        node_ttl: Duration,
    ) -> Result<NodeTls, ControlError> {
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ControlError::Io { path, source }
        };
        let ca = if cert.exists() {
            let rec = fathom_cluster::state::CaRecord {
                cert_pem: std::fs::read_to_string(&cert).map_err(io(&cert))?,
                key_pem: std::fs::read_to_string(&key).map_err(io(&key))?,
            };
            ClusterCa::from_record(&rec)?
        } else {
            let ca = ClusterCa::generate(ca_ttl)?;
            let rec = ca.to_record();
            write_files(dir, &[("ca.key", &rec.key_pem, 0o600), ("ca.pem", &rec.cert_pem, 0o644)])?;
            ca
        };
        Self::new(Arc::new(ca), node_id, advertise, node_ttl)
    }

    /// Issues this node's certificate from `ca` for `advertise` (loopback added), valid
    /// `node_ttl`, and each renewal after it alike.
    pub fn new(
        ca: Arc<ClusterCa>,
        node_id: u64,
        advertise: &[String],
        node_ttl: Duration,
    ) -> Result<NodeTls, ControlError> {
        let mut names = advertise.to_vec();
        names.extend(["127.0.0.1".to_string(), "::1".to_string(), "localhost".to_string()]);
        let node =
            NodeCert::new(TlsIdentity::from_issued(&ca.issue_node(node_id, &names, node_ttl)?)?)?;
        Ok(NodeTls { ca, node, revocations: Revocations::default(), node_id, names, ttl: node_ttl })
    }

    pub fn raft_server(&self) -> Result<Arc<ServerConfig>, ControlError> {
        Ok(tls::raft_server_config(&self.ca, &self.node, self.revocations.clone())?)
    }

    pub fn raft_client(&self) -> Result<ClientConfig, ControlError> {
        Ok(tls::raft_client_config(self.ca.cert_pem(), &self.node)?)
    }

    /// From now on the Raft port refuses node certificates revoked in `meta` (the global
    /// group), and renewals are recorded there. Only the first call counts.
    pub fn attach(&self, meta: &MetaNode) {
        self.revocations.attach(meta);
    }

    /// Records the certificate presented now in the attached metadata (so that it can be
    /// revoked by serial); nothing before [`attach`](Self::attach).
    pub async fn record_current(&self) -> Result<(), ControlError> {
        let Some(meta) = self.revocations.meta() else { return Ok(()) };
        let info = cert_info(&self.node.identity().chain[0])?;
        let cert = IssuedCert {
            subject: info.identity.subject(),
            expires_at_ms: info.not_after_ms,
            revoked: false,
        };
        let cmd = Command::RecordCert { serial: info.serial, cert };
        rejected("certificate", meta.write(cmd).await?)?;
        Ok(())
    }

    /// Issues a new certificate (new key, same identity and names) and presents it from
    /// the next handshake on. Returns its serial.
    pub fn renew(&self) -> Result<String, ControlError> {
        let issued = self.ca.issue_node(self.node_id, &self.names, self.ttl)?;
        self.node.replace(TlsIdentity::from_issued(&issued)?)?;
        Ok(issued.serial)
    }

    /// Renews the certificate at two thirds of each one's life ([`renew_after`]) and
    /// records each in the metadata once attached, retrying while there is no leader.
    pub fn spawn_renewal(&self) -> Renewal {
        let tls = self.clone();
        Renewal(tokio::spawn(async move {
            let mut wait = renew_after(tls.ttl);
            loop {
                tokio::time::sleep(wait).await;
                let serial = match tls.renew() {
                    Ok(serial) => serial,
                    Err(e) => {
                        // Issuing is local (the CA key is here); try again soon.
                        tracing::error!("controller: renewing the node certificate: {e}");
                        wait = RECORD_RETRY;
                        continue;
                    }
                };
                tracing::info!(%serial, "controller: renewed the node certificate");
                wait = renew_after(tls.ttl);
                // Recording waits for a leader: it must not hold up the next renewal.
                let recorder = tls.clone();
                tokio::spawn(async move { recorder.record_renewed(&serial).await });
            }
        }))
    }

    async fn record_renewed(&self, serial: &str) {
        // Until it is recorded or no longer presented (a later one then is).
        while self.node.serial() == serial {
            match self.record_current().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(%serial, "controller: recording the node certificate: {e}");
                    tokio::time::sleep(RECORD_RETRY).await;
                }
            }
        }
    }
}

/// Where [`ControlPlane::write_admin_bundle`] put the files.
#[derive(Clone, Debug)]
pub struct AdminBundle {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub identity: Identity,
}

async fn ensure_ca(
    meta: &MetaNode,
    ttl: Duration,
    local: Option<ClusterCa>,
) -> Result<ClusterCa, ControlError> {
    if let Some(rec) = meta.read_linearizable(|s| s.ca.clone()).await? {
        return Ok(ClusterCa::from_record(&rec)?);
    }
    let ca = match local {
        Some(ca) => ca,
        None => ClusterCa::generate(ttl)?,
    };
    match meta.write(Command::SetCa(ca.to_record())).await? {
        MetaResponse::Rejected { .. } => {
            // Another node's bootstrap won: use the committed one.
            let rec =
                meta.read_linearizable(|s| s.ca.clone()).await?.ok_or(ControlError::Rejected {
                    what: "CA",
                    reason: "set and then missing".into(),
                })?;
            Ok(ClusterCa::from_record(&rec)?)
        }
        _ => {
            tracing::info!("controller: created the cluster CA");
            Ok(ca)
        }
    }
}

async fn record(meta: &MetaRouter, issued: &Issued) -> Result<(), ControlError> {
    let cmd = Command::RecordCert { serial: issued.serial.clone(), cert: issued.record.clone() };
    rejected("certificate", meta.write(cmd).await?)?;
    Ok(())
}

fn write_bundle(
    dir: &Path,
    name: &str,
    ca_pem: &str,
    issued: &Issued,
) -> Result<AdminBundle, ControlError> {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    write_files(
        dir,
        &[
            ("ca.pem", ca_pem, 0o644),
            (&cert, &issued.cert_pem, 0o644),
            (&key, &issued.key_pem, 0o600),
        ],
    )?;
    Ok(AdminBundle {
        ca: dir.join("ca.pem"),
        cert: dir.join(cert),
        key: dir.join(key),
        identity: Identity::Admin(name.to_string()),
    })
}

/// Writes each (name, body, mode) into `dir` (made 0700 if missing), atomically.
fn write_files(dir: &Path, files: &[(&str, &str, u32)]) -> Result<(), ControlError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ControlError::Io { path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    for (name, body, mode) in files {
        let path = dir.join(name);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(*mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(body.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}
