//! Capture throughput on this machine: a thread ping-pongs small messages
//! over a loopback TCP pair (one write and one read per round trip, so two
//! socket data events), first without the programs, then with them while
//! the main thread drains the ring buffer, then with them and no reader.
//! Prints the round trips per second each way and the events per second
//! delivered into userspace; then fills a 256 MiB ring with nobody reading
//! and times draining it, which is the reader's own capacity.
//!
//! Needs root. `cargo bench -p fathom-ebpf --bench capture [-- SECONDS]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fathom_ebpf::{Config, EbpfCapture};

const MESSAGE: usize = 64;

/// Runs the ping-pong until `stop`; returns round trips done.
fn pingpong(stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.set_nodelay(true).ok();
        let out = [b'x'; MESSAGE];
        let mut buf = [0u8; MESSAGE];
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..100 {
                client.write_all(&out).expect("write");
                server.read_exact(&mut buf).expect("read");
            }
            done.fetch_add(100, Ordering::Relaxed);
        }
    })
}

/// `capture`: drain it while the ping-pong runs; `None`: just wait.
fn run(seconds: f64, capture: Option<&mut EbpfCapture>) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let worker = pingpong(stop.clone(), done.clone());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut events = 0u64;
    match capture {
        Some(capture) => {
            while Instant::now() < deadline {
                events += capture.poll(Duration::from_millis(10)).expect("poll").count() as u64;
            }
        }
        None => thread::sleep(deadline - start),
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    worker.join().expect("ping-pong thread");
    (done.load(Ordering::Relaxed) as f64 / elapsed, events)
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("capture bench: loading eBPF programs needs root");
        std::process::exit(2);
    }
    let seconds: f64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5.0);

    let (baseline, _) = run(seconds, None);
    let mut capture = EbpfCapture::load(Config {
        trace_self: true,
        capture_bytes: MESSAGE as u32,
        // The worst case: every message reported.
        infer_protocols: false,
        ..Config::default()
    })
    .unwrap_or_else(|e| {
        eprintln!("capture bench: {e}");
        std::process::exit(2);
    });
    let (traced, events) = run(seconds, Some(&mut capture));
    let counters = capture.counters().expect("counters");
    // Nobody reading: once the ring is full the programs still run and
    // count drops, which isolates their own cost from the reader's.
    let (unread, _) = run(seconds, None);
    drop(capture);
    let (after, _) = run(seconds, None);

    // Reader capacity: let the ping-pong fill a large ring with nobody
    // reading, then time draining it on one core.
    let mut capture = EbpfCapture::load(Config {
        trace_self: true,
        capture_bytes: MESSAGE as u32,
        // The worst case: every message reported.
        infer_protocols: false,
        ring_buffer_bytes: 256 << 20,
        ..Config::default()
    })
    .unwrap_or_else(|e| {
        eprintln!("capture bench: {e}");
        std::process::exit(2);
    });
    run(seconds, None);
    let start = Instant::now();
    let mut payload_bytes = 0usize;
    let drained: u64 = capture
        .poll(Duration::from_millis(0))
        .expect("poll")
        .map(|e| {
            if let fathom_ebpf::Event::Data(d) = &e {
                payload_bytes += d.payload.len();
            }
        })
        .count() as u64;
    let drain_secs = start.elapsed().as_secs_f64();
    let queued = capture.counters().expect("counters");
    drop(capture);

    let untraced = (baseline + after) / 2.0;
    println!(
        "round trips/s without programs: {untraced:.0} (before {baseline:.0}, after {after:.0})"
    );
    println!(
        "round trips/s with programs:    {traced:.0} ({:.1}% of untraced)",
        100.0 * traced / untraced
    );
    println!(
        "round trips/s, programs, no reader: {unread:.0} ({:.1}% of untraced)",
        100.0 * unread / untraced
    );
    println!(
        "events/s delivered to userspace: {:.0}; ring buffer drops {}",
        events as f64 / seconds,
        counters.ring_buffer_drops
    );
    println!(
        "reader alone: drained {drained} of {} queued events ({} drops, {} payload bytes) in {:.3} s: {:.0} events/s on one core",
        queued.produced(),
        queued.ring_buffer_drops,
        payload_bytes,
        drain_secs,
        drained as f64 / drain_secs
    );
}
