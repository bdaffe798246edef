//! fathom-agent: capture -> flow shards -> per-flow state machines ->
//! L7 logs, L4 flows, RED metrics -> output.
//!
//! | module | what |
//! |---|---|
//! | [`packet`] | zero-copy decode of Ethernet / VLAN / IPv4 / IPv6 / TCP / UDP headers |
//! | [`capture`] | packet sources: AF_PACKET TPACKET_V3 rings, pcap files |
//! | [`ebpf_source`] | eBPF socket and TLS events -> per-socket L7 sessions with process identity |
//! | [`flow`] | the flow table and per-flow state: TCP tracking, reassembly, L7 sessions, L4 counters |
//! | [`metrics`] | 1 s / 1 min RED and network metrics with mergeable histograms |
//! | [`output`] | newline-delimited JSON of tagged records, to stdout or a file |
//! | [`process`] | the process table from /proc: names, command lines, start times, containers |
//! | [`records`] | what the agent emits |
//! | [`pipeline`] | the actors: flow shards, the emitter, routing packets to shards |
//! | [`sender`] | batches, zstd, on-disk spool, gRPC push to the server |
//! | [`run`] | live capture and pcap replay, start to clean shutdown |
//! | [`config`] | TOML configuration with environment overrides |
//! | [`telemetry`] | the agent's own Prometheus metrics |

pub mod capture;
pub mod config;
pub mod ebpf_source;
pub mod flow;
pub mod host;
pub mod http;
pub mod metrics;
pub mod output;
pub mod packet;
pub mod pipeline;
pub mod process;
pub mod records;
pub mod run;
pub mod sender;
pub mod telemetry;
