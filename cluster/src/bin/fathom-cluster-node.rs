//! Runs one cluster node (gossip + Raft metadata) with a small JSON admin API, for
//! multi-process tests and for trying the cluster by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use fathom_cluster::node::DEFAULT_RAFT_PORT;
use fathom_cluster::{
    AdminOp, Cluster, ClusterConfig, ClusterStatus, Command, Load, MembershipConfig, MetaConfig,
    MetaState, NodeInfo, RegionGroupConfig, Response, Role,
};
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(about = "Run one fathom cluster node (gossip + Raft metadata)")]
struct Args {
    /// Raft node id (unique, non-zero).
    #[arg(long, env = "FATHOM_NODE_ID")]
    id: u64,
    #[arg(long, env = "FATHOM_REGION", default_value = "default")]
    region: String,
    #[arg(long, env = "FATHOM_AZ", default_value = "default")]
    az: String,
    /// Comma-separated: controller, ingest, query.
    #[arg(long, env = "FATHOM_ROLES", default_value = "controller,ingest,query")]
    roles: String,
    /// Raft/cluster RPC listen address.
    #[arg(long, env = "FATHOM_RAFT_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_RAFT_PORT)))]
    raft_addr: SocketAddr,
    /// Address peers use for Raft RPC (defaults to --raft-addr).
    #[arg(long, env = "FATHOM_RAFT_ADVERTISE")]
    raft_advertise: Option<String>,
    /// Gossip UDP address (also advertised to peers).
    #[arg(long, env = "FATHOM_GOSSIP_ADDR", default_value = "0.0.0.0:20041")]
    gossip_addr: SocketAddr,
    /// Comma-separated host:port gossip seeds.
    #[arg(long, env = "FATHOM_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// The region group's Raft listen address (also advertised); none = no region group,
    /// everything in the global group.
    #[arg(long, env = "FATHOM_REGION_RAFT_ADDR")]
    region_raft_addr: Option<SocketAddr>,
    /// Controllers of this region to wait for before forming the region group.
    #[arg(long, env = "FATHOM_REGION_BOOTSTRAP_EXPECT", default_value_t = 1)]
    region_bootstrap_expect: usize,
    /// Admin API (JSON over HTTP) listen address.
    #[arg(long, env = "FATHOM_API_ADDR", default_value = "127.0.0.1:20042")]
    api_addr: SocketAddr,
    #[arg(long, env = "FATHOM_DATA_DIR")]
    data_dir: PathBuf,
    /// Controller count to wait for before forming a new cluster (0: never bootstrap).
    #[arg(long, env = "FATHOM_BOOTSTRAP_EXPECT", default_value_t = 3)]
    bootstrap_expect: usize,
    #[arg(long, env = "FATHOM_SNAPSHOT_EVERY", default_value_t = 5000)]
    snapshot_every: u64,
    #[arg(long, env = "FATHOM_KEEP_LOGS", default_value_t = 1000)]
    keep_logs: u64,
    #[arg(long, env = "FATHOM_TAG_BLOCK", default_value_t = 4096)]
    tag_block: u32,
    /// Raft election timeout range in ms, "MIN-MAX" (the leader lease is MAX).
    #[arg(long, env = "FATHOM_ELECTION_TIMEOUT", default_value = "600-1200")]
    election_timeout: String,
    /// Raft heartbeat interval in ms.
    #[arg(long, env = "FATHOM_HEARTBEAT_MS", default_value_t = 200)]
    heartbeat_ms: u64,
}

type App = Arc<Cluster>;
type Res<T> = Json<Result<T, String>>;

fn res<T, E: std::fmt::Display>(r: Result<T, E>) -> Res<T> {
    Json(r.map_err(|e| e.to_string()))
}

async fn status(State(c): State<App>) -> Json<ClusterStatus> {
    Json(c.meta.status())
}

/// The region group's member (404 when this node runs none).
fn region_of(c: &Cluster) -> Result<&fathom_cluster::MetaNode, axum::http::StatusCode> {
    c.region.as_ref().ok_or(axum::http::StatusCode::NOT_FOUND)
}

async fn region_status(
    State(c): State<App>,
) -> Result<Json<ClusterStatus>, axum::http::StatusCode> {
    Ok(Json(region_of(&c)?.status()))
}

async fn region_state(
    State(c): State<App>,
    Query(q): Query<ReadQ>,
) -> Result<Res<MetaState>, axum::http::StatusCode> {
    let m = region_of(&c)?;
    Ok(if q.linearizable {
        res(m.read_linearizable(|s| s.clone()).await)
    } else {
        Json(Ok(m.read(|s| s.clone())))
    })
}

/// A write through the router: region commands to the region group, the rest global.
async fn routed_write(State(c): State<App>, Json(cmd): Json<Command>) -> Res<Response> {
    res(c.router().write(cmd).await)
}

#[derive(serde::Serialize)]
struct Gossip {
    live: Vec<NodeInfo>,
    dead: Vec<u64>,
}

async fn gossip(State(c): State<App>) -> Json<Gossip> {
    Json(Gossip { live: c.membership.live_nodes(), dead: c.membership.dead_nodes().await })
}

async fn write(State(c): State<App>, Json(cmd): Json<Command>) -> Res<Response> {
    res(c.meta.write(cmd).await)
}

#[derive(Deserialize)]
struct ReadQ {
    #[serde(default)]
    linearizable: bool,
}

async fn state(State(c): State<App>, Query(q): Query<ReadQ>) -> Res<MetaState> {
    if q.linearizable {
        res(c.meta.read_linearizable(|s| s.clone()).await)
    } else {
        Json(Ok(c.meta.read(|s| s.clone())))
    }
}

#[derive(Deserialize)]
struct TagsReq {
    tag_type: String,
    names: Vec<String>,
}

async fn tags(State(c): State<App>, Json(r): Json<TagsReq>) -> Res<Vec<u32>> {
    res(c.router().allocate_tag_ids(&r.tag_type, &r.names).await)
}

async fn admin(State(c): State<App>, Json(op): Json<AdminOp>) -> Res<()> {
    res(c.meta.admin(op).await)
}

async fn compact(State(c): State<App>) -> Res<()> {
    res(c.meta.compact().await)
}

async fn load(State(c): State<App>, Json(l): Json<Load>) -> Json<()> {
    c.membership.set_load(l).await;
    Json(())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("fathom-cluster-node: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    if a.id == 0 {
        return Err("--id must be non-zero".into());
    }
    let mut roles = Vec::new();
    for r in a.roles.split(',').filter(|r| !r.is_empty()) {
        roles.push(Role::parse(r).ok_or_else(|| format!("unknown role {r:?}"))?);
    }
    let raft_advertise = a.raft_advertise.clone().unwrap_or_else(|| a.raft_addr.to_string());
    let mut meta = MetaConfig::new(a.id, a.raft_addr, &a.data_dir);
    meta.advertise_addr = raft_advertise.clone();
    meta.snapshot_every = a.snapshot_every;
    meta.keep_logs_after_snapshot = a.keep_logs;
    meta.tag_block_size = a.tag_block;
    let (lo, hi) = a
        .election_timeout
        .split_once('-')
        .and_then(|(l, h)| Some((l.trim().parse::<u64>().ok()?, h.trim().parse::<u64>().ok()?)))
        .filter(|(l, h)| l < h && *l > a.heartbeat_ms)
        .ok_or_else(|| {
            format!(
                "--election-timeout {:?}: want MIN-MAX in ms with heartbeat < MIN < MAX",
                a.election_timeout
            )
        })?;
    meta.election_timeout_min = Duration::from_millis(lo);
    meta.election_timeout_max = Duration::from_millis(hi);
    meta.heartbeat_interval = Duration::from_millis(a.heartbeat_ms);
    let region = a.region_raft_addr.map(|addr| {
        let mut m = meta.clone();
        m.listen_addr = addr;
        m.advertise_addr = addr.to_string();
        m.data_dir = a.data_dir.join(format!("region-{}", a.region));
        RegionGroupConfig { meta: m, bootstrap_expect: a.region_bootstrap_expect }
    });
    let info = NodeInfo {
        id: a.id,
        region: a.region,
        az: a.az,
        roles,
        raft_addr: raft_advertise,
        region_raft_addr: a.region_raft_addr.map(|r| r.to_string()).unwrap_or_default(),
        api_addr: a.api_addr.to_string(),
        ingest_addr: String::new(),
        gossip_addr: a.gossip_addr,
        version: env!("CARGO_PKG_VERSION").to_string(),
        load: Load::default(),
    };
    let mut membership = MembershipConfig::new(info, a.seeds);
    membership.gossip_interval = Duration::from_millis(200);
    let cluster = Arc::new(
        Cluster::start(ClusterConfig {
            meta,
            membership,
            bootstrap_expect: a.bootstrap_expect,
            region,
        })
        .await?,
    );
    let app = Router::new()
        .route("/status", get(status))
        .route("/gossip", get(gossip))
        .route("/state", get(state))
        .route("/write", post(write))
        .route("/tags", post(tags))
        .route("/routed-write", post(routed_write))
        .route("/region/status", get(region_status))
        .route("/region/state", get(region_state))
        .route("/admin", post(admin))
        .route("/compact", post(compact))
        .route("/load", post(load))
        .with_state(cluster.clone());
    let listener = tokio::net::TcpListener::bind(a.api_addr)
        .await
        .map_err(|e| format!("admin API on {}: {e}", a.api_addr))?;
    tracing::info!(id = a.id, api = %a.api_addr, "node running");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    if let Ok(c) = Arc::try_unwrap(cluster) {
        c.shutdown().await?;
    }
    Ok(())
}
