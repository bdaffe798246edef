//! The API over a real TCP listener, and its answers when the store fails
//! (a store double that fails the way a backend does; the engine itself is
//! exercised in tests/embedded.rs).

use std::sync::Arc;

use async_trait::async_trait;
use fathom_store::{
    AppMetricRow, Granularity, L4Row, L7Row, NetworkMetricRow, QueryResult, Store, StoreError,
    TagRow,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A store whose every call fails with the error its function makes.
struct Failing(fn() -> StoreError);

#[async_trait]
impl Store for Failing {
    fn backend(&self) -> &'static str {
        "clickhouse"
    }
    async fn insert_l7(&self, _: &[L7Row]) -> fathom_store::Result<()> {
        Err((self.0)())
    }
    async fn insert_l4(&self, _: &[L4Row]) -> fathom_store::Result<()> {
        Err((self.0)())
    }
    async fn insert_app_metrics(
        &self,
        _: Granularity,
        _: &[AppMetricRow],
    ) -> fathom_store::Result<()> {
        Err((self.0)())
    }
    async fn insert_network_metrics(
        &self,
        _: Granularity,
        _: &[NetworkMetricRow],
    ) -> fathom_store::Result<()> {
        Err((self.0)())
    }
    async fn upsert_tags(&self, _: &[TagRow]) -> fathom_store::Result<()> {
        Err((self.0)())
    }
    async fn query(&self, _: &str) -> fathom_store::Result<QueryResult> {
        Err((self.0)())
    }
}

/// Serves the router on 127.0.0.1 and sends one HTTP/1.1 request.
async fn http(store: Arc<dyn Store>, request: String) -> (u16, Value) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, fathom_query::router(store)).await.unwrap();
    });
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    server.abort();
    let text = String::from_utf8(raw).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")))
}

fn post(sql: &str) -> String {
    let body = serde_json::json!({ "db": "flow_log", "sql": sql }).to_string();
    format!(
        "POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn store_failures_are_5xx_and_user_errors_400_over_tcp() {
    let down: Arc<dyn Store> = Arc::new(Failing(|| StoreError::Connection("refused".into())));
    let (status, body) = http(down.clone(), post("SELECT Count(*) FROM l7_flow_log")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("refused"), "{body}");
    // refused before the store is asked
    let (status, body) = http(down.clone(), post("DELETE FROM l7_flow_log")).await;
    assert_eq!(status, 400, "{body}");
    // SHOW over the catalog needs no store
    let (status, body) = http(down.clone(), post("SHOW TABLES")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0][0], "l7_flow_log");
    let (status, body) =
        http(down, "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string())
            .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");

    let broken: Arc<dyn Store> =
        Arc::new(Failing(|| StoreError::BadResult("garbage from the engine".into())));
    let (status, _) = http(broken, post("SELECT Count(*) FROM l7_flow_log")).await;
    assert_eq!(status, 500);
    let engine_refused: Arc<dyn Store> = Arc::new(Failing(|| StoreError::Query {
        code: Some(215),
        message: "NOT_AN_AGGREGATE".into(),
    }));
    let (status, _) =
        http(engine_refused, post("SELECT endpoint, Count(*) FROM l7_flow_log")).await;
    assert_eq!(status, 400);
}

/// Like [`http`], but the server may answer and close before the whole
/// request is written (a body over the limit).
async fn http_lenient(store: Arc<dyn Store>, head: String, body: Vec<u8>) -> (u16, String, Value) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, fathom_query::router(store)).await.unwrap();
    });
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(64 << 10) {
        if conn.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw).await;
    server.abort();
    let text = String::from_utf8(raw).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let v = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, headers.to_ascii_lowercase(), v)
}

#[tokio::test]
async fn errors_axum_answers_itself_are_json_too() {
    let store: Arc<dyn Store> = Arc::new(Failing(|| StoreError::Connection("refused".into())));
    // A body over the limit (axum's 2 MiB default): 413, as JSON.
    let body = vec![b' '; 3 << 20];
    let head = format!(
        "POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, headers, v) = http_lenient(store.clone(), head, body).await;
    assert_eq!(status, 413, "{v}");
    assert!(headers.contains("content-type: application/json"), "{headers}");
    assert!(v["error"].as_str().unwrap().contains("length limit"), "{v}");
    // A wrong method: 405 with its Allow header, as JSON.
    let head = "GET /v1/query HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string();
    let (status, headers, v) = http_lenient(store.clone(), head, Vec::new()).await;
    assert_eq!(status, 405, "{v}");
    assert!(headers.contains("allow: post"), "{headers}");
    assert!(v["error"].is_string(), "{v}");
    // An unknown path: 404, as JSON.
    let head = "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string();
    let (status, _, v) = http_lenient(store, head, Vec::new()).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"], "Not Found", "{v}");
}
