//! `fathom.agent.v1`: the agent -> server data service.
//!
//! An agent calls `AgentData/Push` once per batch (unary; the agent waits
//! for the answer before sending the next batch, so batches of one agent
//! arrive in order). The server answers with an [`Ack`] only after the
//! batch's rows are durable in the store; failures are gRPC statuses:
//!
//! | status | meaning | agent does |
//! |---|---|---|
//! | OK + `STORED` | stored | deletes the batch from its spool |
//! | OK + `DUPLICATE` | already stored (a replay) | deletes it |
//! | INVALID_ARGUMENT | malformed (bad protobuf, bad zstd, counts that do not match) | drops it, counts it: a retry cannot help |
//! | RESOURCE_EXHAUSTED | larger than the server accepts (compressed or decompressed) | drops it, counts it |
//! | PERMISSION_DENIED | unknown agent | keeps it and retries later |
//! | UNAVAILABLE, others | server busy, store down, ... | keeps it and retries with backoff |

use prost::Message;

/// How [`RecordBatch::payload`] is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

/// One batch of records from one agent.
#[derive(Clone, PartialEq, Message)]
pub struct RecordBatch {
    /// The agent's stable identity (its configured name or host name).
    #[prost(string, tag = "1")]
    pub agent_id: String,
    /// Increases by one per batch, per agent, across agent restarts (the
    /// agent persists it with its spool). The server drops ids it has stored.
    #[prost(uint64, tag = "2")]
    pub batch_id: u64,
    #[prost(enumeration = "Compression", tag = "3")]
    pub compression: i32,
    /// A [`Records`] message, compressed as `compression` says.
    #[prost(bytes = "vec", tag = "4")]
    pub payload: Vec<u8>,
    /// Length of the payload once decompressed; the server refuses a batch
    /// whose declared or actual size exceeds its limit (zstd bombs).
    #[prost(uint64, tag = "5")]
    pub uncompressed_size: u64,
    /// Records in the payload, checked by the server after decoding.
    #[prost(message, optional, tag = "6")]
    pub counts: Option<RecordCounts>,
    /// The host the agent runs on (tagged as `host`).
    #[prost(string, tag = "7")]
    pub host: String,
    /// The host's own addresses (4 or 16 bytes each): the side of a flow
    /// with one of them (or a loopback address) is tagged with `host`.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub host_ips: Vec<Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct RecordCounts {
    #[prost(uint32, tag = "1")]
    pub l7: u32,
    #[prost(uint32, tag = "2")]
    pub l4: u32,
    #[prost(uint32, tag = "3")]
    pub red: u32,
    #[prost(uint32, tag = "4")]
    pub network: u32,
    #[prost(uint32, tag = "5")]
    pub process: u32,
}

impl RecordCounts {
    pub fn total(&self) -> u64 {
        [self.l7, self.l4, self.red, self.network, self.process].iter().map(|&n| u64::from(n)).sum()
    }
}

/// The decompressed payload of a [`RecordBatch`].
#[derive(Clone, PartialEq, Message)]
pub struct Records {
    #[prost(message, repeated, tag = "1")]
    pub l7: Vec<L7Log>,
    #[prost(message, repeated, tag = "2")]
    pub l4: Vec<L4Flow>,
    #[prost(message, repeated, tag = "3")]
    pub red: Vec<RedMetric>,
    #[prost(message, repeated, tag = "4")]
    pub network: Vec<NetworkMetric>,
    #[prost(message, repeated, tag = "5")]
    pub process: Vec<ProcessInfo>,
}

impl Records {
    pub fn counts(&self) -> RecordCounts {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        RecordCounts {
            l7: n(self.l7.len()),
            l4: n(self.l4.len()),
            red: n(self.red.len()),
            network: n(self.network.len()),
            process: n(self.process.len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts().total() == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AckStatus {
    Unspecified = 0,
    /// The batch is durable in the store.
    Stored = 1,
    /// The batch had been stored before (a replay); nothing was written.
    Duplicate = 2,
}

#[derive(Clone, PartialEq, Message)]
pub struct Ack {
    #[prost(uint64, tag = "1")]
    pub batch_id: u64,
    #[prost(enumeration = "AckStatus", tag = "2")]
    pub status: i32,
}

/// Where a record's bytes were seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CaptureSource {
    Unspecified = 0,
    Packet = 1,
    Syscall = 2,
    Tls = 3,
    Pcap = 4,
}

/// Which end of the connection a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Side {
    Unknown = 0,
    Client = 1,
    Server = 2,
}

/// Where a call was observed (DeepFlow's tap side): in the client or the
/// server process (eBPF), or on the network (packets). `Unspecified` is
/// what agents that predate the field send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ObservationPoint {
    Unspecified = 0,
    ClientProcess = 1,
    ServerProcess = 2,
    Network = 3,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProcessRef {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint32, tag = "2")]
    pub tid: u32,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(enumeration = "Side", tag = "4")]
    pub side: i32,
}

/// Addresses are 4 (IPv4) or 16 (IPv6) bytes in network order; ports and
/// the IP protocol number (6 TCP, 17 UDP) are varints.
#[derive(Clone, PartialEq, Message)]
pub struct L7Log {
    #[prost(bytes = "vec", tag = "1")]
    pub client_ip: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub client_port: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub server_ip: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub server_port: u32,
    #[prost(uint32, tag = "5")]
    pub ip_protocol: u32,
    #[prost(enumeration = "CaptureSource", tag = "6")]
    pub source: i32,
    #[prost(string, tag = "7")]
    pub interface: String,
    #[prost(message, optional, tag = "8")]
    pub process: Option<ProcessRef>,
    #[prost(uint64, tag = "9")]
    pub start_time_us: u64,
    #[prost(uint64, tag = "10")]
    pub end_time_us: u64,
    #[prost(uint64, tag = "11")]
    pub latency_us: u64,
    #[prost(string, tag = "12")]
    pub l7_protocol: String,
    #[prost(string, tag = "13")]
    pub msg_type: String,
    #[prost(string, tag = "14")]
    pub version: String,
    #[prost(string, tag = "15")]
    pub request_type: String,
    #[prost(string, tag = "16")]
    pub request_domain: String,
    #[prost(string, tag = "17")]
    pub request_resource: String,
    #[prost(string, tag = "18")]
    pub endpoint: String,
    #[prost(uint64, optional, tag = "19")]
    pub request_id: Option<u64>,
    #[prost(sint32, optional, tag = "20")]
    pub response_code: Option<i32>,
    #[prost(string, tag = "21")]
    pub response_status: String,
    #[prost(string, tag = "22")]
    pub response_exception: String,
    #[prost(string, tag = "23")]
    pub response_result: String,
    #[prost(uint32, optional, tag = "24")]
    pub request_length: Option<u32>,
    #[prost(uint32, optional, tag = "25")]
    pub response_length: Option<u32>,
    #[prost(string, tag = "26")]
    pub trace_id: String,
    #[prost(string, tag = "27")]
    pub span_id: String,
    #[prost(string, tag = "28")]
    pub parent_span_id: String,
    #[prost(string, tag = "29")]
    pub x_request_id: String,
    #[prost(bool, tag = "30")]
    pub truncated: bool,
    #[prost(uint64, optional, tag = "31")]
    pub syscall_trace_id_request: Option<u64>,
    #[prost(uint64, optional, tag = "32")]
    pub syscall_trace_id_response: Option<u64>,
    #[prost(uint32, optional, tag = "33")]
    pub req_tcp_seq: Option<u32>,
    #[prost(uint32, optional, tag = "34")]
    pub resp_tcp_seq: Option<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct DirectionCounters {
    #[prost(uint64, tag = "1")]
    pub bytes: u64,
    #[prost(uint64, tag = "2")]
    pub packets: u64,
    #[prost(uint64, tag = "3")]
    pub payload_bytes: u64,
    #[prost(uint32, tag = "4")]
    pub syn: u32,
    #[prost(uint32, tag = "5")]
    pub fin: u32,
    #[prost(uint32, tag = "6")]
    pub rst: u32,
    #[prost(uint32, tag = "7")]
    pub retransmissions: u32,
    #[prost(uint32, tag = "8")]
    pub zero_windows: u32,
    #[prost(uint32, tag = "9")]
    pub out_of_order: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct L4Flow {
    #[prost(bytes = "vec", tag = "1")]
    pub client_ip: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub client_port: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub server_ip: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub server_port: u32,
    #[prost(uint32, tag = "5")]
    pub ip_protocol: u32,
    #[prost(enumeration = "CaptureSource", tag = "6")]
    pub source: i32,
    #[prost(string, tag = "7")]
    pub interface: String,
    #[prost(uint64, tag = "8")]
    pub start_time_us: u64,
    #[prost(uint64, tag = "9")]
    pub end_time_us: u64,
    #[prost(uint64, tag = "10")]
    pub duration_us: u64,
    /// Client -> server.
    #[prost(message, optional, tag = "11")]
    pub tx: Option<DirectionCounters>,
    /// Server -> client.
    #[prost(message, optional, tag = "12")]
    pub rx: Option<DirectionCounters>,
    #[prost(uint32, tag = "13")]
    pub syn_ack: u32,
    #[prost(uint64, optional, tag = "14")]
    pub rtt_server_us: Option<u64>,
    #[prost(uint64, optional, tag = "15")]
    pub rtt_client_us: Option<u64>,
    /// "open", "fin", "client_reset", "server_reset", "handshake_timeout",
    /// "idle", "evicted", "shutdown".
    #[prost(string, tag = "16")]
    pub close_type: String,
    #[prost(string, optional, tag = "17")]
    pub l7_protocol: Option<String>,
    /// One local process, from agents that predate `client_process` and
    /// `server_process`; ignored when either of those is set.
    #[prost(message, optional, tag = "18")]
    pub process: Option<ProcessRef>,
    /// The local process at the client end, when eBPF saw it.
    #[prost(message, optional, tag = "19")]
    pub client_process: Option<ProcessRef>,
    /// The local process at the server end, when eBPF saw it.
    #[prost(message, optional, tag = "20")]
    pub server_process: Option<ProcessRef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Granularity {
    Unspecified = 0,
    Second = 1,
    Minute = 2,
}

#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct HistogramBucket {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct RedMetric {
    /// Window start, unix seconds.
    #[prost(uint64, tag = "1")]
    pub time_s: u64,
    #[prost(enumeration = "Granularity", tag = "2")]
    pub granularity: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub server_ip: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub server_port: u32,
    #[prost(string, optional, tag = "5")]
    pub process_name: Option<String>,
    #[prost(string, tag = "6")]
    pub l7_protocol: String,
    #[prost(string, tag = "7")]
    pub endpoint: String,
    #[prost(uint64, tag = "8")]
    pub requests: u64,
    #[prost(uint64, tag = "9")]
    pub responses: u64,
    #[prost(uint64, tag = "10")]
    pub client_errors: u64,
    #[prost(uint64, tag = "11")]
    pub server_errors: u64,
    #[prost(uint64, tag = "12")]
    pub timeouts: u64,
    #[prost(uint64, tag = "13")]
    pub latency_sum_us: u64,
    #[prost(uint64, tag = "14")]
    pub latency_max_us: u64,
    #[prost(uint64, tag = "15")]
    pub latency_count: u64,
    /// Log-linear histogram layout: 2^bits sub-buckets per power of two,
    /// values below 2^bits exact (the agent's `metrics::histogram`).
    #[prost(uint32, tag = "16")]
    pub histogram_sub_bucket_bits: u32,
    #[prost(message, repeated, tag = "17")]
    pub histogram: Vec<HistogramBucket>,
    #[prost(uint32, tag = "18")]
    pub ip_protocol: u32,
    /// Part of the RED key: a call between two local processes is counted
    /// once at each end, and `process_name` is that end's process.
    #[prost(enumeration = "ObservationPoint", tag = "19")]
    pub observation_point: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct NetworkMetric {
    #[prost(uint64, tag = "1")]
    pub time_s: u64,
    #[prost(enumeration = "Granularity", tag = "2")]
    pub granularity: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub server_ip: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub server_port: u32,
    #[prost(uint32, tag = "5")]
    pub ip_protocol: u32,
    #[prost(string, optional, tag = "6")]
    pub l7_protocol: Option<String>,
    #[prost(uint64, tag = "7")]
    pub bytes_tx: u64,
    #[prost(uint64, tag = "8")]
    pub bytes_rx: u64,
    #[prost(uint64, tag = "9")]
    pub packets_tx: u64,
    #[prost(uint64, tag = "10")]
    pub packets_rx: u64,
    #[prost(uint64, tag = "11")]
    pub new_flows: u64,
    #[prost(uint64, tag = "12")]
    pub closed_flows: u64,
    #[prost(uint64, tag = "13")]
    pub client_resets: u64,
    #[prost(uint64, tag = "14")]
    pub server_resets: u64,
    #[prost(uint64, tag = "15")]
    pub retransmissions_tx: u64,
    #[prost(uint64, tag = "16")]
    pub retransmissions_rx: u64,
    #[prost(uint64, tag = "17")]
    pub zero_windows_tx: u64,
    #[prost(uint64, tag = "18")]
    pub zero_windows_rx: u64,
    #[prost(uint64, tag = "19")]
    pub rtt_sum_us: u64,
    #[prost(uint64, tag = "20")]
    pub rtt_count: u64,
    #[prost(uint64, tag = "21")]
    pub rtt_max_us: u64,
    #[prost(uint64, tag = "22")]
    pub rtt_client_sum_us: u64,
    #[prost(uint64, tag = "23")]
    pub rtt_client_count: u64,
    #[prost(uint64, tag = "24")]
    pub rtt_server_sum_us: u64,
    #[prost(uint64, tag = "25")]
    pub rtt_server_count: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProcessInfo {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint32, tag = "2")]
    pub ppid: u32,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub cmdline: String,
    #[prost(uint64, tag = "5")]
    pub start_time_us: u64,
    #[prost(string, tag = "6")]
    pub cgroup: String,
    #[prost(string, optional, tag = "7")]
    pub container_id: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub pod_uid: Option<String>,
}

/// The generated client (`agent_data_client::AgentDataClient`) and server
/// (`agent_data_server::{AgentData, AgentDataServer}`).
#[allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/fathom.agent.v1.AgentData.rs"));
}
pub use generated::{agent_data_client, agent_data_server};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_and_garbage_is_an_error() {
        let recs = Records {
            l7: vec![L7Log {
                client_ip: vec![10, 0, 0, 1],
                server_port: 80,
                endpoint: "/a".into(),
                response_code: Some(-1),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = recs.encode_to_vec();
        assert_eq!(Records::decode(bytes.as_slice()).unwrap(), recs);
        assert_eq!(recs.counts().total(), 1);
        // A truncated message and random bytes fail to decode, never panic.
        assert!(Records::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Records::decode(&[0xff, 0xff, 0xff, 0xff, 0xff][..]).is_err());
    }

    /// The observation point and the two L4 processes are new fields:
    /// messages of agents without them still decode, with the defaults.
    #[test]
    fn observation_fields_are_wire_compatible() {
        // RedMetric and L4Flow as older agents encode them (fields 1-18).
        let old_red = RedMetric { server_port: 80, requests: 3, ..Default::default() };
        let old_l4 = L4Flow {
            server_port: 80,
            process: Some(ProcessRef { pid: 9, name: "nginx".into(), ..Default::default() }),
            ..Default::default()
        };
        let red = RedMetric::decode(old_red.encode_to_vec().as_slice()).unwrap();
        assert_eq!(red.observation_point(), ObservationPoint::Unspecified);
        let l4 = L4Flow::decode(old_l4.encode_to_vec().as_slice()).unwrap();
        assert_eq!((l4.client_process, l4.server_process), (None, None));
        assert_eq!(l4.process.unwrap().name, "nginx");

        let red =
            RedMetric { observation_point: ObservationPoint::ClientProcess as i32, ..old_red };
        let back = RedMetric::decode(red.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.observation_point(), ObservationPoint::ClientProcess);
        // An unknown point (a newer agent) decodes; the accessor says Unspecified.
        let odd = RedMetric { observation_point: 99, ..Default::default() };
        let back = RedMetric::decode(odd.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.observation_point(), ObservationPoint::Unspecified);
    }
}
