//! [`MetaNode`]: one member of the Raft group holding the cluster metadata, with its HTTP
//! endpoint for Raft RPC, write forwarding, read-index and membership changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, InstallSnapshotError,
    RaftError,
};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use crate::log_store::FileLogStore;
use crate::network::{NetworkFactory, Transport, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use crate::sm_store::{FileStateMachine, SharedState};
use crate::state::{Command, MetaState, Response};
use crate::types::{NodeId, Raft, TypeConfig};

pub const DEFAULT_RAFT_PORT: u16 = 20040;

const PATH_WRITE: &str = "/cluster/write";
const PATH_READ_INDEX: &str = "/cluster/read-index";
const PATH_ADMIN: &str = "/cluster/admin";
const PATH_STATUS: &str = "/cluster/status";
const PATH_STATE: &str = "/cluster/state";

#[derive(Debug, Clone)]
pub struct MetaConfig {
    pub node_id: NodeId,
    /// Where the Raft/cluster HTTP endpoint listens.
    pub listen_addr: SocketAddr,
    /// How other nodes reach this one (host:port).
    pub advertise_addr: String,
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot (and purge the log behind it) every this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so that a briefly lagging follower
    /// catches up from the log rather than by snapshot.
    pub keep_logs_after_snapshot: u64,
    /// How long a write or read keeps retrying while there is no leader.
    pub request_timeout: Duration,
    /// Ids reserved per Raft entry when a node's tag block runs out.
    pub tag_block_size: u32,
}

impl MetaConfig {
    pub fn new(node_id: NodeId, listen_addr: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        MetaConfig {
            node_id,
            listen_addr,
            advertise_addr: listen_addr.to_string(),
            data_dir: data_dir.into(),
            // A follower waits out the leader's lease (election_timeout_max) plus a random
            // election timeout before it campaigns: failover takes about 2 s with these.
            heartbeat_interval: Duration::from_millis(200),
            election_timeout_min: Duration::from_millis(600),
            election_timeout_max: Duration::from_millis(1200),
            snapshot_every: 5000,
            keep_logs_after_snapshot: 1000,
            request_timeout: Duration::from_secs(15),
            tag_block_size: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("no leader elected within {0:?}")]
    NoLeader(Duration),
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("forwarding to node {node} at {addr}: {source}")]
    Forward {
        node: NodeId,
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("storage at {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("bad config: {0}")]
    Config(String),
}

/// What a leader-only endpoint answers to a node that is not (or no longer) the leader.
#[derive(Debug, Serialize, Deserialize)]
enum Remote<T> {
    Ok(T),
    NotLeader { leader: Option<(NodeId, String)> },
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminOp {
    AddLearner { id: NodeId, addr: String },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub addrs: BTreeMap<NodeId, String>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

struct Inner {
    config: MetaConfig,
    raft: Raft,
    shared: SharedState,
    transport: Transport,
    /// Unbound ids this node reserved, per tag type. Lost on restart: those ids are
    /// simply never used, which keeps "never reused" trivially true.
    tag_blocks: Mutex<HashMap<String, VecDeque<Range<u32>>>>,
    shutdown: watch::Sender<bool>,
}

/// A handle to the local Raft member. Cheap to clone.
#[derive(Clone)]
pub struct MetaNode {
    inner: Arc<Inner>,
}

/// A handle that does not keep the node alive: for what the node itself holds, such as
/// the TLS verifier of its own Raft port reading its replica.
#[derive(Clone)]
pub struct WeakMetaNode {
    inner: std::sync::Weak<Inner>,
}

impl WeakMetaNode {
    pub fn upgrade(&self) -> Option<MetaNode> {
        self.inner.upgrade().map(|inner| MetaNode { inner })
    }
}

fn raft_err(e: impl std::fmt::Display) -> MetaError {
    MetaError::Raft(e.to_string())
}

impl MetaNode {
    /// Open the on-disk state, start Raft and serve the cluster endpoint.
    pub async fn start(config: MetaConfig) -> Result<MetaNode, MetaError> {
        Self::start_with(config, Transport::plain()).await
    }

    pub async fn start_with(
        config: MetaConfig,
        transport: Transport,
    ) -> Result<MetaNode, MetaError> {
        Self::start_with_tls(config, transport, None).await
    }

    /// Serves the cluster endpoint over TLS when `server_tls` is given (pair it with a
    /// [`Transport::with_tls`] so that this node dials its peers over https too).
    pub async fn start_with_tls(
        config: MetaConfig,
        transport: Transport,
        server_tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<MetaNode, MetaError> {
        let raft_cfg = openraft::Config {
            cluster_name: "fathom".into(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.election_timeout_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_logs_after_snapshot,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MetaError::Config(e.to_string()))?;
        let storage = |source| MetaError::Storage { path: config.data_dir.clone(), source };
        let log = FileLogStore::open(&config.data_dir.join("log")).map_err(storage)?;
        let sm = FileStateMachine::open(&config.data_dir.join("sm")).map_err(storage)?;
        let shared = sm.shared.clone();
        let network = NetworkFactory { transport: transport.clone() };
        let raft = Raft::new(config.node_id, Arc::new(raft_cfg), network, log, sm)
            .await
            .map_err(raft_err)?;
        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| MetaError::Listen { addr: config.listen_addr, source })?;
        let (shutdown, mut stop) = watch::channel(false);
        let node = MetaNode {
            inner: Arc::new(Inner {
                config,
                raft,
                shared,
                transport,
                tag_blocks: Mutex::default(),
                shutdown,
            }),
        };
        let app = node.router();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match server_tls {
            None => tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                    tracing::error!(error = %e, "cluster endpoint stopped");
                }
            }),
            Some(tls) => {
                let addr = node.inner.config.listen_addr;
                let listener = crate::network::TlsListener::new(listener, tls)
                    .map_err(|source| MetaError::Listen { addr, source })?;
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await
                    {
                        tracing::error!(error = %e, "cluster endpoint stopped");
                    }
                })
            }
        };
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.inner.config.node_id
    }

    pub fn downgrade(&self) -> WeakMetaNode {
        WeakMetaNode { inner: Arc::downgrade(&self.inner) }
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Ids this node reserves per `ReserveTagIds` entry ([`MetaConfig::tag_block_size`]).
    pub fn tag_block_size(&self) -> u32 {
        self.inner.config.tag_block_size
    }

    /// Form a new cluster with these voters. Only ever called on one node, once; a node
    /// that already has state (a restart) answers Ok without changing anything.
    pub async fn initialize(&self, voters: BTreeMap<NodeId, String>) -> Result<(), MetaError> {
        let members: BTreeMap<NodeId, BasicNode> =
            voters.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(raft_err(e)),
        }
    }

    pub async fn is_initialized(&self) -> Result<bool, MetaError> {
        self.inner.raft.is_initialized().await.map_err(raft_err)
    }

    /// Read the locally applied state (may lag the leader by a heartbeat).
    pub fn read<T>(&self, f: impl FnOnce(&MetaState) -> T) -> T {
        let g = self.inner.shared.read().unwrap_or_else(|p| p.into_inner());
        f(&g.state)
    }

    /// Read with linearizability: on the leader after confirming leadership with a quorum;
    /// on a follower after applying up to the leader's read index.
    pub async fn read_linearizable<T>(
        &self,
        f: impl FnOnce(&MetaState) -> T,
    ) -> Result<T, MetaError> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        loop {
            let index = match self.inner.raft.ensure_linearizable().await {
                Ok(_) => return Ok(self.read(f)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(fwd))) => {
                    match self.leader_of(&fwd) {
                        Some((id, addr)) => {
                            self.call_leader::<(), u64>(id, &addr, PATH_READ_INDEX, &()).await
                        }
                        None => Err(None),
                    }
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => Err(None),
                Err(RaftError::Fatal(e)) => return Err(raft_err(e)),
            };
            match index {
                Ok(index) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.inner
                        .raft
                        .wait(Some(left))
                        .applied_index_at_least(Some(index), "read index")
                        .await
                        .map_err(raft_err)?;
                    return Ok(self.read(f));
                }
                Err(Some(e)) => return Err(e),
                Err(None) => self.wait_for_leader(deadline).await?,
            }
        }
    }

    /// Commit a command, forwarding it to the leader when this node is not the leader.
    /// Metadata rule violations come back as `Ok(Response::Rejected{..})`.
    pub async fn write(&self, cmd: Command) -> Result<Response, MetaError> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        loop {
            let res = match self.inner.raft.client_write(cmd.clone()).await {
                Ok(r) => return Ok(r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                    match self.leader_of(&fwd) {
                        Some((id, addr)) => {
                            self.call_leader::<_, Response>(id, &addr, PATH_WRITE, &cmd).await
                        }
                        None => Err(None),
                    }
                }
                Err(e) => return Err(raft_err(e)),
            };
            match res {
                Ok(r) => return Ok(r),
                Err(Some(e)) => return Err(e),
                Err(None) => self.wait_for_leader(deadline).await?,
            }
        }
    }

    /// Membership changes, run on the leader (forwarded there if needed).
    pub async fn admin(&self, op: AdminOp) -> Result<(), MetaError> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        loop {
            let res = match self.admin_local(op.clone()).await {
                Remote::Ok(()) => return Ok(()),
                Remote::Failed(e) => return Err(MetaError::Raft(e)),
                Remote::NotLeader { leader: Some((id, addr)) } if id != self.id() => {
                    self.call_leader::<_, ()>(id, &addr, PATH_ADMIN, &op).await
                }
                Remote::NotLeader { .. } => Err(None),
            };
            match res {
                Ok(()) => return Ok(()),
                Err(Some(e)) => return Err(e),
                Err(None) => self.wait_for_leader(deadline).await?,
            }
        }
    }

    /// Add a non-voting member; returns once it has caught up with the log.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), MetaError> {
        self.admin(AdminOp::AddLearner { id, addr }).await
    }

    pub async fn promote(&self, id: NodeId) -> Result<(), MetaError> {
        self.admin(AdminOp::Promote { id }).await
    }

    pub async fn remove(&self, id: NodeId) -> Result<(), MetaError> {
        self.admin(AdminOp::Remove { id }).await
    }

    pub fn status(&self) -> ClusterStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        ClusterStatus {
            node_id: m.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            voters: mem.voter_ids().collect(),
            learners: mem.learner_ids().collect(),
            addrs: mem.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    /// Build a snapshot now and purge the log behind it, as the snapshot policy would.
    pub async fn compact(&self) -> Result<(), MetaError> {
        let raft = &self.inner.raft;
        let Some(applied) = raft.metrics().borrow().last_applied.map(|l| l.index) else {
            return Ok(());
        };
        raft.trigger().snapshot().await.map_err(raft_err)?;
        raft.wait(Some(self.inner.config.request_timeout))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "snapshot built")
            .await
            .map_err(raft_err)?;
        raft.trigger().purge_log(applied).await.map_err(raft_err)
    }

    /// Map tag names to their SmartEncoding ids, assigning fresh ids to new names.
    ///
    /// Known names are answered from the local replica with no Raft round trip. New names
    /// take ids from this node's reserved block (one `ReserveTagIds` entry per
    /// `tag_block_size` ids) and are bound in one `BindTags` entry per call, whatever the
    /// batch size. When two nodes race on a name, the first binding wins everywhere and
    /// the loser's id is retired: an id is never bound to two names.
    pub async fn allocate_tag_ids(
        &self,
        tag_type: &str,
        names: &[String],
    ) -> Result<Vec<u32>, MetaError> {
        let mut out = vec![0u32; names.len()];
        let mut missing: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        self.read(|s| {
            let dict = s.tags.get(tag_type);
            for (i, n) in names.iter().enumerate() {
                match dict.and_then(|d| d.by_name.get(n)) {
                    Some(id) => out[i] = *id,
                    None => missing.entry(n.as_str()).or_default().push(i),
                }
            }
        });
        if missing.is_empty() {
            return Ok(out);
        }
        // One allocation at a time per node: blocks are handed out in order, and the
        // lock is held only across this node's own Raft writes.
        let mut blocks = self.inner.tag_blocks.lock().await;
        // A concurrent call may have bound some of these names while this one waited.
        self.read(|s| {
            let Some(dict) = s.tags.get(tag_type) else { return };
            missing.retain(|name, positions| match dict.by_name.get(*name) {
                Some(id) => {
                    positions.iter().for_each(|&i| out[i] = *id);
                    false
                }
                None => true,
            });
        });
        if missing.is_empty() {
            return Ok(out);
        }
        let free = blocks.entry(tag_type.to_string()).or_default();
        let need = missing.len() as u64;
        while free.iter().map(|r| (r.end - r.start) as u64).sum::<u64>() < need {
            let count = need.max(self.inner.config.tag_block_size as u64);
            let count = u32::try_from(count)
                .map_err(|_| MetaError::Rejected(format!("batch of {need} names is too large")))?;
            match self
                .write(Command::ReserveTagIds {
                    tag_type: tag_type.to_string(),
                    node: self.id(),
                    count,
                })
                .await?
            {
                Response::TagBlock { start, end } => free.push_back(start..end),
                Response::Rejected { reason } => return Err(MetaError::Rejected(reason)),
                other => return Err(MetaError::Raft(format!("unexpected answer {other:?}"))),
            }
        }
        let mut pairs = Vec::with_capacity(missing.len());
        for name in missing.keys() {
            let r = free.front_mut().expect("enough free ids were reserved above");
            pairs.push((name.to_string(), r.start));
            r.start += 1;
            if r.start == r.end {
                free.pop_front();
            }
        }
        let bound = self
            .write(Command::BindTags { tag_type: tag_type.to_string(), node: self.id(), pairs })
            .await?;
        let ids = match bound {
            Response::TagIds { ids } if ids.len() == missing.len() => ids,
            Response::Rejected { reason } => return Err(MetaError::Rejected(reason)),
            other => return Err(MetaError::Raft(format!("unexpected answer {other:?}"))),
        };
        for (positions, id) in missing.values().zip(ids) {
            for &i in positions {
                out[i] = id;
            }
        }
        Ok(out)
    }

    /// A current copy of the state of the group whose member listens at `addr` (another
    /// group: e.g. another region's, for admin reads that span regions), over this node's
    /// transport (its certificate gets it in). Gives up after `timeout`.
    pub async fn read_remote(&self, addr: &str, timeout: Duration) -> Result<MetaState, MetaError> {
        let t = &self.inner.transport;
        match t.post::<(), Remote<MetaState>>(addr, PATH_STATE, &(), timeout).await {
            Ok(Remote::Ok(s)) => Ok(s),
            Ok(Remote::Failed(e)) => Err(MetaError::Raft(e)),
            Ok(Remote::NotLeader { .. }) => Err(MetaError::Raft("no answer".into())),
            Err(source) => Err(MetaError::Forward { node: 0, addr: addr.into(), source }),
        }
    }

    /// Stop Raft and the endpoint. The on-disk state stays for the next start.
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        let _ = self.inner.shutdown.send(true);
        self.inner.raft.shutdown().await.map_err(raft_err)
    }

    fn leader_of(&self, fwd: &ForwardToLeader<NodeId, BasicNode>) -> Option<(NodeId, String)> {
        match (fwd.leader_id, &fwd.leader_node) {
            (Some(id), Some(n)) if id != self.id() => Some((id, n.addr.clone())),
            _ => None,
        }
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Result<(), MetaError> {
        if Instant::now() >= deadline {
            return Err(MetaError::NoLeader(self.inner.config.request_timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    /// Call a leader-only endpoint. `Err(None)` means "retry once a leader is known":
    /// the target was not the leader, or could not be connected to (so nothing was sent).
    async fn call_leader<B: Serialize, R: for<'de> Deserialize<'de>>(
        &self,
        id: NodeId,
        addr: &str,
        path: &str,
        body: &B,
    ) -> Result<R, Option<MetaError>> {
        let t = &self.inner.transport;
        match t.post::<B, Remote<R>>(addr, path, body, self.inner.config.request_timeout).await {
            Ok(Remote::Ok(r)) => Ok(r),
            Ok(Remote::NotLeader { .. }) => Err(None),
            Ok(Remote::Failed(e)) => Err(Some(MetaError::Raft(e))),
            Err(e) if e.is_connect() => Err(None),
            Err(source) => Err(Some(MetaError::Forward { node: id, addr: addr.into(), source })),
        }
    }

    fn not_leader<T>(&self, fwd: ForwardToLeader<NodeId, BasicNode>) -> Remote<T> {
        Remote::NotLeader { leader: fwd.leader_id.zip(fwd.leader_node.map(|n| n.addr)) }
    }

    async fn write_local(&self, cmd: Command) -> Remote<Response> {
        match self.inner.raft.client_write(cmd).await {
            Ok(r) => Remote::Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => self.not_leader(f),
            Err(e) => Remote::Failed(e.to_string()),
        }
    }

    async fn read_index_local(&self) -> Remote<u64> {
        match self.inner.raft.ensure_linearizable().await {
            Ok(l) => Remote::Ok(l.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => self.not_leader(f),
            Err(e) => Remote::Failed(e.to_string()),
        }
    }

    async fn admin_local(&self, op: AdminOp) -> Remote<()> {
        let raft = &self.inner.raft;
        let res = match op {
            AdminOp::AddLearner { id, addr } => {
                raft.add_learner(id, BasicNode { addr }, true).await.map(|_| ())
            }
            AdminOp::Promote { id } => raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map(|_| ()),
            AdminOp::Remove { id } => {
                let is_voter = raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == id);
                let change = if is_voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                raft.change_membership(change, false).await.map(|_| ())
            }
        };
        match res {
            Ok(()) => Remote::Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => self.not_leader(f),
            Err(e) => Remote::Failed(e.to_string()),
        }
    }

    fn router(&self) -> Router {
        Router::new()
            .route(PATH_APPEND, post(append))
            .route(PATH_VOTE, post(vote))
            .route(PATH_SNAPSHOT, post(snapshot))
            .route(PATH_WRITE, post(write))
            .route(PATH_READ_INDEX, post(read_index))
            .route(PATH_ADMIN, post(admin))
            .route(PATH_STATUS, get(status))
            .route(PATH_STATE, post(state))
            .with_state(self.clone())
    }

    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }
}

type Rpc<T, E = openraft::error::Infallible> = Json<Result<T, RaftError<NodeId, E>>>;

async fn append(
    State(n): State<MetaNode>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Rpc<AppendEntriesResponse<NodeId>> {
    Json(n.inner.raft.append_entries(req).await)
}

async fn vote(
    State(n): State<MetaNode>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Rpc<VoteResponse<NodeId>> {
    Json(n.inner.raft.vote(req).await)
}

async fn snapshot(
    State(n): State<MetaNode>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Rpc<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
    Json(n.inner.raft.install_snapshot(req).await)
}

async fn write(State(n): State<MetaNode>, Json(cmd): Json<Command>) -> Json<Remote<Response>> {
    Json(n.write_local(cmd).await)
}

async fn read_index(State(n): State<MetaNode>) -> Json<Remote<u64>> {
    Json(n.read_index_local().await)
}

async fn admin(State(n): State<MetaNode>, Json(op): Json<AdminOp>) -> Json<Remote<()>> {
    Json(n.admin_local(op).await)
}

async fn state(State(n): State<MetaNode>) -> Json<Remote<MetaState>> {
    Json(match n.read_linearizable(|s| s.clone()).await {
        Ok(s) => Remote::Ok(s),
        Err(e) => Remote::Failed(e.to_string()),
    })
}

async fn status(State(n): State<MetaNode>) -> Json<ClusterStatus> {
    Json(n.status())
}
