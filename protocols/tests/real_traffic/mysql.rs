//! MySQL: mariadbd in a temp datadir; the mariadb CLI over TCP (text
//! protocol: DDL, INSERT, SELECT with rows, a syntax error, an unknown
//! table) and mysql-connector-python with `cursor(prepared=True)` (binary
//! protocol: COM_STMT_PREPARE / RESET / EXECUTE / CLOSE, a failing PREPARE).
//! Reference: tshark's MySQL dissector; a command's error code is the
//! ERR packet the server sends before the next command of that connection.

use std::process::Command;

use fathom_protocols::L7Protocol;

use crate::compare::{assert_all, compare, number_by_conn, Msg};
use crate::flows::decode_pcap;
use crate::harness::*;

const PORT: u16 = 23306;

pub fn com_name(n: u64) -> String {
    match n {
        0 => "COM_SLEEP",
        1 => "COM_QUIT",
        2 => "COM_INIT_DB",
        3 => "COM_QUERY",
        4 => "COM_FIELD_LIST",
        5 => "COM_CREATE_DB",
        6 => "COM_DROP_DB",
        7 => "COM_REFRESH",
        9 => "COM_STATISTICS",
        10 => "COM_PROCESS_INFO",
        12 => "COM_PROCESS_KILL",
        13 => "COM_DEBUG",
        14 => "COM_PING",
        17 => "COM_CHANGE_USER",
        22 => "COM_STMT_PREPARE",
        23 => "COM_STMT_EXECUTE",
        24 => "COM_STMT_SEND_LONG_DATA",
        25 => "COM_STMT_CLOSE",
        26 => "COM_STMT_RESET",
        27 => "COM_SET_OPTION",
        28 => "COM_STMT_FETCH",
        31 => "COM_RESET_CONNECTION",
        _ => return format!("COM_{n}"),
    }
    .to_string()
}

/// The documented rule: errors caused by the statement itself are client errors.
fn mysql_status(code: &str) -> Option<&'static str> {
    match code {
        "" => Some("ok"),
        "1064" | "1146" | "1054" | "1049" => Some("client_error"),
        _ => None,
    }
}

const SCRIPT: &str = "\
CREATE DATABASE IF NOT EXISTS fathom;
USE fathom;
CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(32), price DOUBLE);
INSERT INTO items VALUES (1, 'one', 1.0), (2, 'two', 2.0), (3, 'three', 3.0);
SELECT id, name, price FROM items ORDER BY id;
SELEC oops FROM items;
SELECT * FROM no_such_table;
UPDATE items SET price = price * 2 WHERE id > 1;
/* traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 */ SELECT COUNT(*) FROM items;
";

#[test]
fn mysql() {
    require(&["dumpcap", "tshark", "mariadbd", "mariadb", "mariadb-install-db", "python3"]);
    require_py(&["mysql.connector"]);
    let dir = TempDir::new("mysql");
    let data = dir.join("data");
    run(
        "mariadb-install-db",
        Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--user=root",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display())),
    );
    let mut srv = Proc::spawn_on(
        "mariadbd",
        Command::new("mariadbd")
            .args([
                "--no-defaults",
                "--user=root",
                "--skip-grant-tables",
                "--skip-log-bin",
                "--bind-address=127.0.0.1",
            ])
            .args(["--innodb-buffer-pool-size=16M", "--skip-name-resolve"])
            .arg(format!("--port={PORT}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display())),
        &dir,
        &[PORT],
    );
    wait_port(PORT, &mut srv);
    std::fs::write(dir.join("script.sql"), SCRIPT).unwrap();
    let cap = Capture::start(&dir, &format!("tcp port {PORT}"));
    // --force: go on after the two failing statements.
    // (It exits non-zero because of the planned errors: `; true`.)
    let out = run(
        "mariadb client",
        Command::new("sh").arg("-c").arg(format!(
            "mariadb -h 127.0.0.1 -P {PORT} -u root --skip-ssl --force --comments < {}; true",
            dir.join("script.sql").display()
        )),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1064") && stderr.contains("1146"),
        "mariadb client errors not as planned:\n{stderr}"
    );
    let ps =
        run("mysql_ps.py", Command::new("python3").arg(peer("mysql_ps.py")).arg(PORT.to_string()));
    let pcap = cap.stop();
    srv.check_alive();
    let ps_stdout = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps_stdout.contains("1146"),
        "prepared-statement client did not see the planned error:\n{ps_stdout}"
    );

    let d = decode_pcap(&pcap, &[PORT]);
    crate::dump_ours("mysql", &d);
    crate::flows::check_tcp_bytes(&pcap, &d);
    let rows = tshark_fields(
        &pcap,
        &[format!("tcp.port=={PORT},mysql")],
        "mysql",
        &[
            "tcp.srcport",
            "tcp.dstport",
            "mysql.command",
            "mysql.query",
            "mysql.error_code",
            "mysql.stmt_id",
        ],
    );
    let mut reference: Vec<Msg> = Vec::new();
    let mut last: std::collections::HashMap<u16, usize> = Default::default();
    // Statement id -> SQL, learnt from PREPARE and its OK response: an
    // EXECUTE's SQL text is that of its statement.
    let mut stmts: std::collections::HashMap<(u16, u64), String> = Default::default();
    for r in &rows {
        let to_server = num(&r[1]) as u16 == PORT;
        if to_server {
            let conn = num(&r[0]) as u16;
            // One command per client frame here (no pipelining in MySQL clients).
            for (i, c) in occ(&r[2]).iter().enumerate() {
                let com = com_name(num(c));
                let mut m = Msg::new(conn, 0).f("type", &com);
                if let Some(q) = occ(&r[3]).get(i) {
                    m = m.f("sql", q);
                }
                if com == "COM_STMT_EXECUTE" {
                    let id = occ(&r[5]).first().map(|x| num(x)).expect("EXECUTE without stmt id");
                    m = m
                        .f("sql", stmts.get(&(conn, id)).expect("EXECUTE of an unknown statement"));
                }
                last.insert(conn, reference.len());
                reference.push(m);
            }
        } else {
            let conn = num(&r[1]) as u16;
            let Some(&i) = last.get(&conn) else { continue };
            if let Some(code) = occ(&r[4]).first() {
                reference[i].fields.push(("code", code.to_string()));
            }
            if reference[i].get("type") == Some("COM_STMT_PREPARE") {
                if let Some(id) = occ(&r[5]).first() {
                    let sql = reference[i].get("sql").unwrap_or("").to_string();
                    stmts.insert((conn, num(id)), sql);
                }
            }
        }
    }
    for m in reference.iter_mut() {
        let t = m.get("type").unwrap_or("").to_string();
        if t == "COM_QUIT" || t == "COM_STMT_CLOSE" {
            continue; // no response by protocol rule
        }
        let code = m.get("code").unwrap_or("").to_string();
        if let Some(s) = mysql_status(&code) {
            m.fields.push(("status", s.to_string()));
        }
    }
    number_by_conn(&mut reference);
    crate::dump_ref("mysql", &reference);
    let queries = reference.iter().filter(|m| m.get("type") == Some("COM_QUERY")).count();
    let prepares = reference.iter().filter(|m| m.get("type") == Some("COM_STMT_PREPARE")).count();
    let executes = reference.iter().filter(|m| m.get("type") == Some("COM_STMT_EXECUTE")).count();
    assert!(
        queries >= 9 && prepares == 4 && executes == 3,
        "tshark saw {queries} queries, {prepares} prepares, {executes} executes"
    );

    let mut ours: Vec<Msg> = crate::ours_of(&d, &[L7Protocol::MySql])
        .iter()
        .filter(|o| o.rec.request_type.starts_with("COM_"))
        .map(|o| {
            let r = &o.rec;
            Msg::new(o.client_port, 0)
                .f("type", &r.request_type)
                .f("sql", &r.request_resource)
                .f("code", r.response_code.map(|c| c.to_string()).unwrap_or_default())
                .f("status", r.response_status.as_str())
        })
        .collect();
    number_by_conn(&mut ours);
    // Reference messages without an error code expect ours to have none.
    for m in reference.iter_mut() {
        if m.get("code").is_none() && m.get("status") == Some("ok") {
            m.fields.push(("code", String::new()));
        }
    }
    let a = compare("mysql", &reference, &ours);
    assert_all(&[a]);
}
