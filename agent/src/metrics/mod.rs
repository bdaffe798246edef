//! 1 s / 1 min metrics aggregated in the agent: RED rows from L7 logs,
//! network rows from L4 flows, and the mergeable latency histogram they carry.
//!
//! Both aggregators share one shape: `observe(&record)` on the hot path,
//! `flush(now_us)` on a timer (every second of the driving clock: wall
//! time live, packet time when replaying) for the windows that are
//! complete, `flush_all()` at shutdown, and `stats()` for what was dropped.

pub mod histogram;
pub mod network;
pub mod red;
mod window;

pub use histogram::{Histogram, SparseHistogram};
pub use network::{NetworkAggregator, NetworkMetric, NetworkValues};
pub use red::{RedAggregator, RedMetric, RedValues};
pub use window::{WindowConfig, WindowStats};
