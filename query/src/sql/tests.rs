use super::*;

fn sql(db: &str, q: &str) -> String {
    match translate(Some(db), q, &Limits::default()) {
        Ok(Translation::Sql(s)) => s,
        other => panic!("{q}: {other:?}"),
    }
}

fn refused(db: &str, q: &str) -> String {
    match translate(Some(db), q, &Limits::default()) {
        Err(DialectError(m)) => m,
        Ok(t) => panic!("{q} was accepted: {t:?}"),
    }
}

fn rows(db: Option<&str>, q: &str) -> (Vec<String>, Vec<Vec<serde_json::Value>>) {
    match translate(db, q, &Limits::default()) {
        Ok(Translation::Rows { columns, rows }) => (columns, rows),
        other => panic!("{q}: {other:?}"),
    }
}

const SETTINGS: &str =
    " SETTINGS readonly = 1, prefer_column_name_to_alias = 1, max_execution_time = 60";

#[test]
fn count_per_endpoint() {
    assert_eq!(
        sql("flow_log", "SELECT endpoint, Count(*) AS n FROM l7_flow_log GROUP BY endpoint ORDER BY n DESC LIMIT 5"),
        format!(
            "SELECT endpoint AS `endpoint`, count() AS `n` FROM flow_log.l7_flow_log \
             GROUP BY endpoint ORDER BY count() DESC LIMIT 5{SETTINGS}"
        )
    );
}

#[test]
fn resource_tags_are_joined_through_the_dictionary() {
    let s = sql(
        "flow_log",
        "SELECT host, Avg(response_duration) FROM l7_flow_log WHERE host = 'web-1' GROUP BY host",
    );
    assert_eq!(
        s,
        format!(
            "WITH (SELECT (groupArray(id), groupArray(name)) FROM flow_tag.tag_dict FINAL WHERE tag_type = 'host') AS __tag_host \
             SELECT transform(host_id_1, __tag_host.1, __tag_host.2, '') AS `host`, avg(response_duration) AS `Avg(response_duration)` \
             FROM flow_log.l7_flow_log \
             WHERE host_id_1 IN (SELECT id FROM flow_tag.tag_dict FINAL WHERE tag_type = 'host' AND name = 'web-1') \
             GROUP BY transform(host_id_1, __tag_host.1, __tag_host.2, '') LIMIT 10000{SETTINGS}"
        )
    );
    // client side, negation, lists and patterns stay on the id column
    let s = sql("flow_log", "SELECT Count(*) FROM l7_flow_log WHERE process_0 != 'curl' AND pod_1 IN ('a', 'b') AND service NOT LIKE 'kube%'");
    assert!(s.contains("process_id_0 NOT IN (SELECT id FROM flow_tag.tag_dict FINAL WHERE tag_type = 'process' AND name = 'curl')"), "{s}");
    assert!(s.contains("pod_id_1 IN (SELECT id FROM flow_tag.tag_dict FINAL WHERE tag_type = 'pod' AND name IN ('a', 'b'))"), "{s}");
    assert!(s.contains("service_id_1 NOT IN (SELECT id FROM flow_tag.tag_dict FINAL WHERE tag_type = 'service' AND name LIKE 'kube%')"), "{s}");
    // metric tables have no side suffix; literal on the left works too
    let s = sql("flow_metrics", "SELECT Sum(request) FROM application_1m WHERE 'db-1' = host");
    assert!(s.contains("WHERE host_id IN (SELECT id FROM flow_tag.tag_dict FINAL WHERE tag_type = 'host' AND name = 'db-1')"), "{s}");
    assert!(refused("flow_log", "SELECT Count(*) FROM l7_flow_log WHERE host = 3")
        .contains("host_id_1"));
    // Uniq counts ids, no lookup
    assert!(sql("flow_log", "SELECT Uniq(pod_0) FROM l7_flow_log").contains("uniq(pod_id_0)"));
}

#[test]
fn time_buckets_and_ranges() {
    for (w, secs) in
        [("60s", 60), ("1m", 60), ("60", 60), ("'5m'", 300), ("1h", 3600), ("1d", 86400)]
    {
        let s = sql(
            "flow_metrics",
            &format!("SELECT time({w}) AS t, Sum(request) FROM application_1s GROUP BY t"),
        );
        assert!(
            s.contains(&format!("toStartOfInterval(time, toIntervalSecond({secs})) AS `t`")),
            "{s}"
        );
        assert!(
            s.contains(&format!("GROUP BY toStartOfInterval(time, toIntervalSecond({secs}))")),
            "{s}"
        );
    }
    for bad in ["0s", "5x", "40d", "a", "-1"] {
        assert!(
            refused("flow_metrics", &format!("SELECT time({bad}) FROM application_1s"))
                .contains("time"),
            "{bad}"
        );
    }
    assert!(refused("flow_metrics", "SELECT time(60s), time(1h) FROM application_1s")
        .contains("one time bucket"));
    let s = sql("flow_log", "SELECT Count(*) FROM l7_flow_log WHERE time >= now() - 3600 AND time < '2026-01-01T00:00:00Z' AND end_time > 1700000000");
    assert!(s.contains("(time >= (now() - 3600))"), "{s}");
    assert!(
        s.contains("(time < parseDateTime64BestEffort('2026-01-01T00:00:00Z', 6, 'UTC'))"),
        "{s}"
    );
    assert!(s.contains("(end_time > toDateTime(1700000000))"), "{s}");
    let s = sql("flow_metrics", "SELECT Count(*) FROM network_1m WHERE time BETWEEN '2026-01-01' AND now() - INTERVAL 1 HOUR");
    assert!(s.contains("(time BETWEEN parseDateTimeBestEffort('2026-01-01', 'UTC') AND (now() - toIntervalHour(1)))"), "{s}");
}

#[test]
fn functions() {
    let s = sql("flow_log", "SELECT Sum(response_length), Max(response_duration), Min(response_duration), Count(response_code), Uniq(endpoint), Percentile(response_duration, 99) FROM l7_flow_log");
    for part in [
        "sum(response_length)",
        "max(response_duration)",
        "min(response_duration)",
        "count(response_code)",
        "uniq(endpoint)",
        "quantile(0.99)(response_duration)",
    ] {
        assert!(s.contains(part), "{part} in {s}");
    }
    // averages kept as sum and count
    let s = sql(
        "flow_metrics",
        "SELECT Avg(rrt), Max(rrt), Sum(error), Percentile(rrt, 50) FROM application_1m",
    );
    assert!(s.contains("(sum(rrt_sum) / nullIf(sum(rrt_count), 0))"), "{s}");
    assert!(s.contains("max(rrt_max)"), "{s}");
    assert!(s.contains("sum((client_error + server_error))"), "{s}");
    assert!(s.contains("quantileExactWeightedArray(0.5)(arrayMap(b -> "), "{s}");
    assert!(refused("flow_metrics", "SELECT Sum(rrt) FROM application_1m").contains("Avg(rrt)"));
    assert!(
        refused("flow_metrics", "SELECT Percentile(rtt, 90) FROM network_1m").contains("histogram")
    );
    for bad in [
        "Percentile(response_duration, 0)",
        "Percentile(response_duration, 101)",
        "Percentile(response_duration, 'x')",
        "Percentile(response_duration)",
    ] {
        assert!(
            refused("flow_log", &format!("SELECT {bad} FROM l7_flow_log")).contains("Percentile"),
            "{bad}"
        );
    }
    // PerSecond divides by the bucket
    let s = sql("flow_metrics", "SELECT time(1m), PerSecond(request), PerSecond(Count(*)), PerSecond(*) FROM application_1s GROUP BY time(1m)");
    assert!(s.contains("(sum(request) / 60) AS `PerSecond(request)`"), "{s}");
    assert!(s.contains("(count() / 60) AS `PerSecond(Count(*))`"), "{s}");
    assert!(s.contains("(count() / 60) AS `PerSecond(*)`"), "{s}");
    assert!(refused("flow_metrics", "SELECT PerSecond(request) FROM application_1s")
        .contains("time bucket"));
    // arithmetic over aggregates, HAVING, positional GROUP BY / ORDER BY
    let s = sql("flow_metrics", "SELECT endpoint, Sum(error) / Sum(request) AS ratio FROM application_1m GROUP BY 1 HAVING Sum(request) > 10 ORDER BY 2 DESC");
    assert!(s.contains("GROUP BY endpoint HAVING (sum(request) > 10) ORDER BY (sum((client_error + server_error)) / sum(request)) DESC"), "{s}");
    assert!(refused("flow_log", "SELECT Sum(Max(response_duration)) FROM l7_flow_log")
        .contains("inside another"));
    assert!(refused("flow_log", "SELECT Count(*) FROM l7_flow_log WHERE Count(*) > 1")
        .contains("not allowed in Where"));
    assert!(
        refused("flow_log", "SELECT Count(DISTINCT endpoint) FROM l7_flow_log").contains("Uniq")
    );
    assert!(refused("flow_log", "SELECT sleep(3) FROM l7_flow_log").contains("unknown function"));
    let m = refused("flow_log", "SELECT quantile(0.5)(response_duration) FROM l7_flow_log");
    assert!(m.contains("syntax error") || m.contains("parametric"), "{m}");
}

#[test]
fn raw_rows_ips_and_limits() {
    let s = sql("flow_log", "SELECT time, client_ip, server_port, response_status FROM l7_flow_log WHERE server_ip = '10.0.0.1' AND client_ip IN ('::1', '10.0.0.2') ORDER BY time DESC LIMIT 20 OFFSET 40");
    assert!(
        s.contains("replaceRegexpOne(IPv6NumToString(ip_0), '^::ffff:', '') AS `client_ip`"),
        "{s}"
    );
    assert!(s.contains("(ip_1 = toIPv6('10.0.0.1'))"), "{s}");
    assert!(s.contains("(ip_0 IN (toIPv6('::1'), toIPv6('10.0.0.2')))"), "{s}");
    assert!(s.contains("ORDER BY time DESC LIMIT 20 OFFSET 40"), "{s}");
    assert!(refused("flow_log", "SELECT time FROM l7_flow_log WHERE server_ip = 'x'")
        .contains("not an IP"));
    assert!(refused("flow_log", "SELECT time FROM l7_flow_log LIMIT 10001").contains("maximum"));
    assert!(
        sql("flow_log", "SELECT time FROM l7_flow_log LIMIT 10, 5").contains("LIMIT 5 OFFSET 10")
    );
    assert!(sql("flow_metrics", "SELECT DISTINCT endpoint FROM application_1m")
        .starts_with("SELECT DISTINCT endpoint"));
    // an alias equal to a column is harmless (prefer_column_name_to_alias)
    let s =
        sql("flow_metrics", "SELECT Sum(request) AS request FROM application_1m WHERE request > 0");
    assert!(s.contains("sum(request) AS `request`") && s.contains("WHERE (request > 0)"), "{s}");
}

#[test]
fn unknown_names_are_named() {
    let m = refused("flow_log", "SELECT nope FROM l7_flow_log");
    assert!(m.contains("'nope'") && m.contains("SHOW TAGS FROM l7_flow_log"), "{m}");
    assert!(refused("flow_log", "SELECT Count(*) FROM l7_flow_log WHERE host_id = 1")
        .contains("'host_id'"));
    assert!(refused("flow_log", "SELECT rrt FROM l7_flow_log").contains("'rrt'"));
    assert!(refused("flow_log", "SELECT time FROM nope").contains("unknown table 'nope'"));
    assert!(refused("flow_metrics", "SELECT time FROM l7_flow_log").contains("database 'flow_log'"));
    assert!(translate(Some("default"), "SELECT 1", &Limits::default())
        .unwrap_err()
        .0
        .contains("unknown database"));
    assert!(refused("flow_log", "SELECT x.time FROM l7_flow_log").contains("qualified"));
    // the db may come from the table name alone
    assert!(matches!(
        translate(None, "SELECT time FROM flow_metrics.network_1s", &Limits::default()),
        Ok(Translation::Sql(_))
    ));
}

#[test]
fn strings_are_escaped_for_clickhouse() {
    // a value ending in a backslash must not swallow the closing quote
    let s = sql(
        "flow_log",
        r"SELECT time FROM l7_flow_log WHERE endpoint = 'a\\' OR endpoint = ' OR 1=1 --'",
    );
    assert!(s.contains(r"(endpoint = 'a\\')"), "{s}");
    assert!(s.contains("(endpoint = ' OR 1=1 --')"), "{s}");
    let s = sql(
        "flow_log",
        r"SELECT time FROM l7_flow_log WHERE endpoint = 'it''s' AND request_domain = 'x\'; DROP TABLE t; --'",
    );
    assert!(s.contains(r"(endpoint = 'it\'s')"), "{s}");
    assert!(s.contains(r"(request_domain = 'x\'; DROP TABLE t; --')"), "{s}");
    let s = sql("flow_log", "SELECT endpoint AS `we``ird\\` FROM l7_flow_log");
    assert!(s.contains(r"AS `we\`ird\\`"), "{s}");
    assert_eq!(quote_str("a\n\0'\\"), r"'a\n\0\'\\'");
}

#[test]
fn writes_and_other_statements_are_refused() {
    for q in [
        "DROP TABLE flow_log.l7_flow_log",
        "INSERT INTO l7_flow_log (endpoint) VALUES ('x')",
        "UPDATE l7_flow_log SET endpoint = 'x'",
        "DELETE FROM l7_flow_log WHERE 1",
        "ALTER TABLE l7_flow_log DELETE WHERE 1",
        "CREATE TABLE t (a Int32)",
        "TRUNCATE TABLE l7_flow_log",
        "SET max_memory_usage = 1",
        "GRANT ALL ON *.* TO x",
    ] {
        let m = refused("flow_log", q);
        assert!(m.contains("refused") || m.contains("syntax error"), "{q}: {m}");
    }
}

#[test]
fn injection_attempts_are_refused() {
    for (q, why) in [
        ("SELECT time FROM l7_flow_log; DROP TABLE l7_flow_log", "one statement"),
        (
            "SELECT time FROM l7_flow_log WHERE endpoint = ''; DROP TABLE l7_flow_log; --'",
            "syntax error",
        ),
        (
            "SELECT time FROM l7_flow_log WHERE endpoint = ''; DROP TABLE l7_flow_log; -- '",
            "one statement",
        ),
        ("SELECT time FROM l7_flow_log UNION ALL SELECT name FROM system.tables", "UNION"),
        ("SELECT name FROM system.tables", "system tables"),
        ("SELECT * FROM system.users", "system tables"),
        (
            "SELECT time FROM l7_flow_log WHERE endpoint IN (SELECT name FROM system.tables)",
            "subqueries",
        ),
        ("SELECT (SELECT 1) FROM l7_flow_log", "subqueries"),
        ("SELECT time FROM (SELECT * FROM l7_flow_log)", "subqueries"),
        ("SELECT * FROM file('/etc/passwd')", "table functions"),
        ("SELECT * FROM url('http://127.0.0.1/', CSV)", "table functions"),
        ("SELECT * FROM remote('127.0.0.1', system.one)", "table functions"),
        ("SELECT * FROM s3('http://x/y')", "table functions"),
        ("SELECT * FROM mysql('h', 'd', 't', 'u', 'p')", "table functions"),
        ("SELECT * FROM postgresql('h', 'd', 't', 'u', 'p')", "table functions"),
        ("SELECT * FROM executable('x.sh', TabSeparated, 'a String')", "table functions"),
        ("SELECT time FROM l7_flow_log SETTINGS max_result_rows = 0", "SETTINGS"),
        ("SELECT time FROM l7_flow_log FORMAT TabSeparated", "FORMAT"),
        ("SELECT time FROM l7_flow_log INTO OUTFILE '/tmp/x'", ""),
        ("SELECT time INTO @x FROM l7_flow_log", "INTO"),
        ("WITH x AS (SELECT 1) SELECT time FROM l7_flow_log", "WITH"),
        ("SELECT time FROM l7_flow_log JOIN l4_flow_log ON 1", "JOIN"),
        ("SELECT time FROM l7_flow_log, l4_flow_log", "one table"),
        ("SELECT * FROM l7_flow_log", "SELECT *"),
        ("SELECT time FROM l7_flow_log /* x */ WHERE 1 = 1 -- ; DROP TABLE x", ""),
    ] {
        match translate(Some("flow_log"), q, &Limits::default()) {
            Err(DialectError(m)) => assert!(m.contains(why), "{q}: {m}"),
            // a comment is whitespace: the query stands, and nothing after it runs
            Ok(Translation::Sql(s)) if why.is_empty() => {
                assert!(!s.contains("DROP") && !s.contains("--") && !s.contains("/*"), "{q}: {s}")
            }
            Ok(t) => panic!("{q} accepted: {t:?}"),
        }
    }
    // a system table named through db
    assert!(translate(Some("system"), "SELECT name FROM tables", &Limits::default()).is_err());
    // very deep nesting is an error, not a stack overflow
    let deep = format!("SELECT {}1{} FROM l7_flow_log", "(".repeat(5000), ")".repeat(5000));
    assert!(translate(Some("flow_log"), &deep, &Limits::default()).is_err());
    let long = format!("SELECT time FROM l7_flow_log WHERE endpoint = '{}'", "a".repeat(70_000));
    assert!(refused("flow_log", &long).contains("limit"));
}

#[test]
fn show_statements() {
    let (c, r) = rows(None, "SHOW DATABASES");
    assert_eq!(c, ["name"]);
    assert_eq!(r.len(), 2);
    let (_, r) = rows(Some("flow_metrics"), "show tables");
    assert_eq!(r.len(), 4);
    let (_, r) = rows(None, "SHOW TABLES FROM flow_log;");
    assert_eq!(
        r.iter().map(|r| r[0].as_str().unwrap()).collect::<Vec<_>>(),
        ["l7_flow_log", "l4_flow_log"]
    );
    let (c, r) = rows(Some("flow_log"), "SHOW TAGS FROM l7_flow_log");
    assert_eq!(c, ["name", "type", "description"]);
    assert!(r.iter().any(|r| r[0] == "host" && r[1] == "resource"));
    assert!(r.iter().any(|r| r[0] == "server_ip" && r[1] == "ip"));
    let (_, r) = rows(None, "SHOW TAGS FROM flow_metrics.network_1s");
    assert!(r.iter().any(|r| r[0] == "server_ip"));
    assert!(refused("flow_metrics", "SHOW TAGS FROM flow_log.l7_flow_log")
        .contains("not 'flow_metrics'"));
    let (_, r) = rows(Some("flow_metrics"), "SHOW METRICS FROM application_1m");
    assert!(r.iter().any(|r| r[0] == "rrt" && r[1] == "us"));
    let s = match translate(
        Some("flow_log"),
        "SHOW TAG host VALUES FROM l7_flow_log LIMIT 5",
        &Limits::default(),
    ) {
        Ok(Translation::Sql(s)) => s,
        o => panic!("{o:?}"),
    };
    assert_eq!(s, format!("SELECT name AS value, id FROM flow_tag.tag_dict FINAL WHERE tag_type = 'host' ORDER BY value, id LIMIT 5{SETTINGS}"));
    let s = match translate(
        Some("flow_log"),
        "SHOW TAG endpoint VALUES FROM l7_flow_log",
        &Limits::default(),
    ) {
        Ok(Translation::Sql(s)) => s,
        o => panic!("{o:?}"),
    };
    assert!(s.starts_with("SELECT endpoint AS value, count() AS count FROM flow_log.l7_flow_log WHERE time >= now() - INTERVAL 1 DAY"), "{s}");
    for (q, why) in [
        ("SHOW TAG nope VALUES FROM l7_flow_log", "'nope'"),
        ("SHOW TAG time VALUES FROM l7_flow_log", "time"),
        ("SHOW TAGS FROM nope", "unknown table"),
        ("SHOW TABLES FROM system", "unknown database"),
        ("SHOW PROCESSLIST", "unsupported SHOW"),
        ("SHOW CREATE TABLE l7_flow_log", "unsupported SHOW"),
        ("SHOW DATABASES; DROP TABLE x", "one statement"),
        ("SHOW TAG host VALUES FROM l7_flow_log LIMIT 99999", "maximum"),
    ] {
        let m = refused("flow_log", q);
        assert!(m.contains(why), "{q}: {m}");
    }
}

#[test]
fn long_and_chains_are_bounded_not_a_stack_overflow() {
    // run on a 2 MiB stack, as a tokio worker has
    let t = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let chain = vec!["endpoint='a'"; 3900].join(" OR ");
            let q = format!("SELECT time FROM l7_flow_log WHERE {chain}");
            assert!(q.len() < Limits::default().max_sql_bytes);
            translate(Some("flow_log"), &q, &Limits::default())
        })
        .unwrap();
    match t.join().expect("no stack overflow") {
        Ok(Translation::Sql(s)) => assert_eq!(s.matches(" OR ").count(), 3899),
        Ok(t) => panic!("{t:?}"),
        Err(e) => assert!(e.0.contains("nested deeper"), "{e}"),
    }
    let deep = format!(
        "SELECT time FROM l7_flow_log WHERE {}endpoint = 'a'{}",
        "NOT (".repeat(100),
        ")".repeat(100)
    );
    let m = translate(Some("flow_log"), &deep, &Limits::default()).unwrap_err().0;
    assert!(m.contains("nested deeper") || m.contains("recursion"), "{m}");
    // a reasonable chain passes
    let chain = vec!["endpoint = 'a'"; 100].join(" OR ");
    assert!(translate(
        Some("flow_log"),
        &format!("SELECT time FROM l7_flow_log WHERE {chain}"),
        &Limits::default()
    )
    .is_ok());
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        "SELECT",
        "FROM",
        "WHERE",
        "GROUP BY",
        "ORDER BY",
        "HAVING",
        "LIMIT",
        "OFFSET",
        "SHOW",
        "TAG",
        "TAGS",
        "VALUES",
        "METRICS",
        "TABLES",
        "DATABASES",
        "l7_flow_log",
        "application_1m",
        "network_1s",
        "flow_log.",
        "system.",
        "host",
        "host_0",
        "endpoint",
        "time",
        "rrt",
        "request",
        "server_ip",
        "Count(*)",
        "Sum(",
        "Avg(",
        "Percentile(",
        "PerSecond(",
        "Uniq(",
        "time(",
        "60s",
        "1m",
        "now()",
        "(",
        ")",
        ",",
        "'",
        "''",
        "\\",
        "'x'",
        "'10.0.0.1'",
        "=",
        "!=",
        "<",
        ">=",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "BETWEEN",
        "INTERVAL 1 HOUR",
        "AS",
        "`a`",
        "*",
        "+",
        "-",
        "/",
        "1",
        "95",
        "0.5",
        ";",
        "--",
        "/*",
        "*/",
        "UNION",
        "SETTINGS",
        "FORMAT",
        "DROP",
        "INTO",
        "NULL",
        "IS",
        "DISTINCT",
    ];

    proptest! {
        #[test]
        fn translating_any_token_soup_returns(idx in proptest::collection::vec(0..PIECES.len(), 0..24)) {
            let q: Vec<&str> = idx.iter().map(|&i| PIECES[i]).collect();
            let _ = translate(Some("flow_log"), &q.join(" "), &Limits::default());
            let _ = translate(None, &format!("SELECT {} FROM l7_flow_log", q.join(" ")), &Limits::default());
        }

        #[test]
        fn translating_any_text_returns(s in "\\PC{0,200}") {
            let _ = translate(None, &s, &Limits::default());
        }
    }
}
