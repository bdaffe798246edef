//! Many short flows through a small table: evictions are counted and memory
//! stays bounded (measured with a counting allocator).

mod flow_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use fathom_agent::flow::{FlowConfig, FlowEngine, RecordSink};
use fathom_agent::packet::build::FrameBuilder;
use fathom_agent::packet::tcp_flags::*;
use fathom_agent::packet::LinkType;
use fathom_agent::records::{CloseType, L4Flow, L7Log};
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

/// The heap counter is process-wide: tests measuring it take turns.
static MEASURE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Counts records without keeping them.
#[derive(Default)]
struct Tally {
    l7: u64,
    l4: u64,
    evicted: u64,
}

impl RecordSink for Tally {
    fn l7(&mut self, _: L7Log) {
        self.l7 += 1;
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
    let _turn = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
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
            live_at_cap = LIVE.load(Ordering::Relaxed);
        }
    }
    let live_end = LIVE.load(Ordering::Relaxed);
    let s = e.stats();
    assert_eq!(s.flows_created, 100_000);
    assert_eq!(s.flows_active, CAP as u64);
    assert_eq!(s.flows_evicted, 90_000);
    assert_eq!(sink.evicted, 90_000);
    // Each evicted flow's pending request is reported as timed out.
    assert_eq!(sink.l7, 90_000);
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
    let _turn = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let before = LIVE.load(Ordering::Relaxed);
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
    let used = LIVE.load(Ordering::Relaxed) - before;
    let per_flow = used as usize / 100_000;
    eprintln!("100K concurrent flows: {} MiB heap, {per_flow} B/flow", used / (1 << 20));
    // Far below the 256 MiB the agent may use for 100K flows.
    assert!(per_flow < 1024, "{per_flow} B per flow");
}
