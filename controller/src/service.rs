//! The `AgentControl` gRPC service: enrollment, heartbeats with config push, and
//! certificate renewal, plus the background tasks that flush heartbeats to Raft in
//! batches and mark silent agents lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fathom_cluster::state::{AgentRecord, AgentStatus, Command, Response as MetaResponse};
use fathom_cluster::{MetaError, MetaNode, MetaRouter};
use fathom_proto::control::agent_control_server::AgentControl;
use fathom_proto::control::{
    EnrollRequest, EnrollResponse, HeartbeatRequest, HeartbeatResponse, RenewRequest, RenewResponse,
};
use tonic::{Request, Response, Status};

use crate::ca::{now_ms, valid_name, CaError, ClusterCa, Issued};
use crate::tls::Authority;
use crate::token::{token_id, SECRET_PREFIX};
use crate::ControlConfig;

/// Beats and reported config versions waiting for the next flush.
#[derive(Default)]
pub(crate) struct PendingBeats {
    beats: BTreeMap<String, u64>,
    versions: BTreeMap<String, u64>,
}

pub(crate) type Pending = Arc<Mutex<PendingBeats>>;

pub(crate) fn meta_status(e: MetaError) -> Status {
    match e {
        MetaError::Rejected(r) => Status::failed_precondition(r),
        e => Status::unavailable(format!("metadata: {e}")),
    }
}

fn ca_status(e: CaError) -> Status {
    match e {
        CaError::BadCsr(_) | CaError::BadCert(_) => Status::invalid_argument(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// Write a command; a rule violation becomes `reject(reason)`.
pub(crate) async fn write(
    meta: &MetaRouter,
    cmd: Command,
    reject: fn(String) -> Status,
) -> Result<MetaResponse, Status> {
    match meta.write(cmd).await.map_err(meta_status)? {
        MetaResponse::Rejected { reason } => Err(reject(reason)),
        r => Ok(r),
    }
}

pub struct ControlService {
    pub(crate) meta: MetaRouter,
    pub(crate) ca: Arc<ClusterCa>,
    pub(crate) authority: Authority,
    pub(crate) config: ControlConfig,
    pub(crate) pending: Pending,
    pub(crate) ingest_addrs: Option<crate::IngestAddrs>,
}

impl ControlService {
    async fn record_cert(&self, issued: &Issued) -> Result<(), Status> {
        write(
            &self.meta,
            Command::RecordCert { serial: issued.serial.clone(), cert: issued.record.clone() },
            Status::permission_denied,
        )
        .await
        .map(|_| ())
    }
}

#[tonic::async_trait]
impl AgentControl for ControlService {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let r = req.into_inner();
        if !valid_name(&r.agent_id) {
            return Err(Status::invalid_argument(format!(
                "agent id {:?} must be 1..=128 of [A-Za-z0-9._-]",
                r.agent_id
            )));
        }
        if !r.token.starts_with(SECRET_PREFIX) {
            return Err(Status::permission_denied("not an enrollment token"));
        }
        let tid = token_id(&r.token);
        // Linearizable: a token made a moment ago on another node must be seen here.
        // Tokens and agents are the region group's: enrollment works while the region
        // is cut off from the others.
        let (token, existing) = self
            .meta
            .regional()
            .read_linearizable(|s| {
                (s.tokens.get(&tid).cloned(), s.agents.get(&r.agent_id).cloned())
            })
            .await
            .map_err(meta_status)?;
        let token = token.ok_or_else(|| Status::permission_denied("unknown token"))?;
        let retry = token.used_by.as_deref() == Some(r.agent_id.as_str());
        match &existing {
            Some(a) if a.status == AgentStatus::Revoked => {
                return Err(Status::permission_denied(format!("agent {:?} is revoked", a.id)))
            }
            Some(a) if !retry => {
                return Err(Status::already_exists(format!(
                    "agent {:?} is already enrolled; revoke it or choose another id",
                    a.id
                )))
            }
            _ => {}
        }
        // Sign first: a bad CSR must not burn the token.
        let issued = self
            .ca
            .sign_agent_csr(&r.csr_pem, &r.agent_id, self.config.agent_cert_ttl)
            .map_err(ca_status)?;
        let now = now_ms();
        write(
            &self.meta,
            Command::ConsumeToken { id: tid, agent: r.agent_id.clone(), now_ms: now },
            Status::permission_denied,
        )
        .await?;
        let record = AgentRecord {
            id: r.agent_id.clone(),
            host: if r.hostname.is_empty() { r.agent_id.clone() } else { r.hostname.clone() },
            pool: token.pool.clone(),
            region: token.region.clone(),
            az: token.az.clone(),
            cert_serial: issued.serial.clone(),
            status: AgentStatus::Enrolled,
            ingest_node: None,
            last_heartbeat_ms: now,
            config_version: 0,
        };
        write(&self.meta, Command::UpsertAgent(record), Status::invalid_argument).await?;
        self.record_cert(&issued).await?;
        tracing::info!(agent = %r.agent_id, pool = %token.pool, serial = %issued.serial, "agent enrolled");
        Ok(Response::new(EnrollResponse {
            agent_id: r.agent_id,
            cert_pem: issued.cert_pem,
            ca_pem: self.ca.cert_pem().to_string(),
            expires_at_ms: issued.record.expires_at_ms,
            ingest_addr: self.config.ingest_addr.clone(),
            region: token.region,
            az: token.az,
            pool: token.pool,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let (id, _) = self.authority.agent(&req)?;
        let running = req.get_ref().config_version;
        let (agent, config) = self.meta.regional().read(|s| {
            let a = s.agents.get(&id).cloned();
            let c = a.as_ref().and_then(|a| s.agent_configs.get(&a.pool).cloned());
            (a, c)
        });
        let agent =
            agent.ok_or_else(|| Status::permission_denied(format!("unknown agent {id:?}")))?;
        {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.beats.insert(id.clone(), now_ms());
            if agent.config_version != running {
                p.versions.insert(id, running);
            }
        }
        let (version, body) = config.map_or((0, String::new()), |c| (c.version, c.body));
        // Where placement put the agent: it moves its data channel there.
        let ingest_addr = match (&self.ingest_addrs, agent.ingest_node) {
            (Some(addrs), Some(node)) => addrs(node).unwrap_or_default(),
            _ => String::new(),
        };
        Ok(Response::new(HeartbeatResponse {
            config_version: version,
            config_body: if version != running { body } else { String::new() },
            ingest_addr,
            interval_secs: self.config.heartbeat_interval.as_secs().max(1) as u32,
        }))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let (id, old) = self.authority.agent(&req)?;
        let issued = self
            .ca
            .sign_agent_csr(&req.get_ref().csr_pem, &id, self.config.agent_cert_ttl)
            .map_err(ca_status)?;
        self.record_cert(&issued).await?;
        tracing::info!(agent = %id, old = %old.serial, new = %issued.serial, "agent certificate renewed");
        Ok(Response::new(RenewResponse {
            cert_pem: issued.cert_pem,
            ca_pem: self.ca.cert_pem().to_string(),
            expires_at_ms: issued.record.expires_at_ms,
        }))
    }
}

/// Writes the collected beats as one Raft entry per flush (and one more for changed
/// config versions, which are rare).
pub(crate) async fn flush_beats(meta: &MetaRouter, pending: &Pending) {
    let PendingBeats { beats, versions } =
        std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
    if !beats.is_empty() {
        let beats = beats.into_iter().collect();
        if let Err(e) = meta.write(Command::AgentHeartbeats { beats }).await {
            tracing::warn!("controller: heartbeats not recorded: {e}");
        }
    }
    if !versions.is_empty() {
        let versions = versions.into_iter().collect();
        if let Err(e) = meta.write(Command::AgentConfigVersions { versions }).await {
            tracing::warn!("controller: config versions not recorded: {e}");
        }
    }
}

/// On the leader only (one writer for the whole cluster): agents silent for longer than
/// `lost_after` become Lost; their next beat makes them Active again.
pub(crate) async fn mark_lost(meta: &MetaNode, lost_after: Duration) {
    if !meta.is_leader() {
        return;
    }
    let before_ms = now_ms().saturating_sub(lost_after.as_millis() as u64);
    let any = meta.read(|s| {
        s.agents.values().any(|a| {
            matches!(a.status, AgentStatus::Active | AgentStatus::Enrolled)
                && a.last_heartbeat_ms < before_ms
        })
    });
    if any {
        if let Err(e) = meta.write(Command::MarkLost { before_ms }).await {
            tracing::warn!("controller: cannot mark lost agents: {e}");
        }
    }
}

/// On the leader: forget certificates that expired (the TLS layer refuses them anyway),
/// so the metadata does not grow with every renewal.
pub(crate) async fn prune_certs(meta: &MetaNode) {
    if !meta.is_leader() {
        return;
    }
    let now_ms = now_ms();
    if meta.read(|s| s.certs.values().any(|c| c.expires_at_ms <= now_ms)) {
        if let Err(e) = meta.write(Command::PruneCerts { now_ms }).await {
            tracing::warn!("controller: cannot prune expired certificates: {e}");
        }
    }
}
