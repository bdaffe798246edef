//! Network (L4) metrics from L4 flow records, per 1 s and 1 min.
//!
//! Key: (server ip, server port, l4 protocol, l7 protocol if detected); the
//! client address is left out, it would multiply the rows by the clients.
//!
//! # What an [`L4Flow`] record must mean (contract with the flow engine)
//!
//! A flow produces one or more records: periodic ones while open
//! (`close_type` = open) and a last one when it ends. Each record carries
//! **deltas**: it covers `[start_time_us, end_time_us]`, where
//! `start_time_us` is the flow's start for its first record and the
//! previous record's `end_time_us` for later ones, and its counters (`tx`,
//! `rx`, `syn_ack`) count only the packets of that interval.
//! `duration_us` is the flow's age at `end_time_us`, so the first record of
//! a flow is the one with `duration_us == end_time_us - start_time_us`.
//! The handshake RTTs are set only on the record covering the handshake.
//!
//! Each record counts in the window of its `end_time_us` (a periodic
//! record describes traffic up to then; bucketing by start would make a
//! minute-long delta arrive after its 1 s window closed). From a record:
//! bytes and packets each way, retransmissions and zero windows each way,
//! `new_flows` if it is the flow's first, `closed_flows` unless the flow is
//! still open, `client_resets` / `server_resets` from the close type, and
//! the handshake RTT (client side + server side, when both are known).

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};

use hashbrown::Equivalent;
use serde::Serialize;

use super::window::{WindowConfig, WindowKey, WindowStats, WindowValue, Windows};
use crate::records::{CloseType, Granularity, L4Flow, L4Protocol};

/// Counters of one network row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetworkValues {
    /// Client -> server IP bytes.
    pub bytes_tx: u64,
    /// Server -> client IP bytes.
    pub bytes_rx: u64,
    pub packets_tx: u64,
    pub packets_rx: u64,
    pub new_flows: u64,
    pub closed_flows: u64,
    pub client_resets: u64,
    pub server_resets: u64,
    pub retransmissions_tx: u64,
    pub retransmissions_rx: u64,
    pub zero_windows_tx: u64,
    pub zero_windows_rx: u64,
    /// Handshake RTT (client side + server side) of flows that had both.
    pub rtt_sum_us: u64,
    pub rtt_count: u64,
    pub rtt_max_us: u64,
    pub rtt_client_sum_us: u64,
    pub rtt_client_count: u64,
    pub rtt_server_sum_us: u64,
    pub rtt_server_count: u64,
}

impl NetworkValues {
    fn add(&mut self, f: &L4Flow) {
        self.bytes_tx += f.tx.bytes;
        self.bytes_rx += f.rx.bytes;
        self.packets_tx += f.tx.packets;
        self.packets_rx += f.rx.packets;
        self.new_flows += u64::from(f.duration_us == f.end_time_us.saturating_sub(f.start_time_us));
        self.closed_flows += u64::from(f.close_type != CloseType::Open);
        self.client_resets += u64::from(f.close_type == CloseType::ClientReset);
        self.server_resets += u64::from(f.close_type == CloseType::ServerReset);
        self.retransmissions_tx += u64::from(f.tx.retransmissions);
        self.retransmissions_rx += u64::from(f.rx.retransmissions);
        self.zero_windows_tx += u64::from(f.tx.zero_windows);
        self.zero_windows_rx += u64::from(f.rx.zero_windows);
        if let Some(c) = f.rtt_client_us {
            self.rtt_client_sum_us += c;
            self.rtt_client_count += 1;
        }
        if let Some(s) = f.rtt_server_us {
            self.rtt_server_sum_us += s;
            self.rtt_server_count += 1;
        }
        if let (Some(c), Some(s)) = (f.rtt_client_us, f.rtt_server_us) {
            let rtt = c + s;
            self.rtt_sum_us += rtt;
            self.rtt_count += 1;
            self.rtt_max_us = self.rtt_max_us.max(rtt);
        }
    }
}

impl WindowValue for NetworkValues {
    fn merge_from(&mut self, o: &Self) {
        self.bytes_tx += o.bytes_tx;
        self.bytes_rx += o.bytes_rx;
        self.packets_tx += o.packets_tx;
        self.packets_rx += o.packets_rx;
        self.new_flows += o.new_flows;
        self.closed_flows += o.closed_flows;
        self.client_resets += o.client_resets;
        self.server_resets += o.server_resets;
        self.retransmissions_tx += o.retransmissions_tx;
        self.retransmissions_rx += o.retransmissions_rx;
        self.zero_windows_tx += o.zero_windows_tx;
        self.zero_windows_rx += o.zero_windows_rx;
        self.rtt_sum_us += o.rtt_sum_us;
        self.rtt_count += o.rtt_count;
        self.rtt_max_us = self.rtt_max_us.max(o.rtt_max_us);
        self.rtt_client_sum_us += o.rtt_client_sum_us;
        self.rtt_client_count += o.rtt_client_count;
        self.rtt_server_sum_us += o.rtt_server_sum_us;
        self.rtt_server_count += o.rtt_server_count;
    }
}

/// One emitted network row. The overflow row has server ip 0.0.0.0, port 0
/// and `l7_protocol` [`super::red::OVERFLOW_ENDPOINT`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkMetric {
    /// Window start, unix seconds.
    pub time_s: u64,
    pub granularity: Granularity,
    pub server_ip: IpAddr,
    pub server_port: u16,
    pub l4_protocol: L4Protocol,
    pub l7_protocol: Option<String>,
    #[serde(flatten)]
    pub values: NetworkValues,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NetKey {
    server_ip: IpAddr,
    server_port: u16,
    l4: L4Protocol,
    l7: Option<Box<str>>,
}

struct NetKeyRef<'a> {
    server_ip: IpAddr,
    server_port: u16,
    l4: L4Protocol,
    l7: Option<&'a str>,
}

fn hash_key<H: Hasher>(h: &mut H, k: &NetKeyRef<'_>) {
    k.server_ip.hash(h);
    k.server_port.hash(h);
    k.l4.hash(h);
    k.l7.hash(h);
}

impl Hash for NetKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let r = NetKeyRef {
            server_ip: self.server_ip,
            server_port: self.server_port,
            l4: self.l4,
            l7: self.l7.as_deref(),
        };
        hash_key(h, &r);
    }
}

impl Hash for NetKeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_key(h, self);
    }
}

impl Equivalent<NetKey> for NetKeyRef<'_> {
    fn equivalent(&self, k: &NetKey) -> bool {
        self.server_ip == k.server_ip
            && self.server_port == k.server_port
            && self.l4 == k.l4
            && self.l7 == k.l7.as_deref()
    }
}

impl WindowKey for NetKey {
    fn overflow() -> Self {
        NetKey {
            server_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            server_port: 0,
            l4: L4Protocol::Tcp,
            l7: Some(super::red::OVERFLOW_ENDPOINT.into()),
        }
    }
}

/// Aggregates [`L4Flow`] records into [`NetworkMetric`] rows per 1 s and 1 min.
pub struct NetworkAggregator {
    windows: Windows<NetKey, NetworkValues>,
}

impl Default for NetworkAggregator {
    fn default() -> Self {
        Self::new()
    }
}

impl NetworkAggregator {
    pub fn new() -> Self {
        Self::with_config(&WindowConfig::default())
    }

    pub fn with_config(cfg: &WindowConfig) -> Self {
        NetworkAggregator { windows: Windows::new(cfg) }
    }

    pub fn observe(&mut self, f: &L4Flow) {
        let key = NetKeyRef {
            server_ip: f.flow.server_ip,
            server_port: f.flow.server_port,
            l4: f.flow.protocol,
            l7: f.l7_protocol.as_deref().filter(|p| !p.is_empty()),
        };
        if let Some(v) = self.windows.slot(f.end_time_us, &key, |k| NetKey {
            server_ip: k.server_ip,
            server_port: k.server_port,
            l4: k.l4,
            l7: k.l7.map(Into::into),
        }) {
            v.add(f);
        }
    }

    /// Rows of every window complete at `now_us` (1 s rows, then 1 min rows).
    pub fn flush(&mut self, now_us: u64) -> Vec<NetworkMetric> {
        let mut out = Vec::new();
        self.flush_into(now_us, &mut out);
        out
    }

    /// Like [`flush`](Self::flush), appending to `out`.
    pub fn flush_into(&mut self, now_us: u64, out: &mut Vec<NetworkMetric>) {
        self.windows.flush(now_us, &mut |t, g, k, v| out.push(row(t, g, k, v)));
    }

    /// Rows of every open window, complete or not (at shutdown).
    pub fn flush_all(&mut self) -> Vec<NetworkMetric> {
        let mut out = Vec::new();
        self.windows.flush_all(&mut |t, g, k, v| out.push(row(t, g, k, v)));
        out
    }

    pub fn stats(&self) -> WindowStats {
        self.windows.stats()
    }
}

fn row(time_s: u64, granularity: Granularity, k: &NetKey, v: &NetworkValues) -> NetworkMetric {
    NetworkMetric {
        time_s,
        granularity,
        server_ip: k.server_ip,
        server_port: k.server_port,
        l4_protocol: k.l4,
        l7_protocol: k.l7.as_deref().map(str::to_string),
        values: *v,
    }
}
