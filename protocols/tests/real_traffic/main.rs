//! Real-traffic agreement tests: start real servers and clients on loopback,
//! capture the traffic with dumpcap, parse each capture with our crate and
//! with tshark (or compare with what the client library sent and received
//! where tshark cannot decode the protocol), and fail on any disagreement.
//!
//! Needs root (packet capture) and the tools installed by `.ci/run`. Each
//! scenario uses its own ports so two can run at a time. Every line
//! `agreement <proto>: a/b messages, c/d fields` is printed to stderr.
//! Set FATHOM_RT_KEEP=1 to keep the temp dirs (captures, server logs).

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
