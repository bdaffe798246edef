//! RED metrics (rate, errors, duration) from L7 logs, per 1 s and 1 min.
//!
//! Key: (server ip, server port, observation point, process name, l7
//! protocol, endpoint). The observation point (client process, server
//! process, network) keeps a call seen at both ends of a loopback
//! connection one count per end, never summed into one row.
//! Each [`L7Log`] counts in the window of its `start_time_us`:
//!
//! | record | counts |
//! |---|---|
//! | `msg_type` request (lone request) | requests |
//! | `msg_type` response (lone response) | responses |
//! | `msg_type` session, status ok / client_error / server_error, or unknown with a response code or length | requests, responses, one latency sample |
//! | `msg_type` session otherwise (timeout, parse_failed, no response by protocol rule) | requests |
//! | status client_error / server_error / timeout | client_errors / server_errors / timeouts |
//!
//! Once a key exists in a window, observing a record allocates nothing:
//! the map is probed with borrowed fields and the histogram is a fixed array.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};

use hashbrown::Equivalent;
use serde::Serialize;

use super::histogram::{Histogram, SparseHistogram};
use super::window::{WindowConfig, WindowKey, WindowStats, WindowValue, Windows};
use crate::records::{Granularity, L7Log, ObservationPoint};

/// Endpoint of the row that counts keys beyond the per-window bound.
pub const OVERFLOW_ENDPOINT: &str = "__overflow__";

/// Counters of one RED row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RedValues {
    pub requests: u64,
    pub responses: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub timeouts: u64,
    pub latency_sum_us: u64,
    pub latency_max_us: u64,
    /// Latency samples (paired calls), the denominator of the mean.
    pub latency_count: u64,
}

impl RedValues {
    fn merge_from(&mut self, o: &RedValues) {
        self.requests += o.requests;
        self.responses += o.responses;
        self.client_errors += o.client_errors;
        self.server_errors += o.server_errors;
        self.timeouts += o.timeouts;
        self.latency_sum_us += o.latency_sum_us;
        self.latency_max_us = self.latency_max_us.max(o.latency_max_us);
        self.latency_count += o.latency_count;
    }
}

/// One emitted RED row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedMetric {
    /// Window start, unix seconds.
    pub time_s: u64,
    pub granularity: Granularity,
    pub server_ip: IpAddr,
    pub server_port: u16,
    pub observation_point: ObservationPoint,
    pub process_name: Option<String>,
    pub l7_protocol: String,
    pub endpoint: String,
    #[serde(flatten)]
    pub values: RedValues,
    /// Latency distribution of the `latency_count` samples.
    pub histogram: SparseHistogram,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RedKey {
    server_ip: IpAddr,
    server_port: u16,
    point: ObservationPoint,
    process: Option<Box<str>>,
    l7_protocol: Box<str>,
    endpoint: Box<str>,
}

/// The key as borrowed from a record, for probing without allocating.
struct RedKeyRef<'a> {
    server_ip: IpAddr,
    server_port: u16,
    point: ObservationPoint,
    process: Option<&'a str>,
    l7_protocol: &'a str,
    endpoint: &'a str,
}

fn hash_key<H: Hasher>(h: &mut H, k: &RedKeyRef<'_>) {
    k.server_ip.hash(h);
    k.server_port.hash(h);
    k.point.hash(h);
    k.process.hash(h);
    k.l7_protocol.hash(h);
    k.endpoint.hash(h);
}

impl RedKey {
    fn as_ref(&self) -> RedKeyRef<'_> {
        RedKeyRef {
            server_ip: self.server_ip,
            server_port: self.server_port,
            point: self.point,
            process: self.process.as_deref(),
            l7_protocol: &self.l7_protocol,
            endpoint: &self.endpoint,
        }
    }
}

impl Hash for RedKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_key(h, &self.as_ref());
    }
}

impl Hash for RedKeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_key(h, self);
    }
}

impl Equivalent<RedKey> for RedKeyRef<'_> {
    fn equivalent(&self, k: &RedKey) -> bool {
        self.server_ip == k.server_ip
            && self.server_port == k.server_port
            && self.point == k.point
            && self.endpoint == &*k.endpoint
            && self.l7_protocol == &*k.l7_protocol
            && self.process == k.process.as_deref()
    }
}

impl WindowKey for RedKey {
    fn overflow() -> Self {
        RedKey {
            server_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            server_port: 0,
            point: ObservationPoint::Network,
            process: None,
            l7_protocol: "".into(),
            endpoint: OVERFLOW_ENDPOINT.into(),
        }
    }
}

#[derive(Default)]
pub(crate) struct RedAcc {
    values: RedValues,
    // Boxed: 2 KiB would make map growth and the fold into minutes copy a lot.
    hist: Box<Histogram>,
}

impl WindowValue for RedAcc {
    fn merge_from(&mut self, o: &Self) {
        self.values.merge_from(&o.values);
        self.hist.merge(&o.hist);
    }
}

/// What one record contributes.
struct Call {
    request: bool,
    response: bool,
    latency_us: Option<u64>,
}

fn classify(log: &L7Log) -> Call {
    let c = &log.call;
    let answered = match c.response_status.as_str() {
        "ok" | "client_error" | "server_error" => true,
        "unknown" => c.response_code.is_some() || c.response_length.is_some(),
        _ => false,
    };
    match c.msg_type.as_str() {
        "request" => Call { request: true, response: false, latency_us: None },
        "response" => Call { request: false, response: true, latency_us: None },
        _ => Call {
            request: true,
            response: answered,
            latency_us: answered.then_some(log.latency_us),
        },
    }
}

/// Aggregates [`L7Log`]s into [`RedMetric`] rows per 1 s and 1 min.
pub struct RedAggregator {
    windows: Windows<RedKey, RedAcc>,
}

impl Default for RedAggregator {
    fn default() -> Self {
        Self::new()
    }
}

impl RedAggregator {
    pub fn new() -> Self {
        Self::with_config(&WindowConfig::default())
    }

    pub fn with_config(cfg: &WindowConfig) -> Self {
        RedAggregator { windows: Windows::new(cfg) }
    }

    pub fn observe(&mut self, log: &L7Log) {
        let key = RedKeyRef {
            server_ip: log.flow.server_ip,
            server_port: log.flow.server_port,
            point: log.observation_point,
            process: log.process.as_ref().map(|p| p.name.as_str()).filter(|n| !n.is_empty()),
            l7_protocol: &log.call.l7_protocol,
            endpoint: &log.call.endpoint,
        };
        let Some(acc) = self.windows.slot(log.start_time_us, &key, |k| RedKey {
            server_ip: k.server_ip,
            server_port: k.server_port,
            point: k.point,
            process: k.process.map(Into::into),
            l7_protocol: k.l7_protocol.into(),
            endpoint: k.endpoint.into(),
        }) else {
            return;
        };
        let call = classify(log);
        let v = &mut acc.values;
        v.requests += u64::from(call.request);
        v.responses += u64::from(call.response);
        match log.call.response_status.as_str() {
            "client_error" => v.client_errors += 1,
            "server_error" => v.server_errors += 1,
            "timeout" => v.timeouts += 1,
            _ => {}
        }
        if let Some(lat) = call.latency_us {
            v.latency_sum_us += lat;
            v.latency_max_us = v.latency_max_us.max(lat);
            v.latency_count += 1;
            acc.hist.record(lat);
        }
    }

    /// Rows of every window complete at `now_us` (1 s rows, then 1 min rows).
    pub fn flush(&mut self, now_us: u64) -> Vec<RedMetric> {
        let mut out = Vec::new();
        self.flush_into(now_us, &mut out);
        out
    }

    /// Like [`flush`](Self::flush), appending to `out`.
    pub fn flush_into(&mut self, now_us: u64, out: &mut Vec<RedMetric>) {
        self.windows.flush(now_us, &mut |t, g, k, a| out.push(row(t, g, k, a)));
    }

    /// Rows of every open window, complete or not (at shutdown).
    pub fn flush_all(&mut self) -> Vec<RedMetric> {
        let mut out = Vec::new();
        self.windows.flush_all(&mut |t, g, k, a| out.push(row(t, g, k, a)));
        out
    }

    pub fn stats(&self) -> WindowStats {
        self.windows.stats()
    }
}

fn row(time_s: u64, granularity: Granularity, k: &RedKey, a: &RedAcc) -> RedMetric {
    RedMetric {
        time_s,
        granularity,
        server_ip: k.server_ip,
        server_port: k.server_port,
        observation_point: k.point,
        process_name: k.process.as_deref().map(str::to_string),
        l7_protocol: k.l7_protocol.to_string(),
        endpoint: k.endpoint.to_string(),
        values: a.values,
        histogram: a.hist.to_sparse(),
    }
}
