//! The pcap source on files written by dumpcap from live traffic.

mod support;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fathom_agent::capture::{interfaces, Direction, LinkType, PcapSource};
use support::netns::{in_netns, NetnsPair};

static DONE: AtomicBool = AtomicBool::new(false);

/// `dumpcap -i any -P` writes classic pcap with a Linux cooked header; the
/// source reports the link type, direction and (SLL2) interface index, and
/// the payload sits right after the cooked header.
#[test]
fn cooked_capture_from_dumpcap_any() {
    let mut net = NetnsPair::new();
    let dir = std::env::temp_dir().join(format!("fathom-cap-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("any.pcap");
    let client = net.client.clone();
    let pid = net.spawn(
        &client,
        &[
            "dumpcap",
            "-i",
            "any",
            "-P",
            "-c",
            "1",
            "-f",
            "udp port 9",
            "-w",
            path.to_str().unwrap(),
        ],
        Stdio::piped(),
    );
    let stderr = net.child_mut(pid).stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("dumpcap exited early").unwrap();
        if line.starts_with("Capturing on") {
            break;
        }
    }
    // "Capturing on" can precede the filter taking effect: send until
    // dumpcap has its one packet (-c 1) and exits.
    let (server_ip, client_if) = (net.server_ip, net.client_if.clone());
    let sender = in_netns(&client, move || {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..100 {
            udp.send_to(b"fathom-cooked", (server_ip, 9)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            if DONE.load(Ordering::Acquire) {
                break;
            }
        }
        interfaces::lookup(&client_if).unwrap().index
    });
    let mut status = None;
    for _ in 0..300 {
        status = net.child_mut(pid).try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    DONE.store(true, Ordering::Release);
    let status = status.expect("dumpcap captured nothing in 15 s");
    let ifindex = sender.join().unwrap();
    assert!(status.success());

    let mut src = PcapSource::open(&path).unwrap();
    let link = src.link_type().unwrap();
    let mut seen = Vec::new();
    let n = src
        .for_each(|p| {
            let header = match p.link {
                LinkType::LinuxSll => 16,
                LinkType::LinuxSll2 => 20,
                other => panic!("dumpcap -i any wrote {other:?}"),
            };
            let ip = &p.data[header..];
            assert_eq!(ip[0] >> 4, 4);
            let udp = &ip[usize::from(ip[0] & 0xf) * 4..];
            seen.push((udp[8..].to_vec(), p.direction, p.ifindex, p.link, p.wire_len, p.captured));
        })
        .unwrap();
    assert_eq!(n, 1);
    let (payload, direction, idx, got_link, wire, captured) = &seen[0];
    assert_eq!(payload, b"fathom-cooked");
    assert_eq!(*direction, Direction::Outbound);
    assert_eq!(*got_link, link);
    if link == LinkType::LinuxSll2 {
        assert_eq!(*idx, ifindex);
    }
    assert_eq!(wire, captured);
    std::fs::remove_dir_all(dir).unwrap();
}
