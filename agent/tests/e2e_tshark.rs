//! End to end: L4 flow records of the live agent against tshark. dumpcap
//! captures the same veth as the agent; every TCP connection's packets and
//! frame bytes each way must equal `tshark -z conv,tcp` exactly, and the
//! handshake RTT must agree with tcp.analysis.initial_rtt (printed, loosely
//! checked). Needs root.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use fathom_agent::capture::PcapSource;
use support::e2e::*;
use support::netns::{in_netns, NetnsPair};
use support::pkt;

#[test]
fn l4_counters_match_tshark() {
    let mut net = NetnsPair::new();
    let dir = TempDir::new(&format!("tshark-{}", net.client));
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small.txt"), "small\n").unwrap();
    // Large enough for tshark to print kB and for many segments each way.
    let big: Vec<u8> = (0..400_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();
    let ip = net.server_ip.to_string();
    let (server, client) = (net.server.clone(), net.client.clone());
    let www_s = www.to_str().unwrap().to_string();
    net.spawn(
        &server,
        &["python3", "-m", "http.server", "8080", "--bind", &ip, "--directory", &www_s],
        Stdio::null(),
    );
    net.spawn(
        &server,
        &["redis-server", "--port", "6379", "--bind", &ip, "--protected-mode", "no", "--save", ""],
        Stdio::null(),
    );
    wait_listening(&net, &server, 8080, false);
    wait_listening(&net, &server, 6379, false);

    // dumpcap first, confirmed capturing with UDP probes (not compared).
    let pcap = dir.join("ref.pcapng");
    let client_if = net.client_if.clone();
    let dumpcap = net.spawn(
        &client,
        &["dumpcap", "-i", &client_if, "-f", "tcp or udp port 7", "-w", pcap.to_str().unwrap()],
        Stdio::piped(),
    );
    let stderr = net.child_mut(dumpcap).stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("dumpcap exited early").unwrap();
        if line.starts_with("Capturing on") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let count = |pred: &dyn Fn(&pkt::L4) -> bool| {
        let mut n = 0u64;
        if let Ok(mut src) = PcapSource::open(&pcap) {
            let _ = src.for_each(|p| n += u64::from(pkt::parse(p.data).is_some_and(|l| pred(&l))));
        }
        n
    };
    let server_ip = net.server_ip;
    let probe = in_netns(&client, || UdpSocket::bind("0.0.0.0:0").unwrap()).join().unwrap();
    poll("dumpcap to capture a probe", Duration::from_secs(30), || {
        probe.send_to(b"probe", (server_ip, 7)).unwrap();
        (count(&|l| l.proto == 17 && l.dport == 7) > 0).then_some(())
    });

    let mut agent = Agent::run(&client, &client_if, &dir.0, &[]);
    agent.wait_ready();
    for path in ["/small.txt", "/big.bin", "/missing", "/big.bin"] {
        let url = format!("http://{ip}:8080{path}");
        net.exec_ok(&client, &["curl", "-sS", "-o", "/dev/null", &url]);
    }
    for cmd in [&["SET", "k", "v"][..], &["GET", "k"], &["PING"]] {
        let mut a = vec!["redis-cli", "-h", &ip, "-p", "6379"];
        a.extend_from_slice(cmd);
        net.exec_ok(&client, &a);
    }
    agent.wait_quiet();
    let st = agent.stop();
    assert!(st.status.success(), "agent exit {}:\n{}", st.status, st.stderr);
    let flows: Vec<_> = of_type(&st.records, "l4_flow")
        .into_iter()
        .filter(|f| f["flow"]["protocol"] == "tcp")
        .collect();
    assert_eq!(flows.len(), 7, "4 curl + 3 redis-cli connections");
    let packets: u64 = flows.iter().map(|f| u(&f["tx"]["packets"]) + u(&f["rx"]["packets"])).sum();
    // dumpcap writes when its buffer timeout expires: wait until it has
    // every TCP packet the agent counted, then stop it.
    poll("dumpcap to write every packet", Duration::from_secs(60), || {
        (count(&|l| l.proto == 6) >= packets).then_some(())
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(dumpcap as i32, libc::SIGINT) };
    let status = net.child_mut(dumpcap).wait().unwrap();
    assert!(status.success(), "dumpcap: {status}");

    let convs = tshark_conversations(&pcap);
    let frame_bytes = tshark_frame_bytes(&pcap);
    let rtts = tshark_initial_rtt(&pcap);
    assert_eq!(convs.len(), flows.len(), "conversations: {convs:?}");
    let addr = |ip: &serde_json::Value, port: &serde_json::Value| {
        SocketAddr::new(s(ip).parse().unwrap(), u(port) as u16)
    };
    for f in &flows {
        let c = addr(&f["flow"]["client_ip"], &f["flow"]["client_port"]);
        let sv = addr(&f["flow"]["server_ip"], &f["flow"]["server_port"]);
        let (c2s, s2c) = match (convs.get(&(c, sv)), convs.get(&(sv, c))) {
            (Some(x), _) => (x[0], x[1]),
            (None, Some(x)) => (x[1], x[0]),
            _ => panic!("no tshark conversation for {c} -> {sv}"),
        };
        for (ours, (frames, bytes), dir) in [(&f["tx"], c2s, (c, sv)), (&f["rx"], s2c, (sv, c))] {
            assert_eq!(u(&ours["packets"]), frames, "packets {dir:?}: {f}");
            let b = u(&ours["bytes"]);
            match bytes {
                Bytes::Exact(x) => assert_eq!(b, x, "bytes {dir:?}: {f}"),
                Bytes::Kilo(k) => {
                    assert!(b.abs_diff(k * 1000) < 1000, "kB {dir:?}: {b} vs {k} kB");
                    assert_eq!(b, frame_bytes[&dir], "bytes {dir:?}: {f}");
                }
            }
        }
        assert_eq!(f["close_type"], "fin", "{f}");
        let ours = u(&f["rtt_client_us"]) + u(&f["rtt_server_us"]);
        let theirs = rtts[&(c, sv)];
        println!("handshake RTT {c} -> {sv}: agent {ours} us, tshark initial_rtt {theirs} us");
        // Both read the kernel's timestamps of the same packets; tshark
        // measures SYN -> first ACK, the agent SYN -> SYN-ACK -> ACK.
        assert!(
            ours.abs_diff(theirs) <= 50.max(theirs / 5),
            "RTT {c} -> {sv}: agent {ours} us, tshark {theirs} us"
        );
    }
    let big_flows =
        flows.iter().filter(|f| u(&f["rx"]["payload_bytes"]) > big.len() as u64).count();
    assert_eq!(big_flows, 2, "two downloads of big.bin");
}
