//! Packets per second delivered from a TPACKET_V3 ring on loopback under a
//! UDP flood. Prints figures; asserts nothing. Needs root (CAP_NET_RAW).
//!
//!   cargo bench -p fathom-agent --bench capture_lo [-- SECONDS]

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fathom_agent::capture::{AfPacketConfig, AfPacketSource};

fn main() {
    let secs: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3);
    let mut src = match AfPacketSource::open(&AfPacketConfig::for_interface("lo")) {
        Ok(src) => src,
        Err(e) => {
            eprintln!("capture_lo: {e}");
            std::process::exit(1);
        }
    };
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            tx.connect(("127.0.0.1", port)).unwrap();
            // sendmmsg: 64 datagrams per system call, so the sender is not
            // the bottleneck.
            let mut payload = [0x5au8; 32];
            let mut iov =
                libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
            // SAFETY: zeroed mmsghdr is valid; each points at the one iovec.
            let mut msgs: Vec<libc::mmsghdr> = (0..64)
                .map(|_| {
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = &mut iov;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: msgs is valid for its length; the socket is connected.
                let n = unsafe {
                    libc::sendmmsg(tx.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0)
                };
                if n > 0 {
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    };
    // The receiver's buffer fills and the kernel drops there; the capture tap
    // runs before that, so every datagram reaches the ring.
    let port_be = port.to_be_bytes();
    let (mut delivered, mut bytes, mut blocks) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let before = src.stats().unwrap();
    while start.elapsed() < Duration::from_secs(secs) {
        let n = src
            .next_batch(Duration::from_millis(100), |p| {
                // Ethernet 14 + IPv4 20: UDP destination port at 36.
                if p.data.get(36..38) == Some(&port_be[..]) {
                    delivered += 1;
                }
                bytes += u64::from(p.captured);
            })
            .unwrap();
        blocks += u64::from(n > 0);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_ns = thread_cpu_ns() - cpu_start;
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let stats = src.stats().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    println!("capture_lo: {secs} s UDP flood on lo, 32-byte payloads, one sendmmsg sender thread");
    println!("  sent       {:>12.0} datagrams/s ({sent} total)", sent as f64 / elapsed);
    println!(
        "  delivered  {:>12.0} packets/s from the ring ({delivered} total)",
        delivered as f64 / elapsed
    );
    println!("  bytes      {:>12.1} MB/s captured, {blocks} blocks", bytes as f64 / elapsed / 1e6);
    println!(
        "  reader CPU {:>12.1} ns/packet (poll + ring walk on this thread; the kernel's \
         copy into the ring is charged to the sender)",
        cpu_ns as f64 / delivered.max(1) as f64
    );
    println!(
        "  kernel     {} passed filter, {} dropped (ring full), {} freezes",
        stats.packets - before.packets,
        stats.drops - before.drops,
        stats.freeze_q_cnt - before.freeze_q_cnt
    );
}

/// CPU time of the calling thread: what reading the ring costs, apart from
/// the sender and the kernel's work on the sending side.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is valid for writing.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
