//! End to end robustness of the `fathom-agent` binary: garbage and
//! truncated frames and random payloads on real connections, a port scan,
//! and 100K short flows replayed against a 10K flow table. The agent must
//! not crash, must exit 0 on SIGTERM (or at the end of the replay), keep
//! reporting correct calls afterwards, stay within its flow capacity and
//! under a memory bound. Needs root for the live parts.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use fathom_agent::packet::build::FrameBuilder;
use support::e2e::*;
use support::netns::{in_netns, NetnsPair};

/// Peak RSS allowed, KiB. The budget is 256 MiB with 100K
/// concurrent flows; these runs track at most 10K flows (or a few thousand
/// live), so staying under it leaves a wide margin even for the debug build
/// tests run with, and for the 32 MiB capture ring of a live agent.
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// xorshift64*: deterministic bytes, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends raw frames out of `iface` (an AF_PACKET socket in the caller's
/// namespace); says whether the kernel took the frame.
fn raw_sender(iface: &str) -> impl FnMut(&[u8]) -> bool {
    // SAFETY: plain socket(2); the fd is owned by the closure below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0, "no interface {iface}");
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    move |frame: &[u8]| {
        // SAFETY: valid buffer and address; errors (frames the kernel
        // refuses, e.g. shorter than a link header) are fine here.
        unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) >= 0
        }
    }
}

/// Malformed frames of every kind: random bytes, IP headers that lie about
/// their lengths, TCP/UDP headers cut short, random payloads behind valid
/// headers to the ports real parsers listen on. Returns the frames the
/// kernel took and how many of them the agent's capture filter (IPv4/IPv6
/// TCP and UDP only) must keep: those with intact IPv4 headers.
fn send_garbage(iface: &str, client: Ipv4Addr, server: Ipv4Addr, frames: usize) -> (u64, u64) {
    let (mut sent, mut kept) = (0, 0);
    let mut send = raw_sender(iface);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let ports = [8080u16, 6379, 3306, 53, 9092, 20880, 443];
    for i in 0..frames {
        let sport = 30_000 + rng.below(20_000) as u16;
        let dport = ports[i % ports.len()];
        let c = SocketAddr::V4(SocketAddrV4::new(client, sport));
        let s = SocketAddr::V4(SocketAddrV4::new(server, dport));
        let payload_len = rng.below(1400) as usize;
        let payload = rng.bytes(payload_len);
        let mut f = match i % 8 {
            // Random bytes, random length (some shorter than a header).
            0 => {
                let n = rng.below(1514) as usize;
                rng.bytes(n)
            }
            // TCP with random flags, seq and payload.
            1 | 2 => {
                let flags = rng.next() as u8;
                FrameBuilder::tcp(c, s, rng.next() as u32, rng.next() as u32, flags).build(&payload)
            }
            // UDP with a random payload.
            3 => FrameBuilder::udp(c, s).build(&payload),
            // Valid headers cut at a random point.
            4 => {
                let mut f = FrameBuilder::tcp(c, s, 1, 0, 0x18).build(&payload);
                f.truncate(rng.below(f.len() as u64) as usize);
                f
            }
            // IPv4 header fields randomised: IHL, total length, protocol, fragment bits.
            5 => {
                let mut f = FrameBuilder::udp(c, s).build(&payload);
                let at = 14 + rng.below(20) as usize;
                f[at] = rng.next() as u8;
                f
            }
            // TCP data offset and other header bytes randomised.
            6 => {
                let mut f = FrameBuilder::tcp(c, s, 7, 7, 0x18).build(&payload);
                let at = 34 + rng.below(20) as usize;
                f[at] = rng.next() as u8;
                f
            }
            // IPv6 ethertype with random contents.
            _ => {
                let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
                f.extend(rng.bytes(payload_len.max(1)));
                f
            }
        };
        if f.is_empty() {
            f.push(0);
        }
        let ok = send(&f);
        sent += u64::from(ok);
        kept += u64::from(ok && matches!(i % 8, 1 | 2 | 3 | 6));
    }
    (sent, kept)
}

/// Random bytes over real connections and datagrams to real servers.
fn random_conversations(server: Ipv4Addr, conns: usize) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for i in 0..conns {
        let port = [8080u16, 6379][i % 2];
        let mut c = TcpStream::connect((server, port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = 1 + rng.below(8192) as usize;
        let _ = c.write_all(&rng.bytes(n));
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    }
    let u = UdpSocket::bind("0.0.0.0:0").unwrap();
    for _ in 0..200 {
        let n = rng.below(600) as usize;
        let _ = u.send_to(&rng.bytes(n), (server, 53));
    }
}

struct Live {
    net: NetnsPair,
    dir: TempDir,
}

fn live(name: &str) -> Live {
    let mut net = NetnsPair::new();
    let dir = TempDir::new(&format!("{name}-{}", net.client));
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "still here\n").unwrap();
    let ip = net.server_ip.to_string();
    let server = net.server.clone();
    let www = www.to_str().unwrap().to_string();
    net.spawn(
        &server,
        &["python3", "-m", "http.server", "8080", "--bind", &ip, "--directory", &www],
        Stdio::null(),
    );
    net.spawn(
        &server,
        &["redis-server", "--port", "6379", "--bind", &ip, "--protected-mode", "no", "--save", ""],
        Stdio::null(),
    );
    wait_listening(&net, &server, 8080, false);
    wait_listening(&net, &server, 6379, false);
    Live { net, dir }
}

/// A real call after the abuse: the agent still decodes it exactly.
fn check_still_works(l: &Live, records: &[serde_json::Value]) {
    let hello: Vec<_> = of_type(records, "l7_log")
        .into_iter()
        .filter(|r| r["request_resource"] == "/hello.txt")
        .collect();
    assert_eq!(hello.len(), 1, "{hello:?}");
    assert_eq!(hello[0]["response_code"], 200);
    assert_eq!(hello[0]["response_status"], "ok");
    assert_eq!(hello[0]["flow"]["server_ip"], l.net.server_ip.to_string().as_str());
}

fn curl_hello(l: &Live) {
    let url = format!("http://{}:8080/hello.txt", l.net.server_ip);
    let out = l.net.exec_ok(&l.net.client, &["curl", "-sS", &url]);
    assert_eq!(out.stdout, b"still here\n");
}

#[test]
fn garbage_and_truncated_packets() {
    let l = live("garbage");
    let mut agent = Agent::run(&l.net.client, &l.net.client_if, &l.dir.0, &[]);
    agent.wait_ready();
    let (iface, c, s) = (l.net.client_if.clone(), l.net.client_ip, l.net.server_ip);
    let (sent, kept) =
        in_netns(&l.net.client, move || send_garbage(&iface, c, s, 40_000)).join().unwrap();
    assert!(sent > 30_000, "the kernel took only {sent} frames");
    in_netns(&l.net.client, move || random_conversations(s, 60)).join().unwrap();
    curl_hello(&l);
    agent.wait_quiet();
    let m = agent.scrape().expect("/metrics still answers");
    // Frames that are not IP TCP/UDP never reach the ring (the kernel filter).
    assert!(m["fathom_agent_packets_total"] >= kept, "{sent} sent, {kept} to keep: {m:?}");
    assert!(m["fathom_agent_decode_errors_total"] > 0, "malformed frames are counted: {m:?}");
    let st = agent.stop();
    assert!(st.status.success(), "agent exit {}:\n{}", st.status, st.stderr);
    assert!(!st.stderr.contains("panicked"), "{}", st.stderr);
    check_still_works(&l, &st.records);
    println!("garbage: peak RSS {} KiB, metrics {m:?}", st.peak_rss_kib);
    assert!(st.peak_rss_kib < RSS_BOUND_KIB, "peak RSS {} KiB", st.peak_rss_kib);
}

#[test]
fn port_scan() {
    let l = live("scan");
    let mut agent = Agent::run(&l.net.client, &l.net.client_if, &l.dir.0, &[]);
    agent.wait_ready();
    let s = l.net.server_ip;
    // 2000 closed ports: each SYN is answered by a RST.
    in_netns(&l.net.client, move || {
        for port in 20_000..22_000u16 {
            let addr = SocketAddr::from((s, port));
            let r = TcpStream::connect_timeout(&addr, Duration::from_secs(5));
            assert!(r.is_err(), "port {port} is closed");
        }
    })
    .join()
    .unwrap();
    curl_hello(&l);
    agent.wait_quiet();
    let created = agent.metric("fathom_agent_flows_created_total");
    assert!(created >= 2000, "flows created {created}");
    let st = agent.stop();
    assert!(st.status.success(), "agent exit {}:\n{}", st.status, st.stderr);
    check_still_works(&l, &st.records);
    let scanned: Vec<_> = of_type(&st.records, "l4_flow")
        .into_iter()
        .filter(|f| (20_000..22_000).contains(&u(&f["flow"]["server_port"])))
        .collect();
    let ports: std::collections::BTreeSet<u64> =
        scanned.iter().map(|f| u(&f["flow"]["server_port"])).collect();
    assert_eq!((scanned.len(), ports.len()), (2000, 2000), "one flow per scanned port");
    for f in &scanned {
        assert_eq!(f["close_type"], "server_reset", "{f}");
        assert_eq!(u(&f["tx"]["syn"]), 1, "{f}");
        assert_eq!(u(&f["rx"]["rst"]), 1, "{f}");
        assert!(f["l7_protocol"].is_null(), "{f}");
    }
    assert!(of_type(&st.records, "l7_log").len() == 1, "no L7 records from the scan");
    println!("scan: peak RSS {} KiB", st.peak_rss_kib);
    assert!(st.peak_rss_kib < RSS_BOUND_KIB, "peak RSS {} KiB", st.peak_rss_kib);
}

const FLOWS: u32 = 100_000;
const MAX_FLOWS: u64 = 10_000;

/// 100K short flows, all opened before any closes (so far more are open
/// at once than the table holds): TCP handshakes then FINs, and every
/// fifth a UDP request then its answer.
fn write_short_flows(path: &std::path::Path) -> u64 {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = pcap_file::pcap::PcapWriter::new(file).unwrap();
    let server = SocketAddr::from(([10, 99, 0, 1], 80));
    let dns = SocketAddr::from(([10, 99, 0, 2], 53));
    let client = |i: u32| {
        let ip = Ipv4Addr::new(10, 100 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
        SocketAddr::from((ip, 1024 + (i % 60_000) as u16))
    };
    let mut ts = Duration::from_secs(1_700_000_000);
    let mut frame = Vec::new();
    let mut n = 0u64;
    let mut put = |fb: FrameBuilder, payload: &[u8], ts: &mut Duration| {
        fb.build_into(payload, &mut frame);
        *ts += Duration::from_micros(3);
        w.write_packet(&pcap_file::pcap::PcapPacket::new(*ts, frame.len() as u32, &frame)).unwrap();
        n += 1;
    };
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x01;
    let query = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1];
    for phase in 0..2 {
        for i in 0..FLOWS {
            let c = client(i);
            if i % 5 == 0 {
                let (fb, mut msg) = if phase == 0 {
                    (FrameBuilder::udp(c, dns), query.to_vec())
                } else {
                    let mut r = query.to_vec();
                    r[2] = 0x81;
                    r[3] = 0x83; // NXDOMAIN
                    (FrameBuilder::udp(dns, c), r)
                };
                msg[0] = (i >> 8) as u8;
                msg[1] = i as u8;
                put(fb, &msg, &mut ts);
                continue;
            }
            let (cs, ss) = (i.wrapping_mul(7919), i.wrapping_mul(104_729));
            if phase == 0 {
                put(FrameBuilder::tcp(c, server, cs, 0, SYN), &[], &mut ts);
                put(FrameBuilder::tcp(server, c, ss, cs + 1, SYN | ACK), &[], &mut ts);
                put(FrameBuilder::tcp(c, server, cs + 1, ss + 1, ACK), &[], &mut ts);
            } else {
                put(FrameBuilder::tcp(c, server, cs + 1, ss + 1, FIN | ACK), &[], &mut ts);
                put(FrameBuilder::tcp(server, c, ss + 1, cs + 2, FIN | ACK), &[], &mut ts);
                put(FrameBuilder::tcp(c, server, cs + 2, ss + 2, ACK), &[], &mut ts);
            }
        }
    }
    w.into_writer().into_inner().unwrap().sync_all().unwrap();
    n
}

#[test]
fn hundred_thousand_short_flows_replayed() {
    let dir = TempDir::new("100k");
    let pcap = dir.join("short-flows.pcap");
    let packets = write_short_flows(&pcap);
    let max = MAX_FLOWS.to_string();
    let agent = Agent::replay(&pcap, &dir.0, &[("FATHOM_AGENT_FLOW__MAX_FLOWS", &max)]);
    let mut scrapes = Vec::new();
    let mut hwm = 0;
    while !agent.exited() {
        if let Some(m) = agent.scrape() {
            scrapes.push(m);
        }
        if let Ok(Some(v)) = std::panic::catch_unwind(|| Some(agent.vm_hwm_kib())) {
            hwm = hwm.max(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = agent.wait_exit(Duration::from_secs(30));
    assert!(st.status.success(), "replay exit {}:\n{}", st.status, st.stderr);
    assert!(st.stderr.contains(&format!("packets={packets}")), "{}", st.stderr);
    assert!(!scrapes.is_empty(), "/metrics answered during the replay");
    let active = scrapes.iter().map(|m| m["fathom_agent_flows_active"]).max().unwrap();
    let last = scrapes.last().unwrap();
    println!(
        "100K flows: {} scrapes, max flows_active {active}, last {last:?}, peak RSS {} KiB",
        scrapes.len(),
        st.peak_rss_kib.max(hwm)
    );
    assert!(active <= MAX_FLOWS, "flows_active {active} > {MAX_FLOWS}");
    let evicted = of_type(&st.records, "l4_flow")
        .into_iter()
        .filter(|f| f["close_type"] == "evicted")
        .count() as u64;
    // At most 10K of the 100K opened flows fit: the rest were evicted.
    assert!(evicted >= u64::from(FLOWS) - MAX_FLOWS, "evicted records {evicted}");
    let scraped_evictions = scrapes.iter().map(|m| m["fathom_agent_flows_evicted_total"]).max();
    assert!(scraped_evictions.unwrap() > 0, "evictions counted in /metrics");
    assert!(st.peak_rss_kib.max(hwm) < RSS_BOUND_KIB, "peak RSS {} KiB", st.peak_rss_kib);
}
