//! Steady-state parsing allocates nothing: after a warm-up, a session
//! parses and pairs thousands more calls without one heap allocation.

#[path = "common/messages.rs"]
mod messages;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use fathom_protocols::{AnyParser, Direction, MessageType, Session};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn parsing_and_pairing_allocate_nothing_in_steady_state() {
    let mut report = Vec::new();
    for pair in messages::all() {
        let parser = AnyParser::new(pair.protocol, pair.transport).unwrap();
        let mut session = Session::new(parser);
        let mut sessions = 0u64;
        let mut run = |session: &mut Session<AnyParser>, n: usize, ts: &mut u64| {
            for _ in 0..n {
                *ts += 1;
                session.feed(Direction::Request, &pair.request, 0, *ts, &mut |_| {});
                session.feed(Direction::Response, &pair.response, 0, *ts + 1, &mut |ev| {
                    if ev.record.msg_type == MessageType::Session {
                        sessions += 1;
                    }
                });
            }
        };
        let mut ts = 0;
        run(&mut session, 100, &mut ts);
        let before = ALLOCS.load(Ordering::Relaxed);
        run(&mut session, 10_000, &mut ts);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        report.push(format!("{}: {allocs} allocations in 10000 calls", pair.name));
        assert_eq!(sessions, 10_100, "{}: every request paired with its response", pair.name);
        assert_eq!(allocs, 0, "{}: steady-state parsing allocated", pair.name);
    }
    eprintln!("{}", report.join("\n"));
}
