//! fathomctl: administer a fathom cluster from the command line, kubectl-style.
//!
//! Fleet administration talks gRPC (`fathom.admin.v1`) to the control port of any
//! server node; `query` talks to the query HTTP API. Which cluster is chosen by a
//! context (see `context`), overridable by `--context`, `--server` and `--query-url`.

mod client;
mod context;
mod output;
mod query;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use fathom_proto::admin::*;
use serde_json::{json, Value};

use context::{ContextFile, Target};
use output::{print_object, print_rows, to_value, Format};

#[derive(Parser)]
#[command(
    name = "fathomctl",
    version,
    about = "Administer a fathom cluster",
    propagate_version = true
)]
struct Cli {
    /// Context (cluster) to use; default: FATHOMCTL_CONTEXT, then the file's current one.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Control (admin gRPC) address of any server node, e.g. 10.0.0.1:20035.
    #[arg(long, global = true, env = "FATHOMCTL_SERVER")]
    server: Option<String>,
    /// Query API base URL, e.g. http://10.0.0.1:20416.
    #[arg(long, global = true, env = "FATHOMCTL_QUERY_URL")]
    query_url: Option<String>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Contexts file (default: FATHOMCTL_CONFIG, else ~/.config/fathom/fathomctl.toml).
    #[arg(long, global = true)]
    config_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The cluster as the answering node sees it: Raft state, leader, nodes, counts.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Server nodes: list, add to Raft, remove, drain.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Regions.
    Region {
        #[command(subcommand)]
        cmd: RegionCmd,
    },
    /// Availability zones (each in one region).
    Az {
        #[command(subcommand)]
        cmd: AzCmd,
    },
    /// Resource pools (a K8s cluster, VM group or bare-metal group in one AZ).
    Pool {
        #[command(subcommand)]
        cmd: PoolCmd,
    },
    /// Enrolled agents.
    Agent {
        #[command(subcommand)]
        cmd: AgentCmd,
    },
    /// One-time enrollment tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Cluster-wide settings.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Run a query in fathom's SQL dialect, e.g.
    /// `fathomctl query "SELECT request_type, endpoint, Count(*) FROM l7_flow_log GROUP BY request_type, endpoint"`.
    Query {
        sql: String,
        /// Database: flow_log (logs) or flow_metrics (RED and network metrics).
        #[arg(long, default_value = "flow_log")]
        db: String,
    },
    /// Clusters fathomctl knows (the contexts file).
    Context {
        #[command(subcommand)]
        cmd: ContextCmd,
    },
    /// Print a shell completion script, e.g. `fathomctl completion bash > /etc/bash_completion.d/fathomctl`.
    Completion { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum ClusterCmd {
    Status,
}

#[derive(Subcommand)]
enum NodeCmd {
    List,
    /// Add a running node to the Raft group (as a voter unless --learner).
    Add {
        id: u64,
        /// The node's Raft address (host:port, its cluster.raft_advertise).
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node from the Raft group and the metadata; its agents move.
    Remove {
        id: u64,
    },
    /// Stop giving a node agents (they move to other nodes); --undo reverses it.
    Drain {
        id: u64,
        #[arg(long)]
        undo: bool,
    },
}

#[derive(Subcommand)]
enum RegionCmd {
    List,
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
}

#[derive(Subcommand)]
enum AzCmd {
    List {
        #[arg(long, default_value = "")]
        region: String,
    },
    Create {
        name: String,
        #[arg(long)]
        region: String,
    },
}

#[derive(Subcommand)]
enum PoolCmd {
    List {
        #[arg(long, default_value = "")]
        region: String,
        #[arg(long, default_value = "")]
        az: String,
    },
    Create {
        name: String,
        #[arg(long)]
        region: String,
        #[arg(long)]
        az: String,
        /// k8s, vm or bare-metal.
        #[arg(long)]
        kind: String,
        /// x86_64 or aarch64.
        #[arg(long, default_value = "x86_64")]
        arch: String,
        /// Kernels of the pool's hosts: 5.4-6.8, >=5.4, * ...
        #[arg(long, default_value = "*")]
        kernel: String,
    },
    /// Set the agent config (TOML) pushed to the pool's agents.
    SetConfig {
        pool: String,
        /// A file with the config; `-` reads standard input.
        #[arg(long, conflicts_with = "body", required_unless_present = "body")]
        file: Option<PathBuf>,
        /// The config itself.
        #[arg(long)]
        body: Option<String>,
    },
}

#[derive(Args)]
struct AgentFilter {
    #[arg(long, default_value = "")]
    region: String,
    #[arg(long, default_value = "")]
    az: String,
    #[arg(long, default_value = "")]
    pool: String,
    /// enrolled, active, lost or revoked.
    #[arg(long, default_value = "")]
    status: String,
}

#[derive(Subcommand)]
enum AgentCmd {
    List(AgentFilter),
    Show {
        id: String,
    },
    /// Revoke an agent: it loses its ingest node and may not send again.
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token for agents of one pool; the secret is printed once.
    Create {
        #[arg(long)]
        pool: String,
        #[arg(long, default_value = "")]
        region: String,
        #[arg(long, default_value = "")]
        az: String,
        /// Lifetime: 90s, 30m, 24h, 7d (default: the cluster's token.default_ttl_seconds).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    List {
        #[arg(long, default_value = "")]
        region: String,
        #[arg(long, default_value = "")]
        az: String,
        #[arg(long, default_value = "")]
        pool: String,
    },
    /// Revoke by id (or its first 8+ characters).
    Revoke { id: String },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// One setting, or all of them.
    Get {
        key: Option<String>,
    },
    Set {
        key: String,
        value: String,
    },
}

#[derive(Subcommand)]
enum ContextCmd {
    List,
    /// Make a context the current one.
    Use {
        name: String,
    },
    /// Create or update a context from --server, --query-url, --ca, --cert and --key
    /// (only the given fields change).
    Set {
        name: String,
        /// Cluster CA certificate (PEM).
        #[arg(long)]
        ca: Option<String>,
        /// Admin client certificate (PEM).
        #[arg(long)]
        cert: Option<String>,
        /// Admin client key (PEM).
        #[arg(long)]
        key: Option<String>,
    },
    Delete {
        name: String,
    },
    /// The context in use and where it points.
    Current,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: want a number and s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: out of range"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fathomctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let path = cli.config_file.clone().unwrap_or_else(context::default_path);
    let file = ContextFile::load(&path)?;
    match &cli.command {
        Command::Completion { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "fathomctl",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Context { cmd } => return contexts(&cli, cmd, file, &path),
        _ => {}
    }
    let target = context::resolve(
        &file,
        cli.context.as_deref(),
        cli.server.as_deref(),
        cli.query_url.as_deref(),
    )?;
    if let Command::Query { sql, db } = &cli.command {
        return query::run(&target, cli.output, db, sql);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(admin(&cli, &target))
}

fn contexts(
    cli: &Cli,
    cmd: &ContextCmd,
    mut file: ContextFile,
    path: &std::path::Path,
) -> Result<(), String> {
    match cmd {
        ContextCmd::List => {
            let rows: Vec<Value> = file
                .contexts
                .iter()
                .map(|(name, c)| {
                    json!({
                        "current": if *name == file.current { "*" } else { "" },
                        "name": name, "server": c.server, "query": c.query,
                        "ca": c.ca, "cert": c.cert, "key": c.key,
                    })
                })
                .collect();
            print_rows(
                cli.output,
                &rows,
                &[
                    ("CURRENT", "current"),
                    ("NAME", "name"),
                    ("SERVER", "server"),
                    ("QUERY", "query"),
                    ("CERT", "cert"),
                ],
            );
        }
        ContextCmd::Use { name } => {
            if !file.contexts.contains_key(name) {
                return Err(format!("no context {name:?} in {}", path.display()));
            }
            file.current = name.clone();
            file.save(path)?;
            eprintln!("now using context {name:?}");
        }
        ContextCmd::Set { name, ca, cert, key } => {
            let c = file.contexts.entry(name.clone()).or_default();
            let set = |field: &mut String, v: &Option<String>| {
                if let Some(v) = v {
                    *field = v.clone();
                }
            };
            set(&mut c.server, &cli.server);
            set(&mut c.query, &cli.query_url);
            set(&mut c.ca, ca);
            set(&mut c.cert, cert);
            set(&mut c.key, key);
            if file.current.is_empty() {
                file.current = name.clone();
            }
            file.save(path)?;
            eprintln!("context {name:?} saved in {}", path.display());
        }
        ContextCmd::Delete { name } => {
            if file.contexts.remove(name).is_none() {
                return Err(format!("no context {name:?} in {}", path.display()));
            }
            if file.current == *name {
                file.current.clear();
            }
            file.save(path)?;
        }
        ContextCmd::Current => {
            let t = context::resolve(
                &file,
                cli.context.as_deref(),
                cli.server.as_deref(),
                cli.query_url.as_deref(),
            )?;
            print_object(
                cli.output,
                &to_value(&t),
                &[
                    ("CONTEXT", "context"),
                    ("SERVER", "server"),
                    ("QUERY", "query"),
                    ("CERT", "cert"),
                ],
            );
        }
    }
    Ok(())
}

fn done(format: Format, what: &str, v: Value) {
    match format {
        Format::Table => eprintln!("{what}"),
        f => output::print_structured(f, &v),
    }
}

const NODE_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("REGION", "region"),
    ("AZ", "az"),
    ("ROLES", "roles"),
    ("RAFT", "raft_member"),
    ("LIVE", "live"),
    ("DRAINED", "drained"),
    ("AGENTS", "agents"),
    ("RAFT ADDR", "raft_addr"),
    ("CONTROL ADDR", "api_addr"),
];

async fn admin(cli: &Cli, t: &Target) -> Result<(), String> {
    let mut c = client::connect(t).await?;
    let st = |s: tonic::Status| client::status_text(t, s);
    let o = cli.output;
    let filter = |region: &str, az: &str, pool: &str, status: &str| Filter {
        region: region.into(),
        az: az.into(),
        pool: pool.into(),
        status: status.into(),
    };
    match &cli.command {
        Command::Cluster { cmd: ClusterCmd::Status } => {
            let r = c.cluster_status(Empty {}).await.map_err(st)?.into_inner();
            warn_unreachable(&r.unreachable_regions, "agents not counted");
            let v = to_value(&r);
            if o != Format::Table {
                output::print_structured(o, &v);
                return Ok(());
            }
            let leader = if r.leader == 0 { "none".to_string() } else { r.leader.to_string() };
            let summary = json!({
                "node": r.node_id, "state": r.state, "leader": leader, "term": r.term,
                "voters": r.voters, "learners": r.learners, "applied": r.last_applied,
                "topology": format!("{} regions, {} azs, {} pools", r.regions, r.azs, r.pools),
                "agents": format!("{} ({} unassigned)", r.agents, r.unassigned_agents),
            });
            print_object(
                o,
                &summary,
                &[
                    ("NODE", "node"),
                    ("STATE", "state"),
                    ("LEADER", "leader"),
                    ("TERM", "term"),
                    ("VOTERS", "voters"),
                    ("LEARNERS", "learners"),
                    ("APPLIED", "applied"),
                    ("TOPOLOGY", "topology"),
                    ("AGENTS", "agents"),
                ],
            );
            println!();
            let nodes: Vec<Value> = r.nodes.iter().map(to_value).collect();
            print_rows(o, &nodes, NODE_COLUMNS);
        }
        Command::Node { cmd } => match cmd {
            NodeCmd::List => {
                let r = c.list_nodes(Empty {}).await.map_err(st)?.into_inner();
                let rows: Vec<Value> = r.nodes.iter().map(to_value).collect();
                print_rows(o, &rows, NODE_COLUMNS);
            }
            NodeCmd::Add { id, raft_addr, learner } => {
                let req = AddNodeRequest { id: *id, raft_addr: raft_addr.clone(), voter: !learner };
                c.add_node(req).await.map_err(st)?;
                let role = if *learner { "learner" } else { "voter" };
                done(
                    o,
                    &format!("node {id} added as a {role}"),
                    json!({"added": id, "role": role}),
                );
            }
            NodeCmd::Remove { id } => {
                c.remove_node(NodeId { id: *id }).await.map_err(st)?;
                done(o, &format!("node {id} removed"), json!({"removed": id}));
            }
            NodeCmd::Drain { id, undo } => {
                c.drain_node(DrainRequest { id: *id, drained: !undo }).await.map_err(st)?;
                let what =
                    if *undo { "undrained" } else { "drained: its agents move to other nodes" };
                done(o, &format!("node {id} {what}"), json!({"node": id, "drained": !undo}));
            }
        },
        Command::Region { cmd } => match cmd {
            RegionCmd::List => {
                let r = c.list_regions(Empty {}).await.map_err(st)?.into_inner();
                let rows: Vec<Value> = r.regions.iter().map(to_value).collect();
                print_rows(
                    o,
                    &rows,
                    &[
                        ("NAME", "name"),
                        ("AZS", "azs"),
                        ("NODES", "nodes"),
                        ("AGENTS", "agents"),
                        ("DESCRIPTION", "description"),
                    ],
                );
            }
            RegionCmd::Create { name, description } => {
                let req =
                    CreateRegionRequest { name: name.clone(), description: description.clone() };
                c.create_region(req).await.map_err(st)?;
                done(o, &format!("region {name} created"), json!({"created": {"region": name}}));
            }
        },
        Command::Az { cmd } => match cmd {
            AzCmd::List { region } => {
                let r = c.list_azs(filter(region, "", "", "")).await.map_err(st)?.into_inner();
                let rows: Vec<Value> = r.azs.iter().map(to_value).collect();
                print_rows(
                    o,
                    &rows,
                    &[
                        ("NAME", "name"),
                        ("REGION", "region"),
                        ("NODES", "nodes"),
                        ("POOLS", "pools"),
                        ("AGENTS", "agents"),
                    ],
                );
            }
            AzCmd::Create { name, region } => {
                c.create_az(CreateAzRequest { name: name.clone(), region: region.clone() })
                    .await
                    .map_err(st)?;
                done(
                    o,
                    &format!("az {name} created in region {region}"),
                    json!({"created": {"az": name, "region": region}}),
                );
            }
        },
        Command::Pool { cmd } => match cmd {
            PoolCmd::List { region, az } => {
                let r = c.list_pools(filter(region, az, "", "")).await.map_err(st)?.into_inner();
                let rows: Vec<Value> = r.pools.iter().map(to_value).collect();
                print_rows(
                    o,
                    &rows,
                    &[
                        ("NAME", "name"),
                        ("REGION", "region"),
                        ("AZ", "az"),
                        ("KIND", "kind"),
                        ("ARCH", "arch"),
                        ("KERNEL", "kernel_range"),
                        ("CONFIG", "config_version"),
                        ("AGENTS", "agents"),
                    ],
                );
            }
            PoolCmd::Create { name, region, az, kind, arch, kernel } => {
                let req = CreatePoolRequest {
                    name: name.clone(),
                    region: region.clone(),
                    az: az.clone(),
                    kind: kind.clone(),
                    arch: arch.clone(),
                    kernel_range: kernel.clone(),
                };
                c.create_pool(req).await.map_err(st)?;
                done(
                    o,
                    &format!("pool {name} created in {region}/{az}"),
                    json!({"created": {"pool": name}}),
                );
            }
            PoolCmd::SetConfig { pool, file, body } => {
                let body = match (file, body) {
                    (_, Some(b)) => b.clone(),
                    (Some(p), None) if p.as_os_str() == "-" => {
                        std::io::read_to_string(std::io::stdin())
                            .map_err(|e| format!("reading standard input: {e}"))?
                    }
                    (Some(p), None) => std::fs::read_to_string(p)
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))?,
                    (None, None) => unreachable!("clap requires --file or --body"),
                };
                let r = c
                    .set_pool_config(SetPoolConfigRequest { pool: pool.clone(), body })
                    .await
                    .map_err(st)?
                    .into_inner();
                done(o, &format!("pool {pool}: agent config version {}", r.version), to_value(&r));
            }
        },
        Command::Agent { cmd } => match cmd {
            AgentCmd::List(f) => {
                let r = c
                    .list_agents(filter(&f.region, &f.az, &f.pool, &f.status))
                    .await
                    .map_err(st)?
                    .into_inner();
                warn_unreachable(&r.unreachable_regions, "agents not listed");
                let rows: Vec<Value> = r.agents.iter().map(to_value).collect();
                print_rows(
                    o,
                    &rows,
                    &[
                        ("ID", "id"),
                        ("HOST", "host"),
                        ("REGION", "region"),
                        ("AZ", "az"),
                        ("POOL", "pool"),
                        ("STATUS", "status"),
                        ("INGEST NODE", "ingest_node"),
                        ("CONFIG", "config_version"),
                    ],
                );
            }
            AgentCmd::Show { id } => {
                let a = c.get_agent(AgentId { id: id.clone() }).await.map_err(st)?.into_inner();
                print_object(
                    o,
                    &to_value(&a),
                    &[
                        ("ID", "id"),
                        ("HOST", "host"),
                        ("REGION", "region"),
                        ("AZ", "az"),
                        ("POOL", "pool"),
                        ("STATUS", "status"),
                        ("INGEST NODE", "ingest_node"),
                        ("LAST HEARTBEAT MS", "last_heartbeat_ms"),
                        ("CONFIG VERSION", "config_version"),
                        ("CERT SERIAL", "cert_serial"),
                    ],
                );
            }
            AgentCmd::Revoke { id } => {
                c.revoke_agent(AgentId { id: id.clone() }).await.map_err(st)?;
                done(o, &format!("agent {id} revoked"), json!({"revoked": id}));
            }
        },
        Command::Token { cmd } => match cmd {
            TokenCmd::Create { pool, region, az, ttl } => {
                let req = CreateTokenRequest {
                    region: region.clone(),
                    az: az.clone(),
                    pool: pool.clone(),
                    ttl_seconds: ttl.map(|d| d.as_secs()).unwrap_or(0),
                };
                let r = c.create_token(req).await.map_err(st)?.into_inner();
                if o == Format::Table {
                    let tok = r.token.clone().unwrap_or_default();
                    println!("{}", r.secret);
                    eprintln!(
                        "token {} for pool {} ({}/{}); the secret above is shown only once",
                        &tok.id[..tok.id.len().min(12)],
                        tok.pool,
                        tok.region,
                        tok.az
                    );
                } else {
                    output::print_structured(o, &to_value(&r));
                }
            }
            TokenCmd::List { region, az, pool } => {
                let r = c.list_tokens(filter(region, az, pool, "")).await.map_err(st)?.into_inner();
                warn_unreachable(&r.unreachable_regions, "tokens not listed");
                let rows: Vec<Value> = r
                    .tokens
                    .iter()
                    .map(|t| {
                        let mut v = to_value(t);
                        v["short_id"] = Value::String(t.id.chars().take(12).collect());
                        v
                    })
                    .collect();
                print_rows(
                    o,
                    &rows,
                    &[
                        ("ID", "short_id"),
                        ("REGION", "region"),
                        ("AZ", "az"),
                        ("POOL", "pool"),
                        ("STATE", "state"),
                        ("USED BY", "used_by"),
                        ("EXPIRES AT MS", "expires_at_ms"),
                    ],
                );
            }
            TokenCmd::Revoke { id } => {
                c.revoke_token(TokenId { id: id.clone() }).await.map_err(st)?;
                done(o, &format!("token {id} revoked"), json!({"revoked": id}));
            }
        },
        Command::Config { cmd } => match cmd {
            ConfigCmd::Get { key } => {
                let r = c
                    .get_config(ConfigKey { key: key.clone().unwrap_or_default() })
                    .await
                    .map_err(st)?
                    .into_inner();
                let rows: Vec<Value> = r.entries.iter().map(to_value).collect();
                print_rows(
                    o,
                    &rows,
                    &[
                        ("KEY", "key"),
                        ("VALUE", "value"),
                        ("DEFAULT", "default"),
                        ("DESCRIPTION", "description"),
                    ],
                );
            }
            ConfigCmd::Set { key, value } => {
                let req =
                    ConfigEntry { key: key.clone(), value: value.clone(), ..Default::default() };
                c.set_config(req).await.map_err(st)?;
                done(o, &format!("{key} = {value}"), json!({"key": key, "value": value}));
            }
        },
        Command::Query { .. } | Command::Context { .. } | Command::Completion { .. } => {
            unreachable!("handled before connecting")
        }
    }
    Ok(())
}

/// Regions none of whose nodes answered: said on stderr, so that a partial answer is
/// never taken for the whole fleet.
fn warn_unreachable(regions: &[String], what: &str) {
    if !regions.is_empty() {
        eprintln!("fathomctl: regions not reachable ({what}): {}", regions.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        for bad in ["", "h", "5w", "0", "99999999999999999999d", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
