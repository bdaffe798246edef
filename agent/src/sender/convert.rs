//! Agent records -> protobuf messages of `fathom.agent.v1`.

use std::net::IpAddr;

use fathom_proto as pb;

use crate::metrics::{NetworkMetric, RedMetric};
use crate::output::OutputRecord;
use crate::process::ProcessInfo;
use crate::records::{
    CaptureSource, CloseType, DirectionCounters, Granularity, L4Flow, L4Protocol, L7Log,
    ObservationPoint, ProcessRef,
};

fn ip(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn ip_protocol(p: L4Protocol) -> u32 {
    match p {
        L4Protocol::Tcp => 6,
        L4Protocol::Udp => 17,
    }
}

fn source(s: CaptureSource) -> i32 {
    (match s {
        CaptureSource::Packet => pb::CaptureSource::Packet,
        CaptureSource::Syscall => pb::CaptureSource::Syscall,
        CaptureSource::Tls => pb::CaptureSource::Tls,
        CaptureSource::Pcap => pb::CaptureSource::Pcap,
    }) as i32
}

fn granularity(g: Granularity) -> i32 {
    (match g {
        Granularity::Second => pb::Granularity::Second,
        Granularity::Minute => pb::Granularity::Minute,
    }) as i32
}

fn process(p: ProcessRef, side: pb::Side) -> pb::ProcessRef {
    pb::ProcessRef { pid: p.pid, tid: p.tid, name: p.name, side: side as i32 }
}

fn observation_point(p: ObservationPoint) -> i32 {
    (match p {
        ObservationPoint::ClientProcess => pb::ObservationPoint::ClientProcess,
        ObservationPoint::ServerProcess => pb::ObservationPoint::ServerProcess,
        ObservationPoint::Network => pb::ObservationPoint::Network,
    }) as i32
}

fn point_side(p: ObservationPoint) -> pb::Side {
    match p {
        ObservationPoint::ClientProcess => pb::Side::Client,
        ObservationPoint::ServerProcess => pb::Side::Server,
        ObservationPoint::Network => pb::Side::Unknown,
    }
}

fn close_type(c: CloseType) -> &'static str {
    match c {
        CloseType::Open => "open",
        CloseType::Fin => "fin",
        CloseType::ClientReset => "client_reset",
        CloseType::ServerReset => "server_reset",
        CloseType::HandshakeTimeout => "handshake_timeout",
        CloseType::Idle => "idle",
        CloseType::Evicted => "evicted",
        CloseType::Shutdown => "shutdown",
    }
}

fn counters(d: DirectionCounters) -> pb::DirectionCounters {
    pb::DirectionCounters {
        bytes: d.bytes,
        packets: d.packets,
        payload_bytes: d.payload_bytes,
        syn: d.syn,
        fin: d.fin,
        rst: d.rst,
        retransmissions: d.retransmissions,
        zero_windows: d.zero_windows,
        out_of_order: d.out_of_order,
    }
}

pub fn l7(r: L7Log) -> pb::L7Log {
    let c = r.call;
    pb::L7Log {
        client_ip: ip(r.flow.client_ip),
        client_port: r.flow.client_port.into(),
        server_ip: ip(r.flow.server_ip),
        server_port: r.flow.server_port.into(),
        ip_protocol: ip_protocol(r.flow.protocol),
        source: source(r.source),
        interface: r.interface.unwrap_or_default(),
        process: r.process.map(|p| process(p, point_side(r.observation_point))),
        start_time_us: r.start_time_us,
        end_time_us: r.end_time_us,
        latency_us: r.latency_us,
        l7_protocol: c.l7_protocol,
        msg_type: c.msg_type,
        version: c.version,
        request_type: c.request_type,
        request_domain: c.request_domain,
        request_resource: c.request_resource,
        endpoint: c.endpoint,
        request_id: c.request_id,
        response_code: c.response_code,
        response_status: c.response_status,
        response_exception: c.response_exception,
        response_result: c.response_result,
        request_length: c.request_length,
        response_length: c.response_length,
        trace_id: c.trace_id,
        span_id: c.span_id,
        parent_span_id: c.parent_span_id,
        x_request_id: c.x_request_id,
        truncated: c.truncated,
        syscall_trace_id_request: r.syscall_trace_id_request,
        syscall_trace_id_response: r.syscall_trace_id_response,
        req_tcp_seq: r.req_tcp_seq,
        resp_tcp_seq: r.resp_tcp_seq,
    }
}

pub fn l4(f: L4Flow) -> pb::L4Flow {
    pb::L4Flow {
        client_ip: ip(f.flow.client_ip),
        client_port: f.flow.client_port.into(),
        server_ip: ip(f.flow.server_ip),
        server_port: f.flow.server_port.into(),
        ip_protocol: ip_protocol(f.flow.protocol),
        source: source(f.source),
        interface: f.interface.unwrap_or_default(),
        start_time_us: f.start_time_us,
        end_time_us: f.end_time_us,
        duration_us: f.duration_us,
        tx: Some(counters(f.tx)),
        rx: Some(counters(f.rx)),
        syn_ack: f.syn_ack,
        rtt_server_us: f.rtt_server_us,
        rtt_client_us: f.rtt_client_us,
        close_type: close_type(f.close_type).to_string(),
        l7_protocol: f.l7_protocol,
        // `process` is the one-process field of older agents.
        process: None,
        client_process: f.client_process.map(|p| process(p, pb::Side::Client)),
        server_process: f.server_process.map(|p| process(p, pb::Side::Server)),
    }
}

pub fn red(m: RedMetric) -> pb::RedMetric {
    let v = m.values;
    pb::RedMetric {
        time_s: m.time_s,
        granularity: granularity(m.granularity),
        server_ip: ip(m.server_ip),
        server_port: m.server_port.into(),
        observation_point: observation_point(m.observation_point),
        process_name: m.process_name,
        l7_protocol: m.l7_protocol,
        endpoint: m.endpoint,
        requests: v.requests,
        responses: v.responses,
        client_errors: v.client_errors,
        server_errors: v.server_errors,
        timeouts: v.timeouts,
        latency_sum_us: v.latency_sum_us,
        latency_max_us: v.latency_max_us,
        latency_count: v.latency_count,
        histogram_sub_bucket_bits: m.histogram.sub_bucket_bits.into(),
        histogram: m
            .histogram
            .buckets
            .iter()
            .map(|&(index, count)| pb::HistogramBucket { index: index.into(), count })
            .collect(),
        // RED rows come from L7 calls, which are TCP except DNS and the like;
        // the aggregation key does not carry it.
        ip_protocol: 0,
    }
}

pub fn network(m: NetworkMetric) -> pb::NetworkMetric {
    let v = m.values;
    pb::NetworkMetric {
        time_s: m.time_s,
        granularity: granularity(m.granularity),
        server_ip: ip(m.server_ip),
        server_port: m.server_port.into(),
        ip_protocol: ip_protocol(m.l4_protocol),
        l7_protocol: m.l7_protocol,
        bytes_tx: v.bytes_tx,
        bytes_rx: v.bytes_rx,
        packets_tx: v.packets_tx,
        packets_rx: v.packets_rx,
        new_flows: v.new_flows,
        closed_flows: v.closed_flows,
        client_resets: v.client_resets,
        server_resets: v.server_resets,
        retransmissions_tx: v.retransmissions_tx,
        retransmissions_rx: v.retransmissions_rx,
        zero_windows_tx: v.zero_windows_tx,
        zero_windows_rx: v.zero_windows_rx,
        rtt_sum_us: v.rtt_sum_us,
        rtt_count: v.rtt_count,
        rtt_max_us: v.rtt_max_us,
        rtt_client_sum_us: v.rtt_client_sum_us,
        rtt_client_count: v.rtt_client_count,
        rtt_server_sum_us: v.rtt_server_sum_us,
        rtt_server_count: v.rtt_server_count,
    }
}

pub fn process_info(p: ProcessInfo) -> pb::ProcessInfo {
    pb::ProcessInfo {
        pid: p.pid,
        ppid: p.ppid,
        name: p.name,
        cmdline: p.cmdline,
        start_time_us: p.start_time_us,
        cgroup: p.cgroup,
        container_id: p.container_id,
        pod_uid: p.pod_uid,
    }
}

/// Appends `rec` to `into`; returns its encoded size (for batch bounds).
pub fn push(into: &mut pb::Records, rec: OutputRecord) -> usize {
    use prost::Message;
    // Field key + length prefix of a repeated message: at most 1 + 5 bytes.
    const FRAME: usize = 6;
    match rec {
        OutputRecord::L7Log(r) => {
            let m = l7(r);
            let n = m.encoded_len();
            into.l7.push(m);
            n + FRAME
        }
        OutputRecord::L4Flow(f) => {
            let m = l4(f);
            let n = m.encoded_len();
            into.l4.push(m);
            n + FRAME
        }
        OutputRecord::RedMetric(r) => {
            let m = red(r);
            let n = m.encoded_len();
            into.red.push(m);
            n + FRAME
        }
        OutputRecord::NetworkMetric(r) => {
            let m = network(r);
            let n = m.encoded_len();
            into.network.push(m);
            n + FRAME
        }
        OutputRecord::Process(p) => {
            let m = process_info(p);
            let n = m.encoded_len();
            into.process.push(m);
            n + FRAME
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::metrics::{RedValues, SparseHistogram};
    use crate::records::FlowTuple;

    fn tuple() -> FlowTuple {
        FlowTuple {
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: 40000,
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_port: 8000,
            protocol: L4Protocol::Tcp,
        }
    }

    fn proc(pid: u32, name: &str) -> ProcessRef {
        ProcessRef { pid, tid: pid, name: name.into() }
    }

    #[test]
    fn red_rows_carry_their_observation_point() {
        let row = |point, name: &str| RedMetric {
            time_s: 60,
            granularity: Granularity::Minute,
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_port: 8000,
            observation_point: point,
            process_name: Some(name.into()),
            l7_protocol: "HTTP".into(),
            endpoint: "/".into(),
            values: RedValues { requests: 5, ..Default::default() },
            histogram: SparseHistogram::default(),
        };
        for (point, name, want) in [
            (ObservationPoint::ClientProcess, "curl", pb::ObservationPoint::ClientProcess),
            (ObservationPoint::ServerProcess, "python3", pb::ObservationPoint::ServerProcess),
            (ObservationPoint::Network, "", pb::ObservationPoint::Network),
        ] {
            let m = red(row(point, name));
            assert_eq!(m.observation_point(), want);
            assert_eq!((m.process_name.as_deref(), m.requests), (Some(name), 5));
        }
    }

    #[test]
    fn l4_flows_carry_the_process_at_each_end() {
        let flow = |client, server| L4Flow {
            flow: tuple(),
            source: CaptureSource::Packet,
            interface: Some("lo".into()),
            start_time_us: 1,
            end_time_us: 2,
            duration_us: 1,
            tx: DirectionCounters::default(),
            rx: DirectionCounters::default(),
            syn_ack: 1,
            rtt_server_us: None,
            rtt_client_us: None,
            close_type: CloseType::Fin,
            l7_protocol: None,
            client_process: client,
            server_process: server,
        };
        let m = l4(flow(Some(proc(7, "curl")), Some(proc(9, "python3"))));
        let c = m.client_process.unwrap();
        let s = m.server_process.unwrap();
        assert_eq!((c.pid, c.name.as_str(), c.side()), (7, "curl", pb::Side::Client));
        assert_eq!((s.pid, s.name.as_str(), s.side()), (9, "python3", pb::Side::Server));
        assert_eq!(m.process, None, "the one-process field of older agents stays empty");
        // One end seen (a remote peer): only that end.
        let m = l4(flow(Some(proc(7, "curl")), None));
        assert_eq!(m.client_process.unwrap().name, "curl");
        assert_eq!(m.server_process, None);
        let m = l4(flow(None, None));
        assert_eq!((m.client_process, m.server_process), (None, None));
    }

    #[test]
    fn l7_logs_name_the_observing_end() {
        let rec = fathom_protocols::L7Record::default();
        for (point, side) in [
            (ObservationPoint::ClientProcess, pb::Side::Client),
            (ObservationPoint::ServerProcess, pb::Side::Server),
        ] {
            let log = L7Log {
                observation_point: point,
                process: Some(proc(7, "p")),
                ..L7Log::from_call(tuple(), CaptureSource::Syscall, &rec, 1, 2)
            };
            assert_eq!(l7(log).process.unwrap().side(), side);
        }
        let log = L7Log::from_call(tuple(), CaptureSource::Packet, &rec, 1, 2);
        assert_eq!(l7(log).process, None, "a network observation names no process");
    }
}
