//! fathom-server: one node of a fathom cluster: cluster membership and
//! replicated metadata, fleet administration, ingest of agent data, storage
//! (embedded ClickHouse or a ClickHouse server) and the SQL query API. With no
//! configuration it is a one-node cluster.

mod admin;
mod cluster_node;
mod config;
mod control;
mod placement;
mod settings;

use std::future::IntoFuture;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use config::{ServerConfig, KEYS_HELP};
use fathom_ingest::RunningIngest;
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

fn run(cfg: ServerConfig) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let cluster_cfg = cluster_node::cluster_config(&cfg)?;
    let cluster = rt
        .block_on(fathom_cluster::Cluster::start(cluster_cfg))
        .map_err(|e| format!("cluster: {e}"))?;
    let placement = {
        let _in_runtime = rt.enter();
        placement::spawn(cluster.meta.clone(), cluster.membership.clone())
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let routes = admin::admin_routes(cluster.meta.clone(), cluster.membership.clone());
    let control = rt.spawn(control::serve(cfg.control.listen.clone(), routes, stopped()));
    let store = match rt.block_on(open_store(&cfg)) {
        Ok(s) => s,
        Err(e) => {
            rt.block_on(stop_cluster(cluster, placement));
            return Err(e);
        }
    };
    // Ingest runs its own runtime and writer threads.
    let ingest = match RunningIngest::start(&cfg.ingest, store.clone()) {
        Ok(i) => i,
        Err(e) => {
            rt.block_on(stop_cluster(cluster, placement));
            return Err(e);
        }
    };
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&cfg.query.listen)
            .await
            .map_err(|e| format!("cannot listen on {} for queries: {e}", cfg.query.listen))?;
        let stats = ingest.shared_stats();
        let app = fathom_query::api::router(store.clone()).route(
            "/metrics",
            axum::routing::get(move || {
                let stats = stats.clone();
                async move {
                    let mut out = String::with_capacity(2048);
                    stats.render_metrics(&mut out);
                    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
                }
            }),
        );
        tracing::info!(
            node = cfg.cluster.node_id,
            ingest = %ingest.local_addr(),
            query = %cfg.query.listen,
            control = %cfg.control.listen,
            backend = %cfg.store.backend,
            "fathom-server ready"
        );
        let query = axum::serve(listener, app).with_graceful_shutdown(stopped()).into_future();
        let mut query = tokio::spawn(query);
        let mut control = control;
        let joined = |r: Result<Result<(), String>, tokio::task::JoinError>, what: &str| match r {
            Ok(r) => r,
            Err(e) => Err(format!("{what}: {e}")),
        };
        // Until a signal, or until a server fails (then stop the rest and say why).
        let mut result = tokio::select! {
            _ = shutdown_signal() => Ok(()),
            r = &mut control => joined(r, "control service").and(Err("control service stopped".into())),
            r = &mut query => joined(r.map(|r| r.map_err(|e| format!("query API: {e}"))), "query API")
                .and(Err("query API stopped".into())),
        };
        let _ = stop_tx.send(true);
        if !query.is_finished() {
            result = result.and(joined(
                query.await.map(|r| r.map_err(|e| format!("query API: {e}"))),
                "query API",
            ));
        }
        if !control.is_finished() {
            result = result.and(joined(control.await, "control service"));
        }
        tracing::info!(
            "stopping: acknowledged batches are stored; the rest stay in agents' spools"
        );
        result
    });
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
