//! The query HTTP API.
//!
//! `POST /v1/query` takes `{db, sql}` as JSON or as a form and answers
//! `{columns, types, rows, elapsed_ms, rows_read, bytes_read}`; a query the
//! dialect refuses, or that ClickHouse rejects for its shape or values, is a
//! 400 `{error}`; a store that is down or overloaded is a 503, anything else
//! from the store a 500. `GET /v1/health` checks the store answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fathom_store::{Store, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::sql::{translate, Limits, Translation};

/// Settings of the query API.
#[derive(Clone, Copy, Debug)]
pub struct QueryConfig {
    pub limits: Limits,
    /// The API gives up on a query after this long (503); ClickHouse's own
    /// `max_execution_time` (in `limits`) stops the work itself.
    pub timeout: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig { limits: Limits::default(), timeout: Duration::from_secs(65) }
    }
}

struct AppState {
    store: Arc<dyn Store>,
    config: QueryConfig,
}

/// The API over `store`, with default limits. The server mounts it
/// (port 20416).
pub fn router(store: Arc<dyn Store>) -> Router {
    router_with_config(store, QueryConfig::default())
}

pub fn router_with_config(store: Arc<dyn Store>, config: QueryConfig) -> Router {
    Router::new()
        .route("/v1/query", post(query))
        .route("/v1/health", get(health))
        .with_state(Arc::new(AppState { store, config }))
        .layer(axum::middleware::map_response(json_errors))
}

/// Longest error text kept from a response axum itself produced.
const MAX_ERROR_TEXT: usize = 4096;

/// Errors that axum answers before a handler runs (a body over the size
/// limit: 413, a wrong method: 405, an unknown path: 404) come as plain
/// text; clients of this API get every error as `{"error": "..."}`.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(b) if !b.iter().all(u8::is_ascii_whitespace) => {
            String::from_utf8_lossy(&b).trim().to_string()
        }
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut out = error(status, text);
    // Keep what axum said about the answer (Allow on a 405, ...).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct QueryRequest {
    #[serde(default)]
    db: Option<String>,
    sql: String,
    /// Adds the translated ClickHouse SQL to the answer.
    #[serde(default)]
    debug: Option<bool>,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<QueryRequest, String> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let json = |b: &[u8]| {
        serde_json::from_slice::<QueryRequest>(b).map_err(|e| format!("bad JSON body: {e}"))
    };
    let form = |b: &[u8]| {
        serde_urlencoded::from_bytes::<QueryRequest>(b).map_err(|e| format!("bad form body: {e}"))
    };
    if ctype.starts_with("application/json") || ctype.contains("+json") {
        json(body)
    } else if ctype.starts_with("application/x-www-form-urlencoded") {
        form(body)
    } else if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        json(body)
    } else {
        form(body).map_err(|e| {
            format!("{e}; send JSON {{\"db\": ..., \"sql\": ...}} or a form with db and sql")
        })
    }
}

async fn query(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let req = match parse_request(&headers, &body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let translation = match translate(req.db.as_deref(), &req.sql, &st.config.limits) {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(sql = %req.sql, error = %e, "query refused");
            return error(StatusCode::BAD_REQUEST, e.0);
        }
    };
    let sql = match translation {
        Translation::Rows { columns, rows } => {
            let types = vec!["String"; columns.len()];
            return Json(json!({
                "columns": columns,
                "types": types,
                "rows": rows,
                "elapsed_ms": started.elapsed().as_secs_f64() * 1e3,
                "rows_read": 0,
                "bytes_read": 0,
            }))
            .into_response();
        }
        Translation::Sql(sql) => sql,
    };
    let result = match tokio::time::timeout(st.config.timeout, st.store.query(&sql)).await {
        Ok(r) => r,
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("query timed out after {:?}", st.config.timeout),
            )
        }
    };
    match result {
        Ok(r) => {
            let mut body = json!({
                "columns": r.columns.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "types": r.columns.iter().map(|(_, t)| t).collect::<Vec<_>>(),
                "rows": r.rows,
                "elapsed_ms": started.elapsed().as_secs_f64() * 1e3,
                "rows_read": r.rows_read,
                "bytes_read": r.bytes_read,
            });
            if req.debug == Some(true) {
                body["sql"] = json!(sql);
            }
            Json(body).into_response()
        }
        Err(e) => {
            let status = store_error_status(&e);
            if status.is_server_error() {
                tracing::warn!(error = %e, %sql, "query failed in the store");
            }
            error(status, format!("query failed: {e}"))
        }
    }
}

/// ClickHouse error codes caused by the query's shape or values (a
/// non-aggregated column outside GROUP BY, a type mismatch, a bad date
/// string, ...): the user's to fix.
const USER_ERROR_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    36,  // BAD_ARGUMENTS
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    42,  // NUMBER_OF_ARGUMENTS_DOESNT_MATCH
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    62,  // SYNTAX_ERROR
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    153, // ILLEGAL_DIVISION
    179, // MULTIPLE_EXPRESSIONS_FOR_ALIAS
    184, // ILLEGAL_AGGREGATION
    215, // NOT_AN_AGGREGATE
    352, // AMBIGUOUS_COLUMN_NAME
    386, // NO_COMMON_TYPE
    407, // DECIMAL_OVERFLOW
    676, // CANNOT_PARSE_IPV6
];

fn store_error_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Query { code: Some(c), .. } if USER_ERROR_CODES.contains(c) => {
            StatusCode::BAD_REQUEST
        }
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::LibraryMissing(_) | StoreError::Closed | StoreError::AlreadyOpen(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let check = tokio::time::timeout(Duration::from_secs(5), st.store.query("SELECT 1")).await;
    match check {
        Ok(Ok(_)) => Json(json!({ "status": "ok", "store": st.store.backend() })).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "store": st.store.backend(), "error": e.to_string() })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "store": st.store.backend(), "error": "store did not answer in 5s" })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_as_json_or_form() {
        let mut h = HeaderMap::new();
        let r = parse_request(&h, br#"{"db":"flow_log","sql":"SELECT 1"}"#).unwrap();
        assert_eq!((r.db.as_deref(), r.sql.as_str()), (Some("flow_log"), "SELECT 1"));
        let r = parse_request(&h, b"db=flow_log&sql=SELECT+Count(*)+FROM+x").unwrap();
        assert_eq!(r.sql, "SELECT Count(*) FROM x");
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(parse_request(&h, b"db=x").unwrap_err().contains("bad JSON"));
        assert!(parse_request(&h, br#"{"db":"x"}"#).unwrap_err().contains("sql"));
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let q = |c| StoreError::Query { code: Some(c), message: String::new() };
        assert_eq!(store_error_status(&q(215)), StatusCode::BAD_REQUEST);
        assert_eq!(store_error_status(&q(241)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(store_error_status(&q(1001)), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(store_error_status(&StoreError::Closed), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            store_error_status(&StoreError::Connection("x".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
