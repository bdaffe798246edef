//! The fathom SQL dialect, translated to ClickHouse SQL.
//!
//! The user's text is parsed with `sqlparser` (MySQL dialect) and the AST is
//! walked with a whitelist: every construct not handled here is refused.
//! ClickHouse SQL is printed by this module, not by `sqlparser`'s `Display`:
//! the latter leaves backslashes in string literals as they are, which
//! ClickHouse reads as escapes (a value ending in `\` would swallow the
//! closing quote). Names reaching ClickHouse come from [`crate::catalog`];
//! user text reaches it only as escaped string literals, validated numbers
//! and backquoted output aliases.
//!
//! Resource tags (host, pod, process, ...) are stored as SmartEncoding ids.
//! The schema has no ClickHouse DICTIONARY object, so names are joined back
//! with two constructs that need none:
//! - filters (`host = 'a'`, `IN`, `LIKE`, `!=`) become
//!   `host_id_1 IN (SELECT id FROM flow_tag.tag_dict FINAL WHERE ...)`: the
//!   comparison stays on the integer column (sort key, no per-row lookup);
//! - shown or grouped, a name is `transform(id, ids, names, '')` with the
//!   dictionary of that tag type loaded once per query by a scalar `WITH`
//!   subquery (a hash lookup per row; no JOIN, no correlated subquery).

use std::collections::BTreeSet;
use std::fmt::Write;

use sqlparser::ast::{
    BinaryOperator, DateTimeField, Distinct, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, InTarget, LimitClause, ObjectName, ObjectNamePart, OrderByKind,
    OrderBySort, Query, Select, SelectFlavor, SelectItem, SetExpr, Statement, TableFactor,
    UnaryOperator, Value,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer, Word};

use crate::catalog::{self, MetricKind, Table, TagKind, DATABASES, TABLES};

/// A query the dialect refuses; the message is for the user (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DialectError(pub String);

type Result<T> = std::result::Result<T, DialectError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(DialectError(msg.into()))
}

/// Bounds every translated query carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rows a query may return; the LIMIT when none is given.
    pub max_rows: u64,
    /// ClickHouse's `max_execution_time`, seconds.
    pub max_execution_secs: u64,
    /// Longest SQL text accepted, bytes.
    pub max_sql_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_rows: 10_000, max_execution_secs: 60, max_sql_bytes: 64 * 1024 }
    }
}

/// What a dialect statement becomes.
#[derive(Clone, Debug, PartialEq)]
pub enum Translation {
    /// ClickHouse SQL to run.
    Sql(String),
    /// An answer known without the store (SHOW over the catalog).
    Rows { columns: Vec<String>, rows: Vec<Vec<serde_json::Value>> },
}

/// Translates one dialect statement. `db` is the request's database
/// (`flow_log` / `flow_metrics`), optional when table names are unique.
pub fn translate(db: Option<&str>, sql: &str, limits: &Limits) -> Result<Translation> {
    if sql.len() > limits.max_sql_bytes {
        return err(format!("query is {} bytes; the limit is {}", sql.len(), limits.max_sql_bytes));
    }
    let db = db.map(str::trim).filter(|d| !d.is_empty());
    if let Some(d) = db {
        if !DATABASES.iter().any(|x| x.eq_ignore_ascii_case(d)) {
            return err(format!("unknown database '{d}'; databases: {}", DATABASES.join(", ")));
        }
    }
    let dialect = MySqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize()
        .map_err(|e| DialectError(format!("syntax error: {e}")))?;
    let words: Vec<&Token> = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
    if matches!(words.first(), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("show")) {
        return show(db, &words, limits);
    }
    let statements =
        Parser::parse_sql(&dialect, sql).map_err(|e| DialectError(format!("syntax error: {e}")))?;
    let statement = match statements.as_slice() {
        [s] => s,
        [] => return err("empty query"),
        _ => return err("one statement per query: multiple statements are refused"),
    };
    match statement {
        Statement::Query(q) => select(db, q, limits).map(Translation::Sql),
        other => {
            let text = other.to_string();
            let verb = text.split_whitespace().next().unwrap_or("this statement").to_uppercase();
            err(format!("only SELECT and SHOW are allowed; {verb} statements are refused"))
        }
    }
}

/// Quotes a string for a ClickHouse literal (backslash escapes, as
/// ClickHouse reads them).
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes an output column name.
fn quote_ident(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('`');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '`' => out.push_str("\\`"),
            c => out.push(c),
        }
    }
    out.push('`');
    out
}

fn settings(limits: &Limits) -> String {
    // prefer_column_name_to_alias: an output alias equal to a column name
    // (`Sum(request) AS request`) must not capture the column elsewhere.
    format!(
        " SETTINGS readonly = 1, prefer_column_name_to_alias = 1, max_execution_time = {}",
        limits.max_execution_secs
    )
}

// ---------------------------------------------------------------- SHOW

fn word(t: Option<&&Token>) -> Option<String> {
    match t {
        Some(Token::Word(w)) => Some(w.value.clone()),
        _ => None,
    }
}

fn is_kw(t: Option<&&Token>, kw: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
}

const SHOW_FORMS: &str = "SHOW DATABASES | SHOW TABLES [FROM db] | SHOW TAGS FROM t | \
     SHOW METRICS FROM t | SHOW TAG x VALUES FROM t [LIMIT n]";

fn show(db: Option<&str>, toks: &[&Token], limits: &Limits) -> Result<Translation> {
    // `db.table` becomes one word.
    let mut merged: Vec<Token> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if let (Some(Token::Word(a)), Some(Token::Period), Some(Token::Word(b))) =
            (merged.last(), toks.get(i), toks.get(i + 1))
        {
            let value = format!("{}.{}", a.value, b.value);
            merged.pop();
            merged.push(Token::Word(Word {
                value,
                quote_style: None,
                keyword: Keyword::NoKeyword,
            }));
            i += 2;
            continue;
        }
        merged.push(toks[i].clone());
        i += 1;
    }
    let mut toks: Vec<&Token> = merged.iter().collect();
    if matches!(toks.last(), Some(Token::SemiColon)) {
        toks.pop();
    }
    if toks.iter().any(|t| matches!(t, Token::SemiColon)) {
        return err("one statement per query: multiple statements are refused");
    }
    let rows = |columns: &[&str], rows: Vec<Vec<serde_json::Value>>| Translation::Rows {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    };
    let s = |v: &str| serde_json::Value::String(v.to_string());
    let t = |i: usize| toks.get(i);
    let bad = || err(format!("unsupported SHOW statement; forms: {SHOW_FORMS}"));
    match toks.len() {
        2 if is_kw(t(1), "databases") => {
            Ok(rows(&["name"], DATABASES.iter().map(|d| vec![s(d)]).collect()))
        }
        2 | 4 if is_kw(t(1), "tables") => {
            let want = if toks.len() == 4 {
                if !is_kw(t(2), "from") {
                    return bad();
                }
                let d = word(t(3)).unwrap_or_default();
                if !DATABASES.iter().any(|x| x.eq_ignore_ascii_case(&d)) {
                    return err(format!(
                        "unknown database '{d}'; databases: {}",
                        DATABASES.join(", ")
                    ));
                }
                Some(d)
            } else {
                db.map(str::to_string)
            };
            Ok(rows(
                &["name", "db"],
                TABLES
                    .iter()
                    .filter(|t| want.as_deref().is_none_or(|d| t.db.eq_ignore_ascii_case(d)))
                    .map(|t| vec![s(t.name), s(t.db)])
                    .collect(),
            ))
        }
        4 if (is_kw(t(1), "tags") || is_kw(t(1), "metrics")) && is_kw(t(2), "from") => {
            let table = catalog::table(db, &table_word(&toks[3..])?).map_err(DialectError)?;
            if is_kw(t(1), "tags") {
                Ok(rows(
                    &["name", "type", "description"],
                    table
                        .tags()
                        .iter()
                        .map(|g| vec![s(&g.name), s(g.type_name()), s(&g.description)])
                        .collect(),
                ))
            } else {
                Ok(rows(
                    &["name", "unit", "description"],
                    table
                        .metrics()
                        .iter()
                        .map(|m| vec![s(&m.name), s(m.unit), s(&m.description)])
                        .collect(),
                ))
            }
        }
        6 | 8 if is_kw(t(1), "tag") && is_kw(t(3), "values") && is_kw(t(4), "from") => {
            let name =
                word(t(2)).ok_or_else(|| DialectError("SHOW TAG needs a tag name".into()))?;
            let table = catalog::table(db, &table_word(&toks[5..6])?).map_err(DialectError)?;
            let limit = if toks.len() == 8 {
                if !is_kw(t(6), "limit") {
                    return bad();
                }
                match t(7) {
                    Some(Token::Number(n, _)) => parse_limit(n, limits)?,
                    _ => return err("LIMIT takes a number"),
                }
            } else {
                limits.max_rows
            };
            tag_values(table, &name, limit, limits).map(Translation::Sql)
        }
        _ => bad(),
    }
}

fn table_word(toks: &[&Token]) -> Result<String> {
    match toks {
        [Token::Word(w)] => Ok(w.value.clone()),
        _ => err("expected a table name"),
    }
}

fn parse_limit(n: &str, limits: &Limits) -> Result<u64> {
    let v: u64 = n.parse().map_err(|_| DialectError(format!("LIMIT {n} is not a count")))?;
    if v > limits.max_rows {
        return err(format!("LIMIT {v} is above the maximum of {} rows", limits.max_rows));
    }
    Ok(v)
}

fn tag_values(table: &Table, name: &str, limit: u64, limits: &Limits) -> Result<String> {
    let tag = table.tag(name).ok_or_else(|| unknown_name(table, name))?;
    let mut q = match &tag.kind {
        TagKind::Resource { tag_type, .. } => format!(
            "SELECT name AS value, id FROM flow_tag.tag_dict FINAL WHERE tag_type = {} \
             ORDER BY value, id",
            quote_str(tag_type)
        ),
        TagKind::Time { .. } => {
            return err(format!("'{}' is a time; it has no value list", tag.name))
        }
        _ => {
            // Values seen lately: the time bound keeps the scan to recent partitions.
            let mut dicts = BTreeSet::new();
            format!(
                "SELECT {} AS value, count() AS count FROM {} WHERE time >= now() - INTERVAL 1 DAY \
                 GROUP BY value ORDER BY count DESC, value",
                tag_expr(&tag.kind, &mut dicts),
                table.physical()
            )
        }
    };
    let _ = write!(q, " LIMIT {limit}{}", settings(limits));
    Ok(q)
}

fn unknown_name(table: &Table, name: &str) -> DialectError {
    DialectError(format!(
        "unknown tag or metric '{name}' in {}; SHOW TAGS FROM {0} and SHOW METRICS FROM {0} list them",
        table.name
    ))
}

/// The value of a tag as shown and grouped.
fn tag_expr(kind: &TagKind, dicts: &mut BTreeSet<&'static str>) -> String {
    match kind {
        TagKind::Resource { column, tag_type } => {
            dicts.insert(tag_type);
            format!("transform({column}, __tag_{tag_type}.1, __tag_{tag_type}.2, '')")
        }
        TagKind::Column { column, .. } | TagKind::Time { column } => column.clone(),
        TagKind::Ip { column } => {
            format!("replaceRegexpOne(IPv6NumToString({column}), '^::ffff:', '')")
        }
    }
}

// ---------------------------------------------------------------- SELECT

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Clause {
    Select,
    Where,
    GroupBy,
    Having,
    OrderBy,
}

struct Ctx {
    table: &'static Table,
    dicts: BTreeSet<&'static str>,
    /// Seconds of the query's time(N) bucket.
    bucket: Option<u32>,
    /// Output aliases and the SQL they stand for, in SELECT order.
    aliases: Vec<(String, String)>,
    /// Current expression nesting.
    depth: usize,
}

fn select(db: Option<&str>, q: &Query, limits: &Limits) -> Result<String> {
    let Query {
        with,
        body,
        order_by,
        limit_clause,
        fetch,
        locks,
        for_clause,
        settings: user_settings,
        format_clause,
        pipe_operators,
    } = q;
    if with.is_some() {
        return err("WITH is not supported");
    }
    if user_settings.is_some() {
        return err("SETTINGS are not allowed: limits are set by the server");
    }
    if format_clause.is_some() {
        return err("FORMAT is not allowed: results are JSON");
    }
    if fetch.is_some() || !locks.is_empty() || for_clause.is_some() || !pipe_operators.is_empty() {
        return err("FETCH, FOR, locking and pipe clauses are not supported");
    }
    let s: &Select = match body.as_ref() {
        SetExpr::Select(s) => s,
        SetExpr::SetOperation { .. } => return err("UNION, EXCEPT and INTERSECT are not allowed"),
        SetExpr::Query(_) => return err("subqueries are not allowed"),
        _ => return err("only SELECT and SHOW are allowed"),
    };
    let Select {
        select_token: _,
        optimizer_hints,
        distinct,
        select_modifiers,
        top,
        top_before_distinct: _,
        projection,
        exclude,
        into,
        from,
        lateral_views,
        prewhere,
        selection,
        connect_by,
        group_by,
        cluster_by,
        distribute_by,
        sort_by,
        having,
        named_window,
        qualify,
        window_before_qualify: _,
        value_table_mode,
        flavor,
    } = s;
    if into.is_some() {
        return err("SELECT INTO is not allowed");
    }
    if !optimizer_hints.is_empty()
        || select_modifiers.is_some()
        || top.is_some()
        || exclude.is_some()
        || !lateral_views.is_empty()
        || prewhere.is_some()
        || !connect_by.is_empty()
        || !cluster_by.is_empty()
        || !distribute_by.is_empty()
        || !sort_by.is_empty()
        || !named_window.is_empty()
        || qualify.is_some()
        || value_table_mode.is_some()
        || !matches!(flavor, SelectFlavor::Standard)
    {
        return err("unsupported SELECT clause (TOP, PREWHERE, WINDOW, QUALIFY, hints, ...)");
    }
    let distinct = match distinct {
        None | Some(Distinct::All) => false,
        Some(Distinct::Distinct) => true,
        Some(_) => return err("DISTINCT ON is not supported"),
    };
    let table = from_table(db, from)?;
    let mut ctx =
        Ctx { table, dicts: BTreeSet::new(), bucket: None, aliases: Vec::new(), depth: 0 };

    // The bucket first: PerSecond anywhere needs its width.
    for item in projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            find_bucket(e, &mut ctx.bucket, 0)?;
        }
    }
    let group_exprs = match group_by {
        GroupByExpr::Expressions(exprs, modifiers) => {
            if !modifiers.is_empty() {
                return err("GROUP BY modifiers (ROLLUP, CUBE, TOTALS) are not supported");
            }
            exprs
        }
        GroupByExpr::All(_) => return err("GROUP BY ALL is not supported: name the groups"),
    };
    for e in group_exprs {
        find_bucket(e, &mut ctx.bucket, 0)?;
    }

    let mut items = Vec::new();
    for item in projection {
        let (e, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, e.to_string()),
            SelectItem::ExprWithAlias { expr, alias } => (expr, alias.value.clone()),
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                return err(format!(
                    "SELECT * is not supported: name the tags and metrics \
                     (SHOW TAGS FROM {0}, SHOW METRICS FROM {0})",
                    table.name
                ))
            }
            _ => return err("unsupported select item"),
        };
        check_alias(&alias)?;
        let sql = expr(&mut ctx, e, Clause::Select, false)?;
        items.push(format!("{sql} AS {}", quote_ident(&alias)));
        ctx.aliases.push((alias, sql));
    }
    if items.is_empty() {
        return err("SELECT needs at least one column");
    }

    let mut out = String::new();
    out.push_str(if distinct { "SELECT DISTINCT " } else { "SELECT " });
    out.push_str(&items.join(", "));
    let _ = write!(out, " FROM {}", table.physical());
    if let Some(w) = selection {
        let w = expr(&mut ctx, w, Clause::Where, false)?;
        let _ = write!(out, " WHERE {w}");
    }
    if !group_exprs.is_empty() {
        let g = group_exprs
            .iter()
            .map(|e| by_item(&mut ctx, e, Clause::GroupBy))
            .collect::<Result<Vec<_>>>()?;
        let _ = write!(out, " GROUP BY {}", g.join(", "));
    }
    if let Some(h) = having {
        let h = expr(&mut ctx, h, Clause::Having, false)?;
        let _ = write!(out, " HAVING {h}");
    }
    if let Some(ob) = order_by {
        if ob.interpolate.is_some() {
            return err("INTERPOLATE is not supported");
        }
        let exprs = match &ob.kind {
            OrderByKind::Expressions(v) => v,
            OrderByKind::All(_) => return err("ORDER BY ALL is not supported"),
        };
        let mut parts = Vec::new();
        for o in exprs {
            if o.with_fill.is_some() {
                return err("WITH FILL is not supported");
            }
            let mut p = by_item(&mut ctx, &o.expr, Clause::OrderBy)?;
            match &o.options.sort {
                None | Some(OrderBySort::Asc) => {}
                Some(OrderBySort::Desc) => p.push_str(" DESC"),
                Some(OrderBySort::Using(_)) => return err("ORDER BY ... USING is not supported"),
            }
            match o.options.nulls_first {
                Some(true) => p.push_str(" NULLS FIRST"),
                Some(false) => p.push_str(" NULLS LAST"),
                None => {}
            }
            parts.push(p);
        }
        let _ = write!(out, " ORDER BY {}", parts.join(", "));
    }
    let (limit, offset) = limit_offset(limit_clause.as_ref(), limits)?;
    let _ = write!(out, " LIMIT {limit}");
    if offset > 0 {
        let _ = write!(out, " OFFSET {offset}");
    }
    out.push_str(&settings(limits));

    if !ctx.dicts.is_empty() {
        let with: Vec<String> = ctx
            .dicts
            .iter()
            .map(|t| {
                format!(
                    "(SELECT (groupArray(id), groupArray(name)) FROM flow_tag.tag_dict FINAL \
                     WHERE tag_type = {}) AS __tag_{t}",
                    quote_str(t)
                )
            })
            .collect();
        out = format!("WITH {} {out}", with.join(", "));
    }
    Ok(out)
}

fn check_alias(alias: &str) -> Result<()> {
    if alias.is_empty() || alias.len() > 256 || alias.chars().any(char::is_control) {
        return err("column aliases must be 1 to 256 printable characters");
    }
    if alias.starts_with("__") {
        return err(format!("alias '{alias}': names starting with __ are reserved"));
    }
    Ok(())
}

fn from_table(db: Option<&str>, from: &[sqlparser::ast::TableWithJoins]) -> Result<&'static Table> {
    let [twj] = from else {
        return if from.is_empty() {
            err("FROM is required: SELECT ... FROM <table>")
        } else {
            err("one table per query: joins and comma lists are not supported")
        };
    };
    if !twj.joins.is_empty() {
        return err("JOIN is not supported");
    }
    match &twj.relation {
        TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_directives,
            inheritance,
        } => {
            let name = object_name(name)?;
            if args.is_some() {
                return err(format!("table functions are not allowed ({name}(...))"));
            }
            if alias.is_some() {
                return err("table aliases are not supported");
            }
            if !with_hints.is_empty()
                || version.is_some()
                || *with_ordinality
                || !partitions.is_empty()
                || json_path.is_some()
                || sample.is_some()
                || !index_directives.is_empty()
                || inheritance.is_some()
            {
                return err("unsupported table clause (hints, SAMPLE, PARTITION, ...)");
            }
            if name.to_ascii_lowercase().starts_with("system.")
                || name.to_ascii_lowercase().starts_with("information_schema.")
            {
                return err(format!("system tables are not accessible ({name})"));
            }
            catalog::table(db, &name).map_err(DialectError)
        }
        TableFactor::Derived { .. } => err("subqueries are not allowed"),
        TableFactor::TableFunction { .. } | TableFactor::Function { .. } => {
            err("table functions are not allowed")
        }
        _ => err("FROM must name a table"),
    }
}

fn object_name(name: &ObjectName) -> Result<String> {
    let mut parts = Vec::new();
    for p in &name.0 {
        match p {
            ObjectNamePart::Identifier(i) => parts.push(i.value.clone()),
            ObjectNamePart::Function(_) => return err("table functions are not allowed"),
        }
    }
    if parts.len() > 2 {
        return err(format!("bad table name '{}'", parts.join(".")));
    }
    Ok(parts.join("."))
}

fn limit_offset(lc: Option<&LimitClause>, limits: &Limits) -> Result<(u64, u64)> {
    let num = |e: &Expr, what: &str| -> Result<u64> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => {
                    n.parse().map_err(|_| DialectError(format!("{what} {n} is not a count")))
                }
                _ => err(format!("{what} takes a number")),
            },
            _ => err(format!("{what} takes a number")),
        }
    };
    let (limit, offset) = match lc {
        None => (None, 0),
        Some(LimitClause::LimitOffset { limit, offset, limit_by }) => {
            if !limit_by.is_empty() {
                return err("LIMIT BY is not supported");
            }
            let l = limit.as_ref().map(|e| num(e, "LIMIT")).transpose()?;
            let o = offset.as_ref().map(|o| num(&o.value, "OFFSET")).transpose()?.unwrap_or(0);
            (l, o)
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
            (Some(num(limit, "LIMIT")?), num(offset, "OFFSET")?)
        }
    };
    let limit = match limit {
        Some(l) if l > limits.max_rows => {
            return err(format!("LIMIT {l} is above the maximum of {} rows", limits.max_rows))
        }
        Some(l) => l,
        None => limits.max_rows,
    };
    if offset > 1_000_000_000 {
        return err("OFFSET is too large");
    }
    Ok((limit, offset))
}

/// A GROUP BY / ORDER BY item: an output alias, a 1-based position, or an
/// expression.
fn by_item(ctx: &mut Ctx, e: &Expr, clause: Clause) -> Result<String> {
    if let Expr::Value(v) = e {
        if let Value::Number(n, _) = &v.value {
            let i: usize = n.parse().unwrap_or(0);
            return match ctx.aliases.get(i.wrapping_sub(1)) {
                Some((_, sql)) => Ok(sql.clone()),
                None => err(format!("position {n} is not a column of the SELECT list")),
            };
        }
    }
    expr(ctx, e, clause, false)
}

/// Finds the time(N) bucket in an expression.
fn find_bucket(e: &Expr, bucket: &mut Option<u32>, depth: usize) -> Result<()> {
    if depth >= MAX_DEPTH {
        return err(format!("expression nested deeper than {MAX_DEPTH} levels"));
    }
    match e {
        Expr::Function(f) => {
            if fn_name(f).as_deref() == Some("time") {
                let secs = bucket_secs(f)?;
                match bucket {
                    Some(b) if *b != secs => {
                        return err("one time bucket per query: time() is used with two widths")
                    }
                    _ => *bucket = Some(secs),
                }
            } else if let FunctionArguments::List(l) = &f.args {
                for a in &l.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = a {
                        find_bucket(e, bucket, depth + 1)?;
                    }
                }
            }
        }
        Expr::BinaryOp { .. } => {
            let (first, rest) = left_chain(e);
            if !rest.is_empty() {
                find_bucket(first, bucket, depth + 1)?;
                for (_, r) in rest {
                    find_bucket(r, bucket, depth + 1)?;
                }
            } else if let Expr::BinaryOp { left, right, .. } = e {
                find_bucket(left, bucket, depth + 1)?;
                find_bucket(right, bucket, depth + 1)?;
            }
        }
        Expr::Nested(e) | Expr::UnaryOp { expr: e, .. } => find_bucket(e, bucket, depth + 1)?,
        _ => {}
    }
    Ok(())
}

fn fn_name(f: &Function) -> Option<String> {
    match f.name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(i.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// Parses the width of time(60s), time(1m), time(60), time('5m').
fn bucket_secs(f: &Function) -> Result<u32> {
    let args = plain_args(f)?;
    let text = match args.as_slice() {
        [FunctionArgExpr::Expr(Expr::Identifier(i))] => i.value.clone(),
        [FunctionArgExpr::Expr(Expr::Value(v))] => match &v.value {
            Value::Number(n, _) => n.clone(),
            Value::SingleQuotedString(s) => s.clone(),
            _ => return err("time() takes a width such as 60s, 1m, 1h or 60 (seconds)"),
        },
        _ => return err("time() takes a width such as 60s, 1m, 1h or 60 (seconds)"),
    };
    let t = text.trim().to_ascii_lowercase();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t.as_str(), 1u64),
        Some((i, _)) => {
            let mult = match &t[i..] {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return err(format!("time({text}): the unit must be s, m, h or d")),
            };
            (&t[..i], mult)
        }
    };
    let n: u64 = num.parse().map_err(|_| DialectError(format!("time({text}): bad width")))?;
    let secs = n.saturating_mul(mult);
    if secs == 0 || secs > 31 * 86_400 {
        return err(format!("time({text}): the width must be 1s to 31d"));
    }
    Ok(secs as u32)
}

fn plain_args(f: &Function) -> Result<Vec<&FunctionArgExpr>> {
    let name = f.name.to_string();
    if !matches!(f.parameters, FunctionArguments::None) {
        return err(format!("{name}: parametric calls are not supported"));
    }
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
        return err(format!("{name}: FILTER, OVER and WITHIN GROUP are not supported"));
    }
    if f.null_treatment.is_some() || f.uses_odbc_syntax {
        return err(format!("{name}: unsupported call syntax"));
    }
    match &f.args {
        FunctionArguments::None => Ok(Vec::new()),
        FunctionArguments::Subquery(_) => err("subqueries are not allowed"),
        FunctionArguments::List(l) => {
            if l.duplicate_treatment.is_some() {
                return err(format!("{name}(DISTINCT ...) is not supported; use Uniq(x)"));
            }
            if !l.clauses.is_empty() {
                return err(format!("{name}: clauses inside the call are not supported"));
            }
            l.args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(a) => Ok(a),
                    _ => err(format!("{name}: named arguments are not supported")),
                })
                .collect()
        }
    }
}

enum Lit {
    Str(String),
    Num(String),
}

fn literal(e: &Expr) -> Option<Lit> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                Some(Lit::Str(s.clone()))
            }
            Value::Number(n, _) => Some(Lit::Num(n.clone())),
            _ => None,
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match literal(expr) {
            Some(Lit::Num(n)) if !n.starts_with('-') => Some(Lit::Num(format!("-{n}"))),
            _ => None,
        },
        _ => None,
    }
}

fn number(n: &str) -> Result<String> {
    let ok = !n.is_empty()
        && n.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && n.parse::<f64>().is_ok();
    if ok {
        Ok(n.to_string())
    } else {
        err(format!("bad number '{n}'"))
    }
}

/// A literal compared with a tag, in the tag's physical type.
fn coerce(ctx: &Ctx, kind: &TagKind, lit: &Lit) -> Result<String> {
    Ok(match (kind, lit) {
        (TagKind::Time { .. }, Lit::Str(s)) if ctx.table.time64 => {
            format!("parseDateTime64BestEffort({}, 6, 'UTC')", quote_str(s))
        }
        (TagKind::Time { .. }, Lit::Str(s)) => {
            format!("parseDateTimeBestEffort({}, 'UTC')", quote_str(s))
        }
        (TagKind::Time { .. }, Lit::Num(n)) => format!("toDateTime({})", number(n)?),
        (TagKind::Ip { .. }, Lit::Str(s)) => {
            if s.parse::<std::net::IpAddr>().is_err() {
                return err(format!("'{s}' is not an IP address"));
            }
            format!("toIPv6({})", quote_str(s))
        }
        (_, Lit::Str(s)) => quote_str(s),
        (_, Lit::Num(n)) => number(n)?,
    })
}

fn tag_of(ctx: &Ctx, e: &Expr) -> Option<catalog::Tag> {
    match e {
        Expr::Identifier(i) if ctx.table.metric(&i.value).is_none() => ctx.table.tag(&i.value),
        _ => None,
    }
}

/// `id_col [NOT] IN (ids whose name matches)` for a resource tag.
fn dict_filter(column: &str, tag_type: &str, negated: bool, name_pred: &str) -> String {
    format!(
        "{column} {}IN (SELECT id FROM flow_tag.tag_dict FINAL WHERE tag_type = {} AND name {name_pred})",
        if negated { "NOT " } else { "" },
        quote_str(tag_type)
    )
}

fn cmp_op(op: &BinaryOperator) -> Option<&'static str> {
    Some(match op {
        BinaryOperator::Eq => "=",
        BinaryOperator::NotEq => "!=",
        BinaryOperator::Lt => "<",
        BinaryOperator::LtEq => "<=",
        BinaryOperator::Gt => ">",
        BinaryOperator::GtEq => ">=",
        _ => return None,
    })
}

fn flip(op: &'static str) -> &'static str {
    match op {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        o => o,
    }
}

const AGGREGATES: &[&str] =
    &["count", "sum", "avg", "max", "min", "uniq", "percentile", "persecond"];

/// Deepest expression nesting accepted (chains of binary operators are
/// walked in a loop and do not count).
const MAX_DEPTH: usize = 64;

/// The operands of a left-deep chain of binary operators (`a OR b OR c`,
/// `a + b - c`): the parser builds them left-deep and as long as the text,
/// so they are walked in a loop, not recursively. Comparisons end a chain.
fn left_chain(e: &Expr) -> (&Expr, Vec<(&BinaryOperator, &Expr)>) {
    let mut rest = Vec::new();
    let mut cur = e;
    while let Expr::BinaryOp { left, op, right } = cur {
        if cmp_op(op).is_some() {
            break;
        }
        rest.push((op, right.as_ref()));
        cur = left;
    }
    rest.reverse();
    (cur, rest)
}

fn expr(ctx: &mut Ctx, e: &Expr, clause: Clause, in_agg: bool) -> Result<String> {
    if ctx.depth >= MAX_DEPTH {
        return err(format!("expression nested deeper than {MAX_DEPTH} levels"));
    }
    ctx.depth += 1;
    let r = expr_at(ctx, e, clause, in_agg);
    ctx.depth -= 1;
    r
}

fn expr_at(ctx: &mut Ctx, e: &Expr, clause: Clause, in_agg: bool) -> Result<String> {
    match e {
        Expr::Identifier(i) => ident(ctx, &i.value, clause, in_agg),
        Expr::CompoundIdentifier(parts) => err(format!(
            "qualified names are not supported ({})",
            parts.iter().map(|p| p.value.as_str()).collect::<Vec<_>>().join(".")
        )),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(quote_str(s)),
            Value::Number(n, _) => number(n),
            Value::Boolean(b) => Ok(b.to_string()),
            Value::Null => Ok("NULL".into()),
            other => err(format!("unsupported literal {other}")),
        },
        Expr::Nested(inner) => Ok(format!("({})", expr(ctx, inner, clause, in_agg)?)),
        Expr::UnaryOp { op, expr: inner } => {
            let x = expr(ctx, inner, clause, in_agg)?;
            match op {
                UnaryOperator::Not => Ok(format!("NOT ({x})")),
                UnaryOperator::Minus => Ok(format!("-({x})")),
                UnaryOperator::Plus => Ok(x),
                _ => err(format!("unsupported operator {op}")),
            }
        }
        Expr::BinaryOp { left, op, right } if cmp_op(op).is_some() => {
            let c = cmp_op(op).unwrap_or("=");
            if let Some(special) = tag_comparison(ctx, left, c, right, clause)? {
                return Ok(special);
            }
            let l = expr(ctx, left, clause, in_agg)?;
            let r = expr(ctx, right, clause, in_agg)?;
            Ok(format!("({l} {c} {r})"))
        }
        Expr::BinaryOp { .. } => {
            let (first, rest) = left_chain(e);
            let mut out = expr(ctx, first, clause, in_agg)?;
            for (op, right) in rest {
                let sym = match op {
                    BinaryOperator::Plus => "+",
                    BinaryOperator::Minus => "-",
                    BinaryOperator::Multiply => "*",
                    BinaryOperator::Divide => "/",
                    BinaryOperator::Modulo => "%",
                    BinaryOperator::And => "AND",
                    BinaryOperator::Or => "OR",
                    op => return err(format!("unsupported operator {op}")),
                };
                let r = expr(ctx, right, clause, in_agg)?;
                out = format!("({out} {sym} {r})");
            }
            Ok(out)
        }
        Expr::IsNull(x) => Ok(format!("({} IS NULL)", expr(ctx, x, clause, in_agg)?)),
        Expr::IsNotNull(x) => Ok(format!("({} IS NOT NULL)", expr(ctx, x, clause, in_agg)?)),
        Expr::In { expr: x, target, negated, global } => {
            let list = match target {
                InTarget::List(l) if !*global => l,
                InTarget::List(_) => return err("GLOBAL IN is not supported"),
                _ => return err("subqueries are not allowed"),
            };
            if list.is_empty() {
                return err("IN () needs at least one value");
            }
            let lits: Option<Vec<Lit>> = list.iter().map(literal).collect();
            if let (Some(tag), Some(lits)) = (tag_of(ctx, x), lits.as_ref()) {
                if let TagKind::Resource { column, tag_type } = &tag.kind {
                    let names = lits
                        .iter()
                        .map(|l| match l {
                            Lit::Str(s) => Ok(quote_str(s)),
                            Lit::Num(_) => err(format!("{} takes names (strings)", tag.name)),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let pred = format!("IN ({})", names.join(", "));
                    return Ok(dict_filter(column, tag_type, *negated, &pred));
                }
                let col = tag_expr_for_compare(&tag.kind, ctx);
                let vals =
                    lits.iter().map(|l| coerce(ctx, &tag.kind, l)).collect::<Result<Vec<_>>>()?;
                return Ok(format!(
                    "({col} {}IN ({}))",
                    if *negated { "NOT " } else { "" },
                    vals.join(", ")
                ));
            }
            let l = expr(ctx, x, clause, in_agg)?;
            let vals =
                list.iter().map(|v| expr(ctx, v, clause, in_agg)).collect::<Result<Vec<_>>>()?;
            Ok(format!("({l} {}IN ({}))", if *negated { "NOT " } else { "" }, vals.join(", ")))
        }
        Expr::Between { expr: x, negated, low, high } => {
            let not = if *negated { "NOT " } else { "" };
            if let Some(tag) =
                tag_of(ctx, x).filter(|t| !matches!(t.kind, TagKind::Resource { .. }))
            {
                let bound = |ctx: &mut Ctx, b: &Expr| match literal(b) {
                    Some(l) => coerce(ctx, &tag.kind, &l),
                    None => expr(ctx, b, clause, in_agg),
                };
                let (lo, hi) = (bound(ctx, low)?, bound(ctx, high)?);
                let col = tag_expr_for_compare(&tag.kind, ctx);
                return Ok(format!("({col} {not}BETWEEN {lo} AND {hi})"));
            }
            let (x, lo, hi) = (
                expr(ctx, x, clause, in_agg)?,
                expr(ctx, low, clause, in_agg)?,
                expr(ctx, high, clause, in_agg)?,
            );
            Ok(format!("({x} {not}BETWEEN {lo} AND {hi})"))
        }
        Expr::Like { negated, any, expr: x, pattern, escape_char }
        | Expr::ILike { negated, any, expr: x, pattern, escape_char } => {
            if *any || escape_char.is_some() {
                return err("LIKE ANY and ESCAPE are not supported");
            }
            let op = match (e, negated) {
                (Expr::Like { .. }, false) => "LIKE",
                (Expr::Like { .. }, true) => "NOT LIKE",
                (_, false) => "ILIKE",
                (_, true) => "NOT ILIKE",
            };
            let Some(Lit::Str(p)) = literal(pattern) else {
                return err(format!("{op} takes a string pattern"));
            };
            if let Some(tag) = tag_of(ctx, x) {
                if let TagKind::Resource { column, tag_type } = &tag.kind {
                    let positive = op.trim_start_matches("NOT ");
                    return Ok(dict_filter(
                        column,
                        tag_type,
                        *negated,
                        &format!("{positive} {}", quote_str(&p)),
                    ));
                }
            }
            let x = expr(ctx, x, clause, in_agg)?;
            Ok(format!("({x} {op} {})", quote_str(&p)))
        }
        Expr::Interval(iv) => {
            if iv.last_field.is_some() || iv.leading_precision.is_some() {
                return err("only INTERVAL n UNIT is supported");
            }
            let n = match literal(&iv.value) {
                Some(Lit::Num(n)) | Some(Lit::Str(n)) => n,
                None => return err("INTERVAL takes a number"),
            };
            let n: u64 =
                n.trim().parse().map_err(|_| DialectError(format!("INTERVAL {n}: not a count")))?;
            let unit = match iv.leading_field {
                Some(DateTimeField::Second) | Some(DateTimeField::Seconds) => "Second",
                Some(DateTimeField::Minute) | Some(DateTimeField::Minutes) => "Minute",
                Some(DateTimeField::Hour) | Some(DateTimeField::Hours) => "Hour",
                Some(DateTimeField::Day) | Some(DateTimeField::Days) => "Day",
                Some(DateTimeField::Week(_)) | Some(DateTimeField::Weeks) => "Week",
                _ => return err("INTERVAL unit must be SECOND, MINUTE, HOUR, DAY or WEEK"),
            };
            Ok(format!("toInterval{unit}({n})"))
        }
        Expr::Function(f) => function(ctx, f, clause, in_agg),
        Expr::Subquery(_) | Expr::Exists { .. } => err("subqueries are not allowed"),
        other => err(format!("unsupported expression: {other}")),
    }
}

/// The side of a comparison a tag stands on (the physical column for IP and
/// time, so indexes apply).
fn tag_expr_for_compare(kind: &TagKind, ctx: &mut Ctx) -> String {
    match kind {
        TagKind::Ip { column } | TagKind::Time { column } => column.clone(),
        k => tag_expr(k, &mut ctx.dicts),
    }
}

/// `tag <op> literal` (either way round) with the literal converted to the
/// tag's physical type, or None when the generic path applies.
fn tag_comparison(
    ctx: &mut Ctx,
    left: &Expr,
    op: &'static str,
    right: &Expr,
    clause: Clause,
) -> Result<Option<String>> {
    if clause == Clause::Having {
        return Ok(None);
    }
    let (tag, lit, op) =
        match (tag_of(ctx, left), literal(right), tag_of(ctx, right), literal(left)) {
            (Some(t), Some(l), _, _) => (t, l, op),
            (_, _, Some(t), Some(l)) => (t, l, flip(op)),
            _ => return Ok(None),
        };
    if let TagKind::Resource { column, tag_type } = &tag.kind {
        // '' is how an id without a name shows: match ids absent from the dictionary
        let unnamed = |not: &str| {
            format!(
                "{column} {not}IN (SELECT id FROM flow_tag.tag_dict FINAL WHERE tag_type = {})",
                quote_str(tag_type)
            )
        };
        return match (&lit, op) {
            (Lit::Str(s), "=") if s.is_empty() => Ok(Some(unnamed("NOT "))),
            (Lit::Str(s), "!=") if s.is_empty() => Ok(Some(unnamed(""))),
            (Lit::Str(s), "=") => {
                Ok(Some(dict_filter(column, tag_type, false, &format!("= {}", quote_str(s)))))
            }
            (Lit::Str(s), "!=") => {
                Ok(Some(dict_filter(column, tag_type, true, &format!("= {}", quote_str(s)))))
            }
            (Lit::Num(_), _) => {
                err(format!("{} is compared by name (a string); its id is {column}", tag.name))
            }
            _ => Ok(None),
        };
    }
    let col = tag_expr_for_compare(&tag.kind, ctx);
    let v = coerce(ctx, &tag.kind, &lit)?;
    Ok(Some(format!("({col} {op} {v})")))
}

fn ident(ctx: &mut Ctx, name: &str, clause: Clause, in_agg: bool) -> Result<String> {
    // Output aliases: ORDER BY and HAVING see them first (as in standard
    // SQL); GROUP BY only when no tag or metric has the name.
    if !in_agg {
        if let Some((_, sql)) = ctx.aliases.iter().find(|(a, _)| a == name) {
            let shadowed = ctx.table.tag(name).is_some() || ctx.table.metric(name).is_some();
            match clause {
                Clause::OrderBy | Clause::Having => return Ok(sql.clone()),
                Clause::GroupBy if !shadowed => return Ok(sql.clone()),
                _ => {}
            }
        }
    }
    if let Some(m) = ctx.table.metric(name) {
        return Ok(match m.kind {
            MetricKind::Value(e) => e,
            MetricKind::Ratio { sum, count, .. } => {
                format!("if({count} = 0, NULL, {sum} / {count})")
            }
        });
    }
    if let Some(t) = ctx.table.tag(name) {
        return Ok(tag_expr(&t.kind, &mut ctx.dicts));
    }
    Err(unknown_name(ctx.table, name))
}

fn function(ctx: &mut Ctx, f: &Function, clause: Clause, in_agg: bool) -> Result<String> {
    let name = fn_name(f).ok_or_else(|| DialectError(format!("unknown function {}", f.name)))?;
    let args = plain_args(f)?;
    if name == "time" {
        let secs = bucket_secs(f)?;
        if ctx.bucket.is_some_and(|b| b != secs) {
            return err("one time bucket per query: time() is used with two widths");
        }
        let g = ctx.table.granularity;
        if g > 1 && secs % g != 0 {
            // a finer bucket would split stored buckets and skew PerSecond
            return err(format!(
                "{} holds {g}-second buckets; time() must be a multiple of {g}s",
                ctx.table.name
            ));
        }
        return Ok(format!("toStartOfInterval(time, toIntervalSecond({secs}))"));
    }
    if name == "now" {
        if !args.is_empty() {
            return err("now() takes no arguments");
        }
        return Ok("now()".into());
    }
    if !AGGREGATES.contains(&name.as_str()) {
        return err(format!(
            "unknown function '{}'; functions: Count, Sum, Avg, Max, Min, Uniq, Percentile, \
             PerSecond, time, now",
            f.name
        ));
    }
    if matches!(clause, Clause::Where | Clause::GroupBy) {
        return err(format!("aggregate function {} is not allowed in {clause:?}", f.name));
    }
    if in_agg {
        return err(format!("aggregate function {} inside another aggregate", f.name));
    }
    aggregate(ctx, &name, &args, clause)
}

fn one_arg<'a>(name: &str, args: &[&'a FunctionArgExpr]) -> Result<&'a FunctionArgExpr> {
    match args {
        [a] => Ok(a),
        _ => err(format!("{name} takes one argument")),
    }
}

fn arg_expr<'a>(name: &str, a: &'a FunctionArgExpr) -> Result<&'a Expr> {
    match a {
        FunctionArgExpr::Expr(e) => Ok(e),
        _ => err(format!("{name}(*) is not supported; use Count(*)")),
    }
}

fn metric_arg(ctx: &Ctx, e: &Expr) -> Option<catalog::Metric> {
    match e {
        Expr::Identifier(i) => ctx.table.metric(&i.value),
        _ => None,
    }
}

fn aggregate(
    ctx: &mut Ctx,
    name: &str,
    args: &[&FunctionArgExpr],
    clause: Clause,
) -> Result<String> {
    match name {
        "count" => match args {
            [FunctionArgExpr::Wildcard] | [] => Ok("count()".into()),
            [FunctionArgExpr::Expr(e)] => Ok(format!("count({})", expr(ctx, e, clause, true)?)),
            _ => err("Count takes * or one argument"),
        },
        "uniq" => {
            let e = arg_expr("Uniq", one_arg("Uniq", args)?)?;
            if let Some(t) = tag_of(ctx, e) {
                if let TagKind::Resource { column, .. } = &t.kind {
                    return Ok(format!("uniq({column})"));
                }
            }
            Ok(format!("uniq({})", expr(ctx, e, clause, true)?))
        }
        "sum" | "avg" | "max" | "min" => {
            let title = match name {
                "sum" => "Sum",
                "avg" => "Avg",
                "max" => "Max",
                _ => "Min",
            };
            let e = arg_expr(title, one_arg(title, args)?)?;
            if let Some(m) = metric_arg(ctx, e) {
                if let MetricKind::Ratio { sum, count, max, .. } = &m.kind {
                    return match name {
                        "avg" => Ok(format!("(sum({sum}) / nullIf(sum({count}), 0))")),
                        "max" => Ok(format!("max({max})")),
                        "min" => Ok(format!("min(if({count} = 0, NULL, {sum} / {count}))")),
                        _ => err(format!(
                            "{} is an average; Sum({0}) has no meaning: use Avg({0}) or Sum({sum})",
                            m.name
                        )),
                    };
                }
            }
            Ok(format!("{name}({})", expr(ctx, e, clause, true)?))
        }
        "percentile" => {
            let [x, p] = args else {
                return err("Percentile takes a metric and a percent: Percentile(x, 95)");
            };
            let e = arg_expr("Percentile", x)?;
            let p = match p {
                FunctionArgExpr::Expr(pe) => match literal(pe) {
                    Some(Lit::Num(n)) => n.parse::<f64>().ok(),
                    _ => None,
                },
                _ => None,
            };
            let Some(p) = p.filter(|p| *p > 0.0 && *p <= 100.0) else {
                return err("Percentile's second argument is a percent in (0, 100]");
            };
            // Debug keeps the decimal point: ClickHouse wants a Float64 level.
            let level = format!("{:?}", p / 100.0);
            if let Some(m) = metric_arg(ctx, e) {
                if let MetricKind::Ratio { histogram, .. } = &m.kind {
                    let Some(h) = histogram else {
                        return err(format!(
                            "{} has no histogram; Percentile is not available",
                            m.name
                        ));
                    };
                    return Ok(histogram_quantile(h, &level));
                }
            }
            Ok(format!("quantile({level})({})", expr(ctx, e, clause, true)?))
        }
        "persecond" => {
            let Some(secs) = ctx.bucket else {
                return err("PerSecond needs a time bucket: add time(60s) to SELECT and GROUP BY");
            };
            let inner = match one_arg("PerSecond", args)? {
                FunctionArgExpr::Wildcard => "count()".to_string(),
                FunctionArgExpr::Expr(Expr::Function(f))
                    if fn_name(f).is_some_and(|n| AGGREGATES.contains(&n.as_str())) =>
                {
                    let n = fn_name(f).unwrap_or_default();
                    if n == "persecond" {
                        return err("PerSecond inside PerSecond");
                    }
                    aggregate(ctx, &n, &plain_args(f)?, clause)?
                }
                FunctionArgExpr::Expr(e) => {
                    aggregate(ctx, "sum", &[&FunctionArgExpr::Expr(e.clone())], clause)?
                }
                _ => return err("PerSecond takes a metric, * or an aggregate"),
            };
            Ok(format!("({inner} / {secs})"))
        }
        _ => err(format!("unknown function {name}")),
    }
}

/// A percentile from a latency histogram column (`Map(UInt16, UInt64)`,
/// bucket index -> count; bucket layout of `fathom_store::latency_bucket`):
/// each bucket stands for its midpoint (exact below 8 µs), so the answer is
/// within half a bucket (6.25%) of the true value.
fn histogram_quantile(col: &str, level: &str) -> String {
    let lower =
        |b: &str| format!("bitShiftLeft(toUInt64(8 + ({b}) % 8), greatest(intDiv({b}, 8), 1) - 1)");
    format!(
        "quantileExactWeightedArray({level})(arrayMap(b -> if(b < 8, toFloat64(b), ({} + {}) / 2), \
         mapKeys({col})), mapValues({col}))",
        lower("b"),
        lower("b + 1")
    )
}

#[cfg(test)]
mod tests;
