//! Ingest: the server side of the agent data service.
//!
//! `Push(RecordBatch)` -> limits and agent check -> duplicate check
//! (per-agent high-water mark of batch ids) -> zstd (bounded) -> protobuf
//! -> tags to SmartEncoding ids -> store rows -> a bounded queue to a
//! writer thread -> `Store` inserts -> high-water mark persisted -> `Ack`.
//!
//! Back-pressure: the queue to the writers is bounded; when the store is
//! slow, pushes wait for room and their acks are late, and an agent (one
//! batch in flight) keeps further batches in its spool.
//!
//! Exactly-once: an agent's batches arrive in batch-id order; a batch is
//! acked only after its rows are inserted and the agent's high-water mark
//! is fsynced; ids at or below the mark are acked as `DUPLICATE` without
//! writing. A stopping or torn-down server finishes the insert in flight
//! and records its mark. After a hard crash (kill -9, power loss) between
//! the store's confirmation of an insert and the fsync of the mark, the
//! agent replays that batch; each insert carries the token
//! `agent:batch_id:table`, and the engine drops an insert whose token it
//! has seen (`non_replicated_deduplication_window`), so it is stored once.

pub mod config;
pub mod convert;
pub mod decode;
pub mod hwm;
pub mod server;

pub use config::IngestConfig;
pub use convert::{Rows, Tagger};
pub use decode::{decode_records, decompress, DecodeError, Limits};
pub use hwm::HighWaterMarks;
pub use server::{AgentAuthorizer, IngestService, IngestStats, IngestTls, RunningIngest};
