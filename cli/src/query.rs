//! `fathomctl query`: SQL over the query HTTP API.

use serde_json::Value;

use crate::context::Target;
use crate::output::{print_structured, Format};

pub fn run(t: &Target, format: Format, db: &str, sql: &str) -> Result<(), String> {
    let url = format!("{}/v1/query", t.query.trim_end_matches('/'));
    let body = serde_json::json!({ "db": db, "sql": sql });
    let mut resp = ureq::post(&url)
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(&body)
        .map_err(|e| format!("cannot reach {url} ({}): {e}", t.origin()))?;
    let status = resp.status();
    let v: Value = resp
        .body_mut()
        .read_json()
        .map_err(|e| format!("{url} answered {status} with a body that is not JSON: {e}"))?;
    if !status.is_success() {
        let msg = v.get("error").and_then(Value::as_str).unwrap_or("no error message");
        return Err(format!("query failed ({status}): {msg}"));
    }
    match format {
        Format::Table => print_table(&v),
        f => print_structured(f, &v),
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
