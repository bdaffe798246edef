//! SQL dialect, PromQL, trace assembly and the query HTTP API.
