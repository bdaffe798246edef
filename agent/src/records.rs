//! What the agent produces: L7 call logs, L4 flow records, RED and network
//! metrics, and process identities. Serialized as JSON lines by the `json`
//! output and (later) as protobuf for the server.

use std::net::IpAddr;

use fathom_protocols::L7Record;
use serde::Serialize;

/// Where a record's bytes were seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureSource {
    /// AF_PACKET on a network interface.
    Packet,
    /// eBPF syscall hooks.
    Syscall,
    /// eBPF OpenSSL uprobes (plaintext of TLS).
    Tls,
    /// A pcap file replayed.
    Pcap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum L4Protocol {
    Tcp,
    Udp,
}

/// A connection's endpoints, oriented client -> server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FlowTuple {
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
    pub server_port: u16,
    pub protocol: L4Protocol,
}

/// Where a call was observed: in the client process, in the server process
/// (both through eBPF, with the process's identity), or on the network
/// (packets). A loopback call seen by eBPF at both ends is one record and
/// one RED count per process end; its packets add none (see
/// `pipeline::merge`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservationPoint {
    ClientProcess,
    ServerProcess,
    #[default]
    Network,
}

impl ObservationPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservationPoint::ClientProcess => "client_process",
            ObservationPoint::ServerProcess => "server_process",
            ObservationPoint::Network => "network",
        }
    }
}

/// The process on one side of a flow, when eBPF saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub tid: u32,
    pub name: String,
}

/// One request/response call (or a lone message, or a timeout).
#[derive(Clone, Debug, Serialize)]
pub struct L7Log {
    pub flow: FlowTuple,
    pub source: CaptureSource,
    /// Which end (process) or the network: part of the RED key.
    pub observation_point: ObservationPoint,
    /// Interface the packets came from, for packet captures.
    pub interface: Option<String>,
    /// The observing process (client or server, as `observation_point` says).
    pub process: Option<ProcessRef>,
    pub start_time_us: u64,
    pub end_time_us: u64,
    /// end - start, in microseconds; 0 for lone messages and timeouts.
    pub latency_us: u64,
    #[serde(flatten)]
    pub call: L7Fields,
    /// Links a server span and the client spans its thread issued.
    pub syscall_trace_id_request: Option<u64>,
    pub syscall_trace_id_response: Option<u64>,
    /// TCP sequence numbers of the first byte of request and response:
    /// the same call seen at both ends of a connection carries the same ones.
    pub req_tcp_seq: Option<u32>,
    pub resp_tcp_seq: Option<u32>,
}

impl L7Log {
    /// A call from a parsed record, with the capture-specific fields
    /// (interface, process, trace ids, sequence numbers) left empty.
    pub fn from_call(
        flow: FlowTuple,
        source: CaptureSource,
        rec: &L7Record,
        start_time_us: u64,
        end_time_us: u64,
    ) -> L7Log {
        L7Log {
            flow,
            source,
            observation_point: ObservationPoint::Network,
            interface: None,
            process: None,
            start_time_us,
            end_time_us,
            latency_us: end_time_us.saturating_sub(start_time_us),
            call: L7Fields::from(rec),
            syscall_trace_id_request: None,
            syscall_trace_id_response: None,
            req_tcp_seq: None,
            resp_tcp_seq: None,
        }
    }
}

/// The protocol-level fields of a call, owned (see [`L7Record`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct L7Fields {
    pub l7_protocol: String,
    pub msg_type: String,
    pub version: String,
    pub request_type: String,
    pub request_domain: String,
    pub request_resource: String,
    pub endpoint: String,
    pub request_id: Option<u64>,
    pub response_code: Option<i32>,
    pub response_status: String,
    pub response_exception: String,
    pub response_result: String,
    pub request_length: Option<u32>,
    pub response_length: Option<u32>,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub x_request_id: String,
    pub truncated: bool,
}

impl From<&L7Record> for L7Fields {
    fn from(r: &L7Record) -> Self {
        L7Fields {
            l7_protocol: r.protocol.as_str().to_string(),
            msg_type: match r.msg_type {
                fathom_protocols::MessageType::Request => "request",
                fathom_protocols::MessageType::Response => "response",
                fathom_protocols::MessageType::Session => "session",
            }
            .to_string(),
            version: r.version.clone(),
            request_type: r.request_type.clone(),
            request_domain: r.request_domain.clone(),
            request_resource: r.request_resource.clone(),
            endpoint: r.endpoint.clone(),
            request_id: r.request_id,
            response_code: r.response_code,
            response_status: r.response_status.as_str().to_string(),
            response_exception: r.response_exception.clone(),
            response_result: r.response_result.clone(),
            request_length: r.request_length,
            response_length: r.response_length,
            trace_id: r.trace.trace_id.clone(),
            span_id: r.trace.span_id.clone(),
            parent_span_id: r.trace.parent_span_id.clone(),
            x_request_id: r.trace.x_request_id.clone(),
            truncated: r.truncated,
        }
    }
}

/// How a TCP flow ended (or why the record was cut).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseType {
    /// Still open: a periodic record of a long flow.
    #[default]
    Open,
    /// FIN from both sides.
    Fin,
    ClientReset,
    ServerReset,
    /// SYN never answered.
    HandshakeTimeout,
    /// No packet for the idle timeout.
    Idle,
    /// Evicted to stay within the flow table's capacity.
    Evicted,
    /// The agent stopped.
    Shutdown,
}

/// Counters of one direction of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirectionCounters {
    /// Frame bytes on the wire, link header included: what tshark's conversation table counts.
    pub bytes: u64,
    pub packets: u64,
    /// TCP/UDP payload bytes.
    pub payload_bytes: u64,
    pub syn: u32,
    pub fin: u32,
    pub rst: u32,
    pub retransmissions: u32,
    pub zero_windows: u32,
    pub out_of_order: u32,
}

/// An L4 flow record: emitted on close and every minute for long flows.
#[derive(Clone, Debug, Serialize)]
pub struct L4Flow {
    pub flow: FlowTuple,
    pub source: CaptureSource,
    pub interface: Option<String>,
    pub start_time_us: u64,
    pub end_time_us: u64,
    pub duration_us: u64,
    /// Client -> server.
    pub tx: DirectionCounters,
    /// Server -> client.
    pub rx: DirectionCounters,
    pub syn_ack: u32,
    /// SYN -> SYN-ACK, as seen at the capture point (the server side of the RTT).
    pub rtt_server_us: Option<u64>,
    /// SYN-ACK -> ACK (the client side of the RTT).
    pub rtt_client_us: Option<u64>,
    pub close_type: CloseType,
    pub l7_protocol: Option<String>,
    /// The local processes at each end, learned from eBPF (None when eBPF
    /// did not see that end: a remote peer, or eBPF off).
    pub client_process: Option<ProcessRef>,
    pub server_process: Option<ProcessRef>,
}

/// Which period a metric row covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    #[serde(rename = "1s")]
    Second,
    #[serde(rename = "1m")]
    Minute,
}
