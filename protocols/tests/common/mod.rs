//! Shared by the integration tests: the sample messages under tests/samples.
#![allow(dead_code)]

use std::path::PathBuf;

use fathom_protocols::{Direction, L7Protocol, Transport};

/// One sample message: its protocol folder, direction and bytes.
#[derive(Clone, Debug)]
pub struct Sample {
    pub folder: &'static str,
    pub name: String,
    pub dir: Direction,
    pub bytes: Vec<u8>,
}

pub const FOLDERS: [&str; 8] =
    ["http1", "http2", "dns-udp", "dns-tcp", "redis", "mysql", "kafka", "dubbo"];

pub fn protocol_of(folder: &str) -> L7Protocol {
    match folder {
        "http1" => L7Protocol::Http1,
        "http2" => L7Protocol::Http2,
        "dns-udp" | "dns-tcp" => L7Protocol::Dns,
        "redis" => L7Protocol::Redis,
        "mysql" => L7Protocol::MySql,
        "kafka" => L7Protocol::Kafka,
        "dubbo" => L7Protocol::Dubbo,
        other => panic!("unknown sample folder {other}"),
    }
}

pub fn transport_of(folder: &str) -> Transport {
    if folder == "dns-udp" {
        Transport::Udp
    } else {
        Transport::Tcp
    }
}

/// Samples of the given folders, sorted by name: `req-*.bin` travel as
/// requests, `resp-*.bin` as responses.
pub fn load_samples(folders: &[&'static str]) -> Vec<Sample> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let mut out = Vec::new();
    for &folder in folders {
        let Ok(rd) = std::fs::read_dir(root.join(folder)) else {
            continue;
        };
        let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let dir = if name.starts_with("req") {
                Direction::Request
            } else if name.starts_with("resp") {
                Direction::Response
            } else {
                continue;
            };
            let bytes = std::fs::read(&path).expect("read sample");
            out.push(Sample { folder, name, dir, bytes });
        }
    }
    out
}
