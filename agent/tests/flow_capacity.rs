//! Many short flows through a small table: evictions are counted and memory
//! stays bounded (measured with a counting allocator).

mod flow_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use fathom_agent::flow::{FlowConfig, FlowEngine, RecordSink};
use fathom_agent::packet::build::FrameBuilder;
use fathom_agent::packet::tcp_flags::*;
use fathom_agent::packet::LinkType;
use fathom_agent::records::{CloseType, L4Flow, L7Log};
use flow_support::*;

struct Counting;

thread_local! {
    // Per thread, so the test harness's own allocations on other threads
    // do not count. Const-initialised: touching them never allocates.
    static LIVE_T: Cell<isize> = const { Cell::new(0) };
    static ALLOCS_T: Cell<isize> = const { Cell::new(0) };
}

fn bump(live: isize, allocs: isize) {
    let _ = LIVE_T.try_with(|c| c.set(c.get() + live));
    let _ = ALLOCS_T.try_with(|c| c.set(c.get() + allocs));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        bump(l.size() as isize, 1);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        bump(-(l.size() as isize), 0);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        bump(n as isize - l.size() as isize, 1);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes live on this thread.
fn live() -> isize {
    LIVE_T.with(|c| c.get())
}

/// Counts records without keeping them.
#[derive(Default)]
struct Tally {
    l7: u64,
    last_l7: Option<L7Log>,
    l4: u64,
    evicted: u64,
}

impl RecordSink for Tally {
    fn l7(&mut self, log: L7Log) {
        self.l7 += 1;
        self.last_l7 = Some(log);
    }
    fn l4(&mut self, f: L4Flow) {
        self.l4 += 1;
        if f.close_type == CloseType::Evicted {
            self.evicted += 1;
        }
    }
}

#[test]
fn hundred_thousand_short_flows_in_ten_thousand_slots() {
    const CAP: usize = 10_000;
    let mut e = FlowEngine::new(FlowConfig { capacity: CAP, ..Default::default() });
    let mut sink = Tally::default();
    let server = sa("10.9.0.1:80");
    let mut buf = Vec::new();
    let req = get("/x");
    let mut live_at_cap = 0;
    for i in 0..100_000u32 {
        // Every flow: SYN and a request, never closed.
        let client = std::net::SocketAddr::from((
            [10, 1, (i >> 16) as u8, (i >> 8) as u8],
            1024 + (i & 0xff) as u16 * 100,
        ));
        FrameBuilder::tcp(client, server, 1, 0, SYN).build_into(b"", &mut buf);
        let _ =
            e.process_frame(LinkType::Ethernet, &buf, buf.len() as u32, u64::from(i), &mut sink);
        FrameBuilder::tcp(client, server, 2, 1, ACK | PSH).build_into(&req, &mut buf);
        let _ =
            e.process_frame(LinkType::Ethernet, &buf, buf.len() as u32, u64::from(i), &mut sink);
        assert!(e.len() <= CAP);
        if i as usize == 2 * CAP {
            live_at_cap = live();
        }
    }
    let live_end = live();
    let s = e.stats();
    assert_eq!(s.flows_created, 100_000);
    assert_eq!(s.flows_active, CAP as u64);
    assert_eq!(s.flows_evicted, 90_000);
    assert_eq!(sink.evicted, 90_000);
    // Each evicted flow's pending request is reported as timed out.
    assert_eq!(sink.l7, 90_000);
    assert_eq!(s.l7_timeouts, 90_000);
    assert_eq!(s.l7_detected, 100_000);
    // Memory after 100K flows is what it was after 20K: bounded by the capacity.
    let growth = live_end - live_at_cap;
    assert!(growth.abs() < 2 * 1024 * 1024, "grew by {growth} bytes");
    let per_flow = live_end as usize / CAP;
    eprintln!(
        "live heap with {CAP} HTTP flows: {} KiB ({per_flow} B/flow); L4-only flow state ~{} B",
        live_end / 1024,
        FlowEngine::bytes_per_flow()
    );
    e.flush(&mut sink);
    assert_eq!(e.stats().flows_active, 0);
}

#[test]
fn memory_of_100k_concurrent_l4_flows() {
    let before = live();
    let mut e = FlowEngine::new(FlowConfig { capacity: 100_000, ..Default::default() });
    let mut sink = Tally::default();
    let server = sa("10.9.0.1:443");
    let mut buf = Vec::new();
    for i in 0..100_000u32 {
        let client = std::net::SocketAddr::from((
            [10, 2, (i >> 8) as u8, i as u8],
            30000 + (i >> 16) as u16,
        ));
        FrameBuilder::tcp(client, server, 1, 0, SYN).build_into(b"", &mut buf);
        let _ = e.process_frame(LinkType::Ethernet, &buf, buf.len() as u32, 1, &mut sink);
        // TLS-ish bytes nothing detects.
        FrameBuilder::tcp(client, server, 2, 1, ACK | PSH)
            .build_into(&[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5], &mut buf);
        let _ = e.process_frame(LinkType::Ethernet, &buf, buf.len() as u32, 2, &mut sink);
    }
    assert_eq!(e.len(), 100_000);
    let used = live() - before;
    let per_flow = used as usize / 100_000;
    eprintln!("100K concurrent flows: {} MiB heap, {per_flow} B/flow", used / (1 << 20));
    // Far below the 256 MiB the agent may use for 100K flows.
    assert!(per_flow < 1024, "{per_flow} B per flow");
}

fn allocs() -> isize {
    ALLOCS_T.with(|c| c.get())
}

#[test]
fn steady_state_packets_do_not_allocate() {
    let mut h = Harness::new(FlowConfig::default());
    let mut sink = Tally::default();
    let mut frames = Vec::new();

    // An L4-only flow: detection gives up, then data flows both ways.
    let mut c = Conn::new("10.0.0.1:40000", "10.0.0.2:443", 1, 1);
    c.handshake(&mut h, 0, 1, 2);
    for i in 0..1000u64 {
        frames.push((c.next(i % 2 == 0, PSH | ACK, &[0x17, 3, 3, 0, 4, 1, 2, 3, 4]), 10 + i));
    }
    let warm = 20;
    for (f, ts) in &frames[..warm] {
        let _ = h.engine.process_frame(LinkType::Ethernet, f, f.len() as u32, *ts, &mut sink);
    }
    let before = allocs();
    for (f, ts) in &frames[warm..] {
        let _ = h.engine.process_frame(LinkType::Ethernet, f, f.len() as u32, *ts, &mut sink);
    }
    assert_eq!(allocs() - before, 0, "allocations for {} L4-only packets", frames.len() - warm);

    // An HTTP keep-alive flow: requests arriving in two segments, ACKs and
    // responses; only the records allocate.
    let mut c = Conn::new("10.0.0.1:40001", "10.0.0.2:80", 1, 1);
    c.handshake(&mut h, 0, 1, 2);
    let req = get("/item");
    let (r1, r2) = req.split_at(9);
    let mut frames = Vec::new();
    for i in 0..500u64 {
        frames.push((c.next(true, PSH | ACK, r1), 100 + i * 10));
        frames.push((c.next(true, PSH | ACK, r2), 101 + i * 10));
        frames.push((c.next(false, ACK, b""), 102 + i * 10));
        frames.push((c.next(false, PSH | ACK, OK), 103 + i * 10));
        frames.push((c.next(true, ACK, b""), 104 + i * 10));
    }
    let run = |h: &mut Harness, sink: &mut Tally, fs: &[(Vec<u8>, u64)]| {
        for (f, ts) in fs {
            let _ = h.engine.process_frame(LinkType::Ethernet, f, f.len() as u32, *ts, sink);
        }
    };
    run(&mut h, &mut sink, &frames[..50]);
    let l7_before = sink.l7;
    let before = allocs();
    run(&mut h, &mut sink, &frames[50..]);
    let calls = (sink.l7 - l7_before) as isize;
    assert_eq!(calls, 490);
    let per_call = (allocs() - before) as f64 / calls as f64;
    // Building an L7Log allocates its strings (as cloning one does);
    // nothing per packet may add to that.
    let log = sink.last_l7.take().unwrap();
    let before = allocs();
    let copy = log.clone();
    let per_record = (allocs() - before) as f64;
    drop(copy);
    assert_eq!(log.call.request_resource, "/item");
    eprintln!("HTTP keep-alive: {per_call:.1} allocations per call, {per_record} for its record");
    assert_eq!(per_call, per_record);
}
