//! fathom-agent: sees every request of every process on this host, with no
//! change to the applications, and reports L7 calls, L4 flows and metrics.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fathom_agent::config::{AgentConfig, KEYS_HELP};
use fathom_agent::run::Stopped;

#[derive(Parser)]
#[command(name = "fathom-agent", version, about, after_long_help = KEYS_HELP)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, env = "FATHOM_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Interfaces to capture (repeatable); overrides capture.interfaces.
    #[arg(long = "interface", short = 'i', global = true)]
    interfaces: Vec<String>,
    /// Output format; overrides output.format.
    #[arg(long, global = true, value_parser = ["json", "server", "both"])]
    output: Option<String>,
    /// Output path ('-' = stdout); overrides output.path.
    #[arg(long, global = true)]
    output_path: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture live traffic until SIGINT / SIGTERM (restarting in place, flushed,
    /// to apply a pool config the controller pushes).
    Run,
    /// Run a pcap or pcapng file through the pipeline and exit (without the pool config).
    Replay { file: PathBuf },
    /// Print the effective configuration of `run` (defaults + file + pushed pool
    /// config + environment).
    Config,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FATHOM_AGENT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // A replay is offline: the pool config pushed to this host's agent is not for it.
    let loaded = match cli.command {
        Command::Replay { .. } => AgentConfig::load(cli.config.as_deref()).map(|c| (c, 0)),
        _ => AgentConfig::load_with_pushed(cli.config.as_deref()),
    };
    let (mut cfg, pool_config) = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fathom-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if !cli.interfaces.is_empty() {
        cfg.capture.interfaces = cli.interfaces.clone();
    }
    if let Some(o) = cli.output {
        cfg.output.format = o;
    }
    if let Some(p) = cli.output_path {
        cfg.output.path = p;
    }
    let result = match cli.command {
        Command::Run => match fathom_agent::run::run_live(cfg, pool_config) {
            Ok(Stopped::Signal) => Ok(()),
            Ok(Stopped::PoolConfigPushed) => Err(restart()),
            Err(e) => Err(e),
        },
        Command::Replay { file } => fathom_agent::run::replay(&file, cfg).map(|n| {
            tracing::info!(packets = n, "replay done");
        }),
        Command::Config => {
            print!("{}", toml::to_string_pretty(&cfg).unwrap_or_default());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fathom-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs this binary again in this process, with the same arguments and environment,
/// so that it starts with the pool config just kept; returns only if that failed.
fn restart() -> String {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "fathom-agent".into());
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return format!("cannot restart to apply the pool config: {e}"),
    };
    tracing::info!("restarting to apply the pushed pool config");
    let e = std::process::Command::new(&exe).arg0(arg0).args(args).exec();
    format!("cannot restart {} to apply the pool config: {e}", exe.display())
}
