//! Every query shape the translator emits, run through the HTTP router
//! against the real ClickHouse engine (chDB 26.x in-process) on rows with
//! known values. Needs libchdb.so: `bash scripts/fetch-chdb.sh` (CI runs
//! it); without it this test fails and says how to get it.
//!
//! chDB allows one open store per process, so this is one test.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use fathom_store::{
    ip_column, latency_bucket, AppMetricRow, EmbeddedConfig, EmbeddedStore, Granularity, L4Row,
    L7Row, NetworkMetricRow, Store, TagRow,
};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const MINUTE_US: i64 = 60_000_000;

fn ip(s: &str) -> [u8; 16] {
    ip_column(s.parse::<IpAddr>().unwrap())
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

async fn post(app: &Router, db: &str, sql: &str) -> (StatusCode, Value) {
    let req = Request::post("/v1/query")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "db": db, "sql": sql, "debug": true }).to_string()))
        .unwrap();
    call(app, req).await
}

/// Runs a query that must succeed; returns its rows.
async fn rows(app: &Router, db: &str, sql: &str) -> Vec<Vec<Value>> {
    let (status, body) = post(app, db, sql).await;
    assert_eq!(status, StatusCode::OK, "{sql}: {body}");
    assert!(body["elapsed_ms"].as_f64().is_some(), "{body}");
    serde_json::from_value(body["rows"].clone()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

struct Fixture {
    /// Start of the first minute the rows fall in, µs.
    base: i64,
    /// Latencies (µs) summarised by the application_1m rows.
    latencies: Vec<u64>,
}

async fn load(store: &dyn Store) -> Fixture {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
            as i64;
    let base = now - now % MINUTE_US - 5 * MINUTE_US;
    let tag = |t: &str, id, name: &str| TagRow { tag_type: t.into(), id, name: name.into() };
    store
        .upsert_tags(&[
            tag("host", 1, "web-1"),
            tag("host", 2, "db-1"),
            tag("process", 10, "nginx"),
            tag("process", 11, "curl"),
        ])
        .await
        .unwrap();
    // A rename: the later write of id 2 wins.
    store.upsert_tags(&[tag("host", 2, "db-2")]).await.unwrap();

    let l7 = |dt: i64, endpoint: &str, dur: u64, host: u32, server: &str| L7Row {
        time: base + dt,
        end_time: base + dt + dur as i64,
        response_duration: dur,
        host_id_1: host,
        process_id_0: 11,
        process_id_1: 10,
        ip_0: ip("10.9.9.9"),
        ip_1: ip(server),
        client_port: 40000,
        server_port: 80,
        protocol: 6,
        l7_protocol: "http".into(),
        request_type: "GET".into(),
        endpoint: endpoint.into(),
        response_code: Some(200),
        response_status: "ok".into(),
        observation_point: "s-p".into(),
        ..Default::default()
    };
    let s = 1_000_000;
    let mut b_err = l7(20 * s, "/b", 3000, 2, "10.0.0.2");
    b_err.response_code = Some(500);
    b_err.response_status = "server_error".into();
    store
        .insert_l7(&[
            // /a: two calls in minute 0, two in minute 1
            l7(0, "/a", 100, 1, "10.0.0.1"),
            l7(10 * s, "/a", 200, 1, "10.0.0.1"),
            l7(70 * s, "/a", 300, 1, "10.0.0.1"),
            l7(80 * s, "/a", 400, 1, "10.0.0.1"),
            l7(5 * s, "/b", 1000, 2, "10.0.0.2"),
            b_err,
            // strings ClickHouse must see exactly
            l7(30 * s, "it's \\ weird", 7, 1, "::1"),
            l7(31 * s, "c:\\", 8, 1, "::1"),
            // two days old: outside "the last hour"
            l7(-2 * 86_400 * s, "/a", 99_999, 1, "10.0.0.1"),
        ])
        .await
        .unwrap();

    store
        .insert_l4(&[
            L4Row {
                time: base,
                server_port: 80,
                byte_tx: 100,
                byte_rx: 1000,
                ..Default::default()
            },
            L4Row { time: base, server_port: 80, byte_tx: 50, byte_rx: 500, ..Default::default() },
            L4Row { time: base, server_port: 443, byte_tx: 7, byte_rx: 8, ..Default::default() },
        ])
        .await
        .unwrap();

    // RED of web-1 in two 1-minute buckets, with histograms of known latencies.
    let minute0: Vec<u64> = (0..10).map(|i| 50 + i * 10).collect();
    let minute1: Vec<u64> = (1..=20).map(|i| i * 100).collect();
    let app = |t: i64, lat: &[u64], errors: u64| {
        let mut h = BTreeMap::new();
        for &l in lat {
            *h.entry(latency_bucket(l)).or_insert(0u64) += 1;
        }
        AppMetricRow {
            time: (t / 1_000_000) as u32,
            host_id: 1,
            process_id: 10,
            ip: ip("10.0.0.1"),
            server_port: 80,
            l7_protocol: "http".into(),
            endpoint: "/a".into(),
            request: lat.len() as u64,
            response: lat.len() as u64,
            server_error: errors,
            rrt_sum: lat.iter().sum(),
            rrt_count: lat.len() as u64,
            rrt_max: *lat.iter().max().unwrap(),
            rrt_histogram: h,
            ..Default::default()
        }
    };
    store
        .insert_app_metrics(
            Granularity::Minute,
            &[app(base, &minute0, 1), app(base + MINUTE_US, &minute1, 3)],
        )
        .await
        .unwrap();
    let net = |t: i64, tx, rx, rtt_sum, rtt_count| NetworkMetricRow {
        time: (t / 1_000_000) as u32,
        host_id: 2,
        server_port: 3306,
        byte_tx: tx,
        byte_rx: rx,
        rtt_sum,
        rtt_count,
        rtt_max: 900,
        ..Default::default()
    };
    store
        .insert_network_metrics(
            Granularity::Minute,
            &[net(base, 10, 20, 300, 3), net(base + MINUTE_US, 1, 2, 600, 2)],
        )
        .await
        .unwrap();
    let mut latencies = minute0;
    latencies.extend(minute1);
    latencies.sort_unstable();
    Fixture { base, latencies }
}

#[tokio::test]
async fn every_query_shape_runs_on_the_embedded_engine() {
    let dir = tempfile::tempdir().unwrap();
    let store = match EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("THE EMBEDDED ENGINE COULD NOT START, nothing was tested: {e}"),
    };
    let fx = load(store.as_ref()).await;
    let app = fathom_query::router(store.clone());
    let recent = "time >= now() - 3600";

    // Count(*) per endpoint, HAVING and ORDER BY an alias.
    let r = rows(
        &app,
        "flow_log",
        &format!(
            "SELECT endpoint, Count(*) AS n FROM l7_flow_log WHERE {recent} \
             GROUP BY endpoint HAVING n > 1 ORDER BY n DESC"
        ),
    )
    .await;
    assert_eq!(r, vec![vec![json!("/a"), json!(4)], vec![json!("/b"), json!(2)]]);

    // Resource names joined back; averages per host; the renamed host.
    let r = rows(
        &app,
        "flow_log",
        &format!(
            "SELECT host, Avg(response_duration) AS avg, Max(response_duration), \
             Min(response_duration), Sum(response_duration) FROM l7_flow_log \
             WHERE {recent} AND endpoint IN ('/a', '/b') GROUP BY host ORDER BY host"
        ),
    )
    .await;
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0][0], json!("db-2"));
    assert!(close(f(&r[0][1]), 2000.0), "{r:?}");
    assert_eq!((f(&r[0][2]), f(&r[0][3]), f(&r[0][4])), (3000.0, 1000.0, 4000.0));
    assert_eq!(r[1][0], json!("web-1"));
    assert!(close(f(&r[1][1]), 250.0), "{r:?}");

    // Filters on resource names stay on the ids.
    for (cond, want) in [
        ("host = 'db-2'", 2),
        ("host = 'db-1'", 0),
        ("host_0 = ''", 8),
        ("host != ''", 8),
        ("pod = ''", 8),
        ("host != 'web-1'", 2),
        ("host IN ('web-1', 'db-2')", 8),
        ("host LIKE 'web%'", 6),
        ("host NOT LIKE 'web%'", 2),
        ("process_0 = 'curl' AND process = 'nginx'", 8),
        ("process_1 = 'curl'", 0),
        ("server_ip = '10.0.0.2'", 2),
        ("server_ip IN ('::1', '10.0.0.1')", 6),
        ("response_code >= 500", 1),
        ("response_status = 'server_error'", 1),
        ("endpoint = 'it''s \\\\ weird'", 1),
        ("endpoint = 'c:\\\\'", 1),
        ("endpoint LIKE '%weird'", 1),
        ("l7_protocol = 'http' AND server_port = 80 AND NOT (endpoint = '/a')", 4),
    ] {
        let r = rows(
            &app,
            "flow_log",
            &format!("SELECT Count(*) FROM l7_flow_log WHERE {recent} AND ({cond})"),
        )
        .await;
        assert_eq!(r, vec![vec![json!(want)]], "{cond}");
    }

    // Time ranges as ISO strings, numbers and intervals.
    let iso = |us: i64| {
        let r = (us / 1_000_000) as u64;
        // seconds -> UTC civil time, without a date crate
        let (days, secs) = (r / 86_400, r % 86_400);
        let (y, m, d) = civil(days as i64);
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
    };
    for cond in [
        format!("time >= '{}' AND time < '{}'", iso(fx.base), iso(fx.base + MINUTE_US)),
        format!("time BETWEEN {} AND {}", fx.base / 1_000_000, fx.base / 1_000_000 + 59),
        "time >= now() - INTERVAL 1 HOUR AND endpoint = '/a' AND response_duration < 300".into(),
    ] {
        let r = rows(
            &app,
            "flow_log",
            &format!("SELECT Count(*) FROM l7_flow_log WHERE endpoint = '/a' AND {cond}"),
        )
        .await;
        assert_eq!(r, vec![vec![json!(2)]], "{cond}");
    }

    // Percentile on log rows (quantile interpolates: median of 100..400 is 250).
    let r = rows(
        &app,
        "flow_log",
        &format!(
            "SELECT Percentile(response_duration, 50), Percentile(response_duration, 100), \
             Uniq(host), Uniq(endpoint) FROM l7_flow_log WHERE {recent} AND endpoint = '/a'"
        ),
    )
    .await;
    assert!(close(f(&r[0][0]), 250.0) && close(f(&r[0][1]), 400.0), "{r:?}");
    assert_eq!((&r[0][2], &r[0][3]), (&json!(1), &json!(1)));

    // PerSecond over time buckets.
    let r = rows(
        &app,
        "flow_log",
        &format!(
            "SELECT time(60s) AS t, PerSecond(*) AS rps, Count(*) FROM l7_flow_log \
             WHERE {recent} AND endpoint = '/a' GROUP BY t ORDER BY t"
        ),
    )
    .await;
    assert_eq!(r.len(), 2, "{r:?}");
    for row in &r {
        assert!(close(f(&row[1]), 2.0 / 60.0), "{r:?}");
        assert_eq!(row[2], json!(2));
    }
    assert!(r[0][0].as_str().unwrap() < r[1][0].as_str().unwrap());

    // Raw rows with names, IPs and times.
    let r = rows(
        &app,
        "flow_log",
        &format!(
            "SELECT time, endpoint, response_duration, host, process_0, client_ip, server_ip \
             FROM l7_flow_log WHERE {recent} ORDER BY time LIMIT 2"
        ),
    )
    .await;
    assert_eq!(r.len(), 2);
    assert_eq!(
        &r[0][1..],
        &[
            json!("/a"),
            json!(100),
            json!("web-1"),
            json!("curl"),
            json!("10.9.9.9"),
            json!("10.0.0.1")
        ]
    );
    assert_eq!(r[1][1], json!("/b"));
    let r = rows(
        &app,
        "flow_log",
        &format!("SELECT DISTINCT server_ip FROM l7_flow_log WHERE {recent} ORDER BY server_ip"),
    )
    .await;
    let ips: Vec<&str> = r.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2", "::1"]);

    // LIMIT/OFFSET and positional ORDER BY.
    let r = rows(
        &app,
        "flow_log",
        &format!(
            "SELECT endpoint, Count(*) FROM l7_flow_log WHERE {recent} \
             GROUP BY endpoint ORDER BY 2 DESC, 1 LIMIT 1, 2"
        ),
    )
    .await;
    assert_eq!(r, vec![vec![json!("/b"), json!(2)], vec![json!("c:\\"), json!(1)]]);

    // L4 flows.
    let r = rows(
        &app,
        "flow_log",
        "SELECT server_port, Sum(byte_tx), Sum(byte) AS total FROM l4_flow_log GROUP BY server_port ORDER BY server_port",
    )
    .await;
    assert_eq!(
        r,
        vec![vec![json!(80), json!(150), json!(1650)], vec![json!(443), json!(7), json!(15)]]
    );

    // Application metrics: sums, averages from sum/count, max, per second.
    let r = rows(
        &app,
        "flow_metrics",
        &format!(
            "SELECT host, Sum(request), Avg(rrt), Max(rrt), Sum(error), Sum(error) / Sum(request) \
             FROM application_1m WHERE {recent} GROUP BY host"
        ),
    )
    .await;
    let lat_sum: u64 = fx.latencies.iter().sum();
    assert_eq!(r[0][0], json!("web-1"));
    assert_eq!(r[0][1], json!(30));
    assert!(close(f(&r[0][2]), lat_sum as f64 / 30.0), "{r:?}");
    assert_eq!(r[0][3], json!(2000));
    assert_eq!(r[0][4], json!(4));
    assert!(close(f(&r[0][5]), 4.0 / 30.0), "{r:?}");
    let r = rows(
        &app,
        "flow_metrics",
        &format!(
            "SELECT time(1m), PerSecond(request), Avg(rrt) FROM application_1m WHERE {recent} \
             GROUP BY time(1m) ORDER BY time(1m)"
        ),
    )
    .await;
    // an output alias equal to a metric's name, used in HAVING and ORDER BY
    let r2 = rows(
        &app,
        "flow_metrics",
        "SELECT time(1m) AS t, Sum(request) AS request FROM application_1m WHERE request > 0 \
         GROUP BY t HAVING request > 10 ORDER BY request DESC",
    )
    .await;
    assert_eq!(r2.len(), 1, "{r2:?}");
    assert_eq!(r2[0][1], json!(20));
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(close(f(&r[0][1]), 10.0 / 60.0) && close(f(&r[1][1]), 20.0 / 60.0), "{r:?}");
    assert!(close(f(&r[0][2]), 95.0) && close(f(&r[1][2]), 1050.0), "{r:?}");

    // Percentiles from the latency histograms, against the true values.
    for p in [50.0, 90.0, 99.0] {
        let r = rows(
            &app,
            "flow_metrics",
            &format!("SELECT Percentile(rrt, {p}) FROM application_1m WHERE endpoint = '/a'"),
        )
        .await;
        let got = f(&r[0][0]);
        let rank = ((p / 100.0) * fx.latencies.len() as f64).ceil() as usize;
        let want = fx.latencies[rank.max(1) - 1] as f64;
        assert!((got - want).abs() <= want * 0.125, "p{p}: histogram says {got}, true {want}");
    }

    // Network metrics.
    let r = rows(
        &app,
        "flow_metrics",
        "SELECT host, server_port, Sum(byte), Avg(rtt), Max(rtt) FROM network_1m GROUP BY host, server_port",
    )
    .await;
    assert_eq!(r.len(), 1);
    assert_eq!((&r[0][0], &r[0][1], &r[0][2]), (&json!("db-2"), &json!(3306), &json!(33)));
    assert!(close(f(&r[0][3]), 180.0), "{r:?}");
    assert_eq!(r[0][4], json!(900));

    // SHOW TAG VALUES, resource and plain.
    let r = rows(&app, "flow_log", "SHOW TAG host VALUES FROM l7_flow_log").await;
    assert_eq!(r, vec![vec![json!("db-2"), json!(2)], vec![json!("web-1"), json!(1)]]);
    let r = rows(&app, "flow_log", "SHOW TAG endpoint VALUES FROM l7_flow_log LIMIT 2").await;
    assert_eq!(r, vec![vec![json!("/a"), json!(4)], vec![json!("/b"), json!(2)]]);
    let r = rows(&app, "flow_metrics", "SHOW TAG server_ip VALUES FROM application_1m").await;
    assert_eq!(r, vec![vec![json!("10.0.0.1"), json!(2)]]);
    let r = rows(&app, "flow_metrics", "SHOW METRICS FROM network_1m").await;
    assert!(r.iter().any(|r| r[0] == json!("rtt")));

    // Observation points: a call between two local processes is one RED
    // row at each end; a flow names the process at each end.
    let red = |point: &str, process_id: u32| AppMetricRow {
        time: (fx.base / 1_000_000) as u32,
        observation_point: point.to_string().into(),
        process_id,
        ip: ip("127.0.0.1"),
        server_port: 8000,
        l7_protocol: "http".into(),
        endpoint: "/".into(),
        request: 5,
        response: 5,
        ..Default::default()
    };
    store.insert_app_metrics(Granularity::Second, &[red("c-p", 11), red("s-p", 10)]).await.unwrap();
    store
        .insert_l4(&[L4Row {
            time: fx.base,
            observation_point: "s".into(),
            process_id_0: 11,
            pid_0: 7,
            process_id_1: 10,
            pid_1: 9,
            server_port: 8000,
            ..Default::default()
        }])
        .await
        .unwrap();
    let r = rows(
        &app,
        "flow_metrics",
        "SELECT observation_point, Sum(request) AS n FROM application_1s \
         WHERE server_port = 8000 GROUP BY observation_point ORDER BY observation_point",
    )
    .await;
    assert_eq!(r, vec![vec![json!("c-p"), json!(5)], vec![json!("s-p"), json!(5)]]);
    let r = rows(
        &app,
        "flow_metrics",
        "SELECT process, Sum(request) FROM application_1s \
         WHERE observation_point = 's-p' GROUP BY process",
    )
    .await;
    assert_eq!(r, vec![vec![json!("nginx"), json!(5)]], "the server end alone");
    let r = rows(&app, "flow_metrics", "SHOW TAGS FROM application_1s").await;
    assert!(r.iter().any(|t| t[0] == json!("observation_point")), "{r:?}");
    let r =
        rows(&app, "flow_metrics", "SHOW TAG observation_point VALUES FROM application_1s").await;
    assert_eq!(r, vec![vec![json!("c-p"), json!(1)], vec![json!("s-p"), json!(1)]]);
    let r = rows(
        &app,
        "flow_log",
        "SELECT process_0, process_1, pid_0, pid_1, observation_point, Count(*) FROM l4_flow_log \
         WHERE server_port = 8000 GROUP BY process_0, process_1, pid_0, pid_1, observation_point",
    )
    .await;
    assert_eq!(
        r,
        vec![vec![json!("curl"), json!("nginx"), json!(7), json!(9), json!("s"), json!(1)]]
    );

    // Form bodies; the answer's shape.
    let req = Request::post("/v1/query")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("db=flow_log&sql=SELECT+Count(*)+AS+n+FROM+l7_flow_log"))
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["columns"], json!(["n"]));
    assert_eq!(body["types"], json!(["UInt64"]));
    assert_eq!(body["rows"], json!([[9]]));
    assert!(body["rows_read"].as_u64().is_some());

    // User errors are 400s with a message; the store keeps working.
    for (sql, why) in [
        ("DROP TABLE flow_log.l7_flow_log", "refused"),
        ("SELECT name FROM system.tables", "system tables"),
        ("SELECT * FROM file('/etc/passwd')", "table functions"),
        ("SELECT Count(*) FROM l7_flow_log; DROP TABLE flow_log.l7_flow_log", "one statement"),
        ("SELECT nope FROM l7_flow_log", "'nope'"),
        // the engine refuses this one (endpoint is neither grouped nor aggregated)
        ("SELECT endpoint, Count(*) FROM l7_flow_log", "query failed"),
        ("SELECT Count(*) FROM l7_flow_log WHERE time > 'not a time'", "query failed"),
    ] {
        let (status, body) = post(&app, "flow_log", sql).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{sql}: {msg}");
    }
    let req = Request::post("/v1/query")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("JSON"));
    let r = rows(&app, "flow_log", "SELECT Count(*) FROM l7_flow_log").await;
    assert_eq!(r, vec![vec![json!(9)]], "the table survived");

    let (status, body) = call(&app, Request::get("/v1/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "status": "ok", "store": "embedded" }));
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian.
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
