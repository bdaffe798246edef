//! AF_PACKET rings against the real kernel: veth pairs between network
//! namespaces, real clients and servers, dumpcap/tshark as the reference.
//! Root is required; these tests fail (not skip) without it.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fathom_agent::capture::interfaces;
use fathom_agent::capture::{
    AfPacketConfig, AfPacketSource, CaptureError, Direction, KernelStats, LinkType, PcapSource,
};
use support::netns::{in_netns, require_root, NetnsPair};
use support::pkt;

/// An owned copy of a captured packet, for checking after the fact.
#[derive(Clone, Debug)]
struct Pkt {
    data: Vec<u8>,
    ts_ns: u64,
    wire_len: u32,
    captured: u32,
    ifindex: u32,
    direction: Direction,
    link: LinkType,
    vlan_tci: Option<u16>,
}

struct Capture {
    packets: Vec<Pkt>,
    stats: KernelStats,
    ifindex: u32,
}

/// A ring read by its own thread (inside `ns` when given) until stopped.
struct Running {
    stop: Arc<AtomicBool>,
    /// Set by the test to make the thread hold off reading (ring fills up).
    paused: Arc<AtomicBool>,
    handle: JoinHandle<Result<Capture, CaptureError>>,
}

impl Running {
    fn start(ns: Option<&str>, cfg: AfPacketConfig) -> Running {
        Running::start_paused(ns, cfg, false)
    }

    fn start_paused(ns: Option<&str>, cfg: AfPacketConfig, paused: bool) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(paused));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (s, p) = (stop.clone(), paused.clone());
        let body = move || -> Result<Capture, CaptureError> {
            let opened = AfPacketSource::open(&cfg);
            let mut src = match opened {
                Ok(src) => src,
                Err(e) => {
                    let _ = ready_tx.send(());
                    return Err(e);
                }
            };
            let ifindex = src.interface().index;
            ready_tx.send(()).unwrap();
            let mut packets = Vec::new();
            let mut keep = |p: fathom_agent::capture::RawPacket<'_>| {
                packets.push(Pkt {
                    data: p.data.to_vec(),
                    ts_ns: p.ts_ns,
                    wire_len: p.wire_len,
                    captured: p.captured,
                    ifindex: p.ifindex,
                    direction: p.direction,
                    link: p.link,
                    vlan_tci: p.vlan_tci,
                })
            };
            while !s.load(Ordering::Acquire) {
                if p.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                src.next_batch(Duration::from_millis(20), &mut keep)?;
            }
            // Drain: the last partial block retires after the retire timeout.
            let mut idle = 0;
            while idle < 2 {
                let wait = Duration::from_millis(u64::from(cfg.retire_timeout_ms) * 3);
                if src.next_batch(wait, &mut keep)? == 0 {
                    idle += 1;
                } else {
                    idle = 0;
                }
            }
            let stats = src.stats()?;
            Ok(Capture { packets, stats, ifindex })
        };
        let handle = match ns {
            Some(ns) => in_netns(ns, body),
            None => std::thread::spawn(body),
        };
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("capture thread ready");
        Running { stop, paused, handle }
    }

    fn finish(self) -> Capture {
        self.stop.store(true, Ordering::Release);
        self.handle.join().expect("capture thread").expect("capture")
    }
}

fn cfg(interface: &str) -> AfPacketConfig {
    AfPacketConfig {
        block_size: 1 << 20,
        block_count: 8,
        retire_timeout_ms: 20,
        ..AfPacketConfig::for_interface(interface)
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn is_port(p: &Pkt, proto: u8, port: u16) -> bool {
    pkt::parse(&p.data).is_some_and(|l| l.proto == proto && (l.sport == port || l.dport == port))
}

fn check_lengths(packets: &[Pkt], snaplen: u32) {
    for p in packets {
        assert_eq!(p.captured as usize, p.data.len());
        assert_eq!(p.captured, p.wire_len.min(snaplen), "{p:?}");
    }
}

/// HTTP over the veth: SYN, request, response and body all seen, in
/// order, with the same packets as dumpcap captured on the same interface.
#[test]
fn http_over_veth_matches_dumpcap() {
    let mut net = NetnsPair::new();
    let dir = std::env::temp_dir().join(format!("fathom-cap-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body: Vec<u8> = (0..60_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(dir.join("data.bin"), &body).unwrap();
    let server_ip = net.server_ip.to_string();
    let server = net.server.clone();
    net.spawn(
        &server,
        &["python3", "-m", "http.server", "8000", "--bind", &server_ip, "--directory"]
            .into_iter()
            .chain([dir.to_str().unwrap()])
            .collect::<Vec<_>>(),
        Stdio::null(),
    );
    let mut ready = false;
    for _ in 0..100 {
        let out = net.exec(&server, &["ss", "-Hltn", "sport = :8000"]);
        if !out.stdout.is_empty() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "python http.server did not start listening");

    // dumpcap on the same interface, started first and confirmed capturing.
    let pcapng = dir.join("ref.pcapng");
    let client = net.client.clone();
    let client_if = net.client_if.clone();
    let dumpcap = net.spawn(
        &client,
        &[
            "dumpcap",
            "-i",
            &client_if,
            "-f",
            "tcp port 8000 or udp port 7",
            "-w",
            pcapng.to_str().unwrap(),
        ],
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
    // "Capturing on" can come before packets flow into dumpcap: probe (UDP
    // port 7, not compared) until one shows up in its file.
    let probe_seen = || {
        let mut seen = false;
        if let Ok(mut src) = PcapSource::open(&pcapng) {
            let _ = src.for_each(|p| seen |= pkt::parse(p.data).is_some_and(|l| l.dport == 7));
        }
        seen
    };
    let server_addr = net.server_ip;
    let probe = in_netns(&client, move || UdpSocket::bind("0.0.0.0:0").unwrap()).join().unwrap();
    let mut started = false;
    for _ in 0..200 {
        probe.send_to(b"probe", (server_addr, 7)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        if probe_seen() {
            started = true;
            break;
        }
    }
    assert!(started, "dumpcap never captured a probe");

    let ring = Running::start(Some(&client), cfg(&client_if));
    let url = format!("http://{server_ip}:8000/data.bin");
    let got = net.exec_ok(&client, &["curl", "-sS", "--fail", "-H", "X-Fathom: capture", &url]);
    assert_eq!(got.stdout, body, "curl got the file");
    // Stop once the connection is closed at both ends (only TIME-WAIT left),
    // so every packet of it has crossed the interface.
    let closed = |ns: &str, filter: &str| {
        let out = net.exec_ok(ns, &["ss", "-Htan", filter]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .all(|l| l.starts_with("LISTEN") || l.starts_with("TIME-WAIT"))
    };
    for _ in 0..200 {
        if closed(&server, "sport = :8000") && closed(&client, "dport = :8000") {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let cap = ring.finish();
    let ours: Vec<&Pkt> = cap.packets.iter().filter(|p| is_port(p, 6, 8000)).collect();
    // dumpcap writes a block of packets when its own buffer timeout expires;
    // wait until it has written as many as the ring saw before stopping it.
    let read_reference = || {
        let mut reference = Vec::new();
        if let Ok(mut src) = PcapSource::open(&pcapng) {
            // A tail being written may not parse yet: count what does.
            let _ = src.for_each(|p| {
                assert_eq!(p.link, LinkType::Ethernet);
                if let Some(l) = pkt::parse(p.data) {
                    if l.proto == 6 && (l.sport == 8000 || l.dport == 8000) {
                        reference.push((p.wire_len, l.seq, l.tcp_flags, p.ts_ns));
                    }
                }
            });
        }
        reference
    };
    for _ in 0..200 {
        if read_reference().len() >= ours.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(dumpcap as i32, libc::SIGINT) };
    let status = net.child_mut(dumpcap).wait().unwrap();
    assert!(status.success(), "dumpcap: {status}");
    let reference = read_reference();

    assert!(ours.len() >= 8, "{} packets", ours.len());
    check_lengths(&cap.packets, 65535);
    let client_ip = IpAddr::V4(net.client_ip);
    for p in &ours {
        assert_eq!(p.ifindex, cap.ifindex);
        assert_eq!(p.link, LinkType::Ethernet);
        let l = pkt::parse(&p.data).unwrap();
        let want = if l.src == client_ip { Direction::Outbound } else { Direction::Inbound };
        assert_eq!(p.direction, want, "{l:?}");
    }
    let ts: Vec<u64> = ours.iter().map(|p| p.ts_ns).collect();
    // The ring takes packets in the order they reach it, but each is stamped
    // earlier, on the CPU that handled it: with both veth ends busy on
    // different CPUs, ring order and stamp order can differ by microseconds.
    // A step back of more than 1 ms would be a real fault.
    assert!(ts.windows(2).all(|w| w[1] + 1_000_000 >= w[0]), "timestamps go back: {ts:?}");
    assert!(ts.last() > ts.first());
    assert!(ts[0].abs_diff(now_ns()) < 600_000_000_000, "kernel timestamps are epoch ns");

    let first = pkt::parse(&ours[0].data).unwrap();
    assert_eq!((first.tcp_flags & (pkt::SYN | pkt::ACK), first.dport), (pkt::SYN, 8000));
    assert!(ours.iter().any(|p| {
        let l = pkt::parse(&p.data).unwrap();
        l.tcp_flags & (pkt::SYN | pkt::ACK) == pkt::SYN | pkt::ACK && l.sport == 8000
    }));
    let stream = |from_client: bool| -> Vec<u8> {
        ours.iter()
            .map(|p| pkt::parse(&p.data).unwrap())
            .filter(|l| (l.src == client_ip) == from_client)
            .flat_map(|l| l.payload.to_vec())
            .collect()
    };
    let request = String::from_utf8_lossy(&stream(true)).into_owned();
    assert!(request.starts_with("GET /data.bin HTTP/1.1\r\n"), "{request:?}");
    assert!(request.contains("X-Fathom: capture\r\n"));
    let response = stream(false);
    assert!(response.starts_with(b"HTTP/1.0 200 OK\r\n"));
    assert!(response.ends_with(&body), "the whole body crossed the ring in order");

    // Same packets as dumpcap, by our pcapng reader and by tshark.
    let mine: Vec<_> = ours
        .iter()
        .map(|p| {
            let l = pkt::parse(&p.data).unwrap();
            (p.wire_len, l.seq, l.tcp_flags)
        })
        .collect();
    let theirs: Vec<_> = reference.iter().map(|r| (r.0, r.1, r.2)).collect();
    assert_eq!(mine, theirs, "ring and dumpcap saw different packets");
    // Both read the kernel's timestamp of the same skb; pcapng keeps µs or ns.
    for (p, r) in ours.iter().zip(&reference) {
        assert!(p.ts_ns.abs_diff(r.3) < 1_000_000, "ts {} vs dumpcap {}", p.ts_ns, r.3);
    }
    let tshark = Command::new("tshark")
        .args(["-r", pcapng.to_str().unwrap(), "-Y", "tcp.port == 8000", "-T", "fields"])
        .args(["-e", "frame.len"])
        .output()
        .expect("tshark");
    assert!(tshark.status.success(), "{}", String::from_utf8_lossy(&tshark.stderr));
    let lens: Vec<u32> = String::from_utf8_lossy(&tshark.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(lens, mine.iter().map(|m| m.0).collect::<Vec<_>>(), "tshark frame.len");

    assert!(cap.stats.packets >= ours.len() as u64, "{:?}", cap.stats);
    assert_eq!(cap.stats.drops, 0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Sends an ICMP echo request from the calling thread's namespace and waits
/// for the reply, so the ARP and ICMP really crossed the veth.
fn ping_once(dst: Ipv4Addr) {
    // SAFETY: plain socket(); the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    assert!(raw >= 0, "raw ICMP socket: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut echo = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'f', b'a', b't', b'h', b'o', b'm', 0, 0];
    let sum = echo.chunks(2).fold(0u32, |s, c| s + u32::from(u16::from_be_bytes([c[0], c[1]])));
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    echo[2..4].copy_from_slice(&sum.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(dst).to_be() },
        sin_zero: [0; 8],
    };
    let tv = libc::timeval { tv_sec: 3, tv_usec: 0 };
    // SAFETY: valid buffers and lengths for these calls.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let n = libc::sendto(
            fd.as_raw_fd(),
            echo.as_ptr().cast(),
            echo.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(n, echo.len() as isize, "sendto: {}", std::io::Error::last_os_error());
    }
    let mut buf = [0u8; 1500];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(n > 0, "no echo reply: {}", std::io::Error::last_os_error());
        let ihl = usize::from(buf[0] & 0xf) * 4;
        if buf[ihl] == 0 && buf[ihl + 4..ihl + 6] == [0x12, 0x34] {
            return;
        }
    }
}

/// The cBPF filter keeps TCP/UDP and drops ARP and ICMP in the kernel; with
/// the filter off the same traffic shows ARP and ICMP, so the check bites.
#[test]
fn filter_drops_arp_and_icmp() {
    let net = NetnsPair::new();
    let up = in_netns(&net.client, interfaces::list_up).join().unwrap().unwrap();
    assert_eq!(up, vec![net.client_if.clone()], "list_up inside the client namespace");

    for filter in [true, false] {
        net.exec_ok(&net.client, &["ip", "neigh", "flush", "dev", &net.client_if]);
        net.exec_ok(&net.server, &["ip", "neigh", "flush", "dev", &net.server_if]);
        let ring =
            Running::start(Some(&net.client), AfPacketConfig { filter, ..cfg(&net.client_if) });
        let server_ip = net.server_ip;
        in_netns(&net.client, move || {
            ping_once(server_ip);
            let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
            udp.send_to(b"fathom-marker", (server_ip, 9)).unwrap();
        })
        .join()
        .unwrap();
        let cap = ring.finish();
        let kinds: Vec<(u16, u8)> = cap
            .packets
            .iter()
            .map(|p| {
                let ethertype = pkt::ethertype(&p.data).unwrap();
                (ethertype, pkt::parse(&p.data).map_or(0, |l| l.proto))
            })
            .collect();
        let arp = kinds.iter().filter(|k| k.0 == 0x0806).count();
        let icmp = kinds.iter().filter(|k| k.1 == 1).count();
        let marker = cap
            .packets
            .iter()
            .filter(|p| pkt::parse(&p.data).is_some_and(|l| l.payload == b"fathom-marker"))
            .count();
        assert_eq!(marker, 1, "filter {filter}: {kinds:?}");
        if filter {
            assert_eq!((arp, icmp), (0, 0), "filter let through {kinds:?}");
            assert!(kinds.iter().all(|k| k.1 == 6 || k.1 == 17), "{kinds:?}");
        } else {
            // Echo, reply, and the port-unreachable for the marker.
            assert!(arp >= 2 && icmp >= 2, "unfiltered ring misses traffic: {kinds:?}");
        }
        // Counters move, are cumulative, and count only what passed the filter.
        assert!(cap.stats.packets >= cap.packets.len() as u64, "{:?}", cap.stats);
        assert_eq!(cap.stats.drops, 0);
        check_lengths(&cap.packets, 65535);
    }
}

/// Stats accumulate across reads (the kernel zeroes its counters per read).
#[test]
fn stats_are_cumulative() {
    let net = NetnsPair::new();
    let (client_if, server_ip) = (net.client_if.clone(), net.server_ip);
    let (s1, s2, s3) = in_netns(&net.client, move || {
        let mut src = AfPacketSource::open(&cfg(&client_if)).unwrap();
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        let drain = |src: &mut AfPacketSource| {
            while src.next_batch(Duration::from_millis(100), |_| {}).unwrap() > 0 {}
        };
        for _ in 0..5 {
            udp.send_to(b"one", (server_ip, 9)).unwrap();
        }
        drain(&mut src);
        let s1 = src.stats().unwrap();
        let s2 = src.stats().unwrap();
        for _ in 0..7 {
            udp.send_to(b"two", (server_ip, 9)).unwrap();
        }
        drain(&mut src);
        (s1, s2, src.stats().unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(s1.packets, 5, "{s1:?}");
    assert_eq!(s2, s1, "a second read must not lose the counts");
    assert_eq!(s3.packets, 12, "{s3:?}");
    assert_eq!(s3.drops, 0);
}

fn frame(id: u8, tags: &[u16], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0xfa, 0x7e, 0x00, 0x00, id]);
    for &t in tags {
        f.extend_from_slice(&t.to_be_bytes());
        f.extend_from_slice(&100u16.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f.resize(f.len().max(60), 0);
    f
}

fn ipv4(proto: u8, ihl: u8, frag: u16, sport: u16, dport: u16) -> Vec<u8> {
    let l4 = 8 + 8;
    let total = (usize::from(ihl) * 4 + l4) as u16;
    let mut p = vec![0x40 | ihl, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2]);
    p.resize(usize::from(ihl) * 4, 1);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    p
}

fn ipv6(next: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 20, next, 64];
    p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0; 16]);
    p
}

/// Crafted frames injected on the veth: VLAN-tagged (in the data on the
/// sending side, moved to metadata by the receiving veth), IPv4 options,
/// fragments, IPv6, excluded ports. Each side's filter keeps exactly the
/// expected frames, identified by the last byte of the source MAC.
#[test]
fn filter_vlan_and_excluded_ports_on_injected_frames() {
    const EXCLUDED: u16 = 20033;
    let q = 0x8100;
    let ad = 0x88a8;
    let cases: Vec<(u8, bool, Vec<u8>)> = vec![
        (1, true, frame(1, &[], 0x0800, &ipv4(17, 5, 0, 4000, 5001))),
        (2, true, frame(2, &[], 0x0800, &ipv4(6, 5, 0, 4000, 5002))),
        (3, true, frame(3, &[], 0x86dd, &ipv6(17, 4000, 5003))),
        (4, true, frame(4, &[], 0x86dd, &ipv6(6, 4000, 5004))),
        (5, true, frame(5, &[q], 0x0800, &ipv4(17, 5, 0, 4000, 5005))),
        (6, true, frame(6, &[q], 0x86dd, &ipv6(6, 4000, 5006))),
        (7, true, frame(7, &[ad, q], 0x0800, &ipv4(6, 5, 0, 4000, 5007))),
        (8, true, frame(8, &[], 0x0800, &ipv4(17, 7, 0, 4000, 5008))),
        (9, true, frame(9, &[], 0x0800, &ipv4(17, 5, 0x0020, EXCLUDED, EXCLUDED))),
        (20, false, frame(20, &[], 0x0806, &[0, 1, 8, 0, 6, 4, 0, 1, 0, 0, 0, 0, 0, 0])),
        (21, false, frame(21, &[q], 0x0806, &[0, 1, 8, 0, 6, 4, 0, 1, 0, 0, 0, 0, 0, 0])),
        (22, false, frame(22, &[], 0x0800, &ipv4(1, 5, 0, 0x0800, 0))),
        (23, false, frame(23, &[], 0x86dd, &ipv6(58, 0x8000, 0))),
        (24, false, frame(24, &[], 0x0800, &ipv4(17, 5, 0, 4000, EXCLUDED))),
        (25, false, frame(25, &[], 0x0800, &ipv4(6, 5, 0, EXCLUDED, 4000))),
        (26, false, frame(26, &[q], 0x86dd, &ipv6(6, 4000, EXCLUDED))),
        (27, false, frame(27, &[], 0x0800, &ipv4(17, 7, 0, 4000, EXCLUDED))),
        (28, false, frame(28, &[ad, q], 0x0800, &ipv4(6, 5, 0, EXCLUDED, 1))),
        (29, false, frame(29, &[], 0x88cc, &[0; 40])),
    ];
    let net = NetnsPair::new();
    let ring_cfg = |dev: &str| AfPacketConfig { exclude_ports: vec![EXCLUDED], ..cfg(dev) };
    let tx_side = Running::start(Some(&net.client), ring_cfg(&net.client_if));
    let rx_side = Running::start(Some(&net.server), ring_cfg(&net.server_if));

    let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.2.clone()).collect();
    let client_if = net.client_if.clone();
    in_netns(&net.client, move || {
        let ifindex = interfaces::lookup(&client_if).unwrap().index;
        // SAFETY: plain socket(); owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(raw >= 0);
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        for f in &frames {
            // SAFETY: f and sll are valid for the call.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(n, f.len() as isize, "inject: {}", std::io::Error::last_os_error());
        }
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let tx = tx_side.finish();
    let rx = rx_side.finish();

    let expected: Vec<u8> = cases.iter().filter(|c| c.1).map(|c| c.0).collect();
    let ids = |cap: &Capture| -> Vec<u8> {
        cap.packets
            .iter()
            .filter(|p| p.data[6..11] == [2, 0xfa, 0x7e, 0, 0])
            .map(|p| p.data[11])
            .collect()
    };
    assert_eq!(ids(&tx), expected, "sending side (tags in the data)");
    assert_eq!(ids(&rx), expected, "receiving side (tags in metadata)");
    for p in tx.packets.iter().filter(|p| p.data[6..8] == [2, 0xfa]) {
        assert_eq!(p.direction, Direction::Outbound);
        assert_eq!(p.vlan_tci, None);
    }
    let by_id: HashMap<u8, &Pkt> = rx.packets.iter().map(|p| (p.data[11], p)).collect();
    assert_eq!(by_id[&1].vlan_tci, None);
    assert_eq!(by_id[&1].direction, Direction::Inbound);
    assert_eq!(by_id[&5].vlan_tci, Some(100), "veth receive strips the tag into metadata");
    assert_eq!(pkt::ethertype(&by_id[&5].data), Some(0x0800));
    assert_eq!(pkt::ethertype(&by_id[&6].data), Some(0x86dd));
    // 802.1ad outer tag stripped, inner 802.1Q still in the data.
    assert!(by_id[&7].vlan_tci.is_some());
    assert_eq!(by_id[&7].data[12..14], [0x81, 0x00]);
}

/// On lo each packet passes the tap twice; the ring reports it once.
#[test]
fn loopback_sees_each_packet_once() {
    require_root();
    let ring = Running::start(None, cfg("lo"));
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tag = format!("fathom-lo-{}-", std::process::id());
    for i in 0..50 {
        tx.send_to(format!("{tag}{i}").as_bytes(), ("127.0.0.1", port)).unwrap();
    }
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 100];
    for _ in 0..50 {
        rx.recv(&mut buf).unwrap();
    }
    let cap = ring.finish();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let lo = interfaces::lookup("lo").unwrap().index;
    for p in cap.packets.iter().filter(|p| is_port(p, 17, port)) {
        assert_eq!(p.direction, Direction::Inbound);
        assert_eq!(p.ifindex, lo);
        *seen.entry(pkt::parse(&p.data).unwrap().payload.to_vec()).or_default() += 1;
    }
    assert_eq!(seen.len(), 50, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    for i in 0..50 {
        assert!(seen.contains_key(format!("{tag}{i}").as_bytes()));
    }
}

/// In a namespace of our own, the kernel counters show the outgoing copies
/// never reach the ring (PACKET_IGNORE_OUTGOING), not just the callback.
#[test]
fn loopback_outgoing_copies_stay_in_the_kernel() {
    let net = NetnsPair::new();
    let (delivered, stats) = in_netns(&net.client, || {
        let mut src = AfPacketSource::open(&cfg("lo")).unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..40 {
            tx.send_to(b"fathom", rx.local_addr().unwrap()).unwrap();
        }
        let mut delivered = 0;
        while src.next_batch(Duration::from_millis(100), |_| delivered += 1).unwrap() > 0 {}
        (delivered, src.stats().unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(delivered, 40);
    assert_eq!(stats.packets, 40, "{stats:?}");
}

/// Link down is reported once (no busy loop on a pending socket error) and
/// capture resumes when the link comes back; a removed link is reported too.
#[test]
fn link_down_up_and_removal() {
    let net = NetnsPair::new();
    let ns = net.client.clone();
    let (dev, peer_ip) = (net.client_if.clone(), net.server_ip);
    let (link_tx, link_rx) = mpsc::channel::<&'static str>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = in_netns(&net.client, move || {
        let mut src = AfPacketSource::open(&cfg(&dev)).unwrap();
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut results = Vec::new();
        for step in ["down", "up", "del"] {
            link_tx.send(step).unwrap();
            done_rx.recv().unwrap();
            let mut errors = 0;
            let mut delivered = 0;
            if step == "up" {
                // After the link returns, traffic flows into the same ring.
                std::thread::sleep(Duration::from_millis(100));
                udp.send_to(b"fathom-back", (peer_ip, 9)).unwrap();
            }
            for _ in 0..10 {
                match src.next_batch(Duration::from_millis(30), |_| delivered += 1) {
                    Ok(_) => {}
                    Err(CaptureError::InterfaceDown(name)) => {
                        assert_eq!(name, dev);
                        errors += 1;
                    }
                    Err(e) => panic!("{step}: {e}"),
                }
            }
            results.push((step, errors, delivered));
        }
        results
    });
    for _ in 0..3 {
        let step = link_rx.recv().unwrap();
        match step {
            "del" => net.exec_ok(&ns, &["ip", "link", "del", &net.client_if]),
            updown => net.exec_ok(&ns, &["ip", "link", "set", &net.client_if, updown]),
        };
        done_tx.send(()).unwrap();
    }
    let results = worker.join().unwrap();
    assert_eq!(results[0], ("down", 1, 0), "{results:?}");
    assert_eq!((results[1].0, results[1].1), ("up", 0), "{results:?}");
    assert!(results[1].2 >= 1, "nothing captured after the link came back: {results:?}");
    assert_eq!(results[2].1, 1, "{results:?}");
}

/// Snaplen truncates what is kept (through the TCP/UDP filter and through
/// the accept-all program) while wire_len keeps the real length.
#[test]
fn snaplen_truncates_captured_bytes() {
    let net = NetnsPair::new();
    for filter in [true, false] {
        let ring = Running::start(
            Some(&net.client),
            AfPacketConfig { snaplen: 128, filter, ..cfg(&net.client_if) },
        );
        let server_ip = net.server_ip;
        in_netns(&net.client, move || {
            let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
            udp.send_to(&[7u8; 1000], (server_ip, 9)).unwrap();
        })
        .join()
        .unwrap();
        let cap = ring.finish();
        let big: Vec<&Pkt> =
            cap.packets.iter().filter(|p| p.wire_len == 14 + 20 + 8 + 1000).collect();
        assert_eq!(big.len(), 1, "filter {filter}: {:?}", cap.packets);
        assert_eq!((big[0].captured, big[0].data.len()), (128, 128));
        check_lengths(&cap.packets, 128);
    }
}

/// Python sends `count` UDP datagrams from the client namespace; returns how
/// many sendto calls succeeded.
fn udp_burst(net: &NetnsPair, count: u32, port: u16) -> u64 {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nn=0\n\
         for i in range({count}):\n  try:\n    s.sendto(b'fathom-burst-%08d'%i,('{}',{port}))\n    n+=1\n  \
         except OSError:\n    pass\nprint(n)",
        net.server_ip
    );
    let out = net.exec_ok(&net.client, &["python3", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// 20k datagrams through a ring read as they come: every one is either
/// delivered or counted as a kernel drop.
#[test]
fn burst_is_delivered_or_counted() {
    let net = NetnsPair::new();
    let ring = Running::start(Some(&net.client), cfg(&net.client_if));
    let sent = udp_burst(&net, 20_000, 9999);
    assert!(sent > 19_000, "python sent only {sent}");
    std::thread::sleep(Duration::from_millis(100));
    let cap = ring.finish();
    let delivered = cap.packets.iter().filter(|p| is_port(p, 17, 9999)).count() as u64;
    assert!(delivered <= sent);
    assert!(delivered + cap.stats.drops >= sent, "{delivered} + {:?} < {sent}", cap.stats);
    assert!(cap.stats.packets >= sent, "{:?}", cap.stats);
    println!("burst: sent {sent}, delivered {delivered}, {:?}", cap.stats);
}

/// A tiny ring nobody reads during the burst overflows: the loss shows up in
/// the drop counter, and the ring works again once read.
#[test]
fn overflowing_ring_reports_drops_and_recovers() {
    let net = NetnsPair::new();
    let tiny = AfPacketConfig {
        block_size: 4096,
        block_count: 2,
        frame_size: 2048,
        ..cfg(&net.client_if)
    };
    let ring = Running::start_paused(Some(&net.client), tiny, true);
    let sent = udp_burst(&net, 20_000, 9999);
    ring.paused.store(false, Ordering::Release);
    std::thread::sleep(Duration::from_millis(200));
    let server_ip = net.server_ip;
    in_netns(&net.client, move || {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.send_to(b"fathom-after", (server_ip, 9998)).unwrap();
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let cap = ring.finish();
    let delivered = cap.packets.iter().filter(|p| is_port(p, 17, 9999)).count() as u64;
    assert!(cap.stats.drops > 0, "{:?}", cap.stats);
    assert!(delivered < sent);
    assert!(delivered + cap.stats.drops >= sent, "{delivered} + {:?} < {sent}", cap.stats);
    let after = cap.packets.iter().filter(|p| is_port(p, 17, 9998)).count();
    assert_eq!(after, 1, "ring delivers again after overflowing");
    println!("tiny ring: sent {sent}, delivered {delivered}, {:?}", cap.stats);
}

#[test]
fn open_errors_are_clear() {
    require_root();
    let err = AfPacketSource::open(&cfg("fathom-nope0")).err().unwrap();
    assert!(matches!(err, CaptureError::NoSuchInterface(_)), "{err}");
    assert!(err.to_string().contains("fathom-nope0"));

    let huge = AfPacketConfig { block_size: 4 << 20, block_count: 2048, ..cfg("lo") };
    let err = AfPacketSource::open(&huge).err().unwrap();
    assert!(matches!(err, CaptureError::RingTooBig { .. }), "{err}");
    assert!(err.to_string().contains("too big"));

    let odd = AfPacketConfig { block_size: 5000, ..cfg("lo") };
    assert!(matches!(AfPacketSource::open(&odd), Err(CaptureError::InvalidConfig(_))));
    let odd = AfPacketConfig { frame_size: 100, ..cfg("lo") };
    assert!(matches!(AfPacketSource::open(&odd), Err(CaptureError::InvalidConfig(_))));

    // Without CAP_NET_RAW (dropped on this thread only: capabilities are
    // per thread in Linux).
    let err = std::thread::spawn(|| {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header { version: 0x2008_0522, pid: 0 };
        let mut d = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
        // SAFETY: capget/capset with a v3 header and two data structs.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0);
            d[0].effective &= !(1 << 13); // CAP_NET_RAW
            assert_eq!(libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()), 0);
        }
        AfPacketSource::open(&cfg("lo")).err()
    })
    .join()
    .unwrap()
    .expect("open must fail without CAP_NET_RAW");
    assert!(matches!(err, CaptureError::PermissionDenied), "{err}");
    assert!(err.to_string().contains("AF_PACKET needs CAP_NET_RAW"));
}

/// Many rings opened and dropped: their mappings are released.
#[test]
fn rings_close_cleanly() {
    require_root();
    let maps_before = std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    for _ in 0..64 {
        drop(AfPacketSource::open(&cfg("lo")).unwrap());
    }
    let maps_after = std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    // Other tests run in parallel; 64 leaked ring mappings would show.
    assert!(maps_after < maps_before + 32, "{maps_before} -> {maps_after} mappings");
}

#[test]
fn open_each_defaults_to_up_non_loopback() {
    let net = NetnsPair::new();
    let (client_if, template) = (net.client_if.clone(), cfg(""));
    let names = in_netns(&net.client, move || {
        let all = AfPacketSource::open_each(&template, &[]).unwrap();
        let explicit =
            AfPacketSource::open_each(&template, &["lo".to_string(), client_if]).unwrap();
        (
            all.iter().map(|s| s.interface().name.clone()).collect::<Vec<_>>(),
            explicit
                .iter()
                .map(|s| (s.interface().name.clone(), s.interface().loopback))
                .collect::<Vec<_>>(),
        )
    })
    .join()
    .unwrap();
    assert_eq!(names.0, vec![net.client_if.clone()]);
    assert_eq!(names.1, vec![("lo".to_string(), true), (net.client_if.clone(), false)]);
}
