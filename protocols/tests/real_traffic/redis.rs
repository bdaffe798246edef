//! Redis: redis-server with redis-cli (plain commands, an error reply,
//! HELLO 3 switching to RESP3) and redis-benchmark with pipelining (-P 16).
//! Reference: tshark's RESP dissector for the commands (array lengths split
//! the flat list of bulk strings of a frame into commands); for replies,
//! per-frame error markers where one frame holds one reply, else "all ok"
//! for connections without any error reply. Only "error or not" is
//! compared: whether an -ERR is the client's or the server's fault is the
//! parser's documented rule, not something tshark can tell.

use std::collections::BTreeMap;
use std::process::Command;

use fathom_protocols::{L7Protocol, ResponseStatus};

use crate::compare::{assert_all, compare, number_by_conn, Msg};
use crate::flows::decode_pcap;
use crate::harness::*;

const PORT: u16 = 26379;

fn unhex(s: &str) -> String {
    let h: Vec<u8> = s.bytes().filter(|c| *c != b':').collect();
    let b: Vec<u8> = h
        .chunks(2)
        .map(|x| {
            std::str::from_utf8(x).ok().and_then(|x| u8::from_str_radix(x, 16).ok()).unwrap_or(b'?')
        })
        .collect();
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn redis() {
    require(&["dumpcap", "tshark", "redis-server", "redis-cli", "redis-benchmark"]);
    let dir = TempDir::new("redis");
    let mut srv = Proc::spawn_on(
        "redis-server",
        Command::new("redis-server")
            .args([
                "--port",
                &PORT.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(&dir.path),
        &dir,
        &[PORT],
    );
    wait_port(PORT, &mut srv);
    let cap = Capture::start(&dir, &format!("tcp port {PORT}"));
    let p = PORT.to_string();
    let cli = |args: &[&str]| {
        run("redis-cli", Command::new("redis-cli").args(["-p", &p]).args(args));
    };
    let mut sent = 0;
    for cmd in [
        &["SET", "fathom:k", "hello"][..],
        &["GET", "fathom:k"],
        &["INCR", "fathom:n"],
        &["INCR", "fathom:k"], // error: not an integer
        &["LPUSH", "fathom:l", "a", "b", "c"],
        &["LRANGE", "fathom:l", "0", "-1"],
        &["HSET", "fathom:h", "f1", "v1", "f2", "v2"],
        &["DEL", "fathom:nothing"],
    ] {
        cli(cmd);
        sent += 1;
    }
    // One connection: an unknown command (not as a connection's first
    // message: detection is rightly strict about unknown commands), then
    // HELLO 3 switching to RESP3 and a map reply.
    run(
        "redis-cli RESP3",
        Command::new("sh").arg("-c").arg(format!(
            "printf 'GET fathom:k\\nNOSUCHCOMMAND x\\nHELLO 3\\nHGETALL fathom:h\\nGET fathom:k\\n' | redis-cli -p {PORT}"
        )),
    );
    sent += 5;
    run(
        "redis-benchmark",
        Command::new("redis-benchmark")
            .args(["-p", &p, "-P", "16", "-n", "2000", "-c", "2", "-t", "set,get", "-q"]),
    );
    sent += 4000;
    let pcap = cap.stop();
    srv.check_alive();

    let d = decode_pcap(&pcap, &[PORT]);
    crate::dump_ours("redis", &d);
    crate::flows::check_tcp_bytes(&pcap, &d);
    let decode_as = vec![format!("tcp.port=={PORT},resp")];
    let rows = tshark_fields(
        &pcap,
        &decode_as,
        "resp",
        &[
            "tcp.srcport",
            "tcp.dstport",
            "resp.array.length",
            "resp.bulk_string.value",
            "resp.error",
        ],
    );
    // Walk frames in order. A client frame holding one command opens it; the
    // server frames up to the next client frame are its reply (error if any
    // carries resp.error). Pipelined connections (several commands in a
    // frame) only get "no error" when no reply of theirs is an error.
    let mut reference: Vec<Msg> = Vec::new();
    let mut open: BTreeMap<u16, Option<usize>> = BTreeMap::new();
    let mut errors: BTreeMap<u16, bool> = BTreeMap::new();
    let mut pipelined: BTreeMap<u16, bool> = BTreeMap::new();
    for r in &rows {
        if num(&r[1]) as u16 == PORT {
            let conn = num(&r[0]) as u16;
            let lens = occ(&r[2]);
            let vals = occ(&r[3]);
            let mut i = 0;
            let first = reference.len();
            for l in &lens {
                let cmd = vals.get(i).map(|v| unhex(v).to_ascii_uppercase()).unwrap_or_default();
                i += num(l) as usize;
                reference.push(Msg::new(conn, 0).f("command", cmd));
            }
            if lens.len() == 1 {
                open.insert(conn, Some(first));
            } else {
                open.insert(conn, None);
                *pipelined.entry(conn).or_default() |= lens.len() > 1;
            }
        } else {
            let conn = num(&r[1]) as u16;
            let err = !r[4].is_empty();
            *errors.entry(conn).or_default() |= err;
            if let Some(Some(i)) = open.get(&conn) {
                let m = &mut reference[*i];
                match m.fields.iter_mut().find(|(n, _)| *n == "error") {
                    Some(f) => f.1 = (f.1 == "true" || err).to_string(),
                    None => m.fields.push(("error", err.to_string())),
                }
            }
        }
    }
    number_by_conn(&mut reference);
    for m in reference.iter_mut() {
        if pipelined.get(&m.conn) == Some(&true)
            && m.get("error").is_none()
            && errors.get(&m.conn) == Some(&false)
        {
            m.fields.push(("error", "false".to_string()));
        }
    }
    crate::dump_ref("redis", &reference);
    assert!(
        reference.len() >= sent,
        "tshark saw {} Redis commands, clients sent at least {sent}",
        reference.len()
    );

    let mut ours: Vec<Msg> = crate::ours_of(&d, &[L7Protocol::Redis])
        .iter()
        .map(|o| {
            Msg::new(o.client_port, 0).f("command", o.rec.request_type.to_ascii_uppercase()).f(
                "error",
                matches!(
                    o.rec.response_status,
                    ResponseStatus::ClientError | ResponseStatus::ServerError
                ),
            )
        })
        .collect();
    number_by_conn(&mut ours);
    let a = compare("redis", &reference, &ours);
    assert_all(&[a]);
}
