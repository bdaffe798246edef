//! Memory of 100K concurrent HTTP flows in the flow engine (the code each
//! packet shard runs), from generated packets: heap bytes per flow counted
//! by a counting allocator, and the process's resident set read from
//! /proc/self/status. The agent's budget is 256 MiB RSS with 100K flows.

mod flow_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use fathom_agent::flow::{FlowConfig, FlowEngine, RecordSink};
use fathom_agent::packet::tcp_flags::*;
use fathom_agent::packet::LinkType;
use fathom_agent::records::{L4Flow, L7Log};
use flow_support::*;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Counts records without keeping them.
#[derive(Default)]
struct Tally {
    l7: u64,
    l4: u64,
}

impl RecordSink for Tally {
    fn l7(&mut self, _: L7Log) {
        self.l7 += 1;
    }
    fn l4(&mut self, _: L4Flow) {
        self.l4 += 1;
    }
}

const FLOWS: u32 = 100_000;
const BUDGET_KIB: u64 = 256 * 1024;
const SECOND: u64 = 1_000_000;

fn feed(e: &mut FlowEngine, sink: &mut Tally, f: &[u8], ts: u64) {
    e.process_frame(LinkType::Ethernet, f, f.len() as u32, ts, sink).unwrap();
}

#[test]
fn hundred_thousand_concurrent_http_flows_fit_the_budget() {
    let mut conns: Vec<Conn> = Vec::with_capacity(FLOWS as usize);
    for i in 0..FLOWS {
        let client = format!("10.3.{}.{}:{}", (i >> 8) & 0xff, i & 0xff, 20000 + (i >> 16));
        conns.push(Conn::new(&client, "10.9.0.1:80", i, i.wrapping_mul(7)));
    }
    let rss_before = vm_rss_kib();
    let heap_before = live();
    let mut e = FlowEngine::new(FlowConfig { capacity: FLOWS as usize, ..Default::default() });
    let mut sink = Tally::default();
    let req = get("/api/v1/items/42");
    // Every flow: handshake, one answered call; then idle (keep-alive).
    // One new flow every 100 us of capture time (10 s for all), ticked
    // every second as a shard does.
    let mut ts = 0u64;
    let mut next_tick = SECOND;
    for (i, c) in conns.iter_mut().enumerate() {
        ts = ts.max(i as u64 * 100);
        if ts >= next_tick {
            e.tick(ts, &mut sink);
            next_tick += SECOND;
        }
        for (from_client, flags, data) in [
            (true, SYN, &b""[..]),
            (false, SYN | ACK, b""),
            (true, ACK, b""),
            (true, PSH | ACK, &req[..]),
            (false, ACK, b""),
            (false, PSH | ACK, OK),
            (true, ACK, b""),
        ] {
            let f = c.next(from_client, flags, data);
            feed(&mut e, &mut sink, &f, ts);
            ts += 1;
        }
    }
    ts += 2 * SECOND;
    e.tick(ts, &mut sink);
    assert_eq!(e.len(), FLOWS as usize);
    assert_eq!(sink.l7, u64::from(FLOWS));
    assert_eq!(e.stats().l7_detected, u64::from(FLOWS));
    let idle_heap = live() - heap_before;
    let idle_rss = vm_rss_kib();
    // Then a second request on every flow at once, not yet answered: the
    // worst case, every session busy.
    for c in conns.iter_mut() {
        let f = c.next(true, PSH | ACK, &req);
        feed(&mut e, &mut sink, &f, ts);
        ts += 1;
    }
    let busy_heap = live() - heap_before;
    let busy_rss = vm_rss_kib();
    let per = |b: isize| b as u64 / u64::from(FLOWS);
    eprintln!(
        "100K HTTP flows: idle {} B/flow heap, {} MiB RSS; request in flight {} B/flow heap, \
         {} MiB RSS (test process before the flows: {} MiB)",
        per(idle_heap),
        idle_rss / 1024,
        per(busy_heap),
        busy_rss / 1024,
        rss_before / 1024
    );
    // Idle sessions give back their reusable buffers (2.7 KB per flow before).
    assert!(per(idle_heap) <= 1200, "{} B per idle HTTP flow", per(idle_heap));
    assert!(per(busy_heap) <= 1800, "{} B per busy HTTP flow", per(busy_heap));
    assert!(busy_rss <= BUDGET_KIB, "RSS {busy_rss} KiB with {FLOWS} flows");
    assert!(idle_rss <= BUDGET_KIB, "RSS {idle_rss} KiB with {FLOWS} flows");
    // Answer them all: the calls complete, nothing was lost.
    for c in conns.iter_mut() {
        let f = c.next(false, PSH | ACK, OK);
        feed(&mut e, &mut sink, &f, ts);
        ts += 1;
    }
    assert_eq!(sink.l7, 2 * u64::from(FLOWS));
    assert_eq!(e.stats().l7_parse_errors, 0);
    e.flush(&mut sink);
    assert_eq!(sink.l4, u64::from(FLOWS));
}
