//! SQL dialect, PromQL, trace assembly and the query HTTP API.
//!
//! - [`sql`]: the fathom SQL dialect, translated to ClickHouse SQL;
//! - [`catalog`]: the tables, tags and metrics the dialect names;
//! - [`api`]: the HTTP API (`POST /v1/query`, `GET /v1/health`).

pub mod api;
pub mod catalog;
pub mod sql;

pub use api::{router, router_with_config, QueryConfig};
pub use sql::{translate, DialectError, Limits, Translation};
