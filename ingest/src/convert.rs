//! Records -> store rows, with resource tags encoded as dictionary ids.
//!
//! Which side of a call or flow is "this host": the side whose address is
//! one of the batch's `host_ips` or a loopback address gets the host,
//! region and AZ ids. A process goes to the side the agent says, else to
//! the side that is this host (the server side when both are); a flow
//! record names the process at each end it saw.
//!
//! `observation_point` uses DeepFlow's tap side codes: "c-p" / "s-p" a
//! call seen in the client / server process (eBPF), "c" / "s" packets on
//! the client's / server's NIC, "pcap" a replayed file. A RED row keeps
//! the agent's point, so the two ends of a call between local processes
//! are two rows that a query tells apart (or picks one of).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use fathom_proto as pb;
use fathom_proto::view::{L7LogView, RecordsView};
use fathom_store::{
    latency_bucket, AppMetricRow, Granularity, L4Row, L7Row, NetworkMetricRow, TagRow,
};
use fathom_tagging::{tag_type, Dictionaries, Dictionary, Reader, TagError};

use crate::decode::DecodeError;

/// A batch's rows, ready for the store.
#[derive(Debug, Default)]
pub struct Rows {
    pub l7: Vec<L7Row>,
    pub l4: Vec<L4Row>,
    pub app_1s: Vec<AppMetricRow>,
    pub app_1m: Vec<AppMetricRow>,
    pub net_1s: Vec<NetworkMetricRow>,
    pub net_1m: Vec<NetworkMetricRow>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.l7.len()
            + self.l4.len()
            + self.app_1s.len()
            + self.app_1m.len()
            + self.net_1s.len()
            + self.net_1m.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves `other`'s rows after these (an empty side takes the other's
    /// vectors as they are).
    pub fn append(&mut self, mut other: Rows) {
        fn join<T>(a: &mut Vec<T>, b: &mut Vec<T>) {
            if a.is_empty() {
                std::mem::swap(a, b);
            } else {
                a.append(b);
            }
        }
        join(&mut self.l7, &mut other.l7);
        join(&mut self.l4, &mut other.l4);
        join(&mut self.app_1s, &mut other.app_1s);
        join(&mut self.app_1m, &mut other.app_1m);
        join(&mut self.net_1s, &mut other.net_1s);
        join(&mut self.net_1m, &mut other.net_1m);
    }
}

/// Encodes tags with the SmartEncoding dictionaries.
pub struct Tagger {
    dicts: Arc<Dictionaries>,
    agent: Arc<Dictionary>,
    host: Arc<Dictionary>,
    process: Arc<Dictionary>,
    container: Arc<Dictionary>,
    region_id: u32,
    az_id: u32,
}

fn ip(b: &[u8], what: &str, id: u64, i: usize) -> Result<IpAddr, DecodeError> {
    match b.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        0 => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        n => Err(DecodeError::Malformed {
            batch_id: id,
            message: format!("{what} of record {i} has {n} bytes (want 4 or 16)"),
        }),
    }
}

fn column(ip: IpAddr) -> [u8; 16] {
    fathom_store::ip_column(ip)
}

fn port(p: u32, what: &str, id: u64, i: usize) -> Result<u16, DecodeError> {
    u16::try_from(p).map_err(|_| DecodeError::Malformed {
        batch_id: id,
        message: format!("{what} of record {i} is {p}, not a port"),
    })
}

fn time_us(us: u64) -> i64 {
    i64::try_from(us).unwrap_or(i64::MAX)
}

fn source_name(s: i32) -> &'static str {
    match pb::CaptureSource::try_from(s) {
        Ok(pb::CaptureSource::Packet) => "packet",
        Ok(pb::CaptureSource::Syscall) => "syscall",
        Ok(pb::CaptureSource::Tls) => "tls",
        Ok(pb::CaptureSource::Pcap) => "pcap",
        _ => "",
    }
}

/// Names of one batch that the dictionaries did not know yet.
struct Misses<'a> {
    process: Vec<&'a str>,
    container: Vec<&'a str>,
}

/// The side (0 client, 1 server) of a row's process whose name the
/// dictionary did not know yet, and the name.
type Missed<'a> = (usize, &'a str);

/// Side of a flow: 0 client, 1 server.
#[derive(Clone, Copy)]
struct Local {
    client: bool,
    server: bool,
}

struct Ctx<'a> {
    host_ips: &'a [IpAddr],
    host_id: u32,
    agent_id: u32,
    process: Reader<'a>,
}

impl Ctx<'_> {
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.host_ips.contains(&ip)
    }
    fn local(&self, c: IpAddr, s: IpAddr) -> Local {
        Local { client: self.is_local(c), server: self.is_local(s) }
    }
}

/// 0 = client side, 1 = server side, of a process the agent puts on `side`.
fn process_side(side: i32, local: Local) -> usize {
    match pb::Side::try_from(side) {
        Ok(pb::Side::Client) => 0,
        Ok(pb::Side::Server) => 1,
        _ if local.client && !local.server => 0,
        _ => 1,
    }
}

macro_rules! side_tags {
    ($row:ident, $side:expr, $t:expr, $host:expr, $proc_id:expr, $pid:expr) => {
        match $side {
            0 => {
                $row.host_id_0 = $host;
                $row.region_id_0 = $t.region_id;
                $row.az_id_0 = $t.az_id;
                if let Some(p) = $proc_id {
                    $row.process_id_0 = p;
                    $row.pid_0 = $pid;
                }
            }
            _ => {
                $row.host_id_1 = $host;
                $row.region_id_1 = $t.region_id;
                $row.az_id_1 = $t.az_id;
                if let Some(p) = $proc_id {
                    $row.process_id_1 = p;
                    $row.pid_1 = $pid;
                }
            }
        }
    };
}

/// Host, region and AZ tags on the side(s) of a row that are this agent's
/// host.
macro_rules! host_tags {
    ($row:ident, $t:expr, $ctx:expr, $local:expr) => {{
        if $local.client {
            side_tags!($row, 0, $t, $ctx.host_id, None::<u32>, 0);
        }
        if $local.server {
            side_tags!($row, 1, $t, $ctx.host_id, None::<u32>, 0);
        }
    }};
}

/// A process's tags on its side (`0` client, `1` server): a local process
/// makes its side this host.
macro_rules! process_tags {
    ($row:ident, $t:expr, $ctx:expr, $side:expr, $p:expr) => {{
        let p: &pb::ProcessRef = $p;
        side_tags!($row, $side, $t, $ctx.host_id, Some(Self::id(&$ctx.process, &p.name)), p.pid);
    }};
}

/// Where packets were seen: "pcap" for a replayed file, else the NIC of
/// the local side ("s" when the server is local, "c" when only the
/// client is), "" when neither end is this host (mirrored traffic).
fn nic_point(source: &str, local: Local) -> &'static str {
    match source {
        "pcap" => "pcap",
        _ if local.server => "s",
        _ if local.client => "c",
        _ => "",
    }
}

/// The stored observation point of a RED row (DeepFlow's tap side codes,
/// as in the flow logs). Agents that predate the field send
/// `Unspecified`: their rows keep the NIC-side rule.
fn red_point(p: i32, server_local: bool) -> &'static str {
    match pb::ObservationPoint::try_from(p) {
        Ok(pb::ObservationPoint::ClientProcess) => "c-p",
        Ok(pb::ObservationPoint::ServerProcess) => "s-p",
        _ if server_local => "s",
        _ => "",
    }
}

impl Tagger {
    /// Opens the dictionaries this tagger writes and fixes region and AZ ids.
    pub fn new(dicts: Arc<Dictionaries>, region: &str, az: &str) -> Result<Tagger, TagError> {
        let region_id = dicts.get(tag_type::REGION)?.get_or_insert(region)?;
        let az_id = dicts.get(tag_type::AZ)?.get_or_insert(az)?;
        Ok(Tagger {
            agent: dicts.get(tag_type::AGENT)?,
            host: dicts.get(tag_type::HOST)?,
            process: dicts.get(tag_type::PROCESS)?,
            container: dicts.get(tag_type::CONTAINER)?,
            dicts,
            region_id,
            az_id,
        })
    }

    pub fn dictionaries(&self) -> &Arc<Dictionaries> {
        &self.dicts
    }

    /// Every dictionary entry as store rows (to re-publish at start).
    pub fn all_tag_rows(&self) -> Vec<TagRow> {
        let mut out = Vec::new();
        for d in self.dicts.all() {
            for (id, name) in d.entries() {
                out.push(TagRow { tag_type: d.tag_type().to_string(), id, name: name.to_string() });
            }
        }
        out
    }

    fn ensure(
        dict: &Dictionary,
        names: Vec<&str>,
        created: &mut Vec<TagRow>,
    ) -> Result<(), TagError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(names.len());
        for (id, name) in dict.insert_many(&names, &mut out)? {
            created.push(TagRow {
                tag_type: dict.tag_type().to_string(),
                id,
                name: name.to_string(),
            });
        }
        Ok(())
    }

    fn id(dict: &Reader<'_>, name: &str) -> u32 {
        // Every name was ensured before; 0 only for names refused as
        // beyond the dictionary's bound.
        dict.lookup(name).unwrap_or(0)
    }

    /// Converts a batch, decoding its L7 records (a record that does not
    /// decode fails the batch as malformed). New dictionary entries are
    /// appended to `created` (the store must learn them before or with the
    /// rows).
    pub fn convert(
        &self,
        batch: &pb::RecordBatch,
        recs: RecordsView<'_>,
        created: &mut Vec<TagRow>,
    ) -> Result<Rows, ConvertError> {
        let id = batch.batch_id;
        let agent_id = self.agent.get_or_insert(&batch.agent_id)?;
        if self.host.lookup(&batch.host).is_none() {
            Self::ensure(&self.host, vec![&batch.host], created)?;
        }
        let mut host_ips = Vec::with_capacity(batch.host_ips.len());
        for (i, b) in batch.host_ips.iter().enumerate() {
            host_ips.push(ip(b, "host_ips", id, i)?);
        }
        let mut ctx = Ctx {
            host_ips: &host_ips,
            host_id: Self::id(&self.host.reader(), &batch.host),
            agent_id,
            process: self.process.reader(),
        };
        // L7 rows straight from the encoded records: names the process
        // dictionary misses are collected (all of a batch's new names are
        // allocated together, one fsync) and their ids filled in after.
        let mut misses = Misses { process: Vec::new(), container: Vec::new() };
        let mut l7_misses: Vec<(usize, usize, &str)> = Vec::new();
        let mut rows = Rows { l7: Vec::with_capacity(recs.l7.len()), ..Default::default() };
        for (i, bytes) in recs.l7.iter().enumerate() {
            let r = RecordsView::l7_log(bytes).map_err(|e| DecodeError::Malformed {
                batch_id: id,
                message: format!("L7 record {i} is not an L7Log message: {e}"),
            })?;
            if let Some((side, name)) = self.l7(&ctx, &r, id, i, &mut rows.l7)? {
                misses.process.push(name);
                l7_misses.push((i, side, name));
            }
        }
        let rest = &recs.rest;
        for r in &rest.l4 {
            for p in [&r.client_process, &r.server_process, &r.process].into_iter().flatten() {
                if ctx.process.lookup(&p.name).is_none() {
                    misses.process.push(&p.name);
                }
            }
        }
        for r in &rest.red {
            if let Some(p) = &r.process_name {
                if ctx.process.lookup(p).is_none() {
                    misses.process.push(p);
                }
            }
        }
        for p in &rest.process {
            if ctx.process.lookup(&p.name).is_none() {
                misses.process.push(&p.name);
            }
            if let Some(c) = &p.container_id {
                if self.container.lookup(c).is_none() {
                    misses.container.push(c);
                }
            }
        }
        Self::ensure(&self.process, misses.process, created)?;
        Self::ensure(&self.container, misses.container, created)?;
        ctx.process = self.process.reader();
        for (i, side, name) in l7_misses {
            let row = &mut rows.l7[i];
            let pid = Self::id(&ctx.process, name);
            match side {
                0 => row.process_id_0 = pid,
                _ => row.process_id_1 = pid,
            }
        }

        for (i, r) in recs.rest.l4.into_iter().enumerate() {
            rows.l4.push(self.l4(&ctx, r, id, i)?);
        }
        for (i, r) in recs.rest.red.into_iter().enumerate() {
            let (g, row) = self.red(&ctx, r, id, i)?;
            match g {
                Granularity::Second => rows.app_1s.push(row),
                Granularity::Minute => rows.app_1m.push(row),
            }
        }
        for (i, r) in recs.rest.network.into_iter().enumerate() {
            let (g, row) = self.network(&ctx, r, id, i)?;
            match g {
                Granularity::Second => rows.net_1s.push(row),
                Granularity::Minute => rows.net_1m.push(row),
            }
        }
        Ok(rows)
    }

    /// Appends an L7 row (built in place: rows are large); returns the side
    /// and name of its process when the process dictionary does not know
    /// the name yet (its id is left 0).
    fn l7<'a>(
        &self,
        ctx: &Ctx<'_>,
        r: &L7LogView<'a>,
        id: u64,
        i: usize,
        out: &mut Vec<L7Row>,
    ) -> Result<Option<Missed<'a>>, DecodeError> {
        let c = ip(r.client_ip, "client_ip", id, i)?;
        let s = ip(r.server_ip, "server_ip", id, i)?;
        let local = ctx.local(c, s);
        let source = source_name(r.source);
        let mut row = L7Row {
            time: time_us(r.start_time_us),
            end_time: time_us(r.end_time_us),
            response_duration: r.latency_us,
            agent_id: ctx.agent_id,
            capture_source: source.into(),
            ip_0: column(c),
            ip_1: column(s),
            client_port: port(r.client_port, "client_port", id, i)?,
            server_port: port(r.server_port, "server_port", id, i)?,
            protocol: r.ip_protocol.min(255) as u8,
            l7_protocol: r.l7_protocol.into(),
            version: r.version.into(),
            msg_type: r.msg_type.into(),
            request_type: r.request_type.into(),
            request_domain: r.request_domain.into(),
            request_resource: r.request_resource.into(),
            endpoint: r.endpoint.into(),
            request_id: r.request_id,
            response_code: r.response_code,
            response_status: r.response_status.into(),
            response_exception: r.response_exception.into(),
            response_result: r.response_result.into(),
            request_length: r.request_length,
            response_length: r.response_length,
            trace_id: r.trace_id.into(),
            span_id: r.span_id.into(),
            parent_span_id: r.parent_span_id.into(),
            x_request_id: r.x_request_id.into(),
            syscall_trace_id_request: r.syscall_trace_id_request.unwrap_or(0),
            syscall_trace_id_response: r.syscall_trace_id_response.unwrap_or(0),
            req_tcp_seq: r.req_tcp_seq.unwrap_or(0),
            resp_tcp_seq: r.resp_tcp_seq.unwrap_or(0),
            truncated: r.truncated,
            ..Default::default()
        };
        host_tags!(row, self, ctx, local);
        let mut missed = None;
        row.observation_point = match &r.process {
            Some(p) => {
                let side = process_side(p.side, local);
                let process_id = ctx.process.lookup(p.name);
                if process_id.is_none() {
                    missed = Some((side, p.name));
                }
                side_tags!(row, side, self, ctx.host_id, Some(process_id.unwrap_or(0)), p.pid);
                if side == 0 {
                    "c-p"
                } else {
                    "s-p"
                }
            }
            None => nic_point(source, local),
        }
        .into();
        out.push(row);
        Ok(missed)
    }

    fn l4(&self, ctx: &Ctx<'_>, r: pb::L4Flow, id: u64, i: usize) -> Result<L4Row, DecodeError> {
        let c = ip(&r.client_ip, "client_ip", id, i)?;
        let s = ip(&r.server_ip, "server_ip", id, i)?;
        let local = ctx.local(c, s);
        let source = source_name(r.source);
        let tx = r.tx.unwrap_or_default();
        let rx = r.rx.unwrap_or_default();
        let mut row = L4Row {
            time: time_us(r.start_time_us),
            end_time: time_us(r.end_time_us),
            duration: r.duration_us,
            agent_id: ctx.agent_id,
            capture_source: source.into(),
            interface: r.interface,
            ip_0: column(c),
            ip_1: column(s),
            client_port: port(r.client_port, "client_port", id, i)?,
            server_port: port(r.server_port, "server_port", id, i)?,
            protocol: r.ip_protocol.min(255) as u8,
            l7_protocol: r.l7_protocol.unwrap_or_default(),
            close_type: r.close_type,
            byte_tx: tx.bytes,
            packet_tx: tx.packets,
            payload_byte_tx: tx.payload_bytes,
            syn_tx: tx.syn,
            fin_tx: tx.fin,
            rst_tx: tx.rst,
            retrans_tx: tx.retransmissions,
            zero_win_tx: tx.zero_windows,
            out_of_order_tx: tx.out_of_order,
            byte_rx: rx.bytes,
            packet_rx: rx.packets,
            payload_byte_rx: rx.payload_bytes,
            syn_rx: rx.syn,
            fin_rx: rx.fin,
            rst_rx: rx.rst,
            retrans_rx: rx.retransmissions,
            zero_win_rx: rx.zero_windows,
            out_of_order_rx: rx.out_of_order,
            syn_ack: r.syn_ack,
            rtt_server: r.rtt_server_us,
            rtt_client: r.rtt_client_us,
            ..Default::default()
        };
        host_tags!(row, self, ctx, local);
        // Flow records come from packets: the observation point is the
        // NIC; the processes eBPF saw at each end are tags of their side.
        row.observation_point = nic_point(source, local).into();
        if r.client_process.is_some() || r.server_process.is_some() {
            if let Some(p) = &r.client_process {
                process_tags!(row, self, ctx, 0, p);
            }
            if let Some(p) = &r.server_process {
                process_tags!(row, self, ctx, 1, p);
            }
        } else if let Some(p) = &r.process {
            process_tags!(row, self, ctx, process_side(p.side, local), p);
        }
        Ok(row)
    }

    fn granularity(g: i32, id: u64, i: usize) -> Result<Granularity, DecodeError> {
        match pb::Granularity::try_from(g) {
            Ok(pb::Granularity::Second) => Ok(Granularity::Second),
            Ok(pb::Granularity::Minute) => Ok(Granularity::Minute),
            _ => Err(DecodeError::Malformed {
                batch_id: id,
                message: format!("metric {i} has no valid granularity ({g})"),
            }),
        }
    }

    fn time_s(t: u64, id: u64, i: usize) -> Result<u32, DecodeError> {
        u32::try_from(t).map_err(|_| DecodeError::Malformed {
            batch_id: id,
            message: format!("metric {i} has time {t}, beyond DateTime"),
        })
    }

    fn red(
        &self,
        ctx: &Ctx<'_>,
        r: pb::RedMetric,
        id: u64,
        i: usize,
    ) -> Result<(Granularity, AppMetricRow), DecodeError> {
        let g = Self::granularity(r.granularity, id, i)?;
        let s = ip(&r.server_ip, "server_ip", id, i)?;
        let local = ctx.is_local(s);
        let bits = r.histogram_sub_bucket_bits;
        if !(1..=8).contains(&bits) && !r.histogram.is_empty() {
            return Err(DecodeError::Malformed {
                batch_id: id,
                message: format!("metric {i}: histogram layout of {bits} sub-bucket bits"),
            });
        }
        let mut hist: BTreeMap<u16, u64> = BTreeMap::new();
        for b in &r.histogram {
            *hist.entry(latency_bucket(bucket_lower(b.index, bits))).or_insert(0) +=
                u64::from(b.count);
        }
        let process_id = r.process_name.as_deref().map_or(0, |n| Self::id(&ctx.process, n));
        Ok((
            g,
            AppMetricRow {
                time: Self::time_s(r.time_s, id, i)?,
                agent_id: ctx.agent_id,
                observation_point: red_point(r.observation_point, local).into(),
                region_id: if local { self.region_id } else { 0 },
                az_id: if local { self.az_id } else { 0 },
                host_id: if local { ctx.host_id } else { 0 },
                process_id,
                ip: column(s),
                server_port: port(r.server_port, "server_port", id, i)?,
                protocol: r.ip_protocol.min(255) as u8,
                l7_protocol: r.l7_protocol,
                endpoint: r.endpoint,
                request: r.requests,
                response: r.responses,
                client_error: r.client_errors,
                server_error: r.server_errors,
                timeout: r.timeouts,
                rrt_sum: r.latency_sum_us,
                rrt_count: r.latency_count,
                rrt_max: r.latency_max_us,
                rrt_histogram: hist,
                ..Default::default()
            },
        ))
    }

    fn network(
        &self,
        ctx: &Ctx<'_>,
        r: pb::NetworkMetric,
        id: u64,
        i: usize,
    ) -> Result<(Granularity, NetworkMetricRow), DecodeError> {
        let g = Self::granularity(r.granularity, id, i)?;
        let s = ip(&r.server_ip, "server_ip", id, i)?;
        let local = ctx.is_local(s);
        Ok((
            g,
            NetworkMetricRow {
                time: Self::time_s(r.time_s, id, i)?,
                agent_id: ctx.agent_id,
                observation_point: if local { "s" } else { "" }.into(),
                region_id: if local { self.region_id } else { 0 },
                az_id: if local { self.az_id } else { 0 },
                host_id: if local { ctx.host_id } else { 0 },
                ip: column(s),
                server_port: port(r.server_port, "server_port", id, i)?,
                protocol: r.ip_protocol.min(255) as u8,
                byte_tx: r.bytes_tx,
                byte_rx: r.bytes_rx,
                packet_tx: r.packets_tx,
                packet_rx: r.packets_rx,
                new_flow: r.new_flows,
                closed_flow: r.closed_flows,
                retrans_tx: r.retransmissions_tx,
                retrans_rx: r.retransmissions_rx,
                zero_win_tx: r.zero_windows_tx,
                zero_win_rx: r.zero_windows_rx,
                client_rst_flow: r.client_resets,
                server_rst_flow: r.server_resets,
                rtt_sum: r.rtt_server_sum_us,
                rtt_count: r.rtt_server_count,
                rtt_max: r.rtt_max_us,
                rtt_client_sum: r.rtt_client_sum_us,
                rtt_client_count: r.rtt_client_count,
                ..Default::default()
            },
        ))
    }
}

/// Lowest value of bucket `index` in a log-linear layout with `bits`
/// sub-bucket bits (values below 2^bits exact), as the agent builds it.
pub fn bucket_lower(index: u32, bits: u32) -> u64 {
    let sub = 1u64 << bits;
    let i = u64::from(index);
    if i < sub {
        return i;
    }
    let e = (i >> bits) as u32 + bits - 1;
    if e >= 63 {
        return u64::MAX;
    }
    let width = 1u64 << (e - bits);
    (1u64 << e) + (i & (sub - 1)) * width
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Bad(#[from] DecodeError),
    #[error(transparent)]
    Tags(#[from] TagError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use fathom_tagging::DictConfig;
    use prost::Message;

    fn proc(pid: u32, name: &str, side: pb::Side) -> Option<pb::ProcessRef> {
        Some(pb::ProcessRef { pid, tid: pid, name: name.into(), side: side as i32 })
    }

    fn red(point: pb::ObservationPoint, process: &str, requests: u64) -> pb::RedMetric {
        pb::RedMetric {
            time_s: 1_700_000_000,
            granularity: pb::Granularity::Second as i32,
            server_ip: vec![127, 0, 0, 1],
            server_port: 8000,
            process_name: (!process.is_empty()).then(|| process.into()),
            l7_protocol: "HTTP".into(),
            endpoint: "/".into(),
            requests,
            observation_point: point as i32,
            ..Default::default()
        }
    }

    fn l4(
        client: Option<pb::ProcessRef>,
        server: Option<pb::ProcessRef>,
        legacy: Option<pb::ProcessRef>,
    ) -> pb::L4Flow {
        pb::L4Flow {
            client_ip: vec![127, 0, 0, 1],
            client_port: 40000,
            server_ip: vec![127, 0, 0, 1],
            server_port: 8000,
            ip_protocol: 6,
            source: pb::CaptureSource::Packet as i32,
            client_process: client,
            server_process: server,
            process: legacy,
            ..Default::default()
        }
    }

    /// RED rows keep their observation point; L4 rows get the process of
    /// each end on its side; L7 rows say which process saw them.
    #[test]
    fn observation_points_and_both_flow_processes_reach_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let dicts = Arc::new(Dictionaries::open(dir.path(), DictConfig::default()).unwrap());
        let tagger = Tagger::new(dicts, "r1", "az1").unwrap();
        let batch = pb::RecordBatch {
            agent_id: "a1".into(),
            batch_id: 1,
            host: "h1".into(),
            host_ips: vec![vec![10, 0, 0, 1]],
            ..Default::default()
        };
        let recs = pb::Records {
            red: vec![
                red(pb::ObservationPoint::ClientProcess, "curl", 5),
                red(pb::ObservationPoint::ServerProcess, "python3", 5),
                red(pb::ObservationPoint::Network, "", 2),
                // an older agent's row
                red(pb::ObservationPoint::Unspecified, "python3", 1),
            ],
            l4: vec![
                l4(proc(7, "curl", pb::Side::Client), proc(9, "python3", pb::Side::Server), None),
                l4(proc(7, "curl", pb::Side::Client), None, None),
                l4(None, None, proc(9, "python3", pb::Side::Server)),
                l4(None, None, None),
            ],
            l7: vec![pb::L7Log {
                client_ip: vec![127, 0, 0, 1],
                server_ip: vec![127, 0, 0, 1],
                source: pb::CaptureSource::Syscall as i32,
                process: proc(7, "curl", pb::Side::Client),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut created = Vec::new();
        let bytes = recs.encode_to_vec();
        let view = RecordsView::decode(&bytes, recs.counts()).unwrap();
        let rows = tagger.convert(&batch, view, &mut created).unwrap();
        let id = |name: &str| {
            created.iter().find(|t| t.tag_type == "process" && t.name == name).unwrap().id
        };
        let (curl, python) = (id("curl"), id("python3"));

        let red: Vec<(&str, u32, u64)> = rows
            .app_1s
            .iter()
            .map(|r| (r.observation_point.as_ref(), r.process_id, r.request))
            .collect();
        assert_eq!(red, [("c-p", curl, 5), ("s-p", python, 5), ("s", 0, 2), ("s", python, 1)]);
        assert!(rows.app_1s.iter().all(|r| r.host_id != 0), "the server is this host");

        let l4: Vec<(u32, u32, u32, u32, &str)> = rows
            .l4
            .iter()
            .map(|r| {
                (r.process_id_0, r.pid_0, r.process_id_1, r.pid_1, r.observation_point.as_ref())
            })
            .collect();
        assert_eq!(
            l4,
            [
                (curl, 7, python, 9, "s"),
                (curl, 7, 0, 0, "s"),
                (0, 0, python, 9, "s"),
                (0, 0, 0, 0, "s"),
            ]
        );
        let l7 = &rows.l7[0];
        assert_eq!(l7.observation_point, "c-p");
        assert_eq!((l7.process_id_0, l7.pid_0, l7.process_id_1), (curl, 7, 0));
    }

    /// An L7 record that does not decode (here: an interface name that is
    /// not UTF-8, a field ingest drops) fails its batch as malformed; the
    /// records around it do not hide it.
    #[test]
    fn undecodable_l7_records_fail_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let dicts = Arc::new(Dictionaries::open(dir.path(), DictConfig::default()).unwrap());
        let tagger = Tagger::new(dicts, "r1", "az1").unwrap();
        let batch = pb::RecordBatch { agent_id: "a1".into(), batch_id: 4, ..Default::default() };
        let good = pb::L7Log { endpoint: "/ok".into(), ..Default::default() }.encode_to_vec();
        // Field 7 (interface), 2 bytes, not UTF-8.
        let bad = vec![7 << 3 | 2, 2, 0xc3, 0x28];
        let truncated = good[..good.len() - 1].to_vec();
        for broken in [bad, truncated] {
            let view = RecordsView { l7: vec![&good, &broken, &good], ..Default::default() };
            let e = tagger.convert(&batch, view, &mut Vec::new()).unwrap_err();
            let ConvertError::Bad(DecodeError::Malformed { batch_id: 4, message }) = e else {
                panic!("{e}");
            };
            assert!(message.starts_with("L7 record 1 is not an L7Log message"), "{message}");
        }
        let view = RecordsView { l7: vec![&good, &good], ..Default::default() };
        let rows = tagger.convert(&batch, view, &mut Vec::new()).unwrap();
        assert_eq!(rows.l7.len(), 2);
        assert_eq!(rows.l7[1].endpoint, "/ok");
    }
}
