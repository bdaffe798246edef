//! Ingest: the server side of the agent data service.
//!
//! `Push(RecordBatch)` -> limits and agent check -> duplicate check
//! (per-agent high-water mark of batch ids) -> zstd (bounded) -> protobuf
//! -> tags to SmartEncoding ids -> store rows -> a bounded queue to a
//! writer thread -> insert group -> `Store` inserts -> high-water marks
//! persisted -> `Ack`.
//!
//! Insert groups: a writer stores every batch queued for it (up to
//! `group_max_rows`) together, one insert per table, since the engine's cost
//! per insert is large (a part, its files, the query). Under load the queue
//! fills while an insert runs and groups grow; with one agent a group is one
//! batch. Nothing waits for a group to fill.
//!
//! Back-pressure: the queue to the writers is bounded; when the store is
//! slow, pushes wait for room and their acks are late, and an agent (one
//! batch in flight) keeps further batches in its spool.
//!
//! Exactly-once: an agent's batches arrive in batch-id order; a batch is
//! acked only after its rows are inserted and the agent's high-water mark
//! is fsynced; ids at or below the mark are acked as `DUPLICATE` without
//! writing. Each insert of a group carries the token `<group>:<table>` and
//! the engine drops an insert whose token it has seen
//! (`non_replicated_deduplication_window`); a group of one batch is named
//! `<agent>:<batch id>`, the same on every node. A group is written to the
//! writer's journal ([`journal`]) before its first insert, so after a hard
//! crash (kill -9, power loss) between the inserts and the fsync of the
//! marks the same group is stored again at the next start, under the same
//! tokens, and its marks recorded before any writer forms a new group: the
//! agents' replays are then duplicates, however they would be grouped now.
//! A group whose first and only statement the store refuses for good (bad
//! data, not an outage) is given up; its batches are then stored one by one,
//! so only the agent of the refused batch waits. A stopping server
//! finishes the group in flight; a group still failing when it stops stays
//! in the journal for the next start.
//!
//! Marks are per ingest node: an agent moved to another node after a push
//! that timed out but was stored may have that batch stored twice, unless
//! the store is a ClickHouse both nodes share and both stored the batch
//! alone (the token names the batch then). A push its agent stopped
//! waiting for is not stored from the queue.

pub mod config;
pub mod convert;
pub mod decode;
pub mod hwm;
pub mod journal;
pub mod server;

pub use config::IngestConfig;
pub use convert::{Rows, Tagger};
pub use decode::{decode_records, decompress, DecodeError, Limits};
pub use hwm::HighWaterMarks;
pub use server::{AgentAuthorizer, IngestService, IngestStats, IngestTls, RunningIngest};
