//! Flow keys and which end of a new flow is the client.

use std::net::IpAddr;

use crate::records::L4Protocol;

/// A 5-tuple with its endpoints sorted, so both directions hit one flow.
/// Endpoint A is the lower (ip, port), B the higher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub a_ip: IpAddr,
    pub b_ip: IpAddr,
    pub a_port: u16,
    pub b_port: u16,
    pub protocol: L4Protocol,
}

impl FlowKey {
    /// The key of a packet and whether it travels from A to B.
    pub fn of(
        src_ip: IpAddr,
        src_port: u16,
        dst_ip: IpAddr,
        dst_port: u16,
        protocol: L4Protocol,
    ) -> (FlowKey, bool) {
        if (src_ip, src_port) <= (dst_ip, dst_port) {
            (
                FlowKey {
                    a_ip: src_ip,
                    b_ip: dst_ip,
                    a_port: src_port,
                    b_port: dst_port,
                    protocol,
                },
                true,
            )
        } else {
            (
                FlowKey {
                    a_ip: dst_ip,
                    b_ip: src_ip,
                    a_port: dst_port,
                    b_port: src_port,
                    protocol,
                },
                false,
            )
        }
    }
}

/// Ports above 1023 that are servers' far more often than clients'.
const SERVER_PORTS: &[u16] = &[
    1433, 1521, 2181, 2379, 3000, 3306, 4222, 5000, 5432, 5672, 6379, 7000, 8000, 8080, 8081, 8443,
    8888, 9000, 9042, 9090, 9092, 9200, 11211, 15672, 20880, 27017, 50051,
];

pub fn is_server_port(port: u16) -> bool {
    port < 1024 || SERVER_PORTS.contains(&port)
}

/// Whether the sender of a flow's first packet is the client, and whether
/// that is known (a handshake packet) rather than guessed.
///
/// The rule, in order:
/// 1. a SYN without ACK comes from the client; a SYN-ACK goes to it (known);
/// 2. if exactly one port is a server port (below 1024 or in a short list of
///    well-known service ports such as 3306, 6379, 8080), that side is the server;
/// 3. TCP joined mid-flow: the higher (ephemeral) port is the client;
/// 4. UDP: the sender of the first datagram is the client.
///
/// A guessed orientation is corrected when L7 detection sees a request or
/// response travelling the other way, or when a SYN shows up later.
pub fn first_sender_is_client(
    src_port: u16,
    dst_port: u16,
    tcp_syn: bool,
    tcp_ack: bool,
    is_tcp: bool,
) -> (bool, bool) {
    if is_tcp && tcp_syn {
        return (!tcp_ack, true);
    }
    match (is_server_port(src_port), is_server_port(dst_port)) {
        (false, true) => return (true, false),
        (true, false) => return (false, false),
        _ => {}
    }
    if is_tcp && src_port != dst_port {
        return (src_port > dst_port, false);
    }
    (true, false)
}
