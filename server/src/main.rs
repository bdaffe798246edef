//! fathom-server: one node of a fathom cluster: cluster membership and
//! replicated metadata, fleet administration, ingest of agent data, storage
//! (embedded ClickHouse or a ClickHouse server) and the SQL query API. With no
//! configuration it is a one-node cluster.

mod admin;
mod cluster_node;
mod config;
mod controller;
mod placement;
mod settings;
mod tag_ids;

use std::future::IntoFuture;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use config::{ServerConfig, KEYS_HELP};
use fathom_controller::{ControlError, ControlHandle, ControlPlane};
use fathom_ingest::{IngestTls, RunningIngest};
use fathom_store::{
    ClickHouseConfig, ClickHouseStore, EmbeddedConfig, EmbeddedStore, Retention, Store,
};

/// Ingest decodes and converts batches of records with a String per text
/// field: mimalloc takes their allocation rate better than glibc's malloc
/// (ingest/benches/ingest_mimalloc.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "fathom-server", version, about, after_long_help = KEYS_HELP)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, env = "FATHOM_SERVER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGINT / SIGTERM.
    Run,
    /// Print the effective configuration.
    Config,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FATHOM_SERVER_LOG")
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let cfg = match ServerConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fathom-server: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Config => {
            print!("{}", toml::to_string_pretty(&cfg).unwrap_or_default());
            Ok(())
        }
        Command::Run => run(cfg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fathom-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn open_store(cfg: &ServerConfig) -> Result<Arc<dyn Store>, String> {
    let s = &cfg.store;
    let retention = Retention {
        flow_log_days: s.flow_log_days,
        metrics_1s_days: s.metrics_1s_days,
        metrics_1m_days: s.metrics_1m_days,
    };
    match s.backend.as_str() {
        "embedded" => {
            let mut ec = EmbeddedConfig::new(&s.data_dir);
            ec.retention = retention;
            if !s.chdb_library.is_empty() {
                ec.library = Some(PathBuf::from(&s.chdb_library));
            }
            let store = EmbeddedStore::open(ec).await.map_err(|e| format!("store: {e}"))?;
            Ok(Arc::new(store))
        }
        "clickhouse" => {
            let mut cc = ClickHouseConfig::new(&s.clickhouse_url);
            cc.retention = retention;
            cc.user = (!s.clickhouse_user.is_empty()).then(|| s.clickhouse_user.clone());
            cc.password =
                (!s.clickhouse_password.is_empty()).then(|| s.clickhouse_password.clone());
            let store = ClickHouseStore::connect(cc).await.map_err(|e| format!("store: {e}"))?;
            Ok(Arc::new(store))
        }
        other => Err(format!("store.backend {other:?} is not known (use embedded or clickhouse)")),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Waits for a Raft leader, then loads the replicated cluster CA (proposing this node's
/// own on a new cluster) and records this node's certificate. A node that joins later
/// (bootstrap_expect 0) waits here until `fathomctl node add` made it a member.
async fn control_plane(
    cfg: &ServerConfig,
    meta: fathom_cluster::MetaRouter,
    membership: Arc<fathom_cluster::Membership>,
    tls: &fathom_controller::NodeTls,
) -> Result<ControlPlane, String> {
    let control_cfg = controller::control_config(cfg)?;
    let mut waited = 0u32;
    loop {
        match ControlPlane::bootstrap_with_node(meta.clone(), control_cfg.clone(), tls).await {
            Ok(mut p) => {
                let membership = membership.clone();
                p.set_ingest_addrs(Arc::new(move |node| {
                    membership
                        .live_nodes()
                        .into_iter()
                        .find(|n| n.id == node)
                        .map(|n| n.ingest_addr)
                        .filter(|a| !a.is_empty())
                }));
                return Ok(p);
            }
            Err(
                e @ (ControlError::Meta(_) | ControlError::Rejected { what: "certificate", .. }),
            ) => {
                waited += 1;
                if waited == 1 || waited.is_multiple_of(10) {
                    tracing::info!(
                        "controller: waiting for a Raft leader (is a majority of controllers \
                         up, or has this node been added with `fathomctl node add`?): {e}"
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("controller: {e}")),
        }
    }
}

/// The control port (agent enrollment and control, admin service) and, first, the
/// admin bundle fathomctl on this machine uses.
async fn serve_control(
    cfg: &ServerConfig,
    plane: &ControlPlane,
    cluster: &fathom_cluster::Cluster,
) -> Result<ControlHandle, String> {
    if let Some(dir) = controller::admin_dir(cfg) {
        let b = plane
            .write_admin_bundle(&dir, "admin")
            .await
            .map_err(|e| format!("admin bundle in {}: {e}", dir.display()))?;
        tracing::info!(
            "fathomctl: --ca {} --cert {} --key {}",
            b.ca.display(),
            b.cert.display(),
            b.key.display()
        );
    }
    let routes =
        admin::admin_routes(cluster.router(), cluster.membership.clone(), plane.authority());
    plane.serve(routes).await.map_err(|e| format!("control port {}: {e}", cfg.controller.listen))
}

fn run(cfg: ServerConfig) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let cluster_cfg = cluster_node::cluster_config(&cfg)?;
    // The Raft port is mTLS with node certificates from the local CA directory.
    let tls = controller::node_tls(&cfg)?;
    let raft_client = tls.raft_client().map_err(|e| format!("Raft client TLS: {e}"))?;
    let transport = fathom_cluster::network::Transport::with_tls(raft_client)
        .map_err(|e| format!("Raft client: {e}"))?;
    let raft_server = tls.raft_server().map_err(|e| format!("Raft server TLS: {e}"))?;
    let cluster = rt
        .block_on(fathom_cluster::Cluster::start_with_tls(
            cluster_cfg,
            transport,
            Some(raft_server),
        ))
        .map_err(|e| format!("cluster: {e}"))?;
    // The Raft port checks revocations from here on; the node certificate is renewed
    // while the server runs.
    tls.attach(cluster.router().global());
    let _renewal = {
        let _in_runtime = rt.enter();
        tls.spawn_renewal()
    };
    let placement = {
        let _in_runtime = rt.enter();
        placement::spawn(cluster.router(), cluster.membership.clone())
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let store = match rt.block_on(open_store(&cfg)) {
        Ok(s) => s,
        Err(e) => {
            rt.block_on(stop_cluster(cluster, placement));
            return Err(e);
        }
    };
    // The query API answers (health included) while the controller waits for a leader.
    let query = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&cfg.query.listen)
            .await
            .map_err(|e| format!("cannot listen on {} for queries: {e}", cfg.query.listen))?;
        Ok::<_, String>(listener)
    });
    let query_listener = match query {
        Ok(l) => l,
        Err(e) => {
            rt.block_on(stop_cluster(cluster, placement));
            return Err(e);
        }
    };
    let stats_slot: Arc<std::sync::OnceLock<Arc<fathom_ingest::IngestStats>>> = Default::default();
    let app = {
        let slot = stats_slot.clone();
        fathom_query::api::router(store.clone()).route(
            "/metrics",
            axum::routing::get(move || {
                let slot = slot.clone();
                async move {
                    let mut out = String::with_capacity(2048);
                    if let Some(stats) = slot.get() {
                        stats.render_metrics(&mut out);
                    }
                    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
                }
            }),
        )
    };
    let mut query =
        rt.spawn(axum::serve(query_listener, app).with_graceful_shutdown(stopped()).into_future());

    // Controller, then the control port; a signal meanwhile stops the server.
    let started = rt.block_on(async {
        let setup = async {
            let plane =
                control_plane(&cfg, cluster.router(), cluster.membership.clone(), &tls).await?;
            let control = serve_control(&cfg, &plane, &cluster).await?;
            Ok::<_, String>((plane, control))
        };
        tokio::select! {
            r = setup => r.map(Some),
            _ = shutdown_signal() => Ok(None),
        }
    });
    let (plane, control) = match started {
        Ok(Some(pc)) => pc,
        other => {
            let _ = stop_tx.send(true);
            let _ = rt.block_on(&mut query);
            rt.block_on(stop_cluster(cluster, placement));
            return other.map(|_| ());
        }
    };
    // Ingest runs its own runtime and writer threads (started outside this runtime).
    let ingest_tls = if cfg.controller.ingest_tls {
        match plane.data_server_config() {
            Ok(config) => Some(IngestTls { config, authorize: plane.agent_authorizer() }),
            Err(e) => {
                rt.block_on(async {
                    control.shutdown().await;
                    stop_cluster(cluster, placement).await
                });
                return Err(format!("ingest TLS: {e}"));
            }
        }
    } else {
        tracing::warn!(
            "controller.ingest_tls = false: the ingest port takes plain gRPC from anyone"
        );
        None
    };
    // Tag ids come from the region group, so that every ingest node of the region gives
    // a name the same id; the dictionary files of a node that upgrades keep theirs.
    let ids = Arc::new(tag_ids::ClusterIdAllocator::new(cluster.router(), rt.handle().clone()));
    let ingest = match RunningIngest::start_with_ids(&cfg.ingest, store.clone(), ingest_tls, ids) {
        Ok(i) => i,
        Err(e) => {
            rt.block_on(async {
                control.shutdown().await;
                stop_cluster(cluster, placement).await
            });
            return Err(e);
        }
    };
    let _ = stats_slot.set(ingest.shared_stats());
    tracing::info!(
        node = cfg.cluster.node_id,
        ingest = %ingest.local_addr(),
        ingest_tls = cfg.controller.ingest_tls,
        query = %cfg.query.listen,
        control = %control.local_addr(),
        backend = %cfg.store.backend,
        "fathom-server ready"
    );
    let served = rt.block_on(async {
        let joined = |r: Result<Result<(), std::io::Error>, tokio::task::JoinError>| match r {
            Ok(r) => r.map_err(|e| format!("query API: {e}")),
            Err(e) => Err(format!("query API: {e}")),
        };
        // Until a signal, or until the query API fails.
        let mut result = tokio::select! {
            _ = shutdown_signal() => Ok(()),
            r = &mut query => joined(r).and(Err("query API stopped".into())),
        };
        let _ = stop_tx.send(true);
        if !query.is_finished() {
            result = result.and(joined(query.await));
        }
        control.shutdown().await;
        tracing::info!(
            "stopping: acknowledged batches are stored; the rest stay in agents' spools"
        );
        result
    });
    drop(plane);
    rt.block_on(stop_cluster(cluster, placement));
    // Outside the async context: stopping shuts the ingest runtime down,
    // which tokio refuses (a panic) from within another runtime's task.
    ingest.stop();
    served
}

async fn stop_cluster(cluster: fathom_cluster::Cluster, placement: tokio::task::JoinHandle<()>) {
    placement.abort();
    if let Err(e) = cluster.shutdown().await {
        tracing::warn!(error = %e, "cluster shutdown");
    }
}
