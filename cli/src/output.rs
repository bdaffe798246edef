//! `-o table|json|yaml`: every answer is a serde value; tables pick columns.

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

pub fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

pub fn print_structured(format: Format, v: &Value) {
    match format {
        Format::Yaml => print!("{}", serde_yaml::to_string(v).unwrap_or_default()),
        _ => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
}

fn new_table() -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t
}

/// Rows of objects as a table of `(header, field)` columns; json/yaml print the rows.
pub fn print_rows(format: Format, rows: &[Value], columns: &[(&str, &str)]) {
    if format != Format::Table {
        print_structured(format, &Value::Array(rows.to_vec()));
        return;
    }
    if rows.is_empty() {
        eprintln!("(none)");
        return;
    }
    let mut t = new_table();
    t.set_header(columns.iter().map(|(h, _)| *h));
    for r in rows {
        t.add_row(columns.iter().map(|(_, f)| cell(r.get(*f).unwrap_or(&Value::Null))));
    }
    println!("{t}");
}

/// One object as `KEY  value` lines.
pub fn print_object(format: Format, v: &Value, fields: &[(&str, &str)]) {
    if format != Format::Table {
        print_structured(format, v);
        return;
    }
    let mut t = new_table();
    for (label, f) in fields {
        t.add_row(vec![label.to_string(), cell(v.get(*f).unwrap_or(&Value::Null))]);
    }
    println!("{t}");
}
