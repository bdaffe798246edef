//! fathomctl: talk to a fathom cluster from the command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "fathomctl", version, about)]
struct Cli {
    /// Query API of any server node.
    #[arg(long, global = true, env = "FATHOM_SERVER", default_value = "http://127.0.0.1:20416")]
    server: String,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a query in fathom's SQL dialect, e.g.
    /// `fathomctl query "SELECT request_type, endpoint, Count(*) FROM l7_flow_log GROUP BY request_type, endpoint"`.
    Query {
        sql: String,
        /// Database: flow_log (logs) or flow_metrics (RED and network metrics).
        #[arg(long, default_value = "flow_log")]
        db: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Query { sql, db } => query(&cli, db, sql),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fathomctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn query(cli: &Cli, db: &str, sql: &str) -> Result<(), String> {
    let url = format!("{}/v1/query", cli.server.trim_end_matches('/'));
    let body = serde_json::json!({ "db": db, "sql": sql });
    let mut resp = ureq::post(&url)
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(&body)
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = resp.status();
    let v: Value = resp
        .body_mut()
        .read_json()
        .map_err(|e| format!("{url} answered {status} with a body that is not JSON: {e}"))?;
    if !status.is_success() {
        let msg = v.get("error").and_then(Value::as_str).unwrap_or("no error message");
        return Err(format!("query failed ({status}): {msg}"));
    }
    match cli.output {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Format::Table => print_table(&v),
    }
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print_table(v: &Value) {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    let columns: Vec<String> = v
        .get("columns")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| match c {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => o.get("name").map(cell).unwrap_or_default(),
                    Value::Array(a) => a.first().map(cell).unwrap_or_default(),
                    other => cell(other),
                })
                .collect()
        })
        .unwrap_or_default();
    table.set_header(columns.iter().map(|c| c.to_uppercase()));
    let rows = v.get("rows").and_then(Value::as_array).cloned().unwrap_or_default();
    let n = rows.len();
    for row in rows {
        if let Value::Array(cells) = row {
            table.add_row(cells.iter().map(cell));
        }
    }
    println!("{table}");
    eprintln!("({n} rows)");
}
