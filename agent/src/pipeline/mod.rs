//! The running agent: capture threads feed flow shards (one actix actor per
//! core, each owning its flow engines), shards send records to the emitter
//! (aggregation into RED / network metrics, output). The flows themselves
//! are plain state machines driven synchronously by their shard: no task or
//! mailbox per packet or per flow.

pub mod batch;
pub mod emitter;
pub mod merge;
pub mod router;
pub mod shard;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use batch::{PacketBatch, Slot};
pub use emitter::{Emitter, ProcessEvents, Records, Shutdown};
pub use router::Router;
pub use shard::{FlowShard, Flush};

/// Where "now" comes from: the wall clock for live capture, the packets'
/// own timestamps when replaying a file (so timeouts follow the capture).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    Wall,
    Packets,
}

pub fn wall_now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Shared stop flag for capture threads.
#[derive(Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// How long a capture thread waits for a ring block before checking the stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
