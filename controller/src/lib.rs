//! Agent enrollment (mTLS CA), agent registry, config push and ingest assignment.

pub mod ca;
pub mod token;
