//! The ingest hot path with mimalloc as the global allocator: decoding
//! and row building are allocation-bound (a String per text field), so the
//! allocator a server binary links sets much of the rate.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("ingest.rs");
