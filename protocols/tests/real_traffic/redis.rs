//! Redis: redis-server with redis-cli (plain commands, an error reply,
//! HELLO 3 switching to RESP3) and redis-benchmark with pipelining (-P 16).
//! Reference: tshark's RESP dissector for the commands (array lengths split
//! the flat list of bulk strings of a frame into commands); for replies,
//! per-frame error markers where one frame holds one reply, else "all ok"
//! for connections without any error reply.

use std::collections::BTreeMap;
use std::process::Command;

use fathom_protocols::L7Protocol;

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
        &["NOSUCHCOMMAND", "x"], // error: unknown command
    ] {
        cli(cmd);
        sent += 1;
    }
    // RESP3 on one connection: HELLO 3 then a map reply.
    run(
        "redis-cli RESP3",
        Command::new("sh").arg("-c").arg(format!(
            "printf 'HELLO 3\\nHGETALL fathom:h\\nGET fathom:k\\n' | redis-cli -p {PORT}"
        )),
    );
    sent += 3;
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
    let reqs = tshark_fields(
        &pcap,
        &decode_as,
        &format!("resp && tcp.dstport=={PORT}"),
        &["tcp.srcport", "resp.array.length", "resp.bulk_string.value"],
    );
    let mut reference = Vec::new();
    for r in &reqs {
        let conn = num(&r[0]) as u16;
        let lens = occ(&r[1]);
        let vals = occ(&r[2]);
        let mut i = 0;
        for l in lens {
            let l = num(l) as usize;
            let cmd = vals.get(i).map(|v| unhex(v).to_ascii_uppercase()).unwrap_or_default();
            i += l;
            reference.push(Msg::new(conn, 0).f("command", cmd));
        }
    }
    number_by_conn(&mut reference);
    let resps = tshark_fields(
        &pcap,
        &decode_as,
        &format!("resp && tcp.srcport=={PORT}"),
        &["tcp.dstport", "resp.error"],
    );
    let mut frames: BTreeMap<u16, Vec<bool>> = BTreeMap::new();
    for r in &resps {
        frames.entry(num(&r[0]) as u16).or_default().push(!r[1].is_empty());
    }
    let mut per_conn: BTreeMap<u16, usize> = BTreeMap::new();
    for m in &reference {
        *per_conn.entry(m.conn).or_default() += 1;
    }
    for m in reference.iter_mut() {
        let Some(f) = frames.get(&m.conn) else { continue };
        let status = if f.len() == per_conn[&m.conn] {
            Some(f[m.key as usize])
        } else if f.iter().all(|e| !e) {
            Some(false)
        } else {
            None
        };
        if let Some(err) = status {
            m.fields.push(("status", if err { "server_error" } else { "ok" }.to_string()));
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
            Msg::new(o.client_port, 0)
                .f("command", o.rec.request_type.to_ascii_uppercase())
                .f("status", o.rec.response_status.as_str())
        })
        .collect();
    number_by_conn(&mut ours);
    let a = compare("redis", &reference, &ours);
    assert_all(&[a]);
}
