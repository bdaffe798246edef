//! The fleet administration service (`fathom.admin.v1.Admin`) that fathomctl talks to.
//!
//! Every node serves it. Reads that must be current go through Raft's read index
//! (`read_linearizable`); cluster status and the node list answer from the local replica
//! so that they work without a leader. Writes go through `MetaNode::write`, which
//! forwards to the leader. Operator input is checked with `fathom_regions` before it
//! is written.
//!
//! [`admin_routes`] is the one entry point: the controller's control port (TLS) serves
//! these routes next to the agent control service; every call must come with an admin
//! client certificate (checked per request, revocation included), since agents and
//! clients without a certificate reach the same port to enroll.

mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fathom_cluster::state::{AgentStatus, Az, NodeRecord, Pool, Region};
use fathom_cluster::{Command, Membership, MetaError, MetaRouter, MetaState, Response};
use fathom_controller::ca::Identity;
use fathom_controller::tls::Authority;
use fathom_proto::admin::admin_server::{Admin, AdminServer};
use fathom_proto::admin::*;
use fathom_regions::{check_name, PoolSpec, Topology};
use tonic::{Request, Response as Reply, Status};

use crate::settings;

/// The admin gRPC service of this node, as routes to serve on the control port: only
/// peers with an admin certificate of the cluster CA get through.
pub fn admin_routes(
    meta: MetaRouter,
    membership: Arc<Membership>,
    authority: Authority,
) -> tonic::service::Routes {
    let admins_only = authority.interceptor(|i| matches!(i, Identity::Admin(_)));
    tonic::service::Routes::new(AdminServer::with_interceptor(
        AdminService { meta, membership },
        admins_only,
    ))
}

pub struct AdminService {
    /// Topology, nodes, settings and the CA in the global group; agents and tokens in
    /// this node's region group.
    meta: MetaRouter,
    membership: Arc<Membership>,
}

type Res<T> = Result<Reply<T>, Status>;

/// How long a read of another region's group waits for one of its nodes.
const OTHER_REGION_TIMEOUT: Duration = Duration::from_secs(3);

fn meta_status(e: MetaError) -> Status {
    match e {
        MetaError::NoLeader(_) => {
            Status::unavailable(format!("{e}; is a majority of controllers up?"))
        }
        MetaError::Rejected(r) => Status::failed_precondition(r),
        MetaError::Forward { .. } => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

impl AdminService {
    async fn read<T>(&self, f: impl FnOnce(&MetaState) -> T) -> Result<T, Status> {
        self.meta.global().read_linearizable(f).await.map_err(meta_status)
    }

    /// A current read of both groups: topology from the global one, agent counts and
    /// agent config from this node's region group.
    async fn read_both<T>(&self, f: impl FnOnce(&MetaState, &MetaState) -> T) -> Result<T, Status> {
        // Once both read indexes are applied here, the local replicas are current.
        self.read(|_| ()).await?;
        self.read_region(|_| ()).await?;
        Ok(self.meta.read_both(f))
    }

    /// A current read of this node's region group (agents, tokens).
    async fn read_region<T>(&self, f: impl FnOnce(&MetaState) -> T) -> Result<T, Status> {
        self.meta.regional().read_linearizable(f).await.map_err(meta_status)
    }

    /// Commit a command; a rule violation becomes FAILED_PRECONDITION (or NOT_FOUND).
    async fn write(&self, cmd: Command) -> Result<Response, Status> {
        match self.meta.write(cmd).await.map_err(meta_status)? {
            Response::Rejected { reason } if reason.starts_with("unknown") => {
                Err(Status::not_found(reason))
            }
            Response::Rejected { reason } => Err(Status::failed_precondition(reason)),
            r => Ok(r),
        }
    }

    async fn topology(&self) -> Result<Topology, Status> {
        self.read(|s| Topology {
            regions: s.regions.keys().cloned().collect(),
            az_region: s.azs.values().map(|a| (a.name.clone(), a.region.clone())).collect(),
            pool_az: s.pools.values().map(|p| (p.name.clone(), p.az.clone())).collect(),
        })
        .await
    }

    /// Region data across regions: this node's region group (a current read), then each
    /// other region's, read from a live node there. `region` = "" for all regions.
    /// Returns the rows and the regions that could not be read (none of their nodes
    /// answered): those are reported, not silently left out.
    async fn across_regions<T>(
        &self,
        region: &str,
        f: impl Fn(&MetaState) -> Vec<T>,
    ) -> Result<(Vec<T>, Vec<String>), Status> {
        let mine = self.meta.region_name();
        let mut rows = Vec::new();
        if region.is_empty() || mine.is_none_or(|m| m == region) {
            rows.extend(self.read_region(&f).await?);
        }
        let mut unreachable = Vec::new();
        if mine.is_some_and(|m| m != region) {
            let live = self.membership.live_nodes();
            for r in self.meta.read_other_regions(&live, region, OTHER_REGION_TIMEOUT).await {
                match r.state {
                    Ok(s) => rows.extend(f(&s)),
                    Err(e) => {
                        tracing::warn!(region = %r.region, error = %e, "admin: region not reachable");
                        unreachable.push(r.region);
                    }
                }
            }
        }
        Ok((rows, unreachable))
    }

    /// The node views; agents per node counted over this node's region group and
    /// `others` (other regions' states read for the same answer).
    fn nodes_now(&self, others: &[MetaState]) -> Vec<NodeView> {
        let status = self.meta.global().status();
        let live = self.membership.live_nodes();
        let mut per_node = HashMap::new();
        self.meta.regional().read(|s| views::count_assigned(s, &mut per_node));
        for s in others {
            views::count_assigned(s, &mut per_node);
        }
        self.meta.global().read(|s| views::nodes(s, &status, &live, &per_node))
    }

    /// Other regions' states, for counts over the whole fleet (unreachable ones left out).
    async fn other_region_states(&self) -> Vec<MetaState> {
        let live = self.membership.live_nodes();
        let reads = self.meta.read_other_regions(&live, "", OTHER_REGION_TIMEOUT).await;
        reads.into_iter().filter_map(|r| r.state.ok()).collect()
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(&self, _: Request<Empty>) -> Res<ClusterStatusReply> {
        let st = self.meta.global().status();
        // Agents: this node's replica of its region, then the other regions' groups.
        let mut others = Vec::new();
        let mut unreachable_regions = Vec::new();
        let live = self.membership.live_nodes();
        for r in self.meta.read_other_regions(&live, "", OTHER_REGION_TIMEOUT).await {
            match r.state {
                Ok(s) => others.push(s),
                Err(_) => unreachable_regions.push(r.region),
            }
        }
        let nodes = self.nodes_now(&others);
        let count = |s: &MetaState| {
            let unassigned = s
                .agents
                .values()
                .filter(|a| a.status != AgentStatus::Revoked && a.ingest_node.is_none())
                .count() as u64;
            (s.agents.len() as u64, unassigned)
        };
        let (agents, unassigned_agents) = others
            .iter()
            .map(count)
            .fold(self.meta.regional().read(count), |(a, u), (b, v)| (a + b, u + v));
        let reply = self.meta.global().read(|s| ClusterStatusReply {
            node_id: st.node_id,
            state: st.state.clone(),
            leader: st.leader.unwrap_or(0),
            term: st.term,
            voters: st.voters.clone(),
            learners: st.learners.clone(),
            last_log_index: st.last_log_index.unwrap_or(0),
            last_applied: st.last_applied.unwrap_or(0),
            nodes,
            regions: s.regions.len() as u64,
            azs: s.azs.len() as u64,
            pools: s.pools.len() as u64,
            agents,
            unassigned_agents,
            unreachable_regions,
        });
        Ok(Reply::new(reply))
    }

    async fn list_nodes(&self, _: Request<Empty>) -> Res<NodeList> {
        let others = self.other_region_states().await;
        Ok(Reply::new(NodeList { nodes: self.nodes_now(&others) }))
    }

    async fn add_node(&self, req: Request<AddNodeRequest>) -> Res<Empty> {
        let r = req.into_inner();
        if r.id == 0 {
            return Err(invalid("node id must be non-zero"));
        }
        if r.raft_addr.is_empty() {
            return Err(invalid("the node's Raft address (host:port) is required"));
        }
        let global = self.meta.global();
        global.add_learner(r.id, r.raft_addr).await.map_err(meta_status)?;
        if r.voter {
            global.promote(r.id).await.map_err(meta_status)?;
        }
        // A node of this region joins the region's group too, at the address it gossips.
        let region_addr = self
            .membership
            .live_nodes()
            .into_iter()
            .find(|n| n.id == r.id && Some(n.region.as_str()) == self.meta.region_name())
            .map(|n| n.region_raft_addr)
            .filter(|a| !a.is_empty());
        if let (Some(region), Some(addr)) = (self.meta.region_group(), region_addr) {
            region.add_learner(r.id, addr).await.map_err(meta_status)?;
            if r.voter {
                region.promote(r.id).await.map_err(meta_status)?;
            }
        }
        Ok(Reply::new(Empty {}))
    }

    async fn remove_node(&self, req: Request<NodeId>) -> Res<Empty> {
        let id = req.into_inner().id;
        let st = self.meta.global().status();
        let member = st.voters.contains(&id) || st.learners.contains(&id);
        let known = self.read(|s| s.nodes.contains_key(&id)).await?;
        if !member && !known {
            return Err(Status::not_found(format!("no node {id} in the cluster")));
        }
        if st.voters == [id] {
            return Err(Status::failed_precondition(format!(
                "node {id} is the only voter; add another voter first"
            )));
        }
        if member {
            self.meta.global().remove(id).await.map_err(meta_status)?;
        }
        if let Some(region) = self.meta.region_group() {
            let rs = region.status();
            if (rs.voters.contains(&id) && rs.voters != [id]) || rs.learners.contains(&id) {
                region.remove(id).await.map_err(meta_status)?;
            }
        }
        // Its agents lose their node here; placement gives them a new one.
        self.write(Command::RemoveNode { id }).await?;
        Ok(Reply::new(Empty {}))
    }

    async fn drain_node(&self, req: Request<DrainRequest>) -> Res<Empty> {
        let r = req.into_inner();
        let rec: Option<NodeRecord> = self.read(|s| s.nodes.get(&r.id).cloned()).await?;
        let Some(mut rec) = rec else {
            return Err(Status::not_found(format!("no node {} in the metadata", r.id)));
        };
        rec.drained = r.drained;
        self.write(Command::UpsertNode(rec)).await?;
        Ok(Reply::new(Empty {}))
    }

    async fn list_regions(&self, _: Request<Empty>) -> Res<RegionList> {
        Ok(Reply::new(RegionList { regions: self.read_both(views::regions).await? }))
    }

    async fn create_region(&self, req: Request<CreateRegionRequest>) -> Res<Empty> {
        let r = req.into_inner();
        check_name("region", &r.name).map_err(invalid)?;
        self.write(Command::UpsertRegion(Region { name: r.name, description: r.description }))
            .await?;
        Ok(Reply::new(Empty {}))
    }

    async fn list_azs(&self, req: Request<Filter>) -> Res<AzList> {
        let f = req.into_inner();
        Ok(Reply::new(AzList { azs: self.read_both(|s, r| views::azs(s, r, &f)).await? }))
    }

    async fn create_az(&self, req: Request<CreateAzRequest>) -> Res<Empty> {
        let r = req.into_inner();
        self.topology().await?.check_az(&r.name, &r.region).map_err(invalid)?;
        self.write(Command::UpsertAz(Az { name: r.name, region: r.region })).await?;
        Ok(Reply::new(Empty {}))
    }

    async fn list_pools(&self, req: Request<Filter>) -> Res<PoolList> {
        let f = req.into_inner();
        Ok(Reply::new(PoolList { pools: self.read_both(|s, r| views::pools(s, r, &f)).await? }))
    }

    async fn create_pool(&self, req: Request<CreatePoolRequest>) -> Res<Empty> {
        let r = req.into_inner();
        let spec = PoolSpec::parse(&r.name, &r.region, &r.az, &r.kind, &r.arch, &r.kernel_range)
            .map_err(invalid)?;
        self.topology().await?.check_pool(&spec).map_err(invalid)?;
        self.write(Command::UpsertPool(Pool {
            name: spec.name,
            region: spec.region,
            az: spec.az,
            kind: spec.kind.as_str().into(),
            arch: spec.arch.as_str().into(),
            kernel_range: spec.kernel.to_string(),
        }))
        .await?;
        Ok(Reply::new(Empty {}))
    }

    async fn set_pool_config(&self, req: Request<SetPoolConfigRequest>) -> Res<PoolConfigReply> {
        let r = req.into_inner();
        // Local replica: pool config is the pool's region's, written there even when
        // the global group is out of reach.
        if !self.meta.global().read(|s| s.pools.contains_key(&r.pool)) {
            return Err(Status::not_found(format!("unknown pool {:?}", r.pool)));
        }
        if let Err(e) = r.body.parse::<toml::Table>() {
            return Err(invalid(format!("the agent config is not valid TOML: {e}")));
        }
        let version = match self
            .write(Command::SetAgentConfig { pool: r.pool.clone(), body: r.body.clone() })
            .await?
        {
            Response::ConfigVersion { version } => version,
            other => return Err(Status::internal(format!("unexpected answer {other:?}"))),
        };
        Ok(Reply::new(PoolConfigReply { pool: r.pool, version, body: r.body }))
    }

    async fn list_agents(&self, req: Request<Filter>) -> Res<AgentList> {
        let f = req.into_inner();
        if !f.status.is_empty() && views::parse_status(&f.status).is_none() {
            return Err(invalid(format!(
                "unknown agent status {:?} (use enrolled, active, lost or revoked)",
                f.status
            )));
        }
        let (agents, unreachable_regions) =
            self.across_regions(&f.region, |s| views::agents(s, &f)).await?;
        Ok(Reply::new(AgentList { agents, unreachable_regions }))
    }

    async fn get_agent(&self, req: Request<AgentId>) -> Res<AgentView> {
        let id = req.into_inner().id;
        let (found, unreachable) = self
            .across_regions("", |s| s.agents.get(&id).map(views::agent).into_iter().collect())
            .await?;
        match found.into_iter().next() {
            Some(a) => Ok(Reply::new(a)),
            None if unreachable.is_empty() => {
                Err(Status::not_found(format!("unknown agent {id:?}")))
            }
            None => Err(Status::unavailable(format!(
                "agent {id:?} is in no reachable region; not reachable: {}",
                unreachable.join(", ")
            ))),
        }
    }

    async fn revoke_agent(&self, req: Request<AgentId>) -> Res<Empty> {
        let id = req.into_inner().id;
        // The agent and all its certificates: every node refuses its pushes and calls
        // once it applied the entry.
        self.write(Command::RevokeAgent { id }).await?;
        Ok(Reply::new(Empty {}))
    }

    async fn create_token(&self, req: Request<CreateTokenRequest>) -> Res<CreateTokenReply> {
        let r = req.into_inner();
        if r.pool.is_empty() {
            return Err(invalid("a token enrolls agents into a pool: --pool is required"));
        }
        // The pool and the default lifetime from this node's replica of the global group:
        // a region cut off from the others still makes tokens (in its own group).
        let (pool, ttl_default) = self.meta.global().read(|s| {
            (s.pools.get(&r.pool).cloned(), settings::parsed::<u64>(s, settings::TOKEN_TTL))
        });
        let Some(pool) = pool else {
            return Err(Status::not_found(format!("unknown pool {:?}", r.pool)));
        };
        for (what, given, actual) in [("region", &r.region, &pool.region), ("az", &r.az, &pool.az)]
        {
            if !given.is_empty() && given != actual {
                return Err(invalid(format!(
                    "pool {:?} is in {what} {actual:?}, not {given:?}",
                    pool.name
                )));
            }
        }
        let ttl = Duration::from_secs(if r.ttl_seconds == 0 { ttl_default } else { r.ttl_seconds });
        let now = now_ms();
        let (secret, token) =
            fathom_controller::token::new_token(&pool.region, &pool.az, &pool.name, ttl, now)
                .map_err(|e| Status::internal(format!("no randomness for the secret: {e}")))?;
        self.write(Command::CreateToken(token.clone())).await?;
        Ok(Reply::new(CreateTokenReply { secret, token: Some(views::token(&token, now)) }))
    }

    async fn list_tokens(&self, req: Request<Filter>) -> Res<TokenList> {
        let f = req.into_inner();
        let now = now_ms();
        let (tokens, unreachable_regions) =
            self.across_regions(&f.region, |s| views::tokens(s, &f, now)).await?;
        Ok(Reply::new(TokenList { tokens, unreachable_regions }))
    }

    async fn revoke_token(&self, req: Request<TokenId>) -> Res<Empty> {
        let want = req.into_inner().id;
        if want.len() < 8 {
            return Err(invalid("give the token id or at least its first 8 characters"));
        }
        let ids: Vec<String> = self
            .read_region(|s| s.tokens.keys().filter(|k| k.starts_with(&want)).cloned().collect())
            .await?;
        let id = match ids.as_slice() {
            [one] => one.clone(),
            [] => return Err(Status::not_found(format!("no token id starts with {want:?}"))),
            _ => {
                return Err(invalid(format!("{} tokens start with {want:?}; give more", ids.len())))
            }
        };
        self.write(Command::RevokeToken { id }).await?;
        Ok(Reply::new(Empty {}))
    }

    async fn get_config(&self, req: Request<ConfigKey>) -> Res<ConfigList> {
        let key = req.into_inner().key;
        let wanted: Vec<&settings::Setting> = if key.is_empty() {
            settings::SETTINGS.iter().collect()
        } else {
            vec![settings::find(&key).map_err(Status::not_found)?]
        };
        let entries = self
            .read(|s| {
                wanted
                    .iter()
                    .map(|w| {
                        let (value, default) = settings::get(s, w);
                        ConfigEntry {
                            key: w.key.into(),
                            value,
                            description: w.description.into(),
                            default,
                        }
                    })
                    .collect()
            })
            .await?;
        Ok(Reply::new(ConfigList { entries }))
    }

    async fn set_config(&self, req: Request<ConfigEntry>) -> Res<Empty> {
        let e = req.into_inner();
        let stored = settings::check(&e.key, &e.value).map_err(invalid)?;
        self.write(Command::Put { key: stored, value: e.value.trim().to_string() }).await?;
        Ok(Reply::new(Empty {}))
    }
}
