//! fathom-agent: capture -> flow shards -> per-flow state machines ->
//! L7 logs, L4 flows, RED metrics -> output.
//!
//! | module | what |
//! |---|---|
//! | [`packet`] | zero-copy decode of Ethernet / VLAN / IPv4 / IPv6 / TCP / UDP headers |
//! | [`capture`] | packet sources: AF_PACKET TPACKET_V3 rings, pcap files |
//! | [`flow`] | the flow table and per-flow state: TCP tracking, reassembly, L7 sessions, L4 counters |
//! | [`metrics`] | 1 s / 1 min RED and network metrics with mergeable histograms |
//! | [`records`] | what the agent emits |

pub mod capture;
pub mod records;
